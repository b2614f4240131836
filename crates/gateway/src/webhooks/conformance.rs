//! The [`Outbox`] conformance suite: one set of behaviours written once and run against every
//! backend — the spool always, Redis when `REDIS_URL` is set and RabbitMQ when `AMQP_URL` is
//! set (both required in CI, through `testkit`). Each run uses its own key or queue prefix and
//! removes its RabbitMQ queues at the end.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use secrecy::SecretString;

use super::{
    amqp::{AmqpIndex, AmqpOutbox, AmqpSettings},
    outbox::{Delay, Outbox, RedisOutbox, Settled, SpoolOutbox, StoredEvent, replay},
};

/// The bound RabbitMQ queues get in these tests; the other tests stay below it.
const AMQP_BOUND: u64 = 4;

/// Where the events live; [`Store::open`] makes a new outbox instance on the same storage,
/// which is how a restart is simulated.
enum Store {
    Spool { dir: PathBuf, _tmp: tempfile::TempDir },
    Redis { pool: deadpool_redis::Pool, prefix: String },
    Amqp { settings: AmqpSettings, admin: Box<AmqpOutbox>, index: PathBuf, _tmp: tempfile::TempDir },
}

impl Store {
    fn spool() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        Self::Spool { dir: tmp.path().join("spool"), _tmp: tmp }
    }

    /// `None` outside CI when Redis is not configured; a panic in CI.
    async fn redis() -> Option<Self> {
        let testkit::Backend::Postgres { redis_url, .. } = testkit::Backend::shared()? else { return None };
        let pool = platform::redis::connect(&redis_url)
            .await
            .unwrap_or_else(|e| panic!("REDIS_URL is set but Redis is unreachable: {e}"));
        Some(Self::Redis { pool, prefix: format!("pc_test:{}:", uuid::Uuid::new_v4().simple()) })
    }

    /// `None` outside CI when RabbitMQ is not configured; a panic in CI.
    fn amqp() -> Option<Self> {
        let url = testkit::amqp_url()?;
        let settings = AmqpSettings {
            url: SecretString::from(url),
            queue_prefix: format!("pc_test.{}.", uuid::Uuid::new_v4().simple()),
            max_length: AMQP_BOUND,
        };
        let tmp = tempfile::tempdir().unwrap();
        let index = tmp.path().join("index");
        let admin = Box::new(AmqpOutbox::new(&settings, AmqpIndex::Spool(index.clone())));
        Some(Self::Amqp { settings, admin, index, _tmp: tmp })
    }

    fn open(&self) -> Arc<dyn Outbox> {
        match self {
            Self::Spool { dir, .. } => {
                std::fs::create_dir_all(dir).unwrap();
                Arc::new(SpoolOutbox::new(dir.clone()))
            }
            Self::Redis { pool, prefix } => Arc::new(RedisOutbox::new(pool.clone(), prefix)),
            Self::Amqp { settings, index, .. } => Arc::new(AmqpOutbox::new(settings, AmqpIndex::Spool(index.clone()))),
        }
    }

    /// How many events a source holds before a push is refused, where there is a bound.
    fn bound(&self) -> Option<u64> {
        matches!(self, Self::Amqp { .. }).then_some(AMQP_BOUND)
    }

    /// Events set aside for `source`, as the dead-letter index lists them (and, on RabbitMQ,
    /// as many in the dead-letter queue).
    async fn dead(&self, source: &str) -> u64 {
        let indexed = self.open().dead_letters().list(source).await.unwrap().len() as u64;
        if let Self::Amqp { admin, .. } = self {
            assert_eq!(admin.dead_count(source).await.unwrap(), indexed, "the queue and its index agree");
        }
        indexed
    }

    /// Removes what the run left behind on a shared server.
    async fn clean(&self, sources: &[&str]) {
        match self {
            Self::Spool { .. } => {}
            Self::Redis { pool, prefix } => {
                let mut conn = pool.get().await.unwrap();
                for source in sources {
                    for list in ["queue", "processing", "delayed", "dead-letters", "waiting", "sequence"] {
                        let _: i64 = platform::redis::client::cmd("DEL")
                            .arg(format!("{prefix}webhooks:{list}:{source}"))
                            .query_async(&mut conn)
                            .await
                            .unwrap();
                    }
                }
            }
            Self::Amqp { admin, .. } => {
                for source in sources {
                    admin.delete_queues(source).await.unwrap();
                }
            }
        }
    }
}

