//! The autoencoder forward pass and reconstruction errors, written once over nalgebra's `Dim`:
//! `Const<N>` on the device, `Dyn` on the host, so both run the same arithmetic.
//!
//! Parameters are one flat slice in file order; each weight matrix is column-major with as many
//! rows as the layer has outputs (see `docs/model-format.md`).

use nalgebra::Dim;

use crate::model::{Activation, Arch, ErrorMetric, Layers};

/// Clamp applied to BCE probabilities so the logarithms stay finite.
pub const BCE_EPS: f32 = 1e-7;
/// VAE log-variances are clamped to this magnitude before `exp`, so the KL term stays finite.
pub const LOGVAR_CLAMP: f32 = 30.0;

impl Activation {
    /// Applies the activation to one value.
    ///
    /// # Examples
    /// ```
    /// use sensorae::Activation;
    /// assert_eq!(Activation::Relu.apply(-2.0), 0.0);
    /// assert_eq!(Activation::LeakyRelu { slope: 0.1 }.apply(-2.0), -0.2);
    /// assert_eq!(Activation::Sigmoid.apply(0.0), 0.5);
    /// let soft = Activation::SoftThreshold { lambda: 0.5 };
    /// assert_eq!((soft.apply(2.0), soft.apply(-2.0), soft.apply(0.3)), (1.5, -1.5, 0.0));
    /// ```
    #[must_use]
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            Activation::Linear => x,
            Activation::Relu => x.max(0.0),
            Activation::LeakyRelu { slope } => {
                if x > 0.0 {
                    x
                } else {
                    slope * x
                }
            }
            Activation::Sigmoid => 1.0 / (1.0 + libm::expf(-x)),
            Activation::Tanh => tanh(x),
            Activation::SoftThreshold { lambda } => {
                if x > lambda {
                    x - lambda
                } else if x < -lambda {
                    x + lambda
                } else {
                    0.0
                }
            }
        }
    }

    /// One `match` per layer, not per value, so each loop is branch-free and vectorises.
    fn apply_all(self, ys: &mut [f32]) {
        match self {
            Activation::Linear => {}
            Activation::Relu => ys.iter_mut().for_each(|y| *y = y.max(0.0)),
            Activation::Tanh => ys.iter_mut().for_each(|y| *y = tanh(*y)),
            _ => ys.iter_mut().for_each(|y| *y = self.apply(*y)),
        }
    }
}

/// `tanh` within 4e-7 relative (7 ulp) of the exact value for every `f32`, NaN to NaN: the
/// 13/6 rational approximation Eigen uses, clamped where `tanh` rounds to +-1. Branch-free, so
/// a layer's activations vectorise; libm's `tanhf` (through `expm1f`) was a third of the time
/// of scoring a window.
#[must_use]
#[inline]
fn tanh(x: f32) -> f32 {
    const CLAMP: f32 = 7.905_311;
    const A: [f32; 7] = [
        4.893_524_6e-3,
        6.372_619_3e-4,
        1.485_722_4e-5,
        5.122_297e-8,
        -8.604_672e-11,
        2.000_188e-13,
        -2.760_768_5e-16,
    ];
    const B: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
    let c = x.clamp(-CLAMP, CLAMP);
    let x2 = c * c;
    let p = A.iter().rev().fold(0.0, |acc, &a| acc * x2 + a) * c;
    let q = B.iter().rev().fold(0.0, |acc, &b| acc * x2 + b);
    // Near zero tanh(x) rounds to x; the ratio would be a few ulp off.
    if x.abs() < 4e-4 { x } else { p / q }
}

/// Splits the next `len` parameters off the front.
fn take<'p>(params: &mut &'p [f32], len: usize) -> Option<&'p [f32]> {
    let (head, tail) = params.split_at_checked(len)?;
    *params = tail;
    Some(head)
}

/// The sizes a forward pass runs at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims<N: Dim, H: Dim, Z: Dim> {
    pub n: N,
    pub h: H,
    pub z: Z,
}

