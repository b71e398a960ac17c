//! The autoencoder forward pass and reconstruction errors, written once over plain slices and
//! sizes: fixed-size detectors on the device and heap ones on the host run the same arithmetic.
//!
//! Parameters are one flat slice in file order; each weight matrix is column-major with as many
//! rows as the layer has outputs (see `docs/model-format.md`).

use crate::model::{Activation, Arch, ErrorMetric, Layers, WindowSpec};

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
            Activation::LeakyRelu { slope } => leaky_relu(x, slope),
            Activation::Sigmoid => sigmoid(x),
            Activation::Tanh => tanh(x),
            Activation::SoftThreshold { lambda } => soft_threshold(x, lambda),
        }
    }

    /// One `match` per layer, not per value, so each loop is branch-free and vectorises.
    #[cfg_attr(feature = "simd", inline(always))]
    fn apply_all(self, ys: &mut [f32]) {
        match self {
            Activation::Linear => {}
            Activation::Relu => ys.iter_mut().for_each(|y| *y = y.max(0.0)),
            Activation::Tanh => ys.iter_mut().for_each(|y| *y = tanh(*y)),
            Activation::LeakyRelu { slope } => {
                ys.iter_mut().for_each(|y| *y = leaky_relu(*y, slope));
            }
            Activation::SoftThreshold { lambda } => {
                ys.iter_mut().for_each(|y| *y = soft_threshold(*y, lambda));
            }
            // Without the `logistic` feature `load` refuses sigmoid models, and the scoring
            // path carries no `expf`.
            #[cfg(feature = "logistic")]
            Activation::Sigmoid => ys.iter_mut().for_each(|y| *y = sigmoid(*y)),
            #[cfg(not(feature = "logistic"))]
            Activation::Sigmoid => {}
        }
    }
}

#[inline(always)]
fn leaky_relu(x: f32, slope: f32) -> f32 {
    if x > 0.0 { x } else { slope * x }
}

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + libm::expf(-x))
}

#[inline(always)]
fn soft_threshold(x: f32, lambda: f32) -> f32 {
    if x > lambda {
        x - lambda
    } else if x < -lambda {
        x + lambda
    } else {
        0.0
    }
}

/// Where [`tanh`](Activation::Tanh)'s rational approximation is clamped: beyond it `tanh`
/// rounds to +-1 in `f32`.
pub const TANH_CLAMP: f32 = 7.905_311;
/// Numerator coefficients of the 13/6 rational `tanh` (Eigen's), lowest power of `x^2` first;
/// the numerator is `x * P(x^2)`.
pub const TANH_P: [f32; 7] = [
    4.893_524_6e-3,
    6.372_619_3e-4,
    1.485_722_4e-5,
    5.122_297e-8,
    -8.604_672e-11,
    2.000_188e-13,
    -2.760_768_5e-16,
];
/// Denominator coefficients `Q(x^2)`, lowest power first.
pub const TANH_Q: [f32; 4] = [4.893_525e-3, 2.268_434_6e-3, 1.185_347_1e-4, 1.198_258_4e-6];
/// Below this magnitude `tanh(x)` rounds to `x`, which is returned instead of the ratio.
pub const TANH_LINEAR_BELOW: f32 = 4e-4;

/// `tanh` within 4e-7 relative (7 ulp) of the exact value for every `f32`, NaN to NaN: the
/// 13/6 rational approximation Eigen uses, clamped where `tanh` rounds to +-1. libm's `tanhf`
/// (through `expm1f`) was a third of the time of scoring a window. Two forms with the same bits
/// (a unit test compares them): branch-free on hosts, where a layer's activations vectorise
/// (the branching form made scoring 4 to 10 % slower there), and with branches on the Cortex-M4F,
/// which computes one value at a time and saves the clamp.
#[must_use]
#[inline(always)]
fn tanh(x: f32) -> f32 {
    #[cfg(target_arch = "arm")]
    return tanh_branching(x);
    #[cfg(not(target_arch = "arm"))]
    return tanh_clamped(x);
}

/// Every value clamped, then the ratio; `x` itself near zero, where `tanh(x)` rounds to `x`
/// (the ratio would be a few ulp off). Branch-free.
#[cfg_attr(target_arch = "arm", allow(dead_code))] // reason: the hosts' form, and the test's
#[inline(always)]
fn tanh_clamped(x: f32) -> f32 {
    let c = x.clamp(-TANH_CLAMP, TANH_CLAMP);
    if x.abs() < TANH_LINEAR_BELOW {
        x
    } else {
        tanh_ratio(c)
    }
}

