//! Workload observations: what a store holds depends only on the rows written, not on their
//! order, batching, replays, checkpoints or restarts.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;

use proptest::prelude::*;
use telemetry_storage::{
    BatchBuilder, GpuInfo, RangeQuery, SampleBatch, Store, StoreOptions, Workload, WORKLOAD_METRIC,
};

const GPUS: [&str; 3] = ["GPU-a", "GPU-b", "GPU-c"];
const PODS: [&str; 3] = ["train-0", "train-1", "infer"];

/// GPU `g` as a source reads it at a time the truth gives workload `w` (0: none).
fn gpu(g: usize, w: usize) -> GpuInfo {
    let pod = w.checked_sub(1).map(|i| PODS[i].to_string());
    GpuInfo {
        uuid: GPUS[g].into(),
        hostname: "h".into(),
        namespace: pod.as_ref().map(|_| "ml".to_string()),
        hpc_job: (w == 3).then(|| "job-7".to_string()),
        pod,
        ..GpuInfo::default()
    }
}

fn workload(w: usize) -> Option<Workload> {
    Workload::of(&gpu(0, w))
}

/// The observations a store holds: (gpu, timestamp) → workload.
fn observations(store: &Store) -> BTreeMap<(usize, i64), Workload> {
    let mut out = BTreeMap::new();
    for (g, uuid) in GPUS.iter().enumerate() {
        let metrics = [WORKLOAD_METRIC.to_string()];
        let q = RangeQuery {
            uuid,
            metrics: &metrics,
            start: i64::MIN / 2,
            end: i64::MAX / 2,
            limit: 1_000_000,
            cursor: None,
        };
        let Some(page) = store.range(&q).expect("range") else {
            continue;
        };
        let ids: Vec<u64> = page.points.iter().map(|p| p.value as u64).collect();
        let names: BTreeMap<u64, Workload> = store
            .workloads(&ids)
            .expect("dictionary")
            .into_iter()
            .collect();
        for p in page.points {
            let w = names
                .get(&(p.value as u64))
                .expect("every id is in the dictionary");
            out.insert((g, p.timestamp), w.clone());
        }
    }
    out
}

/// Rows: (gpu, timestamp, metric); the truth: each (gpu, timestamp) has one workload.
fn batches(
    rows: &[(usize, i64, usize)],
    truth: &BTreeMap<(usize, i64), usize>,
    per: usize,
) -> Vec<SampleBatch> {
    rows.chunks(per.max(1))
        .map(|chunk| {
            let mut b = BatchBuilder::default();
            for &(g, ts, m) in chunk {
                let w = truth.get(&(g, ts)).copied().unwrap_or(0);
                b.push(&gpu(g, w), ["T", "U"][m], ts, ts as f64);
            }
            b.take()
        })
        .collect()
}

