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

        use auth_contract::{role::Role, scope::Scopes};
        use $crate::store::{
            ApiKey, AuditEntry, CleanupReport, Client, ClientChange, NewAudit, PersonalAccessToken, RateLimit,
            RefreshToken, SdkSession, ServiceToken, Session, SessionKind, Store, User, from_ms, map_sqlx, parse_uuid,
            to_ms,
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
                role: role.parse().map_err(|e: $crate::domain::role::UnknownRole| StoreError::Other(e.to_string()))?,
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
            let user_id: Option<String> = row.try_get("user_id").map_err(map_sqlx)?;
            let kind: String = row.try_get("session_kind").map_err(map_sqlx)?;
            let spent_at: Option<i64> = row.try_get("spent_at").map_err(map_sqlx)?;
            Ok(RefreshToken {
                id: parse_uuid(&id)?,
                token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
                session_id: parse_uuid(&session_id)?,
                session_kind: SessionKind::parse(&kind)?,
                user_id: user_id.as_deref().map(parse_uuid).transpose()?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                expires_at: from_ms(row.try_get("expires_at").map_err(map_sqlx)?),
                spent_at: spent_at.map(from_ms),
            })
        }

        fn opt_time(row: &DbRow, column: &str) -> StoreResult<Option<OffsetDateTime>> {
            let ms: Option<i64> = row.try_get(column).map_err(map_sqlx)?;
            Ok(ms.map(from_ms))
        }

        fn uuid_col(row: &DbRow, column: &str) -> StoreResult<Uuid> {
            let text: String = row.try_get(column).map_err(map_sqlx)?;
            parse_uuid(&text)
        }

        fn scopes_col(row: &DbRow) -> StoreResult<Scopes> {
            let text: String = row.try_get("scopes").map_err(map_sqlx)?;
            Ok(Scopes::from_text(&text))
        }

        fn json_list(row: &DbRow, column: &str) -> StoreResult<Vec<String>> {
            let text: String = row.try_get(column).map_err(map_sqlx)?;
            serde_json::from_str(&text).map_err(|e| StoreError::Other(format!("{column}: {e}")))
        }

        const PAT_COLUMNS: &str =
            "id, user_id, name, token_hash, prefix, last_four, scopes, created_at, expires_at, last_used_at, revoked_at";
        const CLIENT_COLUMNS: &str = "id, owner_id, name, ip_allowlist, allowed_origins, rate_limit_requests, rate_limit_per_ms, created_at, updated_at";
        const KEY_COLUMNS: &str =
            "id, client_id, name, key_hash, prefix, last_four, scopes, created_at, last_used_at, expires_at, rotated_to, revoked_at";
        const SDK_COLUMNS: &str = "id, client_id, api_key_id, external_user_id, scopes, ip, created_at, last_activity, expires_at, ended_at, end_reason";

        fn pat_from_row(row: &DbRow) -> StoreResult<PersonalAccessToken> {
            Ok(PersonalAccessToken {
                id: uuid_col(row, "id")?,
                user_id: uuid_col(row, "user_id")?,
                name: row.try_get("name").map_err(map_sqlx)?,
                token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
                prefix: row.try_get("prefix").map_err(map_sqlx)?,
                last_four: row.try_get("last_four").map_err(map_sqlx)?,
                scopes: scopes_col(row)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                expires_at: opt_time(row, "expires_at")?,
                last_used_at: opt_time(row, "last_used_at")?,
                revoked_at: opt_time(row, "revoked_at")?,
            })
        }

        fn client_from_row(row: &DbRow) -> StoreResult<Client> {
            let requests: Option<i64> = row.try_get("rate_limit_requests").map_err(map_sqlx)?;
            let per_ms: Option<i64> = row.try_get("rate_limit_per_ms").map_err(map_sqlx)?;
            let rate_limit = match (requests, per_ms) {
                (Some(r), Some(p)) => Some(RateLimit {
                    requests: u64::try_from(r).unwrap_or(0),
                    per_ms: u64::try_from(p).unwrap_or(0),
                }),
                _ => None,
            };
            Ok(Client {
                id: uuid_col(row, "id")?,
                owner_id: uuid_col(row, "owner_id")?,
                name: row.try_get("name").map_err(map_sqlx)?,
                ip_allowlist: json_list(row, "ip_allowlist")?,
                allowed_origins: json_list(row, "allowed_origins")?,
                rate_limit,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                updated_at: from_ms(row.try_get("updated_at").map_err(map_sqlx)?),
            })
        }

        fn key_from_row(row: &DbRow) -> StoreResult<ApiKey> {
            let rotated_to: Option<String> = row.try_get("rotated_to").map_err(map_sqlx)?;
            Ok(ApiKey {
                id: uuid_col(row, "id")?,
                client_id: uuid_col(row, "client_id")?,
                name: row.try_get("name").map_err(map_sqlx)?,
                key_hash: row.try_get("key_hash").map_err(map_sqlx)?,
                prefix: row.try_get("prefix").map_err(map_sqlx)?,
                last_four: row.try_get("last_four").map_err(map_sqlx)?,
                scopes: scopes_col(row)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                last_used_at: opt_time(row, "last_used_at")?,
                expires_at: opt_time(row, "expires_at")?,
                rotated_to: rotated_to.as_deref().map(parse_uuid).transpose()?,
                revoked_at: opt_time(row, "revoked_at")?,
            })
        }

        fn sdk_from_row(row: &DbRow) -> StoreResult<SdkSession> {
            Ok(SdkSession {
                id: uuid_col(row, "id")?,
                client_id: uuid_col(row, "client_id")?,
                api_key_id: uuid_col(row, "api_key_id")?,
                external_user_id: row.try_get("external_user_id").map_err(map_sqlx)?,
                scopes: scopes_col(row)?,
                ip: row.try_get("ip").map_err(map_sqlx)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                last_activity: from_ms(row.try_get("last_activity").map_err(map_sqlx)?),
                expires_at: from_ms(row.try_get("expires_at").map_err(map_sqlx)?),
                ended_at: opt_time(row, "ended_at")?,
                end_reason: row.try_get("end_reason").map_err(map_sqlx)?,
            })
        }

        fn service_token_row(row: &DbRow) -> StoreResult<ServiceToken> {
            Ok(ServiceToken {
                id: uuid_col(row, "id")?,
                service_name: row.try_get("service_name").map_err(map_sqlx)?,
                token_hash: row.try_get("token_hash").map_err(map_sqlx)?,
                created_at: from_ms(row.try_get("created_at").map_err(map_sqlx)?),
                expires_at: from_ms(row.try_get("expires_at").map_err(map_sqlx)?),
            })
        }

        async fn insert_key<'e, E>(executor: E, key: &ApiKey) -> StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::store::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO api_keys (id, client_id, name, key_hash, prefix, last_four, scopes, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(key.id.to_string())
            .bind(key.client_id.to_string())
            .bind(&key.name)
            .bind(&key.key_hash)
            .bind(&key.prefix)
            .bind(&key.last_four)
            .bind(key.scopes.to_text())
            .bind(to_ms(key.created_at))
            .bind(key.expires_at.map(to_ms))
            .execute(executor)
            .await
            .map(drop)
            .map_err(map_sqlx)
        }

        fn list_json(list: &[String]) -> String {
            serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
        }

        impl $store {
            /// Runs an `UPDATE … SET <time column> = $1 WHERE id = $2 …`; whether a row changed.
            async fn stamp(&self, sql: &'static str, at: OffsetDateTime, id: Uuid) -> StoreResult<bool> {
                let done = sqlx::query(sql).bind(to_ms(at)).bind(id.to_string()).execute(&self.pool).await.map_err(map_sqlx)?;
                Ok(done.rows_affected() > 0)
            }
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
                self.stamp("UPDATE sessions SET last_activity = $1 WHERE id = $2 AND ended_at IS NULL AND last_activity < $1", at, id).await.map(drop)
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
                    "SELECT id, token_hash, session_id, session_kind, user_id, created_at, expires_at, spent_at \
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
                let touch = match new.session_kind {
                    SessionKind::User => "UPDATE sessions SET last_activity = $1 WHERE id = $2 AND last_activity < $1",
                    SessionKind::Sdk => "UPDATE sdk_sessions SET last_activity = $1 WHERE id = $2 AND last_activity < $1",
                };
                sqlx::query(touch)
                    .bind(to_ms(spent_at))
                    .bind(new.session_id.to_string())
                    .execute(&mut *tx)
                    .await
                    .map_err(map_sqlx)?;
                tx.commit().await.map_err(map_sqlx)?;
                Ok(true)
            }

            async fn list_users(&self, after: Option<(i64, Uuid)>, limit: u32) -> StoreResult<Vec<User>> {
                let (after_ms, after_id) = after.map_or((i64::MAX, String::new()), |(ms, id)| (ms, id.to_string()));
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {USER_COLUMNS} FROM users WHERE created_at < $1 OR (created_at = $1 AND id < $2) \
                     ORDER BY created_at DESC, id DESC LIMIT $3"
                ));
                let rows = sqlx::query(sql)
                    .bind(after_ms)
                    .bind(after_id)
                    .bind(i64::from(limit))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                rows.iter().map(user_from_row).collect()
            }

            async fn set_user_disabled(&self, id: Uuid, disabled: bool, at: OffsetDateTime) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
                    .bind(disabled)
                    .bind(to_ms(at))
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_user_role(&self, id: Uuid, role: Role, at: OffsetDateTime) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE users SET role = $1, updated_at = $2 WHERE id = $3")
                    .bind(role.as_str())
                    .bind(to_ms(at))
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_pat(&self, pat: &PersonalAccessToken) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO personal_access_tokens (id, user_id, name, token_hash, prefix, last_four, scopes, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(pat.id.to_string())
                .bind(pat.user_id.to_string())
                .bind(&pat.name)
                .bind(&pat.token_hash)
                .bind(&pat.prefix)
                .bind(&pat.last_four)
                .bind(pat.scopes.to_text())
                .bind(to_ms(pat.created_at))
                .bind(pat.expires_at.map(to_ms))
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(map_sqlx)
            }

            async fn pat_by_hash(&self, hash: &str) -> StoreResult<Option<PersonalAccessToken>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE token_hash = $1"));
                let row = sqlx::query(sql).bind(hash).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(pat_from_row).transpose()
            }

            async fn pats_for_user(&self, user_id: Uuid) -> StoreResult<Vec<PersonalAccessToken>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {PAT_COLUMNS} FROM personal_access_tokens WHERE user_id = $1 AND revoked_at IS NULL \
                     ORDER BY created_at DESC, id DESC"
                ));
                let rows = sqlx::query(sql).bind(user_id.to_string()).fetch_all(&self.pool).await.map_err(map_sqlx)?;
                rows.iter().map(pat_from_row).collect()
            }

            async fn revoke_pat(&self, user_id: Uuid, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE personal_access_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL",
                )
                .bind(to_ms(at))
                .bind(id.to_string())
                .bind(user_id.to_string())
                .execute(&self.pool)
                .await
                .map_err(map_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn touch_pat(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
                self.stamp("UPDATE personal_access_tokens SET last_used_at = $1 WHERE id = $2", at, id).await.map(drop)
            }

            async fn insert_client(&self, client: &Client, key: &ApiKey) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                sqlx::query(
                    "INSERT INTO clients (id, owner_id, name, ip_allowlist, allowed_origins, rate_limit_requests, rate_limit_per_ms, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
                )
                .bind(client.id.to_string())
                .bind(client.owner_id.to_string())
                .bind(&client.name)
                .bind(list_json(&client.ip_allowlist))
                .bind(list_json(&client.allowed_origins))
                .bind(client.rate_limit.map(|r| i64::try_from(r.requests).unwrap_or(i64::MAX)))
                .bind(client.rate_limit.map(|r| i64::try_from(r.per_ms).unwrap_or(i64::MAX)))
                .bind(to_ms(client.created_at))
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
                insert_key(&mut *tx, key).await?;
                tx.commit().await.map_err(map_sqlx)
            }

            async fn client(&self, id: Uuid) -> StoreResult<Option<Client>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"));
                let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(client_from_row).transpose()
            }

            async fn clients_for_owner(&self, owner_id: Uuid) -> StoreResult<Vec<Client>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE owner_id = $1 ORDER BY created_at ASC, id ASC"
                ));
                let rows = sqlx::query(sql).bind(owner_id.to_string()).fetch_all(&self.pool).await.map_err(map_sqlx)?;
                rows.iter().map(client_from_row).collect()
            }

            async fn update_client(&self, id: Uuid, change: &ClientChange, at: OffsetDateTime) -> StoreResult<()> {
                let query = match change {
                    ClientChange::IpAllowlist(list) => {
                        sqlx::query("UPDATE clients SET ip_allowlist = $1, updated_at = $2 WHERE id = $3").bind(list_json(list))
                    }
                    ClientChange::AllowedOrigins(list) => {
                        sqlx::query("UPDATE clients SET allowed_origins = $1, updated_at = $2 WHERE id = $3").bind(list_json(list))
                    }
                    ClientChange::RateLimit(limit) => sqlx::query(
                        "UPDATE clients SET rate_limit_requests = $1, rate_limit_per_ms = $4, updated_at = $2 WHERE id = $3",
                    )
                    .bind(limit.map(|r| i64::try_from(r.requests).unwrap_or(i64::MAX))),
                };
                let query = query.bind(to_ms(at)).bind(id.to_string());
                let query = match change {
                    ClientChange::RateLimit(limit) => query.bind(limit.map(|r| i64::try_from(r.per_ms).unwrap_or(i64::MAX))),
                    _ => query,
                };
                query.execute(&self.pool).await.map(drop).map_err(map_sqlx)
            }

            async fn all_allowed_origins(&self) -> StoreResult<Vec<String>> {
                let rows: Vec<String> = sqlx::query_scalar("SELECT allowed_origins FROM clients WHERE allowed_origins <> '[]'")
                    .fetch_all(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                let mut origins: Vec<String> = rows
                    .iter()
                    .filter_map(|text| serde_json::from_str::<Vec<String>>(text).ok())
                    .flatten()
                    .collect();
                origins.sort();
                origins.dedup();
                Ok(origins)
            }

            async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
                insert_key(&self.pool, key).await
            }

            async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"));
                let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(key_from_row).transpose()
            }

            async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"));
                let row = sqlx::query(sql).bind(hash).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(key_from_row).transpose()
            }

            async fn api_keys_for_client(&self, client_id: Uuid) -> StoreResult<Vec<ApiKey>> {
                let sql = sqlx::AssertSqlSafe(format!(
                    "SELECT {KEY_COLUMNS} FROM api_keys WHERE client_id = $1 ORDER BY created_at ASC, id ASC"
                ));
                let rows = sqlx::query(sql).bind(client_id.to_string()).fetch_all(&self.pool).await.map_err(map_sqlx)?;
                rows.iter().map(key_from_row).collect()
            }

            async fn rotate_api_key(&self, old: Uuid, grace_until: OffsetDateTime, new: &ApiKey) -> StoreResult<bool> {
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                let done = sqlx::query(
                    "UPDATE api_keys SET expires_at = $1, rotated_to = $2 \
                     WHERE id = $3 AND rotated_to IS NULL AND revoked_at IS NULL",
                )
                .bind(to_ms(grace_until))
                .bind(new.id.to_string())
                .bind(old.to_string())
                .execute(&mut *tx)
                .await
                .map_err(map_sqlx)?;
                if done.rows_affected() != 1 {
                    tx.rollback().await.map_err(map_sqlx)?;
                    return Ok(false);
                }
                insert_key(&mut *tx, new).await?;
                tx.commit().await.map_err(map_sqlx)?;
                Ok(true)
            }

            async fn revoke_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
                self.stamp("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", at, id).await
            }

            async fn touch_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
                self.stamp("UPDATE api_keys SET last_used_at = $1 WHERE id = $2", at, id).await.map(drop)
            }

            async fn insert_sdk_session(&self, session: &SdkSession, refresh: &RefreshToken) -> StoreResult<()> {
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                sqlx::query(
                    "INSERT INTO sdk_sessions (id, client_id, api_key_id, external_user_id, scopes, ip, created_at, last_activity, expires_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(session.id.to_string())
                .bind(session.client_id.to_string())
                .bind(session.api_key_id.to_string())
                .bind(&session.external_user_id)
                .bind(session.scopes.to_text())
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

            async fn sdk_session(&self, id: Uuid) -> StoreResult<Option<SdkSession>> {
                let sql = sqlx::AssertSqlSafe(format!("SELECT {SDK_COLUMNS} FROM sdk_sessions WHERE id = $1"));
                let row = sqlx::query(sql).bind(id.to_string()).fetch_optional(&self.pool).await.map_err(map_sqlx)?;
                row.as_ref().map(sdk_from_row).transpose()
            }

            async fn touch_sdk_session(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
                self.stamp("UPDATE sdk_sessions SET last_activity = $1 WHERE id = $2 AND ended_at IS NULL AND last_activity < $1", at, id).await.map(drop)
            }

            async fn end_sdk_session(&self, id: Uuid, at: OffsetDateTime, reason: &str) -> StoreResult<bool> {
                let done = sqlx::query("UPDATE sdk_sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
                    .bind(to_ms(at))
                    .bind(reason)
                    .bind(id.to_string())
                    .execute(&self.pool)
                    .await
                    .map_err(map_sqlx)?;
                Ok(done.rows_affected() == 1)
            }

            async fn end_sdk_sessions_for_keys(&self, key_ids: &[Uuid], at: OffsetDateTime, reason: &str) -> StoreResult<Vec<Uuid>> {
                let mut ended = Vec::new();
                for key in key_ids {
                    let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM sdk_sessions WHERE api_key_id = $1 AND ended_at IS NULL")
                        .bind(key.to_string())
                        .fetch_all(&self.pool)
                        .await
                        .map_err(map_sqlx)?;
                    sqlx::query("UPDATE sdk_sessions SET ended_at = $1, end_reason = $2 WHERE api_key_id = $3 AND ended_at IS NULL")
                        .bind(to_ms(at))
                        .bind(reason)
                        .bind(key.to_string())
                        .execute(&self.pool)
                        .await
                        .map_err(map_sqlx)?;
                    for id in ids {
                        ended.push(parse_uuid(&id)?);
                    }
                }
                Ok(ended)
            }

            async fn insert_service_token(&self, token: &ServiceToken) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO service_tokens (id, service_name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(token.id.to_string())
                .bind(&token.service_name)
                .bind(&token.token_hash)
                .bind(to_ms(token.created_at))
                .bind(to_ms(token.expires_at))
                .execute(&self.pool)
                .await
                .map(drop)
                .map_err(map_sqlx)
            }

            async fn service_token_by_hash(&self, hash: &str) -> StoreResult<Option<ServiceToken>> {
                let row = sqlx::query(
                    "SELECT id, service_name, token_hash, created_at, expires_at FROM service_tokens WHERE token_hash = $1",
                )
                .bind(hash)
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
                row.as_ref().map(service_token_row).transpose()
            }

            async fn service_token(&self, id: Uuid) -> StoreResult<Option<ServiceToken>> {
                let row = sqlx::query(
                    "SELECT id, service_name, token_hash, created_at, expires_at FROM service_tokens WHERE id = $1",
                )
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await
                .map_err(map_sqlx)?;
                row.as_ref().map(service_token_row).transpose()
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
                const GONE_SESSIONS: &str = "SELECT id FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)";
                const GONE_SDK: &str = "SELECT id FROM sdk_sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)";
                // Refresh tokens first: they go with their sessions.
                let tables = [
                    format!("FROM refresh_tokens WHERE expires_at <= $1 OR session_id IN ({GONE_SESSIONS}) OR session_id IN ({GONE_SDK})"),
                    "FROM sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)".to_owned(),
                    "FROM sdk_sessions WHERE expires_at <= $1 OR (ended_at IS NOT NULL AND ended_at <= $2)".to_owned(),
                    "FROM revoked_jtis WHERE expires_at <= $1".to_owned(),
                    "FROM personal_access_tokens WHERE expires_at <= $1 OR revoked_at <= $2".to_owned(),
                    "FROM api_keys WHERE expires_at <= $1 OR revoked_at <= $2".to_owned(),
                    "FROM service_tokens WHERE expires_at <= $1".to_owned(),
                ];
                let now = to_ms(now);
                let ended_before = to_ms(ended_before);
                let mut tx = self.pool.begin().await.map_err(map_sqlx)?;
                let mut counts = [0u64; 7];
                for (slot, from) in counts.iter_mut().zip(tables.iter()) {
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
                let [refresh_tokens, sessions, sdk_sessions, revoked_jtis, personal_access_tokens, api_keys, service_tokens] =
                    counts;
                Ok(CleanupReport {
                    sessions,
                    sdk_sessions,
                    refresh_tokens,
                    revoked_jtis,
                    personal_access_tokens,
                    api_keys,
                    service_tokens,
                })
            }
        }

        async fn insert_refresh<'e, E>(executor: E, refresh: &RefreshToken) -> StoreResult<()>
        where
            E: sqlx::Executor<'e, Database = <$store as $crate::store::sql::Backend>::Db>,
        {
            sqlx::query(
                "INSERT INTO refresh_tokens (id, token_hash, session_id, session_kind, user_id, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(refresh.id.to_string())
            .bind(&refresh.token_hash)
            .bind(refresh.session_id.to_string())
            .bind(refresh.session_kind.as_str())
            .bind(refresh.user_id.map(|u| u.to_string()))
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
