//! The `--since` / `--until` arguments: a UTC day (`2026-11-01`) or an RFC 3339 instant.

use chrono::{DateTime, Days, NaiveDate, Utc};

/// Which end of the time range an argument gives. A bare day means its start for `Since`
/// and the start of the next day for `Until` (which is exclusive), so
/// `--since 2026-11-01 --until 2026-11-01` selects that whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeBound {
    Since,
    Until,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{raw}` is not a day or a time: use YYYY-MM-DD (a UTC day) or RFC 3339 with a zone, e.g. 2026-11-01 or 2026-11-01T09:30:00Z"
)]
pub struct TimeArgError {
    pub raw: String,
}

/// Parses a filter time argument.
pub fn parse_time_arg(raw: &str, bound: TimeBound) -> Result<DateTime<Utc>, TimeArgError> {
    let s = raw.trim();
    let error = || TimeArgError {
        raw: raw.to_string(),
    };
    if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        let day = match bound {
            TimeBound::Since => day,
            TimeBound::Until => day.checked_add_days(Days::new(1)).ok_or_else(error)?,
        };
        return Ok(day.and_time(chrono::NaiveTime::MIN).and_utc());
    }
    DateTime::parse_from_rfc3339(s)
        .map(|at| at.with_timezone(&Utc))
        .map_err(|_| error())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_day_covers_the_whole_day() {
        assert_eq!(
            parse_time_arg("2026-11-01", TimeBound::Since).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            parse_time_arg("2026-11-30", TimeBound::Until).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn rfc3339_instants_are_taken_as_given() {
        assert_eq!(
            parse_time_arg("2026-11-01T09:30:00+02:00", TimeBound::Until).unwrap(),
            Utc.with_ymd_and_hms(2026, 11, 1, 7, 30, 0).unwrap()
        );
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for raw in [
            "yesterday",
            "2026-13-01",
            "2026-11-01T09:30:00",
            "01/11/2026",
            "",
        ] {
            let err = parse_time_arg(raw, TimeBound::Since).unwrap_err();
            assert!(err.to_string().contains("YYYY-MM-DD"), "{err}");
        }
    }
}
