//! Graceful shutdown: a future that completes on SIGINT or SIGTERM, and [`Shutdown`], which
//! lets several servers in one process stop on the same signal.

use std::future::Future;

use tokio::sync::watch;

/// Resolves when the process is asked to stop; servers pass it to `with_graceful_shutdown`
/// so in-flight requests finish before exit.
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested; draining connections");
}

/// One stop signal shared by every server and task of a process.
#[derive(Debug, Clone)]
pub struct Shutdown {
    receiver: watch::Receiver<bool>,
}

impl Shutdown {
    /// Fires when `trigger` completes.
    pub fn new(trigger: impl Future<Output = ()> + Send + 'static) -> Self {
        let (sender, receiver) = watch::channel(false);
        tokio::spawn(async move {
            trigger.await;
            let _ = sender.send(true);
        });
        Self { receiver }
    }

    /// Completes once the stop signal has fired (at once if it already has).
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.receiver.clone();
        async move {
            // An error means the sender is gone without firing: treat it as a stop too.
            let _ = receiver.wait_for(|stopped| *stopped).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_waiter_stops_on_one_trigger() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shutdown = Shutdown::new(async move {
            let _ = rx.await;
        });
        let a = tokio::spawn(shutdown.wait());
        let b = tokio::spawn(shutdown.wait());
        tokio::task::yield_now().await;
        assert!(!a.is_finished());
        let _ = tx.send(());
        assert!(tokio::time::timeout(std::time::Duration::from_secs(1), async { (a.await, b.await) }).await.is_ok());
        assert!(tokio::time::timeout(std::time::Duration::from_secs(1), shutdown.wait()).await.is_ok());
    }
}
