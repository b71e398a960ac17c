//! Scores checked against values computed by hand and by an independent f64 reference.

use sensorae::{
    Activation, Aggregate, Arch, DynDetector, ErrorMetric, Status, Variant, param_count,
};

use crate::common::{Spec, signal};

/// C=1, W=2, H=1, Z=1, all linear; channel offset 1, scale 2; samples 3 then 5 give x = [1, 2].
fn hand_spec(variant: Variant, tied: bool, params: &[f32]) -> Spec {
    let mut spec = Spec::new(1, 2, 1, 1)
        .variant(variant, tied)
        .activations([Activation::Linear; 4]);
    spec.params = params.to_vec();
    spec.channels[0].offset = 1.0;
    spec.channels[0].scale = 2.0;
    spec.header.threshold.value = 100.0;
    spec
}

fn last_score(bytes: &[u8], samples: &[f32]) -> f32 {
    let mut d = DynDetector::from_bytes(bytes).unwrap();
    let mut last = None;
    for &s in samples {
        last = d.push(&[s]).score().map(|s| s.value);
    }
    last.unwrap()
}

// Dense: h1 = 0.5*1 - 0.25*2 + 0.1 = 0.1; z = 2*0.1 = 0.2; h2 = 0.2 - 0.5 = -0.3;
// xhat = [-0.3, 0.5*-0.3 + 0.25] = [-0.3, 0.1]. MSE = (1.3^2 + 1.9^2) / 2 = 2.65, MAE = 1.6.
const DENSE: [f32; 11] = [0.5, -0.25, 0.1, 2.0, 0.0, 1.0, -0.5, 1.0, 0.5, 0.0, 0.25];

#[test]
fn dense_mse_by_hand() {
    let spec = hand_spec(Variant::Plain, false, &DENSE);
    assert_eq!(spec.params.len(), param_count(Arch::Dense, 2, 1, 1));
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.65).abs() < 1e-6, "{s}");
}

#[test]
fn dense_mae_by_hand() {
    let spec = hand_spec(Variant::Plain, false, &DENSE).metric(ErrorMetric::Mae, Aggregate::Mean);
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 1.6).abs() < 1e-6, "{s}");
}

// Tied: h2 = W2^T z + b3 = 0.4 - 0.5 = -0.1; xhat = W1^T h2 + b4 = [-0.05, 0.275];
// MSE = (1.05^2 + 1.725^2) / 2 = 2.0390625.
#[test]
fn tied_mse_by_hand() {
    let params = [0.5, -0.25, 0.1, 2.0, 0.0, -0.5, 0.0, 0.25];
    let spec = hand_spec(Variant::Plain, true, &params);
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.039_062_5).abs() < 1e-6, "{s}");
}

// VAE: mu = 0.2, logvar = 0.1*1 = 0.1; decoding mu gives the dense reconstruction (2.65);
// KL = 0.5 * (0.04 + e^0.1 - 0.1 - 1) = 0.022585459; with kl_weight 2: 2.695170918.
#[test]
fn vae_with_kl_by_hand() {
    let params = [
        0.5, -0.25, 0.1, 2.0, 0.0, 1.0, 0.0, 1.0, -0.5, 1.0, 0.5, 0.0, 0.25,
    ];
    let mut spec = hand_spec(Variant::Vae, false, &params);
    spec.header.scoring.kl_weight = 2.0;
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.695_170_9).abs() < 1e-5, "{s}");
}

// Soft-threshold code (lambda 0.1): u = 0.2, z = 0.1; h2 = 0.1 - 0.5 = -0.4;
// xhat = [-0.4, 0.5*-0.4 + 0.25] = [-0.4, 0.05]; MSE = (1.4^2 + 1.95^2) / 2 = 2.88125.
// With lambda 0.3 the code is cut to 0: h2 = -0.5, xhat = [-0.5, 0], MSE = (2.25 + 4) / 2.
#[test]
fn soft_threshold_code_by_hand() {
    let mut spec = hand_spec(Variant::Sparse, false, &DENSE);
    spec.header.layers.code = Activation::SoftThreshold { lambda: 0.1 };
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.881_25).abs() < 1e-6, "{s}");
    spec.header.layers.code = Activation::SoftThreshold { lambda: 0.3 };
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 3.125).abs() < 1e-6, "{s}");
}

