//! The TLS listener of the cluster transport.
//!
//! ractor_cluster's own listener awaits each TLS handshake before accepting the next connection,
//! so one stranger who connects and says nothing would stall every later connection. This
//! listener does each handshake in its own task, bounded in time and in number, and hands only
//! finished handshakes to the `NodeServer` (which then checks the cookie inside the session).

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Longest a connecting peer may take to finish the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// TLS handshakes in progress at once; a connection beyond it is closed at once.
pub const MAX_PENDING_HANDSHAKES: usize = 64;
/// Pause after a failed accept (out of file descriptors and the like) instead of spinning.
const ACCEPT_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Accepts connections on `listener` until the task is aborted.
pub async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    server: ActorRef<NodeServerMessage>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "cluster listener accept failed");
                tokio::time::sleep(ACCEPT_RETRY_PAUSE).await;
                continue;
            }
        };
        let Ok(permit) = pending.clone().try_acquire_owned() else {
            tracing::warn!(peer = %peer_addr, limit = MAX_PENDING_HANDSHAKES, "too many TLS handshakes in progress: connection closed");
            continue;
        };
        let (acceptor, server) = (acceptor.clone(), server.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let _ = stream.set_nodelay(true);
            let Ok(local_addr) = stream.local_addr() else {
                return;
            };
            match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let opened = NodeServerMessage::ConnectionOpened {
                        stream: Box::new(NetworkStream::TlsServer {
                            peer_addr,
                            local_addr,
                            stream,
                        }),
                        is_server: true,
                    };
                    if server.cast(opened).is_err() {
                        tracing::debug!("node server gone; connection dropped");
                    }
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %peer_addr, error = %e, "cluster TLS handshake refused (a certificate from another CA, or none); not a member");
                }
                Err(_) => {
                    tracing::warn!(peer = %peer_addr, timeout = ?TLS_HANDSHAKE_TIMEOUT, "cluster TLS handshake timed out; connection closed");
                }
            }
        });
    }
}