/// The same as [`tanh_clamped`] with two comparisons instead of the clamp on every value.
#[cfg_attr(not(target_arch = "arm"), allow(dead_code))] // reason: the device's form, and the test's
#[inline(always)]
fn tanh_branching(x: f32) -> f32 {
    let a = x.abs();
    if a < TANH_LINEAR_BELOW {
        x
    } else if a > TANH_CLAMP {
        // The ratio at the clamp, computed at compile time by the same operations (the ratio is
        // odd bit for bit: negating `x` negates `p` and the quotient exactly). NaN fails both
        // comparisons and goes on to the ratio, as it passes the clamp.
        TANH_AT_CLAMP.copysign(x)
    } else {
        tanh_ratio(x)
    }
}

/// `tanh(TANH_CLAMP)` as [`tanh_ratio`] gives it: what `tanh` returns beyond the clamp.
const TANH_AT_CLAMP: f32 = tanh_ratio(TANH_CLAMP);

/// The rational approximation `x P(x^2) / Q(x^2)` for `|x| <= TANH_CLAMP`.
#[inline(always)]
const fn tanh_ratio(x: f32) -> f32 {
    let x2 = x * x;
    // Horner's rule written out (a loop over the coefficients is not unrolled at opt-level
    // "s" and costs three times the instructions).
    let [a0, a1, a2, a3, a4, a5, a6] = TANH_P;
    let [b0, b1, b2, b3] = TANH_Q;
    let p = (((((a6 * x2 + a5) * x2 + a4) * x2 + a3) * x2 + a2) * x2 + a1) * x2 + a0;
    let p = p * x;
    let q = ((b3 * x2 + b2) * x2 + b1) * x2 + b0;
    p / q
}

/// Splits the next `len` parameters off the front.
pub(crate) fn take<'p>(params: &mut &'p [f32], len: usize) -> Option<&'p [f32]> {
    let (head, tail) = params.split_at_checked(len)?;
    *params = tail;
    Some(head)
}

/// The sizes a forward pass runs at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    /// Channels (C); the window is time-major, `x[t * C + c]`.
    #[cfg_attr(not(feature = "hierarchical"), allow(dead_code))] // reason: read by `hier` only
    pub c: usize,
    pub n: usize,
    pub h: usize,
    pub z: usize,
}

impl Dims {
    /// The sizes of a model's window and layers (a header's or a configuration's).
    pub(crate) const fn of(window: &WindowSpec, layers: &Layers) -> Dims {
        let c = window.channels as usize;
        Dims {
            c,
            n: c * window.length as usize,
            h: layers.hidden as usize,
            z: layers.latent as usize,
        }
    }
}

/// A layer input in two parts read one after the other: the window is the ring of samples
/// rotated by whole samples, so the first layer reads it in place as `[older, newer]` instead
/// of from a copy. Other layers pass `[x, &[]]`.
pub(crate) type Parts<'a> = [&'a [f32]; 2];

/// `y = act(W x + b)` with `W` (`rows` x `cols`), or `y = act(W^T x + b)` with `W` (`cols` x
/// `rows`) when `transposed`; `W` in the detector's block layout ([`block_index`]). Sums run in
/// column order, `b + W[.., 0] x_0 + W[.., 1] x_1 + ...`, for every size alike, so fixed and
/// heap detectors agree bit for bit.
///
/// Not generic and not inlined: one copy serves every layer of every model size (sizes
/// monomorphised into the kernel cost kilobytes of flash per shape).
#[inline(never)]
#[allow(clippy::too_many_arguments)] // reason: one call site per layer keeps the sizes explicit
pub(crate) fn affine(
    w: &[f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    transposed: bool,
    x: Parts<'_>,
    y: &mut [f32],
    act: Activation,
) -> Option<()> {
    let y = y.get_mut(..rows)?;
    if w.len() != rows.checked_mul(cols)? || b.len() != rows || x[0].len() + x[1].len() != cols {
        return None;
    }
    // Output k of the transposed product is the dot product of W's column k with x, read in
    // one part.
    if transposed && !x[1].is_empty() {
        return None;
    }
    let layer = Layer {
        w,
        b,
        rows,
        cols,
        transposed,
        x,
        y,
        act,
    };
    // Layers under a thousand multiply-adds gain less from wider registers than the switch
    // costs (the tiny model was 18 % slower with it).
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    if rows * cols >= SIMD_MIN_MACS
        && let Some(avx2) = pulp::x86::V3::try_new()
    {
        pulp::Simd::vectorize(avx2, layer);
        return Some(());
    }
    layer.run();
    Some(())
}

/// Smallest layer (multiply-adds) run compiled for AVX2.
#[cfg(all(feature = "simd", target_arch = "x86_64"))]
const SIMD_MIN_MACS: usize = 1024;

/// One checked call of [`affine`]: what the kernel runs, with or without wider vectors.
struct Layer<'a> {
    w: &'a [f32],
    b: &'a [f32],
    rows: usize,
    cols: usize,
    transposed: bool,
    x: Parts<'a>,
    y: &'a mut [f32],
    act: Activation,
}

