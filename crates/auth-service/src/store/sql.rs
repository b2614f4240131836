//! The SQL shared by both backends. PostgreSQL and SQLite accept the same statements here
//! (`$n` placeholders, `RETURNING`-free DML, partial indexes), so the [`Store`] implementation
//! is written once and instantiated for each pool type; only connection set-up and
//! migrations differ.
//!
//! [`Store`]: super::Store

macro_rules! impl_store {
    ($store:ty) => {
        use async_trait::async_trait;
        use sqlx::Row as _;
        use time::OffsetDateTime;
        use uuid::Uuid;

        use $crate::store::{
            AuditEntry, CleanupReport, NewAudit, RefreshToken, Session, Store, User, from_ms, map_sqlx,
            parse_uuid, to_ms,
        };

        type DbRow = <<$store as $crate::store::sql::Backend>::Db as sqlx::Database>::Row;

        const USER_COLUMNS: &str = "id, name, email, password_hash, role, disabled, created_at";
        const SESSION_COLUMNS: &str =
            "id, user_id, device, user_agent, ip, created_at, last_activity, expires_at, ended_at, end_reason";

        fn user_from_row(row: &DbRow) -> StoreResult<User> {
            let id: String = row.try_get("id").map_err(map_sqlx)?;
            let role: String = row.try_get("role").map_err(map_sqlx)?;
            Ok(User {
                id: parse_uuid(&id)?,
                name: row.try_get("name").map_err(map_sqlx)?,
                email: row.try_get("email").map_err(map_sqlx)?,
                password_hash: row.try_get("password_hash").map_err(map_sqlx)?,
                role: role.parse().map_err(StoreError::Other)?,
                disabled: row.try_get("disabled").map_err(map_sqlx)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
            })
        }

        fn session_from_row(row: &DbRow) -> StoreResult<Session> {
            let id: String = row.try_get("id").map_err(map_sqlx)?;
            let user_id: String = row.try_get("user_id").map_err(map_sqlx)?;
            let ended_at: Option<i64> = row.try_get("ended_at").map_err(map_sqlx)?;
            Ok(Session {
                id: parse_uuid(&id)?,
                user_id: parse_uuid(&user_id)?,
                device: row.try_get("device").map_err(map_sqlx)?,
                user_agent: row.try_get("user_agent").map_err(map_sqlx)?,
                ip: row.try_get("ip").map_err(map_sqlx)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                last_activity: from_ms(row.try_get("last_activity").map_err(map_sqlx)?),
                expires_at: from_ms(row.try_get("expires_at").map_err(map_sqlx)?),
                ended_at: ended_at.map(from_ms),
                end_reason: row.try_get("end_reason").map_err(map_sqlx)?,
            })
        }

        fn refresh_from_row(row: &DbRow) -> StoreResult<RefreshToken> {
            let id: String = row.try_get("id").map_err(map_sqlx)?;
            let session_id: String = row.try_get("session_id").map_err(map_sqlx)?;
            let user_id: String = row.try_get("user_id").map_err(map_sqlx)?;
            let spent_at: Option<i64> = row.try_get("spent_at").map_err(map_sqlx)?;
            Ok(RefreshToken {
                id: parse_uuid(&id)?,
                token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
                session_id: parse_uuid(&session_id)?,
                user_id: parse_uuid(&user_id)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                expires_at: from_ms(row.try_get("expires_at").map_err(map_sqlx)?),
                spent_at: spent_at.map(from_ms),
            })
        }

        #[async_trait]
        impl Store for $store {
            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(&self.pool).await.map(drop).map_err(map_sqlx)
            }

            async fn insert_user(&self, user: &User) -> StoreResult<()> {
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
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(map_sqlx)
            }

            async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"));
                let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(user_from_row).transpose()
            }

            async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {USER_COLUMNS} FROM users WHERE email = $1"));
                let row = sqlx::query(sql).bind(email).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(user_from_row).transpose()
            }

            async fn set_password_hash(&self, user_id: Uuid, hash: &str, at: OffsetDateTime) -> StoreResult<()> {
                sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                    .bind(hash)
                    .bind(to_ms(at))
                    .bind(user_id.to_string())
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(map_sqlx)
            }

            async fn insert_session(&self, session: &Session, refresh: &RefreshToken) -> StoreResult<()> {
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
                insert_refresh(&mut *tx, refresh).await?;
                tx.commit().await.map_err(map_sqlx)
            }

            async fn session(&self, id: Uuid) -> StoreResult<Option<Session>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"));
                let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(session_from_row).transpose()
            }

            async fn live_sessions(&self, user_id: Uuid, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> StoreResult<Vec<Session>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {SESSION_COLUMNS} FROM sessions \
                     WHERE user_id = $1 AND ended_at IS NULL AND expires_at > $2 AND last_activity > $3 \
                     ORDER BY created_at ASC, id ASC"
                ));
                let rows = sqlx::query(sql)
                    .bind(user_id.to_string())
                    .bind(to_ms(now))
                    .bind(to_ms(idle_cutoff))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                rows.iter().map(session_from_row).collect()
            }

            async fn count_live_sessions(&self, now: OffsetDateTime, idle_cutoff: OffsetDateTime) -> StoreResult<i64> {
                sqlx::query("SELECT COUNT(*) AS n FROM sessions WHERE ended_at IS NULL AND expires_at > $1 AND last_activity > $2")
                    .bind(to_ms(now))
                    .bind(to_ms(idle_cutoff))
                    .fetch_one(&self.pool)
                    .await
                    .and_then(|row| row.try_get::<i64, _>("n"))
                    .map_err(map_sqlx)
            }

            async fn touch_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
                sqlx::query("UPDATE sessions SET last_activity = $1 WHERE id = $2 AND ended_at IS NULL AND last_activity < $1")
                    .bind(to_ms(at))
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(map_sqlx)
            }

            async fn end_sessions(&self, ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>> {
                let mut ended = Vec::with_capacity(ids.len());
                for id in ids {
                    let done = sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
                        .bind(to_ms(at))
                        .bind(reason)
                        .bind(id.to_string())
                        .execute(&self.pool)
                        .await
                        .map_err(map_sqlx)?;
                    if done.rows_affected() == 1 {
                        ended.push(*id);
                    }
                }
                Ok(ended)
            }

            async fn refresh_token_by_hash(&self, hash: &str) -> StoreResult<Option<RefreshToken>> {
                let row = sqlx::query(
                    "SELECT id, token_hash, session_id, user_id, created_at, expires_at, spent_at \
                     FROM refresh_tokens WHERE token_hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
                row.as_ref().map(refresh_from_row).transpose()
            }

            async fn rotate_refresh_token(&self, old: Uuid, spent_at: OffsetDateTime, new: &RefreshToken) -> StoreResult<bool> {
                // The UPDATE comes first so the transaction takes the write lock before reading:
                // of concurrent rotations exactly one sees the row unspent.
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                let spent = sqlx::query("UPDATE refresh_tokens SET spent_at = $1 WHERE id = $2 AND spent_at IS NULL")
                    .bind(to_ms(spent_at))
                    .bind(old.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                if spent.rows_affected() != 1 {
                    tx.rollback().await.map_err(map_sqlx)?;
                    return Ok(false);
                }
                insert_refresh(&mut *tx, new).await?;
                sqlx::query("UPDATE sessions SET last_activity = $1 WHERE id = $2 AND last_activity < $1")
                    .bind(to_ms(spent_at))
                    .bind(new.session_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                tx.commit().await.map_err(map_sqlx)?;
                Ok(true)
            }

            async fn revoke_jti(&self, jti: &str, expires_at: OffsetDateTime) -> StoreResult<()> {
                sqlx::query("INSERT INTO revoked_jtis (jti, expires_at) VALUES ($1, $2) ON CONFLICT (jti) DO NOTHING")
                    .bind(jti)
                    .bind(to_ms(expires_at))
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(map_sqlx)
            }

            async fn is_jti_revoked(&self, jti: &str) -> StoreResult<bool> {
                let row = sqlx::query("SELECT 1 AS one FROM revoked_jtis WHERE jti = $1")
                    .bind(jti)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                Ok(row.is_some())
            }

            async fn insert_audit(&self, entry: &NewAudit) -> StoreResult<()> {
                sqlx::query("INSERT INTO audit_log (user_id, action, outcome, ip, detail, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
                    .bind(entry.user_id.map(|u| u.to_string()))
                    .bind(entry.action)
                    .bind(entry.outcome)
                    .bind(&entry.ip)
                    .bind(entry.detail.to_string())
                    .bind(to_ms(entry.at))
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(map_sqlx)
            }

            async fn audit_for_user(&self, user_id: Uuid, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>> {
                let rows = sqlx::query(
                    "SELECT id, user_id, action, outcome, ip, detail, created_at FROM audit_log \
                     WHERE user_id = $1 AND id < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(user_id.to_string())
                .bind(before.unwrap_or(i64::MAX))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await
                .map_err(map_sqlx)?;
                rows.iter()
                    .map(|row| {
                        let user: Option<String> = row.try_get("user_id").map_err(map_sqlx)?;
                        let detail: String = row.try_get("detail").map_err(map_sqlx)?;
                        Ok(AuditEntry {
                            id: row.try_get("id").map_err(map_sqlx)?,
                            user_id: user.as_deref().map(parse_uuid).transpose()?,
                            action: row.try_get("action").map_err(map_sqlx)?,
                            outcome: row.try_get("outcome").map_err(map_sqlx)?,
                            ip: row.try_get("ip").map_err(map_sqlx)?,
                            detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                            created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                        })
                    })
                    .collect()
            }

            async fn cleanup(&self, now: OffsetDateTime, ended_before: OffsetDateTime, dry_run: bool) -> StoreResult<CleanupReport> {
                const SESSIONS: &str = "FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)";
                // Refresh tokens of removed sessions go with them (ON DELETE CASCADE); this
                // counts and removes those that expired on their own.
                const REFRESH: &str = "FROM refresh_tokens WHERE expires_at <= $1 OR session_id IN (SELECT id FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2))";
                const JTIS: &str = "FROM revoked_jtis WHERE expires_at <= $1";
                let now = to_ms(now);
                let ended_before = to_ms(ended_before);
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                let mut counts = [0u64; 3];
                for (slot, from) in counts.iter_mut().zip([REFRESH, SESSIONS, JTIS]) {
                    let verb = if dry_run { "SELECT COUNT(*) AS n" } else { "DELETE" };
                    let sql = sqlx::AssertSqlSafe(format!("{verb} {from}"));
                    let query = sqlx::query(sql).bind(now).bind(ended_before);
                    *slot = if dry_run {
                        let row = query.fetch_one(&mut *tx).await.map_err(map_sqlx)?;
                        u64::try_from(row.try_get::<i64, _>("n").map_err(map_sqlx)?).unwrap_or(0)
                    } else {
                        query.execute(&mut *tx).await.map_err(map_sqlx)?.rows_affected()
                    };
                }
                tx.commit().await.map_err(map_sqlx)?;
                Ok(CleanupReport {
                    refresh_tokens: counts[0],
                    sessions: counts[1],
                    revoked_jtis: counts[2],
                })
            }
        }

        async fn insert_refresh<'e, E>(executor: E, refresh: &RefreshToken) -> StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::store::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, token_hash, session_id, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(refresh.id.to_string())
            .bind(&refresh.token_hash)
            .bind(refresh.session_id.to_string())
            .bind(refresh.user_id.to_string())
            .bind(to_ms(refresh.created_at))
            .bind(to_ms(refresh.expires_at))
            .execute(executor)
            .await
            .map(drop)
            .map_err(map_sqlx)
        }
    };
}

pub(crate) use impl_store;

/// Names the sqlx database type behind each store.
pub(crate) trait Backend {
    type Db: sqlx::Database;
}

impl Backend for super::PostgresStore {
    type Db = sqlx::Postgres;
}

impl Backend for super::SqliteStore {
    type Db = sqlx::Sqlite;
}
