//! The store against a `BTreeMap` model: random interleavings of writes (duplicates, disorder,
//! late samples into sealed buckets), checkpoints, clean restarts, crashes and retention.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;
use telemetry_storage::{
    metric_hash, sample_hash, BatchBuilder, Digest, GpuDigest, GpuInfo, Page, RangeCursor,
    RangeQuery, Store, StoreOptions,
};

fn gpu(uuid: &str, host: &str) -> GpuInfo {
    GpuInfo {
        uuid: uuid.into(),
        hostname: host.into(),
        gpu_index: 0,
        device: "nvidia0".into(),
        model: "NVIDIA H100 80GB HBM3".into(),
        container: None,
        pod: None,
        namespace: None,
        instance: None,
        job: None,
        driver_version: None,
        pci_bus_id: None,
        hpc_job: None,
    }
}

const METRICS: [&str; 3] = [
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_POWER_USAGE",
];
const GPUS: [&str; 2] = ["GPU-a", "GPU-b"];
/// A small bucket width, so a test crosses many buckets, seals and tiers.
const WIDTH_MS: i64 = 1000;

/// (gpu, timestamp, metric) → value.
type Model = BTreeMap<(String, i64, String), f64>;

fn options(max_head_samples: usize) -> StoreOptions {
    StoreOptions {
        bucket_width: Some(Duration::from_millis(WIDTH_MS as u64)),
        max_head_samples,
        ..StoreOptions::default()
    }
}

