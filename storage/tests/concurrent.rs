//! Readers racing writers and checkpoints: every answer must be exactly what the model holds
//! after some number of completed write rounds, never a mixture, a hole or a duplicate.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use telemetry_storage::{BatchBuilder, GpuInfo, RangeQuery, Store, StoreOptions};

const GPUS: [&str; 4] = ["GPU-0", "GPU-1", "GPU-2", "GPU-3"];
const METRICS: [&str; 3] = ["A", "B", "C"];
const ROUNDS: i64 = 1500;
/// Time between two rounds' samples; a late sample fills the middle of an old gap.
const STEP_MS: i64 = 20;
/// How many rounds behind a late sample lands (several buckets back: into sealed chunks).
const LATE_BY: i64 = 120;
/// Small buckets, so the run seals, tiers and fills sealed buckets late many times.
const WIDTH_MS: i64 = 400;

fn gpu(uuid: &str) -> GpuInfo {
    GpuInfo {
        uuid: uuid.into(),
        hostname: "h".into(),
        ..GpuInfo::default()
    }
}

fn value(g: usize, m: usize, ts: i64) -> f64 {
    (g * 1000 + m) as f64 + ts as f64 / 7.0
}

/// What one GPU holds once `n` rounds are written: per round a new sample per metric, and from
/// round `LATE_BY` on a late one into the gap `LATE_BY` rounds back. Ordered by (time, metric).
fn expected(g: usize, n: i64) -> Vec<(i64, String, f64)> {
    let mut times: Vec<i64> = (0..n).map(|r| r * STEP_MS).collect();
    times.extend((LATE_BY..n).map(|r| (r - LATE_BY) * STEP_MS + STEP_MS / 2));
    times.sort_unstable();
    times
        .into_iter()
        .flat_map(|t| (0..METRICS.len()).map(move |m| (t, METRICS[m].to_string(), value(g, m, t))))
        .collect()
}

/// Round `r` for GPU `g`, one batch: new samples, the late fill, and a rewrite of the previous
/// round with the same values (not new).
fn round(g: usize, r: i64) -> telemetry_storage::SampleBatch {
    let mut b = BatchBuilder::default();
    let info = gpu(GPUS[g]);
    let mut times = vec![r * STEP_MS];
    if r >= LATE_BY {
        times.push((r - LATE_BY) * STEP_MS + STEP_MS / 2);
    }
    if r > 0 {
        times.push((r - 1) * STEP_MS);
    }
    for t in times {
        for (m, name) in METRICS.iter().enumerate() {
            b.push(&info, name, t, value(g, m, t));
        }
    }
    b.take()
}

fn read(store: &Store, g: usize) -> Vec<(i64, String, f64)> {
    let page = store
        .range(&RangeQuery {
            uuid: GPUS[g],
            metrics: &[],
            start: i64::MIN / 2,
            end: i64::MAX / 2,
            limit: usize::MAX,
            cursor: None,
        })
        .expect("range")
        .map(|p| {
            p.points
                .iter()
                .map(|x| {
                    let name = p.metrics[usize::from(x.metric)].to_string();
                    (x.timestamp, name, x.value)
                })
                .collect()
        });
    page.unwrap_or_default()
}

/// The number of rounds `answer` shows, if it is exactly the model after that many in `lo..=hi`.
fn rounds_shown(g: usize, answer: &[(i64, String, f64)], lo: i64, hi: i64) -> Option<i64> {
    (lo..=hi).find(|&n| expected(g, n) == answer)
}

fn samples_after(n: i64) -> u64 {
    let per_gpu = n + (n - LATE_BY).max(0);
    (per_gpu as u64) * (METRICS.len() * GPUS.len()) as u64
}

