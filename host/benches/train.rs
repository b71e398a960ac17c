//! One training epoch per variant (plain, sparse, denoising, contractive, VAE) at batch 32 and
//! 256, on SKAB's anomaly-free file (8 channels, window 16, hidden 64, code 8: the SKAB-size
//! model) read from `../shared/data/skab` beside the repository, or on seeded synthetic rows of
//! the same shape when that folder is absent. An epoch includes its validation pass, as in
//! `sensorae train`.
//!
//! Throughput is in multiply-adds per second: a training window costs about three times its
//! forward multiply-adds (forward, input gradient, weight gradient).
//!
//! Run with `cargo bench -p sensorae-host --bench train`.

use core::hint::black_box;
use std::path::PathBuf;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sensorae::Variant;
use sensorae_host::{
    data::{CsvOptions, read_csv},
    train::{TrainConfig, train},
};

const WINDOW: u16 = 16;
const HIDDEN: u32 = 64;
const LATENT: u32 = 8;

/// Rows (row-major) and channel names: SKAB's anomaly-free file, else seeded sine-plus-noise.
/// SKAB's options without the label column, which the anomaly-free file lacks.
fn anomaly_free() -> CsvOptions {
    CsvOptions {
        label_column: None,
        ..CsvOptions::skab()
    }
}

fn data() -> (Vec<f32>, Vec<String>) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/data/skab/anomaly-free/anomaly-free.csv");
    if let Ok(t) = read_csv(&path, &anomaly_free()) {
        return (t.values, t.channels);
    }
    eprintln!(
        "{} not readable: training on seeded synthetic rows",
        path.display()
    );
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let (rows, c) = (9405, 8);
    let values = (0..rows * c)
        .map(|i| ((i / c) as f32 * 0.05 * (1 + i % c) as f32).sin() + rng.random_range(-0.1..0.1))
        .collect();
    (values, (0..c).map(|k| format!("ch{k}")).collect())
}

fn config(variant: Variant, batch: u32) -> TrainConfig {
    TrainConfig {
        window: WINDOW,
        hidden: HIDDEN,
        latent: LATENT,
        epochs: 1,
        batch,
        patience: None,
        seed: 7,
        ..TrainConfig::new(variant)
    }
}

fn epochs(c: &mut Criterion) {
    let (values, names) = data();
    let channels = names.len();
    let n = channels * usize::from(WINDOW);
    let (h, z) = (HIDDEN as usize, LATENT as usize);
    // Windows seen per epoch: the training part (80 %) at hop 1, plus the validation part.
    let windows = (values.len() / channels).saturating_sub(usize::from(WINDOW)) as u64;
    let forward = (2 * n * h + 2 * h * z) as u64;
    for batch in [32u32, 256] {
        let mut group = c.benchmark_group(format!("train_epoch_b{batch}"));
        group.sample_size(10);
        group.throughput(Throughput::Elements(3 * forward * windows));
        for (name, variant) in [
            ("plain", Variant::Plain),
            ("sparse", Variant::Sparse),
            ("denoising", Variant::Denoising),
            ("contractive", Variant::Contractive),
            ("vae", Variant::Vae),
        ] {
            let cfg = config(variant, batch);
            group.bench_function(name, |b| {
                b.iter(|| {
                    black_box(train(black_box(&values), &names, &cfg, &mut |_| {}))
                        .map(|m| m.summary.val_loss)
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, epochs);
criterion_main!(benches);
