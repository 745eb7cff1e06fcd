//! The streamer's hot paths: CSV row parsing and batch encode/decode (the broker's payload).
//! Run with `cargo bench -p telemetry-benches --bench streamer`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemetry_actors::dcgm::{open_reader, RowParser};
use telemetry_benches::SHARED_CSV;
use telemetry_storage::{BatchBuilder, GpuInfo, SampleBatch};

fn gpu(i: u32) -> GpuInfo {
    GpuInfo {
        uuid: format!("GPU-{i:08x}-0000-0000-0000-000000000000"),
        hostname: format!("host-{}", i / 8),
        gpu_index: i % 8,
        device: format!("nvidia{}", i % 8),
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

fn batch(t0: i64) -> SampleBatch {
    let mut b = BatchBuilder::default();
    for g in 0..40 {
        let info = gpu(g);
        for m in 0..10 {
            for s in 0..10 {
                b.push(
                    &info,
                    &format!("METRIC_{m}"),
                    t0 + s * 1000,
                    f64::from(g + m),
                );
            }
        }
    }
    b.take()
}

fn parse(c: &mut Criterion) {
    let Ok(text) = std::fs::read(SHARED_CSV) else {
        eprintln!("reference CSV absent; skipping the parse benchmark");
        return;
    };
    let mut g = c.benchmark_group("csv");
    g.throughput(Throughput::Elements(2470));
    g.bench_function("parse_reference_file", |b| {
        b.iter(|| {
            let (mut rdr, cols) = open_reader(text.as_slice()).expect("header");
            let mut p = RowParser::new(cols);
            let mut rec = csv::StringRecord::new();
            let mut n = 0;
            while rdr.read_record(&mut rec).expect("csv") {
                n += usize::from(p.parse(&rec).is_ok());
            }
            n
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    let b = batch(0);
    let bytes = b.encode();
    let mut g = c.benchmark_group("batch");
    g.throughput(Throughput::Elements(b.len() as u64));
    g.bench_function("encode_4000", |x| x.iter(|| b.encode()));
    g.bench_function("decode_4000", |x| {
        x.iter(|| SampleBatch::decode(&bytes).expect("decode"))
    });
    g.finish();
}

criterion_group!(benches, parse, codec);
criterion_main!(benches);