fn event(source: &str, id: &str) -> StoredEvent {
    StoredEvent::new(
        id.to_owned(),
        source.to_owned(),
        1_700_000_000,
        Some("application/json".to_owned()),
        vec![("webhook-signature".to_owned(), "v1,AAAA".to_owned())],
        &[0, 159, 146, 150, b'{', b'}'],
    )
}

/// `pending` once it reaches `expected` (a broker settles a closed channel's deliveries on
/// its own time), else its last value after a few seconds.
async fn pending_eventually(outbox: &dyn Outbox, source: &str, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let pending = outbox.pending(source).await.unwrap();
        if pending == expected || Instant::now() > deadline {
            return pending;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Claims, completes, and returns the ids in the order they came.
async fn drain(outbox: &dyn Outbox, source: &str) -> Vec<String> {
    let mut ids = Vec::new();
    while let Some(claimed) = outbox.claim(source).await.unwrap() {
        ids.push(claimed.event.id.clone());
        assert_eq!(outbox.complete(source, &claimed).await.unwrap(), Settled::Done);
        assert!(ids.len() <= 100, "the queue never empties: {ids:?}");
    }
    ids
}

/// One test per backend for each `async fn(&Store)`; every test cleans up the sources it names.
macro_rules! on_every_outbox {
    ($($name:ident),* $(,)?) => {
        mod spool {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let store = super::Store::spool();
                    super::$name(&store).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::redis().await {
                        super::cleaned_up(&store, super::$name(&store)).await;
                    }
                }
            )*
        }
        mod amqp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(store) = super::Store::amqp() {
                        super::cleaned_up(&store, super::$name(&store)).await;
                    }
                }
            )*
        }
    };
}

/// Every source a test may use.
const SOURCES: &[&str] = &["billing", "meta"];

/// Runs `test`, then removes its keys or queues even when it failed, then fails as it did.
async fn cleaned_up(store: &Store, test: impl std::future::Future<Output = ()>) {
    use futures::FutureExt as _;
    let outcome = std::panic::AssertUnwindSafe(test).catch_unwind().await;
    store.clean(SOURCES).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

on_every_outbox!(
    push_claim_complete,
    claims_come_in_arrival_order,
    dead_letter_removes_and_keeps_aside,
    recover_puts_back_what_was_claimed_and_not_finished,
    pending_counts_queued_and_in_flight,
    sources_do_not_mix,
    overflow_is_refused_at_the_bound,
    several_claims_are_in_flight_at_once,
    a_deferred_event_leaves_the_queue_until_its_time,
    dead_letters_are_indexed_and_replayed_once,
    a_refusal_is_stored_with_its_event_and_lifted_by_a_replay,
);

async fn push_claim_complete(store: &Store) {
    let outbox = store.open();
    assert_eq!(outbox.recover("billing").await.unwrap(), 0);
    assert!(outbox.claim("billing").await.unwrap().is_none());
    outbox.push(&event("billing", "a")).await.unwrap();

    let claimed = outbox.claim("billing").await.unwrap().expect("the pushed event");
    assert_eq!(claimed.event, event("billing", "a"));
    assert_eq!(claimed.event.body().unwrap().as_ref(), &[0, 159, 146, 150, b'{', b'}']);
    assert_eq!(outbox.complete("billing", &claimed).await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 0).await, 0);
    assert!(outbox.claim("billing").await.unwrap().is_none());
    assert_eq!(store.dead("billing").await, 0);
}

async fn claims_come_in_arrival_order(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    for id in ["a", "b", "c"] {
        outbox.push(&event("billing", id)).await.unwrap();
    }
    assert_eq!(drain(outbox.as_ref(), "billing").await, ["a", "b", "c"]);
}

async fn dead_letter_removes_and_keeps_aside(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    outbox.push(&event("billing", "poison")).await.unwrap();
    outbox.push(&event("billing", "next")).await.unwrap();

    let poison = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(poison.event.id, "poison");
    assert_eq!(outbox.dead_letter("billing", &poison, "refused").await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 1).await, 1);
    assert_eq!(store.dead("billing").await, 1);

    // Neither delivered again by this instance nor after a restart.
    assert_eq!(drain(outbox.as_ref(), "billing").await, ["next"]);
    drop(outbox);
    let again = store.open();
    assert_eq!(again.recover("billing").await.unwrap(), 0);
    assert!(again.claim("billing").await.unwrap().is_none());
    assert_eq!(store.dead("billing").await, 1);
}

