//! Passwords (NIST SP 800-63B): NFKC-normalised, counted in Unicode scalar values, between
//! `PASSWORD_MIN_LENGTH` and 256, never truncated, no composition rules, refused when zxcvbn
//! scores them below 2. Argon2id (m=19 MiB, t=2, p=1) runs on the blocking pool behind a
//! semaphore, at the lowest thread priority, so a login storm queues here instead of starving
//! token validation. The queue is bounded (past it: 503), and a hash that has started keeps
//! its permit until it ends, whether or not its request is still waiting for it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Instant,
};

use argon2::{
    Algorithm, Argon2, Params, Version,
    password_hash::{PasswordHasher as _, PasswordVerifier as _, phc::PasswordHash},
};
use tokio::sync::Semaphore;
use unicode_normalization::UnicodeNormalization;

use crate::error::Error;

pub const MAX_PASSWORD_CHARS: usize = 256;
/// Bodies are capped well above this, but no password field is even looked at past it.
const MIN_ZXCVBN_SCORE: u8 = 2;

/// A password that passed the length rules; strength is checked with [`Hasher::hash_new`].
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

impl Password {
    /// Normalises and checks length; used for new passwords.
    pub fn parse_new(field: &str, raw: &str, min_chars: usize) -> Result<Self, Error> {
        let normalised: String = raw.nfkc().collect();
        let chars = normalised.chars().count();
        if chars < min_chars {
            return Err(Error::validation(field, format!("must be at least {min_chars} characters")));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(Error::validation(field, format!("must be at most {MAX_PASSWORD_CHARS} characters")));
        }
        Ok(Self(normalised))
    }

    /// Normalises a presented password for verification; never rejects (an over-long one
    /// simply cannot match), so login answers the same way for every wrong password.
    pub fn presented(raw: &str) -> Self {
        Self(raw.nfkc().collect())
    }
}

/// How long a hash took, reported to metrics.
pub type HashTimer = Arc<dyn Fn(std::time::Duration) + Send + Sync>;

/// What the hashing threads are doing, counted inside the hashing closure itself: how many
/// hashes run right now, the most that ever ran at once, and how many have started.
#[derive(Debug, Clone, Default)]
pub struct HashStats(Arc<HashCounts>);

#[derive(Debug, Default)]
struct HashCounts {
    running: AtomicUsize,
    peak: AtomicUsize,
    started: AtomicU64,
}

impl HashStats {
    pub fn running(&self) -> usize {
        self.0.running.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.0.peak.load(Ordering::SeqCst)
    }

    pub fn started(&self) -> u64 {
        self.0.started.load(Ordering::SeqCst)
    }

    /// Counts one hash as running until the guard drops.
    fn enter(&self) -> RunningHash {
        let now = self.0.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.0.peak.fetch_max(now, Ordering::SeqCst);
        self.0.started.fetch_add(1, Ordering::SeqCst);
        RunningHash(self.clone())
    }
}

struct RunningHash(HashStats);

