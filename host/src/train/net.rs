//! Batched forward and backward passes of every autoencoder family, generic over the float type
//! so gradient checks run in `f64` while training runs in `f32`.
//!
//! A batch is a column-major matrix with one sample per column (features x batch), so each
//! window is one contiguous slice and every layer is one matrix-matrix product. Parameters and
//! gradients are flat slices in model-file order (see [`Layout`]); weight matrices are viewed in
//! place, column-major with rows = layer outputs, exactly as `sensorae`'s inference reads them.

use core::ops::Range;

use nalgebra::{DMatrixViewMut, Dyn, MatrixView, RealField};
use sensorae::{Activation, Arch, ErrorMetric, LOGVAR_CLAMP};

use super::ssim::Ssim;

mod hier;

pub(crate) use hier::{Hier, ScaleWeights};

/// The float type the maths runs in.
pub(crate) trait Float: RealField + Copy {
    fn of(x: f64) -> Self;
    fn to_f32(self) -> f32;
    fn to_f64(self) -> f64;
    fn fexp(self) -> Self;
    fn fln(self) -> Self;
    fn fln1p(self) -> Self;
    fn ftanh(self) -> Self;
    fn fabs(self) -> Self;
    fn fsqrt(self) -> Self;
}

macro_rules! impl_float {
    ($t:ty, $tanh:expr) => {
        impl Float for $t {
            #[inline]
            fn of(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f32(self) -> f32 {
                self as f32
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn fexp(self) -> Self {
                self.exp()
            }
            #[inline]
            fn fln(self) -> Self {
                self.ln()
            }
            #[inline]
            fn fln1p(self) -> Self {
                self.ln_1p()
            }
            #[inline]
            fn ftanh(self) -> Self {
                $tanh(self)
            }
            #[inline]
            fn fabs(self) -> Self {
                self.abs()
            }
            #[inline]
            fn fsqrt(self) -> Self {
                self.sqrt()
            }
        }
    };
}
// f32 trains with the detector's own `tanh` (a rational approximation within 4e-7): libm's
// `tanhf` was over half of an epoch, and training now sees exactly what scoring computes. f64
// (gradient checks) keeps the exact one.
impl_float!(f32, |x| Activation::Tanh.apply(x));
impl_float!(f64, f64::tanh);

/// An activation with its derivatives written as functions of the activation's *output*, so
/// the backward pass needs no pre-activation buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Act<T> {
    Linear,
    Relu,
    Leaky(T),
    Sigmoid,
    Tanh,
    /// Soft-thresholding `sign(x) max(|x| - lambda, 0)` with this lambda.
    Soft(T),
}

impl<T: Float> Act<T> {
    pub(crate) fn new(a: Activation) -> Self {
        match a {
            Activation::Linear => Act::Linear,
            Activation::Relu => Act::Relu,
            Activation::LeakyRelu { slope } => Act::Leaky(T::of(f64::from(slope))),
            Activation::Sigmoid => Act::Sigmoid,
            Activation::Tanh => Act::Tanh,
            Activation::SoftThreshold { lambda } => Act::Soft(T::of(f64::from(lambda))),
        }
    }

    fn apply(self, ys: &mut [T]) {
        let zero = T::of(0.0);
        let one = T::of(1.0);
        match self {
            Act::Linear => {}
            Act::Relu => ys.iter_mut().for_each(|y| {
                if *y <= zero {
                    *y = zero;
                }
            }),
            Act::Leaky(s) => ys.iter_mut().for_each(|y| {
                if *y <= zero {
                    *y *= s;
                }
            }),
            Act::Sigmoid => ys.iter_mut().for_each(|y| *y = one / (one + (-*y).fexp())),
            Act::Tanh => ys.iter_mut().for_each(|y| *y = y.ftanh()),
            Act::Soft(l) => ys.iter_mut().for_each(|y| {
                *y = if *y > l {
                    *y - l
                } else if *y < -l {
                    *y + l
                } else {
                    zero
                };
            }),
        }
    }

    /// First derivative at the point whose output is `y`. For ReLU and leaky ReLU `y > 0`
    /// exactly when the input was positive (the slope is in `[0, 1)`).
    #[inline]
    fn d1(self, y: T) -> T {
        let one = T::of(1.0);
        match self {
            Act::Linear => one,
            Act::Relu => {
                if y > T::of(0.0) {
                    one
                } else {
                    T::of(0.0)
                }
            }
            Act::Leaky(s) => {
                if y > T::of(0.0) {
                    one
                } else {
                    s
                }
            }
            Act::Sigmoid => y * (one - y),
            Act::Tanh => one - y * y,
            // The output is 0 exactly when |x| <= lambda, where the slope is 0.
            Act::Soft(_) => {
                if y == T::of(0.0) {
                    T::of(0.0)
                } else {
                    one
                }
            }
        }
    }

    /// Second derivative at the point whose output is `y` (zero for piecewise-linear ones).
    #[inline]
    fn d2(self, y: T) -> T {
        let one = T::of(1.0);
        let two = T::of(2.0);
        match self {
            Act::Linear | Act::Relu | Act::Leaky(_) | Act::Soft(_) => T::of(0.0),
            Act::Sigmoid => y * (one - y) * (one - two * y),
            Act::Tanh => -two * y * (one - y * y),
        }
    }

    fn curved(self) -> bool {
        matches!(self, Act::Sigmoid | Act::Tanh)
    }
}

/// Where each tensor lives in the flat parameter vector, in model-file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    pub arch: Arch,
    pub n: usize,
    pub h: usize,
    pub z: usize,
    pub w1: Range<usize>,
    pub b1: Range<usize>,
    /// Code weights (the mean head for the VAE).
    pub w2: Range<usize>,
    pub b2: Range<usize>,
    /// VQ-VAE codebook, K codes of Z values one after the other (empty otherwise).
    pub codebook: Range<usize>,
    /// Number of codes K (0 without a codebook).
    pub k: usize,
    /// VAE log-variance head (empty otherwise).
    pub wl: Range<usize>,
    pub bl: Range<usize>,
    /// Decoder hidden weights (empty when tied).
    pub w3: Range<usize>,
    pub b3: Range<usize>,
    /// Output weights (empty when tied).
    pub w4: Range<usize>,
    pub b4: Range<usize>,
    pub total: usize,
    /// Hierarchical models: the coarse path and the gains, after the fine path that the fields
    /// above describe (a dense network on the fine part).
    pub hier: Option<Box<Hier>>,
}

impl Layout {
    /// The layout of `arch` for windows of `channels` channels, N inputs, H hidden and Z code.
    pub(crate) fn new(arch: Arch, channels: usize, n: usize, h: usize, z: usize) -> Self {
        let mut lay = Layout::starting_at(arch, n, h, z, 0);
        if let Arch::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } = arch
        {
            let nc = n / block.max(1);
            let coarse =
                Layout::starting_at(Arch::Dense, nc, coarse_hidden, coarse_latent, lay.total);
            let gains = coarse.total..coarse.total + sensorae::GAINS;
            lay.total = gains.end;
            lay.hier = Some(Box::new(Hier {
                block,
                channels,
                coarse,
                gains,
            }));
        }
        lay
    }

    /// One network's tensors from parameter `start` on (a hierarchical model's fine path, or
    /// its coarse path as a dense network).
    fn starting_at(arch: Arch, n: usize, h: usize, z: usize, start: usize) -> Self {
        let mut at = start;
        let mut next = |len: usize| {
            let r = at..at + len;
            at += len;
            r
        };
        let (w1, b1) = (next(h * n), next(h));
        let (w2, b2) = (next(z * h), next(z));
        let k = match arch {
            Arch::VqVae { codebook } => codebook,
            _ => 0,
        };
        let codebook = next(k * z);
        let (wl, bl) = if arch == Arch::Vae {
            (next(z * h), next(z))
        } else {
            (next(0), next(0))
        };
        let (w3, b3, w4, b4) = if arch == Arch::Tied {
            let w3 = next(0);
            let b3 = next(h);
            let w4 = next(0);
            (w3, b3, w4, next(n))
        } else {
            (next(h * z), next(h), next(n * h), next(n))
        };
        Layout {
            arch,
            n,
            h,
            z,
            w1,
            b1,
            w2,
            b2,
            codebook,
            k,
            wl,
            bl,
            w3,
            b3,
            w4,
            b4,
            total: at,
            hier: None,
        }
    }

    /// The weight matrices (what weight decay applies to; empty ranges for absent ones).
    pub(crate) fn weights(&self) -> [Range<usize>; 5] {
        [
            self.w1.clone(),
            self.w2.clone(),
            self.wl.clone(),
            self.w3.clone(),
            self.w4.clone(),
        ]
    }
}

/// What the network computes besides its sizes: activations and reconstruction loss.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spec<T> {
    /// Encoder hidden, code, decoder hidden, output.
    pub acts: [Act<T>; 4],
    pub loss: ErrorMetric,
    /// Trains on `alpha * pixel + (1 - alpha) * (1 - SSIM)` instead of the pixel loss alone.
    pub ssim: Option<Ssim<T>>,
}