impl Layer<'_> {
    /// Inlined into each caller, so that under [`pulp`] the loops are compiled for AVX2: the
    /// same multiplies and additions in the same order in wider registers (Rust never fuses
    /// them), so every score keeps its bits.
    #[inline(always)]
    fn run(self) {
        let Layer {
            w,
            b,
            rows,
            cols,
            transposed,
            x,
            y,
            act,
        } = self;
        if transposed {
            for (k, (yk, &bk)) in y.iter_mut().zip(b).enumerate() {
                *yk = bk + dot_column(w, cols, rows, k, x[0]);
            }
        } else {
            matvec(w, b, rows, x, y);
        }
        act.apply_all(y);
    }
}

/// x86-64 hosts with AVX2 (checked once, cached by pulp) run [`Layer::run`] compiled for it.
#[cfg(all(feature = "simd", target_arch = "x86_64"))]
impl pulp::WithSimd for Layer<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        self.run();
    }
}

/// Rows of the kernel's widest block: 16 sums plus `x_j` and a weight fill the Cortex-M4F's 32
/// single-precision registers (32 sums spill); hosts (x86-64: 16 vector registers of 4 lanes or
/// more; AArch64: 32) hold 32 sums in 8 registers, twice the independent additions per column.
/// Each row's sum runs in the same order either way, so every target gives the same bits.
#[cfg(target_arch = "arm")]
pub(crate) const WIDEST: usize = 16;
#[cfg(not(target_arch = "arm"))]
pub(crate) const WIDEST: usize = 32;

/// [`WIDEST`] of another target, by its `target_arch` (as cargo gives build scripts in
/// `CARGO_CFG_TARGET_ARCH`): the same rule as the `cfg` above, for laying out parameters on a
/// host for a device.
#[cfg(feature = "alloc")]
pub(crate) fn widest_for(target_arch: &str) -> usize {
    if target_arch == "arm" { 16 } else { 32 }
}

/// Rows in the block that starts with `left` rows of a matrix still to go: [`WIDEST`], then
/// 16, 8 and 1 at a time, as the dense kernel takes them.
const fn block_rows(left: usize) -> usize {
    if left >= WIDEST {
        WIDEST
    } else if left >= 16 {
        16
    } else if left >= 8 {
        8
    } else {
        1
    }
}

/// Where entry (`row`, `col`) of a `rows` x `cols` matrix lives in the block layout of a
/// target whose widest block has `WIDE` rows ([`WIDEST`] on this one): the rows in blocks of
/// `WIDE`, then 16, 8 and 1 (as the kernel takes them), each block's columns one after another
/// (`R` values each). The kernel then reads every weight once, in order, instead of at a
/// stride of `rows` (18 % faster on a host whose L1 cannot hold the weights). Model files keep
/// plain column-major order; `load` permutes.
pub(crate) const fn block_index<const WIDE: usize>(
    row: usize,
    rows: usize,
    cols: usize,
    col: usize,
) -> usize {
    let full = rows / WIDE * WIDE;
    let s16 = if rows - full >= 16 { 16 } else { 0 };
    let s8 = if rows - full - s16 >= 8 { 8 } else { 0 };
    let (start, r) = if row < full {
        (row / WIDE * WIDE, WIDE)
    } else if row < full + s16 {
        (full, 16)
    } else if row < full + s16 + s8 {
        (full + s16, 8)
    } else {
        (row, 1)
    };
    start * cols + col * r + (row - start)
}

