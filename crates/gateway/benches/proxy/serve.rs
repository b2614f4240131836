//! The servers the bench binary can be instead of the load generator: the upstream every
//! target forwards to, and the bare hyper forwarder (the limit a proxy is judged against).
//!
//! The upstream reads every request body to its end and answers `ok\n`. It listens on a plain
//! port (the upstream direct, and the peers' upstream) and, with a context secret, on a
//! verifying port the gateway's routes point to: there a request whose `X-Context-Signature`
//! does not verify, or does not describe a user, is answered 401, so a round through a gateway
//! that did not authenticate and sign fails. With a spin it burns that much of its thread's
//! CPU per request before answering (a busy upstream, not a sleeping one).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use auth_contract::{
    Kind,
    headers::{ContextKey, verify_context},
};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, header, uri::Authority};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
};
use platform::clock::{Clock as _, SystemClock};

use crate::{EXPECTED_BODY, POST_BODY_LEN, support::serve};

fn runtime() -> tokio::runtime::Runtime {
    // The worker count comes from `TOKIO_WORKER_THREADS`, which xtask sets like every peer's.
    tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
}

/// What the upstream checks on one of its ports.
struct Checks {
    /// The context key on the verifying port; `None` on the plain one.
    key: Option<ContextKey>,
    /// Thread CPU to burn per request.
    spin: Duration,
}

/// Serves the upstream on `plain` and, when `verifying` is given, on that port with the
/// context checked against `secret`. Runs until killed.
pub fn upstream(plain: u16, verifying: Option<(u16, String)>, spin: Duration) {
    runtime().block_on(async move {
        let mut servers = Vec::new();
        if let Some((port, secret)) = verifying {
            let checks = Arc::new(Checks { key: Some(ContextKey::new(&secret)), spin });
            servers.push(tokio::spawn(serve_upstream(port, checks)));
        }
        servers.push(tokio::spawn(serve_upstream(plain, Arc::new(Checks { key: None, spin }))));
        for server in servers {
            server.await.expect("upstream listener");
        }
    });
}

async fn serve_upstream(port: u16, checks: Arc<Checks>) {
    serve(port, move |request| {
        let checks = checks.clone();
        async move { answer(request, &checks).await }
    })
    .await;
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("text/plain"));
    response
}

async fn answer(request: Request<Incoming>, checks: &Checks) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("the request body could not be read: {e}\n")),
    };
    if parts.method == Method::POST && body.len() != POST_BODY_LEN {
        return text(StatusCode::BAD_REQUEST, format!("expected a {POST_BODY_LEN}-byte body, got {}\n", body.len()));
    }
    if let Some(key) = &checks.key {
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let now = SystemClock.now().unix_timestamp();
        match verify_context(key, &parts.headers, &parts.method, path, now) {
            Ok(verified) if verified.kind == Kind::User => {}
            Ok(verified) => {
                return text(
                    StatusCode::UNAUTHORIZED,
                    format!("a {} context, expected a user\n", verified.kind.as_str()),
                );
            }
            Err(e) => return text(StatusCode::UNAUTHORIZED, format!("context refused: {e}\n")),
        }
    }
    if !checks.spin.is_zero() {
        spin(checks.spin);
    }
    text(StatusCode::OK, String::from_utf8_lossy(EXPECTED_BODY).into_owned())
}

/// This thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Burns `cpu` of this thread's CPU time; time the thread spends descheduled does not count.
fn spin(cpu: Duration) {
    let start = thread_cpu();
    while thread_cpu().saturating_sub(start) < cpu {
        std::hint::spin_loop();
    }
}

/// The bare hyper forwarder: an HTTP/1.1 server passing every request, head and body as they
/// came, to `127.0.0.1:to` over hyper-util's pooled keep-alive client, and the answer back. No
/// policy at all: what a proxy costs at the least with the same libraries, allocator and
/// threading as the standalone gateway (`TOKIO_WORKER_THREADS` threads, default 2, each a
/// single-threaded runtime accepting from one listening socket with a pool of its own).
pub fn forwarder(port: u16, to: u16) {
    let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).expect("bind the forwarder");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    let threads: usize = std::env::var("TOKIO_WORKER_THREADS").ok().and_then(|v| v.parse().ok()).unwrap_or(2);
    let running: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let listener = listener.try_clone().expect("a second handle on the listener");
            std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
                runtime.block_on(async move {
                    forward_from(tokio::net::TcpListener::from_std(listener).expect("listener"), to).await;
                });
            })
        })
        .collect();
    for thread in running {
        let _ = thread.join();
    }
}

async fn forward_from(listener: tokio::net::TcpListener, to: u16) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> =
        Client::builder(TokioExecutor::new()).pool_max_idle_per_host(1024).build(connector);
    let authority: Authority = format!("127.0.0.1:{to}").parse().expect("authority");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let (client, authority) = (client.clone(), authority.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
                let (client, authority) = (client.clone(), authority.clone());
                async move {
                    let mut parts = request.uri().clone().into_parts();
                    parts.scheme = Some(http::uri::Scheme::HTTP);
                    parts.authority = Some(authority);
                    *request.uri_mut() = Uri::from_parts(parts).expect("upstream URI");
                    client.request(request).await
                }
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}
