//! One delivery attempt: an event POSTed to the source's upstream as [`Render`] shapes it,
//! and what the answer means (delivered, retry later, or refused for good). The dispatcher
//! (`super::dispatch`) decides what happens next.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use super::{outbox::StoredEvent, render::Render};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

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

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(5)));
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new()).build(connector)
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

fn build_request(url: &Uri, render: &Render, event: &StoredEvent) -> Result<Request<Full<Bytes>>, String> {
    let rendered = render.render(event, platform::clock::Clock::now(&platform::clock::SystemClock).unix_timestamp())?;
    let mut request = Request::builder().method(Method::POST).uri(url.clone());
    let headers = request.headers_mut().ok_or("the upstream URL is not valid")?;
    for (name, value) in rendered.headers {
        headers.insert(name, value);
    }
    request.body(Full::new(rendered.body)).map_err(|e| e.to_string())
}

pub async fn deliver_once(
    client: &HttpClient,
    url: &Uri,
    render: &Render,
    event: &StoredEvent,
    timeout: Duration,
) -> Outcome {
    let request = match build_request(url, render, event) {
        Ok(request) => request,
        // A stored event that cannot even form a request will never deliver.
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
