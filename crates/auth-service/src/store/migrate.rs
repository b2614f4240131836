//! Applying the embedded migrations (`migrations/postgres`, `migrations/sqlite`): both stores
//! do it when they connect, and [`migrate`] does it alone for a database named by its URL, for
//! `cargo xtask migrate --database-url`, which needs nothing else of the service's
//! configuration. Each run says which migrations it applied.

use std::{collections::HashSet, path::PathBuf, str::FromStr};

use sqlx::{
    Database, Pool,
    migrate::{Migrate, Migrator},
    postgres::PgConnectOptions,
    sqlite::SqliteConnectOptions,
};

use super::{PostgresStore, SqliteStore, StoreError, StoreResult, map_sqlx};

/// One migration a run applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub version: i64,
    pub description: String,
}

impl std::fmt::Display for Migration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}_{}", self.version, self.description.replace(' ', "_"))
    }
}

/// What [`migrate`] did to one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Which database, for people: `PostgreSQL database … on host:port` or `SQLite <file>`;
    /// never the URL, which may hold a password.
    pub database: String,
    /// What this run applied, oldest first; empty when the schema was already current.
    pub applied: Vec<Migration>,
    /// How many migrations were already applied before this run.
    pub already_applied: usize,
}

fn migrate_error(err: sqlx::migrate::MigrateError) -> StoreError {
    StoreError::Other(format!("migrations: {err}"))
}

/// Runs `migrator` on `pool`; returns what it applied and how many were there before. One
/// connection holds the migration lock from reading the bookkeeping table (creating it when
/// the database is new) until the pending migrations are applied, so runs that start at once
/// on one database (replicas starting together) take turns: each migration is applied and
/// reported by one run, and none of them fails creating the table another is creating.
/// sqlx takes the same lock again inside (PostgreSQL's advisory locks nest per session;
/// SQLite needs none, its writes are serialised).
pub(super) async fn apply<DB>(migrator: &Migrator, pool: &Pool<DB>) -> StoreResult<(Vec<Migration>, usize)>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Acquire<'c, Database = DB>,
{
    let mut conn = pool.acquire().await.map_err(map_sqlx)?;
    conn.lock().await.map_err(migrate_error)?;
    let result = apply_locked(migrator, &mut conn).await;
    let unlocked = conn.unlock().await.map_err(migrate_error);
    let result = result?;
    unlocked?;
    Ok(result)
}

/// [`apply`]'s work, on a connection holding the migration lock.
async fn apply_locked<DB>(migrator: &Migrator, conn: &mut DB::Connection) -> StoreResult<(Vec<Migration>, usize)>
where
    DB: Database,
    DB::Connection: Migrate,
    for<'c> &'c mut DB::Connection: sqlx::Acquire<'c, Database = DB>,
{
    conn.ensure_migrations_table(&migrator.table_name).await.map_err(migrate_error)?;
    let before: HashSet<i64> = conn
        .list_applied_migrations(&migrator.table_name)
        .await
        .map_err(migrate_error)?
        .into_iter()
        .map(|m| m.version)
        .collect();
    migrator.run(&mut *conn).await.map_err(migrate_error)?;
    let applied = migrator
        .iter()
        .filter(|m| m.migration_type.is_up_migration() && !before.contains(&m.version))
        .map(|m| Migration { version: m.version, description: m.description.to_string() })
        .collect();
    Ok((applied, before.len()))
}

/// The database a `--database-url` names.
#[derive(Debug)]
enum Target {
    Postgres(Box<PgConnectOptions>),
    Sqlite(PathBuf),
}

impl Target {
    /// `postgres://…` or `postgresql://…`; `sqlite:<path>` or `sqlite://<path>`; or a bare
    /// file path, taken as SQLite. Errors never repeat the URL, which may hold a password.
    fn parse(url: &str) -> StoreResult<Self> {
        let url = url.trim();
        if url.is_empty() {
            return Err(StoreError::Other("the database URL is empty".to_owned()));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return PgConnectOptions::from_str(url)
                .map(|options| Self::Postgres(Box::new(options)))
                .map_err(|_| StoreError::Other("the PostgreSQL URL cannot be read".to_owned()));
        }
        if let Some(rest) = url.strip_prefix("sqlite:") {
            let options = SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::Other(format!("the SQLite URL cannot be read: {e}")))?;
            let file = options.get_filename().to_path_buf();
            if rest.contains(":memory:") || file.as_os_str().is_empty() {
                return Err(StoreError::Other(
                    "an in-memory SQLite database would vanish with the command; name a file".to_owned(),
                ));
            }
            return Ok(Self::Sqlite(file));
        }
        if url.contains("://") {
            return Err(StoreError::Other(
                "unsupported database URL: expected postgres://, postgresql://, sqlite: or a file path".to_owned(),
            ));
        }
        Ok(Self::Sqlite(PathBuf::from(url)))
    }
}

/// Applies the pending migrations to the database `database_url` names (see [`Target`]'s
/// forms), and nothing else: no other configuration is read and no service state is touched.
/// A new SQLite file is created readable by its owner only, as the embedded database is.
/// Running it again applies nothing.
pub async fn migrate(database_url: &str) -> StoreResult<Migrated> {
    match Target::parse(database_url)? {
        Target::Postgres(options) => {
            let database = format!(
                "PostgreSQL database {} on {}:{}",
                options.get_database().unwrap_or("(the user's default)"),
                options.get_host(),
                options.get_port()
            );
            let pool = PostgresStore::open_pool(*options, 2).await?;
            let (applied, already_applied) = apply(PostgresStore::migrator(), &pool).await?;
            pool.close().await;
            Ok(Migrated { database, applied, already_applied })
        }
        Target::Sqlite(file) => {
            if !file.exists() {
                platform::fs::private_file(&file)
                    .map_err(|e| StoreError::Other(format!("cannot create {}: {e}", file.display())))?;
            }
            let pool = SqliteStore::open_pool(&file).await?;
            let (applied, already_applied) = apply(SqliteStore::migrator(), &pool).await?;
            pool.close().await;
            Ok(Migrated { database: format!("SQLite {}", file.display()), applied, already_applied })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_their_backend() {
        let pg = Target::parse("postgres://u:secret@db.example:6543/app").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&pg, Target::Postgres(o) if o.get_database() == Some("app") && o.get_port() == 6543));
        assert!(matches!(Target::parse("postgresql://localhost/app"), Ok(Target::Postgres(_))));
        for (url, file) in [
            ("sqlite:data/p.db", "data/p.db"),
            ("sqlite://data/p.db", "data/p.db"),
            ("./data/portcullis.db", "./data/portcullis.db"),
            ("/tmp/x.db", "/tmp/x.db"),
        ] {
            match Target::parse(url) {
                Ok(Target::Sqlite(path)) => assert_eq!(path, PathBuf::from(file), "{url}"),
                other => panic!("{url}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_urls_are_refused_without_echoing_them() {
        for url in ["", "  ", "mysql://u:hunter2@db/app", "sqlite::memory:", "redis://:hunter2@127.0.0.1"] {
            let err = Target::parse(url).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(!err.is_empty(), "{url:?} accepted");
            assert!(!err.contains("hunter2"), "the URL's password was repeated: {err}");
        }
    }

    #[test]
    fn migrations_are_named_as_their_files() {
        let m = Migration { version: 4, description: "legacy pats".to_owned() };
        assert_eq!(m.to_string(), "0004_legacy_pats");
    }
}