impl Drop for RunningHash {
    fn drop(&mut self) {
        self.0.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
pub struct Hasher {
    argon: Argon2<'static>,
    /// One per hash allowed to run at once (`PASSWORD_HASH_CONCURRENCY`).
    permits: Arc<Semaphore>,
    /// One per hash allowed to run or wait (`PASSWORD_HASH_CONCURRENCY + PASSWORD_HASH_QUEUE`).
    admissions: Arc<Semaphore>,
    /// Verified against when the account does not exist, so unknown emails cost the same.
    dummy_hash: Arc<str>,
    on_hash: HashTimer,
    stats: HashStats,
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher").field("available_permits", &self.permits.available_permits()).finish_non_exhaustive()
    }
}

thread_local! {
    static LOWERED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Hashing threads run at the lowest scheduling priority (`SCHED_IDLE` on Linux, the lowest
/// nice value elsewhere), so when a login storm and token validation compete for a core,
/// validation wins: logins wait longer, validation latency does not grow. Logins still run on
/// any idle cycle. Best effort: a refusal leaves the priority unchanged.
fn lower_priority_once() {
    LOWERED.with(|lowered| {
        if !lowered.get() {
            if let Err(err) = lower_current_thread() {
                tracing::debug!(error = ?err, "could not lower the hashing thread's priority");
            }
            lowered.set(true);
        }
    });
}

#[cfg(target_os = "linux")]
fn lower_current_thread() -> Result<(), thread_priority::Error> {
    use thread_priority::unix::{
        NormalThreadSchedulePolicy, ThreadSchedulePolicy, set_thread_priority_and_policy, thread_native_id,
    };
    set_thread_priority_and_policy(
        thread_native_id(),
        thread_priority::ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    )
}

#[cfg(not(target_os = "linux"))]
fn lower_current_thread() -> Result<(), thread_priority::Error> {
    thread_priority::set_current_thread_priority(thread_priority::ThreadPriority::Min)
}

/// Every hashing thread and queue place is taken: 503 with `Retry-After`.
fn queue_full() -> Error {
    Error::Unavailable("password hashing is at capacity; retry shortly".to_owned())
}

fn argon() -> Result<Argon2<'static>, Error> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(Error::internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

impl Hasher {
    pub fn new(concurrency: usize, queue: usize, on_hash: HashTimer) -> Result<Self, Error> {
        let argon = argon()?;
        let dummy_hash = argon.hash_password(b"portcullis-timing-equaliser").map_err(Error::internal)?.to_string();
        let concurrency = concurrency.max(1);
        Ok(Self {
            argon,
            permits: Arc::new(Semaphore::new(concurrency)),
            admissions: Arc::new(Semaphore::new(concurrency.saturating_add(queue))),
            dummy_hash: dummy_hash.into(),
            on_hash,
            stats: HashStats::default(),
        })
    }

    async fn blocking<R: Send + 'static>(
        &self,
        work: impl FnOnce(&Argon2<'static>) -> R + Send + 'static,
    ) -> Result<R, Error> {
        // Past the queue, refuse at once instead of piling up waiters.
        let admission = self.admissions.clone().try_acquire_owned().map_err(|_| queue_full())?;
        let permit = self.permits.clone().acquire_owned().await.map_err(Error::internal)?;
        let argon = self.argon.clone();
        let on_hash = self.on_hash.clone();
        let stats = self.stats.clone();
        // The permits move into the closure: a hash that has started holds them to its end,
        // even when the request that asked for it is dropped (its client hung up).
        tokio::task::spawn_blocking(move || {
            let _held = (permit, admission);
            lower_priority_once();
            let _running = stats.enter();
            let started = Instant::now();
            let out = work(&argon);
            on_hash(started.elapsed());
            out
        })
        .await
        .map_err(Error::internal)
    }

    /// The hashing threads' counts.
    pub fn stats(&self) -> &HashStats {
        &self.stats
    }

    /// Checks strength (zxcvbn, with the user's own name and email as known words) and hashes.
    pub async fn hash_new(
        &self,
        field: &'static str,
        password: Password,
        user_inputs: Vec<String>,
    ) -> Result<String, Error> {
        self.blocking(move |argon| {
            let inputs: Vec<&str> = user_inputs.iter().map(String::as_str).collect();
            let score = u8::from(zxcvbn::zxcvbn(&password.0, &inputs).score());
            if score < MIN_ZXCVBN_SCORE {
                return Err(Error::validation(field, "is too common or too easy to guess"));
            }
            argon.hash_password(password.0.as_bytes()).map(|h| h.to_string()).map_err(Error::internal)
        })
        .await?
    }

    /// Verifies; with no stored hash, burns the same work and answers false.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<bool, Error> {
        let dummy = self.dummy_hash.clone();
        self.blocking(move |argon| {
            let (hash, known) = match &stored {
                Some(h) => (h.as_str(), true),
                None => (&*dummy, false),
            };
            let ok = PasswordHash::new(hash)
                .map(|parsed| argon.verify_password(password.0.as_bytes(), &parsed).is_ok())
                .unwrap_or(false);
            ok && known
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hasher() -> Hasher {
        Hasher::new(1, 4, Arc::new(|_| {})).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn length_rules_count_scalar_values_after_nfkc() {
        assert!(Password::parse_new("p", "short", 8).is_err());
        assert!(Password::parse_new("p", &"é".repeat(256), 8).is_ok());
        assert!(Password::parse_new("p", &"é".repeat(257), 8).is_err());
        // U+FB01 (ﬁ) normalises to two characters.
        assert_eq!(Password::parse_new("p", "ﬁ", 1).map(|p| p.0).ok(), Some("fi".to_owned()));
    }

    #[tokio::test]
    async fn hashes_verify_and_common_passwords_are_refused() {
        let h = hasher();
        let weak = Password::parse_new("password", "password123", 8).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(h.hash_new("password", weak, vec![]).await, Err(Error::Validation(_))));
        let good = "correct horse battery staple 42";
        let hash = h
            .hash_new("password", Password::parse_new("password", good, 8).unwrap_or_else(|e| panic!("{e}")), vec![])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(h.verify(Password::presented(good), Some(hash.clone())).await.unwrap_or(false));
        assert!(!h.verify(Password::presented("wrong password!"), Some(hash)).await.unwrap_or(true));
        assert!(!h.verify(Password::presented(good), None).await.unwrap_or(true));
    }
}
