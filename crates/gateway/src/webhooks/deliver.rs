//! The delivery worker of one source: takes the oldest stored event, POSTs it to the
//! upstream and removes it only after a 2xx, retrying with capped exponential backoff while
//! the upstream is down, so an accepted event is delivered at least once.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::{Notify, watch};

use super::outbox::{Claimed, Outbox, StoredEvent};

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub const SOURCE_HEADER: HeaderName = HeaderName::from_static("x-webhook-source");
pub const ID_HEADER: HeaderName = HeaderName::from_static("webhook-id");

/// How the workers pace themselves.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// The first wait after a failed attempt; doubled after each further failure.
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

fn build_request(url: &Uri, event: &StoredEvent) -> Result<Request<Full<Bytes>>, String> {
    let body = event.body()?;
    let mut request = Request::builder().method(Method::POST).uri(url.clone());
    let headers = request.headers_mut().ok_or("the upstream URL is not valid")?;
    let content_type = event.content_type.as_deref().unwrap_or("application/octet-stream");
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(content_type).map_err(|e| e.to_string())?);
    for (name, value) in &event.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
            headers.insert(name, value);
        }
    }
    headers.insert(ID_HEADER, HeaderValue::from_str(&event.id).map_err(|e| e.to_string())?);
    headers.insert(SOURCE_HEADER, HeaderValue::from_str(&event.source).map_err(|e| e.to_string())?);
    request.body(Full::new(body)).map_err(|e| e.to_string())
}

pub async fn deliver_once(client: &HttpClient, url: &Uri, event: &StoredEvent, timeout: Duration) -> Outcome {
    let request = match build_request(url, event) {
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

/// One source's worker; returns when `stop` turns true (or its sender is dropped).
pub struct Worker {
    pub source: String,
    pub url: Uri,
    pub outbox: Arc<dyn Outbox>,
    pub client: HttpClient,
    pub notify: Arc<Notify>,
    pub stop: watch::Receiver<bool>,
    pub policy: RetryPolicy,
}

impl Worker {
    /// Sleeps for `wait` unless told to stop first; `false` means stop.
    async fn pause(&mut self, wait: Duration) -> bool {
        if *self.stop.borrow() {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => true,
            changed = self.stop.changed() => changed.is_ok() && !*self.stop.borrow(),
        }
    }

    fn next_backoff(&self, backoff: Duration) -> Duration {
        (backoff * 2).min(self.policy.max_backoff)
    }

    pub async fn run(mut self) {
        let mut backoff = self.policy.initial_backoff;
        loop {
            if *self.stop.borrow() {
                return;
            }
            let claimed = match self.outbox.claim(&self.source).await {
                Ok(Some(claimed)) => claimed,
                Ok(None) => {
                    let notify = self.notify.clone();
                    let poll = self.policy.poll_interval;
                    tokio::select! {
                        () = notify.notified() => {}
                        () = tokio::time::sleep(poll) => {}
                        changed = self.stop.changed() => if changed.is_err() || *self.stop.borrow() { return },
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "webhook outbox unreadable; retrying");
                    if !self.pause(backoff).await {
                        return;
                    }
                    backoff = self.next_backoff(backoff);
                    continue;
                }
            };
            if !self.deliver(claimed, &mut backoff).await {
                return;
            }
        }
    }

    /// Delivers one event, retrying until it is done; `false` means stop (the event stays
    /// stored and is delivered after the next start).
    async fn deliver(&mut self, claimed: Claimed, backoff: &mut Duration) -> bool {
        let event = &claimed.event;
        let mut attempt = 1u32;
        loop {
            let outcome = tokio::select! {
                outcome = deliver_once(&self.client, &self.url, event, self.policy.attempt_timeout) => outcome,
                _ = self.stop.changed() => return false,
            };
            match outcome {
                Outcome::Delivered => {
                    tracing::info!(source = %self.source, id = %event.id, attempt, "webhook event delivered");
                    *backoff = self.policy.initial_backoff;
                    return self.finish(&claimed, false).await;
                }
                Outcome::Refused(status) => {
                    tracing::error!(
                        source = %self.source, id = %event.id, %status,
                        "upstream refused a webhook event; kept in the dead letters"
                    );
                    return self.finish(&claimed, true).await;
                }
                Outcome::Retry(why) => {
                    tracing::warn!(
                        source = %self.source, id = %event.id, attempt, error = %why,
                        retry_in_ms = backoff.as_millis() as u64, "webhook delivery failed; will retry"
                    );
                    if !self.pause(*backoff).await {
                        return false;
                    }
                    *backoff = self.next_backoff(*backoff);
                    attempt = attempt.saturating_add(1);
                }
            }
        }
    }

    /// Removes (or sets aside) a finished event, insisting while the store is unreachable: the
    /// alternative is delivering it twice, which the upstream tolerates better than a loss but
    /// should not see needlessly.
    async fn finish(&mut self, claimed: &Claimed, dead: bool) -> bool {
        let mut wait = self.policy.initial_backoff;
        loop {
            let done = if dead {
                self.outbox.dead_letter(&self.source, claimed).await
            } else {
                self.outbox.complete(&self.source, claimed).await
            };
            match done {
                Ok(()) => return true,
                Err(e) => {
                    tracing::warn!(source = %self.source, error = %e, "cannot remove a delivered webhook event; retrying");
                    if !self.pause(wait).await {
                        return false;
                    }
                    wait = self.next_backoff(wait);
                }
            }
        }
    }
}