async fn recover_puts_back_what_was_claimed_and_not_finished(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    for id in ["a", "b"] {
        outbox.push(&event("billing", id)).await.unwrap();
    }
    let claimed = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(claimed.event.id, "a");

    // Recovered by the same instance (a worker restarted in place)…
    outbox.recover("billing").await.unwrap();
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 2).await, 2);
    let again = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(again.event.id, "a", "the unfinished event comes first");

    // …and by the next process, after this one stopped holding it.
    outbox.release();
    drop(outbox);
    let next = store.open();
    next.recover("billing").await.unwrap();
    assert_eq!(pending_eventually(next.as_ref(), "billing", 2).await, 2);
    assert_eq!(drain(next.as_ref(), "billing").await, ["a", "b"]);
    assert_eq!(store.dead("billing").await, 0);
}

async fn pending_counts_queued_and_in_flight(store: &Store) {
    let outbox = store.open();
    assert_eq!(outbox.recover("billing").await.unwrap(), 0);
    for id in ["a", "b", "c"] {
        outbox.push(&event("billing", id)).await.unwrap();
    }
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 3).await, 3);
    let claimed = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(outbox.pending("billing").await.unwrap(), 3, "in flight is still pending");
    assert_eq!(outbox.complete("billing", &claimed).await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 2).await, 2);
    let claimed = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(outbox.dead_letter("billing", &claimed, "refused").await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 1).await, 1);
    // A restart counts what is stored.
    outbox.release();
    drop(outbox);
    assert_eq!(store.open().recover("billing").await.unwrap(), 1);
}

async fn sources_do_not_mix(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    outbox.recover("meta").await.unwrap();
    outbox.push(&event("billing", "b1")).await.unwrap();
    outbox.push(&event("meta", "m1")).await.unwrap();
    outbox.push(&event("billing", "b2")).await.unwrap();
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 2).await, 2);
    assert_eq!(pending_eventually(outbox.as_ref(), "meta", 1).await, 1);

    let meta = outbox.claim("meta").await.unwrap().unwrap();
    assert_eq!((meta.event.id.as_str(), meta.event.source.as_str()), ("m1", "meta"));
    assert_eq!(outbox.dead_letter("meta", &meta, "refused").await.unwrap(), Settled::Done);
    assert_eq!(store.dead("meta").await, 1);
    assert_eq!(store.dead("billing").await, 0);
    assert!(outbox.claim("meta").await.unwrap().is_none());
    assert_eq!(drain(outbox.as_ref(), "billing").await, ["b1", "b2"]);
}

async fn overflow_is_refused_at_the_bound(store: &Store) {
    let Some(bound) = store.bound() else {
        // The spool and Redis take what their disk or memory holds; nothing to refuse.
        return;
    };
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    // A quorum queue refuses once it is over its bound, so the publish that reaches the bound
    // plus one still gets in; never more from one publisher waiting for each confirm.
    let mut accepted = 0;
    let refused = loop {
        match outbox.push(&event("billing", &format!("e{accepted}"))).await {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted <= bound + 1, "{accepted} events accepted with a bound of {bound}");
    };
    assert!(accepted >= bound, "refused below the bound: {accepted} of {bound}");
    assert_eq!(refused.dependency, "rabbitmq");
    assert!(refused.message.contains("full"), "{refused}");
    assert!(outbox.push(&event("billing", "still-full")).await.is_err());
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", accepted).await, accepted);

    // Room made by deliveries is room for the sender's retry.
    assert_eq!(drain(outbox.as_ref(), "billing").await.len() as u64, accepted);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = outbox.push(&event("billing", "retried")).await {
        assert!(Instant::now() < deadline, "still refused after the queue emptied: {e}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(drain(outbox.as_ref(), "billing").await, ["retried"]);
}

async fn several_claims_are_in_flight_at_once(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    for id in ["a", "b", "c"] {
        outbox.push(&event("billing", id)).await.unwrap();
    }
    let first = outbox.claim("billing").await.unwrap().unwrap();
    let second = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!((first.event.id.as_str(), second.event.id.as_str()), ("a", "b"));
    // Finished out of order: each on its own.
    assert_eq!(outbox.complete("billing", &second).await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 2).await, 2);
    assert_eq!(outbox.complete("billing", &first).await.unwrap(), Settled::Done);
    assert_eq!(drain(outbox.as_ref(), "billing").await, ["c"]);
}

/// Claims until an event comes, or `within` passes.
async fn claim_within(outbox: &dyn Outbox, source: &str, within: Duration) -> Option<super::outbox::Claimed> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(claimed) = outbox.claim(source).await.unwrap() {
            return Some(claimed);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn a_deferred_event_leaves_the_queue_until_its_time(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    let keyed = event("billing", "retry-me").ordered(Some("conv-1".to_owned()), 41);
    outbox.push(&keyed).await.unwrap();
    outbox.push(&event("billing", "next")).await.unwrap();
    let claimed = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(claimed.event, keyed);

    let mut retried = keyed.clone();
    retried.attempt = 1;
    assert_eq!(
        outbox.defer("billing", &claimed, &retried, Delay::exactly(Duration::from_millis(700))).await.unwrap(),
        Settled::Done
    );
    let waiting = outbox.waiting("billing").await.unwrap();
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!((waiting[0].key.as_deref(), waiting[0].sequence), (Some("conv-1"), 41));
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 2).await, 2, "a deferred event is still pending");

    // Meanwhile the queue goes on without it…
    let next = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(next.event.id, "next");
    assert_eq!(outbox.complete("billing", &next).await.unwrap(), Settled::Done);
    assert!(outbox.claim("billing").await.unwrap().is_none(), "not before its time");

    // …and it comes back, as deferred, once its time has come.
    let back = claim_within(outbox.as_ref(), "billing", Duration::from_secs(10)).await.expect("the deferred event");
    assert_eq!(back.event, retried);
    assert_eq!(outbox.complete("billing", &back).await.unwrap(), Settled::Done);
    assert!(outbox.waiting("billing").await.unwrap().is_empty());
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 0).await, 0);
}