// VQ-VAE, codebook [0.5, -1.0]: z_e = 0.2 is nearest to 0.5 (distance^2 0.09, against 1.44);
// h2 = 1.0*0.5 - 0.5 = 0; xhat = [0, 0.25]; MSE = (1 + 1.75^2) / 2 = 2.03125; with the
// distance weight 2: 2.03125 + 0.18 = 2.21125.
#[test]
fn vqvae_nearest_code_and_distance_by_hand() {
    let params = [
        0.5, -0.25, 0.1, 2.0, 0.0, 0.5, -1.0, 1.0, -0.5, 1.0, 0.5, 0.0, 0.25,
    ];
    let mut spec = hand_spec(Variant::VqVae { codebook: 2 }, false, &params);
    assert_eq!(
        spec.params.len(),
        param_count(Arch::VqVae { codebook: 2 }, 2, 1, 1)
    );
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.031_25).abs() < 1e-6, "{s}");
    spec.header.scoring.kl_weight = 2.0;
    let s = last_score(&spec.bytes(), &[3.0, 5.0]);
    assert!((s - 2.211_25).abs() < 1e-6, "{s}");
}

// Hierarchical, C=1, W=4, blocks of 2, every path 1 wide, all linear; x = [1, 3, 2, 6] has block
// means [2, 4] and fine part x_f = [-1, 1, -2, 2].
// Fine: h1 = 0.25*-1 - 0.25*1 + 0.5*-2 - 0.5*2 + 0.5 = -2; z = -1; h2 = -2;
//   dec_f = [0.5, -0.5, 1, -1] * -2 + 1 = [0, 2, -1, 3], block means [1, 1], projected
//   [-1, 1, -2, 2].
// Coarse on [2, 4]: hc1 = 6; zc = 3; hc2 = 3 - 1 = 2; dec_c = [2, 4].
// Gains g_c = 1.5, g_f = 0.5: xhat = 0.5*[-1, 1, -2, 2] + 1.5*[2, 2, 4, 4] = [2.5, 3.5, 5, 7].
// Errors [-1.5, -0.5, -3, -1]: MSE 12.5 / 4 = 3.125 (coarse 2 * (1 + 4) = 10 plus fine 2.5,
// the two parts orthogonal), MAE 6 / 4 = 1.5.
const HIER_BY_HAND: [f32; 30] = [
    0.25, -0.25, 0.5, -0.5, 0.5, 0.5, 0.0, 2.0, 0.0, 0.5, -0.5, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0, 1.0,
    1.0, 0.0, 0.5, 0.0, 1.0, -1.0, 1.0, 2.0, 0.0, 0.0, 1.5, 0.5,
];

#[test]
fn hierarchical_by_hand() {
    let variant = Variant::Hierarchical {
        block: 2,
        coarse_hidden: 1,
        coarse_latent: 1,
    };
    let mut spec = Spec::new(1, 4, 1, 1)
        .variant(variant, false)
        .activations([Activation::Linear; 4])
        .identity_channels();
    assert_eq!(spec.params.len(), HIER_BY_HAND.len());
    spec.params = HIER_BY_HAND.to_vec();
    spec.header.threshold.value = 100.0;
    let window = [1.0, 3.0, 2.0, 6.0];
    let s = last_score(&spec.bytes(), &window);
    assert!((s - 3.125).abs() < 1e-6, "{s}");
    let spec = spec.metric(ErrorMetric::Mae, Aggregate::Mean);
    let s = last_score(&spec.bytes(), &window);
    assert!((s - 1.5).abs() < 1e-6, "{s}");
    check_against_reference(spec);
}