/// `y = act(W x + b)` with `W` (`o` x `i`) column-major, or `y = act(W^T x + b)` with `W`
/// (`i` x `o`) when `transposed`. Sums run in column order, `b + W[.., 0] x_0 + W[.., 1] x_1 +
/// ...`, for every size alike, so fixed and heap detectors agree bit for bit.
#[allow(clippy::too_many_arguments)] // reason: one call site per layer keeps the sizes explicit
fn affine<O: Dim, I: Dim>(
    w: &[f32],
    b: &[f32],
    o: O,
    i: I,
    transposed: bool,
    x: &[f32],
    y: &mut [f32],
    act: Activation,
) -> Option<()> {
    let rows = o.value();
    let cols = i.value();
    let (x, y) = (x.get(..cols)?, y.get_mut(..rows)?);
    if w.len() != rows * cols || b.len() != rows {
        return None;
    }
    y.copy_from_slice(b);
    if transposed {
        // Output k is the dot product of W's column k (contiguous) with x.
        if cols > 0 {
            for (yk, col) in y.iter_mut().zip(w.chunks_exact(cols)) {
                *yk += dot(col, x);
            }
        }
    } else {
        matvec(w, rows, x, y);
    }
    act.apply_all(y);
    Some(())
}

/// Output rows accumulated together: with `BLOCK` sums held in registers, each column step is
/// `BLOCK` weight loads, one broadcast of `x_j` and `BLOCK` multiply-adds, and nothing spills
/// (nalgebra's `gemv` walks whole columns, storing and reloading `y` at every step).
const BLOCK: usize = 32;

/// `y += W x`, `W` column-major with `rows` rows (one per element of `y`).
fn matvec(w: &[f32], rows: usize, x: &[f32], y: &mut [f32]) {
    if rows == 0 {
        return;
    }
    let mut r0 = 0;
    while r0 < rows {
        let left = rows - r0;
        let Some(yb) = y.get_mut(r0..) else { return };
        r0 += if left >= BLOCK {
            rows_block::<BLOCK>(w, rows, r0, x, yb)
        } else if left >= 8 {
            rows_block::<8>(w, rows, r0, x, yb)
        } else {
            rows_block::<1>(w, rows, r0, x, yb)
        };
    }
}

/// `y[..R] += W[r0..r0 + R, ..] x`; returns `R`.
#[inline(always)]
fn rows_block<const R: usize>(
    w: &[f32],
    rows: usize,
    r0: usize,
    x: &[f32],
    y: &mut [f32],
) -> usize {
    let Some(out) = y.first_chunk_mut::<R>() else {
        return R;
    };
    let mut acc = *out;
    for (col, &xj) in w.chunks_exact(rows).zip(x) {
        if let Some(wc) = col.get(r0..).and_then(<[f32]>::first_chunk::<R>) {
            for (a, &wv) in acc.iter_mut().zip(wc) {
                *a += wv * xj;
            }
        }
    }
    *out = acc;
    R
}

/// `a . b` with eight running sums (so it vectorises), added up at the end.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    let mut acc = [0.0f32; 8];
    for (u, v) in ac.iter().zip(bc) {
        for ((s, &p), &q) in acc.iter_mut().zip(u).zip(v) {
            *s += p * q;
        }
    }
    let mut sum = acc.iter().sum::<f32>();
    for (&p, &q) in ar.iter().zip(br) {
        sum += p * q;
    }
    sum
}

/// Scratch space of one forward pass.
pub(crate) struct Scratch<'a> {
    pub h1: &'a mut [f32],
    pub z: &'a mut [f32],
    pub logvar: &'a mut [f32],
    pub h2: &'a mut [f32],
}