async fn dead_letters_are_indexed_and_replayed_once(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    outbox.push(&event("billing", "poison")).await.unwrap();
    let claimed = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(outbox.dead_letter("billing", &claimed, "the upstream answered 422").await.unwrap(), Settled::Done);

    let letters = outbox.dead_letters().list("billing").await.unwrap();
    assert_eq!(letters.len(), 1);
    let (name, letter) = &letters[0];
    assert_eq!(name, "poison");
    assert_eq!(letter.event, event("billing", "poison"));
    assert_eq!(letter.reason, "the upstream answered 422");
    assert!(letter.dead_at_ms > 0);
    assert!(outbox.dead_letters().list("meta").await.unwrap().is_empty(), "per source");

    // The same id dead again is kept beside the first, not over it.
    outbox.push(&event("billing", "poison")).await.unwrap();
    let again = outbox.claim("billing").await.unwrap().unwrap();
    assert_eq!(outbox.dead_letter("billing", &again, "again").await.unwrap(), Settled::Done);
    let letters = outbox.dead_letters().list("billing").await.unwrap();
    assert_eq!(letters.len(), 2, "{letters:?}");
    assert!(letters[1].0.starts_with("poison.") || letters[0].0.starts_with("poison."), "{letters:?}");

    assert!(!replay(outbox.as_ref(), "billing", "nothing-of-that-name").await.unwrap());
    assert!(replay(outbox.as_ref(), "billing", "poison").await.unwrap());
    assert!(!replay(outbox.as_ref(), "billing", "poison").await.unwrap(), "replayed once");
    let replayed = claim_within(outbox.as_ref(), "billing", Duration::from_secs(10)).await.expect("the replayed event");
    assert_eq!(replayed.event.id, "poison");
    assert_eq!(replayed.event.attempt, 0);
    assert_eq!(outbox.complete("billing", &replayed).await.unwrap(), Settled::Done);
    assert_eq!(outbox.dead_letters().list("billing").await.unwrap().len(), 1);
}

async fn a_refusal_is_stored_with_its_event_and_lifted_by_a_replay(store: &Store) {
    let outbox = store.open();
    outbox.recover("billing").await.unwrap();
    let reason = "schema: /type: value is not one of \"paid\" or \"refunded\"";
    let refused = event("billing", "off-schema").refused(reason.to_owned());
    outbox.push(&refused).await.unwrap();
    let claimed = outbox.claim("billing").await.unwrap().expect("the pushed event");
    assert_eq!(claimed.event, refused);
    assert_eq!(outbox.dead_letter("billing", &claimed, reason).await.unwrap(), Settled::Done);
    let letters = outbox.dead_letters().list("billing").await.unwrap();
    assert_eq!((letters.len(), letters[0].1.reason.as_str()), (1, reason));
    assert_eq!(letters[0].1.event.refusal.as_deref(), Some(reason));

    assert!(replay(outbox.as_ref(), "billing", "off-schema").await.unwrap());
    let replayed = claim_within(outbox.as_ref(), "billing", Duration::from_secs(10)).await.expect("the replayed event");
    assert_eq!((replayed.event.id.as_str(), replayed.event.refusal.as_deref()), ("off-schema", None));
    assert_eq!(outbox.complete("billing", &replayed).await.unwrap(), Settled::Done);
    assert_eq!(pending_eventually(outbox.as_ref(), "billing", 0).await, 0);
}
