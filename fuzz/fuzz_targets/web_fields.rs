#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::decoders::web_fields(data));
