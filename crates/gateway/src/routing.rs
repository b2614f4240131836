//! The route table: which configured route (or built-in route) a normalised request path
//! belongs to. The longest configured prefix wins, on whole segments only; `POST
//! /v1/socket/ticket` is the built-in route to the socket service; a path that only its letter
//! case keeps from a stricter route is refused (SPEC §6); a path no route claims is 404.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use crate::{
    config::routes::RoutePolicy,
    domain::{CredentialKind, RouteAuth, Upstream},
    error::GatewayError,
};

/// Prefixes the gateway serves itself; a config route may neither take them nor anything
/// beneath them, so a routes file can never re-route login or webhooks to another upstream.
pub const BUILT_IN_PREFIXES: &[&str] = &[
    "/v1/auth",
    "/v1/client",
    "/v1/clients",
    "/v1/sdk/session",
    "/v1/socket",
    "/v1/webhooks",
    "/health",
    "/ready",
    "/metrics",
    platform::media::OPENAPI_PATH,
];

pub const SOCKET_TICKET_PATH: &str = "/v1/socket/ticket";
/// Where the socket service mints tickets.
pub const SOCKET_TICKET_UPSTREAM_PATH: &str = "/ticket";

/// Whether `path` is `prefix` itself or lies beneath it on a segment boundary
/// (`/v1/user/orders/7` is under `/v1/user/orders`; `/v1/user/ordersX` is not).
pub fn is_under(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether the gateway serves `path` itself (health, the auth service's public surface, SDK
/// sessions, the socket upgrade, webhooks) rather than through a configured route. The ticket
/// route is proxied like a configured one.
pub fn is_built_in(path: &str) -> bool {
    path != SOCKET_TICKET_PATH && BUILT_IN_PREFIXES.iter().any(|prefix| is_under(path, prefix))
}

/// The route a request matched, and the path it is sent upstream with when that differs
/// from its own.
#[derive(Debug, Clone)]
pub struct MatchedRoute {
    pub policy: Arc<RoutePolicy>,
    pub upstream_path: Option<&'static str>,
}

/// The policy of `POST /v1/socket/ticket`: any authenticated kind, to the socket service.
pub fn ticket_route(socket_service: &Upstream) -> RoutePolicy {
    RoutePolicy {
        prefix: SOCKET_TICKET_PATH.to_owned(),
        upstream: socket_service.clone(),
        auth: RouteAuth::Required(CredentialKind::ALL.into_iter().collect()),
        scopes: Vec::new(),
        roles: Vec::new(),
        rate_limit: None,
        timeout: Duration::from_secs(10),
        retries: 0,
        max_body: 64 * 1024,
        // The socket service mints the ticket from the credential itself (SPEC §7).
        forward_credentials: true,
        websocket: false,
        line: 0,
    }
}

/// The configured routes, answering which one a request path belongs to.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Arc<RoutePolicy>>,
    by_prefix: HashMap<String, usize>,
    /// Every configured prefix, ASCII-lower-cased, for the case rule of SPEC §6.
    folded: HashSet<String>,
    /// The built-in ticket route, when the table serves requests (not while a file is parsed).
    ticket: Option<Arc<RoutePolicy>>,
}

impl RouteTable {
    /// Adds a route; the caller has refused duplicate prefixes.
    pub fn push(&mut self, route: RoutePolicy) {
        self.by_prefix.insert(route.prefix.clone(), self.routes.len());
        self.folded.insert(route.prefix.to_ascii_lowercase());
        self.routes.push(Arc::new(route));
    }

    /// The same routes, with the built-in ticket route to `socket_service`.
    pub fn with_ticket_route(mut self, socket_service: &Upstream) -> Self {
        self.ticket = Some(Arc::new(ticket_route(socket_service)));
        self
    }

    /// The route of a normalised path: the ticket route, or the longest configured prefix;
    /// a path that only its case keeps from a stricter route is refused (SPEC §6).
    pub fn find(&self, path: &str) -> Result<MatchedRoute, GatewayError> {
        if path == SOCKET_TICKET_PATH
            && let Some(ticket) = &self.ticket
        {
            return Ok(MatchedRoute { policy: ticket.clone(), upstream_path: Some(SOCKET_TICKET_UPSTREAM_PATH) });
        }
        if let Some(stricter) = self.case_conflict(path) {
            tracing::debug!(path, stricter, "path refused: its lower-cased form is under a longer route");
            return Err(GatewayError::MalformedPath("the path differs from a route's prefix only in letter case"));
        }
        self.match_route(path)
            .map(|policy| MatchedRoute { policy: policy.clone(), upstream_path: None })
            .ok_or(GatewayError::NotFound)
    }

    /// The route with the longest prefix that `path` is under, matching whole segments only.
    /// A query string, if present, is ignored. The caller normalises the path first (no `..`,
    /// no percent-encoded separators), since matching is on the raw text.
    pub fn match_route(&self, path: &str) -> Option<&Arc<RoutePolicy>> {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        // Walking the path's own segment boundaries from the longest costs one hash lookup per
        // segment, whatever the number of routes.
        let mut candidate = path;
        loop {
            if let Some(&index) = self.by_prefix.get(candidate) {
                return self.routes.get(index);
            }
            match candidate.rfind('/') {
                Some(0) | None => return None,
                Some(cut) => candidate = &candidate[..cut],
            }
        }
    }

    /// SPEC §6's case rule: when the ASCII-lower-cased path falls under a longer prefix
    /// (configured or built in, compared case-insensitively) than the exact path does, a
    /// case-insensitive upstream would serve it as that stricter route, so it must be refused.
    /// Returns the longer prefix, lower-cased.
    pub fn case_conflict(&self, path: &str) -> Option<String> {
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        if !path.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let exact = self.match_route(path).map_or(0, |route| route.prefix.len());
        let folded = path.to_ascii_lowercase();
        let mut candidate = folded.as_str();
        while candidate.len() > exact {
            if self.folded.contains(candidate) || BUILT_IN_PREFIXES.contains(&candidate) {
                return Some(candidate.to_owned());
            }
            match candidate.rfind('/') {
                Some(0) | None => return None,
                Some(cut) => candidate = &candidate[..cut],
            }
        }
        None
    }

    /// The route declared with exactly this prefix.
    pub fn get(&self, prefix: &str) -> Option<&Arc<RoutePolicy>> {
        self.by_prefix.get(prefix).and_then(|&index| self.routes.get(index))
    }

    /// Every configured route, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<RoutePolicy>> {
        self.routes.iter()
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::routes::RoutesFile;

    const UP: &str = "upstream = \"http://127.0.0.1:9001\"";

    fn table(text: &str) -> RouteTable {
        let socket = Upstream::parse("http://127.0.0.1:4004").unwrap();
        RoutesFile::parse(text).unwrap().routes.with_ticket_route(&socket)
    }

    #[test]
    fn longest_prefix_on_segment_boundaries() {
        let table = table(&format!(
            "[[routes]]\nprefix = \"/v1/user\"\n{UP}\n\n[[routes]]\nprefix = \"/v1/user/orders\"\n{UP}\n\n\
             [[routes]]\nprefix = \"/v1/user/orders/archive\"\n{UP}\n\n[[routes]]\nprefix = \"/v1/sdk/items\"\n{UP}\n\n\
             [[routes]]\nprefix = \"/v1/public\"\n{UP}\nauth = [\"none\"]\n"
        ));
        for (path, expected) in [
            ("/v1/user/orders", Some("/v1/user/orders")),
            ("/v1/user/orders/", Some("/v1/user/orders")),
            ("/v1/user/orders/7", Some("/v1/user/orders")),
            ("/v1/user/orders/7/items", Some("/v1/user/orders")),
            ("/v1/user/orders?page=2", Some("/v1/user/orders")),
            ("/v1/user/orders/archive", Some("/v1/user/orders/archive")),
            ("/v1/user/orders/archive/2024", Some("/v1/user/orders/archive")),
            ("/v1/user/orders/archived", Some("/v1/user/orders")),
            ("/v1/user/ordersX", Some("/v1/user")),
            ("/v1/user", Some("/v1/user")),
            ("/v1/user/", Some("/v1/user")),
            ("/v1/user/profile", Some("/v1/user")),
            ("/v1/users", None),
            ("/v1/sdk/items/3", Some("/v1/sdk/items")),
            ("/v1/sdk/itemsX", None),
            ("/v1/sdk", None),
            ("/v1/public", Some("/v1/public")),
            ("/v1/auth/login", None),
            ("/v1", None),
            ("/", None),
            ("", None),
            ("/V1/user/orders", None),
        ] {
            assert_eq!(table.match_route(path).map(|r| r.prefix.as_str()), expected, "{path}");
        }
        assert_eq!(table.iter().map(|r| r.line).collect::<Vec<_>>(), [1, 5, 9, 13, 17]);
    }

    #[test]
    fn the_ticket_route_is_built_in_and_case_conflicts_are_refused() {
        let table = table(&format!(
            "[[routes]]\nprefix = \"/v1/user\"\n{UP}\n\n[[routes]]\nprefix = \"/v1/user/orders\"\n{UP}\n"
        ));
        let found = |path: &str| table.find(path).map(|m| (m.policy.prefix.clone(), m.upstream_path));
        assert_eq!(found("/v1/user/orders/7").unwrap(), ("/v1/user/orders".to_owned(), None));
        assert_eq!(found("/v1/user/ordersX").unwrap(), ("/v1/user".to_owned(), None));
        assert_eq!(found(SOCKET_TICKET_PATH).unwrap(), (SOCKET_TICKET_PATH.to_owned(), Some("/ticket")));
        assert_eq!(found("/v1/other").unwrap_err().status(), 404);
        assert_eq!(found("/v1/user/ORDERS/7").unwrap_err().code(), "malformed_path");
        assert_eq!(found("/V1/AUTH/login").unwrap_err().code(), "malformed_path");
    }

    #[test]
    fn built_in_paths_are_the_built_in_prefixes_except_the_ticket_route() {
        for path in ["/health", "/v1/auth", "/v1/auth/login", "/v1/clients", "/v1/socket", "/v1/webhooks/meta"] {
            assert!(is_built_in(path), "{path}");
        }
        for path in [SOCKET_TICKET_PATH, "/v1/user/x", "/healthz", "/v1/authx", "/"] {
            assert!(!is_built_in(path), "{path}");
        }
    }
}
