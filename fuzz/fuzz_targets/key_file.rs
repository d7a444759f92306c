#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| cohort_fuzz::decoders::key_file(data));
