//! The one accept loop behind every public HTTP listener (the auth service, the gateway, the
//! socket service, and the all-in-one binary through them), so a slow or idle client cannot
//! hold a connection for ever and a flood cannot exhaust the process's file descriptors:
//!
//! - HTTP/1.1 through hyper with a timer: a client has `HTTP_HEADER_READ_TIMEOUT` (default
//!   10 s) to send each request head, counted from the moment the connection opens or the
//!   previous response was sent, so it bounds a slowloris head and an idle keep-alive
//!   connection alike. Upgraded connections (WebSockets) leave hyper and are not timed here;
//!   they have their own heartbeats.
//! - At most `HTTP_MAX_CONNECTIONS` connections at once, upgraded ones included (default:
//!   derived from the open-file limit, `RLIMIT_NOFILE`); past it the loop stops accepting and
//!   the kernel's backlog holds newcomers.
//! - `TCP_NODELAY` on every connection; accept errors (a full descriptor table) back off
//!   instead of spinning.
//! - Shutdown stops accepting, asks every connection to finish its request and close, and
//!   waits for them up to a grace period.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore, watch},
};
use tower::ServiceExt as _;

use crate::env::{ConfigError, Env, EnvExt as _};

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for open connections to finish.
pub const DRAIN_GRACE: Duration = Duration::from_secs(30);
/// Descriptors kept for everything that is not a client connection (database and Redis
/// pools, upstream connections of the built-in routes, files).
const RESERVED_FDS: u64 = 256;
/// Assumed when the limit cannot be read.
const FALLBACK_FD_LIMIT: u64 = 1024;
/// Pause after an accept error, so a full descriptor table is not a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// `HTTP_HEADER_READ_TIMEOUT`.
    pub header_read_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`.
    pub max_connections: usize,
}

impl ListenerLimits {
    /// Reads `HTTP_HEADER_READ_TIMEOUT` and `HTTP_MAX_CONNECTIONS`; the default cap leaves
    /// `fds_per_connection` descriptors for each connection (2 for a proxy, which opens one
    /// upstream for each client).
    pub fn from_env(env: &dyn Env, fds_per_connection: u64) -> Result<Self, ConfigError> {
        let header_read_timeout = env.duration_or("HTTP_HEADER_READ_TIMEOUT", DEFAULT_HEADER_READ_TIMEOUT)?;
        if header_read_timeout.is_zero() {
            return Err(ConfigError::new("HTTP_HEADER_READ_TIMEOUT", "must be longer than 0"));
        }
        let derived = connection_cap(open_file_limit(), fds_per_connection);
        let max_connections: usize = env.parsed_or("HTTP_MAX_CONNECTIONS", derived)?;
        if max_connections == 0 {
            return Err(ConfigError::new("HTTP_MAX_CONNECTIONS", "must be at least 1"));
        }
        Ok(Self { header_read_timeout, max_connections })
    }
}

impl Default for ListenerLimits {
    fn default() -> Self {
        Self { header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT, max_connections: connection_cap(open_file_limit(), 1) }
    }
}

/// The soft open-file limit of this process.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// Connections a listener may hold with `limit` descriptors, `fds_per_connection` each,
/// after the reserve (at most half the limit).
pub fn connection_cap(limit: Option<u64>, fds_per_connection: u64) -> usize {
    let limit = limit.unwrap_or(FALLBACK_FD_LIMIT);
    let usable = limit - RESERVED_FDS.min(limit / 2);
    usize::try_from(usable / fds_per_connection.max(1)).unwrap_or(usize::MAX).max(1)
}

/// A client connection that holds its place under the cap until it closes, through an
/// upgrade too (hyper keeps the stream inside the upgraded connection).
struct Admitted {
    tcp: TcpStream,
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for Admitted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Serves `router` on `listener` until `shutdown` resolves, then drains. Handlers see the
/// peer as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    serve_service(listener, router, limits, shutdown).await
}

/// What a connection answers with: any service that answers every request.
pub trait ConnectionService:
    tower::Service<
        http::Request<Incoming>,
        Response = axum::response::Response,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> ConnectionService for S where
    S: tower::Service<
            http::Request<Incoming>,
            Response = axum::response::Response,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// [`serve`] for any service that answers every request (the gateway hands each request
/// straight to its pipeline, without a router in front).
pub async fn serve_service(
    listener: TcpListener,
    service: impl ConnectionService,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let accepting = accept(listener, service, limits, permits.clone(), stopping);
    tokio::pin!(accepting);
    tokio::select! {
        () = shutdown => {
            let _ = stop.send(true);
            accepting.await;
        }
        () = &mut accepting => {}
    }
    let _ = stop.send(true);
    drain(&permits, limits).await;
    Ok(())
}

/// [`serve_service`] spread over `threads` threads, each running a single-threaded runtime
/// that accepts from the same listening socket and keeps its connections, their requests
/// and (through thread-local clients) their upstream connections on that thread: no request
/// is handed between threads, as nginx's workers do not. The cap on connections and the
/// drain are shared. `make_service` builds each thread's service. Work the service hands to
/// the caller's runtime (background tasks, pools created there) keeps running there.
pub async fn serve_per_thread<S: ConnectionService>(
    listener: TcpListener,
    make_service: impl Fn() -> S,
    limits: ListenerLimits,
    threads: usize,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut running = Vec::new();
    for index in 0..threads.max(1) {
        let (listener, service) = (listener.try_clone()?, make_service());
        let (permits, stopping) = (permits.clone(), stopping.clone());
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new().name(format!("edge-{index}")).spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => accept(listener, service, limits, permits.clone(), stopping).await,
                    Err(err) => tracing::error!(error = %err, "cannot accept on this thread"),
                }
                // This thread's connections live on its runtime: keep it until every
                // connection has drained (or the grace period ends).
                drain(&permits, limits).await;
            });
            let _ = done.send(());
        })?;
        running.push(finished);
    }
    drop(listener);
    shutdown.await;
    let _ = stop.send(true);
    for finished in running {
        let _ = finished.await;
    }
    Ok(())
}

/// Accepts connections on `listener` and serves each with `service` until `stopping` turns
/// true; then asks every open connection to finish its request and close.
async fn accept(
    listener: TcpListener,
    service: impl ConnectionService,
    limits: ListenerLimits,
    permits: Arc<Semaphore>,
    mut stopping: watch::Receiver<bool>,
) {
    let mut builder = http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout).keep_alive(true);
    let stop = stopping.clone();
    let stopped = async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    tokio::pin!(stopped);
    loop {
        let permit = tokio::select! {
            () = &mut stopped => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    tracing::warn!(error = %err, "accept failed; backing off");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let service = service.clone().map_request(move |mut request: http::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request
        });
        let io = TokioIo::new(Admitted { tcp, _permit: permit });
        let connection = builder.serve_connection(io, TowerToHyperService::new(service)).with_upgrades();
        let mut stopping = stop.clone();
        tokio::spawn(async move {
            tokio::pin!(connection);
            let finished = tokio::select! {
                finished = connection.as_mut() => finished,
                () = async { let _ = stopping.wait_for(|stop| *stop).await; } => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(err) = finished {
                tracing::debug!(error = %err, %peer, "connection ended");
            }
        });
    }
}

/// Waits until every connection under the cap has closed, up to the grace period.
async fn drain(permits: &Semaphore, limits: ListenerLimits) {
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(DRAIN_GRACE, permits.acquire_many(all)).await {
        // Give the permits back: every thread of a per-thread server waits the same drain.
        Ok(Ok(all)) => drop(all),
        Ok(Err(_)) => {}
        Err(_) => tracing::warn!("connections still open after the drain grace period"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::MapEnv;

    #[test]
    fn the_cap_follows_the_open_file_limit() {
        assert_eq!(connection_cap(Some(20_000), 1), 19_744);
        assert_eq!(connection_cap(Some(20_000), 2), 9_872);
        assert_eq!(connection_cap(Some(256), 1), 128);
        assert_eq!(connection_cap(None, 1), 768);
        assert_eq!(connection_cap(Some(1), 2), 1);
        // SPEC §10: 10 000 idle sockets fit under this machine's 20 000 descriptors.
        assert!(connection_cap(Some(20_000), 1) >= 10_000);
    }

    #[test]
    fn limits_read_from_the_environment() {
        let limits = ListenerLimits::from_env(&MapEnv::new([("HTTP_HEADER_READ_TIMEOUT", "2s")]), 1).unwrap();
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.max_connections, connection_cap(open_file_limit(), 1));
        let capped = ListenerLimits::from_env(&MapEnv::new([("HTTP_MAX_CONNECTIONS", "5")]), 2).unwrap();
        assert_eq!((capped.header_read_timeout, capped.max_connections), (DEFAULT_HEADER_READ_TIMEOUT, 5));
        for (name, value) in
            [("HTTP_HEADER_READ_TIMEOUT", "0s"), ("HTTP_MAX_CONNECTIONS", "0"), ("HTTP_MAX_CONNECTIONS", "x")]
        {
            assert_eq!(ListenerLimits::from_env(&MapEnv::new([(name, value)]), 1).unwrap_err().variable, name);
        }
    }

    #[tokio::test]
    async fn past_the_cap_newcomers_wait_and_a_closed_connection_frees_its_place() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "ok" }));
        let limits = ListenerLimits { header_read_timeout: Duration::from_secs(5), max_connections: 1 };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router, limits, async {
            let _ = rx.await;
        }));
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(request).await.unwrap();
        let mut buf = [0u8; 256];
        assert!(first.read(&mut buf).await.unwrap() > 0);
        // The second is accepted by the kernel but not served while the first holds the place.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(request).await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(waited.is_err(), "served past the cap");
        drop(first);
        let served = tokio::time::timeout(Duration::from_secs(2), second.read(&mut buf)).await;
        assert!(served.is_ok_and(|n| n.is_ok_and(|n| n > 0)), "not served once the place was free");
        drop(second);
        let _ = tx.send(());
        assert!(tokio::time::timeout(Duration::from_secs(5), server).await.is_ok(), "shutdown did not drain");
    }

    /// The standalone gateway's server: requests are answered on the edge's threads, the cap
    /// holds across every thread, and shutdown lets a request in flight finish.
    #[tokio::test]
    async fn per_thread_serving_answers_on_its_threads_shares_the_cap_and_drains() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let make = || {
            Router::new()
                .route("/", axum::routing::get(|| async { std::thread::current().name().unwrap_or("?").to_owned() }))
                .route(
                    "/slow",
                    axum::routing::get(|| async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "finished"
                    }),
                )
        };
        let limits = ListenerLimits { header_read_timeout: Duration::from_secs(5), max_connections: 1 };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve_per_thread(listener, make, limits, 2, async {
            let _ = rx.await;
        }));
        let mut buf = [0u8; 512];
        let mut first = TcpStream::connect(addr).await.unwrap();
        first.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let n = first.read(&mut buf).await.unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.contains("edge-"), "{answer}");
        // Whichever thread accepts it, the second connection waits for the first's place.
        let mut second = TcpStream::connect(addr).await.unwrap();
        second.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let waited = tokio::time::timeout(Duration::from_millis(300), second.read(&mut buf)).await;
        assert!(waited.is_err(), "served past the cap");
        drop(first);
        // Once it is accepted and its slow request is running, shutdown comes; it still
        // gets its answer, then the server ends.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = tx.send(());
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(3), second.read_to_end(&mut answer)).await;
        assert!(read.is_ok_and(|r| r.is_ok()), "the connection did not close after its answer");
        let answer = String::from_utf8_lossy(&answer).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("finished"), "{answer}");
        assert!(tokio::time::timeout(Duration::from_secs(5), server).await.is_ok(), "shutdown did not drain");
    }
}
