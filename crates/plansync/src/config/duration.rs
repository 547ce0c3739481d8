//! Durations as people write them in `plansync.toml`: a whole number and a unit, `"250ms"`,
//! `"30s"`, `"5m"`, `"1h"`. One unit per value keeps the form unambiguous to read and to check.

use std::time::Duration;

/// Parses `"<whole number><unit>"` with unit `ms`, `s`, `m` or `h`. The error says what is
/// wrong in words fit for a diagnostic.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    if number.is_empty() {
        return Err(format!(
            "`{text}` is not a duration: write a whole number and a unit, like \"30s\" or \"5m\""
        ));
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is too large a duration"))?;
    let too_large = || format!("`{text}` is too large a duration");
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => n
            .checked_mul(60)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "h" => n
            .checked_mul(3600)
            .map(Duration::from_secs)
            .ok_or_else(too_large),
        "" => Err(format!(
            "`{text}` has no unit: write e.g. \"{n}s\" (units: ms, s, m, h)"
        )),
        other => Err(format!(
            "`{other}` is not a duration unit: use ms, s, m or h (e.g. \"30s\", \"5m\")"
        )),
    }
}

/// The shortest exact form of a duration in the units `parse_duration` reads.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        "0s".to_string()
    } else if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_each_unit_and_refuses_the_rest() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 2 m "), Ok(Duration::from_secs(120)));
        for bad in [
            "",
            "m",
            "5",
            "5x",
            "1.5m",
            "-1s",
            "5 minutes",
            "99999999999999999999s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn formats_back_to_what_it_reads() {
        for text in ["250ms", "30s", "5m", "1h", "90s", "1500ms"] {
            let d = parse_duration(text).unwrap();
            assert_eq!(format_duration(d), text);
        }
    }
}
