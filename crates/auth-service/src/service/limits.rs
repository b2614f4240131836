//! Password-attempt limits (SPEC §4): per (account, IP) 10 per 15 minutes, per IP 100 per 15
//! minutes, per account 100 per hour; IPv6 by its /64. Every login and password change
//! reserves one attempt on all three counters, atomically and before any password work, so
//! concurrent guesses can never exceed the limits and a refused attempt costs nothing; a
//! success refunds the IP and account counters and clears the pair. There is no permanent
//! lockout: the windows simply end.

use std::{net::IpAddr, time::Duration};

use platform::counters::{Limit, Reservation};

use super::AuthService;
use crate::error::Error;

const FIFTEEN_MINUTES: Duration = Duration::from_secs(15 * 60);

/// The three counters one attempt takes, the pair first.
pub(super) struct Attempt {
    limits: [Limit; 3],
}

impl Attempt {
    fn new(email: &str, ip: IpAddr) -> Self {
        let ip = platform::net::limit_key(ip);
        Self {
            limits: [
                Limit { key: format!("login:acct_ip:{email}:{ip}"), max: 10, window: FIFTEEN_MINUTES },
                Limit { key: format!("login:ip:{ip}"), max: 100, window: FIFTEEN_MINUTES },
                Limit { key: format!("login:acct:{email}"), max: 100, window: Duration::from_secs(3600) },
            ],
        }
    }

    fn keys(&self) -> [&str; 3] {
        [&self.limits[0].key, &self.limits[1].key, &self.limits[2].key]
    }
}

impl AuthService {
    /// Reserves one attempt for `email` from `ip`, or refuses with 429 and nothing taken.
    pub(super) async fn reserve_attempt(&self, email: &str, ip: IpAddr) -> Result<Attempt, Error> {
        let attempt = Attempt::new(email, ip);
        match self.inner.deps.counters.reserve(&attempt.limits).await? {
            Reservation::Taken => Ok(attempt),
            Reservation::Refused { retry_after } => Err(Error::RateLimited { retry_after }),
        }
    }

    /// A verified password: the IP and account counters get their hit back, the pair's
    /// failures are forgotten.
    pub(super) async fn attempt_succeeded(&self, attempt: Attempt) -> Result<(), Error> {
        let [pair, ip, account] = attempt.keys();
        self.inner.deps.counters.refund(&[ip, account]).await?;
        self.inner.deps.counters.clear(pair).await?;
        Ok(())
    }

    /// The attempt never reached the password (the hash queue was full): nothing is charged.
    pub(super) async fn attempt_not_made(&self, attempt: Attempt) {
        if let Err(err) = self.inner.deps.counters.refund(&attempt.keys()).await {
            tracing::warn!(error = %err, "could not refund a password attempt");
        }
    }
}