/// Regularisation weights of the training objective.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Penalties<T> {
    /// `0.5 * wd * sum(w^2)` over weights, not biases.
    pub weight_decay: T,
    /// `lambda * |z|_1` on the code, batch-averaged.
    pub l1_code: T,
    /// `beta * sum_j KL(rho || rho_hat_j)` on the encoder hidden batch means: (rho, beta).
    pub sparsity: Option<(T, T)>,
    /// `lambda * ||J_f(x)||_F^2` of the encoder, batch-averaged.
    pub contractive: T,
    /// VAE: weight of `KL(q(z|x) || N(0, I)) / N` (beta times the warm-up factor).
    pub kl: T,
    /// VQ-VAE: commitment weight beta of `(||sg[z_e] - e||^2 + beta ||z_e - sg[e]||^2) / N`.
    pub commitment: T,
    /// Hierarchical: the weights of each scale's reconstruction error and gain.
    pub scales: ScaleWeights<T>,
}

impl<T: Float> Penalties<T> {
    #[cfg(test)]
    pub(crate) fn none() -> Self {
        Penalties {
            weight_decay: T::of(0.0),
            l1_code: T::of(0.0),
            sparsity: None,
            contractive: T::of(0.0),
            kl: T::of(0.0),
            commitment: T::of(0.0),
            scales: ScaleWeights::even(),
        }
    }
}

/// The terms of one batch's objective, each a batch mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Parts<T> {
    /// Everything that was differentiated.
    pub objective: T,
    /// Reconstruction loss alone.
    pub recon: T,
    /// VAE KL term before weighting (0 for other families).
    pub kl: T,
    /// VQ-VAE: mean squared distance from the code to its nearest codebook entry per window
    /// (0 for other families).
    pub code_distance: T,
}

/// Activations and gradients of one batch, allocated once for the largest batch and reused.
pub(crate) struct Workspace<T> {
    cap: usize,
    h1: Vec<T>,
    /// Code activation, or the VAE mean.
    code: Vec<T>,
    logvar: Vec<T>,
    /// VAE sample `mu + sigma * eps` (the decoder input while training).
    sample: Vec<T>,
    /// VQ-VAE: the nearest code of each column (the decoder input) and its index.
    quant: Vec<T>,
    nearest: Vec<usize>,
    h2: Vec<T>,
    logit: Vec<T>,
    xhat: Vec<T>,
    g_out: Vec<T>,
    g_h2: Vec<T>,
    g_code: Vec<T>,
    g_logvar: Vec<T>,
    g_h1: Vec<T>,
    /// SSIM gradient scratch (grown on first use).
    g_ssim: Vec<T>,
    // Contractive penalty scratch.
    gram: Vec<T>,
    gram_grad: Vec<T>,
    u: Vec<T>,
    v: Vec<T>,
    uc: Vec<T>,
    /// Hierarchical models: the coarse path and the combination (the fields above serve the
    /// fine path).
    hier: Option<Box<hier::HierWorkspace<T>>>,
}

impl<T: Float> Workspace<T> {
    pub(crate) fn new(layout: &Layout, cap: usize, contractive: bool) -> Self {
        let (n, h, z) = (layout.n, layout.h, layout.z);
        let vae = layout.arch == Arch::Vae;
        let buf = |len: usize| vec![T::of(0.0); len];
        let cz = if contractive { cap * z * h } else { 0 };
        let hh = if contractive { h * h } else { 0 };
        let vz = if vae { cap * z } else { 0 };
        let vq = layout.k > 0;
        Workspace {
            cap,
            h1: buf(cap * h),
            code: buf(cap * z),
            logvar: buf(vz),
            sample: buf(vz),
            quant: buf(if vq { cap * z } else { 0 }),
            nearest: vec![0; if vq { cap } else { 0 }],
            h2: buf(cap * h),
            logit: buf(cap * n),
            xhat: buf(cap * n),
            g_out: buf(cap * n),
            g_h2: buf(cap * h),
            g_code: buf(cap * z),
            g_logvar: buf(vz),
            g_h1: buf(cap * h),
            g_ssim: Vec::new(),
            gram: buf(hh),
            gram_grad: buf(hh),
            u: buf(cz),
            v: buf(cz),
            uc: buf(cz),
            hier: layout
                .hier
                .as_ref()
                .map(|hier| Box::new(hier::HierWorkspace::new(hier, n, cap))),
        }
    }

    /// Largest batch this workspace holds.
    pub(crate) fn capacity(&self) -> usize {
        self.cap
    }

    /// Reconstructions of the last forward pass, one column per sample.
    #[cfg(test)]
    pub(crate) fn xhat(&self, cols: usize, n: usize) -> &[T] {
        &self.xhat[..cols * n]
    }

    /// Encoder hidden activations of the last forward pass.
    #[cfg(test)]
    pub(crate) fn h1(&self, cols: usize, h: usize) -> &[T] {
        &self.h1[..cols * h]
    }

    /// VQ-VAE: the squared distance from each column's code to its nearest codebook entry in
    /// the last forward pass.
    #[cfg(test)]
    pub(crate) fn code_distances(&self, cols: usize, z: usize) -> Vec<T> {
        (0..cols)
            .map(|col| {
                let r = col * z..(col + 1) * z;
                self.code[r.clone()]
                    .iter()
                    .zip(&self.quant[r])
                    .fold(T::of(0.0), |a, (&c, &q)| a + (c - q) * (c - q))
            })
            .collect()
    }

    /// Code (or VAE mean) and VAE log-variance (empty for other families) of the last
    /// forward pass.
    #[cfg(test)]
    pub(crate) fn code(&self, cols: usize, z: usize) -> (&[T], &[T]) {
        let lv = if self.logvar.is_empty() {
            &self.logvar[..]
        } else {
            &self.logvar[..cols * z]
        };
        (&self.code[..cols * z], lv)
    }
}

type View<'a, T> = MatrixView<'a, T, Dyn, Dyn, Dyn, Dyn>;

/// The `rows x cols` column-major matrix at the start of `s`.
fn m<T: Float>(s: &[T], rows: usize, cols: usize) -> View<'_, T> {
    View::from_slice_with_strides_generic(
        &s[..rows * cols],
        Dyn(rows),
        Dyn(cols),
        Dyn(1),
        Dyn(rows),
    )
}

/// The transpose (`cols x rows`) of the `rows x cols` column-major matrix at the start of `s`,
/// without copying: matrixmultiply takes the strides.
fn mt<T: Float>(s: &[T], rows: usize, cols: usize) -> View<'_, T> {
    View::from_slice_with_strides_generic(
        &s[..rows * cols],
        Dyn(cols),
        Dyn(rows),
        Dyn(rows),
        Dyn(1),
    )
}

/// `out = alpha * a * b + beta * out`, `out` being the `a.nrows() x b.ncols()` matrix at the
/// start of `out`.
///
/// nalgebra 0.35 hands a product to matrixmultiply only when every dimension exceeds 5; below
/// that its `gemv` fallback walks a strided column by its *slice* length and reads past the
/// vector when the row stride is not 1 (our transposed views). Small products therefore take
/// a plain loop here.
fn gemm<T: Float>(out: &mut [T], alpha: T, a: View<'_, T>, b: View<'_, T>, beta: T) {
    const SMALL: usize = 5;
    let (r, k, c) = (a.nrows(), a.ncols(), b.ncols());
    let out = &mut out[..r * c];
    if r > SMALL && c > SMALL && k > SMALL {
        let mut o = DMatrixViewMut::from_slice(out, r, c);
        o.gemm(alpha, &a, &b, beta);
        return;
    }
    for (j, col) in out.chunks_exact_mut(r).enumerate() {
        if beta == T::of(0.0) {
            col.iter_mut().for_each(|v| *v = T::of(0.0));
        } else {
            col.iter_mut().for_each(|v| *v *= beta);
        }
        for l in 0..k {
            let blj = alpha * b[(l, j)];
            for (i, v) in col.iter_mut().enumerate() {
                *v += a[(i, l)] * blj;
            }
        }
    }
}

