//! One structured log line per request and the request metrics. The line holds the method,
//! the path without its query (queries may carry tickets or tokens), status, latency, request
//! id, client IP, route, and who was authenticated; never a header or a credential.

use std::{sync::Arc, time::Instant};

use auth_contract::AuthContext;
use axum::response::Response;
use http::Method;

use crate::{error::Source, pipeline::ClientIp, state::Gateway};

/// The target of access lines (`RUST_LOG=gateway::access=warn` turns them off).
const ACCESS: &str = "gateway::access";

/// The route label a built-in handler sets on its response for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// `response`, labelled for logs and metrics.
pub fn label(mut response: Response, label: &'static str) -> Response {
    response.extensions_mut().insert(RouteLabel(label));
    response
}

/// What the log line and metrics of one request need, filled in as the stages learn it.
pub struct Entry {
    started: Instant,
    /// The method and raw path, copied only when the line will be written.
    logged: Option<(Method, String)>,
    pub ip: Option<ClientIp>,
    /// The route label of a proxied request (built-in routes label their responses).
    pub route: Option<&'static str>,
    /// Who the forwarded request was authenticated as.
    pub principal: Option<Arc<AuthContext>>,
}

impl Entry {
    pub fn begin<B>(request: &http::Request<B>) -> Self {
        let logged = tracing::enabled!(target: ACCESS, tracing::Level::INFO)
            .then(|| (request.method().clone(), request.uri().path().to_owned()));
        Self { started: Instant::now(), logged, ip: None, route: None, principal: None }
    }

    /// Counts the request and writes its line.
    pub fn finish(self, gateway: &Gateway, response: &Response, request_id: &str) {
        let elapsed = self.started.elapsed();
        let status = response.status().as_u16();
        let extensions = response.extensions();
        let route = self.route.or_else(|| extensions.get::<RouteLabel>().map(|r| r.0)).unwrap_or("none");
        let source = extensions.get::<Source>().map_or("", |s| s.as_str());
        gateway.metrics.count_request(route, status, status_to_str(status), elapsed);
        if !source.is_empty() {
            gateway.metrics.errors.with_label_values(&[source, status_to_str(status)]).inc();
        }
        let Some((method, path)) = self.logged else {
            return;
        };
        let kind = self.principal.as_ref().map_or("", |p| p.kind.as_str());
        let subject = self.principal.as_ref().map_or("", |p| p.subject.as_str());
        let ip = self.ip.map(|ip| platform::net::IpText::new(ip.0));
        let ip = ip.as_ref().map_or("", platform::net::IpText::as_str);
        let latency_us = elapsed.as_micros() as u64;
        // JSON logs (production) get the line written directly: the same fields, without
        // the generic formatter's cost on every request.
        let now = gateway.deps.clock.now();
        if let Some(line) = platform::telemetry::JsonLine::start(now, tracing::Level::INFO, ACCESS, "request") {
            line.str("method", method.as_str())
                .str("path", &path)
                .u64("status", u64::from(status))
                .u64("latency_us", latency_us)
                .str("request_id", request_id)
                .str("client_ip", ip)
                .str("route", route)
                .str("kind", kind)
                .str("subject", subject)
                .str("error_source", source)
                .write();
            return;
        }
        tracing::info!(
            target: ACCESS,
            method = %method,
            path = %path,
            status,
            latency_us,
            request_id,
            client_ip = ip,
            route,
            kind,
            subject,
            error_source = source,
            "request"
        );
    }
}

/// Status codes as static labels, so counting a request allocates nothing.
fn status_to_str(status: u16) -> &'static str {
    const COMMON: [(u16, &str); 22] = [
        (101, "101"),
        (200, "200"),
        (201, "201"),
        (202, "202"),
        (204, "204"),
        (301, "301"),
        (302, "302"),
        (304, "304"),
        (400, "400"),
        (401, "401"),
        (403, "403"),
        (404, "404"),
        (405, "405"),
        (409, "409"),
        (413, "413"),
        (415, "415"),
        (422, "422"),
        (429, "429"),
        (500, "500"),
        (502, "502"),
        (503, "503"),
        (504, "504"),
    ];
    if let Ok(index) = COMMON.binary_search_by_key(&status, |(code, _)| *code) {
        return COMMON[index].1;
    }
    match status / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels_are_exact_for_common_codes_and_classes_otherwise() {
        assert_eq!(status_to_str(200), "200");
        assert_eq!(status_to_str(429), "429");
        assert_eq!(status_to_str(418), "4xx");
        assert_eq!(status_to_str(599), "5xx");
        assert_eq!(status_to_str(103), "1xx");
    }

    #[tokio::test]
    async fn each_request_is_counted_under_its_route_label() {
        let gateway = crate::app::test_gateway("").await;
        for _ in 0..3 {
            let request = http::Request::builder().uri("/x?secret=1").body(()).unwrap();
            let entry = Entry::begin(&request);
            entry.finish(&gateway, &label(axum::response::IntoResponse::into_response("ok"), "unit"), "id");
        }
        assert_eq!(gateway.metrics.requests.with_label_values(&["unit", "200"]).get(), 3);
        assert_eq!(gateway.metrics.latency.with_label_values(&["unit"]).get_sample_count(), 3);
        // A proxied request answered 200 goes through the series resolved at start-up: the
        // same series a scrape shows.
        let request = http::Request::builder().uri("/v1/x").body(()).unwrap();
        let mut entry = Entry::begin(&request);
        entry.route = Some(crate::metrics::PROXIED_ROUTE);
        entry.finish(&gateway, &axum::response::IntoResponse::into_response("ok"), "id");
        assert_eq!(gateway.metrics.requests.with_label_values(&["route", "200"]).get(), 1);
        assert_eq!(gateway.metrics.latency.with_label_values(&["route"]).get_sample_count(), 1);
    }
}