/// An independent f64 forward pass over the file-order parameters with plain loops.
fn reference_score(spec: &Spec, window: &[Vec<f32>]) -> f64 {
    let h = &spec.header;
    let c = usize::from(h.window.channels);
    let n = h.input();
    let hid = h.layers.hidden as usize;
    let z = h.layers.latent as usize;
    let x: Vec<f64> = window
        .iter()
        .flat_map(|s| {
            s.iter()
                .zip(&spec.channels)
                .map(|(&v, ch)| (f64::from(v) - f64::from(ch.offset)) / f64::from(ch.scale))
        })
        .collect();
    let p: Vec<f64> = spec.params.iter().map(|&v| f64::from(v)).collect();
    let mut at = 0;
    let mut take = |len: usize| {
        let s = p[at..at + len].to_vec();
        at += len;
        s
    };
    let act = |a: Activation, v: f64| match a {
        Activation::Linear => v,
        Activation::Relu => v.max(0.0),
        Activation::LeakyRelu { slope } => {
            if v > 0.0 {
                v
            } else {
                f64::from(slope) * v
            }
        }
        Activation::Sigmoid => 1.0 / (1.0 + (-v).exp()),
        Activation::Tanh => v.tanh(),
        Activation::SoftThreshold { lambda } => {
            let l = f64::from(lambda);
            v.signum() * (v.abs() - l).max(0.0)
        }
    };
    // Column-major W (rows x cols): W[r, c] = w[c * rows + r].
    let layer = |w: &[f64], b: &[f64], rows: usize, cols: usize, tr: bool, x: &[f64], a| {
        (0..rows)
            .map(|r| {
                let mut s = b[r];
                for k in 0..cols {
                    let wv = if tr { w[r * cols + k] } else { w[k * rows + r] };
                    s += wv * x[k];
                }
                act(a, s)
            })
            .collect::<Vec<f64>>()
    };
    let l = &h.layers;
    // Hierarchical: the fine path reads the window minus its per-channel block means.
    let hier = match h.variant {
        Variant::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } => Some((
            usize::from(block),
            usize::from(coarse_hidden),
            usize::from(coarse_latent),
        )),
        _ => None,
    };
    let means = |v: &[f64], b: usize| -> Vec<f64> {
        let mut m = vec![0.0; n / b];
        for (i, &e) in v.iter().enumerate() {
            m[(i / c) / b * c + i % c] += e / b as f64;
        }
        m
    };
    let minus_means = |v: &[f64], b: usize| -> Vec<f64> {
        let m = means(v, b);
        (0..n).map(|i| v[i] - m[(i / c) / b * c + i % c]).collect()
    };
    let input = match hier {
        Some((b, _, _)) => minus_means(&x, b),
        None => x.clone(),
    };
    let (w1, b1) = (take(hid * n), take(hid));
    let h1 = layer(&w1, &b1, hid, n, false, &input, l.encoder_hidden);
    let (w2, b2) = (take(z * hid), take(z));
    let is_vae = h.variant == Variant::Vae;
    let mut code = layer(
        &w2,
        &b2,
        z,
        hid,
        false,
        &h1,
        if is_vae { Activation::Linear } else { l.code },
    );
    let mut kl = 0.0;
    if let Variant::VqVae { codebook } = h.variant {
        // Nearest code by exhaustive search; `kl` carries the squared distance.
        let cb = take(usize::from(codebook) * z);
        let dist = |k: usize| -> f64 { (0..z).map(|j| (code[j] - cb[k * z + j]).powi(2)).sum() };
        let best = (0..usize::from(codebook))
            .min_by(|&a, &b| dist(a).total_cmp(&dist(b)))
            .unwrap();
        kl = dist(best);
        code = cb[best * z..(best + 1) * z].to_vec();
    }
    if is_vae {
        let (wl, bl) = (take(z * hid), take(z));
        let lv = layer(&wl, &bl, z, hid, false, &h1, Activation::Linear);
        kl = 0.5
            * code
                .iter()
                .zip(&lv)
                .map(|(m, v)| m * m + v.exp() - v - 1.0)
                .sum::<f64>();
    }
    let xhat = if h.tied {
        let b3 = take(hid);
        let h2 = layer(&w2, &b3, hid, z, true, &code, l.decoder_hidden);
        let b4 = take(n);
        layer(&w1, &b4, n, hid, true, &h2, l.output)
    } else {
        let (w3, b3) = (take(hid * z), take(hid));
        let h2 = layer(&w3, &b3, hid, z, false, &code, l.decoder_hidden);
        let (w4, b4) = (take(n * hid), take(n));
        layer(&w4, &b4, n, hid, false, &h2, l.output)
    };
    let xhat = match hier {
        None => xhat,
        Some((b, hc, zc)) => {
            let nc = n / b;
            let (w, bias) = (take(hc * nc), take(hc));
            let h1 = layer(&w, &bias, hc, nc, false, &means(&x, b), l.encoder_hidden);
            let (w, bias) = (take(zc * hc), take(zc));
            let code = layer(&w, &bias, zc, hc, false, &h1, l.code);
            let (w, bias) = (take(hc * zc), take(hc));
            let h2 = layer(&w, &bias, hc, zc, false, &code, l.decoder_hidden);
            let (w, bias) = (take(nc * hc), take(nc));
            let coarse = layer(&w, &bias, nc, hc, false, &h2, l.output);
            let gains = take(2);
            let fine = minus_means(&xhat, b);
            (0..n)
                .map(|i| gains[1] * fine[i] + gains[0] * coarse[(i / c) / b * c + i % c])
                .collect()
        }
    };
    assert_eq!(at, p.len(), "reference consumed every parameter");
    let entry = |a: f64, b: f64| match h.scoring.metric {
        ErrorMetric::Mse => (a - b) * (a - b),
        ErrorMetric::Mae => (a - b).abs(),
        ErrorMetric::Bce => {
            let a = a.clamp(0.0, 1.0);
            let q = b.clamp(1e-7, 1.0 - 1e-7);
            -(a * q.ln() + (1.0 - a) * (1.0 - q).ln())
        }
    };
    let mut per_channel = vec![0.0; c];
    for (i, (&a, &b)) in x.iter().zip(&xhat).enumerate() {
        per_channel[i % c] += entry(a, b) / (n / c) as f64;
    }
    let score = match h.scoring.aggregate {
        Aggregate::Mean => per_channel.iter().sum::<f64>() / c as f64,
        Aggregate::MaxChannel => per_channel.iter().cloned().fold(0.0, f64::max),
    };
    score + f64::from(h.scoring.kl_weight) * kl
}