/// Adds `b` to every column of the `rows x cols` matrix `y`.
fn add_bias<T: Float>(y: &mut [T], b: &[T], rows: usize, cols: usize) {
    for col in y[..rows * cols].chunks_exact_mut(rows) {
        for (v, &bb) in col.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// `dst +=` the row sums (sums over the batch) of the `rows x cols` matrix `g`.
fn add_row_sums<T: Float>(dst: &mut [T], g: &[T], rows: usize, cols: usize) {
    for col in g[..rows * cols].chunks_exact(rows) {
        for (d, &v) in dst.iter_mut().zip(col) {
            *d += v;
        }
    }
}

/// `g *= act'(y)` element-wise.
fn mul_d1<T: Float>(g: &mut [T], y: &[T], act: Act<T>) {
    if act != Act::Linear {
        for (g, &y) in g.iter_mut().zip(y) {
            *g *= act.d1(y);
        }
    }
}

/// One batch: inputs (possibly corrupted), clean targets, and the VAE's standard-normal draws.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch<'a, T> {
    pub input: &'a [T],
    pub target: &'a [T],
    /// Masked autoencoder: 1 on the entries hidden from the input, 0 elsewhere; the pixel loss
    /// is the mean over the hidden entries only. `None`: every entry counts.
    pub mask: Option<&'a [T]>,
    /// VAE only: `None` decodes the mean (inference); `Some` samples `mu + sigma * eps`.
    pub eps: Option<&'a [T]>,
    pub cols: usize,
}

/// Runs the forward pass into the workspace.
pub(crate) fn forward<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    eps: Option<&[T]>,
    cols: usize,
) {
    match &lay.hier {
        Some(hier) => hier::forward(spec, lay, hier, p, ws, input, cols),
        None => forward_network(spec, lay, p, ws, input, eps, cols),
    }
}

/// The forward pass of one network (`lay`'s fields, whatever `lay.hier` says).
fn forward_network<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    eps: Option<&[T]>,
    cols: usize,
) {
    let (n, h, z, b) = (lay.n, lay.h, lay.z, cols);
    let (zero, one) = (T::of(0.0), T::of(1.0));
    let [a1, a2, a3, a4] = spec.acts;
    gemm(
        &mut ws.h1,
        one,
        m(&p[lay.w1.clone()], h, n),
        m(input, n, b),
        zero,
    );
    add_bias(&mut ws.h1, &p[lay.b1.clone()], h, b);
    a1.apply(&mut ws.h1[..h * b]);
    gemm(
        &mut ws.code,
        one,
        m(&p[lay.w2.clone()], z, h),
        m(&ws.h1, h, b),
        zero,
    );
    add_bias(&mut ws.code, &p[lay.b2.clone()], z, b);
    let vae = lay.arch == Arch::Vae;
    if vae {
        gemm(
            &mut ws.logvar,
            one,
            m(&p[lay.wl.clone()], z, h),
            m(&ws.h1, h, b),
            zero,
        );
        add_bias(&mut ws.logvar, &p[lay.bl.clone()], z, b);
    } else {
        a2.apply(&mut ws.code[..z * b]);
    }
    if lay.k > 0 {
        quantise(&p[lay.codebook.clone()], z, ws, b);
    }
    let decoder_in: &[T] = match (vae, eps) {
        _ if lay.k > 0 => &ws.quant,
        (true, Some(eps)) => {
            let half = T::of(0.5);
            let clamp = T::of(f64::from(LOGVAR_CLAMP));
            for (((s, &mu), &lv), &e) in ws.sample[..z * b]
                .iter_mut()
                .zip(&ws.code)
                .zip(&ws.logvar)
                .zip(eps)
            {
                let lv = lv.clamp(-clamp, clamp);
                *s = mu + (half * lv).fexp() * e;
            }
            &ws.sample
        }
        _ => &ws.code,
    };
    if lay.arch == Arch::Tied {
        let w2t = mt(&p[lay.w2.clone()], z, h);
        gemm(&mut ws.h2, one, w2t, m(decoder_in, z, b), zero);
    } else {
        gemm(
            &mut ws.h2,
            one,
            m(&p[lay.w3.clone()], h, z),
            m(decoder_in, z, b),
            zero,
        );
    }
    add_bias(&mut ws.h2, &p[lay.b3.clone()], h, b);
    a3.apply(&mut ws.h2[..h * b]);
    if lay.arch == Arch::Tied {
        gemm(
            &mut ws.logit,
            one,
            mt(&p[lay.w1.clone()], h, n),
            m(&ws.h2, h, b),
            zero,
        );
    } else {
        gemm(
            &mut ws.logit,
            one,
            m(&p[lay.w4.clone()], n, h),
            m(&ws.h2, h, b),
            zero,
        );
    }
    add_bias(&mut ws.logit, &p[lay.b4.clone()], n, b);
    ws.xhat[..n * b].copy_from_slice(&ws.logit[..n * b]);
    a4.apply(&mut ws.xhat[..n * b]);
}

/// Reconstruction loss of the last forward pass (mean over entries and batch) and, if `grad`,
/// its gradient at the output layer's pre-activation in `ws.g_out`. BCE is taken in logit
/// form (`softplus(a) - x a`, gradient `xhat - x`), which assumes a sigmoid output; its
/// targets are clamped to `[0, 1]` as the detector clamps them.
///
/// With `mask`, the pixel loss is the mean over the masked entries only (masked autoencoder).
/// With `structural` and an SSIM setting, the result is `alpha * pixel + (1 - alpha) *
/// (1 - SSIM)` (see [`super::ssim`]); otherwise the pixel loss alone.
#[allow(clippy::too_many_arguments)] // reason: two call sites; flags name what they switch
fn recon_loss<T: Float>(
    spec: &Spec<T>,
    n: usize,
    ws: &mut Workspace<T>,
    target: &[T],
    mask: Option<&[T]>,
    cols: usize,
    grad: bool,
    structural: bool,
) -> T {
    let len = n * cols;
    let (zero, one) = (T::of(0.0), T::of(1.0));
    let ssim = if structural { spec.ssim } else { None };
    let alpha = ssim.map_or(one, |s| s.alpha);
    let count = match mask {
        Some(m) => m[..len].iter().fold(zero, |a, &v| a + v),
        None => T::of(len as f64),
    };
    let scale = if count > zero { one / count } else { zero };
    let gscale = alpha * scale;
    let mut sum = zero;
    let (xhat, logit, t) = (&ws.xhat[..len], &ws.logit[..len], &target[..len]);
    let g = &mut ws.g_out[..len];
    let weight = |i: usize| mask.map_or(one, |m| m[i]);
    match spec.loss {
        ErrorMetric::Mse => {
            let two = T::of(2.0) * gscale;
            for (i, ((g, &y), &t)) in g.iter_mut().zip(xhat).zip(t).enumerate() {
                let d = y - t;
                let w = weight(i);
                sum += w * d * d;
                *g = w * two * d;
            }
        }
        ErrorMetric::Mae => {
            for (i, ((g, &y), &t)) in g.iter_mut().zip(xhat).zip(t).enumerate() {
                let d = y - t;
                let w = weight(i);
                sum += w * d.fabs();
                *g = w * if d > zero {
                    gscale
                } else if d < zero {
                    -gscale
                } else {
                    zero
                };
            }
        }
        ErrorMetric::Bce => {
            for (i, (((g, &y), &a), &t)) in g.iter_mut().zip(xhat).zip(logit).zip(t).enumerate() {
                let t = t.clamp(zero, one);
                let w = weight(i);
                let relu = if a > zero { a } else { zero };
                sum += w * (relu - t * a + (-a.fabs()).fexp().fln1p());
                *g = w * gscale * (y - t);
            }
        }
    }
    // The BCE logit gradient already includes the sigmoid's derivative.
    if grad && spec.loss != ErrorMetric::Bce {
        mul_d1(g, xhat, spec.acts[3]);
    }
    let pixel = sum * scale;
    let Some(s) = ssim else {
        return pixel;
    };
    let beta = one - s.alpha;
    let structural = if grad {
        if ws.g_ssim.len() < len {
            ws.g_ssim.resize(len, zero);
        }
        let gs = &mut ws.g_ssim[..len];
        gs.iter_mut().for_each(|v| *v = zero);
        let loss = s.loss(t, xhat, n, cols, beta, Some(gs));
        mul_d1(gs, xhat, spec.acts[3]);
        for (g, &v) in ws.g_out[..len].iter_mut().zip(gs.iter()) {
            *g += v;
        }
        loss
    } else {
        s.loss(t, xhat, n, cols, beta, None)
    };
    s.alpha * pixel + beta * structural
}

/// Deterministic reconstruction loss of a batch (no noise; the VAE decodes its mean): the
/// validation loss, and the detector's `Mean` score for MSE and MAE.
pub(crate) fn eval_loss<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    cols: usize,
) -> T {
    if let Some(hier) = &lay.hier {
        return hier::eval_loss(spec, lay, hier, p, ws, input, cols);
    }
    forward(spec, lay, p, ws, input, None, cols);
    recon_loss(spec, lay.n, ws, input, None, cols, false, false)
}

/// Objective and its gradient (written into `grad`, which is overwritten) for one batch.
pub(crate) fn loss_and_grad<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    pen: &Penalties<T>,
    p: &[T],
    ws: &mut Workspace<T>,
    batch: Batch<'_, T>,
    grad: &mut [T],
) -> Parts<T> {
    if let Some(hier) = &lay.hier {
        return hier::loss_and_grad(spec, lay, hier, pen, p, ws, batch, grad);
    }
    grad.iter_mut().for_each(|g| *g = T::of(0.0));
    forward(spec, lay, p, ws, batch.input, batch.eps, batch.cols);
    let recon = recon_loss(
        spec,
        lay.n,
        ws,
        batch.target,
        batch.mask,
        batch.cols,
        true,
        true,
    );
    let mut parts = backprop(
        spec,
        lay,
        pen,
        p,
        ws,
        batch.input,
        batch.eps,
        batch.cols,
        grad,
    );
    parts.objective += recon;
    parts.recon = recon;
    parts
}

