//! In-process stores for embedded mode: one process holds every connection, so a map is the
//! whole truth.

use std::{
    collections::{HashMap, HashSet},
    sync::Mutex,
    time::Duration,
};

use async_trait::async_trait;
use platform::Unavailable;
use tokio::time::Instant;

use super::{ContextStore, StoredConnection, Ticket, TicketStore, ticket_key};

#[derive(Default)]
struct Contexts {
    connections: HashMap<String, (StoredConnection, Instant)>,
    owners: HashMap<String, HashSet<String>>,
}

/// Connection contexts in memory; TTLs are honoured on read.
#[derive(Default)]
pub struct MemoryContextStore {
    inner: Mutex<Contexts>,
}

impl MemoryContextStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, Contexts> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl ContextStore for MemoryContextStore {
    async fn put(&self, connection: &StoredConnection, ttl: Duration) -> Result<(), Unavailable> {
        let mut inner = self.lock();
        if let Some(owner) = connection.owner() {
            inner.owners.entry(owner.to_owned()).or_default().insert(connection.id.clone());
        }
        inner.connections.insert(connection.id.clone(), (connection.clone(), Instant::now() + ttl));
        Ok(())
    }

    async fn touch(&self, id: &str, _owner: Option<&str>, ttl: Duration) -> Result<(), Unavailable> {
        if let Some((_, expires)) = self.lock().connections.get_mut(id) {
            *expires = Instant::now() + ttl;
        }
        Ok(())
    }

    async fn remove(&self, id: &str, owner: Option<&str>) -> Result<(), Unavailable> {
        let mut inner = self.lock();
        inner.connections.remove(id);
        if let Some(owner) = owner
            && let Some(set) = inner.owners.get_mut(owner)
        {
            set.remove(id);
            if set.is_empty() {
                inner.owners.remove(owner);
            }
        }
        Ok(())
    }

    async fn get(&self, id: &str) -> Result<Option<StoredConnection>, Unavailable> {
        let now = Instant::now();
        Ok(self.lock().connections.get(id).filter(|(_, expires)| *expires > now).map(|(c, _)| c.clone()))
    }

    async fn connections_of(&self, owner: &str) -> Result<Vec<String>, Unavailable> {
        let now = Instant::now();
        let inner = self.lock();
        Ok(inner
            .owners
            .get(owner)
            .into_iter()
            .flatten()
            .filter(|id| inner.connections.get(*id).is_some_and(|(_, expires)| *expires > now))
            .cloned()
            .collect())
    }

    async fn ping(&self) -> Result<(), Unavailable> {
        Ok(())
    }
}

/// Tickets in memory, keyed by their hash.
#[derive(Default)]
pub struct MemoryTicketStore {
    inner: Mutex<HashMap<String, (Ticket, Instant)>>,
}

#[async_trait]
impl TicketStore for MemoryTicketStore {
    async fn put(&self, ticket: &str, value: &Ticket, ttl: Duration) -> Result<(), Unavailable> {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // Unused tickets are swept here, so the map never outgrows the tickets of the last TTL.
        inner.retain(|_, (_, expires)| *expires > now);
        inner.insert(ticket_key(ticket), (value.clone(), now + ttl));
        Ok(())
    }

    async fn take(&self, ticket: &str) -> Result<Option<Ticket>, Unavailable> {
        let now = Instant::now();
        let taken = self.inner.lock().unwrap_or_else(|p| p.into_inner()).remove(&ticket_key(ticket));
        Ok(taken.filter(|(_, expires)| *expires > now).map(|(t, _)| t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::conformance;

    #[tokio::test]
    async fn memory_context_store_conforms() {
        conformance::contexts(&MemoryContextStore::default()).await;
    }

    #[tokio::test]
    async fn memory_ticket_store_conforms() {
        conformance::tickets(&MemoryTicketStore::default()).await;
    }
}