/// Reconstructs `x` into `xhat`. For the VAE the decoder runs on the mean, and `scratch.logvar`
/// holds the log-variance afterwards; the VQ-VAE's decoder runs on the nearest code, which
/// `scratch.z` holds afterwards. Returns the squared distance from the encoder's code to that
/// nearest code (0 for the other architectures), or `None` only if slice lengths disagree with
/// the sizes, which loading rules out.
pub(crate) fn reconstruct<N: Dim, H: Dim, Z: Dim>(
    arch: Arch,
    layers: &Layers,
    d: Dims<N, H, Z>,
    mut params: &[f32],
    x: &[f32],
    s: Scratch<'_>,
    xhat: &mut [f32],
) -> Option<f32> {
    let (n, h, z) = (d.n.value(), d.h.value(), d.z.value());
    let p = &mut params;
    let (w1, b1) = (take(p, h * n)?, take(p, h)?);
    affine(w1, b1, d.h, d.n, false, x, s.h1, layers.encoder_hidden)?;
    let (w2, b2) = (take(p, z * h)?, take(p, z)?);
    let mut distance = 0.0;
    match arch {
        Arch::Dense | Arch::Tied => affine(w2, b2, d.z, d.h, false, s.h1, s.z, layers.code)?,
        Arch::VqVae { codebook } => {
            affine(w2, b2, d.z, d.h, false, s.h1, s.z, layers.code)?;
            let codes = take(p, codebook.checked_mul(z)?)?;
            distance = crate::vq::quantise(codes, s.z.get_mut(..z)?)?;
        }
        Arch::Vae => {
            affine(w2, b2, d.z, d.h, false, s.h1, s.z, Activation::Linear)?;
            let (wl, bl) = (take(p, z * h)?, take(p, z)?);
            affine(wl, bl, d.z, d.h, false, s.h1, s.logvar, Activation::Linear)?;
        }
    }
    match arch {
        Arch::Dense | Arch::Vae | Arch::VqVae { .. } => {
            let (w3, b3) = (take(p, h * z)?, take(p, h)?);
            affine(w3, b3, d.h, d.z, false, s.z, s.h2, layers.decoder_hidden)?;
            let (w4, b4) = (take(p, n * h)?, take(p, n)?);
            affine(w4, b4, d.n, d.h, false, s.h2, xhat, layers.output)?;
        }
        Arch::Tied => {
            let b3 = take(p, h)?;
            affine(w2, b3, d.h, d.z, true, s.z, s.h2, layers.decoder_hidden)?;
            let b4 = take(p, n)?;
            affine(w1, b4, d.n, d.h, true, s.h2, xhat, layers.output)?;
        }
    }
    p.is_empty().then_some(distance)
}

/// `KL(N(mu, exp(logvar)) || N(0, I))` in closed form, log-variances clamped to
/// `+-LOGVAR_CLAMP`.
#[must_use]
pub fn kl_divergence(mu: &[f32], logvar: &[f32]) -> f32 {
    let mut kl = 0.0;
    for (&m, &lv) in mu.iter().zip(logvar) {
        let lv = lv.clamp(-LOGVAR_CLAMP, LOGVAR_CLAMP);
        kl += m * m + libm::expf(lv) - lv - 1.0;
    }
    0.5 * kl
}

impl ErrorMetric {
    /// Error of one entry: input `x`, reconstruction `xhat`. Never negative.
    ///
    /// # Examples
    /// ```
    /// use sensorae::ErrorMetric;
    /// assert_eq!(ErrorMetric::Mse.entry(1.0, 3.0), 4.0);
    /// assert_eq!(ErrorMetric::Mae.entry(1.0, 3.0), 2.0);
    /// assert!((ErrorMetric::Bce.entry(1.0, 0.5) - core::f32::consts::LN_2).abs() < 1e-6);
    /// ```
    #[must_use]
    #[inline]
    pub fn entry(self, x: f32, xhat: f32) -> f32 {
        match self {
            ErrorMetric::Mse => (x - xhat) * (x - xhat),
            ErrorMetric::Mae => (x - xhat).abs(),
            ErrorMetric::Bce => {
                let x = x.clamp(0.0, 1.0);
                let p = xhat.clamp(BCE_EPS, 1.0 - BCE_EPS);
                -(x * libm::logf(p) + (1.0 - x) * libm::logf(1.0 - p))
            }
        }
    }
}

/// Per-channel mean errors of a time-major window (`x[t * C + c]`), written into `out`
/// (length C). Returns the mean over all entries.
pub(crate) fn channel_errors(metric: ErrorMetric, x: &[f32], xhat: &[f32], out: &mut [f32]) -> f32 {
    let channels = out.len();
    out.fill(0.0);
    if channels == 0 {
        return 0.0;
    }
    for (xs, ys) in x.chunks_exact(channels).zip(xhat.chunks_exact(channels)) {
        for ((o, &a), &b) in out.iter_mut().zip(xs).zip(ys) {
            *o += metric.entry(a, b);
        }
    }
    let steps = (x.len() / channels).max(1) as f32;
    let mut total = 0.0;
    for o in out.iter_mut() {
        total += *o;
        *o /= steps;
    }
    total / (steps * channels as f32)
}
