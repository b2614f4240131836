//! The operator's hold on the dead letters, outside a running gateway (`cargo xtask webhooks
//! dead list|show|replay`): the same outbox the gateway would use with the same environment,
//! read through its index, so nothing has to go through a whole queue.

use std::sync::Arc;

use platform::Unavailable;

use super::{
    amqp::{AmqpIndex, AmqpOutbox},
    outbox::{self, DeadLetter, Outbox, RedisOutbox, SpoolOutbox},
};
use crate::config::WebhookStore;

/// The dead letters of every source, where the gateway keeps them.
pub struct DeadLetterAdmin {
    outbox: Arc<dyn Outbox>,
    /// Where they are, for the operator's eyes.
    pub location: String,
}

impl DeadLetterAdmin {
    /// Opens the store `config` names: RabbitMQ with `AMQP_URL` (its index in Redis, or under
    /// `DATA_DIR`), else Redis with `REDIS_URL`, else the spool under `DATA_DIR`.
    pub async fn open(config: &WebhookStore) -> Result<Self, String> {
        use secrecy::ExposeSecret as _;
        let redis = match &config.redis_url {
            Some(url) => Some(platform::redis::connect(url.expose_secret()).await.map_err(|e| e.to_string())?),
            None => None,
        };
        let spool = config.data_dir.join(super::SPOOL_DIR);
        let (outbox, location): (Arc<dyn Outbox>, String) = match (&config.amqp, redis) {
            (Some(amqp), Some(pool)) => (
                Arc::new(AmqpOutbox::new(amqp, AmqpIndex::Redis { pool, key_prefix: config.redis_key_prefix.clone() })),
                format!("RabbitMQ, indexed in Redis under {}webhooks:dead-letters:", config.redis_key_prefix),
            ),
            (Some(amqp), None) => (
                Arc::new(AmqpOutbox::new(amqp, AmqpIndex::Spool(spool.clone()))),
                format!("RabbitMQ, indexed under {}", spool.display()),
            ),
            (None, Some(pool)) => (
                Arc::new(RedisOutbox::new(pool, &config.redis_key_prefix)),
                format!("Redis, {}webhooks:dead-letters:", config.redis_key_prefix),
            ),
            (None, None) => (Arc::new(SpoolOutbox::new(spool.clone())), format!("the spool, {}", spool.display())),
        };
        Ok(Self { outbox, location })
    }

    /// The source's dead letters, oldest first, with the names they are indexed under.
    pub async fn list(&self, source: &str) -> Result<Vec<(String, DeadLetter)>, Unavailable> {
        self.outbox.dead_letters().list(source).await
    }

    /// The dead letter indexed as `name`.
    pub async fn show(&self, source: &str, name: &str) -> Result<Option<DeadLetter>, Unavailable> {
        Ok(self.list(source).await?.into_iter().find(|(n, _)| n == name).map(|(_, letter)| letter))
    }

    /// Puts the dead letter indexed as `name` back in its source's queue, attempts starting
    /// over; a running gateway delivers it (an embedded one within a second or so).
    pub async fn replay(&self, source: &str, name: &str) -> Result<bool, Unavailable> {
        self.outbox.prepare(source).await?;
        outbox::replay(self.outbox.as_ref(), source, name).await
    }

    /// Closes the broker connection, if any.
    pub fn close(&self) {
        self.outbox.release();
    }
}
