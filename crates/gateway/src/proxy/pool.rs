//! This thread's keep-alive connections to upstreams, on hyper's HTTP/1.1 client connections.
//! A request takes the connection put back last (or opens one), and its connection goes back
//! once the answer's body has been read to the end; a connection whose answer was cut short
//! or upgraded is never reused. A request that a reused connection could not even start (the
//! upstream had just closed it) is sent again on another. A connection left unused for a
//! whole [`IDLE_TIMEOUT`] (so after 60 to 120 s idle) is closed by its own task; at most
//! [`MAX_IDLE`] wait per upstream and thread.
//!
//! Kept here rather than in hyper-util's pooled client because that client, per request,
//! hashes a pool key under a lock and spawns a task to put the connection back; nothing of
//! the kind is needed when every connection lives on the thread that uses it.

use std::{
    cell::RefCell,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};

use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::http1,
};
use hyper_util::rt::TokioIo;

use super::{BoxError, ProxyBody};
use crate::domain::Upstream;

/// How often a connection's task looks whether it was used since it last looked.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per upstream and thread; the oldest goes first.
pub const MAX_IDLE: usize = 256;
/// How long opening a connection (name lookup included) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// TCP keep-alive probes on upstream connections start after this long without traffic.
const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// A connection's [`Use`] while a request is on it.
const BUSY: u64 = u64::MAX;

/// How many times a connection was put back (no clock is read per request), or [`BUSY`].
type Use = Arc<AtomicU64>;

/// One connection's sending half and what its task reads to know it has been idle too long.
struct Conn {
    sender: http1::SendRequest<ProxyBody>,
    used: Use,
    /// Times put back so far.
    returns: u64,
}

/// The idle connections of one upstream, the last one put back at the end.
struct Idle {
    origin: Arc<str>,
    conns: Vec<Conn>,
}

thread_local! {
    static IDLE: RefCell<Vec<Idle>> = const { RefCell::new(Vec::new()) };
}

/// The connection put back last for `origin` on this thread, if any is still open.
fn checkout(origin: &str) -> Option<Conn> {
    IDLE.with_borrow_mut(|idle| {
        let conns = &mut idle.iter_mut().find(|i| &*i.origin == origin)?.conns;
        while let Some(conn) = conns.pop() {
            if !conn.sender.is_closed() {
                return Some(conn);
            }
        }
        None
    })
}

/// Puts `conn` back for `origin`, dropping the oldest beyond [`MAX_IDLE`].
fn checkin(origin: &Arc<str>, mut conn: Conn) {
    if conn.sender.is_closed() {
        return;
    }
    conn.returns += 1;
    conn.used.store(conn.returns, Ordering::Release);
    IDLE.with_borrow_mut(|idle| {
        let index = match idle.iter().position(|i| i.origin == *origin) {
            Some(index) => index,
            None => {
                idle.push(Idle { origin: origin.clone(), conns: Vec::new() });
                idle.len() - 1
            }
        };
        let conns = &mut idle[index].conns;
        if conns.len() >= MAX_IDLE {
            conns.remove(0);
        }
        conns.push(conn);
    });
}

/// Opens a connection to `upstream` and starts the task that drives it and closes it when a
/// whole `idle_period` passed without a use.
async fn connect(upstream: &Upstream, idle_period: Duration) -> Result<Conn, BoxError> {
    let host = upstream.host().trim_start_matches('[').trim_end_matches(']');
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect((host, upstream.port())))
        .await
        .map_err(|_| format!("connecting to {upstream} took longer than {CONNECT_TIMEOUT:?}"))??;
    stream.set_nodelay(true)?;
    socket2::SockRef::from(&stream).set_tcp_keepalive(&socket2::TcpKeepalive::new().with_time(TCP_KEEPALIVE))?;
    let (sender, connection) = http1::Builder::new().handshake(TokioIo::new(stream)).await?;
    let used: Use = Arc::new(AtomicU64::new(BUSY));
    let watched = used.clone();
    tokio::spawn(async move {
        let connection = connection.with_upgrades();
        tokio::pin!(connection);
        let mut seen = BUSY;
        loop {
            tokio::select! {
                ended = &mut connection => {
                    if let Err(err) = ended {
                        tracing::debug!(error = %err, "upstream connection ended");
                    }
                    return;
                }
                () = tokio::time::sleep(idle_period) => {
                    let used = watched.load(Ordering::Acquire);
                    if used != BUSY && used == seen {
                        // Idle since the last look. Dropping the connection closes it; its
                        // sender reads as closed.
                        return;
                    }
                    seen = used;
                }
            }
        }
    });
    Ok(Conn { sender, used, returns: 0 })
}

