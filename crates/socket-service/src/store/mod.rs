//! Where connection contexts and tickets live: Redis in distributed mode (shared by every
//! socket node, so any node or operator can see who is connected), process memory in embedded
//! mode. The raw credential is never stored, only the context the auth service answered.

mod memory;
mod redis;

use std::time::Duration;

use async_trait::async_trait;
use auth_contract::{AuthContext, Kind};
use platform::Unavailable;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use memory::{MemoryContextStore, MemoryTicketStore};
pub use redis::{RedisContextStore, RedisTicketStore};

/// How long a ticket may wait for its connection (SPEC §7).
pub const TICKET_TTL: Duration = Duration::from_secs(30);

/// One open connection as stored (`ws:conn:{id}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredConnection {
    pub id: String,
    /// The socket node holding the connection.
    pub node: String,
    pub context: AuthContext,
    /// Unix seconds.
    pub connected_at: i64,
}

impl StoredConnection {
    /// The key of the `ws:user:{id}` set this connection belongs to, if any.
    pub fn owner(&self) -> Option<&str> {
        crate::protocol::own_id(&self.context)
    }
}

#[async_trait]
pub trait ContextStore: Send + Sync + 'static {
    /// Stores (or replaces) a connection's context and adds it to its owner's set; both live
    /// for `ttl` unless touched again.
    async fn put(&self, connection: &StoredConnection, ttl: Duration) -> Result<(), Unavailable>;

    /// Extends the TTL of a connection (a heartbeat).
    async fn touch(&self, id: &str, owner: Option<&str>, ttl: Duration) -> Result<(), Unavailable>;

    /// Forgets a connection.
    async fn remove(&self, id: &str, owner: Option<&str>) -> Result<(), Unavailable>;

    async fn get(&self, id: &str) -> Result<Option<StoredConnection>, Unavailable>;

    /// Ids of the connections stored for an owner (user id or SDK subject).
    async fn connections_of(&self, owner: &str) -> Result<Vec<String>, Unavailable>;

    /// Whether the store is reachable (readiness).
    async fn ping(&self) -> Result<(), Unavailable>;
}

/// What a ticket stands for: the context the gateway verified when it was minted, and the
/// `Origin` of that request (which the gateway checked against the tenant's origins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub context: AuthContext,
    pub origin: Option<String>,
}

#[async_trait]
pub trait TicketStore: Send + Sync + 'static {
    /// Keeps a ticket for `ttl`, under the hash of its secret.
    async fn put(&self, ticket: &str, value: &Ticket, ttl: Duration) -> Result<(), Unavailable>;

    /// Consumes a ticket: the first caller gets it, every later one `None`.
    async fn take(&self, ticket: &str) -> Result<Option<Ticket>, Unavailable>;
}

/// Tickets are kept under their SHA-256, so a store dump does not reveal a usable ticket.
pub(crate) fn ticket_key(ticket: &str) -> String {
    hex::encode(Sha256::digest(ticket.as_bytes()))
}

/// A new ticket secret: 32 random bytes, hex-encoded.
pub fn new_ticket() -> Result<String, Unavailable> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| Unavailable::new("random", e))?;
    Ok(format!("{}{}", auth_contract::credential::TICKET_PREFIX, hex::encode(bytes)))
}

/// The serialisable form of a context (the contract type is transport-neutral and has no
/// serde implementation).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ContextRecord {
    pub subject: String,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

impl From<&AuthContext> for ContextRecord {
    fn from(c: &AuthContext) -> Self {
        Self {
            subject: c.subject.clone(),
            kind: c.kind.as_str().to_owned(),
            user_id: c.user_id.clone(),
            tenant_id: c.tenant_id.clone(),
            client_id: c.client_id.clone(),
            session_id: c.session_id.clone(),
            credential_id: c.credential_id.clone(),
            role: c.role.map(|role| role.as_str().to_owned()),
            scopes: c.scopes.to_vec(),
            expires_at: c.expires_at,
        }
    }
}

