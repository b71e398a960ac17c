//! Pipeline throughput and the cost of moving samples between threads, for the reference model
//! (8 channels, window 16, hidden 32, code 8, hop 1: one window scored per sample).
//!
//! - `score/push`: one `DynDetector::push` per sample, on one thread (the scoring cost).
//! - `transport/batch_N`: the whole pipeline with streams no model matches, so every sample goes
//!   source -> router -> queue -> worker and is counted but not scored (the transport cost).
//! - `pipeline/workers_2`: the whole pipeline scoring 64 streams on 2 workers.
//!
//! Run with `cargo bench -p sensorae-host --bench pipeline`.

use core::{hint::black_box, time::Duration};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sensorae::{DynDetector, encode_to_vec, testing};
use sensorae_host::pipeline::{Builder, Emit, IterSource, MemorySink, ModelMap};

const STREAMS: usize = 64;
const SAMPLES: usize = 200_000;

fn reference_model() -> Vec<u8> {
    let mut header = testing::header(8, 16, 32, 8);
    header.threshold.value = 10.0;
    let channels: Vec<_> = (0..8).map(testing::channel).collect();
    let params: Vec<f32> = (0..header.param_count()).map(testing::param).collect();
    encode_to_vec(&header, &channels, &params).unwrap_or_default()
}

/// Seeded samples for `STREAMS` interleaved streams named `prefix-k`.
fn samples(prefix: &str, n: usize) -> Vec<(String, Vec<f32>)> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..n)
        .map(|i| {
            let v = (0..8).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            (format!("{prefix}-{}", i % STREAMS), v)
        })
        .collect()
}

fn models() -> ModelMap {
    let mut m = ModelMap::new();
    if m.add_bytes("pump-*", "reference", &reference_model())
        .is_err()
    {
        eprintln!("reference model does not load");
    }
    m
}

fn score(c: &mut Criterion) {
    let mut detector = match DynDetector::from_bytes(&reference_model()) {
        Ok(d) => d,
        Err(e) => return eprintln!("{e}"),
    };
    let data = samples("pump", 4096);
    let mut g = c.benchmark_group("score");
    g.throughput(Throughput::Elements(1));
    let mut i = 0;
    g.bench_function("push", |b| {
        b.iter(|| {
            i = (i + 1) % data.len();
            black_box(detector.push(black_box(&data[i].1)))
        })
    });
    g.finish();
}

fn run(prefix: &str, batch: usize, workers: usize, c: &mut Criterion, group: &str, name: &str) {
    let mut g = c.benchmark_group(group);
    g.throughput(Throughput::Elements(SAMPLES as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(4));
    g.bench_function(name, |b| {
        b.iter_batched(
            || samples(prefix, SAMPLES),
            |data| {
                let report = Builder::new(models())
                    .workers(workers)
                    .batch(batch)
                    .emit(Emit::Alarms)
                    .source(IterSource::new(data))
                    .sink(MemorySink::new())
                    .run();
                black_box(report.map(|r| r.metrics.samples_in).unwrap_or(0))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn transport(c: &mut Criterion) {
    for batch in [1, 16, 64, 256] {
        run("fan", batch, 1, c, "transport", &format!("batch_{batch}"));
    }
}

fn pipeline(c: &mut Criterion) {
    run("pump", 64, 2, c, "pipeline", "workers_2");
}

criterion_group!(benches, score, transport, pipeline);
criterion_main!(benches);
