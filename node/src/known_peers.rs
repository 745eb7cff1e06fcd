//! Members this node has seen, remembered in its data directory, so that a node started without
//! seeds (the first node of a cluster) dials them again after a restart: it rejoins at once
//! instead of claiming every partition until a peer happens to redial it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use telemetry_actors::cluster::membership::{Phase, Status};
use telemetry_actors::cluster::transport::ClusterView;
use tokio::sync::watch;

/// The file in the data directory: one `host:port` cluster address per line.
pub const FILE: &str = "known-peers";

/// Most addresses remembered; a larger cluster is still found through any one of them.
pub const MAX_KNOWN_PEERS: usize = 64;

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE)
}

/// The remembered addresses; a missing or unreadable file is no addresses (logged).
pub fn load(data_dir: &Path) -> Vec<String> {
    let file = path(data_dir);
    match std::fs::read_to_string(&file) {
        Ok(text) => text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .take(MAX_KNOWN_PEERS)
            .map(String::from)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            tracing::warn!(file = %file.display(), error = %e, "known peers not read; using the seeds only");
            Vec::new()
        }
    }
}

/// Addresses worth remembering from a view: peers up and not gone for good.
pub fn worth_remembering(view: &ClusterView) -> Vec<String> {
    let mut addrs: Vec<String> = view
        .peers
        .iter()
        .filter(|p| p.status == Status::Up && p.info.phase != Phase::Left)
        .map(|p| p.info.cluster_addr.clone())
        .take(MAX_KNOWN_PEERS)
        .collect();
    addrs.sort();
    addrs
}

/// Rewrites the file whenever the set of live peers changes (never with an empty set: a node
/// cut off from everyone keeps the addresses it needs to get back).
pub fn remember(data_dir: PathBuf, mut view: watch::Receiver<Arc<ClusterView>>) {
    tokio::spawn(async move {
        let mut last = load(&data_dir);
        last.sort();
        loop {
            let addrs = worth_remembering(&view.borrow_and_update());
            if !addrs.is_empty() && addrs != last {
                let text: String = addrs.iter().map(|a| format!("{a}\n")).collect();
                let tmp = path(&data_dir).with_extension("tmp");
                let written = match tokio::fs::write(&tmp, text).await {
                    Ok(()) => tokio::fs::rename(&tmp, path(&data_dir)).await,
                    Err(e) => Err(e),
                };
                match written {
                    Ok(()) => last = addrs,
                    Err(e) => tracing::warn!(error = %e, "known peers not saved"),
                }
            }
            if view.changed().await.is_err() {
                return;
            }
        }
    });
}
