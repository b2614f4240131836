//! PostgreSQL storage for distributed mode.

use std::{str::FromStr, time::Duration};

use sqlx::{
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions},
};

use super::{StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    pub(super) pool: PgPool,
}

impl PostgresStore {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let pool = Self::open_pool(options, max_connections).await?;
        super::migrate::apply(&MIGRATOR, &pool).await?;
        Ok(Self { pool })
    }

    /// A pool on `options`, not migrated.
    pub(super) async fn open_pool(options: PgConnectOptions, max_connections: u32) -> StoreResult<PgPool> {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    pub(super) fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

impl super::sql::Backend for PostgresStore {
    type Db = sqlx::Postgres;

    fn pool(&self) -> &PgPool {
        &self.pool
    }
}
