//! Clients (tenants) and their API keys, IP allowlists, origins and rate limit. Only a
//! client's owner sees or changes it; for anyone else it does not exist (404).

use std::{net::IpAddr, time::Duration};

use serde_json::json;
use time::OffsetDateTime;
use uuid::Uuid;

use super::{AuthService, ClientMeta, Principal, secs};
use crate::{
    domain::{
        allowlist,
        credential::{Credential, Kind},
        name::Name,
        scope::{self, Scopes},
    },
    error::Error,
    events,
    store::{ApiKey, Client, ClientChange, RateLimit},
};

/// Default and longest grace period of a rotated key.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(86_400);
pub const MAX_GRACE: Duration = Duration::from_secs(30 * 86_400);
/// API keys written `last_used_at` at most this often.
const LAST_USED_EVERY: time::Duration = time::Duration::minutes(1);
const MAX_RATE_REQUESTS: u64 = 1_000_000;

/// What an API key grants, decided by [`AuthService::check_api_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientContext {
    pub client_id: Uuid,
    pub key_id: Uuid,
    pub owner_id: Uuid,
    pub scopes: Scopes,
    pub rate_limit: Option<RateLimit>,
    /// The end of the key's rotation grace period, if it was rotated.
    pub expires_at: Option<OffsetDateTime>,
}

/// A key just created; the secret is shown only here.
#[derive(Debug)]
pub struct NewApiKey {
    pub key: ApiKey,
    pub secret: String,
}

/// The display form of a secret: its prefix and first four random characters, and its last
/// four.
pub(super) fn display_parts(secret: &str) -> (String, String) {
    let prefix: String = secret.chars().take(8).collect();
    let last_four: String = secret.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    (prefix, last_four)
}

fn new_key(client_id: Uuid, name: String, scopes: Scopes, now: OffsetDateTime) -> NewApiKey {
    let credential = Credential::generate(Kind::ApiKey);
    let (prefix, last_four) = display_parts(credential.expose());
    NewApiKey {
        key: ApiKey {
            id: Uuid::new_v4(),
            client_id,
            name,
            key_hash: credential.hash(),
            prefix,
            last_four,
            scopes,
            created_at: now,
            last_used_at: None,
            expires_at: None,
            rotated_to: None,
            revoked_at: None,
        },
        secret: credential.expose().to_owned(),
    }
}

fn key_name(raw: Option<&str>, default: &str) -> Result<String, Error> {
    match raw {
        None => Ok(default.to_owned()),
        Some(raw) => Name::parse("name", raw).map(|n| n.as_str().to_owned()),
    }
}

impl AuthService {
    /// The caller's client, or 404 for anyone else's.
    pub async fn owned_client(&self, principal: &Principal, id: Uuid) -> Result<Client, Error> {
        self.store().client(id).await?.filter(|c| c.owner_id == principal.user.id).ok_or(Error::NotFound)
    }

    pub async fn register_client(
        &self,
        principal: &Principal,
        name: &str,
        ip_allowlist: Option<&[String]>,
        allowed_origins: Option<&[String]>,
        meta: &ClientMeta,
    ) -> Result<(Client, NewApiKey), Error> {
        let name = Name::parse("name", name)?;
        let ip_allowlist = allowlist::parse_ip_allowlist("ip_allowlist", ip_allowlist.unwrap_or_default())?;
        let allowed_origins = allowlist::parse_origins("allowed_origins", allowed_origins.unwrap_or_default())?;
        let now = self.now();
        let client = Client {
            id: Uuid::new_v4(),
            owner_id: principal.user.id,
            name: name.as_str().to_owned(),
            ip_allowlist,
            allowed_origins,
            rate_limit: None,
            created_at: now,
            updated_at: now,
        };
        let key = new_key(client.id, "default".to_owned(), Scopes::all(), now);
        self.store().insert_client(&client, &key.key).await?;
        let event = json!({"client_id": client.id, "user_id": principal.user.id, "reason": "registered"});
        self.announce_key(principal, meta, "client_registered", &key, event).await;
        Ok((client, key))
    }

    pub async fn clients(&self, principal: &Principal) -> Result<Vec<Client>, Error> {
        Ok(self.store().clients_for_owner(principal.user.id).await?)
    }