fn check_against_reference(spec: Spec) {
    let bytes = spec.bytes();
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    let c = usize::from(spec.header.window.channels);
    let w = usize::from(spec.header.window.length);
    let samples: Vec<Vec<f32>> = (0..w + 5).map(|t| signal(t, c)).collect();
    for (t, s) in samples.iter().enumerate() {
        let v = d.push(s);
        if t + 1 < w {
            assert!(matches!(v.status, Status::WarmingUp { .. }));
            continue;
        }
        let got = f64::from(v.score().unwrap().value);
        let want = reference_score(&spec, &samples[t + 1 - w..=t]);
        let rel = (got - want).abs() / want.abs().max(1e-6);
        assert!(rel < 2e-5, "t={t}: got {got}, reference {want}");
    }
}

const ACTS: [Activation; 6] = [
    Activation::Linear,
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
    Activation::Sigmoid,
    Activation::Tanh,
    Activation::SoftThreshold { lambda: 0.05 },
];

#[test]
fn every_activation_matches_reference() {
    for a in ACTS {
        for (variant, tied) in [
            (Variant::Plain, false),
            (Variant::Plain, true),
            (Variant::Vae, false),
            (Variant::VqVae { codebook: 3 }, false),
            (
                Variant::Hierarchical {
                    block: 5,
                    coarse_hidden: 4,
                    coarse_latent: 2,
                },
                false,
            ),
            (
                Variant::Masked {
                    mask: sensorae::MaskAxis::Channel,
                },
                true,
            ),
        ] {
            let spec = Spec::new(3, 5, 6, 2).variant(variant, tied).activations([
                a,
                a,
                a,
                Activation::Linear,
            ]);
            check_against_reference(spec);
        }
    }
}

#[test]
fn every_metric_and_aggregate_matches_reference() {
    for metric in [ErrorMetric::Mse, ErrorMetric::Mae, ErrorMetric::Bce] {
        for aggregate in [Aggregate::Mean, Aggregate::MaxChannel] {
            let out = if metric == ErrorMetric::Bce {
                Activation::Sigmoid
            } else {
                Activation::Linear
            };
            let mut spec = Spec::new(4, 3, 5, 2)
                .activations([Activation::Tanh, Activation::Linear, Activation::Tanh, out])
                .metric(metric, aggregate);
            if metric == ErrorMetric::Bce {
                for ch in &mut spec.channels {
                    ch.offset = -2.5;
                    ch.scale = 5.0;
                }
            }
            check_against_reference(spec);
        }
    }
}

#[test]
fn vqvae_distance_weight_matches_reference() {
    let mut spec = Spec::new(2, 4, 4, 3).variant(Variant::VqVae { codebook: 5 }, false);
    spec.header.scoring.kl_weight = 0.5;
    check_against_reference(spec);
}

#[test]
fn vae_kl_weight_matches_reference() {
    let mut spec = Spec::new(2, 4, 4, 3).variant(Variant::Vae, false);
    spec.header.scoring.kl_weight = 0.5;
    check_against_reference(spec);
}