fn expected(
    rows: &[(usize, i64, usize)],
    truth: &BTreeMap<(usize, i64), usize>,
) -> BTreeMap<(usize, i64), Workload> {
    rows.iter()
        .filter_map(|&(g, ts, _)| {
            let w = workload(truth.get(&(g, ts)).copied().unwrap_or(0))?;
            Some(((g, ts), w))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn observations_do_not_depend_on_order_batching_or_replays(
        truth in prop::collection::btree_map((0..3usize, 0..60i64), 0..4usize, 0..120),
        rows in prop::collection::vec((0..3usize, 0..60i64, 0..2usize), 1..200),
        per in 1..40usize,
        shuffle in any::<u64>(),
        replays in prop::collection::vec(any::<prop::sample::Index>(), 0..5),
        checkpoint_every in 1..6usize,
    ) {
        let want = expected(&rows, &truth);
        // Store A: shuffled batches, some written twice, checkpoints and a restart on the way.
        let mut order = batches(&rows, &truth, per);
        let n = order.len();
        for r in &replays {
            order.push(order[r.index(n)].clone());
        }
        let mut s = shuffle;
        for i in (1..order.len()).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            order.swap(i, (s >> 33) as usize % (i + 1));
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut store = Store::open(dir.path(), StoreOptions::default()).expect("open");
        for (i, b) in order.iter().enumerate() {
            let b = SampleBatch::decode(&b.encode()).expect("a built batch decodes");
            store.write(&b).expect("write");
            if i % checkpoint_every == 0 {
                store.checkpoint().expect("checkpoint");
            }
            if i == order.len() / 2 {
                store.persist().expect("persist");
                drop(store);
                store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
            }
        }
        prop_assert_eq!(observations(&store), want.clone());
        // Store B: the rows in time order, once.
        let mut sorted = rows.clone();
        sorted.sort_by_key(|&(g, ts, m)| (ts, g, m));
        let other = tempfile::tempdir().expect("tempdir");
        let b_store = Store::open(other.path(), StoreOptions::default()).expect("open");
        for b in batches(&sorted, &truth, 1000) {
            b_store.write(&b).expect("write");
        }
        prop_assert_eq!(observations(&b_store), want);
        // Stored GPUs carry no workload, and listings leave the observations out.
        for g in store.gpus() {
            prop_assert_eq!(Workload::of(&g), None);
        }
        prop_assert!(!store.metrics().iter().any(|m| m == WORKLOAD_METRIC));
    }
}

#[test]
fn a_row_keeps_the_workload_it_was_read_with_inside_one_batch() {
    let mut b = BatchBuilder::default();
    b.push(&gpu(0, 1), "T", 1, 1.0);
    b.push(&gpu(0, 1), "U", 1, 1.0);
    b.push(&gpu(0, 2), "T", 2, 2.0);
    b.push(&gpu(0, 0), "T", 3, 3.0);
    let batch = b.take();
    assert_eq!(batch.gpus.len(), 1, "one GPU, whatever it carried");
    assert_eq!(batch.workloads.len(), 2);
    assert_eq!(
        batch.samples.len(),
        4 + 2,
        "two rows observed, the idle one not"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    store.write(&batch).expect("write");
    let got = observations(&store);
    assert_eq!(got.get(&(0, 1)), workload(1).as_ref());
    assert_eq!(got.get(&(0, 2)), workload(2).as_ref());
    assert_eq!(got.get(&(0, 3)), None);
    assert_eq!(store.workload_count(), 2);
    let detail = store.gpu("GPU-a").expect("known");
    assert_eq!(detail.metrics, vec!["T".to_string(), "U".to_string()]);
}

#[test]
fn an_observation_naming_no_workload_of_its_batch_is_refused() {
    let mut b = BatchBuilder::default();
    b.push(&gpu(0, 0), WORKLOAD_METRIC, 1, 12345.0);
    let batch = b.take();
    let err = SampleBatch::decode(&batch.encode()).expect_err("refused");
    assert!(err.to_string().contains("names no workload"), "{err}");
    let mut b = BatchBuilder::default();
    let w = workload(2).expect("a workload");
    b.add_workload(&w);
    b.push(&gpu(0, 0), WORKLOAD_METRIC, 1, w.id() as f64);
    assert!(SampleBatch::decode(&b.take().encode()).is_ok());
}

#[test]
fn retention_forgets_a_workload_with_its_last_observation() {
    const HOUR: i64 = 3_600_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    let mut b = BatchBuilder::default();
    // Pod 1 on GPU a in hours 0 and 1; pod 2 from hour 1 to hour 9; replayed out of order.
    for t in [9 * HOUR, HOUR, 0] {
        b.push(&gpu(1, 2), "T", t, 1.0);
    }
    b.push(&gpu(0, 1), "T", HOUR + 5, 1.0);
    b.push(&gpu(0, 1), "T", 5, 1.0);
    store.write(&b.take()).expect("write");
    store.checkpoint().expect("checkpoint");
    let ids = [workload(1), workload(2)].map(|w| w.expect("a workload").id());
    assert_eq!(store.workloads(&ids).expect("read").len(), 2);
    store.expire(2 * HOUR).expect("expire");
    let left: Vec<Workload> = store
        .workloads(&ids)
        .expect("read")
        .into_iter()
        .map(|x| x.1)
        .collect();
    assert_eq!(
        left,
        vec![workload(2).expect("pod 2")],
        "pod 1 was last seen in hour 1"
    );
    assert_eq!(store.workload_count(), 1);
    store.persist().expect("persist");
    drop(store);
    store = Store::open(dir.path(), StoreOptions::default()).expect("reopen");
    assert_eq!(store.workloads(&ids).expect("read").len(), 1);
    store.expire(10 * HOUR).expect("expire");
    assert!(store.workloads(&ids).expect("read").is_empty());
    assert_eq!(store.workload_count(), 0);
}
