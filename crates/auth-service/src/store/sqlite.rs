//! SQLite storage for embedded mode: one file under `DATA_DIR`, WAL journal, a busy timeout
//! so concurrent writers queue instead of failing.

use std::{path::Path, time::Duration};

use sqlx::{
    migrate::Migrator,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous},
};

use super::{StoreError, StoreResult};

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sqlite");

#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        let pool = Self::open_pool(path).await?;
        super::migrate::apply(&MIGRATOR, &pool).await?;
        Ok(Self { pool })
    }

    /// A pool on the file (created if missing), not migrated.
    pub(super) async fn open_pool(path: &Path) -> StoreResult<SqlitePool> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    pub(super) fn migrator() -> &'static Migrator {
        &MIGRATOR
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

impl super::sql::Backend for SqliteStore {
    type Db = sqlx::Sqlite;

    fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}
