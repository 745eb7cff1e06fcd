//! The store against a `BTreeMap` model: idempotence, ordering, pagination, restarts.

use std::collections::BTreeMap;

use proptest::prelude::*;
use telemetry_storage::{
    BatchBuilder, GpuInfo, Page, RangeCursor, RangeQuery, Store, StoreOptions,
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
    }
}

const METRICS: [&str; 3] = [
    "DCGM_FI_DEV_GPU_TEMP",
    "DCGM_FI_DEV_GPU_UTIL",
    "DCGM_FI_DEV_POWER_USAGE",
];
const GPUS: [&str; 2] = ["GPU-a", "GPU-b"];

type Model = BTreeMap<(String, i64, String), f64>;

fn read_all(
    store: &Store,
    uuid: &str,
    start: i64,
    end: i64,
    limit: usize,
) -> Vec<(i64, String, f64)> {
    let mut out = Vec::new();
    let mut cursor: Option<RangeCursor> = None;
    loop {
        let q = RangeQuery {
            uuid,
            metrics: &[],
            start,
            end,
            limit,
            cursor: cursor.clone(),
        };
        let Page { points, next } = store.range(&q).expect("range").expect("known gpu");
        assert!(points.len() <= limit);
        out.extend(points.into_iter().map(|p| (p.timestamp, p.metric, p.value)));
        match next {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn expected(model: &Model, uuid: &str, start: i64, end: i64) -> Vec<(i64, String, f64)> {
    model
        .iter()
        .filter(|((g, t, _), _)| g == uuid && *t >= start && *t <= end)
        .map(|((_, t, m), v)| (*t, m.clone(), *v))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn behaves_like_a_btreemap(
        batches in prop::collection::vec(
            prop::collection::vec((0..2usize, 0..3usize, -5_000_000i64..9_000_000, -1e6f64..1e6), 1..40),
            1..6),
        reopen_after in 0..6usize,
        limit in 1..17usize,
        window in (-6_000_000i64..9_000_000, 0i64..8_000_000),
    ) {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        let mut model = Model::new();
        for (i, batch) in batches.iter().enumerate() {
            let mut b = BatchBuilder::default();
            for &(g, m, t, v) in batch {
                b.push(&gpu(GPUS[g], "host"), METRICS[m], t, v);
                model.insert((GPUS[g].to_string(), t, METRICS[m].to_string()), v);
            }
            store.write(&b.take()).expect("write");
            if i == reopen_after {
                store.persist().expect("persist");
                drop(store);
                store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
            }
        }
        prop_assert_eq!(store.samples_stored(), model.len() as u64);
        let (start, len) = window;
        for uuid in GPUS {
            if store.gpu(uuid).is_none() {
                prop_assert!(!model.keys().any(|(g, _, _)| g == uuid));
                continue;
            }
            prop_assert_eq!(read_all(&store, uuid, i64::MIN / 2, i64::MAX / 2, limit), expected(&model, uuid, i64::MIN, i64::MAX));
            prop_assert_eq!(read_all(&store, uuid, start, start + len, limit), expected(&model, uuid, start, start + len));
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
    // Only listed metrics are read.
    let q = RangeQuery {
        uuid: "GPU-a",
        metrics: &["M2".to_string()],
        start: 0,
        end: 100,
        limit: 10,
        cursor: None,
    };
    let page = store.range(&q).expect("range").expect("known");
    assert_eq!(page.points.len(), 1);
    assert_eq!(page.points[0].metric, "M2");
    // A hostname change rewrites the GPU's attributes, it does not add a GPU.
    let mut b = BatchBuilder::default();
    b.push(&gpu("GPU-a", "h9"), "M1", 30, 1.0);
    store.write(&b.take()).expect("write");
    assert_eq!(store.gpus().len(), 2);
    assert_eq!(store.gpu("GPU-a").expect("known").info.hostname, "h9");
}
