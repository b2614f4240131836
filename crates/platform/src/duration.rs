//! Durations written the way operators write them in configuration: `500ms`, `30s`, `15m`,
//! `1h`, `7d`.

use std::time::Duration;

/// Parses `<digits><unit>` with unit `ms`, `s`, `m`, `h` or `d`; anything else is refused so a
/// typo in configuration never silently becomes a different lifetime.
pub fn parse_duration(input: &str) -> Result<Duration, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (use ms, s, m, h or d, e.g. 15m)"))?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!("`{text}` does not start with a number"));
    }
    let value: u64 = digits.parse().map_err(|_| format!("`{text}` is not a valid number"))?;
    let seconds_per_unit = match unit {
        "ms" => return Ok(Duration::from_millis(value)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!("unknown unit `{other}` in `{text}` (use ms, s, m, h or d)"));
        }
    };
    value.checked_mul(seconds_per_unit).map(Duration::from_secs).ok_or_else(|| format!("`{text}` is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration(" 7d "), Ok(Duration::from_secs(604_800)));
    }

    #[test]
    fn refuses_what_is_not_a_duration() {
        for bad in ["", "15", "m", "15 m", "1w", "-5s", "1.5h", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