fn read_all(
    store: &Store,
    uuid: &str,
    metrics: &[String],
    (start, end): (i64, i64),
    limit: usize,
) -> Vec<(i64, String, f64)> {
    let mut out = Vec::new();
    let mut cursor: Option<RangeCursor> = None;
    loop {
        let q = RangeQuery {
            uuid,
            metrics,
            start,
            end,
            limit,
            cursor: cursor.clone(),
        };
        let Page {
            metrics,
            points,
            next,
        } = store.range(&q).expect("range").expect("known gpu");
        assert!(points.len() <= limit);
        out.extend(points.into_iter().map(|p| {
            (
                p.timestamp,
                metrics[usize::from(p.metric)].to_string(),
                p.value,
            )
        }));
        match next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn expected(
    model: &Model,
    uuid: &str,
    metrics: &[String],
    (start, end): (i64, i64),
) -> Vec<(i64, String, f64)> {
    model
        .iter()
        .filter(|((g, t, m), _)| {
            g == uuid && *t >= start && *t <= end && (metrics.is_empty() || metrics.contains(m))
        })
        .map(|((_, t, m), v)| (*t, m.clone(), *v))
        .collect()
}

fn check(store: &Store, model: &Model, limit: usize, window: (i64, i64)) {
    assert_eq!(store.samples_stored(), model.len() as u64, "distinct count");
    for GpuDigest {
        uuid,
        digest: d,
        newest,
    } in store.gpu_digests()
    {
        let mut want = Digest::default();
        for (_, t, m) in model.keys().filter(|(g, _, _)| *g == uuid) {
            want.add(sample_hash(metric_hash(m), *t));
        }
        assert_eq!(d, want, "digest of {uuid}");
        let last = model
            .keys()
            .filter(|(g, _, _)| *g == uuid)
            .map(|k| k.1)
            .max();
        assert_eq!(newest, last, "newest of {uuid}");
        let spans = store
            .span_digests(&uuid, 1000, i64::MAX)
            .expect("span digests")
            .expect("known");
        assert_eq!(
            spans.iter().map(|s| s.digest.count).sum::<u64>(),
            want.count
        );
    }
    for uuid in GPUS {
        let in_model = model.keys().any(|(g, _, _)| g == uuid);
        let Some(detail) = store.gpu(uuid) else {
            assert!(!in_model, "{uuid} missing");
            continue;
        };
        let times: Vec<i64> = model
            .keys()
            .filter(|(g, _, _)| g == uuid)
            .map(|k| k.1)
            .collect();
        assert_eq!(detail.first_timestamp, times.iter().min().copied());
        assert_eq!(detail.last_timestamp, times.iter().max().copied());
        let all = (i64::MIN / 2, i64::MAX / 2);
        assert_eq!(
            read_all(store, uuid, &[], all, limit),
            expected(model, uuid, &[], all)
        );
        assert_eq!(
            read_all(store, uuid, &[], window, limit),
            expected(model, uuid, &[], window)
        );
        let one = [METRICS[1].to_string()];
        assert_eq!(
            read_all(store, uuid, &one, window, limit),
            expected(model, uuid, &one, window)
        );
        // Whole series: the same samples per metric, and a bound that stops the read.
        let whole = store
            .series_window(uuid, &[], window, usize::MAX)
            .expect("series window")
            .expect("known GPU");
        let mut flat: Vec<(i64, String, f64)> = whole
            .series
            .iter()
            .flat_map(|(m, pts)| pts.iter().map(move |&(t, v)| (t, m.to_string(), v)))
            .collect();
        flat.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        assert_eq!(flat, expected(model, uuid, &[], window));
        assert_eq!(whole.samples, flat.len());
        if flat.len() > 1 {
            let cut = store
                .series_window(uuid, &[], window, 0)
                .expect("series window")
                .expect("known GPU");
            assert!(
                cut.samples > 0,
                "a bound of 0 stops after the first bucket read"
            );
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Samples at `clock + offset`: mostly new, some late, some duplicates.
    Write(Vec<(usize, usize, i64, u8)>),
    Checkpoint,
    /// Checkpoint, close, reopen.
    Restart,
    /// Close without a checkpoint: the heads are lost, as after kill -9.
    Crash,
    /// Drop buckets that end at or before `clock - age`.
    Expire(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => prop::collection::vec((0..2usize, 0..3usize, -2500i64..400, 0u8..4), 1..30).prop_map(Op::Write),
        2 => Just(Op::Checkpoint),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => (0i64..6000).prop_map(Op::Expire),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn behaves_like_a_btreemap(
        ops in prop::collection::vec(op(), 1..40),
        max_head in prop_oneof![Just(1_000_000usize), 5..40usize],
        limit in 1..17usize,
        window in (-3000i64..12_000, 0i64..6000),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), options(max_head)).expect("open");
        let mut model = Model::new();
        let mut durable = Model::new();
        let mut clock = 0i64;
        for op in ops {
            match op {
                Op::Write(samples) => {
                    let before = store.durable_generation();
                    let mut b = BatchBuilder::default();
                    for (g, m, offset, v) in samples {
                        let ts = clock + offset;
                        let value = f64::from(v) * 0.5 + ts as f64 / 1000.0;
                        b.push(&gpu(GPUS[g], "host"), METRICS[m], ts, value);
                        model.insert((GPUS[g].to_string(), ts, METRICS[m].to_string()), value);
                    }
                    store.write(&b.take()).expect("write");
                    if store.durable_generation() != before {
                        // The write filled the heads and checkpointed everything so far.
                        durable = model.clone();
                    }
                    clock += 250;
                }
                Op::Checkpoint => {
                    store.checkpoint().expect("checkpoint");
                    durable = model.clone();
                }
                Op::Restart => {
                    store.persist().expect("persist");
                    durable = model.clone();
                    drop(store);
                    store = Store::open(dir.path(), options(max_head)).expect("reopen");
                }
                Op::Crash => {
                    drop(store);
                    store = Store::open(dir.path(), options(max_head)).expect("reopen after crash");
                    model = durable.clone();
                }
                Op::Expire(age) => {
                    let cutoff = clock - age;
                    store.expire(cutoff).expect("expire");
                    model.retain(|(_, t, _), _| t.div_euclid(WIDTH_MS) * WIDTH_MS + WIDTH_MS > cutoff);
                    durable = model.clone();
                }
            }
            check(&store, &model, limit, (window.0, window.0 + window.1));
        }
    }
}

#[test]
fn metadata_once_per_gpu_and_detail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let mut b = BatchBuilder::default();
    b.push(&gpu("GPU-b", "h2"), "M1", 10, 1.0);
    b.push(&gpu("GPU-a", "h1"), "M2", 20, 2.0);
    b.push(&gpu("GPU-a", "h1"), "M1", 5, 3.0);
    store.write(&b.take()).expect("write");
    let gpus = store.gpus();
    assert_eq!(
        gpus.iter().map(|g| g.uuid.as_str()).collect::<Vec<_>>(),
        ["GPU-a", "GPU-b"]
    );
    let d = store.gpu("GPU-a").expect("known");
    assert_eq!(d.metrics, ["M1", "M2"]);
    assert_eq!((d.first_timestamp, d.last_timestamp), (Some(5), Some(20)));
    assert!(store.gpu("GPU-zzz").is_none());
    assert_eq!(store.metrics(), ["M1", "M2"]);
    // A hostname change rewrites the GPU's attributes, it does not add a GPU.
    let mut b = BatchBuilder::default();
    b.push(&gpu("GPU-a", "h9"), "M1", 30, 1.0);
    store.write(&b.take()).expect("write");
    assert_eq!(store.gpus().len(), 2);
    assert_eq!(store.gpu("GPU-a").expect("known").info.hostname, "h9");
    // The catalog is persisted with the checkpoint.
    store.persist().expect("persist");
    drop(store);
    let store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(store.gpu("GPU-a").expect("known").info.hostname, "h9");
    assert_eq!(store.samples_stored(), 4);
}

#[test]
fn bucket_width_is_fixed_once_created() {
    let dir = tempfile::tempdir().expect("tempdir");
    drop(Store::open(dir.path(), options(100)).expect("open"));
    let err = Store::open(
        dir.path(),
        StoreOptions {
            bucket_width: Some(Duration::from_secs(60)),
            ..StoreOptions::default()
        },
    )
    .err()
    .expect("a different width is refused");
    assert!(err.to_string().contains("bucket width"), "{err}");
    // Without an explicit width the stored one is used.
    let store = Store::open(dir.path(), StoreOptions::default()).expect("stored width");
    assert_eq!(store.bucket_width_ms(), WIDTH_MS);
}

#[test]
fn retention_drops_whole_buckets_and_gives_disk_space_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = || StoreOptions {
        bucket_width: Some(Duration::from_secs(60)),
        ..StoreOptions::default()
    };
    let store = Store::open(dir.path(), opts()).expect("open");
    let t0 = 1_752_871_320_000i64; // a minute boundary
    let mut n = 0u64;
    for second in 0..3600i64 {
        let mut b = BatchBuilder::default();
        for g in 0..20u32 {
            let info = gpu(&format!("GPU-{g}"), "h");
            for (m, metric) in METRICS.iter().enumerate() {
                let noise = (second * 7919 + i64::from(g) * 104_729 + m as i64 * 31) % 100_000;
                b.push(&info, metric, t0 + second * 1000, noise as f64 / 1000.0);
                n += 1;
            }
        }
        store.write(&b.take()).expect("write");
    }
    store.checkpoint().expect("checkpoint");
    store.flush_tables().expect("flush");
    let full = store.table_bytes();
    assert_eq!(store.samples_stored(), n);

    // Buckets ending at or before the cutoff go; the bucket holding it stays whole.
    let cutoff = t0 + 30 * 60_000 + 30_000;
    store.expire(cutoff).expect("expire");
    assert_eq!(store.samples_stored(), n / 2);
    let d = store.gpu("GPU-3").expect("known");
    assert_eq!(d.first_timestamp, Some(t0 + 30 * 60_000));
    assert_eq!(d.last_timestamp, Some(t0 + 3_599_000));
    store.flush_tables().expect("flush");
    let half = store.table_bytes();
    assert!(half < full * 7 / 10, "{half} bytes left of {full}");

    let by_gpu = store.samples_by_gpu();
    assert_eq!(by_gpu.len(), 20);
    assert!(by_gpu.iter().all(|(_, c)| *c == n / 40), "{by_gpu:?}");
    store.expire(t0 + 7_200_000).expect("expire all");
    assert_eq!(store.samples_stored(), 0);
    let d = store.gpu("GPU-3").expect("GPU metadata stays");
    assert!(d.metrics.is_empty() && d.first_timestamp.is_none());
    assert!(store.metrics().is_empty());
    drop(store);
    let store = Store::open(dir.path(), opts()).expect("reopen");
    assert_eq!(store.samples_stored(), 0);
    store.flush_tables().expect("flush");
    assert!(
        store.table_bytes() < full / 10,
        "{} bytes left of {full}",
        store.table_bytes()
    );
}
