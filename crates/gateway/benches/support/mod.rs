//! What the gateway's load generators share (`benches/proxy`, `benches/webhooks`), included by
//! each with `#[path]`: keep-alive HTTP/1.1 client connections and a minimal HTTP/1.1 server,
//! the warm-up before a counted window, failure records, latency quantiles, the machine's
//! description, the CPU time of process trees (`cpu`) and the SVG bar charts (`chart`).

pub mod chart;
pub mod cpu;

use std::{
    convert::Infallible,
    future::Future,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;

/// How long a load runs before its counted window opens.
pub const WARM_UP: Duration = Duration::from_secs(1);
/// Failure messages kept per figure (all are counted).
const KEPT_MESSAGES: usize = 3;

/// One keep-alive HTTP/1.1 client connection.
pub type Sender = SendRequest<Full<Bytes>>;

/// Opens a keep-alive HTTP/1.1 connection to `authority` (`host:port`), `TCP_NODELAY` set.
pub async fn connect(authority: &str) -> Result<Sender, String> {
    let stream = tokio::net::TcpStream::connect(authority).await.map_err(|e| format!("connect to {authority}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Serves HTTP/1.1 on `127.0.0.1:port`, every request answered by `answer`, until the
/// process is killed.
pub async fn serve<F, A>(port: u16, answer: F)
where
    F: Fn(Request<Incoming>) -> A + Clone + Send + Sync + 'static,
    A: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.expect("bind a bench server");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let answer = answer.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answered = answer(request);
                async move { Ok::<_, Infallible>(answered.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Failed requests of one figure: a count and the first few descriptions.
#[derive(Clone, Default)]
pub struct Failures(Arc<Mutex<(u64, Vec<String>)>>);

impl Failures {
    pub fn record(&self, what: String) {
        let mut inner = self.0.lock().expect("failures");
        inner.0 += 1;
        if inner.1.len() < KEPT_MESSAGES {
            inner.1.push(what);
        }
    }

    pub fn count(&self) -> u64 {
        self.0.lock().expect("failures").0
    }

    pub fn messages(&self) -> Vec<String> {
        self.0.lock().expect("failures").1.clone()
    }
}

/// The `q` quantile of `sorted` (ascending; zero when empty): the smallest sample with at
/// least that share of the samples at or below it.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

pub fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    // The machine's processors, not this process's share (`taskset` narrows that).
    let cores = std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{cores} × {cpu}")
}

pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