    pub async fn create_api_key(
        &self,
        principal: &Principal,
        client_id: Uuid,
        name: Option<&str>,
        scopes: Option<&[String]>,
        meta: &ClientMeta,
    ) -> Result<NewApiKey, Error> {
        let client = self.owned_client(principal, client_id).await?;
        let name = key_name(name, "api key")?;
        let scopes = scope::parse_list("scopes", scopes, &Scopes::all())?;
        let key = new_key(client.id, name, scopes, self.now());
        self.store().insert_api_key(&key.key).await?;
        let event = json!({"client_id": client.id, "user_id": principal.user.id, "field": "api_keys", "credential_id": key.key.id, "reason": "api_key_created"});
        self.announce_key(principal, meta, "api_key_created", &key, event).await;
        Ok(key)
    }

    /// What follows every new key, at registration or later: the metric, the audit entry and
    /// `auth:client.updated` (which refreshes gateways' CORS origins and caches).
    async fn announce_key(
        &self,
        principal: &Principal,
        meta: &ClientMeta,
        action: &'static str,
        key: &NewApiKey,
        event: serde_json::Value,
    ) {
        self.inner.metrics.token_issued("api_key");
        let detail = json!({"client_id": key.key.client_id, "api_key_id": key.key.id});
        self.audit(Some(principal.user.id), action, "success", Some(meta.ip), detail).await;
        self.events().emit(events::CLIENT_UPDATED, event).await;
    }

    pub async fn api_keys(&self, principal: &Principal, client_id: Uuid) -> Result<Vec<ApiKey>, Error> {
        let client = self.owned_client(principal, client_id).await?;
        Ok(self.store().api_keys_for_client(client.id).await?)
    }

    async fn owned_key(&self, principal: &Principal, client_id: Uuid, key_id: Uuid) -> Result<(Client, ApiKey), Error> {
        let client = self.owned_client(principal, client_id).await?;
        let key = self.store().api_key(key_id).await?.filter(|k| k.client_id == client.id).ok_or(Error::NotFound)?;
        Ok((client, key))
    }