/// The backward pass of one dense-family network (`lay`'s encoder and decoder), from
/// `ws.g_out` = dL/d(output pre-activation) of the last forward pass on `input`, adding the
/// parameter gradients into `grad` (zeroed by the caller). `eps`: the VAE's draws, when it
/// decoded a sample.
/// Returns the penalty terms this network adds (`recon` 0): the VAE's KL, the VQ-VAE's
/// codebook and commitment losses, L1, KL sparsity, the contractive penalty and weight decay.
#[allow(clippy::too_many_arguments)] // reason: two callers; each argument is one buffer
pub(crate) fn backprop<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    pen: &Penalties<T>,
    p: &[T],
    ws: &mut Workspace<T>,
    input: &[T],
    eps: Option<&[T]>,
    b: usize,
    grad: &mut [T],
) -> Parts<T> {
    let (n, h, z) = (lay.n, lay.h, lay.z);
    let (zero, one, half) = (T::of(0.0), T::of(1.0), T::of(0.5));
    let inv_b = one / T::of(b as f64);
    let [a1, a2, a3, _] = spec.acts;
    let vae = lay.arch == Arch::Vae;
    let tied = lay.arch == Arch::Tied;
    let mut objective = zero;
    let mut kl = zero;
    let mut code_distance = zero;

    // Output layer: g_out holds dL/d(logit).
    add_row_sums(&mut grad[lay.b4.clone()], &ws.g_out, n, b);
    if tied {
        // logit = W1^T h2  =>  dW1 += h2 g_out^T, dh2 = W1 g_out.
        let gw1 = &mut grad[lay.w1.clone()];
        gemm(gw1, one, m(&ws.h2, h, b), mt(&ws.g_out, n, b), one);
        gemm(
            &mut ws.g_h2,
            one,
            m(&p[lay.w1.clone()], h, n),
            m(&ws.g_out, n, b),
            zero,
        );
    } else {
        let gw4 = &mut grad[lay.w4.clone()];
        gemm(gw4, one, m(&ws.g_out, n, b), mt(&ws.h2, h, b), zero);
        gemm(
            &mut ws.g_h2,
            one,
            mt(&p[lay.w4.clone()], n, h),
            m(&ws.g_out, n, b),
            zero,
        );
    }
    // Decoder hidden layer.
    mul_d1(&mut ws.g_h2[..h * b], &ws.h2[..h * b], a3);
    add_row_sums(&mut grad[lay.b3.clone()], &ws.g_h2, h, b);
    let decoder_in: &[T] = if lay.k > 0 {
        &ws.quant
    } else if vae && eps.is_some() {
        &ws.sample
    } else {
        &ws.code
    };
    if tied {
        // h2 = act(W2^T z)  =>  dW2 += z g_h2^T, dz = W2 g_h2.
        let gw2 = &mut grad[lay.w2.clone()];
        gemm(gw2, one, m(decoder_in, z, b), mt(&ws.g_h2, h, b), one);
        gemm(
            &mut ws.g_code,
            one,
            m(&p[lay.w2.clone()], z, h),
            m(&ws.g_h2, h, b),
            zero,
        );
    } else {
        let gw3 = &mut grad[lay.w3.clone()];
        gemm(gw3, one, m(&ws.g_h2, h, b), mt(decoder_in, z, b), zero);
        gemm(
            &mut ws.g_code,
            one,
            mt(&p[lay.w3.clone()], h, z),
            m(&ws.g_h2, h, b),
            zero,
        );
    }

    if vae {
        // Per-entry ELBO: the KL is shared by the N entries the reconstruction averages over.
        let beta = pen.kl / T::of(n as f64);
        let clamp = T::of(f64::from(LOGVAR_CLAMP));
        for i in 0..z * b {
            let mu = ws.code[i];
            let lv = ws.logvar[i];
            let inside = lv > -clamp && lv < clamp;
            let lvc = lv.clamp(-clamp, clamp);
            let var = lvc.fexp();
            kl += half * (mu * mu + var - lvc - one);
            let dz = ws.g_code[i];
            let mut g_lv = zero;
            if let Some(eps) = eps {
                // z = mu + exp(lv / 2) * eps.
                g_lv = dz * half * (half * lvc).fexp() * eps[i];
            }
            g_lv += beta * inv_b * half * (var - one);
            // A clamped log-variance is constant.
            ws.g_logvar[i] = if inside { g_lv } else { zero };
            ws.g_code[i] = dz + beta * inv_b * mu;
        }
        kl *= inv_b;
        objective += beta * kl;
        let h1t = mt(&ws.h1, h, b);
        gemm(
            &mut grad[lay.w2.clone()],
            one,
            m(&ws.g_code, z, b),
            h1t,
            zero,
        );
        add_row_sums(&mut grad[lay.b2.clone()], &ws.g_code, z, b);
        gemm(
            &mut grad[lay.wl.clone()],
            one,
            m(&ws.g_logvar, z, b),
            h1t,
            zero,
        );
        add_row_sums(&mut grad[lay.bl.clone()], &ws.g_logvar, z, b);
        let wmu_t = mt(&p[lay.w2.clone()], z, h);
        gemm(&mut ws.g_h1, one, wmu_t, m(&ws.g_code, z, b), zero);
        let wl_t = mt(&p[lay.wl.clone()], z, h);
        gemm(&mut ws.g_h1, one, wl_t, m(&ws.g_logvar, z, b), one);
    } else {
        if lay.k > 0 {
            code_distance = vq_terms(lay, pen.commitment, p, ws, b, grad);
            let one_n = one / T::of(n as f64);
            objective += (one + pen.commitment) * one_n * code_distance;
        }
        if pen.l1_code > zero {
            let step = pen.l1_code * inv_b;
            let mut l1 = zero;
            for (g, &c) in ws.g_code[..z * b].iter_mut().zip(&ws.code) {
                l1 += c.fabs();
                if c > zero {
                    *g += step;
                } else if c < zero {
                    *g -= step;
                }
            }
            objective += step * l1;
        }
        mul_d1(&mut ws.g_code[..z * b], &ws.code[..z * b], a2);
        if pen.contractive > zero {
            objective += contractive(lay, pen.contractive, a1, a2, p, ws, b, grad);
        }
        let gw2 = &mut grad[lay.w2.clone()];
        gemm(gw2, one, m(&ws.g_code, z, b), mt(&ws.h1, h, b), one);
        add_row_sums(&mut grad[lay.b2.clone()], &ws.g_code, z, b);
        let w2t = mt(&p[lay.w2.clone()], z, h);
        gemm(&mut ws.g_h1, one, w2t, m(&ws.g_code, z, b), zero);
    }

    if let Some((rho, beta)) = pen.sparsity {
        objective += kl_sparsity(rho, beta, &ws.h1, &mut ws.g_h1, h, b);
    }
    mul_d1(&mut ws.g_h1[..h * b], &ws.h1[..h * b], a1);
    if pen.contractive > zero && !vae && a1.curved() {
        contractive_hidden_term(lay, a1, p, ws, b);
    }
    let gw1 = &mut grad[lay.w1.clone()];
    gemm(gw1, one, m(&ws.g_h1, h, b), mt(input, n, b), one);
    add_row_sums(&mut grad[lay.b1.clone()], &ws.g_h1, h, b);

    if pen.weight_decay > zero {
        let wd = pen.weight_decay;
        let mut sq = zero;
        for r in lay.weights() {
            for (g, &w) in grad[r.clone()].iter_mut().zip(&p[r]) {
                sq += w * w;
                *g += wd * w;
            }
        }
        objective += half * wd * sq;
    }
    Parts {
        objective,
        recon: zero,
        kl,
        code_distance,
    }
}

/// Nearest-code quantisation of the `b` codes in `ws.code` into `ws.quant` and
/// `ws.nearest`, with the same arithmetic and tie rule as `sensorae::nearest_code`.
fn quantise<T: Float>(codebook: &[T], z: usize, ws: &mut Workspace<T>, b: usize) {
    for col in 0..b {
        let ze = &ws.code[col * z..(col + 1) * z];
        let mut best = (0usize, T::of(0.0));
        for (k, e) in codebook.chunks_exact(z).enumerate() {
            let mut d = T::of(0.0);
            for (&ev, &v) in e.iter().zip(ze) {
                d += (v - ev) * (v - ev);
            }
            if k == 0 || d < best.1 {
                best = (k, d);
            }
        }
        ws.nearest[col] = best.0;
        ws.quant[col * z..(col + 1) * z].copy_from_slice(&codebook[best.0 * z..(best.0 + 1) * z]);
    }
}

