//! One delivery attempt: an event POSTed to the source's upstream as [`Render`] shapes it,
//! and what the answer means (delivered, retry later, or refused for good). The dispatcher
//! (`super::dispatch`) decides what happens next.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_rustls::{ConfigBuilderExt as _, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{amqp::AmqpOutbox, outbox::StoredEvent, render::Render};

pub type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How the dispatchers pace themselves (the retry schedule of an upstream that fails is the
/// source's own `retry`).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first wait after the outbox could not be read or written; doubled after each
    /// further failure.
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// One delivery attempt, connection included.
    pub attempt_timeout: Duration,
    /// How often an idle worker looks for events pushed by another gateway instance.
    pub poll_interval: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Where an https upstream's certificate must chain to.
#[derive(Debug, Clone, Copy)]
pub enum Roots<'a> {
    /// The system's roots (the upstream is https without `ca_file`).
    System,
    /// The certificates of a PEM file (`ca_file`).
    File(&'a std::path::Path),
    /// None: the upstream is plain http, so no certificate is ever checked.
    Unused,
}

// rustls deprecates its ring provider for lacking post-quantum key exchange, which only its
// aws-lc-rs provider (C and assembly, a second provider in the workspace) has; ring stays the
// one provider here, with X25519 and the NIST curves.
#[allow(deprecated)]
fn tls_config(roots: Roots<'_>) -> Result<rustls::ClientConfig, String> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let config = match roots {
        Roots::System => builder
            .with_native_roots()
            .map_err(|e| format!("the system's root certificates cannot be read: {e}"))?
            .with_no_client_auth(),
        Roots::File(path) => {
            use rustls_pki_types::{CertificateDer, pem::PemObject as _};
            let mut store = rustls::RootCertStore::empty();
            let certificates =
                CertificateDer::pem_file_iter(path).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            for certificate in certificates {
                let certificate = certificate.map_err(|e| format!("ca_file {}: {e}", path.display()))?;
                store.add(certificate).map_err(|e| format!("ca_file {}: {e}", path.display()))?;
            }
            if store.is_empty() {
                return Err(format!("ca_file {}: holds no certificate", path.display()));
            }
            builder.with_root_certificates(store).with_no_client_auth()
        }
        Roots::Unused => builder.with_root_certificates(rustls::RootCertStore::empty()).with_no_client_auth(),
    };
    Ok(config)
}

/// The delivery client of one source: HTTP/1.1, plain or TLS (rustls) as the upstream's
/// scheme says, with `roots` for its certificate.
pub fn client(roots: Roots<'_>) -> Result<HttpClient, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    connector.enforce_http(false);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(roots)?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new()).build(https))
}

/// What one attempt achieved.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// The upstream is down or overloaded; try again later.
    Retry(String),
    /// The upstream answered that this event will never be accepted (a 4xx other than 408
    /// and 429), so retrying would only block the events behind it.
    Refused(StatusCode),
}

/// Where a source's events go.
pub enum Target {
    /// POSTed to the upstream.
    Http { url: Uri, client: Box<HttpClient> },
    /// Published to an exchange for broker consumers (`publish`).
    Broker { broker: std::sync::Arc<AmqpOutbox>, exchange: String, routing_key: String },
}

fn build_request(url: &Uri, rendered: super::render::Rendered) -> Result<Request<Full<Bytes>>, String> {
    let mut request = Request::builder().method(Method::POST).uri(url.clone());
    let headers = request.headers_mut().ok_or("the upstream URL is not valid")?;
    for (name, value) in rendered.headers {
        headers.insert(name, value);
    }
    request.body(Full::new(rendered.body)).map_err(|e| e.to_string())
}

/// One attempt to hand `event` to `target`.
pub async fn deliver_once(target: &Target, render: &Render, event: &StoredEvent, timeout: Duration) -> Outcome {
    let now = platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp();
    let rendered = match render.render(event, now) {
        Ok(rendered) => rendered,
        // A stored event that cannot even be rendered will never deliver.
        Err(e) => {
            tracing::error!(source = %event.source, id = %event.id, error = %e, "webhook event cannot be forwarded");
            return Outcome::Refused(StatusCode::BAD_REQUEST);
        }
    };
    let (url, client) = match target {
        Target::Http { url, client } => (url, client),
        Target::Broker { broker, exchange, routing_key } => {
            // The broker's own calls are bounded; an unroutable or refused event is retried
            // on the schedule like a down upstream (its consumers' queue may come).
            return match broker.publish_event(exchange, routing_key, &event.id, &rendered.headers, &rendered.body).await
            {
                Ok(()) => Outcome::Delivered,
                Err(e) => Outcome::Retry(e.to_string()),
            };
        }
    };
    let request = match build_request(url, rendered) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(source = %event.source, id = %event.id, error = %e, "webhook event cannot be forwarded");
            return Outcome::Refused(StatusCode::BAD_REQUEST);
        }
    };
    match tokio::time::timeout(timeout, client.request(request)).await {
        Err(_) => Outcome::Retry("the upstream did not answer in time".to_owned()),
        Ok(Err(e)) => Outcome::Retry(format!("the upstream is unreachable: {e}")),
        Ok(Ok(response)) => {
            let status = response.status();
            if status.is_success() {
                Outcome::Delivered
            } else if status.is_server_error()
                || status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
            {
                Outcome::Retry(format!("the upstream answered {status}"))
            } else {
                Outcome::Refused(status)
            }
        }
    }
}
