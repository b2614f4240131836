//! Redis connection pools shared by the bus, the counters and the services.

use deadpool_redis::{Config, Pool, Runtime};

use crate::Unavailable;

pub use deadpool_redis::redis as client;

/// Builds a pool and proves the server answers, so a wrong `REDIS_URL` fails at start-up.
pub async fn connect(url: &str) -> Result<Pool, Unavailable> {
    let pool = Config::from_url(url).create_pool(Some(Runtime::Tokio1)).map_err(|e| Unavailable::new("redis", e))?;
    ping(&pool).await?;
    Ok(pool)
}

pub async fn ping(pool: &Pool) -> Result<(), Unavailable> {
    let mut conn = pool.get().await.map_err(|e| Unavailable::new("redis", e))?;
    client::cmd("PING").query_async::<String>(&mut conn).await.map(drop).map_err(|e| Unavailable::new("redis", e))
}
