//! The hierarchical (coarse/fine) autoencoder's forward and backward passes, built from two
//! dense networks of the parent module (see `sensorae`'s `hier` module for the model).
//!
//! For a window `x` (`x[t * C + c]`), `P x` are its `N / b` per-channel block means and
//! `U` repeats each mean over its block, so `U P` and `Q = I - U P` are orthogonal projections
//! onto the coarse and the fine part. The coarse network reconstructs `P x` from `P x`, the
//! fine network `Q x` from `Q x`, and
//!
//! ```text
//! xhat = g_c U dec_c + g_f Q dec_f
//! L    = w_c * mean_{N/b} e(P x, g_c dec_c) + w_f * mean_N e(Q x, g_f Q dec_f)
//!        + l_c g_c^2 + l_f g_f^2 (+ weight decay)
//! ```
//!
//! with `e` the per-entry error (squared or absolute). For MSE with `w_c = w_f = 1`, `L` is the
//! detector's mean score of `xhat`: `||U v||^2 = b ||v||^2` and the parts are orthogonal. An SSIM
//! setting combines `alpha * (those two terms) + (1 - alpha) * (1 - SSIM(x, xhat))`.

use core::ops::Range;

use sensorae::ErrorMetric;

use super::{
    Batch, Float, Layout, Parts, Penalties, Spec, Workspace, backprop, forward_network, mul_d1,
};

/// Where a hierarchical model's coarse path and gains live; the fine path is the enclosing
/// [`Layout`]'s dense network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hier {
    /// Time steps per block (b).
    pub block: usize,
    /// Channels per sample (C).
    pub channels: usize,
    /// The coarse network, `N/b -> Hc -> Zc -> Hc -> N/b`, after the fine one.
    pub coarse: Layout,
    /// `[g_c, g_f]`, the last two parameters.
    pub gains: Range<usize>,
}

/// The weights of each scale in the hierarchical objective (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct ScaleWeights<T> {
    /// `w_c`, on the coarse reconstruction error.
    pub coarse: T,
    /// `w_f`, on the fine reconstruction error.
    pub fine: T,
    /// `l_c`, on `g_c^2`.
    pub coarse_gain: T,
    /// `l_f`, on `g_f^2`.
    pub fine_gain: T,
}

impl<T: Float> ScaleWeights<T> {
    /// Both errors weighted 1, gains free.
    #[cfg(test)]
    pub(crate) fn even() -> Self {
        ScaleWeights {
            coarse: T::of(1.0),
            fine: T::of(1.0),
            coarse_gain: T::of(0.0),
            fine_gain: T::of(0.0),
        }
    }
}

/// The coarse network's workspace and the buffers of the split and the combination, one
/// column per window.
pub(crate) struct HierWorkspace<T> {
    coarse: Workspace<T>,
    /// `P x` of the inputs: the coarse network's input.
    xc: Vec<T>,
    /// `Q x` of the inputs: the fine network's input.
    xf: Vec<T>,
    /// `P` and `Q` of the targets.
    tc: Vec<T>,
    tf: Vec<T>,
    /// `Q dec_f`: the fine output projected onto the fine part.
    proj: Vec<T>,
    /// Block means (scratch).
    means: Vec<T>,
    /// The reconstruction `xhat`.
    out: Vec<T>,
    /// dL/d(g_c dec_c) and dL/d(g_f Q dec_f).
    r_c: Vec<T>,
    r_f: Vec<T>,
    /// The SSIM term's gradient in `xhat`.
    g_ssim: Vec<T>,
}

impl<T: Float> HierWorkspace<T> {
    pub(crate) fn new(hier: &Hier, n: usize, cap: usize) -> Self {
        let nc = hier.coarse.n;
        let buf = |len: usize| vec![T::of(0.0); len * cap];
        HierWorkspace {
            coarse: Workspace::new(&hier.coarse, cap, false),
            xc: buf(nc),
            xf: buf(n),
            tc: buf(nc),
            tf: buf(n),
            proj: buf(n),
            means: buf(nc),
            out: buf(n),
            r_c: buf(nc),
            r_f: buf(n),
            g_ssim: buf(n),
        }
    }
}

impl<T: Float> Workspace<T> {
    /// Hierarchical models: the reconstruction, the coarse output `dec_c` and the projected
    /// fine output `Q dec_f` of the last forward pass.
    #[cfg(test)]
    pub(crate) fn scales(&self, cols: usize) -> (&[T], &[T], &[T]) {
        let hw = self.hier.as_ref().expect("a hierarchical workspace");
        let (n, nc) = (self.xhat.len() / self.cap, hw.xc.len() / self.cap);
        (
            &hw.out[..n * cols],
            &hw.coarse.xhat[..nc * cols],
            &hw.proj[..n * cols],
        )
    }
}