/// The VQ-VAE's codebook and commitment losses, `(||sg[z_e] - e||^2 + beta ||z_e -
/// sg[e]||^2) / N` batch-averaged (per input entry, like the reconstruction). `ws.g_code`
/// holds the decoder's gradient at the quantised code; the straight-through estimator passes
/// it on to `z_e` unchanged, and this adds the commitment gradient to it and the codebook
/// gradient to `grad`. Returns the batch mean of `||z_e - e||^2`.
fn vq_terms<T: Float>(
    lay: &Layout,
    beta: T,
    p: &[T],
    ws: &mut Workspace<T>,
    b: usize,
    grad: &mut [T],
) -> T {
    let (n, z) = (lay.n, lay.z);
    let (zero, two) = (T::of(0.0), T::of(2.0));
    let scale = T::of(1.0) / T::of((n * b) as f64);
    let codebook = &p[lay.codebook.clone()];
    let gcb = &mut grad[lay.codebook.clone()];
    let mut total = zero;
    for col in 0..b {
        let k = ws.nearest[col];
        for j in 0..z {
            let d = ws.code[col * z + j] - codebook[k * z + j];
            total += d * d;
            ws.g_code[col * z + j] += scale * beta * two * d;
            gcb[k * z + j] -= scale * two * d;
        }
    }
    total / T::of(b as f64)
}

/// The encoder's codes of `cols` inputs (for initialising a codebook from data).
pub(crate) fn encode<'w, T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    p: &[T],
    ws: &'w mut Workspace<T>,
    input: &[T],
    cols: usize,
) -> &'w [T] {
    forward(spec, lay, p, ws, input, None, cols);
    &ws.code[..lay.z * cols]
}

/// `beta * sum_j KL(rho || rho_hat_j)` with `rho_hat` the batch mean of each hidden unit,
/// clamped into `(eps, 1 - eps)` (no gradient where clamped); adds its gradient to `g_h1`.
fn kl_sparsity<T: Float>(rho: T, beta: T, h1: &[T], g_h1: &mut [T], h: usize, b: usize) -> T {
    let one = T::of(1.0);
    let eps = T::of(1e-6);
    let inv_b = one / T::of(b as f64);
    let mut total = T::of(0.0);
    for j in 0..h {
        let mut mean = T::of(0.0);
        for col in 0..b {
            mean += h1[col * h + j];
        }
        mean *= inv_b;
        let r = mean.clamp(eps, one - eps);
        total += rho * (rho / r).fln() + (one - rho) * ((one - rho) / (one - r)).fln();
        if r == mean {
            let d = beta * inv_b * (-rho / r + (one - rho) / (one - r));
            for col in 0..b {
                g_h1[col * h + j] += d;
            }
        }
    }
    beta * total
}

/// The contractive penalty `lambda/B * sum_b ||diag(a2') W2 diag(a1') W1||_F^2`, computed
/// through the Gram matrix `G = W1 W1^T` so that every step is a matrix product:
/// `||J||_F^2 = sum_k a2'_k^2 u_k^T G u_k` with `u_k = W2[k, :] * a1'` (one row of `U` per
/// sample and code unit). Adds its gradient to `g_code` (already `dL/da2`), `dW2` and `dW1`,
/// and leaves `R = 2 c G u` in `ws.v` for [`contractive_hidden_term`]. Returns the penalty.
#[allow(clippy::too_many_arguments)] // reason: one call site; a struct would hide the data flow
fn contractive<T: Float>(
    lay: &Layout,
    lambda: T,
    a1: Act<T>,
    a2: Act<T>,
    p: &[T],
    ws: &mut Workspace<T>,
    b: usize,
    grad: &mut [T],
) -> T {
    let (n, h, z) = (lay.n, lay.h, lay.z);
    let zb = z * b;
    let (zero, one, two) = (T::of(0.0), T::of(1.0), T::of(2.0));
    let scale = lambda / T::of(b as f64);
    let w1 = &p[lay.w1.clone()];
    let w2 = &p[lay.w2.clone()];
    // U (zb x h): U[(col, k), j] = W2[k, j] * a1'(h1[j, col]).
    for j in 0..h {
        let w2col = &w2[j * z..(j + 1) * z];
        for col in 0..b {
            let d1 = a1.d1(ws.h1[col * h + j]);
            let dst = &mut ws.u[j * zb + col * z..j * zb + (col + 1) * z];
            for (u, &w) in dst.iter_mut().zip(w2col) {
                *u = w * d1;
            }
        }
    }
    gemm(&mut ws.gram, one, m(w1, h, n), mt(w1, h, n), zero);
    gemm(&mut ws.v, one, m(&ws.u, zb, h), m(&ws.gram, h, h), zero);
    let mut total = zero;
    for row in 0..zb {
        let mut s = zero;
        for j in 0..h {
            s += ws.u[j * zb + row] * ws.v[j * zb + row];
        }
        let y = ws.code[row];
        let d2 = a2.d1(y);
        total += d2 * d2 * s;
        ws.g_code[row] += scale * two * d2 * s * a2.d2(y);
        let c = scale * d2 * d2;
        for j in 0..h {
            let i = j * zb + row;
            ws.uc[i] = c * ws.u[i];
            ws.v[i] *= two * c;
        }
    }
    // dW2[k, j] += sum_b R[(b, k), j] * a1'(h1[j, b]).
    let gw2 = &mut grad[lay.w2.clone()];
    for j in 0..h {
        for col in 0..b {
            let d1 = a1.d1(ws.h1[col * h + j]);
            let r = &ws.v[j * zb + col * z..j * zb + (col + 1) * z];
            for (g, &rv) in gw2[j * z..(j + 1) * z].iter_mut().zip(r) {
                *g += rv * d1;
            }
        }
    }
    // dP/dG = S = U^T diag(c) U, and G = W1 W1^T gives dW1 += 2 S W1.
    gemm(
        &mut ws.gram_grad,
        one,
        mt(&ws.u, zb, h),
        m(&ws.uc, zb, h),
        zero,
    );
    let gw1 = &mut grad[lay.w1.clone()];
    gemm(gw1, two, m(&ws.gram_grad, h, h), m(w1, h, n), one);
    scale * total
}

