//! The fast upstream: every delivery the gateway makes is read to its end, counted and
//! answered `200` at once; `GET /deliveries` answers the count so far, which is how the load
//! generator knows what was delivered during and after a run.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;

use crate::support::serve;

/// The path the count is read from.
const COUNT_PATH: &str = "/deliveries";

/// Serves on `port` until killed (`TOKIO_WORKER_THREADS` threads, which xtask sets).
pub fn upstream(port: u16) {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let delivered = Arc::new(AtomicU64::new(0));
    runtime.block_on(serve(port, move |request| {
        let delivered = delivered.clone();
        async move { answer(request, &delivered).await }
    }));
}

async fn answer(request: Request<Incoming>, delivered: &AtomicU64) -> Response<Full<Bytes>> {
    let (status, body) = if request.method() == Method::GET && request.uri().path() == COUNT_PATH {
        (StatusCode::OK, delivered.load(Ordering::Relaxed).to_string())
    } else if request.into_body().collect().await.is_ok() {
        delivered.fetch_add(1, Ordering::Relaxed);
        (StatusCode::OK, String::new())
    } else {
        (StatusCode::BAD_REQUEST, "the body could not be read".to_owned())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

/// The deliveries counted so far by the upstream at `base` (`http://host:port`).
pub async fn delivered(base: &str) -> Result<u64, String> {
    let url = format!("{base}{COUNT_PATH}");
    let answer = reqwest::get(&url).await.map_err(|e| format!("{url}: {e}"))?;
    let text = answer.text().await.map_err(|e| format!("{url}: {e}"))?;
    text.trim().parse().map_err(|_| format!("{url} answered {text:?}, not a count"))
}