/// `out` = the block means of each window (column of `n` values) of `x`: `out[k * C + c]` is
/// the mean of channel `c` over time steps `k b .. (k + 1) b`, summed in time order and divided
/// by `b`, as the core does.
fn block_means<T: Float>(hier: &Hier, n: usize, x: &[T], out: &mut [T], cols: usize) {
    let (c, b) = (hier.channels, hier.block);
    let nc = n / b;
    let steps = T::of(b as f64);
    for (xw, ow) in x[..n * cols].chunks_exact(n).zip(out.chunks_exact_mut(nc)) {
        ow.iter_mut().for_each(|v| *v = T::of(0.0));
        for (t, sample) in xw.chunks_exact(c).enumerate() {
            let row = &mut ow[(t / b) * c..(t / b + 1) * c];
            for (o, &v) in row.iter_mut().zip(sample) {
                *o += v;
            }
        }
        ow.iter_mut().for_each(|v| *v /= steps);
    }
}

/// `out = x - U means`, window by window.
fn subtract_means<T: Float>(hier: &Hier, n: usize, x: &[T], means: &[T], out: &mut [T]) {
    let (c, b) = (hier.channels, hier.block);
    let nc = n / b;
    for ((xw, mw), ow) in x
        .chunks_exact(n)
        .zip(means.chunks_exact(nc))
        .zip(out.chunks_exact_mut(n))
    {
        for (t, (xs, os)) in xw.chunks_exact(c).zip(ow.chunks_exact_mut(c)).enumerate() {
            let m = &mw[(t / b) * c..(t / b + 1) * c];
            for ((o, &v), &m) in os.iter_mut().zip(xs).zip(m) {
                *o = v - m;
            }
        }
    }
}

/// The forward pass: split the input, run both networks, combine into `xhat`.
pub(super) fn forward<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    hier: &Hier,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    cols: usize,
) {
    let n = lay.n;
    let nc = hier.coarse.n;
    let mut hw = ws.hier.take().expect("a hierarchical layout's workspace");
    let HierWorkspace {
        coarse,
        xc,
        xf,
        proj,
        means,
        out,
        ..
    } = &mut *hw;
    block_means(hier, n, input, xc, cols);
    subtract_means(hier, n, &input[..n * cols], xc, xf);
    forward_network(spec, lay, p, ws, xf, None, cols);
    forward_network(spec, &hier.coarse, p, coarse, xc, None, cols);
    let (g_c, g_f) = (p[hier.gains.start], p[hier.gains.start + 1]);
    block_means(hier, n, &ws.xhat, means, cols);
    subtract_means(hier, n, &ws.xhat[..n * cols], means, proj);
    let (c, b) = (hier.channels, hier.block);
    for ((pw, dw), ow) in proj[..n * cols]
        .chunks_exact(n)
        .zip(coarse.xhat[..nc * cols].chunks_exact(nc))
        .zip(out.chunks_exact_mut(n))
    {
        for (t, (ps, os)) in pw.chunks_exact(c).zip(ow.chunks_exact_mut(c)).enumerate() {
            let dc = &dw[(t / b) * c..(t / b + 1) * c];
            for ((o, &q), &d) in os.iter_mut().zip(ps).zip(dc) {
                *o = g_f * q + g_c * d;
            }
        }
    }
    ws.hier = Some(hw);
}

/// Error of one entry and its derivative in the reconstruction `y`; BCE on probabilities
/// clamped as the detector clamps them (no gradient where clamped).
fn entry<T: Float>(metric: ErrorMetric, y: T, t: T) -> (T, T) {
    let (zero, one) = (T::of(0.0), T::of(1.0));
    match metric {
        ErrorMetric::Mse => ((y - t) * (y - t), T::of(2.0) * (y - t)),
        ErrorMetric::Mae => {
            let d = y - t;
            let slope = if d > zero {
                one
            } else if d < zero {
                -one
            } else {
                zero
            };
            (d.fabs(), slope)
        }
        ErrorMetric::Bce => {
            let eps = T::of(f64::from(sensorae::BCE_EPS));
            let t = t.clamp(zero, one);
            let q = y.clamp(eps, one - eps);
            let loss = -(t * q.fln() + (one - t) * (one - q).fln());
            let slope = if y > eps && y < one - eps {
                (q - t) / (q * (one - q))
            } else {
                zero
            };
            (loss, slope)
        }
    }
}

/// The detector's mean score of the reconstruction, averaged over the batch (the validation
/// loss).
pub(super) fn eval_loss<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    hier: &Hier,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    cols: usize,
) -> T {
    forward(spec, lay, hier, p, ws, input, cols);
    let hw = ws.hier.as_ref().expect("a hierarchical layout's workspace");
    let len = lay.n * cols;
    let sum = hw.out[..len]
        .iter()
        .zip(&input[..len])
        .fold(T::of(0.0), |a, (&y, &t)| a + entry(spec.loss, y, t).0);
    sum / T::of(len as f64)
}

