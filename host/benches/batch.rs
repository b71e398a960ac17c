//! Batched scoring (`sensorae_host::batch::BatchScorer`) of the SKAB-size model (8 channels x
//! window 16 = 128 inputs, hidden 64, code 8, tanh hidden layers, MSE: 128-64-8-64-128, 17,408
//! multiply-adds per window) at batch 1, 16, 256 and 1024, seeded random weights and windows.
//!
//! Criterion's throughput is in multiply-adds (`Gelem/s` = 10^9 multiply-adds per second).
//! After the criterion groups, a summary line per batch gives the median of 15 timed runs in
//! multiply-adds per second and as a share of one core's FMA peak (39.2 G multiply-adds/s on
//! the 2.45 GHz Zen 3 this was written on: 2 FMA pipes x 8 `f32` lanes x 2.45 GHz; set
//! `FMA_PEAK_GMACS` for another machine).
//!
//! Run with `cargo bench -p sensorae-host --bench batch`.

use core::hint::black_box;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pulp::{Simd, WithSimd};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sensorae::{Channel, encode_to_vec, testing::header};
use sensorae_host::batch::BatchScorer;

const BATCHES: [usize; 4] = [1, 16, 256, 1024];

/// The SKAB-size model with seeded Glorot-uniform weights.
fn skab_model() -> Vec<u8> {
    let hd = header(8, 16, 64, 8);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let params: Vec<f32> = (0..hd.param_count())
        .map(|_| rng.random_range(-0.2..0.2))
        .collect();
    let channels: Vec<Channel<'static>> = (0..8)
        .map(|_| Channel {
            name: "x",
            offset: 0.0,
            scale: 1.0,
            min: f32::NEG_INFINITY,
            max: f32::INFINITY,
        })
        .collect();
    encode_to_vec(&hd, &channels, &params).expect("valid model")
}

/// `batch` seeded normalised windows of `n` values.
fn windows(batch: usize, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(batch as u64);
    (0..batch * n)
        .map(|_| rng.random_range(-2.0..2.0))
        .collect()
}

fn batched(c: &mut Criterion) {
    let bytes = skab_model();
    let mut scorer = BatchScorer::from_bytes(&bytes).expect("model loads");
    let macs = scorer.macs_per_window() as u64;
    let mut group = c.benchmark_group("score_batch_skab");
    for batch in BATCHES {
        let x = windows(batch, scorer.window_len());
        let mut scores = vec![0.0f32; batch];
        group.throughput(Throughput::Elements(macs * batch as u64));
        group.bench_function(format!("b{batch}"), |b| {
            b.iter_batched_ref(
                || (),
                |()| {
                    scorer
                        .score_into(black_box(&x), &mut scores)
                        .expect("whole windows");
                    black_box(&scores);
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
    summary(&mut scorer, macs as f64);
}

/// 12 independent chains of 8-lane FMAs, nothing else: what this core sustains, in G
/// multiply-adds per second (turbo included), as a check on the nominal peak.
struct FmaLoop(u64);

impl WithSimd for FmaLoop {
    type Output = f32;

    #[inline(always)]
    fn with_simd<S: Simd>(self, simd: S) -> f32 {
        let a = simd.splat_f32s(0.999_999);
        let b = simd.splat_f32s(1e-7);
        let mut acc = [simd.splat_f32s(1.0); 12];
        for _ in 0..self.0 {
            for v in &mut acc {
                *v = simd.mul_add_f32s(*v, a, b);
            }
        }
        let total = acc
            .iter()
            .fold(simd.splat_f32s(0.0), |s, &v| simd.add_f32s(s, v));
        simd.reduce_sum_f32s(black_box(total))
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn measured_fma_peak() -> Option<f64> {
    None
}

#[cfg(target_arch = "x86_64")]
fn measured_fma_peak() -> Option<f64> {
    let simd = pulp::x86::V3::try_new()?;
    let iters = 20_000_000u64;
    let mut rates: Vec<f64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            black_box(Simd::vectorize(simd, FmaLoop(black_box(iters))));
            (iters * 12 * 8) as f64 / start.elapsed().as_secs_f64() / 1e9
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    Some(rates[rates.len() / 2])
}

/// Median multiply-adds per second per batch size, and the share of the FMA peak.
fn summary(scorer: &mut BatchScorer, macs: f64) {
    let peak: f64 = std::env::var("FMA_PEAK_GMACS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(39.2);
    let measured = measured_fma_peak();
    if let Some(m) = measured {
        println!("FMA loop on this core (12 chains of 8 lanes): {m:.1} G multiply-adds/s");
    }
    for batch in BATCHES {
        let x = windows(batch, scorer.window_len());
        let mut scores = vec![0.0f32; batch];
        // 8192 windows per run: about 10 ms at 1 us per window.
        let calls = 8192 / batch;
        let mut rates: Vec<f64> = (0..15)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..calls {
                    scorer
                        .score_into(black_box(&x), &mut scores)
                        .expect("whole windows");
                }
                let secs = start.elapsed().as_secs_f64();
                black_box(&scores);
                macs * (calls * batch) as f64 / secs
            })
            .collect();
        rates.sort_by(f64::total_cmp);
        let median = rates[rates.len() / 2];
        let of_measured = measured
            .map(|m| format!(", {:.1} % of the FMA loop", 100.0 * median / 1e9 / m))
            .unwrap_or_default();
        println!(
            "batch {batch:>5}: {:>7.1} ns/window, {:>5.2} G multiply-adds/s = {:>4.1} % of the \
             {peak} G FMA peak{of_measured}",
            macs / median * 1e9,
            median / 1e9,
            100.0 * median / 1e9 / peak
        );
    }
}

criterion_group!(benches, batched);
criterion_main!(benches);
