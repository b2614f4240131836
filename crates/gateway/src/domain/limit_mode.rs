//! How rate-limit buckets are shared between gateway instances (`RATE_LIMIT_MODE`).

use std::time::Duration;

/// How often the synced mode reconciles with Redis: SPEC §10 allows at most 100 ms.
pub const SYNC_EVERY: Duration = Duration::from_millis(100);

/// `exact` (the default) asks Redis on every request; `synced` answers from local copies
/// reconciled with Redis every [`SYNC_EVERY`], with the overshoot bound of
/// `docs/gateway.md`. Without Redis both keep every bucket in process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitMode {
    Exact,
    Synced { every: Duration },
}

impl LimitMode {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "exact" => Ok(Self::Exact),
            "synced" => Ok(Self::Synced { every: SYNC_EVERY }),
            other => Err(format!("`{other}` is not a rate-limit mode (exact or synced)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_others_are_refused() {
        assert_eq!(LimitMode::parse("exact"), Ok(LimitMode::Exact));
        assert_eq!(LimitMode::parse(" Synced "), Ok(LimitMode::Synced { every: SYNC_EVERY }));
        assert!(LimitMode::parse("local").unwrap_err().contains("exact or synced"));
    }
}