impl ContextRecord {
    pub fn into_context(self) -> Option<AuthContext> {
        Some(AuthContext {
            subject: self.subject,
            kind: Kind::parse(&self.kind)?,
            user_id: self.user_id,
            tenant_id: self.tenant_id,
            client_id: self.client_id,
            session_id: self.session_id,
            credential_id: self.credential_id,
            role: self.role.as_deref().and_then(auth_contract::Role::from_wire),
            scopes: auth_contract::scope::Scopes::from_wire(self.scopes.iter().map(String::as_str)),
            expires_at: self.expires_at,
            rate_limit: None,
        })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TicketRecord {
    pub context: ContextRecord,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl TicketRecord {
    pub fn from_ticket(ticket: &Ticket) -> Self {
        Self { context: ContextRecord::from(&ticket.context), origin: ticket.origin.clone() }
    }

    pub fn into_ticket(self) -> Option<Ticket> {
        Some(Ticket { context: self.context.into_context()?, origin: self.origin })
    }
}

#[cfg(test)]
pub(crate) mod conformance {
    //! One suite for every implementation.

    use super::*;

    pub fn context(user: &str, session: &str) -> AuthContext {
        AuthContext {
            subject: user.into(),
            kind: Kind::User,
            user_id: Some(user.into()),
            tenant_id: None,
            client_id: None,
            session_id: Some(session.into()),
            credential_id: Some("jti-1".into()),
            role: Some(auth_contract::Role::Member),
            scopes: auth_contract::scope::Scopes::all(),
            expires_at: Some(2_000_000_000),
            rate_limit: None,
        }
    }

    pub async fn contexts(store: &dyn ContextStore) {
        let user = format!("u-{}", uuid::Uuid::new_v4().simple());
        let a = StoredConnection {
            id: uuid::Uuid::new_v4().to_string(),
            node: "n1".into(),
            context: context(&user, "s1"),
            connected_at: 1,
        };
        let b = StoredConnection { id: uuid::Uuid::new_v4().to_string(), ..a.clone() };
        store.put(&a, Duration::from_secs(60)).await.unwrap();
        store.put(&b, Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap(), Some(a.clone()));
        let mut ids = store.connections_of(&user).await.unwrap();
        ids.sort();
        let mut expected = vec![a.id.clone(), b.id.clone()];
        expected.sort();
        assert_eq!(ids, expected);

        let mut updated = a.clone();
        updated.context.expires_at = Some(2_000_000_900);
        store.put(&updated, Duration::from_secs(60)).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap(), Some(updated));
        store.touch(&a.id, Some(&user), Duration::from_secs(60)).await.unwrap();

        store.remove(&a.id, Some(&user)).await.unwrap();
        assert_eq!(store.get(&a.id).await.unwrap(), None);
        assert_eq!(store.connections_of(&user).await.unwrap(), vec![b.id.clone()]);
        store.remove(&b.id, Some(&user)).await.unwrap();
        assert!(store.connections_of(&user).await.unwrap().is_empty());
        store.ping().await.unwrap();
    }

    pub async fn tickets(store: &dyn TicketStore) {
        let ticket = new_ticket().unwrap();
        let value = Ticket { context: context("u1", "s1"), origin: Some("https://app.example.com".into()) };
        store.put(&ticket, &value, TICKET_TTL).await.unwrap();
        assert_eq!(store.take("pct_other").await.unwrap(), None);
        assert_eq!(store.take(&ticket).await.unwrap(), Some(value));
        assert_eq!(store.take(&ticket).await.unwrap(), None, "a ticket is consumed once");

        let short = new_ticket().unwrap();
        let value = Ticket { context: context("u1", "s1"), origin: None };
        store.put(&short, &value, Duration::from_millis(1100)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(store.take(&short).await.unwrap(), None, "an expired ticket is gone");
    }
}
