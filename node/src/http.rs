//! The HTTP server, on its own runtime.
//!
//! Queries get threads of their own: the main runtime's workers run the actors (broker appends,
//! collectors, the streamer, the cluster transport), and a request whose socket became ready
//! while both workers were busy with a long actor turn would wait for it, as would its I/O
//! events. On a separate runtime a request wakes an idle thread at once; the scheduler then
//! shares the cores between the two (ingest's CPU-heavy work runs lowered, see
//! `telemetry_actors::priority`). Peer queries arrive through the cluster transport and are
//! served there, on the main runtime.

use std::sync::OnceLock;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;

/// Worker threads of the HTTP runtime.
pub const HTTP_WORKERS: usize = 2;

/// The HTTP runtime, started on first use and kept for the life of the process (a runtime may
/// not be dropped from async code, and tests start nodes in one process).
fn runtime() -> anyhow::Result<&'static Runtime> {
    static RT: OnceLock<Result<Runtime, String>> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(HTTP_WORKERS)
            .thread_name("http")
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| anyhow::anyhow!("starting the HTTP runtime: {e}"))
}

/// The HTTP server, stopped gracefully on request.
pub struct Http {
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Http {
    /// Serves `app` on `listener` from the HTTP runtime.
    pub fn serve(listener: TcpListener, app: axum::Router) -> anyhow::Result<Self> {
        // Re-registered with the HTTP runtime's reactor, so its readiness is seen there.
        let listener = listener
            .into_std()
            .context("moving the listener to the HTTP runtime")?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = runtime()?.spawn(async move {
            let listener = TcpListener::from_std(listener)?;
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { stop, server })
    }

    /// Stops taking requests, finishes those in flight.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
    }
}
