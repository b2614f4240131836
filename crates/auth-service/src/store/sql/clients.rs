//! Clients (tenants) and their API keys: a client is stored with its first key; its IP
//! allowlist, origins and rate limit change one at a time; keys are rotated (the old one kept
//! for a grace period), revoked and stamped when used.

use auth_contract::scope::Scopes;
use sqlx::{ColumnIndex, Decode, Encode, Executor, Type};
use time::OffsetDateTime;
use uuid::Uuid;

use super::{Affected as _, Dialect, Sql};
use crate::store::{
    ApiKey, Client, ClientChange, RateLimit, StoreError, StoreResult, from_ms, map_sqlx, parse_uuid, to_ms,
};

const CLIENT_COLUMNS: &str =
    "id, owner_id, name, ip_allowlist, allowed_origins, rate_limit_requests, rate_limit_per_ms, created_at, updated_at";
const KEY_COLUMNS: &str = "id, client_id, name, key_hash, prefix, last_four, scopes, created_at, last_used_at, expires_at, rotated_to, revoked_at";

/// A `clients` row as stored: the lists are JSON text, the rate limit two nullable columns.
#[derive(sqlx::FromRow)]
struct ClientRow {
    id: String,
    owner_id: String,
    name: String,
    ip_allowlist: String,
    allowed_origins: String,
    rate_limit_requests: Option<i64>,
    rate_limit_per_ms: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

impl TryFrom<ClientRow> for Client {
    type Error = StoreError;

    fn try_from(row: ClientRow) -> StoreResult<Self> {
        let rate_limit = match (row.rate_limit_requests, row.rate_limit_per_ms) {
            (Some(r), Some(p)) => {
                Some(RateLimit { requests: u64::try_from(r).unwrap_or(0), per_ms: u64::try_from(p).unwrap_or(0) })
            }
            _ => None,
        };
        Ok(Self {
            id: parse_uuid(&row.id)?,
            owner_id: parse_uuid(&row.owner_id)?,
            name: row.name,
            ip_allowlist: json_list("ip_allowlist", &row.ip_allowlist)?,
            allowed_origins: json_list("allowed_origins", &row.allowed_origins)?,
            rate_limit,
            created_at: from_ms(row.created_at),
            updated_at: from_ms(row.updated_at),
        })
    }
}

/// An `api_keys` row as stored.
#[derive(sqlx::FromRow)]
struct ApiKeyRow {
    id: String,
    client_id: String,
    name: String,
    key_hash: String,
    prefix: String,
    last_four: String,
    scopes: String,
    created_at: i64,
    last_used_at: Option<i64>,
    expires_at: Option<i64>,
    rotated_to: Option<String>,
    revoked_at: Option<i64>,
}

impl TryFrom<ApiKeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: ApiKeyRow) -> StoreResult<Self> {
        Ok(Self {
            id: parse_uuid(&row.id)?,
            client_id: parse_uuid(&row.client_id)?,
            name: row.name,
            key_hash: row.key_hash,
            prefix: row.prefix,
            last_four: row.last_four,
            scopes: Scopes::from_text(&row.scopes),
            created_at: from_ms(row.created_at),
            last_used_at: row.last_used_at.map(from_ms),
            expires_at: row.expires_at.map(from_ms),
            rotated_to: row.rotated_to.as_deref().map(parse_uuid).transpose()?,
            revoked_at: row.revoked_at.map(from_ms),
        })
    }
}

/// A client's `allowed_origins` column alone.
#[derive(sqlx::FromRow)]
struct OriginsRow {
    allowed_origins: String,
}

fn json_list(column: &str, text: &str) -> StoreResult<Vec<String>> {
    serde_json::from_str(text).map_err(|e| StoreError::Other(format!("{column}: {e}")))
}

