//! A point in time as an operator types it on the command line (`--since 10m`, `--until
//! 2026-11-24`): an age back from now (`90s`, `10m`, `2h`, `1d`, `1w`, `1h30m`), an RFC 3339
//! timestamp (`2026-11-24T08:00:00Z`), a date or date and time taken as UTC (`2026-11-24`,
//! `2026-11-24 08:00`), or milliseconds since the Unix epoch (what older scripts pass). Owns that
//! parsing only: the caller passes "now" in, so a test can pin it.

use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, SpanRelativeTo, Timestamp};

/// What `--since`/`--until` accept, for the help text.
pub const TIME_FORMS: &str =
    "an age (10m, 2h, 1d), a date or time in UTC (2026-11-24, 2026-11-24T08:00:00Z), or Unix ms";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimeArgError {
    #[error("`{0}` is not a time: give {TIME_FORMS}")]
    Unreadable(String),
    #[error("`{0}` is before 1970 or too far ahead")]
    OutOfRange(String),
}

/// `text` as milliseconds since the Unix epoch, ages counted back from `now`.
pub fn parse_time(text: &str, now: Timestamp) -> Result<u64, TimeArgError> {
    let text = text.trim();
    let unreadable = || TimeArgError::Unreadable(text.to_owned());
    let out_of_range = || TimeArgError::OutOfRange(text.to_owned());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map_err(|_| out_of_range());
    }
    let at = if let Ok(at) = text.parse::<Timestamp>() {
        at
    } else if let Ok(at) = text.parse::<DateTime>() {
        TimeZone::UTC.to_timestamp(at).map_err(|_| out_of_range())?
    } else if let Ok(day) = text.parse::<Date>() {
        TimeZone::UTC
            .to_timestamp(day.to_datetime(jiff::civil::Time::midnight()))
            .map_err(|_| out_of_range())?
    } else {
        let age = age(text).ok_or_else(unreadable)?;
        now.checked_sub(age).map_err(|_| out_of_range())?
    };
    u64::try_from(at.as_millisecond()).map_err(|_| out_of_range())
}

/// A positive age in jiff's friendly form (`10m`, `1h30m`, `2 days`), days as 24 hours. ISO
/// 8601 durations (`PT10M`) are jiff's too and pass; a sign does not: an age is back from now.
fn age(text: &str) -> Option<SignedDuration> {
    if text.starts_with(['-', '+']) {
        return None;
    }
    let span: Span = text.parse().ok()?;
    let age = span.to_duration(SpanRelativeTo::days_are_24_hours()).ok()?;
    age.is_positive().then_some(age)
}

/// For clap: `--since 10m` and the like, against the clock now.
pub fn time_arg(text: &str) -> Result<u64, TimeArgError> {
    parse_time(text, Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-24T12:00:00Z.
    fn noon() -> Timestamp {
        Timestamp::from_second(1_795_521_600).expect("in range")
    }

    const NOON_MS: u64 = 1_795_521_600_000;

    #[test]
    fn ages_count_back_from_now() {
        assert_eq!(parse_time("10m", noon()), Ok(NOON_MS - 600_000));
        assert_eq!(parse_time("2h", noon()), Ok(NOON_MS - 7_200_000));
        assert_eq!(parse_time("1d", noon()), Ok(NOON_MS - 86_400_000));
        assert_eq!(parse_time("1w", noon()), Ok(NOON_MS - 7 * 86_400_000));
        assert_eq!(parse_time("1h30m", noon()), Ok(NOON_MS - 5_400_000));
        assert_eq!(parse_time("90s", noon()), Ok(NOON_MS - 90_000));
    }

    #[test]
    fn dates_and_times_are_utc_unless_they_say_otherwise() {
        assert_eq!(parse_time("2026-11-24", noon()), Ok(NOON_MS - 12 * 3_600_000));
        assert_eq!(parse_time("2026-11-24T12:00:00Z", noon()), Ok(NOON_MS));
        assert_eq!(parse_time("2026-11-24 13:00", noon()), Ok(NOON_MS + 3_600_000));
        assert_eq!(parse_time("2026-11-24T14:00:00+02:00", noon()), Ok(NOON_MS));
    }

    #[test]
    fn unix_milliseconds_still_pass() {
        assert_eq!(parse_time("1795521600000", noon()), Ok(NOON_MS));
    }

    #[test]
    fn nonsense_is_named_with_the_forms_that_work() {
        for bad in ["", "soon", "-10m", "0m", "10 parsecs", "2026-13-01"] {
            let err = parse_time(bad, noon()).expect_err(bad);
            assert!(err.to_string().contains("an age (10m, 2h, 1d)"), "{bad}: {err}");
        }
        assert_eq!(parse_time("200000w", noon()), Err(TimeArgError::OutOfRange("200000w".into())));
    }
}
