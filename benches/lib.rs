//! Criterion benchmarks of the core: scoring per window at four model sizes, windowing alone,
//! and model loading. Throughput is reported in multiply-adds of the dense layers per second,
//! so figures compare across sizes.

use core::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use sensorae::{Arch, Detector, DynDetector, Engine, Storage, encode_to_vec, param_count, testing};

/// A seeded model file of the given sizes (dense, tanh hidden layers, MSE).
fn model(c: u16, w: u16, h: u32, z: u32, hop: u16) -> Vec<u8> {
    let mut header = testing::header(c, w, h, z);
    header.window.hop = hop;
    header.threshold.value = 1e9;
    let channels: Vec<_> = (0..usize::from(c)).map(testing::channel).collect();
    let params: Vec<f32> = (0..header.param_count())
        .map(|i| 0.1 * testing::param(i))
        .collect();
    encode_to_vec(&header, &channels, &params).expect("valid bench model")
}

/// A deterministic sensor-like sample stream.
fn stream(c: usize, len: usize) -> Vec<Vec<f32>> {
    (0..len)
        .map(|t| {
            (0..c)
                .map(|k| ((t * 7 + k * 13) as f32 * 0.01).sin())
                .collect()
        })
        .collect()
}

const fn macs(n: usize, h: usize, z: usize) -> u64 {
    (2 * n * h + 2 * h * z) as u64
}

/// Times the push that completes (and scores) a window, on a warm detector.
fn bench_score<S: Storage>(
    c: &mut Criterion,
    name: &str,
    mut detector: Engine<S>,
    n: usize,
    h: usize,
    z: usize,
) {
    let channels = usize::from(detector.config().window.channels);
    let samples = stream(channels, 4096);
    for s in samples
        .iter()
        .take(usize::from(detector.config().window.length))
    {
        detector.push(s);
    }
    let mut group = c.benchmark_group("score_window");
    group.throughput(Throughput::Elements(macs(n, h, z)));
    let mut i = 0;
    group.bench_function(name, |b| {
        b.iter(|| {
            i = (i + 1) % samples.len();
            black_box(detector.push(black_box(&samples[i])))
        });
    });
    group.finish();
}

fn score_tiny(c: &mut Criterion) {
    type D = Detector<2, 8, 16, 8, 2, { param_count(Arch::Dense, 16, 8, 2) }>;
    let d = D::from_bytes(&model(2, 8, 8, 2, 1)).expect("tiny");
    bench_score(c, "tiny C2 W8 H8 Z2", d, 16, 8, 2);
}

fn score_reference(c: &mut Criterion) {
    type D = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
    let d = D::from_bytes(&model(8, 16, 32, 8, 1)).expect("reference");
    bench_score(c, "reference C8 W16 H32 Z8", d, 128, 32, 8);
    let d = DynDetector::from_bytes(&model(8, 16, 32, 8, 1)).expect("reference");
    bench_score(c, "reference C8 W16 H32 Z8 (dynamic)", d, 128, 32, 8);
}

fn score_skab(c: &mut Criterion) {
    type D = Detector<8, 16, 128, 64, 8, { param_count(Arch::Dense, 128, 64, 8) }>;
    let d = D::from_bytes(&model(8, 16, 64, 8, 1)).expect("skab");
    bench_score(c, "skab C8 W16 H64 Z8", d, 128, 64, 8);
}

fn score_mlperf(c: &mut Criterion) {
    // MLPerf Tiny's anomaly-detection autoencoder input width (640 = 8 channels x 80 samples).
    let d = DynDetector::from_bytes(&model(8, 80, 128, 8, 1)).expect("mlperf");
    bench_score(c, "mlperf-tiny N640 H128 Z8", d, 640, 128, 8);
}

/// Pushes that do not complete a window: validation, normalisation and the ring buffer only.
fn windowing(c: &mut Criterion) {
    type D = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
    let mut d = D::from_bytes(&model(8, 16, 32, 8, u16::MAX)).expect("reference");
    let samples = stream(8, 4096);
    for s in samples.iter().take(16) {
        d.push(s);
    }
    let mut i = 0;
    c.bench_function("windowing push C8 (no scoring)", |b| {
        b.iter(|| {
            i = (i + 1) % samples.len();
            black_box(d.push(black_box(&samples[i])))
        });
    });
}

/// A whole stream push by push (hop 1): warm-up, then a score per sample.
fn bench_stream<S: Storage>(c: &mut Criterion, name: &str, make: impl Fn() -> Engine<S>) {
    let channels = usize::from(make().config().window.channels);
    let samples = stream(channels, 1000);
    let mut group = c.benchmark_group("stream 1000 samples");
    group.throughput(Throughput::Elements(samples.len() as u64));
    group.bench_function(name, |b| {
        b.iter_batched_ref(
            &make,
            |d| {
                for s in &samples {
                    black_box(d.push(black_box(s)));
                }
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

fn stream_push_by_push(c: &mut Criterion) {
    type Tiny = Detector<2, 8, 16, 8, 2, { param_count(Arch::Dense, 16, 8, 2) }>;
    type Reference = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
    type Skab = Detector<8, 16, 128, 64, 8, { param_count(Arch::Dense, 128, 64, 8) }>;
    let tiny = model(2, 8, 8, 2, 1);
    bench_stream(c, "tiny", || Tiny::from_bytes(&tiny).expect("tiny"));
    let reference = model(8, 16, 32, 8, 1);
    bench_stream(c, "reference", || {
        Reference::from_bytes(&reference).expect("reference")
    });
    let skab = model(8, 16, 64, 8, 1);
    bench_stream(c, "skab", || Skab::from_bytes(&skab).expect("skab"));
    let mlperf = model(8, 80, 128, 8, 1);
    bench_stream(c, "mlperf-tiny (dynamic)", || {
        DynDetector::from_bytes(&mlperf).expect("mlperf")
    });
}

fn loading(c: &mut Criterion) {
    type D = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
    let bytes = model(8, 16, 32, 8, 1);
    let mut d = D::new();
    let mut group = c.benchmark_group("load");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("reference model, checked, in place", |b| {
        b.iter(|| black_box(d.load(black_box(&bytes))));
    });
    group.finish();
}

criterion_group!(
    benches,
    score_tiny,
    score_reference,
    score_skab,
    score_mlperf,
    windowing,
    stream_push_by_push,
    loading
);
criterion_main!(benches);