/// Sends `request` (its URI in origin form, its `Host` set) to `upstream` over this thread's
/// connections. The answer's body gives its connection back when read to the end.
pub async fn send(upstream: &Upstream, mut request: Request<ProxyBody>) -> Result<Response<Returning>, BoxError> {
    loop {
        let (mut conn, reused) = match checkout(upstream.origin()) {
            Some(conn) => (conn, true),
            // Boxed: the handshake's large future stays off the path of a reused connection.
            None => (Box::pin(connect(upstream, IDLE_TIMEOUT)).await?, false),
        };
        conn.used.store(BUSY, Ordering::Release);
        if let Err(err) = conn.sender.ready().await {
            if reused {
                continue;
            }
            return Err(err.into());
        }
        match conn.sender.try_send_request(request).await {
            Ok(response) => {
                let back = Some((upstream.shared_origin().clone(), conn));
                return Ok(response.map(|body| Returning { body, ended: false, back }));
            }
            Err(mut err) => match err.take_message() {
                // Not started: the upstream closed this connection as it was taken.
                Some(unsent) if reused => request = unsent,
                _ => return Err(err.into_error().into()),
            },
        }
    }
}

/// An upstream answer's body; once read to the end its connection goes back to the pool.
pub struct Returning {
    body: Incoming,
    ended: bool,
    back: Option<(Arc<str>, Conn)>,
}

impl Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.ended = true,
            Poll::Ready(Some(Ok(_))) => self.ended = self.body.is_end_stream(),
            // A broken answer leaves its connection unusable.
            Poll::Ready(Some(Err(_))) => self.back = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if (self.ended || self.body.is_end_stream())
            && let Some((origin, conn)) = self.back.take()
        {
            checkin(&origin, conn);
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// An upstream answering each request on a connection with `ok`, counting the
    /// connections it accepted and those the gateway closed.
    async fn upstream() -> (Upstream, Arc<AtomicU64>, Arc<AtomicU64>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (accepted, closed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let (counted, ended) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let ended = ended.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = stream.read(&mut buf).await else { return };
                        if n == 0 {
                            ended.fetch_add(1, Ordering::SeqCst);
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                            if stream.write_all(answer).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (Upstream::parse(&format!("http://127.0.0.1:{port}")).unwrap(), accepted, closed)
    }

    fn get(upstream: &Upstream) -> Request<ProxyBody> {
        let mut request = Request::new(super::super::empty());
        *request.uri_mut() = "/x".parse().unwrap();
        request.headers_mut().insert(http::header::HOST, upstream.host().parse().unwrap());
        request
    }

    #[tokio::test]
    async fn a_connection_read_to_the_end_is_reused_and_one_cut_short_is_not() {
        let (upstream, accepted, _) = upstream().await;
        for _ in 0..5 {
            let response = send(&upstream, get(&upstream)).await.unwrap();
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "five requests in turn share one connection");
        // An answer dropped unread: its connection is not put back.
        let unread = send(&upstream, get(&upstream)).await.unwrap();
        drop(unread);
        let response = send(&upstream, get(&upstream)).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // Two at once need two connections; both go back.
        let (a, b) = tokio::join!(send(&upstream, get(&upstream)), send(&upstream, get(&upstream)));
        let (a, b) = (a.unwrap().into_body().collect(), b.unwrap().into_body().collect());
        let _ = tokio::join!(a, b);
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        let idle = IDLE.with_borrow(|idle| idle.iter().find(|i| &*i.origin == upstream.origin()).unwrap().conns.len());
        assert_eq!(idle, 2);
    }

    #[tokio::test]
    async fn a_connection_unused_for_a_whole_idle_period_is_closed_and_not_reused() {
        let (upstream, accepted, closed) = upstream().await;
        // A connection that looks every 100 ms instead of every minute, put in the pool.
        let conn = connect(&upstream, Duration::from_millis(100)).await.unwrap();
        checkin(upstream.shared_origin(), conn);
        let response = send(&upstream, get(&upstream)).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 1, "the pooled connection was used");
        for _ in 0..200 {
            if closed.load(Ordering::SeqCst) == 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(closed.load(Ordering::SeqCst), 1, "the idle connection was closed");
        let response = send(&upstream, get(&upstream)).await.unwrap();
        assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "a new connection replaced it");
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_while_idle_is_replaced_without_an_error() {
        // An upstream that answers one request per connection, then closes it without saying so.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let mut buf = vec![0; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                drop(stream);
            }
        });
        let upstream = Upstream::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        for _ in 0..3 {
            let response = send(&upstream, get(&upstream)).await.unwrap();
            assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "ok");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let upstream = Upstream::parse(&format!("http://127.0.0.1:{port}")).unwrap();
        assert!(send(&upstream, get(&upstream)).await.is_err());
    }
}