fn list_json(list: &[String]) -> String {
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
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
    /// Stores an API key; also the second half of creating a client and of rotating a key.
    async fn insert_key<'e, E>(executor: E, key: &ApiKey) -> StoreResult<()>
    where
        E: Executor<'e, Database = DB>,
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

    pub(crate) async fn insert_client(&self, client: &Client, key: &ApiKey) -> StoreResult<()> {
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
        Self::insert_key(&mut *tx, key).await?;
        tx.commit().await.map_err(map_sqlx)
    }

    pub(crate) async fn client(&self, id: Uuid) -> StoreResult<Option<Client>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"));
        let row: Option<ClientRow> =
            sqlx::query_as(sql).bind(id.to_string()).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(Client::try_from).transpose()
    }

    pub(crate) async fn clients_for_owner(&self, owner_id: Uuid) -> StoreResult<Vec<Client>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {CLIENT_COLUMNS} FROM clients WHERE owner_id = $1 ORDER BY created_at ASC, id ASC"
        ));
        let rows: Vec<ClientRow> =
            sqlx::query_as(sql).bind(owner_id.to_string()).fetch_all(self.pool).await.map_err(map_sqlx)?;
        rows.into_iter().map(Client::try_from).collect()
    }

    pub(crate) async fn update_client(&self, id: Uuid, change: &ClientChange, at: OffsetDateTime) -> StoreResult<()> {
        let query = match change {
            ClientChange::IpAllowlist(list) => {
                sqlx::query("UPDATE clients SET ip_allowlist = $1, updated_at = $2 WHERE id = $3").bind(list_json(list))
            }
            ClientChange::AllowedOrigins(list) => {
                sqlx::query("UPDATE clients SET allowed_origins = $1, updated_at = $2 WHERE id = $3")
                    .bind(list_json(list))
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
        query.execute(self.pool).await.map(drop).map_err(map_sqlx)
    }

    pub(crate) async fn all_allowed_origins(&self) -> StoreResult<Vec<String>> {
        let rows: Vec<OriginsRow> = sqlx::query_as("SELECT allowed_origins FROM clients WHERE allowed_origins <> '[]'")
            .fetch_all(self.pool)
            .await
            .map_err(map_sqlx)?;
        let mut origins: Vec<String> = rows
            .iter()
            .filter_map(|row| serde_json::from_str::<Vec<String>>(&row.allowed_origins).ok())
            .flatten()
            .collect();
        origins.sort();
        origins.dedup();
        Ok(origins)
    }

    pub(crate) async fn insert_api_key(&self, key: &ApiKey) -> StoreResult<()> {
        Self::insert_key(self.pool, key).await
    }

    pub(crate) async fn api_key(&self, id: Uuid) -> StoreResult<Option<ApiKey>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = $1"));
        let row: Option<ApiKeyRow> =
            sqlx::query_as(sql).bind(id.to_string()).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(ApiKey::try_from).transpose()
    }

    pub(crate) async fn api_key_by_hash(&self, hash: &str) -> StoreResult<Option<ApiKey>> {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE key_hash = $1"));
        let row: Option<ApiKeyRow> =
            sqlx::query_as(sql).bind(hash).fetch_optional(self.pool).await.map_err(map_sqlx)?;
        row.map(ApiKey::try_from).transpose()
    }

    pub(crate) async fn api_keys_for_client(&self, client_id: Uuid) -> StoreResult<Vec<ApiKey>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE client_id = $1 ORDER BY created_at ASC, id ASC"
        ));
        let rows: Vec<ApiKeyRow> =
            sqlx::query_as(sql).bind(client_id.to_string()).fetch_all(self.pool).await.map_err(map_sqlx)?;
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    pub(crate) async fn rotate_api_key(
        &self,
        old: Uuid,
        grace_until: OffsetDateTime,
        new: &ApiKey,
    ) -> StoreResult<bool> {
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
        Self::insert_key(&mut *tx, new).await?;
        tx.commit().await.map_err(map_sqlx)?;
        Ok(true)
    }

    pub(crate) async fn revoke_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<bool> {
        self.stamp("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL", at, id).await
    }

    pub(crate) async fn touch_api_key(&self, id: Uuid, at: OffsetDateTime) -> StoreResult<()> {
        self.stamp("UPDATE api_keys SET last_used_at = $1 WHERE id = $2", at, id).await.map(drop)
    }
}
