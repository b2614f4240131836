//! A TCP proxy for race tests: it forwards bytes both ways, and while it is *holding* it keeps
//! every byte the server sends back, so a test can let an answer be computed, make something
//! happen (a revocation) and only then let the answer reach the client. Deterministic: nothing
//! depends on timing.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::Notify,
};

#[derive(Default)]
struct State {
    holding: AtomicBool,
    held_bytes: AtomicUsize,
    released: Notify,
}

/// A proxy in front of `target`; dropping it stops accepting.
pub struct DelayProxy {
    pub addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl DelayProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind delay proxy");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(State::default());
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else { continue };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                tokio::spawn(pipe(client, server, shared.clone()));
            }
        });
        Self { addr, state, accept }
    }

    /// From now on, the server's bytes are kept until [`Self::release`].
    pub fn hold(&self) {
        self.state.held_bytes.store(0, Ordering::SeqCst);
        self.state.holding.store(true, Ordering::SeqCst);
    }

    /// Bytes the server has sent since [`Self::hold`] that the client has not seen.
    pub fn held_bytes(&self) -> usize {
        self.state.held_bytes.load(Ordering::SeqCst)
    }

    /// Lets everything held through, and stops holding.
    pub fn release(&self) {
        self.state.holding.store(false, Ordering::SeqCst);
        self.state.released.notify_waiters();
    }
}

async fn pipe(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    });
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = match server_read.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if state.holding.load(Ordering::SeqCst) {
            let released = state.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            state.held_bytes.fetch_add(n, Ordering::SeqCst);
            if state.holding.load(Ordering::SeqCst) {
                released.await;
            }
        }
        if client_write.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    upstream.abort();
}
