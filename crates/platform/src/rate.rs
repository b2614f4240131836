//! A rate written `100/minute`: the one grammar for every limit the operator writes (route
//! and webhook limits, `IP_RATE_LIMIT`, `AUTH_FAILURE_LIMIT`, `TENANT_RATE_LIMIT_MAX`).

use std::{fmt, time::Duration};

use crate::env::EnvExt as _;

/// `requests` per `per`, written `100/minute` (units `second`, `minute`, `hour`, `day` or
/// `s`, `m`, `h`, `d`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub requests: u64,
    pub per: Duration,
}

impl RateLimit {
    pub fn parse(text: &str) -> Result<Self, String> {
        let invalid = || format!("`{text}` is not a rate limit (e.g. 100/minute; units second, minute, hour, day)");
        let (count, unit) = text.split_once('/').ok_or_else(invalid)?;
        let (count, unit) = (count.trim(), unit.trim());
        if count.is_empty() || !count.chars().all(|c| c.is_ascii_digit()) {
            return Err(invalid());
        }
        let requests: u64 = count.parse().map_err(|_| invalid())?;
        if requests == 0 {
            return Err(format!("`{text}` allows no request at all; remove rate_limit or allow at least 1"));
        }
        let seconds = match unit {
            "second" | "s" => 1,
            "minute" | "m" => 60,
            "hour" | "h" => 3600,
            "day" | "d" => 86_400,
            _ => return Err(invalid()),
        };
        Ok(Self { requests, per: Duration::from_secs(seconds) })
    }
}

impl RateLimit {
    /// Whether this allows more requests per unit of time than `other`.
    pub fn is_faster_than(&self, other: &Self) -> bool {
        u128::from(self.requests) * other.per.as_nanos() > u128::from(other.requests) * self.per.as_nanos()
    }

    /// Reads an optional rate from `variable`.
    pub fn from_env(env: &dyn crate::env::Env, variable: &str) -> Result<Option<Self>, crate::env::ConfigError> {
        env.string(variable)
            .map(|raw| Self::parse(&raw).map_err(|e| crate::env::ConfigError::new(variable, e)))
            .transpose()
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86_400 => "day",
            _ => return write!(f, "{}/{}s", self.requests, self.per.as_secs()),
        };
        write!(f, "{}/{unit}", self.requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_compare_across_units() {
        let per_minute = |n| RateLimit { requests: n, per: Duration::from_secs(60) };
        let per_second = |n| RateLimit { requests: n, per: Duration::from_secs(1) };
        assert!(per_second(2).is_faster_than(&per_minute(100)));
        assert!(!per_second(1).is_faster_than(&per_minute(60)));
        assert!(!per_minute(60).is_faster_than(&per_second(1)));
        assert!(per_minute(1000).is_faster_than(&per_minute(100)));
    }

    #[test]
    fn rate_limits_in_both_spellings() {
        let minute = Duration::from_secs(60);
        assert_eq!(RateLimit::parse("100/minute"), Ok(RateLimit { requests: 100, per: minute }));
        assert_eq!(RateLimit::parse("100/m"), Ok(RateLimit { requests: 100, per: minute }));
        assert_eq!(RateLimit::parse("5 / s").map(|r| r.per), Ok(Duration::from_secs(1)));
        assert_eq!(RateLimit::parse("1/hour").map(|r| r.per), Ok(Duration::from_secs(3600)));
        assert_eq!(RateLimit::parse("1/d").map(|r| r.per), Ok(Duration::from_secs(86_400)));
        assert_eq!(RateLimit::parse("100/minute").map(|r| r.to_string()), Ok("100/minute".to_owned()));
        for bad in ["", "100", "100/", "/minute", "0/minute", "-1/minute", "1.5/s", "100/week", "100/minutes", "x/s"] {
            assert!(RateLimit::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
