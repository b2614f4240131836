//! Users and their sessions: accounts (by id, by email, the admin listing, password, role,
//! disabled) and the user sessions that sign-in opens, with their activity and their end.

use auth_contract::role::{Role, UnknownRole};
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Count, Dialect, Sql};
use crate::store::{RefreshToken, Session, StoreError, StoreResult, User, from_ms, map_sqlx, parse_uuid, to_ms};

const USER_COLUMNS: &str = "id, name, email, password_hash, role, disabled, created_at";
const SESSION_COLUMNS: &str =
    "id, user_id, device, user_agent, ip, created_at, last_activity, expires_at, ended_at, end_reason";

/// A `users` row as stored.
#[derive(sqlx::FromRow)]
struct UserRow {
    id: String,
    name: String,
    email: String,
    password_hash: String,
    role: String,
    disabled: bool,
    created_at: i64,
}

impl TryFrom<UserRow> for User {
    type Error = StoreError;

    fn try_from(row: UserRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            name: row.name,
            email: row.email,
            password_hash: row.password_hash,
            role: row.role.parse().map_err(|e: UnknownRole| StoreError::Other(e.to_string()))?,
            disabled: row.disabled,
            created_at: from_ms(row.created_at),
        })
    }
}

/// A `sessions` row as stored.
#[derive(sqlx::FromRow)]
struct SessionRow {
    id: String,
    user_id: String,
    device: String,
    user_agent: Option<String>,
    ip: String,
    created_at: i64,
    last_activity: i64,
    expires_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
}

impl TryFrom<SessionRow> for Session {
    type Error = StoreError;

    fn try_from(row: SessionRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            user_id: parse_uuid(&row.user_id)?,
            device: row.device,
            user_agent: row.user_agent,
            ip: row.ip,
            created_at: from_ms(row.created_at),
            last_activity: from_ms(row.last_activity),
            expires_at: from_ms(row.expires_at),
            ended_at: row.ended_at.map(from_ms),
            end_reason: row.end_reason,
        })
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
    pub(crate) async fn insert_user(&self, user: &User) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO users (id, name, email, password_hash, role, disabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(user.id.to_string())
        .bind(&user.name)
        .bind(&user.email)
        .bind(&user.password_hash)
        .bind(user.role.as_str())
        .bind(user.disabled)
        .bind(to_ms(user.created_at))
        .execute(self.pool)
        .await
        .map(drop)
        .map_err(map_sqlx)
    }

    pub(crate) async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
        let row: Option<UserRow> =
            sqlx::query_as(sql).bind(id.to_string()).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(User::try_from).transpose()
    }

    pub(crate) async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"));
        let row: Option<UserRow> = sqlx::query_as(sql).bind(email).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(User::try_from).transpose()
    }

    pub(crate) async fn set_password_hash(&self, user_id: Uuid, hash: &str, at: OffsetDateTime) -> StoreResult<()> {
        sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
            .bind(hash)
            .bind(to_ms(at))
            .bind(user_id.to_string())
            .execute(self.pool)
            .await
            .map(drop)
            .map_err(map_sqlx)
    }

    pub(crate) async fn list_users(&self, after: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<User>> {
        let (after_ms, after_id) = after.map_or((i64::MAX, String::new()), |(ms, id)| (ms, id.to_string()));
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE created_at < $1 OR (created_at = $1 AND id < $2) \
             ORDER BY created_at DESC, id DESC LIMIT $3"
        ));
        let rows: Vec<UserRow> = sqlx::query_as(sql)
            .bind(after_ms)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.into_iter().map(User::try_from).collect()
    }

    pub(crate) async fn set_user_disabled(&self, id: Uuid, disabled: bool, at: OffsetDateTime) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled)
            .bind(to_ms(at))
            .bind(id.to_string())
            .execute(self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn set_user_role(&self, id: Uuid, role: Role, at: OffsetDateTime) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
            .bind(role.as_str())
            .bind(to_ms(at))
            .bind(id.to_string())
            .execute(self.pool)
            .await
            .map_err(map_sqlx)?;
        Ok(done.rows_affected() == 1)
    }

    pub(crate) async fn insert_session(&self, session: &Session, refresh: &RefreshToken) -> StoreResult<()> {
        let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
        sqlx::query(
            "INSERT INTO sessions (id, user_id, device, user_agent, ip, created_at, last_activity, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(session.id.to_string())
        .bind(session.user_id.to_string())
        .bind(&session.device)
        .bind(&session.user_agent)
        .bind(&session.ip)
        .bind(to_ms(session.created_at))
        .bind(to_ms(session.last_activity))
        .bind(to_ms(session.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(map_sqlx)?;
        Self::insert_refresh(&mut *tx, refresh).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    pub(crate) async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"));
        let row: Option<SessionRow> =
            sqlx::query_as(sql).bind(id.to_string()).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(Session::try_from).transpose()
    }

    pub(crate) async fn live_sessions(
        &self,
        user_id: Uuid,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<Vec<Session>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions \
             WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2 AND last_activity > $3 \
             ORDER BY created_at ASC, id ASC"
        ));
        let rows: Vec<SessionRow> = sqlx::query_as(sql)
            .bind(user_id.to_string())
            .bind(to_ms(now))
            .bind(to_ms(idle_cutoff))
            .fetch_all(self.pool)
            .await
            .map_err(map_sqlx)?;
        rows.into_iter().map(Session::try_from).collect()
    }

    pub(crate) async fn count_live_sessions(
        &self,
        now: OffsetDateTime,
        idle_cutoff: OffsetDateTime,
    ) -> StoreResult<i64> {
        let count: Count = sqlx::query_as(
            "SELECT COUNT(*) AS n FROM sessions WHERE ended_at IS NULL AND expires_at > $1 AND last_activity > $2",
        )
        .bind(to_ms(now))
        .bind(to_ms(idle_cutoff))
        .fetch_one(self.pool)
        .await
        .map_err(map_sqlx)?;
        Ok(count.n)
    }

    pub(crate) async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.stamp(
            "UPDATE sessions SET last_activity = $1 WHERE id = $2 AND ended_at IS NULL AND last_activity < $1",
            at,
            id,
        )
        .await
        .map(drop)
    }

    pub(crate) async fn end_sessions(&self, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>> {
        let mut ended = Vec::with_capacity(ids.len());
        for id in ids {
            let done =
                sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
                    .bind(to_ms(at))
                    .bind(reason)
                    .bind(id.to_string())
                    .execute(self.pool)
                    .await
                    .map_err(map_sqlx)?;
            if done.rows_affected() == 1 {
                ended.push(*id);
            }
        }
        Ok(ended)
    }
}