/// The contractive penalty's path through `a1'`:
/// `g_h1[j, b] += a1''(h1) * sum_k R[(b, k), j] * W2[k, j]`, `R` left in `ws.v` by
/// [`contractive`].
fn contractive_hidden_term<T: Float>(
    lay: &Layout,
    a1: Act<T>,
    p: &[T],
    ws: &mut Workspace<T>,
    b: usize,
) {
    let (h, z) = (lay.h, lay.z);
    let zb = z * b;
    let w2 = &p[lay.w2.clone()];
    for j in 0..h {
        let w2col = &w2[j * z..(j + 1) * z];
        for col in 0..b {
            let r = &ws.v[j * zb + col * z..j * zb + (col + 1) * z];
            let mut s = T::of(0.0);
            for (&rv, &w) in r.iter().zip(w2col) {
                s += rv * w;
            }
            let i = col * h + j;
            ws.g_h1[i] += s * a1.d2(ws.h1[i]);
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use sensorae::{Activation as A, Arch, ErrorMetric};

    use super::*;

    // Every dimension above 5, so nalgebra hands the products (and the strided transposes) to
    // matrixmultiply, as in real training.
    const N: usize = 8;
    const H: usize = 7;
    const Z: usize = 6;
    const B: usize = 6;
    const LEAKY: A = A::LeakyRelu { slope: 0.1 };
    const SOFT: A = A::SoftThreshold { lambda: 0.15 };

    #[derive(Clone, Copy)]
    struct Case {
        arch: Arch,
        acts: [A; 4],
        loss: ErrorMetric,
        wd: f64,
        l1: f64,
        sparsity: Option<(f64, f64)>,
        contractive: f64,
        kl: f64,
        noisy: bool,
        sample: bool,
        /// Pixel weight alpha of the SSIM combination (`Some(0.0)`: SSIM alone).
        ssim: Option<f64>,
        /// Masked autoencoder: hide about half the entries and score only those.
        masked: bool,
        /// Hierarchical: coarse and fine error weights, coarse and fine gain penalties.
        scales: [f64; 4],
        /// N, H, Z, batch.
        dims: [usize; 4],
    }

    const BASE: Case = Case {
        arch: Arch::Dense,
        acts: [A::Tanh, A::Linear, A::Tanh, A::Linear],
        loss: ErrorMetric::Mse,
        wd: 0.0,
        l1: 0.0,
        sparsity: None,
        contractive: 0.0,
        kl: 0.0,
        noisy: false,
        sample: false,
        ssim: None,
        masked: false,
        scales: [1.0, 1.0, 0.0, 0.0],
        dims: [N, H, Z, B],
    };
    /// Two channels of 4 steps (N = 8), blocks of 2: 4 block means into a 3 -> 2 coarse path.
    const HIER: Arch = Arch::Hierarchical {
        block: 2,
        coarse_hidden: 3,
        coarse_latent: 2,
    };

    struct Problem {
        n: usize,
        b: usize,
        spec: Spec<f64>,
        lay: Layout,
        pen: Penalties<f64>,
        params: Vec<f64>,
        input: Vec<f64>,
        target: Vec<f64>,
        eps: Option<Vec<f64>>,
        mask: Option<Vec<f64>>,
    }

    fn problem(c: Case, seed: u64) -> Problem {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let [n, h, z, b] = c.dims;
        let lay = Layout::new(c.arch, 2, n, h, z);
        let params: Vec<f64> = (0..lay.total)
            .map(|_| rng.random_range(-0.8..0.8))
            .collect();
        let target: Vec<f64> = (0..n * b)
            .map(|_| {
                if c.loss == ErrorMetric::Bce {
                    rng.random_range(0.05..0.95)
                } else {
                    rng.random_range(-1.5..1.5)
                }
            })
            .collect();
        // A fixed corruption stands in for the denoising noise draw.
        let mut input: Vec<f64> = if c.noisy {
            target
                .iter()
                .map(|t| t + rng.random_range(-0.3..0.3))
                .collect()
        } else {
            target.clone()
        };
        let mask = c.masked.then(|| {
            let m: Vec<f64> = (0..n * b)
                .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
                .collect();
            for (v, &k) in input.iter_mut().zip(&m) {
                if k > 0.0 {
                    *v = 0.0;
                }
            }
            m
        });
        let eps = c
            .sample
            .then(|| (0..z * b).map(|_| rng.random_range(-2.0..2.0)).collect());
        Problem {
            n,
            b,
            spec: Spec {
                acts: c.acts.map(Act::new),
                loss: c.loss,
                // Two channels, so windows of N / 2 steps.
                ssim: c
                    .ssim
                    .map(|a| Ssim::new(a as f32, sensorae::Scaling::Standard, 2)),
            },
            lay,
            pen: Penalties {
                weight_decay: c.wd,
                l1_code: c.l1,
                sparsity: c.sparsity,
                contractive: c.contractive,
                kl: c.kl,
                commitment: 0.0,
                scales: ScaleWeights {
                    coarse: c.scales[0],
                    fine: c.scales[1],
                    coarse_gain: c.scales[2],
                    fine_gain: c.scales[3],
                },
            },
            params,
            input,
            target,
            eps,
            mask,
        }
    }

    fn objective(
        pb: &Problem,
        params: &[f64],
        ws: &mut Workspace<f64>,
        grad: &mut [f64],
    ) -> Parts<f64> {
        let batch = Batch {
            input: &pb.input,
            target: &pb.target,
            eps: pb.eps.as_deref(),
            mask: pb.mask.as_deref(),
            cols: pb.b,
        };
        loss_and_grad(&pb.spec, &pb.lay, &pb.pen, params, ws, batch, grad)
    }

    /// Largest |analytic - central difference| over all parameters, relative to the largest
    /// gradient entry.
    fn gradient_error(c: Case, seed: u64) -> f64 {
        let pb = problem(c, seed);
        let mut ws = Workspace::new(&pb.lay, pb.b, c.contractive > 0.0);
        let mut grad = vec![0.0; pb.lay.total];
        let mut scratch = vec![0.0; pb.lay.total];
        objective(&pb, &pb.params, &mut ws, &mut grad);
        if c.loss == ErrorMetric::Mae {
            let xhat = ws.xhat(pb.b, pb.n);
            let kink = xhat
                .iter()
                .zip(&pb.target)
                .map(|(y, t)| (y - t).abs())
                .fold(f64::MAX, f64::min);
            assert!(kink > 1e-4, "MAE case too close to a kink: {kink}");
        }
        let step = 1e-5;
        let mut p = pb.params.clone();
        let mut worst = 0.0f64;
        for i in 0..p.len() {
            let keep = p[i];
            p[i] = keep + step;
            let up = objective(&pb, &p, &mut ws, &mut scratch).objective;
            p[i] = keep - step;
            let down = objective(&pb, &p, &mut ws, &mut scratch).objective;
            p[i] = keep;
            let fd = (up - down) / (2.0 * step);
            worst = worst.max((grad[i] - fd).abs());
        }
        let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
        assert!(scale > 1e-3, "degenerate case: gradient {scale}");
        worst / scale
    }

    /// Finite differences in f64 are good to about 1e-9 here; dropping any gradient term moves
    /// the error to 1e-3 or more.
    const TOL: f64 = 1e-7;

    macro_rules! grad_checks {
        ($($name:ident: $case:expr;)*) => {$(
            #[test]
            fn $name() {
                let err = gradient_error($case, 7);
                assert!(err < TOL, "relative gradient error {err:e}");
            }
        )*};
    }

    grad_checks! {
        plain_mse_dense: BASE;
        plain_mse_tied: Case { arch: Arch::Tied, ..BASE };
        act_linear_dense: Case { acts: [A::Linear; 4], ..BASE };
        act_linear_tied: Case { arch: Arch::Tied, acts: [A::Linear; 4], ..BASE };
        act_relu_dense: Case { acts: [A::Relu, A::Relu, A::Relu, A::Linear], ..BASE };
        act_relu_tied: Case { arch: Arch::Tied, acts: [A::Relu, A::Relu, A::Relu, A::Relu], ..BASE };
        act_leaky_dense: Case { acts: [LEAKY, LEAKY, LEAKY, LEAKY], ..BASE };
        act_leaky_tied: Case { arch: Arch::Tied, acts: [LEAKY, LEAKY, LEAKY, A::Linear], ..BASE };
        act_sigmoid_dense: Case { acts: [A::Sigmoid; 4], ..BASE };
        act_sigmoid_tied: Case { arch: Arch::Tied, acts: [A::Sigmoid; 4], ..BASE };
        act_tanh_dense: Case { acts: [A::Tanh; 4], ..BASE };
        act_tanh_tied: Case { arch: Arch::Tied, acts: [A::Tanh; 4], ..BASE };
        loss_mae_dense: Case { loss: ErrorMetric::Mae, ..BASE };
        loss_mae_tied: Case { arch: Arch::Tied, loss: ErrorMetric::Mae, ..BASE };
        loss_bce_dense: Case { loss: ErrorMetric::Bce, acts: [A::Tanh, A::Linear, A::Tanh, A::Sigmoid], ..BASE };
        loss_bce_tied: Case { arch: Arch::Tied, loss: ErrorMetric::Bce, acts: [A::Relu, A::Tanh, A::Sigmoid, A::Sigmoid], ..BASE };
        weight_decay_dense: Case { wd: 0.3, ..BASE };
        weight_decay_tied: Case { arch: Arch::Tied, wd: 0.3, ..BASE };
        sparse_l1_dense: Case { l1: 0.5, ..BASE };
        sparse_l1_tied: Case { arch: Arch::Tied, l1: 0.5, acts: [A::Tanh, A::Tanh, A::Tanh, A::Linear], ..BASE };
        sparse_kl_dense: Case { sparsity: Some((0.1, 0.5)), acts: [A::Sigmoid, A::Linear, A::Tanh, A::Linear], ..BASE };
        sparse_kl_tied: Case { arch: Arch::Tied, sparsity: Some((0.1, 0.5)), acts: [A::Sigmoid, A::Linear, A::Tanh, A::Linear], ..BASE };
        sparse_both_with_decay: Case { l1: 0.2, sparsity: Some((0.05, 0.3)), wd: 0.1, acts: [A::Sigmoid, A::Relu, A::Tanh, A::Linear], ..BASE };
        denoising_dense: Case { noisy: true, ..BASE };
        denoising_tied: Case { arch: Arch::Tied, noisy: true, ..BASE };
        denoising_bce: Case { noisy: true, loss: ErrorMetric::Bce, acts: [A::Sigmoid; 4], ..BASE };
        contractive_tanh_dense: Case { contractive: 0.5, acts: [A::Tanh, A::Tanh, A::Tanh, A::Linear], ..BASE };
        contractive_tanh_tied: Case { arch: Arch::Tied, contractive: 0.5, acts: [A::Tanh, A::Tanh, A::Tanh, A::Linear], ..BASE };
        contractive_sigmoid_dense: Case { contractive: 0.5, acts: [A::Sigmoid, A::Sigmoid, A::Linear, A::Linear], ..BASE };
        contractive_sigmoid_tied: Case { arch: Arch::Tied, contractive: 0.5, acts: [A::Sigmoid, A::Sigmoid, A::Linear, A::Sigmoid], ..BASE };
        contractive_relu_linear_code: Case { contractive: 0.5, acts: [A::Relu, A::Linear, A::Relu, A::Linear], ..BASE };
        contractive_leaky_tanh_code: Case { contractive: 0.5, acts: [LEAKY, A::Tanh, LEAKY, A::Linear], ..BASE };
        contractive_with_decay_bce: Case { contractive: 0.5, wd: 0.2, loss: ErrorMetric::Bce, acts: [A::Tanh, A::Sigmoid, A::Tanh, A::Sigmoid], ..BASE };
        vae_mse: Case { arch: Arch::Vae, kl: 0.7, sample: true, ..BASE };
        vae_mae: Case { arch: Arch::Vae, kl: 0.7, sample: true, loss: ErrorMetric::Mae, ..BASE };
        vae_bce_relu: Case { arch: Arch::Vae, kl: 0.7, sample: true, loss: ErrorMetric::Bce, acts: [A::Relu, A::Linear, A::Relu, A::Sigmoid], ..BASE };
        vae_sigmoid_decay: Case { arch: Arch::Vae, kl: 1.5, wd: 0.2, sample: true, acts: [A::Sigmoid, A::Linear, A::Sigmoid, A::Tanh], ..BASE };
        small_dense_single_sample: Case { dims: [4, 3, 2, 1], ..BASE };
        small_tied_contractive: Case { arch: Arch::Tied, contractive: 0.5, dims: [8, 7, 2, 3], acts: [A::Tanh, A::Sigmoid, A::Tanh, A::Linear], ..BASE };
        small_vae_single_sample: Case { arch: Arch::Vae, kl: 0.7, sample: true, dims: [8, 7, 2, 1], ..BASE };
        small_sparse_kl_wide_input: Case { sparsity: Some((0.1, 0.5)), l1: 0.2, dims: [12, 4, 3, 5], acts: [A::Sigmoid, A::Linear, A::Tanh, A::Linear], ..BASE };
        vae_mean_decoding: Case { arch: Arch::Vae, kl: 0.7, sample: false, ..BASE };
        ssim_alone_dense: Case { ssim: Some(0.0), ..BASE };
        ssim_combined_mse_tied: Case { arch: Arch::Tied, ssim: Some(0.8), ..BASE };
        ssim_combined_mae: Case { ssim: Some(0.5), loss: ErrorMetric::Mae, ..BASE };
        ssim_combined_bce_sigmoid: Case { ssim: Some(0.3), loss: ErrorMetric::Bce, acts: [A::Tanh, A::Linear, A::Tanh, A::Sigmoid], ..BASE };
        ssim_combined_vae: Case { arch: Arch::Vae, kl: 0.7, sample: true, ssim: Some(0.6), ..BASE };
        ssim_tanh_output_sparse: Case { ssim: Some(0.2), l1: 0.3, acts: [A::Tanh; 4], ..BASE };
        soft_threshold_code: Case { acts: [A::Tanh, SOFT, A::Tanh, A::Linear], ..BASE };
        soft_threshold_code_tied_l1: Case { arch: Arch::Tied, l1: 0.2, acts: [A::Tanh, SOFT, A::Tanh, A::Linear], ..BASE };
        soft_threshold_contractive: Case { contractive: 0.5, acts: [A::Tanh, SOFT, A::Tanh, A::Linear], ..BASE };
        masked_mse: Case { masked: true, ..BASE };
        masked_bce_ssim: Case { masked: true, ssim: Some(0.5), loss: ErrorMetric::Bce, acts: [A::Tanh, A::Linear, A::Tanh, A::Sigmoid], ..BASE };
        hierarchical_mse: Case { arch: HIER, ..BASE };
        hierarchical_weighted_scales_and_gain_penalties: Case { arch: HIER, scales: [0.7, 0.2, 0.3, 0.9], wd: 0.1, ..BASE };
        hierarchical_fine_weight_zero: Case { arch: HIER, scales: [1.0, 0.0, 0.0, 0.5], ..BASE };
        hierarchical_mae_tanh_output: Case { arch: HIER, loss: ErrorMetric::Mae, acts: [A::Tanh; 4], ..BASE };
        hierarchical_ssim_combined: Case { arch: HIER, ssim: Some(0.4), acts: [LEAKY, SOFT, A::Sigmoid, A::Tanh], ..BASE };
        hierarchical_single_window: Case { arch: HIER, scales: [0.5, 2.0, 0.1, 0.1], dims: [8, 3, 2, 1], ..BASE };
    }

    /// The coarse and fine parts of the reconstruction are orthogonal: the projected fine
    /// output has zero block means, so the reconstruction's block means are the coarse path's
    /// output times its gain, and the fine part is the gained projection.
    #[test]
    fn hierarchical_parts_are_orthogonal() {
        let pb = problem(Case { arch: HIER, ..BASE }, 3);
        let mut ws = Workspace::new(&pb.lay, B, false);
        forward(&pb.spec, &pb.lay, &pb.params, &mut ws, &pb.input, None, B);
        let hier = pb.lay.hier.as_deref().unwrap();
        let (g_c, g_f) = (pb.params[hier.gains.start], pb.params[hier.gains.start + 1]);
        let (out, dec_c, proj) = ws.scales(B);
        // Two channels, blocks of 2 steps: entries (t, c) at t * 2 + c, 4 steps per window.
        let block_mean = |v: &[f64], col: usize, k: usize, c: usize| {
            let w = &v[col * N..(col + 1) * N];
            (w[(2 * k) * 2 + c] + w[(2 * k + 1) * 2 + c]) / 2.0
        };
        let mut energy = 0.0f64;
        for col in 0..B {
            for k in 0..2 {
                for c in 0..2 {
                    assert!(block_mean(proj, col, k, c).abs() < 1e-12);
                    let coarse = g_c * dec_c[col * 4 + k * 2 + c];
                    assert!((block_mean(out, col, k, c) - coarse).abs() < 1e-12);
                }
            }
            for i in 0..N {
                let t = i / 2;
                let coarse = g_c * dec_c[col * 4 + (t / 2) * 2 + i % 2];
                let fine = out[col * N + i] - coarse;
                assert!((fine - g_f * proj[col * N + i]).abs() < 1e-12);
                energy += fine * fine;
            }
        }
        assert!(energy > 1e-3, "a fine part to test: {energy}");
    }

    /// With MSE and even weights, the objective is the plain mean squared error of the
    /// reconstruction (Pythagoras over the two orthogonal parts), i.e. the detector's score.
    #[test]
    fn hierarchical_even_mse_objective_is_the_reconstruction_mse() {
        let pb = problem(Case { arch: HIER, ..BASE }, 5);
        let mut ws = Workspace::new(&pb.lay, B, false);
        let mut grad = vec![0.0; pb.lay.total];
        let parts = objective(&pb, &pb.params, &mut ws, &mut grad);
        let (out, _, _) = ws.scales(B);
        let mse = out
            .iter()
            .zip(&pb.target)
            .map(|(y, t)| (y - t).powi(2))
            .sum::<f64>()
            / (N * B) as f64;
        assert!(
            (parts.objective - mse).abs() < 1e-12,
            "{} vs {mse}",
            parts.objective
        );
        assert!(
            (eval_loss(&pb.spec, &pb.lay, &pb.params, &mut ws, &pb.input, B) - mse).abs() < 1e-12
        );
    }

    /// The Gram-matrix penalty equals the Frobenius norm of the explicitly built Jacobian
    /// `diag(a2') W2 diag(a1') W1`, sample by sample (finite differences only show that the
    /// gradient matches the penalty, not that the penalty is the right one).
    #[test]
    fn contractive_penalty_is_the_squared_frobenius_norm_of_the_encoder_jacobian() {
        let lambda = 0.5;
        let c = Case {
            contractive: lambda,
            acts: [A::Tanh, A::Sigmoid, A::Tanh, A::Linear],
            ..BASE
        };
        let pb = problem(c, 3);
        let mut ws = Workspace::new(&pb.lay, B, true);
        let mut grad = vec![0.0; pb.lay.total];
        let with = objective(&pb, &pb.params, &mut ws, &mut grad).objective;
        let penalty = with
            - problem(
                Case {
                    contractive: 0.0,
                    ..c
                },
                3,
            )
            .recon_only();
        let w1 = &pb.params[pb.lay.w1.clone()];
        let w2 = &pb.params[pb.lay.w2.clone()];
        let (h1, code) = (ws.h1(B, H).to_vec(), ws.code(B, Z).0.to_vec());
        let mut direct = 0.0;
        for col in 0..B {
            for k in 0..Z {
                let zk = code[col * Z + k];
                let d2 = zk * (1.0 - zk);
                for i in 0..N {
                    let mut jki = 0.0;
                    for j in 0..H {
                        let hj = h1[col * H + j];
                        jki += w2[j * Z + k] * (1.0 - hj * hj) * w1[i * H + j];
                    }
                    direct += (d2 * jki).powi(2);
                }
            }
        }
        direct *= lambda / B as f64;
        assert!(
            (penalty - direct).abs() < 1e-12 * direct.max(1.0),
            "{penalty} vs {direct}"
        );
        assert!(direct > 1e-3);
    }

    impl Problem {
        fn recon_only(&self) -> f64 {
            let mut ws = Workspace::new(&self.lay, B, false);
            let mut grad = vec![0.0; self.lay.total];
            objective(self, &self.params, &mut ws, &mut grad).objective
        }
    }

    #[test]
    fn vae_kl_matches_the_core_formula() {
        let pb = problem(
            Case {
                arch: Arch::Vae,
                kl: 1.0,
                sample: true,
                ..BASE
            },
            5,
        );
        let mut ws = Workspace::new(&pb.lay, B, false);
        let mut grad = vec![0.0; pb.lay.total];
        let parts = objective(&pb, &pb.params, &mut ws, &mut grad);
        let (mu, lv) = ws.code(B, Z);
        let mut core = 0.0f64;
        for col in 0..B {
            let m: Vec<f32> = mu[col * Z..(col + 1) * Z]
                .iter()
                .map(|&v| v as f32)
                .collect();
            let l: Vec<f32> = lv[col * Z..(col + 1) * Z]
                .iter()
                .map(|&v| v as f32)
                .collect();
            core += f64::from(sensorae::kl_divergence(&m, &l));
        }
        core /= B as f64;
        assert!(
            (parts.kl - core).abs() < 1e-5 * core.max(1.0),
            "{} vs {core}",
            parts.kl
        );
        assert!((parts.objective - parts.recon - parts.kl / N as f64).abs() < 1e-12);
    }

    /// One dense layer with plain loops: `act(W x + b)`, `W` column-major with `rows` rows.
    fn layer(w: &[f64], b: &[f64], rows: usize, x: &[f64], act: Act<f64>) -> Vec<f64> {
        let mut y: Vec<f64> = (0..rows)
            .map(|r| {
                b[r] + x
                    .iter()
                    .enumerate()
                    .map(|(c, v)| w[c * rows + r] * v)
                    .sum::<f64>()
            })
            .collect();
        act.apply(&mut y);
        y
    }

    /// The VQ-VAE objective as the straight-through estimator sees it, written independently
    /// with plain loops: the decoder runs on `z_e(p) + (e_k0 - z_e0)`, the codebook loss is
    /// `||z_e0 - e_k0(p)||^2` and the commitment loss `beta ||z_e(p) - e_k0||^2`, where `k0`,
    /// `z_e0` and `e_k0` are frozen at `p0` (the stop-gradients). Its exact gradient at `p0`
    /// is what the trainer's straight-through gradient must be.
    fn vq_surrogate(pb: &Problem, p0: &[f64], p: &[f64], beta: f64) -> f64 {
        let lay = &pb.lay;
        let (n, h, z, b) = (lay.n, lay.h, lay.z, pb.b);
        let [a1, a2, a3, a4] = pb.spec.acts;
        let encode = |q: &[f64], x: &[f64]| {
            let h1 = layer(&q[lay.w1.clone()], &q[lay.b1.clone()], h, x, a1);
            layer(&q[lay.w2.clone()], &q[lay.b2.clone()], z, &h1, a2)
        };
        let mut total = 0.0;
        for col in 0..b {
            let x = &pb.input[col * n..(col + 1) * n];
            let t = &pb.target[col * n..(col + 1) * n];
            let ze0 = encode(p0, x);
            let cb0 = &p0[lay.codebook.clone()];
            let k0 = (0..lay.k)
                .min_by(|&i, &j| {
                    let d = |k: usize| {
                        (0..z)
                            .map(|m| (ze0[m] - cb0[k * z + m]).powi(2))
                            .sum::<f64>()
                    };
                    d(i).total_cmp(&d(j))
                })
                .unwrap();
            let e0 = &cb0[k0 * z..(k0 + 1) * z];
            let e = &p[lay.codebook.clone()][k0 * z..(k0 + 1) * z];
            let ze = encode(p, x);
            let dec: Vec<f64> = (0..z).map(|m| ze[m] + (e0[m] - ze0[m])).collect();
            let h2 = layer(&p[lay.w3.clone()], &p[lay.b3.clone()], h, &dec, a3);
            let xhat = layer(&p[lay.w4.clone()], &p[lay.b4.clone()], n, &h2, a4);
            total += xhat
                .iter()
                .zip(t)
                .map(|(y, t)| (y - t).powi(2))
                .sum::<f64>();
            for m in 0..z {
                total += (ze0[m] - e[m]).powi(2) + beta * (ze[m] - e0[m]).powi(2);
            }
        }
        total / (n * b) as f64
    }

    #[test]
    fn vqvae_straight_through_gradient_matches_finite_differences_of_the_surrogate() {
        let beta = 0.25;
        for (acts, dims, seed) in [
            ([A::Tanh, A::Linear, A::Tanh, A::Linear], [N, H, Z, B], 7),
            ([LEAKY, A::Tanh, A::Sigmoid, A::Tanh], [8, 7, 3, 4], 9),
            ([A::Tanh, SOFT, A::Tanh, A::Linear], [6, 5, 2, 1], 2),
        ] {
            let c = Case {
                arch: Arch::VqVae { codebook: 5 },
                acts,
                dims,
                ..BASE
            };
            let mut pb = problem(c, seed);
            pb.pen.commitment = beta;
            let mut ws = Workspace::new(&pb.lay, pb.b, false);
            let mut grad = vec![0.0; pb.lay.total];
            let parts = objective(&pb, &pb.params, &mut ws, &mut grad);
            // Several codes in use, so the test is not about one code only.
            let used: std::collections::BTreeSet<usize> =
                ws.nearest[..pb.b].iter().copied().collect();
            assert!(used.len() > 1 || pb.b == 1, "{used:?}");
            let p0 = pb.params.clone();
            assert!((parts.objective - vq_surrogate(&pb, &p0, &p0, beta)).abs() < 1e-12);
            let step = 1e-5;
            let mut p = p0.clone();
            let mut worst = 0.0f64;
            for i in 0..p.len() {
                let keep = p[i];
                p[i] = keep + step;
                let up = vq_surrogate(&pb, &p0, &p, beta);
                p[i] = keep - step;
                let down = vq_surrogate(&pb, &p0, &p, beta);
                p[i] = keep;
                worst = worst.max((grad[i] - (up - down) / (2.0 * step)).abs());
            }
            let scale = grad.iter().fold(0.0f64, |m, g| m.max(g.abs()));
            assert!(scale > 1e-3);
            assert!(worst / scale < TOL, "{acts:?}: {:e}", worst / scale);
            // The codebook moves only through its own loss, towards the codes it serves.
            assert!(grad[pb.lay.codebook.clone()].iter().any(|g| *g != 0.0));
        }
    }

    #[test]
    fn layout_matches_the_model_format() {
        for arch in [
            Arch::Dense,
            Arch::Tied,
            Arch::Vae,
            Arch::VqVae { codebook: 16 },
        ] {
            let lay = Layout::new(arch, 2, 128, 64, 8);
            assert_eq!(lay.total, sensorae::param_count(arch, 128, 64, 8));
            assert_eq!(lay.w1, 0..64 * 128);
            assert_eq!(lay.b4.end, lay.total);
        }
        let hier = Arch::Hierarchical {
            block: 4,
            coarse_hidden: 16,
            coarse_latent: 4,
        };
        let lay = Layout::new(hier, 8, 128, 64, 8);
        assert_eq!(lay.total, sensorae::param_count(hier, 128, 64, 8));
        let fine = sensorae::param_count(Arch::Dense, 128, 64, 8);
        let h = lay.hier.as_deref().unwrap();
        assert_eq!((lay.b4.end, h.coarse.w1.start), (fine, fine));
        assert_eq!(h.coarse.n, 32);
        assert_eq!(h.gains, lay.total - 2..lay.total);
    }

    #[test]
    fn f32_and_f64_agree_on_the_loss() {
        let c = Case {
            contractive: 0.1,
            acts: [A::Tanh, A::Tanh, A::Tanh, A::Linear],
            ..BASE
        };
        let pb = problem(c, 11);
        let mut ws = Workspace::new(&pb.lay, B, true);
        let mut grad = vec![0.0; pb.lay.total];
        let wide = objective(&pb, &pb.params, &mut ws, &mut grad).objective;
        let lay = pb.lay.clone();
        let spec = Spec {
            acts: c.acts.map(Act::<f32>::new),
            loss: c.loss,
            ssim: None,
        };
        let pen = Penalties {
            contractive: 0.1f32,
            ..Penalties::none()
        };
        let p32: Vec<f32> = pb.params.iter().map(|&v| v as f32).collect();
        let x32: Vec<f32> = pb.input.iter().map(|&v| v as f32).collect();
        let mut ws32 = Workspace::new(&lay, B, true);
        let mut g32 = vec![0.0f32; lay.total];
        let batch = Batch {
            input: &x32,
            target: &x32,
            eps: None,
            mask: None,
            cols: B,
        };
        let narrow = loss_and_grad(&spec, &lay, &pen, &p32, &mut ws32, batch, &mut g32).objective;
        assert!((f64::from(narrow) - wide).abs() < 1e-5 * wide);
        for (a, b) in g32.iter().zip(&grad) {
            assert!((f64::from(*a) - b).abs() < 1e-4);
        }
    }
}