/// `y = b + W x`, `W` in block layout with `rows == y.len() == b.len()` rows, `x` in two parts,
/// summed as `b + W[.., 0] x_0 + W[.., 1] x_1 + ...`. Output rows are taken `R` at a time and
/// their `R` sums held in registers while walking the block's columns, so each column step is
/// one load of `x_j`, `R` consecutive weight loads and `R` multiply-adds (`R` up to
/// [`WIDEST`]).
#[cfg_attr(feature = "simd", inline(always))]
fn matvec(w: &[f32], b: &[f32], rows: usize, x: Parts<'_>, y: &mut [f32]) {
    let cols = x[0].len() + x[1].len();
    let mut r0 = 0;
    let mut rest = y;
    loop {
        let (Some(b), Some(w)) = (b.get(r0..), w.get(r0.saturating_mul(cols)..)) else {
            return;
        };
        if rest.is_empty() {
            return;
        }
        // One rule for the block sizes, shared with `block_index` and `dot_column`.
        rest = match block_rows(rest.len()) {
            #[cfg(not(target_arch = "arm"))]
            32 => rows_block(w, b, x, rest, columns32),
            16 => rows_block(w, b, x, rest, columns16),
            8 => rows_block(w, b, x, rest, columns8),
            _ => rows_block(w, b, x, rest, columns1),
        };
        r0 = rows - rest.len();
    }
}

/// `y[..R] = b[..R] + W_block x` for the block whose weights start `w` (its columns for `x[0]`,
/// then those for `x[1]`, `R` values each); returns the rows after these `R`.
#[inline(always)]
fn rows_block<'y, const R: usize>(
    w: &[f32],
    b: &[f32],
    x: Parts<'_>,
    y: &'y mut [f32],
    columns: fn(&mut [f32; R], &[f32], &[f32]),
) -> &'y mut [f32] {
    let (Some((out, rest)), Some(b)) = (y.split_first_chunk_mut::<R>(), b.first_chunk::<R>())
    else {
        return &mut [];
    };
    let Some((w0, w1)) = w.split_at_checked(x[0].len().saturating_mul(R)) else {
        return &mut [];
    };
    let mut acc = *b;
    columns(&mut acc, w0, x[0]);
    columns(&mut acc, w1, x[1]);
    *out = acc;
    rest
}

/// Defines `fn $name(acc: &mut [f32; R], w, x)`: `acc += W x` for a block's columns (`R`
/// consecutive weights each), in column order. The `R` multiply-adds of a column are written
/// out, so the sums stay in registers at every opt-level (LLVM unrolls a loop over them only at
/// opt-level 3, and a loop keeps them in memory).
macro_rules! columns {
    ($name:ident, $r:literal, [$($k:literal)*]) => {
        #[inline(always)]
        fn $name(acc: &mut [f32; $r], w: &[f32], x: &[f32]) {
            let mut a = *acc;
            for (wc, &xj) in w.as_chunks::<$r>().0.iter().zip(x) {
                $(a[$k] += wc[$k] * xj;)*
            }
            *acc = a;
        }
    };
}
#[cfg(not(target_arch = "arm"))]
columns!(
    columns32,
    32,
    [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31]
);
columns!(columns16, 16, [0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15]);
columns!(columns8, 8, [0 1 2 3 4 5 6 7]);
columns!(columns1, 1, [0]);

/// `W[.., k] . x` for `W` (`w_rows` x `w_cols`) in block layout, with eight running sums (so it
/// vectorises) over the rows the 16- and 8-row blocks hold, added up, then the single rows.
/// The same sums in the same order as over a contiguous column (`k`'s entries are contiguous
/// within each block), so the layout does not change a bit of the result.
#[cfg_attr(feature = "simd", inline(always))]
fn dot_column(w: &[f32], w_rows: usize, w_cols: usize, k: usize, x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut r0 = 0;
    while w_rows - r0 >= 8 {
        let r = block_rows(w_rows - r0);
        let start = r0 * w_cols + k * r;
        let (Some(wc), Some(xc)) = (w.get(start..start + r), x.get(r0..r0 + r)) else {
            return f32::NAN;
        };
        for (u, v) in wc.as_chunks::<8>().0.iter().zip(xc.as_chunks::<8>().0) {
            for ((s, &p), &q) in acc.iter_mut().zip(u).zip(v) {
                *s += p * q;
            }
        }
        r0 += r;
    }
    let mut sum = acc.iter().sum::<f32>();
    for (r, &q) in x.iter().enumerate().take(w_rows).skip(r0) {
        sum += w.get(r * w_cols + k).copied().unwrap_or(f32::NAN) * q;
    }
    sum
}

