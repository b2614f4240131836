//! The SQL both backends share. PostgreSQL and SQLite accept the same statements here (`$n`
//! placeholders, `RETURNING`-free DML, partial indexes), so each is written once, generic over
//! the sqlx database, in the file of its aggregate:
//!
//! - `users.rs`: users and their sessions
//! - `tokens.rs`: refresh tokens
//! - `pats.rs`: personal access tokens
//! - `clients.rs`: clients and their API keys
//! - `sdk.rs`: SDK sessions
//! - `service_tokens.rs`: service tokens and revoked jtis
//! - `audit.rs`: the audit log and cleanup
//!
//! Each file reads its rows into `#[derive(FromRow)]` types holding the columns as stored
//! (text ids, millisecond timestamps) and turns them into records with `TryFrom`. This module
//! holds what they share ([`Dialect`], [`Sql`]), and `store.rs` implements [`Store`] once for
//! both stores by delegating to them; only connection set-up and migrations differ.
//!
//! [`Store`]: super::Store

mod audit;
mod clients;
mod pats;
mod sdk;
mod service_tokens;
mod store;
mod tokens;
mod users;

use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Type, postgres::PgQueryResult,
    sqlite::SqliteQueryResult,
};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{StoreResult, map_sqlx, to_ms};

/// A sqlx database the shared SQL runs on: PostgreSQL or SQLite.
///
/// The bounds on the database's own types are stated here once. The rest (a connection
/// executes queries; text, integers and booleans bind and decode; columns are found by name)
/// are bounds on other types, which Rust does not carry from a trait to its users
/// (rust-lang/rust#20671), so every `impl` block over a `Dialect` restates them in the same
/// eight lines.
pub(crate) trait Dialect: Database<Arguments: IntoArguments<Self>, QueryResult: Affected> {}

impl Dialect for sqlx::Postgres {}
impl Dialect for sqlx::Sqlite {}

/// How many rows a statement changed. Each driver has its own result type with an inherent
/// `rows_affected`; sqlx names no trait for it.
pub(crate) trait Affected {
    fn rows_affected(&self) -> u64;
}

impl Affected for PgQueryResult {
    fn rows_affected(&self) -> u64 {
        PgQueryResult::rows_affected(self)
    }
}

impl Affected for SqliteQueryResult {
    fn rows_affected(&self) -> u64 {
        SqliteQueryResult::rows_affected(self)
    }
}

/// A `COUNT(*) AS n`.
#[derive(sqlx::FromRow)]
struct Count {
    n: i64,
}

/// A store that runs the shared SQL: which database it speaks, and its pool.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: Dialect;

    fn pool(&self) -> &Pool<Self::Db>;
}

/// The shared SQL over one pool. The aggregate files each add their statements to it.
pub(crate) struct Sql<'p, DB: Database> {
    pool: &'p Pool<DB>,
}

impl<'p, DB: Database> Sql<'p, DB> {
    pub(crate) fn of<S: Backend<Db = DB>>(store: &'p S) -> Self {
        Self { pool: store.pool() }
    }
}

impl<DB: Dialect> Sql<'_, DB>
where
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'r> &'r str: ColumnIndex<DB::Row>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> String: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<String>: Encode<'q, DB>,
    for<'q> i64: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
    for<'q> Option<i64>: Encode<'q, DB>,
    for<'q> bool: Encode<'q, DB> + Decode<'q, DB> + Type<DB>,
{
    pub(crate) async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(self.pool).await.map(drop).map_err(map_sqlx)
    }

    /// Runs an `UPDATE … SET <time column> = $1 WHERE id = $2 …`; whether a row changed.
    async fn stamp(&self, sql: &'static str, at: OffsetDateTime, id: Uuid) -> StoreResult<bool> {
        let done = sqlx::query(sql).bind(to_ms(at)).bind(id.to_string()).execute(self.pool).await.map_err(map_sqlx)?;
        Ok(done.rows_affected() > 0)
    }
}
