//! Failed-login limits (SPEC §4): per (account, IP) 10 per 15 minutes, per IP 100 per 15
//! minutes, per account 100 per hour. Only failures count; there is no permanent lockout.

use std::{net::IpAddr, time::Duration};

use super::AuthService;
use crate::error::Error;

struct Limit {
    key: String,
    max: u64,
    window: Duration,
}

fn limits(email: &str, ip: IpAddr) -> [Limit; 3] {
    const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);
    [
        Limit { key: format!("login:acct_ip:{email}:{ip}"), max: 10, window: FIFTEEN_MINUTES },
        Limit { key: format!("login:ip:{ip}"), max: 100, window: FIFTEEN_MINUTES },
        Limit { key: format!("login:acct:{email}"), max: 100, window: Duration::from_secs(3600) },
    ]
}

impl AuthService {
    /// Refuses before any password work when a limit is already reached.
    pub(super) async fn check_login_limits(&self, email: &str, ip: IpAddr) -> Result<(), Error> {
        let counters = &self.inner.deps.counters;
        for limit in limits(email, ip) {
            let count = counters.current(&limit.key).await?;
            if count.hits >= limit.max {
                return Err(Error::RateLimited { retry_after: count.resets_in.max(Duration::from_secs(1)) });
            }
        }
        Ok(())
    }

    pub(super) async fn record_login_failure(&self, email: &str, ip: IpAddr) -> Result<(), Error> {
        for limit in limits(email, ip) {
            self.inner.deps.counters.increment(&limit.key, limit.window).await?;
        }
        Ok(())
    }

    /// A successful login clears that account's failures from that IP.
    pub(super) async fn record_login_success(&self, email: &str, ip: IpAddr) -> Result<(), Error> {
        let [pair, ..] = limits(email, ip);
        self.inner.deps.counters.clear(&pair.key).await?;
        Ok(())
    }
}
