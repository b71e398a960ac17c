//! Our side of the peer comparison, driven by `peers.py`:
//!
//! - `make-model DATA.csv OUT.snae`: trains the SKAB-size model (8 x 16 inputs, hidden 64,
//!   code 8, tanh hidden layers, MSE) for a few epochs so the peers get realistic weights.
//! - `export MODEL.snae DATA.csv OUT.json`: reads the model with `sensorae::ModelView` and writes
//!   its sizes, activations and weights, the data normalised by the model's channels with its
//!   train/validation split, and one window's score as a parity check.
//! - `serve MODEL.snae DATA.csv`: answers timing requests on stdin, one per line, each with one
//!   JSON line, so the driver can alternate ours and theirs in one run:
//!   `score_b1_dyn K`, `score_b1_fixed K`, `score_b256 K`, `train BATCH EPOCHS`. `score_b256`
//!   scores 256 windows per call with `sensorae_host::batch::BatchScorer` (one GEMM per layer),
//!   as torch and ONNX Runtime score a `[256, N]` tensor.
//!
//! Everything here runs on one thread.

use std::{
    error::Error,
    hint::black_box,
    io::{BufRead, Write},
    path::Path,
    time::Instant,
};

use sensorae::{
    Activation, AlarmSpec, Arch, Detector, DynDetector, ErrorMetric, FaultPolicy, ModelView,
    Scoring, Status, Threshold, ThresholdMethod, Variant, param_count,
};
use sensorae_host::{
    batch::BatchScorer,
    data::{CsvOptions, read_csv},
    train::{TrainConfig, train},
};
use serde_json::json;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The SKAB-size model as a fixed-size detector.
type Skab = Detector<8, 16, 128, 64, 8, { param_count(Arch::Dense, 128, 64, 8) }>;

const VAL_FRACTION: f32 = 0.2;

/// SKAB's options without the label column, which the anomaly-free file lacks.
fn anomaly_free() -> CsvOptions {
    CsvOptions {
        label_column: None,
        ..CsvOptions::skab()
    }
}

fn config(batch: u32, epochs: u32) -> TrainConfig {
    TrainConfig {
        window: 16,
        hidden: 64,
        latent: 8,
        encoder_hidden: Activation::Tanh,
        code: Activation::Linear,
        decoder_hidden: Activation::Tanh,
        output: Activation::Linear,
        epochs,
        batch,
        lr: 1e-3,
        val_fraction: VAL_FRACTION,
        patience: None,
        seed: 7,
        ..TrainConfig::new(Variant::Plain)
    }
}

fn rows(data: &Path) -> Result<(Vec<f32>, Vec<String>)> {
    let t = read_csv(data, &anomaly_free())?;
    Ok((t.values, t.channels))
}

fn make_model(data: &Path, out: &Path) -> Result<()> {
    let (values, names) = rows(data)?;
    let model = train(&values, &names, &config(32, 3), &mut |_| {})?;
    let bytes = model.to_bytes(
        "peers",
        Scoring {
            metric: ErrorMetric::Mse,
            aggregate: sensorae::Aggregate::Mean,
            kl_weight: 0.0,
            ewma: 1.0,
        },
        Threshold {
            value: 1e9,
            method: ThresholdMethod::Fixed,
            calibration_windows: 0,
        },
        AlarmSpec {
            on_after: 1,
            off_after: 1,
        },
        FaultPolicy { hold_max: 0 },
        None,
    )?;
    std::fs::write(out, bytes)?;
    Ok(())
}

fn act_name(a: Activation) -> serde_json::Value {
    match a {
        Activation::Linear => json!("linear"),
        Activation::Relu => json!("relu"),
        Activation::LeakyRelu { slope } => json!({ "leaky_relu": slope }),
        Activation::Sigmoid => json!("sigmoid"),
        Activation::Tanh => json!("tanh"),
        Activation::SoftThreshold { lambda } => json!({ "soft_threshold": lambda }),
    }
}

fn score_of(status: &Status) -> Option<f32> {
    match status {
        Status::Normal(s) | Status::Anomalous { score: s, .. } => Some(s.value),
        _ => None,
    }
}

fn export(model: &Path, data: &Path, out: &Path) -> Result<()> {
    let bytes = std::fs::read(model)?;
    let view = ModelView::from_bytes(&bytes)?;
    let hd = view.header();
    if hd.arch() != Arch::Dense {
        return Err("peers compare the dense architecture only".into());
    }
    let (c, w) = (
        usize::from(hd.window.channels),
        usize::from(hd.window.length),
    );
    let (n, h, z) = (c * w, hd.layers.hidden as usize, hd.layers.latent as usize);
    let params: Vec<f32> = view.weights().collect();
    let mut at = 0;
    let mut next = |len: usize| {
        let s = &params[at..at + len];
        at += len;
        s.to_vec()
    };
    // Column-major, rows = outputs (docs/model-format.md).
    let tensors = json!({
        "w1": next(h * n), "b1": next(h), "w2": next(z * h), "b2": next(z),
        "w3": next(h * z), "b3": next(h), "w4": next(n * h), "b4": next(n),
    });
    let (values, _) = rows(data)?;
    let norms: Vec<(f32, f32)> = view.channels().map(|ch| (ch.offset, ch.scale)).collect();
    // The detector's normalisation, so both sides see the same numbers.
    let normalised: Vec<f32> = values
        .chunks_exact(c)
        .flat_map(|r| {
            r.iter()
                .zip(&norms)
                .map(|(&v, &(o, s))| (v - o) * (1.0 / s))
        })
        .collect();
    let total = values.len() / c;
    let val_len = ((total as f64) * f64::from(VAL_FRACTION)).round() as usize;
    let split = total - val_len;
    // Parity: our score of the first window.
    let mut det = DynDetector::from_bytes(&bytes)?;
    let mut first = None;
    for r in values.chunks_exact(c).take(w) {
        first = score_of(&det.push(r).status);
    }
    let acts = [
        hd.layers.encoder_hidden,
        hd.layers.code,
        hd.layers.decoder_hidden,
        hd.layers.output,
    ]
    .map(act_name);
    let doc = json!({
        "c": c, "w": w, "n": n, "h": h, "z": z,
        "acts": acts,
        "params": tensors,
        "rows": normalised,
        "train_rows": [0, split],
        "val_rows": [split, total],
        "first_window_score": first,
        "lr": 1e-3,
    });
    std::fs::write(out, serde_json::to_vec(&doc)?)?;
    Ok(())
}