/// A walk over a model's parameters in file order, run by run: it counts them and, given the
/// weights section and room, copies them, each weight matrix into block layout. A concrete type
/// rather than a callback: a call through `dyn FnMut` shared by two callers may unwind as far as
/// the compiler knows (which broke the link-time proof of panic freedom in `fuzz/nopanic`), and
/// a generic one is compiled once per caller.
pub(crate) struct ParamWalk<'w, const WIDE: usize = WIDEST> {
    /// Parameters so far (saturating).
    pub total: usize,
    /// The file's little-endian `f32`s not copied yet, and where they go.
    copy: Option<(&'w [u8], &'w mut [f32])>,
}

impl<'w, const WIDE: usize> ParamWalk<'w, WIDE> {
    /// Counts only.
    pub(crate) const fn count() -> Self {
        ParamWalk {
            total: 0,
            copy: None,
        }
    }

    /// Copies `weights` into `params` as well.
    pub(crate) fn copy(weights: &'w [u8], params: &'w mut [f32]) -> Self {
        ParamWalk {
            total: 0,
            copy: Some((weights, params)),
        }
    }

    /// A run of `rows` x `cols` parameters: a weight matrix, column-major in the file, or with
    /// `cols == 1` biases, a codebook or gains (whose block layout is their file order,
    /// `block_index(row, len, 1, 0) == row`).
    #[inline(never)]
    fn run(&mut self, rows: usize, cols: usize) {
        if let Some((weights, params)) = &mut self.copy {
            for col in 0..cols {
                for row in 0..rows {
                    let w = match weights.split_first_chunk::<4>() {
                        Some((b, rest)) => {
                            *weights = rest;
                            f32::from_le_bytes(*b)
                        }
                        None => 0.0,
                    };
                    let at = self.total + block_index::<WIDE>(row, rows, cols, col);
                    if let Some(slot) = params.get_mut(at) {
                        *slot = w;
                    }
                }
            }
        }
        self.total = self.total.saturating_add(rows.saturating_mul(cols));
    }

    /// A dense layer: its `rows` x `cols` weights, then its `rows` biases. Out of line, so
    /// [`segments`] is one call per layer.
    #[inline(never)]
    fn layer(&mut self, rows: usize, cols: usize) {
        self.run(rows, cols);
        self.run(rows, 1);
    }
}

/// Walks the runs of an architecture's parameters in file order: the order in which
/// [`reconstruct`] takes them. A hierarchical block of 0 has no coarse path (as in
/// [`param_count`](crate::param_count)); the reader refuses such a header before loading.
pub(crate) fn segments<const WIDE: usize>(arch: Arch, d: Dims, walk: &mut ParamWalk<'_, WIDE>) {
    let Dims { n, h, z, .. } = d;
    // Encoder `n -> h -> z`, then what sits between it and the decoder, then the decoder
    // `z -> h -> n`.
    walk.layer(h, n);
    walk.layer(z, h);
    match arch {
        // The decoder reuses the encoder's matrices, transposed: only its biases.
        Arch::Tied => {
            walk.run(h, 1);
            walk.run(n, 1);
            return;
        }
        Arch::Vae => walk.layer(z, h), // the log-variance head
        Arch::VqVae { codebook } => walk.run(codebook.saturating_mul(z), 1),
        Arch::Dense | Arch::Hierarchical { .. } => {}
    }
    walk.layer(h, z);
    walk.layer(n, h);
    if let Arch::Hierarchical {
        block,
        coarse_hidden: ch,
        coarse_latent: cl,
    } = arch
    {
        if let Some(nc) = n.checked_div(block) {
            walk.layer(ch, nc);
            walk.layer(cl, ch);
            walk.layer(ch, cl);
            walk.layer(nc, ch);
        }
        walk.run(crate::model::GAINS, 1);
    }
}

/// Copies `weights` (the file's little-endian `f32`s, file order) into `params`, each weight
/// matrix into block layout.
pub(crate) fn load_params(arch: Arch, d: Dims, weights: &[u8], params: &mut [f32]) {
    segments(arch, d, &mut ParamWalk::<WIDEST>::copy(weights, params));
}

/// [`load_params`] for a target whose widest block has `widest` rows (see [`widest_for`]).
#[cfg(feature = "alloc")]
pub(crate) fn load_params_for(
    widest: usize,
    arch: Arch,
    d: Dims,
    weights: &[u8],
    params: &mut [f32],
) {
    if widest == 16 {
        segments(arch, d, &mut ParamWalk::<16>::copy(weights, params));
    } else {
        segments(arch, d, &mut ParamWalk::<32>::copy(weights, params));
    }
}

