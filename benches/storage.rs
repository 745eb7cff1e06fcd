//! The storage engine: ingest (writes plus the checkpoints they cause), range reads of one GPU
//! (5 min and 1 h, all 10 metrics), GPU listing, and bytes per sample on disk after a flush.
//! Run with `cargo bench -p telemetry-benches --bench storage`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use telemetry_benches::DataSet;
use telemetry_storage::{RangeQuery, SampleBatch, Store, StoreOptions};

fn ingest(batches: &[SampleBatch]) -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    for b in batches {
        store.write(b).expect("write");
    }
    store.checkpoint().expect("checkpoint");
    (dir, store)
}

fn read(store: &Store, uuid: &str, start: i64, end: i64) -> usize {
    let q = RangeQuery {
        uuid,
        metrics: &[],
        start,
        end,
        limit: 1 << 20,
        cursor: None,
    };
    store.range(&q).expect("range").expect("known").points.len()
}

fn bench_set(c: &mut Criterion, label: &str, set: &DataSet) {
    let batches = set.batches();
    let mut g = c.benchmark_group(format!("storage/{label}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(set.len() as u64));
    g.bench_function("ingest_1h", |b| {
        b.iter_batched(|| (), |()| ingest(&batches), BatchSize::PerIteration)
    });

    let (_dir, store) = ingest(&batches);
    assert_eq!(store.samples_stored(), set.len() as u64);
    store.flush_tables().expect("flush");
    let flushed = store.table_bytes();
    store.compact().expect("compact");
    let compacted = store.table_bytes();
    let n = set.len() as f64;
    eprintln!(
        "\n{}: {} samples, on disk after a flush {flushed} bytes = {:.3} bytes/sample, \
         after a major compaction {compacted} bytes = {:.3} bytes/sample\n",
        set.name,
        set.len(),
        flushed as f64 / n,
        compacted as f64 / n
    );

    let uuid = set.first_uuid();
    let t0 = set.rows.first().map_or(0, |r| r.timestamp);
    let hour = read(&store, &uuid, t0, t0 + 3_600_000 - 1);
    let five = read(&store, &uuid, t0 + 1_800_000, t0 + 1_800_000 + 300_000 - 1);
    eprintln!("one GPU: {hour} points in 1 h, {five} points in 5 min");
    g.throughput(Throughput::Elements(hour as u64));
    g.bench_function("range_one_gpu_1h", |b| {
        b.iter(|| read(&store, &uuid, t0, t0 + 3_600_000 - 1))
    });
    g.throughput(Throughput::Elements(five as u64));
    g.bench_function("range_one_gpu_5min", |b| {
        b.iter(|| read(&store, &uuid, t0 + 1_800_000, t0 + 1_800_000 + 300_000 - 1))
    });
    // The newest 5 minutes sit at the end of their bucket: the worst case for decoding.
    let t_end = set.rows.last().map_or(0, |r| r.timestamp);
    g.bench_function("range_one_gpu_latest_5min", |b| {
        b.iter(|| read(&store, &uuid, t_end - 300_000 + 1, t_end))
    });
    let gpus = store.gpus().len();
    g.throughput(Throughput::Elements(gpus as u64));
    g.bench_function("list_gpus", |b| b.iter(|| store.gpus().len()));
    g.finish();
}

fn storage(c: &mut Criterion) {
    bench_set(c, "gen_csv", &DataSet::generated(31, 3600));
    match DataSet::reference_replayed(3600) {
        Some(set) => bench_set(c, "reference", &set),
        None => eprintln!("reference CSV absent; skipping its storage benchmark"),
    }
}

criterion_group!(benches, storage);
criterion_main!(benches);