    /// Issues a successor; the old key keeps working for the grace period.
    pub async fn rotate_api_key(
        &self,
        principal: &Principal,
        client_id: Uuid,
        key_id: Uuid,
        grace: Option<u64>,
        meta: &ClientMeta,
    ) -> Result<(NewApiKey, OffsetDateTime), Error> {
        let grace = match grace {
            None => DEFAULT_GRACE,
            Some(seconds) if Duration::from_secs(seconds) <= MAX_GRACE => Duration::from_secs(seconds),
            Some(_) => {
                return Err(Error::validation(
                    "grace_period_seconds",
                    format!("must be at most {}", MAX_GRACE.as_secs()),
                ));
            }
        };
        let (client, old) = self.owned_key(principal, client_id, key_id).await?;
        let now = self.now();
        if old.revoked_at.is_some() || old.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::NotFound);
        }
        if old.rotated_to.is_some() {
            return Err(Error::validation("key_id", "this key was already rotated; rotate its successor"));
        }
        let grace_until = now + secs(grace);
        let next = new_key(client.id, old.name.clone(), old.scopes.clone(), now);
        if !self.store().rotate_api_key(old.id, grace_until, &next.key).await? {
            return Err(Error::validation("key_id", "this key was already rotated or revoked"));
        }
        self.inner.metrics.token_issued("api_key");
        self.audit(
            Some(principal.user.id),
            "api_key_rotated",
            "success",
            Some(meta.ip),
            json!({"client_id": client.id, "api_key_id": old.id, "new_api_key_id": next.key.id, "grace_seconds": grace.as_secs()}),
        )
        .await;
        self.events()
            .emit(
                events::API_KEY_ROTATED,
                json!({"client_id": client.id, "credential_id": old.id, "new_credential_id": next.key.id, "grace_until": crate::http::dto::rfc3339(grace_until)}),
            )
            .await;
        Ok((next, grace_until))
    }

    /// Revokes a key now; SDK sessions opened with it end too.
    pub async fn revoke_api_key(
        &self,
        principal: &Principal,
        client_id: Uuid,
        key_id: Uuid,
        meta: &ClientMeta,
    ) -> Result<(), Error> {
        let (client, key) = self.owned_key(principal, client_id, key_id).await?;
        let now = self.now();
        if !self.store().revoke_api_key(key.id, now).await? {
            return Err(Error::NotFound);
        }
        let sdk_sessions = self.store().end_sdk_sessions_for_keys(&[key.id], now, "api_key_revoked").await?;
        self.audit(
            Some(principal.user.id),
            "api_key_revoked",
            "success",
            Some(meta.ip),
            json!({"client_id": client.id, "api_key_id": key.id}),
        )
        .await;
        self.events()
            .emit(
                events::API_KEY_REVOKED,
                json!({"client_id": client.id, "credential_id": key.id, "session_ids": sdk_sessions, "reason": "revoked"}),
            )
            .await;
        Ok(())
    }

    /// Replaces one of a client's settings and announces the change.
    pub async fn update_client(
        &self,
        principal: &Principal,
        client_id: Uuid,
        change: ClientChange,
        meta: &ClientMeta,
    ) -> Result<Client, Error> {
        let client = self.owned_client(principal, client_id).await?;
        self.store().update_client(client.id, &change, self.now()).await?;
        let field = match &change {
            ClientChange::IpAllowlist(_) => "ip_allowlist",
            ClientChange::AllowedOrigins(_) => "allowed_origins",
            ClientChange::RateLimit(_) => "rate_limit",
        };
        self.audit(
            Some(principal.user.id),
            "allowlist_changed",
            "success",
            Some(meta.ip),
            json!({"client_id": client.id, "field": field}),
        )
        .await;
        self.events()
            .emit(
                events::CLIENT_UPDATED,
                json!({"client_id": client.id, "user_id": principal.user.id, "field": field, "reason": "updated"}),
            )
            .await;
        self.owned_client(principal, client_id).await
    }

    /// Parses `{"requests", "per"}`; `requests: null` clears the limit. A rate faster than
    /// `TENANT_RATE_LIMIT_MAX` is refused.
    pub fn parse_rate_limit(&self, requests: Option<u64>, per: Option<&str>) -> Result<Option<RateLimit>, Error> {
        let Some(requests) = requests else {
            return Ok(None);
        };
        if !(1..=MAX_RATE_REQUESTS).contains(&requests) {
            return Err(Error::validation("requests", format!("must be from 1 to {MAX_RATE_REQUESTS}")));
        }
        let per = per.ok_or_else(|| Error::validation("per", "is required with requests (e.g. \"1m\")"))?;
        let per = platform::duration::parse_duration(per).map_err(|e| Error::validation("per", e))?;
        if per < Duration::from_secs(1) || per > Duration::from_secs(86_400) {
            return Err(Error::validation("per", "must be from 1s to 1d"));
        }
        if let Some(max) = self.inner.config.tenant_rate_limit_max
            && (platform::rate::RateLimit { requests, per }).is_faster_than(&max)
        {
            return Err(Error::validation("requests", format!("must not allow more than {max}")));
        }
        Ok(Some(RateLimit { requests, per_ms: u64::try_from(per.as_millis()).unwrap_or(u64::MAX) }))
    }

    /// The API-key decision the gateway and gRPC expose unchanged: the key must be live, its
    /// client's owner enabled, the IP inside the client's allowlist and the `Origin` (when
    /// present) among its origins.
    pub async fn check_api_key(
        &self,
        key: &str,
        ip: Option<IpAddr>,
        origin: Option<&str>,
    ) -> Result<ClientContext, Error> {
        let credential = Credential::parse(Kind::ApiKey, key.trim()).ok_or(Error::KeyInvalid)?;
        let key = self.store().api_key_by_hash(&credential.hash()).await?.ok_or(Error::KeyInvalid)?;
        let now = self.now();
        let client = self.live_key(&key, now).await?;
        self.check_ip(&client, ip)?;
        self.check_origin(&client, origin)?;
        if key.last_used_at.is_none_or(|t| now - t >= LAST_USED_EVERY) {
            self.store().touch_api_key(key.id, now).await?;
        }
        Ok(ClientContext {
            client_id: client.id,
            key_id: key.id,
            owner_id: client.owner_id,
            scopes: key.scopes,
            rate_limit: client.rate_limit,
            expires_at: key.expires_at,
        })
    }

    /// What keeps an API key's context valid, for its validation and its later re-checks
    /// alike: the key neither revoked nor expired (a rotated key's grace included), its client
    /// there and the client's owner enabled.
    pub(super) async fn live_key(&self, key: &ApiKey, now: OffsetDateTime) -> Result<Client, Error> {
        if key.revoked_at.is_some() || key.expires_at.is_some_and(|e| e <= now) {
            return Err(Error::KeyRevoked);
        }
        let client = self.store().client(key.client_id).await?.ok_or(Error::KeyInvalid)?;
        let owner = self.store().user_by_id(client.owner_id).await?;
        if owner.is_none_or(|o| o.disabled) {
            return Err(Error::KeyRevoked);
        }
        Ok(client)
    }
}