/// Number of parameters of an architecture: the saturating sum of its runs, so the same as
/// [`param_count`](crate::param_count), without describing the layout a second time on the
/// device.
pub(crate) fn param_total(arch: Arch, d: Dims) -> usize {
    let mut walk = ParamWalk::<WIDEST>::count();
    segments(arch, d, &mut walk);
    walk.total
}

/// Scratch space of one forward pass.
pub(crate) struct Scratch<'a> {
    pub h1: &'a mut [f32],
    pub z: &'a mut [f32],
    #[cfg_attr(not(feature = "vae"), allow(dead_code))] // reason: the VAE's head only
    pub logvar: &'a mut [f32],
    pub h2: &'a mut [f32],
    /// Hierarchical models' own scratch ([`crate::scratch_len`]); empty for the others.
    #[cfg_attr(not(feature = "hierarchical"), allow(dead_code))] // reason: read by `hier` only
    pub extra: &'a mut [f32],
}

/// Reconstructs `x` (in two parts, see [`Parts`]) into `xhat`. For the VAE the decoder runs
/// on the mean, and `scratch.logvar` holds the log-variance afterwards; the VQ-VAE's decoder
/// runs on the nearest code, which `scratch.z` holds afterwards. Returns the squared distance
/// from the encoder's code to that nearest code (0 for the other architectures), or `None`
/// only if slice lengths disagree with the sizes, which loading rules out.
pub(crate) fn reconstruct(
    arch: Arch,
    layers: &Layers,
    d: Dims,
    mut params: &[f32],
    x: Parts<'_>,
    s: Scratch<'_>,
    xhat: &mut [f32],
) -> Option<f32> {
    #[cfg(feature = "hierarchical")]
    if let Arch::Hierarchical {
        block,
        coarse_hidden,
        coarse_latent,
    } = arch
    {
        let coarse = crate::hier::Coarse {
            block,
            hidden: coarse_hidden,
            latent: coarse_latent,
        };
        crate::hier::reconstruct(layers, d, coarse, params, x, s, xhat)?;
        return Some(0.0);
    }
    let Dims { n, h, z, .. } = d;
    let p = &mut params;
    let (w1, b1) = (take(p, h * n)?, take(p, h)?);
    affine(w1, b1, h, n, false, x, s.h1, layers.encoder_hidden)?;
    let (w2, b2) = (take(p, z * h)?, take(p, z)?);
    let h1 = [&*s.h1, &[][..]];
    let distance = match arch {
        Arch::Dense | Arch::Tied => {
            affine(w2, b2, z, h, false, h1, s.z, layers.code)?;
            0.0
        }
        #[cfg(feature = "vqvae")]
        Arch::VqVae { codebook } => {
            affine(w2, b2, z, h, false, h1, s.z, layers.code)?;
            let codes = take(p, codebook.checked_mul(z)?)?;
            crate::vq::quantise(codes, s.z.get_mut(..z)?)?
        }
        #[cfg(feature = "vae")]
        Arch::Vae => {
            affine(w2, b2, z, h, false, h1, s.z, Activation::Linear)?;
            let (wl, bl) = (take(p, z * h)?, take(p, z)?);
            affine(wl, bl, z, h, false, h1, s.logvar, Activation::Linear)?;
            0.0
        }
        // The hierarchical model returned above; the architectures this build leaves out
        // (cargo features) never get here, `load` refuses their models.
        _ => return None,
    };
    let code = [&*s.z, &[][..]];
    match arch {
        Arch::Dense | Arch::Vae | Arch::VqVae { .. } | Arch::Hierarchical { .. } => {
            let (w3, b3) = (take(p, h * z)?, take(p, h)?);
            affine(w3, b3, h, z, false, code, s.h2, layers.decoder_hidden)?;
            let (w4, b4) = (take(p, n * h)?, take(p, n)?);
            affine(w4, b4, n, h, false, [s.h2, &[]], xhat, layers.output)?;
        }
        Arch::Tied => {
            let b3 = take(p, h)?;
            affine(w2, b3, h, z, true, code, s.h2, layers.decoder_hidden)?;
            let b4 = take(p, n)?;
            affine(w1, b4, n, h, true, [s.h2, &[]], xhat, layers.output)?;
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

/// Per-channel mean errors of a time-major window (`x[t * C + c]`, in two parts, see
/// [`Parts`]), written into `out` (length C). Returns the mean over all entries.
pub(crate) fn channel_errors(
    metric: ErrorMetric,
    x: Parts<'_>,
    xhat: &[f32],
    out: &mut [f32],
) -> f32 {
    let channels = out.len();
    out.fill(0.0);
    if channels == 0 {
        return 0.0;
    }
    let (xhat0, xhat1) = xhat.split_at(x[0].len().min(xhat.len()));
    let parts = [(x[0], xhat0), (x[1], xhat1)];
    // The squared error gets its own loops, free of the per-entry `match`.
    match metric {
        ErrorMetric::Mse => add_entries(parts, out, |a, b| (a - b) * (a - b)),
        ErrorMetric::Mae => add_entries(parts, out, |a, b| (a - b).abs()),
        // Without the `logistic` feature `load` refuses BCE models (no `logf` here).
        #[cfg(feature = "logistic")]
        ErrorMetric::Bce => add_entries(parts, out, |a, b| metric.entry(a, b)),
        #[cfg(not(feature = "logistic"))]
        ErrorMetric::Bce => {}
    }
    let steps = ((x[0].len() + x[1].len()) / channels).max(1) as f32;
    let mut total = 0.0;
    for o in out.iter_mut() {
        total += *o;
        *o /= steps;
    }
    total / (steps * channels as f32)
}

/// `out[c] += entry(x, xhat)` over the time steps of both time-major parts, in time order.
/// Channels are taken 8 at a time (then one at a time), their sums held in registers while
/// the time steps are walked, like the dense kernel's rows: per step and channel two loads,
/// the entry and one addition (a loop over the channels keeps the sums in memory at
/// opt-level "s"). Each channel's sum runs in the same order either way.
#[inline(always)]
fn add_entries<F: Fn(f32, f32) -> f32>(parts: [(&[f32], &[f32]); 2], out: &mut [f32], entry: F) {
    let channels = out.len();
    let (blocks, rest) = out.as_chunks_mut::<8>();
    for (i, acc) in blocks.iter_mut().enumerate() {
        entries8(acc, parts, i * 8, channels, &entry);
    }
    let first = channels - rest.len();
    for (i, acc) in rest.iter_mut().enumerate() {
        entries1(
            core::array::from_mut(acc),
            parts,
            first + i,
            channels,
            &entry,
        );
    }
}

/// Defines `fn $name(acc: &mut [f32; R], parts, c0, channels, entry)`: `acc[k] +=
/// entry(x[t * C + c0 + k], xhat[..])` for every time step `t` of both parts, with the `R`
/// additions of a step written out (as in `columns!`).
macro_rules! entries {
    ($name:ident, $r:literal, [$($k:literal)*]) => {
        #[inline(always)]
        fn $name<F: Fn(f32, f32) -> f32>(
            acc: &mut [f32; $r],
            parts: [(&[f32], &[f32]); 2],
            c0: usize,
            channels: usize,
            entry: &F,
        ) {
            let mut a = *acc;
            for (xs, ys) in parts {
                let mut t = c0;
                while let (Some(u), Some(v)) = (
                    xs.get(t..).and_then(<[f32]>::first_chunk::<$r>),
                    ys.get(t..).and_then(<[f32]>::first_chunk::<$r>),
                ) {
                    $(a[$k] += entry(u[$k], v[$k]);)*
                    t += channels;
                }
            }
            *acc = a;
        }
    };
}
entries!(entries8, 8, [0 1 2 3 4 5 6 7]);
entries!(entries1, 1, [0]);

#[cfg(test)]
mod tests {
    use super::*;

    /// Every entry of every matrix shape lands on its own slot of the block layout, for the
    /// device's blocks and the hosts'.
    #[test]
    fn block_layout_is_a_permutation() {
        fn check<const WIDE: usize>() {
            for rows in 1..=75 {
                for cols in 1..=5 {
                    let mut seen = [false; 75 * 5];
                    for col in 0..cols {
                        for row in 0..rows {
                            let i = block_index::<WIDE>(row, rows, cols, col);
                            assert!(
                                i < rows * cols && !seen[i],
                                "{WIDE}: {rows}x{cols} ({row}, {col})"
                            );
                            seen[i] = true;
                        }
                    }
                }
            }
        }
        check::<16>();
        check::<32>();
        // 20 rows (under WIDEST on every target): a 16-row block, then 4 single rows.
        assert_eq!(block_index::<WIDEST>(0, 20, 3, 1), 16);
        assert_eq!(block_index::<WIDEST>(17, 20, 3, 2), 16 * 3 + 3 + 2);
    }

    /// The kernel compiled for AVX2 (what hosts run) gives the same bits as the baseline
    /// build of the same code (what the device and other hosts run), for block and tail row
    /// counts, both parts of the window, the transposed product and every activation.
    #[cfg(all(feature = "simd", target_arch = "x86_64"))]
    #[test]
    fn avx2_kernel_gives_the_same_bits() {
        use rand::{RngExt, SeedableRng};
        let avx2 = pulp::x86::V3::try_new().expect("this test needs an x86-64 CPU with AVX2");
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let acts = [
            Activation::Linear,
            Activation::Relu,
            Activation::LeakyRelu { slope: 0.1 },
            Activation::Sigmoid,
            Activation::Tanh,
            Activation::SoftThreshold { lambda: 0.3 },
        ];
        let mut checked = 0;
        for rows in [1, 7, 8, 9, 16, 17, 31, 32, 33, 64, 75] {
            for cols in [1, 3, 8, 64, 128] {
                let w: std::vec::Vec<f32> = (0..rows * cols)
                    .map(|_| rng.random_range(-1.0f32..1.0))
                    .collect();
                let b: std::vec::Vec<f32> =
                    (0..rows).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let x: std::vec::Vec<f32> =
                    (0..cols).map(|_| rng.random_range(-3.0f32..3.0)).collect();
                let split = cols / 3;
                for (transposed, parts) in [
                    (false, [&x[..split], &x[split..]]),
                    (true, [&x[..], &[][..]]),
                ] {
                    let (rows, cols) = if transposed {
                        (cols, rows)
                    } else {
                        (rows, cols)
                    };
                    let Some(b) = b.get(..rows).or(x.get(..rows)) else {
                        continue;
                    };
                    for act in acts {
                        let (mut plain, mut wide) = ([0.0f32; 128], [0.0f32; 128]);
                        let layer = |y| Layer {
                            w: &w,
                            b,
                            rows,
                            cols,
                            transposed,
                            x: parts,
                            y,
                            act,
                        };
                        layer(&mut plain[..rows]).run();
                        pulp::Simd::vectorize(avx2, layer(&mut wide[..rows]));
                        assert_eq!(
                            plain.map(f32::to_bits),
                            wide.map(f32::to_bits),
                            "{rows}x{cols} transposed {transposed} {act:?}"
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 500, "{checked}");
    }

    /// The device's `tanh` gives the same bits as the hosts' on every 1021st `f32` (both
    /// signs, subnormals, infinities) and around the thresholds; NaN to NaN.
    #[test]
    fn both_forms_of_tanh_give_the_same_bits() {
        let around =
            |v: f32| (-4i32..=4).map(move |d| f32::from_bits(v.to_bits().wrapping_add_signed(d)));
        let special = [
            TANH_CLAMP,
            TANH_LINEAR_BELOW,
            1.0,
            8.0,
            f32::MAX,
            f32::INFINITY,
        ]
        .into_iter()
        .flat_map(around);
        let sampled = (0..=u32::MAX / 1021).map(|i| f32::from_bits(i * 1021));
        let mut checked = 0u32;
        for v in sampled.chain(special) {
            for x in [v, -v] {
                let (got, want) = (tanh_branching(x), tanh_clamped(x));
                if want.is_nan() {
                    assert!(got.is_nan(), "{x:e}");
                } else {
                    assert_eq!(got.to_bits(), want.to_bits(), "{x:e}");
                }
                checked += 1;
            }
        }
        assert!(checked > 8_000_000, "{checked}");
    }

    /// The segments of every architecture cover its parameters exactly.
    #[test]
    fn segments_cover_every_parameter() {
        let d = Dims {
            c: 2,
            n: 8,
            h: 5,
            z: 3,
        };
        let arches = [
            Arch::Dense,
            Arch::Tied,
            Arch::Vae,
            Arch::VqVae { codebook: 4 },
            Arch::Hierarchical {
                block: 2,
                coarse_hidden: 3,
                coarse_latent: 2,
            },
        ];
        for arch in arches {
            let mut walk = ParamWalk::<WIDEST>::count();
            segments(arch, d, &mut walk);
            let total = walk.total;
            assert_eq!(
                total,
                crate::model::param_count(arch, d.n, d.h, d.z),
                "{arch:?}"
            );
        }
    }
}
