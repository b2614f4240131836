//! Redis stores for distributed mode: `ws:conn:{id}` hashes with a TTL refreshed by
//! heartbeats, `ws:user:{id}` sets of connection ids, and `ws:ticket:{sha256}` strings
//! consumed with `GETDEL`; every key carries `REDIS_KEY_PREFIX`.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use platform::{Unavailable, redis::client};

use super::{ContextRecord, ContextStore, StoredConnection, Ticket, TicketRecord, TicketStore, ticket_key};

fn redis_err(e: impl std::fmt::Display) -> Unavailable {
    Unavailable::new("redis", e)
}

fn millis(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[derive(Clone)]
pub struct RedisContextStore {
    pool: Pool,
    prefix: String,
}

impl RedisContextStore {
    pub fn new(pool: Pool, prefix: impl Into<String>) -> Self {
        Self { pool, prefix: prefix.into() }
    }

    fn conn_key(&self, id: &str) -> String {
        format!("{}ws:conn:{id}", self.prefix)
    }

    fn user_key(&self, owner: &str) -> String {
        format!("{}ws:user:{owner}", self.prefix)
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, Unavailable> {
        self.pool.get().await.map_err(redis_err)
    }
}

#[async_trait]
impl ContextStore for RedisContextStore {
    async fn put(&self, connection: &StoredConnection, ttl: Duration) -> Result<(), Unavailable> {
        let key = self.conn_key(&connection.id);
        let context = serde_json::to_string(&ContextRecord::from(&connection.context)).map_err(redis_err)?;
        let c = &connection.context;
        let fields: [(&str, String); 8] = [
            ("node", connection.node.clone()),
            ("connected_at", connection.connected_at.to_string()),
            ("kind", c.kind.as_str().to_owned()),
            ("subject", c.subject.clone()),
            ("user_id", c.user_id.clone().unwrap_or_default()),
            ("session_id", c.session_id.clone().unwrap_or_default()),
            ("expires_at", c.expires_at.map(|e| e.to_string()).unwrap_or_default()),
            ("context", context),
        ];
        let mut pipe = client::pipe();
        pipe.atomic().cmd("DEL").arg(&key).ignore().cmd("HSET").arg(&key);
        for (field, value) in &fields {
            pipe.arg(*field).arg(value);
        }
        pipe.ignore().cmd("PEXPIRE").arg(&key).arg(millis(ttl)).ignore();
        if let Some(owner) = connection.owner() {
            let set = self.user_key(owner);
            pipe.cmd("SADD").arg(&set).arg(&connection.id).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(millis(ttl)).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }

    async fn touch(&self, id: &str, owner: Option<&str>, ttl: Duration) -> Result<(), Unavailable> {
        let mut pipe = client::pipe();
        pipe.cmd("PEXPIRE").arg(self.conn_key(id)).arg(millis(ttl)).ignore();
        if let Some(owner) = owner {
            // Every member touches the set, so it outlives its last live connection by one TTL.
            pipe.cmd("PEXPIRE").arg(self.user_key(owner)).arg(millis(ttl)).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }

    async fn remove(&self, id: &str, owner: Option<&str>) -> Result<(), Unavailable> {
        let mut pipe = client::pipe();
        pipe.atomic().cmd("DEL").arg(self.conn_key(id)).ignore();
        if let Some(owner) = owner {
            pipe.cmd("SREM").arg(self.user_key(owner)).arg(id).ignore();
        }
        let mut conn = self.conn().await?;
        pipe.query_async::<()>(&mut conn).await.map_err(redis_err)
    }

    async fn get(&self, id: &str) -> Result<Option<StoredConnection>, Unavailable> {
        let mut conn = self.conn().await?;
        let (node, connected_at, context): (Option<String>, Option<i64>, Option<String>) = client::cmd("HMGET")
            .arg(self.conn_key(id))
            .arg("node")
            .arg("connected_at")
            .arg("context")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let (Some(node), Some(connected_at), Some(context)) = (node, connected_at, context) else {
            return Ok(None);
        };
        let record: ContextRecord = serde_json::from_str(&context).map_err(redis_err)?;
        let context = record.into_context().ok_or_else(|| redis_err("stored context has an unknown kind"))?;
        Ok(Some(StoredConnection { id: id.to_owned(), node, context, connected_at }))
    }

    async fn connections_of(&self, owner: &str) -> Result<Vec<String>, Unavailable> {
        let mut conn = self.conn().await?;
        let ids: Vec<String> =
            client::cmd("SMEMBERS").arg(self.user_key(owner)).query_async(&mut conn).await.map_err(redis_err)?;
        if ids.is_empty() {
            return Ok(ids);
        }
        // A node that died leaves ids behind whose hashes have expired: do not report them.
        let mut pipe = client::pipe();
        for id in &ids {
            pipe.cmd("EXISTS").arg(self.conn_key(id));
        }
        let alive: Vec<bool> = pipe.query_async(&mut conn).await.map_err(redis_err)?;
        Ok(ids.into_iter().zip(alive).filter(|(_, alive)| *alive).map(|(id, _)| id).collect())
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        platform::redis::ping(&self.pool).await
    }
}

#[derive(Clone)]
pub struct RedisTicketStore {
    pool: Pool,
    prefix: String,
}

impl RedisTicketStore {
    pub fn new(pool: Pool, prefix: impl Into<String>) -> Self {
        Self { pool, prefix: prefix.into() }
    }

    fn key(&self, ticket: &str) -> String {
        format!("{}ws:ticket:{}", self.prefix, ticket_key(ticket))
    }
}

#[async_trait]
impl TicketStore for RedisTicketStore {
    async fn put(&self, ticket: &str, value: &Ticket, ttl: Duration) -> Result<(), Unavailable> {
        let payload = serde_json::to_string(&TicketRecord::from_ticket(value)).map_err(redis_err)?;
        let mut conn = self.pool.get().await.map_err(redis_err)?;
        client::cmd("SET")
            .arg(self.key(ticket))
            .arg(payload)
            .arg("PX")
            .arg(millis(ttl))
            .query_async::<()>(&mut conn)
            .await
            .map_err(redis_err)
    }

    async fn take(&self, ticket: &str) -> Result<Option<Ticket>, Unavailable> {
        let mut conn = self.pool.get().await.map_err(redis_err)?;
        let payload: Option<String> =
            client::cmd("GETDEL").arg(self.key(ticket)).query_async(&mut conn).await.map_err(redis_err)?;
        let Some(payload) = payload else {
            return Ok(None);
        };
        let record: TicketRecord = serde_json::from_str(&payload).map_err(redis_err)?;
        Ok(record.into_ticket())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    /// Runs when `REDIS_URL` is set; CI sets it and a missing server fails there.
    async fn pool() -> Option<Pool> {
        let url = std::env::var("REDIS_URL").ok().filter(|v| !v.is_empty());
        let Some(url) = url else {
            assert!(
                !std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false"),
                "CI must set REDIS_URL: the Redis store tests may not be skipped"
            );
            eprintln!("REDIS_URL not set: Redis store conformance not run");
            return None;
        };
        Some(platform::redis::connect(&url).await.unwrap())
    }

    fn prefix() -> String {
        format!("pc_test:{}:", uuid::Uuid::new_v4().simple())
    }

    #[tokio::test]
    async fn redis_context_store_conforms() {
        if let Some(pool) = pool().await {
            conformance::contexts(&RedisContextStore::new(pool, prefix())).await;
        }
    }

    #[tokio::test]
    async fn redis_ticket_store_conforms() {
        if let Some(pool) = pool().await {
            conformance::tickets(&RedisTicketStore::new(pool, prefix())).await;
        }
    }
}
