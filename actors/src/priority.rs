//! Ingest runs below queries.
//!
//! A node streaming at full speed keeps every core busy; a dashboard's read then waits for CPU
//! behind the CSV parser, bulk-ingest parsing, the store's checkpoints and its LSM's flushes and
//! compactions. Those run on threads whose nice value is raised by [`INGEST_NICE`] (Linux: per thread, inherited by the
//! threads they start, such as fjall's flush and compaction workers when the store is opened
//! from one), so the scheduler gives a runnable query thread about ten times their share, while
//! ingest still takes every cycle the queries leave idle. Work that holds the store's lock (the
//! collectors' and repairs' writes) stays at normal priority: a lowered thread preempted while
//! holding it would make queries wait behind ingest. Checkpoints take that lock only to freeze
//! and release a generation.

use std::sync::OnceLock;

use tokio::runtime::Runtime;
use tokio::task::JoinHandle;

/// How much lower ingest threads run than the node's other threads (nice levels: 10 gives a
/// runnable thread of the node's normal priority about ten times the CPU share of one of them).
pub const INGEST_NICE: i32 = 10;
/// Bound of the ingest pool's blocking threads (one per busy collector at most, plus bulk
/// parses and repairs); further tasks wait for a free one.
pub const INGEST_BLOCKING_THREADS: usize = 128;

/// Raises the calling thread's nice value by [`INGEST_NICE`] (at most to 19). A refusal (a
/// platform without per-thread priorities) is logged once at debug level and ignored.
pub fn lower_current_thread() {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        let set = rustix::process::getpriority_process(Some(tid)).and_then(|now| {
            rustix::process::setpriority_process(Some(tid), (now + INGEST_NICE).min(19))
        });
        if let Err(e) = set {
            tracing::debug!(error = %e, "could not lower an ingest thread's priority");
        }
    }
}

/// The ingest pool: blocking threads at the lowered priority. `None` if it could not start (no
/// threads left): ingest then runs on the caller's runtime at normal priority.
fn pool() -> Option<&'static Runtime> {
    static POOL: OnceLock<Option<Runtime>> = OnceLock::new();
    POOL.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(INGEST_BLOCKING_THREADS)
            .thread_name("ingest")
            .on_thread_start(lower_current_thread)
            .build()
            .inspect_err(
                |e| tracing::warn!(error = %e, "no ingest pool; ingest runs at normal priority"),
            )
            .ok()
    })
    .as_ref()
}

/// Runs blocking ingest work (checkpoints, bulk parses) on the ingest pool; not work that holds
/// the store's lock for long (writes).
pub fn spawn_ingest<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    match pool() {
        Some(rt) => rt.spawn_blocking(f),
        None => tokio::task::spawn_blocking(f),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn nice() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).unwrap_or(i32::MIN)
    }

    #[tokio::test]
    async fn ingest_work_runs_below_the_callers_priority() {
        let mine = tokio::task::spawn_blocking(nice).await.unwrap_or(i32::MIN);
        let ingest = spawn_ingest(nice).await.unwrap_or(i32::MIN);
        assert_eq!(
            ingest,
            (mine + INGEST_NICE).min(19),
            "ingest {ingest}, query {mine}"
        );
        let thread = std::thread::spawn(|| {
            lower_current_thread();
            // A thread started from a lowered one inherits its priority.
            std::thread::spawn(nice).join().unwrap_or(i32::MIN)
        });
        assert_eq!(thread.join().unwrap_or(i32::MIN), ingest);
    }
}