/// The objective of the module docs and its gradient (overwriting `grad`).
#[allow(clippy::too_many_arguments)] // reason: the parent's signature plus the hierarchy
pub(super) fn loss_and_grad<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    hier: &Hier,
    pen: &Penalties<T>,
    p: &[T],
    ws: &mut Workspace<T>,
    batch: Batch<'_, T>,
    grad: &mut [T],
) -> Parts<T> {
    let (n, b) = (lay.n, batch.cols);
    let nc = hier.coarse.n;
    let (zero, one, two) = (T::of(0.0), T::of(1.0), T::of(2.0));
    grad.iter_mut().for_each(|g| *g = zero);
    forward(spec, lay, hier, p, ws, batch.input, b);
    let mut hw = ws.hier.take().expect("a hierarchical layout's workspace");
    let HierWorkspace {
        coarse,
        xc,
        xf,
        tc,
        tf,
        proj,
        means,
        out,
        r_c,
        r_f,
        g_ssim,
    } = &mut *hw;
    let target = &batch.target[..n * b];
    block_means(hier, n, target, tc, b);
    subtract_means(hier, n, target, tc, tf);
    let (g_c, g_f) = (p[hier.gains.start], p[hier.gains.start + 1]);
    let w = pen.scales;

    // Each scale's error, and r = dL/d(that scale's reconstruction).
    let scale_c = w.coarse / T::of((nc * b) as f64);
    let scale_f = w.fine / T::of((n * b) as f64);
    let mut sum_c = zero;
    for ((r, &d), &t) in r_c
        .iter_mut()
        .zip(&coarse.xhat[..nc * b])
        .zip(&tc[..nc * b])
    {
        let (l, slope) = entry(spec.loss, g_c * d, t);
        sum_c += l;
        *r = scale_c * slope;
    }
    let mut sum_f = zero;
    for ((r, &q), &t) in r_f.iter_mut().zip(&proj[..n * b]).zip(&tf[..n * b]) {
        let (l, slope) = entry(spec.loss, g_f * q, t);
        sum_f += l;
        *r = scale_f * slope;
    }
    let pixel = scale_c * sum_c + scale_f * sum_f;
    let recon = match spec.ssim {
        None => pixel,
        Some(s) => {
            // xhat = U (g_c dec_c) + g_f Q dec_f, so dL/d(g_c dec_c) gains U^T of the SSIM
            // gradient (its block sums) and dL/d(g_f Q dec_f) the gradient itself.
            let beta = one - s.alpha;
            r_c[..nc * b].iter_mut().for_each(|r| *r *= s.alpha);
            r_f[..n * b].iter_mut().for_each(|r| *r *= s.alpha);
            let gs = &mut g_ssim[..n * b];
            gs.iter_mut().for_each(|g| *g = zero);
            let structural = s.loss(target, &out[..n * b], n, b, beta, Some(gs));
            for (r, &g) in r_f[..n * b].iter_mut().zip(gs.iter()) {
                *r += g;
            }
            block_means(hier, n, gs, means, b);
            let bt = T::of(hier.block as f64);
            for (r, &m) in r_c[..nc * b].iter_mut().zip(&means[..nc * b]) {
                *r += bt * m;
            }
            s.alpha * pixel + beta * structural
        }
    };

    // Gains, and the gain penalty.
    let mut g_gc = two * w.coarse_gain * g_c;
    for (&r, &d) in r_c[..nc * b].iter().zip(&coarse.xhat[..nc * b]) {
        g_gc += r * d;
    }
    let mut g_gf = two * w.fine_gain * g_f;
    for (&r, &q) in r_f[..n * b].iter().zip(&proj[..n * b]) {
        g_gf += r * q;
    }
    grad[hier.gains.start] = g_gc;
    grad[hier.gains.start + 1] = g_gf;
    let gain_penalty = w.coarse_gain * g_c * g_c + w.fine_gain * g_f * g_f;

    // Into the coarse network: dL/d dec_c = g_c r_c, times the output activation's slope.
    let [_, _, _, a4] = spec.acts;
    for (g, &r) in coarse.g_out[..nc * b].iter_mut().zip(&r_c[..nc * b]) {
        *g = g_c * r;
    }
    mul_d1(&mut coarse.g_out[..nc * b], &coarse.xhat[..nc * b], a4);
    // Into the fine network: dL/d dec_f = g_f Q r_f (Q is symmetric).
    block_means(hier, n, r_f, means, b);
    subtract_means(hier, n, &r_f[..n * b], means, &mut ws.g_out[..n * b]);
    ws.g_out[..n * b].iter_mut().for_each(|g| *g *= g_f);
    mul_d1(&mut ws.g_out[..n * b], &ws.xhat[..n * b], a4);

    let fine = backprop(spec, lay, pen, p, ws, xf, None, b, grad);
    let coarse_terms = backprop(spec, &hier.coarse, pen, p, coarse, xc, None, b, grad);
    ws.hier = Some(hw);
    Parts {
        objective: recon + gain_penalty + fine.objective + coarse_terms.objective,
        recon,
        kl: zero,
        code_distance: zero,
    }
}
