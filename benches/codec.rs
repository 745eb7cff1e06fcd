//! The chunk codec: encode and decode one hour of every series, and the bytes per sample of each
//! value coding (XOR, scaled integers, and the encoder's choice), overall and per metric.
//! Run with `cargo bench -p telemetry-benches --bench codec`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test and benchmark code may panic

use std::collections::BTreeMap;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use telemetry_benches::DataSet;
use telemetry_storage::codec::{decimals, decode_into, encode, encode_with, Coding, Sample};

/// Prints bytes per sample by coding; the choice must never be worse than either coding alone.
fn report(name: &str, series: &[(String, Vec<Sample>)]) {
    let mut per_metric: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for (metric, s) in series {
        let xor = encode_with(s, 0, Coding::Xor).map_or(0, |b| b.len());
        let scaled = decimals(s)
            .and_then(|d| encode_with(s, 0, Coding::Scaled(d)))
            .map_or(xor, |b| b.len());
        let best = encode(s, 0).len();
        assert!(best <= xor.min(scaled));
        let e = per_metric.entry(metric).or_default();
        e[0] += s.len();
        e[1] += xor;
        e[2] += scaled;
        e[3] += best;
    }
    eprintln!("\n{name}: bytes/sample in one chunk per series (XOR | scaled integers | chosen)");
    let mut total = [0usize; 4];
    for (metric, e) in &per_metric {
        let n = e[0] as f64;
        eprintln!(
            "  {metric:<28} {:>6.3} | {:>6.3} | {:>6.3}",
            e[1] as f64 / n,
            e[2] as f64 / n,
            e[3] as f64 / n
        );
        for i in 0..4 {
            total[i] += e[i];
        }
    }
    let n = total[0] as f64;
    eprintln!(
        "  {:<28} {:>6.3} | {:>6.3} | {:>6.3}   ({} samples)\n",
        "all",
        total[1] as f64 / n,
        total[2] as f64 / n,
        total[3] as f64 / n,
        total[0]
    );
}

fn bench_set(c: &mut Criterion, label: &str, set: &DataSet) {
    let series = set.series();
    report(&set.name, &series);
    let chunks: Vec<Vec<u8>> = series.iter().map(|(_, s)| encode(s, 0)).collect();
    let mut g = c.benchmark_group(format!("codec/{label}"));
    g.sample_size(10);
    g.throughput(Throughput::Elements(set.len() as u64));
    g.bench_function("encode_1h_every_series", |b| {
        b.iter(|| {
            series
                .iter()
                .map(|(_, s)| encode(s, 0).len())
                .sum::<usize>()
        })
    });
    let mut out = Vec::with_capacity(4096);
    g.bench_function("decode_1h_every_series", |b| {
        b.iter(|| {
            let mut n = 0;
            for c in &chunks {
                out.clear();
                decode_into(c, &mut out).expect("decodes");
                n += out.len();
            }
            n
        })
    });
    g.finish();
}

fn codec(c: &mut Criterion) {
    bench_set(c, "gen_csv", &DataSet::generated(31, 3600));
    match DataSet::reference_replayed(3600) {
        Some(set) => bench_set(c, "reference", &set),
        None => eprintln!("reference CSV absent; skipping its codec benchmark"),
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);