#[test]
fn reads_during_checkpoints_always_see_a_whole_prefix_of_the_writes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || StoreOptions {
        bucket_width: Some(Duration::from_millis(WIDTH_MS as u64)),
        max_head_samples: 500,
        ..StoreOptions::default()
    };
    let store = Arc::new(Store::open(dir.path(), opts()).expect("open"));
    // Rounds written for every GPU (a reader's lower bound) and rounds started (its upper one).
    let done = Arc::new(AtomicU64::new(0));
    let started = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicU64::new(0));

    let checkpointer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Acquire) {
                store.checkpoint().expect("checkpoint");
                n += 1;
            }
            n
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|i| {
            let (store, stop, done, started, checks) = (
                store.clone(),
                stop.clone(),
                done.clone(),
                started.clone(),
                checks.clone(),
            );
            std::thread::spawn(move || {
                let mut g = i;
                while !stop.load(Ordering::Acquire) {
                    g = (g + 1) % GPUS.len();
                    let lo = done.load(Ordering::Acquire) as i64;
                    let count_before = store.samples_stored();
                    let answer = read(&store, g);
                    let count_after = store.samples_stored();
                    let hi = started.load(Ordering::Acquire) as i64;
                    let shown = rounds_shown(g, &answer, lo, hi);
                    assert!(
                        shown.is_some(),
                        "GPU {g}: {} points are not the model after {lo}..={hi} rounds",
                        answer.len()
                    );
                    assert!(count_before <= count_after, "the distinct count went down");
                    assert!(
                        count_before >= samples_after(lo),
                        "count below what was written"
                    );
                    assert!(
                        count_after <= samples_after(hi),
                        "count above what was written"
                    );
                    checks.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    for r in 0..ROUNDS {
        started.store(r as u64 + 1, Ordering::Release);
        for g in 0..GPUS.len() {
            store.write(&round(g, r)).expect("write");
        }
        done.store(r as u64 + 1, Ordering::Release);
    }
    stop.store(true, Ordering::Release);
    for r in readers {
        r.join().expect("a reader failed");
    }
    let checkpoints = checkpointer.join().expect("the checkpointer failed");
    assert!(checks.load(Ordering::Relaxed) > 0, "no read was checked");
    assert!(checkpoints > 1, "checkpoints ran meanwhile");
    for g in 0..GPUS.len() {
        assert_eq!(read(&store, g), expected(g, ROUNDS));
    }
    assert_eq!(store.samples_stored(), samples_after(ROUNDS));

    store.persist().expect("persist");
    drop(store);
    let store = Store::open(dir.path(), opts()).expect("reopen");
    for g in 0..GPUS.len() {
        assert_eq!(read(&store, g), expected(g, ROUNDS), "after a restart");
    }
    assert_eq!(store.samples_stored(), samples_after(ROUNDS));
}

/// Batches of many slices while checkpoints freeze between the slices: the distinct count and
/// every GPU's digest stay exact, and everything is there once the writes end.
#[test]
fn batches_longer_than_a_slice_stay_exact_when_checkpoints_freeze_between_slices() {
    use telemetry_storage::{metric_hash, sample_hash, Digest, WRITE_SLICE_SAMPLES};
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(Store::open(dir.path(), StoreOptions::default()).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let checkpointer = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Acquire) {
                store.checkpoint().expect("checkpoint");
            }
        })
    };
    // 64 GPUs × 3 metrics per batch, 20 timestamps: 3,840 samples, several slices each.
    let per_batch = 64 * METRICS.len() * 20;
    assert!(per_batch > 3 * WRITE_SLICE_SAMPLES);
    let gpus: Vec<GpuInfo> = (0..64).map(|g| gpu(&format!("GPU-big-{g}"))).collect();
    let batches = 40i64;
    for b in 0..batches {
        let mut builder = BatchBuilder::default();
        for t in 0..20 {
            for (g, info) in gpus.iter().enumerate() {
                for (m, name) in METRICS.iter().enumerate() {
                    let ts = b * 20 + t;
                    builder.push(info, name, ts, value(g, m, ts));
                }
            }
        }
        // Every other batch is written twice: the second time nothing is new.
        let batch = builder.take();
        let first = store.write(&batch).expect("write");
        assert_eq!(first.new_samples, per_batch as u64);
        if b % 2 == 0 {
            assert_eq!(store.write(&batch).expect("rewrite").new_samples, 0);
        }
    }
    stop.store(true, Ordering::Release);
    checkpointer.join().expect("the checkpointer failed");
    let total = batches as u64 * per_batch as u64;
    assert_eq!(store.samples_stored(), total);
    for d in store.gpu_digests() {
        let mut want = Digest::default();
        for ts in 0..batches * 20 {
            for name in METRICS {
                want.add(sample_hash(metric_hash(name), ts));
            }
        }
        assert_eq!(d.digest, want, "digest of {}", d.uuid);
    }
    store.persist().expect("persist");
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(store.samples_stored(), total);
}