/// Nanoseconds per push over `k` pushes, every one completing (and scoring) a window.
fn time_pushes(
    push: &mut dyn FnMut(&[f32]) -> Option<f32>,
    samples: &[f32],
    c: usize,
    k: usize,
) -> f64 {
    let rows: Vec<&[f32]> = samples.chunks_exact(c).collect();
    let mut sink = 0.0f32;
    let start = Instant::now();
    for i in 0..k {
        sink += push(black_box(rows[i % rows.len()])).unwrap_or(0.0);
    }
    let ns = start.elapsed().as_nanos() as f64 / k as f64;
    black_box(sink);
    ns
}

/// Nanoseconds per window over `calls` calls on the same `batch` windows (the first of
/// `windows`, whole windows of the scorer's length), as `peers.py` times torch and ONNX Runtime
/// on one fixed `[256, N]` tensor: the block stays in cache on both sides.
fn time_batches(
    scorer: &mut BatchScorer,
    windows: &[f32],
    batch: usize,
    calls: usize,
) -> Result<f64> {
    let block = windows
        .get(..batch * scorer.window_len())
        .ok_or_else(|| format!("fewer than {batch} windows in the data"))?;
    let mut scores = vec![0.0f32; batch];
    let mut sink = 0.0f32;
    scorer.score_into(block, &mut scores)?;
    let start = Instant::now();
    for _ in 0..calls {
        scorer.score_into(black_box(block), &mut scores)?;
        sink += scores[0];
    }
    let ns = start.elapsed().as_nanos() as f64 / (calls * batch) as f64;
    black_box(sink);
    Ok(ns)
}

fn serve(model: &Path, data: &Path) -> Result<()> {
    let bytes = std::fs::read(model)?;
    let (values, names) = rows(data)?;
    let c = names.len();
    let mut dynamic = DynDetector::from_bytes(&bytes)?;
    let mut fixed = Skab::from_bytes(&bytes).ok();
    let mut batch = BatchScorer::from_bytes(&bytes)?;
    // The file's windows, normalised and flattened as the detector does; `score_b256` scores
    // the first 256 of them on every call.
    let batch_windows = batch.windows(&values);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let line = line?;
        let mut words = line.split_whitespace();
        let (Some(cmd), Some(a)) = (words.next(), words.next()) else {
            continue;
        };
        let a: usize = a.parse()?;
        let reply = match cmd {
            "score_b1_dyn" => {
                let ns = time_pushes(&mut |s| score_of(&dynamic.push(s).status), &values, c, a);
                json!({ "ns_per_window": ns })
            }
            "score_b1_fixed" => match fixed.as_mut() {
                Some(f) => {
                    let ns = time_pushes(&mut |s| score_of(&f.push(s).status), &values, c, a);
                    json!({ "ns_per_window": ns })
                }
                None => json!({ "ns_per_window": null }),
            },
            "score_b256" => {
                let ns = time_batches(&mut batch, &batch_windows, 256, a)?;
                json!({ "ns_per_window": ns })
            }
            "train" => {
                let epochs: u32 = words.next().unwrap_or("1").parse()?;
                let cfg = config(u32::try_from(a)?, epochs);
                let start = Instant::now();
                let m = train(&values, &names, &cfg, &mut |_| {})?;
                let secs = start.elapsed().as_secs_f64();
                let windows = f64::from(m.summary.train_windows) * f64::from(epochs);
                let last = m.history.last().and_then(|e| e.val_loss);
                json!({ "seconds": secs, "samples_per_s": windows / secs, "val_loss": last })
            }
            _ => json!({ "error": format!("unknown request {cmd}") }),
        };
        writeln!(stdout, "{reply}")?;
        stdout.flush()?;
    }
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> Result<&Path> {
        args.get(i)
            .map(Path::new)
            .ok_or_else(|| "usage: peers make-model|export|serve ...".into())
    };
    match args.get(1).map(String::as_str) {
        Some("make-model") => make_model(arg(2)?, arg(3)?),
        Some("export") => export(arg(2)?, arg(3)?, arg(4)?),
        Some("serve") => serve(arg(2)?, arg(3)?),
        _ => Err(
            "usage: peers make-model DATA OUT | export MODEL DATA OUT | serve MODEL DATA".into(),
        ),
    }
}
