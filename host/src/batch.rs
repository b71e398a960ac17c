//! Scoring many windows at once: the detector's window score, computed with matrix-matrix
//! products.
//!
//! [`DynDetector`](sensorae::DynDetector) scores one window per push, a matrix-vector product
//! per layer that loads every weight once per window. Offline scoring (a recorded file,
//! calibration, a backlog after an outage) has all its windows up front: [`BatchScorer`] runs
//! each layer over a block of windows as one matrix-matrix product, so every weight loaded into
//! a register serves several windows.
//!
//! On a CPU with AVX2 and FMA (checked once at load, through pulp's safe run-time dispatch; the
//! build stays the default x86-64 target) the product is our own register-blocked kernel over
//! weights packed at load time, with the bias in the accumulators and the activation applied
//! 8 lanes wide: about 90 % of one core's FMA peak at batch 256 for the SKAB-size model
//! (`benches/README.md`). Elsewhere it is nalgebra's `gemm`, which hands `Dyn` `f32` matrices
//! to `matrixmultiply`. Either way the activations are the core's own
//! ([`Activation::apply`]), so the branch-free rational `tanh` is the function the detector
//! runs.
//!
//! # Layout
//! A batch is a slice of whole windows, one after the other; each window is laid out as the
//! detector flattens it: **time-major**, oldest sample first, entry `t * C + c` is channel `c` at
//! time `t`, already normalised (`(raw - offset) * (1 / scale)` per channel). Read as a
//! column-major matrix this is `N x B` with one window per column, which is exactly the right
//! operand of `W1 (H x N) * X`; every layer's output is again one window per column.
//! [`BatchScorer::windows`] builds such a batch from raw rows.
//!
//! # Scores
//! The raw window score of the detector (before EWMA smoothing, alarms and drift tracking): the
//! model's error metric (MSE, MAE, BCE), its aggregate (mean over all entries or largest channel
//! mean), plus `kl_weight * KL` for a VAE or `kl_weight` times the squared distance to the
//! nearest code for a VQ-VAE (whose decoder reads that code), saturated to `f32::MAX` when not finite. Tied models
//! use the encoder's transposes, stored transposed once at construction. The sums run in another
//! order than the detector's (blocked GEMM with fused multiply-adds, 8-lane error sums), so
//! scores agree within a few `f32` rounding errors per sum, not bit for bit: the tests here
//! bound the relative difference by 1e-5.
//!
//! ```
//! use sensorae_host::batch::BatchScorer;
//! let model = sensorae::testing::tiny_model_bytes(); // 2 channels, window 4
//! let mut scorer = BatchScorer::from_bytes(&model)?;
//! let rows: Vec<f32> = (0..20).flat_map(|t| [(t as f32 * 0.3).sin(), (t as f32 * 0.3).cos()]).collect();
//! let windows = scorer.windows(&rows);
//! let scores = scorer.score(&windows)?;
//! assert_eq!(scores.len(), 20 - 4 + 1);
//! assert!(scores.iter().all(|s| *s >= 0.0));
//! # Ok::<(), sensorae_host::batch::BatchError>(())
//! ```

use nalgebra::{DMatrix, DMatrixView, DMatrixViewMut, Dyn};
use sensorae::{Activation, Aggregate, Arch, ErrorMetric, LoadError, ModelView, Scoring};

/// Windows per GEMM: enough to fill matrixmultiply's 8-wide micro-kernel panels many times
/// over, small enough that a block's activations (`(N + 2H + 2Z) * 4` bytes per window, 193 KB
/// for the SKAB-size model) stay in the 512 KB L2 between layers.
pub const BLOCK: usize = 256;

/// Why a batch could not be scored.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The model file is corrupt or not a model file.
    #[error("model: {0}")]
    Load(#[from] LoadError),
    /// The windows slice is not a whole number of windows.
    #[error("windows: {found} values is not a whole number of windows of {window} values")]
    Ragged {
        /// Values per window (N = C * W).
        window: usize,
        /// Values given.
        found: usize,
    },
    /// The scores slice has another length than the number of windows.
    #[error("scores: {found} slots for {expected} windows")]
    ScoreCount {
        /// Windows given.
        expected: usize,
        /// Slots given.
        found: usize,
    },
}

/// One dense layer, `y = act(W x + b)`, `W` column-major with a row per output.
#[derive(Debug, Clone)]
struct Layer {
    w: DMatrix<f32>,
    b: Vec<f32>,
}

impl Layer {
    /// `out = W x` for the block `x` (one window per column, `col_stride` apart), then `+ b` and
    /// `act` in one pass.
    fn forward(&self, x: DMatrixView<'_, f32, Dyn, Dyn>, out: &mut [f32], act: Activation) {
        let rows = self.w.nrows();
        let cols = x.ncols();
        let Some(out) = out.get_mut(..rows * cols) else {
            return;
        };
        let mut y = DMatrixViewMut::from_slice(out, rows, cols);
        // beta = 0: matrixmultiply writes `y` without reading it.
        y.gemm(1.0, &self.w, &x, 0.0);
        bias_activate(out, &self.b, act);
    }
}

/// `y = act(y + b)` column by column, with one `match` per call so each loop is branch-free and
/// vectorises (the core's `tanh` is a rational function with a select, no branches).
fn bias_activate(out: &mut [f32], b: &[f32], act: Activation) {
    fn each(out: &mut [f32], b: &[f32], f: impl Fn(f32) -> f32) {
        if b.is_empty() {
            return;
        }
        for col in out.chunks_exact_mut(b.len()) {
            for (y, &bias) in col.iter_mut().zip(b) {
                *y = f(*y + bias);
            }
        }
    }
    match act {
        Activation::Linear => each(out, b, |v| v),
        Activation::Relu => each(out, b, |v| Activation::Relu.apply(v)),
        Activation::Tanh => each(out, b, |v| Activation::Tanh.apply(v)),
        Activation::Sigmoid => each(out, b, |v| Activation::Sigmoid.apply(v)),
        Activation::LeakyRelu { slope } => {
            each(out, b, |v| Activation::LeakyRelu { slope }.apply(v))
        }
        Activation::SoftThreshold { lambda } => {
            each(out, b, |v| Activation::SoftThreshold { lambda }.apply(v))
        }
    }
}

/// Scores windows in blocks of [`BLOCK`] with matrix-matrix products; see the module docs.
#[derive(Debug, Clone)]
pub struct BatchScorer {
    arch: Arch,
    activations: [Activation; 4],
    scoring: Scoring,
    channels: usize,
    length: usize,
    hop: usize,
    n: usize,
    z: usize,
    /// Per channel: `offset`, `1 / scale`, as the detector normalises.
    norms: Vec<(f32, f32)>,
    encoder: Layer,
    /// The code layer; for the VAE the mean and log-variance heads stacked (2Z rows), so one
    /// GEMM computes both and the decoder reads the first Z rows of each column.
    code: Layer,
    decoder: Layer,
    output: Layer,
    h1: Vec<f32>,
    codes: Vec<f32>,
    h2: Vec<f32>,
    xhat: Vec<f32>,
    channel_sums: Vec<f32>,
    /// The VQ-VAE's codebook and each window's squared distance to its nearest code.
    vq: Vq,
    /// A hierarchical model's coarse path (the layers above are its fine path).
    hier: Option<Box<Coarse>>,
    /// The AVX2+FMA path when the CPU has it.
    #[cfg(target_arch = "x86_64")]
    fast: Option<fast::Fast>,
}

/// A VQ-VAE's codebook (K x Z, empty for other architectures) and the squared distance of each
/// window of a block from its nearest code.
#[derive(Debug, Clone, Default)]
struct Vq {
    codebook: Vec<f32>,
    distances: Vec<f32>,
}

impl Vq {
    /// Replaces each of the first `b` codes (columns of `stride` values, the first `z` of them
    /// the code) by its nearest codebook entry, as the detector does, keeping the distances.
    fn quantise(&mut self, codes: &mut [f32], stride: usize, z: usize, b: usize) {
        if self.codebook.is_empty() {
            return;
        }
        for (col, d) in codes
            .chunks_exact_mut(stride.max(1))
            .zip(self.distances.iter_mut())
            .take(b)
        {
            *d = col
                .get_mut(..z)
                .and_then(|code| sensorae::quantise(&self.codebook, code))
                .unwrap_or(f32::NAN);
        }
    }
}

/// A hierarchical model's coarse path, gains and block buffers. The windows are split and the
/// outputs combined by the core's own [`sensorae::block_means`], [`sensorae::fine_part`] and
/// [`sensorae::combine_scales`]; the layers run as GEMMs like the fine path's.
#[derive(Debug, Clone)]
struct Coarse {
    block: usize,
    layers: [Layer; 4],
    gains: [f32; sensorae::GAINS],
    /// Per window of a block: the block means (the coarse input, then scratch), the fine
    /// part (the fine input), and the coarse activations.
    means: Vec<f32>,
    fine_in: Vec<f32>,
    h1: Vec<f32>,
    code: Vec<f32>,
    h2: Vec<f32>,
    out: Vec<f32>,
}

impl Coarse {
    /// The coarse layers and gains from `params` (what follows the fine path's).
    fn new(params: &[f32], n: usize, block: usize, h: usize, z: usize) -> Option<Self> {
        let nc = n.checked_div(block)?;
        let split = params.len().checked_sub(sensorae::GAINS)?;
        let (layers, _) = BatchScorer::layers(Arch::Dense, params.get(..split)?, nc, h, z)?;
        let gains = *params.get(split..)?.first_chunk::<{ sensorae::GAINS }>()?;
        Some(Coarse {
            block,
            layers,
            gains,
            means: vec![0.0; nc * BLOCK],
            fine_in: vec![0.0; n * BLOCK],
            h1: vec![0.0; h * BLOCK],
            code: vec![0.0; z * BLOCK],
            h2: vec![0.0; h * BLOCK],
            out: vec![0.0; nc * BLOCK],
        })
    }
}

/// Splits the next `rows x cols` column-major matrix and its `rows` biases off the front.
fn take_layer(params: &mut &[f32], rows: usize, cols: usize) -> Option<Layer> {
    let w = take(params, rows * cols)?;
    let b = take(params, rows)?;
    Some(Layer {
        w: DMatrix::from_column_slice(rows, cols, w),
        b: b.to_vec(),
    })
}

fn take<'p>(params: &mut &'p [f32], len: usize) -> Option<&'p [f32]> {
    let (head, tail) = params.split_at_checked(len)?;
    *params = tail;
    Some(head)
}

impl BatchScorer {
    /// Reads a model file.
    ///
    /// # Errors
    /// [`BatchError::Load`] for a bad file.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes();
    /// let scorer = sensorae_host::batch::BatchScorer::from_bytes(&model)?;
    /// assert_eq!(scorer.window_len(), 8);
    /// # Ok::<(), sensorae_host::batch::BatchError>(())
    /// ```
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BatchError> {
        let view = ModelView::from_bytes(bytes).map_err(LoadError::from)?;
        Ok(Self::from_view(&view))
    }

    /// Copies a checked model view's weights into GEMM-ready matrices.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes();
    /// let view = sensorae::ModelView::from_bytes(&model).unwrap();
    /// let scorer = sensorae_host::batch::BatchScorer::from_view(&view);
    /// assert_eq!(scorer.window_len(), 8);
    /// ```
    #[must_use]
    pub fn from_view(view: &ModelView<'_>) -> Self {
        let hd = view.header();
        let (channels, length) = (
            usize::from(hd.window.channels),
            usize::from(hd.window.length),
        );
        let (n, h, z) = (
            hd.input(),
            hd.layers.hidden as usize,
            hd.layers.latent as usize,
        );
        let params: Vec<f32> = view.weights().collect();
        let arch = hd.arch();
        // A hierarchical model's fine path is a dense network at the front of its parameters.
        let (fine_arch, fine_len) = match arch {
            Arch::Hierarchical { .. } => (Arch::Dense, sensorae::param_count(Arch::Dense, n, h, z)),
            _ => (arch, params.len()),
        };
        let (fine, rest) = params.split_at(fine_len.min(params.len()));
        let hier = match arch {
            Arch::Hierarchical {
                block,
                coarse_hidden,
                coarse_latent,
            } => Coarse::new(rest, n, block, coarse_hidden, coarse_latent).map(Box::new),
            _ => None,
        };
        // A checked view holds exactly `param_count` weights, so every `take` succeeds; the
        // zero layers below are never reached.
        let (layers, codebook) = Self::layers(fine_arch, fine, n, h, z).unwrap_or_else(|| {
            let zero = |rows, cols| Layer {
                w: DMatrix::zeros(rows, cols),
                b: vec![0.0; rows],
            };
            let zs = if arch == Arch::Vae { 2 * z } else { z };
            (
                [zero(h, n), zero(zs, h), zero(h, z), zero(n, h)],
                Vec::new(),
            )
        });
        let [encoder, code, decoder, output] = layers;
        let zs = code.w.nrows();
        let activations = [
            hd.layers.encoder_hidden,
            if arch == Arch::Vae {
                Activation::Linear
            } else {
                hd.layers.code
            },
            hd.layers.decoder_hidden,
            hd.layers.output,
        ];
        Self {
            // The hierarchical split and combination run between the layers, so its blocks
            // take the portable path.
            #[cfg(target_arch = "x86_64")]
            fast: if hier.is_none() {
                fast::Fast::new([&encoder, &code, &decoder, &output], activations, z)
            } else {
                None
            },
            hier,
            arch,
            activations,
            scoring: hd.scoring,
            channels,
            length,
            hop: usize::from(hd.window.hop).max(1),
            n,
            z,
            norms: view.channels().map(|c| (c.offset, 1.0 / c.scale)).collect(),
            encoder,
            code,
            decoder,
            output,
            h1: vec![0.0; h * BLOCK],
            codes: vec![0.0; zs * BLOCK],
            h2: vec![0.0; h * BLOCK],
            xhat: vec![0.0; n * BLOCK],
            channel_sums: vec![0.0; channels],
            vq: Vq {
                distances: if codebook.is_empty() {
                    Vec::new()
                } else {
                    vec![0.0; BLOCK]
                },
                codebook,
            },
        }
    }

    /// Encoder, code (VAE: mean and log-variance stacked), decoder and output layers, and the
    /// VQ-VAE's codebook (empty for the others).
    fn layers(
        arch: Arch,
        params: &[f32],
        n: usize,
        h: usize,
        z: usize,
    ) -> Option<([Layer; 4], Vec<f32>)> {
        let p = &mut &params[..];
        let encoder = take_layer(p, h, n)?;
        let mut code = take_layer(p, z, h)?;
        if arch == Arch::Vae {
            let logvar = take_layer(p, z, h)?;
            let mut w = DMatrix::zeros(2 * z, h);
            w.rows_mut(0, z).copy_from(&code.w);
            w.rows_mut(z, z).copy_from(&logvar.w);
            code.w = w;
            code.b.extend_from_slice(&logvar.b);
        }
        let codebook = match arch {
            Arch::VqVae { codebook } => take(p, codebook * z)?.to_vec(),
            _ => Vec::new(),
        };
        let (decoder, output) = match arch {
            Arch::Dense | Arch::Vae | Arch::VqVae { .. } | Arch::Hierarchical { .. } => {
                (take_layer(p, h, z)?, take_layer(p, n, h)?)
            }
            Arch::Tied => {
                let b3 = take(p, h)?.to_vec();
                let b4 = take(p, n)?.to_vec();
                (
                    Layer {
                        w: code.w.transpose(),
                        b: b3,
                    },
                    Layer {
                        w: encoder.w.transpose(),
                        b: b4,
                    },
                )
            }
        };
        p.is_empty()
            .then_some(([encoder, code, decoder, output], codebook))
    }

    /// The same scorer on the portable path (nalgebra's GEMM), for tests of both paths.
    #[cfg(test)]
    fn portable(mut self) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            self.fast = None;
        }
        self
    }

    /// Values per window, N = C * W.
    #[must_use]
    pub fn window_len(&self) -> usize {
        self.n
    }

    /// Multiply-adds of one window's forward pass (all dense layers), for throughput figures.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes(); // N 8, H 4, Z 2
    /// let scorer = sensorae_host::batch::BatchScorer::from_bytes(&model)?;
    /// assert_eq!(scorer.macs_per_window(), 8 * 4 + 4 * 2 + 2 * 4 + 4 * 8);
    /// # Ok::<(), sensorae_host::batch::BatchError>(())
    /// ```
    #[must_use]
    pub fn macs_per_window(&self) -> usize {
        [&self.encoder, &self.code, &self.decoder, &self.output]
            .iter()
            .map(|l| l.w.len())
            .sum()
    }

    /// Every window a detector scores when fed `rows` (raw samples of C values, row after row,
    /// all valid, starting from a fresh detector): normalised as the detector does, flattened
    /// time-major, one every `hop` samples once the first is full. Drift tracking is not
    /// applied (the detector's baselines start at 0 and stay there for models without it).
    /// A trailing partial row is ignored.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes(); // 2 channels, window 4, hop 1
    /// let scorer = sensorae_host::batch::BatchScorer::from_bytes(&model)?;
    /// let windows = scorer.windows(&[0.0; 2 * 6]);
    /// assert_eq!(windows.len(), 3 * 8);
    /// # Ok::<(), sensorae_host::batch::BatchError>(())
    /// ```
    #[must_use]
    pub fn windows(&self, rows: &[f32]) -> Vec<f32> {
        let c = self.channels.max(1);
        let normalised: Vec<f32> = rows
            .chunks_exact(c)
            .flat_map(|r| r.iter().zip(&self.norms).map(|(&v, &(o, s))| (v - o) * s))
            .collect();
        let samples = normalised.len() / c;
        let mut out = Vec::new();
        let mut start = 0;
        while start + self.length <= samples {
            if let Some(w) = normalised.get(start * c..(start + self.length) * c) {
                out.extend_from_slice(w);
            }
            start += self.hop;
        }
        out
    }

    /// Scores `windows` (whole windows in the detector's layout, see the module docs) into
    /// `scores`, one per window.
    ///
    /// # Errors
    /// [`BatchError::Ragged`] when `windows` is not a whole number of windows,
    /// [`BatchError::ScoreCount`] when `scores` has another length than their number.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes();
    /// let mut scorer = sensorae_host::batch::BatchScorer::from_bytes(&model)?;
    /// let mut scores = [0.0; 3];
    /// scorer.score_into(&[0.5; 3 * 8], &mut scores)?;
    /// assert_eq!(scores[0], scores[2]);
    /// # Ok::<(), sensorae_host::batch::BatchError>(())
    /// ```
    pub fn score_into(&mut self, windows: &[f32], scores: &mut [f32]) -> Result<(), BatchError> {
        let n = self.n.max(1);
        if !windows.len().is_multiple_of(n) {
            return Err(BatchError::Ragged {
                window: n,
                found: windows.len(),
            });
        }
        let count = windows.len() / n;
        if scores.len() != count {
            return Err(BatchError::ScoreCount {
                expected: count,
                found: scores.len(),
            });
        }
        for (x, s) in windows.chunks(n * BLOCK).zip(scores.chunks_mut(BLOCK)) {
            self.score_block(x, s);
        }
        Ok(())
    }

    /// Scores `windows` into a new vector; see [`score_into`](Self::score_into).
    ///
    /// # Errors
    /// [`BatchError::Ragged`] when `windows` is not a whole number of windows.
    ///
    /// # Examples
    /// ```
    /// let model = sensorae::testing::tiny_model_bytes();
    /// let mut scorer = sensorae_host::batch::BatchScorer::from_bytes(&model)?;
    /// assert_eq!(scorer.score(&[0.0; 16])?.len(), 2);
    /// # Ok::<(), sensorae_host::batch::BatchError>(())
    /// ```
    pub fn score(&mut self, windows: &[f32]) -> Result<Vec<f32>, BatchError> {
        let mut scores = vec![0.0; windows.len() / self.n.max(1)];
        self.score_into(windows, &mut scores)?;
        Ok(scores)
    }

    /// One block of at most [`BLOCK`] windows: `x` is `N x B` column-major.
    fn score_block(&mut self, x: &[f32], scores: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if let Some(fast) = self.fast.as_mut() {
            let finish = Finish {
                arch: self.arch,
                scoring: self.scoring,
                n: self.n,
                z: self.z,
                length: self.length,
            };
            fast.score_block(&finish, x, scores, &mut self.channel_sums, &mut self.vq);
            return;
        }
        let b = scores.len();
        let (n, z) = (self.n, self.z);
        let (h, zs) = (self.encoder.w.nrows(), self.code.w.nrows());
        let [a1, a2, a3, a4] = self.activations;
        let xs = x;
        if let Some(coarse) = self.hier.as_mut() {
            coarse.split(xs, self.channels, n, b);
        }
        let fine_in = self.hier.as_ref().map_or(xs, |c| &c.fine_in[..n * b]);
        let x = DMatrixView::from_slice_with_strides(fine_in, n, b, 1, n);
        self.encoder.forward(x, &mut self.h1, a1);
        let h1 = DMatrixView::from_slice_with_strides(&self.h1[..h * b], h, b, 1, h);
        self.code.forward(h1, &mut self.codes, a2);
        self.vq.quantise(&mut self.codes, zs, z, b);
        // The decoder reads the code (VAE: the mean, the first Z of each 2Z-long column).
        let code = DMatrixView::from_slice_with_strides(&self.codes[..zs * b], z, b, 1, zs);
        self.decoder.forward(code, &mut self.h2, a3);
        let h2 = DMatrixView::from_slice_with_strides(&self.h2[..h * b], h, b, 1, h);
        self.output.forward(h2, &mut self.xhat, a4);
        if let Some(coarse) = self.hier.as_mut() {
            coarse.run(self.activations, self.channels, n, b, &mut self.xhat);
        }
        let finish = Finish {
            arch: self.arch,
            scoring: self.scoring,
            n,
            z,
            length: self.length,
        };
        finish.scores(
            xs,
            (&self.xhat, n),
            (&self.codes, zs),
            scores,
            &mut self.channel_sums,
            &self.vq.distances,
        );
    }
}

impl Coarse {
    /// Block means (the coarse input) and fine parts (the fine input) of the `b` windows `x`.
    fn split(&mut self, x: &[f32], channels: usize, n: usize, b: usize) {
        let nc = self.means.len() / BLOCK;
        let windows = x.chunks_exact(n.max(1)).take(b);
        let means = self.means.chunks_exact_mut(nc.max(1));
        for ((xw, m), f) in windows
            .zip(means)
            .zip(self.fine_in.chunks_exact_mut(n.max(1)))
        {
            let ok = sensorae::block_means(xw, channels, self.block, m)
                .and_then(|()| sensorae::fine_part(xw, channels, self.block, m, f));
            // The sizes come from a checked model; a miss would show as a NaN score.
            if ok.is_none() {
                f.fill(f32::NAN);
            }
        }
    }

    /// Runs the coarse path on the block means and combines it with the fine outputs in `xhat`.
    fn run(
        &mut self,
        acts: [Activation; 4],
        channels: usize,
        n: usize,
        b: usize,
        xhat: &mut [f32],
    ) {
        let nc = self.means.len() / BLOCK;
        let [encoder, code, decoder, output] = &self.layers;
        let (h, z) = (encoder.w.nrows(), code.w.nrows());
        fn view(s: &[f32], rows: usize, b: usize) -> DMatrixView<'_, f32, Dyn, Dyn> {
            DMatrixView::from_slice_with_strides(&s[..rows * b], rows, b, 1, rows)
        }
        encoder.forward(view(&self.means, nc, b), &mut self.h1, acts[0]);
        code.forward(view(&self.h1, h, b), &mut self.code, acts[1]);
        decoder.forward(view(&self.code, z, b), &mut self.h2, acts[2]);
        output.forward(view(&self.h2, h, b), &mut self.out, acts[3]);
        let outs = xhat.chunks_exact_mut(n.max(1)).take(b);
        let coarse = self.out.chunks_exact(nc.max(1));
        for ((y, c), m) in outs.zip(coarse).zip(self.means.chunks_exact_mut(nc.max(1))) {
            if sensorae::combine_scales(y, channels, self.block, c, self.gains, m).is_none() {
                y.fill(f32::NAN);
            }
        }
    }
}

/// Everything that turns reconstructions into window scores.
#[derive(Debug, Clone, Copy)]
struct Finish {
    arch: Arch,
    scoring: Scoring,
    n: usize,
    z: usize,
    length: usize,
}

impl Finish {
    /// Scores of a block: `x` (one window per `n` values), reconstructions and codes one per
    /// column of the given stride.
    #[inline(always)]
    fn scores(
        &self,
        x: &[f32],
        (xhat, xhat_stride): (&[f32], usize),
        (codes, code_stride): (&[f32], usize),
        scores: &mut [f32],
        channel_sums: &mut [f32],
        distances: &[f32],
    ) {
        let (n, z, metric) = (self.n, self.z, self.scoring.metric);
        let xs = x.chunks_exact(n.max(1));
        let xhats = xhat.chunks_exact(xhat_stride.max(1));
        let codes = codes.chunks_exact(code_stride.max(1));
        let windows = scores.iter_mut().zip(xs).zip(xhats).zip(codes);
        for (j, (((s, xw), xh), code)) in windows.enumerate() {
            let xh = xh.get(..n).unwrap_or(xh);
            let mut score = match self.scoring.aggregate {
                Aggregate::Mean => window_mean(metric, xw, xh),
                Aggregate::MaxChannel => max_channel(metric, xw, xh, channel_sums, self.length),
            };
            if self.arch == Arch::Vae && self.scoring.kl_weight > 0.0 {
                let (mu, logvar) = code.split_at(z.min(code.len()));
                let logvar = logvar.get(..z).unwrap_or(logvar);
                score += self.scoring.kl_weight * sensorae::kl_divergence(mu, logvar);
            }
            if matches!(self.arch, Arch::VqVae { .. }) && self.scoring.kl_weight > 0.0 {
                score += self.scoring.kl_weight * distances.get(j).copied().unwrap_or(f32::NAN);
            }
            // The detector's saturation: finite and non-negative.
            *s = if score.is_nan() || score > f32::MAX {
                f32::MAX
            } else {
                score.max(0.0)
            };
        }
    }
}

/// Mean entry error of one window, summed in 8 lanes so the loop vectorises.
#[inline(always)]
fn window_mean(metric: ErrorMetric, x: &[f32], xhat: &[f32]) -> f32 {
    fn sum(x: &[f32], xhat: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
        let (xc, xr) = x.as_chunks::<8>();
        let (yc, yr) = xhat.as_chunks::<8>();
        let mut acc = [0.0f32; 8];
        for (u, v) in xc.iter().zip(yc) {
            for ((a, &p), &q) in acc.iter_mut().zip(u).zip(v) {
                *a += f(p, q);
            }
        }
        let mut total: f32 = acc.iter().sum();
        for (&p, &q) in xr.iter().zip(yr) {
            total += f(p, q);
        }
        total
    }
    let total = match metric {
        ErrorMetric::Mse => sum(x, xhat, |p, q| ErrorMetric::Mse.entry(p, q)),
        ErrorMetric::Mae => sum(x, xhat, |p, q| ErrorMetric::Mae.entry(p, q)),
        ErrorMetric::Bce => sum(x, xhat, |p, q| ErrorMetric::Bce.entry(p, q)),
    };
    total / x.len().max(1) as f32
}

/// Largest per-channel mean error of one time-major window; non-finite channel errors count
/// as `f32::MAX`, as in the detector.
#[inline(always)]
fn max_channel(
    metric: ErrorMetric,
    x: &[f32],
    xhat: &[f32],
    sums: &mut [f32],
    steps: usize,
) -> f32 {
    let channels = sums.len();
    if channels == 0 {
        return 0.0;
    }
    sums.fill(0.0);
    for (xs, ys) in x.chunks_exact(channels).zip(xhat.chunks_exact(channels)) {
        for ((o, &a), &b) in sums.iter_mut().zip(xs).zip(ys) {
            *o += metric.entry(a, b);
        }
    }
    let steps = steps.max(1) as f32;
    sums.iter().fold(0.0f32, |m, &s| {
        let e = s / steps;
        m.max(if e <= f32::MAX { e } else { f32::MAX })
    })
}

/// `y = act(y)` over a whole buffer, with one `match` per call so each loop is branch-free and
/// vectorises (inlined into the AVX2 path, it runs 8 lanes wide).
#[inline(always)]
fn activate(out: &mut [f32], act: Activation) {
    match act {
        Activation::Linear => {}
        Activation::Relu => out.iter_mut().for_each(|y| *y = Activation::Relu.apply(*y)),
        Activation::Tanh => out.iter_mut().for_each(|y| *y = Activation::Tanh.apply(*y)),
        Activation::Sigmoid => out
            .iter_mut()
            .for_each(|y| *y = Activation::Sigmoid.apply(*y)),
        Activation::LeakyRelu { slope } => out
            .iter_mut()
            .for_each(|y| *y = Activation::LeakyRelu { slope }.apply(*y)),
        Activation::SoftThreshold { lambda } => out
            .iter_mut()
            .for_each(|y| *y = Activation::SoftThreshold { lambda }.apply(*y)),
    }
}

/// The AVX2+FMA path, chosen at run time (pulp's `V3` checks the CPU once and compiles the
/// closure under `#[target_feature]`, so none of our code is `unsafe`): a register-blocked GEMM
/// over weights packed once at load time. Each layer's weights are cut into tiles of 16 (or
/// a last 8) output rows, stored k-major (`tile[k * rows + i]`), so the micro-kernel reads
/// them as consecutive 8-lane vectors; windows are read in place, one broadcast per input.
/// A 16 x 6 tile keeps 12 accumulators, 2 weight vectors and a broadcast in the 16 AVX
/// registers: per input, 2 loads, 6 broadcasts and 12 FMAs. Row counts are padded to
/// multiples of 8 with zero weights (and the next layer gets zero columns for them), so
/// every tile is whole; the padded outputs are never read.
#[cfg(target_arch = "x86_64")]
mod fast {
    use pulp::{Simd, WithSimd, x86::V3};
    use sensorae::Activation;

    use super::{BLOCK, Finish, Vq};

    /// Windows per micro-kernel tile.
    const NC: usize = 6;
    /// Output rows per full tile (two 8-lane vectors).
    const MR: usize = 16;

    /// One layer, packed: `m` rows padded to `m_pad` (a multiple of 8), `k` inputs.
    #[derive(Debug, Clone)]
    pub(super) struct Packed {
        m_pad: usize,
        k: usize,
        tiles: Vec<f32>,
        bias: Vec<f32>,
        act: Activation,
    }

    pub(super) fn pad8(m: usize) -> usize {
        m.div_ceil(8) * 8
    }

    impl Packed {
        /// Packs `w` (`m x k_in` column-major) for inputs padded to `k >= k_in` rows.
        pub(super) fn new(
            w: &nalgebra::DMatrix<f32>,
            b: &[f32],
            k: usize,
            act: Activation,
        ) -> Self {
            let (m, k_in) = w.shape();
            let m_pad = pad8(m);
            let mut tiles = vec![0.0; m_pad * k];
            for row0 in (0..m_pad).step_by(MR) {
                let rows = MR.min(m_pad - row0);
                let tile = &mut tiles[row0 * k..(row0 + rows) * k];
                for (kk, slot) in tile.chunks_exact_mut(rows).enumerate() {
                    for (i, v) in slot.iter_mut().enumerate() {
                        if row0 + i < m && kk < k_in {
                            *v = w[(row0 + i, kk)];
                        }
                    }
                }
            }
            let mut bias = b.to_vec();
            bias.resize(m_pad, 0.0);
            Packed {
                m_pad,
                k,
                tiles,
                bias,
                act,
            }
        }

        /// `out = act(W x + b)` for `cols` windows, `x` with a column every `k` values, `out`
        /// with one every `m_pad`.
        #[inline(always)]
        fn forward<S: Simd>(&self, simd: S, x: &[f32], cols: usize, out: &mut [f32]) {
            let (k, m) = (self.k, self.m_pad);
            let out = &mut out[..m * cols];
            let x = &x[..k * cols];
            // tanh is applied in the registers, before the store; the others in a pass after.
            let fuse = self.act == Activation::Tanh;
            for row0 in (0..m).step_by(MR) {
                let rows = MR.min(m - row0);
                let tile = &self.tiles[row0 * k..(row0 + rows) * k];
                let bias = &self.bias[row0..row0 + rows];
                let mut c0 = 0;
                if rows == MR {
                    while c0 + NC <= cols {
                        kernel::<S, 2, NC>(simd, tile, bias, x, k, c0, out, m, row0, fuse);
                        c0 += NC;
                    }
                    tail::<S, 2>(simd, tile, bias, x, k, c0, cols, out, m, row0, fuse);
                } else {
                    while c0 + NC <= cols {
                        kernel::<S, 1, NC>(simd, tile, bias, x, k, c0, out, m, row0, fuse);
                        c0 += NC;
                    }
                    tail::<S, 1>(simd, tile, bias, x, k, c0, cols, out, m, row0, fuse);
                }
            }
            if !fuse {
                super::activate(out, self.act);
            }
        }
    }

    /// The core's rational `tanh` (13/6, Eigen's; `sensorae`'s `nn.rs` has the derivation)
    /// on 8 lanes, the Horner steps as FMAs: within a few ulp of the core's, which rounds each
    /// product and sum. NaN stays NaN.
    #[inline(always)]
    fn tanh<S: Simd>(simd: S, x: S::f32s) -> S::f32s {
        use sensorae::{TANH_CLAMP, TANH_LINEAR_BELOW, TANH_P, TANH_Q};
        let c = simd.min_f32s(
            simd.max_f32s(x, simd.splat_f32s(-TANH_CLAMP)),
            simd.splat_f32s(TANH_CLAMP),
        );
        let x2 = simd.mul_f32s(c, c);
        let p = TANH_P.iter().rev().fold(simd.splat_f32s(0.0), |acc, &a| {
            simd.mul_add_f32s(acc, x2, simd.splat_f32s(a))
        });
        let p = simd.mul_f32s(p, c);
        let q = TANH_Q.iter().rev().fold(simd.splat_f32s(0.0), |acc, &b| {
            simd.mul_add_f32s(acc, x2, simd.splat_f32s(b))
        });
        let r = simd.div_f32s(p, q);
        // Near zero tanh(x) rounds to x, as in the core; NaN (x != x) passes through.
        let small = simd.less_than_f32s(simd.abs_f32s(x), simd.splat_f32s(TANH_LINEAR_BELOW));
        let keep = simd.or_m32s(small, simd.not_m32s(simd.equal_f32s(x, x)));
        simd.select_f32s(keep, x, r)
    }

    /// The last `cols - c0 < NC` windows.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // reason: the kernel's operands, all hot
    fn tail<S: Simd, const V: usize>(
        simd: S,
        tile: &[f32],
        bias: &[f32],
        x: &[f32],
        k: usize,
        c0: usize,
        cols: usize,
        out: &mut [f32],
        m: usize,
        row0: usize,
        fuse: bool,
    ) {
        match cols - c0 {
            1 => kernel::<S, V, 1>(simd, tile, bias, x, k, c0, out, m, row0, fuse),
            2 => kernel::<S, V, 2>(simd, tile, bias, x, k, c0, out, m, row0, fuse),
            3 => kernel::<S, V, 3>(simd, tile, bias, x, k, c0, out, m, row0, fuse),
            4 => kernel::<S, V, 4>(simd, tile, bias, x, k, c0, out, m, row0, fuse),
            5 => kernel::<S, V, 5>(simd, tile, bias, x, k, c0, out, m, row0, fuse),
            _ => {}
        }
    }

    /// `V * 8` output rows from `row0` of windows `c0 .. c0 + C`: accumulators start at the
    /// bias, one FMA per weight vector and window per input.
    #[inline(always)]
    #[allow(clippy::too_many_arguments)] // reason: the kernel's operands, all hot
    fn kernel<S: Simd, const V: usize, const C: usize>(
        simd: S,
        tile: &[f32],
        bias: &[f32],
        x: &[f32],
        k: usize,
        c0: usize,
        out: &mut [f32],
        m: usize,
        row0: usize,
        fuse: bool,
    ) {
        let (w, _) = S::as_simd_f32s(&tile[..k * 8 * V]);
        let (b, _) = S::as_simd_f32s(&bias[..8 * V]);
        let b: [S::f32s; V] = core::array::from_fn(|v| b[v]);
        let mut acc = [b; C];
        let xs: [&[f32]; C] = core::array::from_fn(|j| &x[(c0 + j) * k..(c0 + j + 1) * k]);
        for (kk, wk) in w.chunks_exact(V).enumerate().take(k) {
            for (a, xj) in acc.iter_mut().zip(&xs) {
                let xb = simd.splat_f32s(xj[kk]);
                for (av, &wv) in a.iter_mut().zip(wk) {
                    *av = simd.mul_add_f32s(wv, xb, *av);
                }
            }
        }
        if fuse {
            for v in acc.iter_mut().flatten() {
                *v = tanh(simd, *v);
            }
        }
        for (j, a) in acc.iter().enumerate() {
            let start = (c0 + j) * m + row0;
            let (o, _) = S::as_mut_simd_f32s(&mut out[start..start + 8 * V]);
            o.copy_from_slice(a);
        }
    }

    /// The packed network and its block buffers.
    #[derive(Debug, Clone)]
    pub(super) struct Fast {
        simd: V3,
        layers: [Packed; 4],
        h1: Vec<f32>,
        codes: Vec<f32>,
        h2: Vec<f32>,
        xhat: Vec<f32>,
    }

    impl Fast {
        /// `None` without AVX2 and FMA.
        pub(super) fn new(
            layers: [&super::Layer; 4],
            acts: [Activation; 4],
            z: usize,
        ) -> Option<Self> {
            let simd = V3::try_new()?;
            let [l1, l2, l3, l4] = layers;
            let n = l1.w.ncols();
            let h_pad = pad8(l1.w.nrows());
            let zs_pad = pad8(l2.w.nrows());
            // The decoder reads whole padded code columns; its weights beyond the code's Z
            // (the VAE's log-variances, the padding) are zero.
            debug_assert!(l3.w.ncols() == z);
            let p1 = Packed::new(&l1.w, &l1.b, n, acts[0]);
            let p2 = Packed::new(&l2.w, &l2.b, h_pad, acts[1]);
            let p3 = Packed::new(&l3.w, &l3.b, zs_pad, acts[2]);
            let p4 = Packed::new(&l4.w, &l4.b, pad8(l3.w.nrows()), acts[3]);
            let n_pad = p4.m_pad;
            Some(Fast {
                simd,
                layers: [p1, p2, p3, p4],
                h1: vec![0.0; h_pad * BLOCK],
                codes: vec![0.0; zs_pad * BLOCK],
                h2: vec![0.0; pad8(l3.w.nrows()) * BLOCK],
                xhat: vec![0.0; n_pad * BLOCK],
            })
        }

        pub(super) fn score_block(
            &mut self,
            finish: &Finish,
            x: &[f32],
            scores: &mut [f32],
            channel_sums: &mut [f32],
            vq: &mut Vq,
        ) {
            let simd = self.simd;
            // `Simd::vectorize`, not V3's inherent one, which takes a closure.
            Simd::vectorize(
                simd,
                Run {
                    fast: self,
                    finish,
                    x,
                    scores,
                    channel_sums,
                    vq,
                },
            );
        }
    }

    /// One block under `#[target_feature]`: pulp calls `with_simd` from a function compiled for
    /// AVX2+FMA, and everything below it is `#[inline(always)]`, so it is compiled for AVX2+FMA
    /// too (a closure's body would be a separate function without those features).
    struct Run<'a> {
        fast: &'a mut Fast,
        finish: &'a Finish,
        x: &'a [f32],
        scores: &'a mut [f32],
        channel_sums: &'a mut [f32],
        vq: &'a mut Vq,
    }

    impl WithSimd for Run<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: Simd>(self, simd: S) {
            // The tiles are laid out for 8-lane vectors; `Fast` only ever runs on `V3`.
            if S::F32_LANES != 8 {
                return;
            }
            let Fast {
                layers: [p1, p2, p3, p4],
                h1,
                codes,
                h2,
                xhat,
                ..
            } = self.fast;
            let (x, b) = (self.x, self.scores.len());
            p1.forward(simd, x, b, h1);
            p2.forward(simd, h1, b, codes);
            self.vq.quantise(codes, p2.m_pad, self.finish.z, b);
            p3.forward(simd, codes, b, h2);
            p4.forward(simd, h2, b, xhat);
            self.finish.scores(
                x,
                (xhat, p4.m_pad),
                (codes, p2.m_pad),
                self.scores,
                self.channel_sums,
                &self.vq.distances,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use sensorae::{
        Channel, DynDetector, Header, Scaling, Status, Variant, encode_to_vec, testing::header,
    };

    use super::*;

    /// Relative difference allowed between batch and detector scores. Both compute the same
    /// sums in `f32` in other orders (blocked GEMM with fused multiply-adds against the core's
    /// column order, 8-lane error sums against per-channel sums): each dot product of length
    /// K <= 128 differs by at most about K * 2^-24 relative to the sum of absolute terms, a
    /// few 1e-6 at worst through four layers and an error sum of N = 128 positive terms;
    /// the random models here give reconstruction errors of order 1, far from cancellation.
    const REL_TOL: f32 = 1e-5;

    const ARCHS: [(Variant, bool); 4] = [
        (Variant::Plain, false),
        (Variant::Plain, true),
        (Variant::Vae, false),
        (Variant::VqVae { codebook: 5 }, false),
    ];
    const METRICS: [ErrorMetric; 3] = [ErrorMetric::Mse, ErrorMetric::Mae, ErrorMetric::Bce];
    const AGGREGATES: [Aggregate; 2] = [Aggregate::Mean, Aggregate::MaxChannel];
    const ACTIVATIONS: [Activation; 6] = [
        Activation::Tanh,
        Activation::Relu,
        Activation::LeakyRelu { slope: 0.05 },
        Activation::Sigmoid,
        Activation::Linear,
        Activation::SoftThreshold { lambda: 0.1 },
    ];

    /// A model of the given shape and rule with seeded random weights and channels.
    #[allow(clippy::too_many_arguments)] // reason: one fixture, every knob explicit
    fn model(
        rng: &mut ChaCha8Rng,
        (variant, tied): (Variant, bool),
        metric: ErrorMetric,
        aggregate: Aggregate,
        (c, w, h, z): (u16, u16, u32, u32),
        acts: [Activation; 4],
        kl_weight: f32,
    ) -> Vec<u8> {
        let mut hd: Header<'static> = header(c, w, h, z);
        hd.variant = variant;
        hd.tied = tied;
        hd.scoring.metric = metric;
        hd.scoring.aggregate = aggregate;
        hd.scoring.kl_weight = kl_weight;
        hd.layers.encoder_hidden = acts[0];
        hd.layers.code = acts[1];
        hd.layers.decoder_hidden = acts[2];
        hd.layers.output = acts[3];
        if metric == ErrorMetric::Bce {
            hd.scaling = Scaling::MinMax;
            hd.layers.output = Activation::Sigmoid;
        }
        let n = usize::from(c) * usize::from(w);
        // Glorot-like scale per parameter count keeps pre-activations of order 1.
        let scale = 1.0 / (n as f32).sqrt().max(1.0) * 2.0;
        let params: Vec<f32> = (0..hd.param_count())
            .map(|_| rng.random_range(-scale..scale))
            .collect();
        let channels: Vec<Channel<'static>> = (0..usize::from(c))
            .map(|_| Channel {
                name: "x",
                offset: rng.random_range(-1.0..1.0),
                scale: rng.random_range(0.5..2.0),
                min: -1e6,
                max: 1e6,
            })
            .collect();
        encode_to_vec(&hd, &channels, &params).expect("valid test model")
    }

    /// The detector's raw score of every window of `rows`.
    fn detector_scores(bytes: &[u8], rows: &[f32], c: usize) -> Vec<f32> {
        let mut det = DynDetector::from_bytes(bytes).expect("model loads");
        rows.chunks_exact(c)
            .filter_map(|r| match det.push(r).status {
                Status::Normal(s) | Status::Anomalous { score: s, .. } if s.fresh => Some(s.raw),
                Status::Fault(f) => panic!("unexpected fault {f:?}"),
                _ => None,
            })
            .collect()
    }

    fn assert_close(batch: &[f32], reference: &[f32], what: &str) {
        assert_eq!(batch.len(), reference.len(), "{what}: window count");
        assert!(!reference.is_empty(), "{what}: no windows scored");
        let worst = batch
            .iter()
            .zip(reference)
            .map(|(&b, &r)| (b - r).abs() / r.abs().max(1e-30))
            .fold(0.0f32, f32::max);
        eprintln!("{what}: worst relative difference {worst:e}");
        for (i, (&b, &r)) in batch.iter().zip(reference).enumerate() {
            let rel = (b - r).abs() / r.abs().max(1e-30);
            assert!(
                rel < REL_TOL || b == r,
                "{what}: window {i}: batch {b}, detector {r}, relative {rel:e}"
            );
        }
    }

    /// The scorer as loaded (AVX2 path where the CPU has it) and on the portable path.
    fn scorers(bytes: &[u8]) -> [(&'static str, BatchScorer); 2] {
        let scorer = BatchScorer::from_bytes(bytes).expect("model loads");
        [("loaded", scorer.clone()), ("portable", scorer.portable())]
    }

    fn rows(rng: &mut ChaCha8Rng, samples: usize, c: usize) -> Vec<f32> {
        (0..samples * c)
            .map(|_| rng.random_range(-2.0..2.0))
            .collect()
    }

    #[test]
    fn every_arch_metric_and_aggregate_matches_the_detector() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        let (c, w, h, z) = (3u16, 5u16, 12u32, 6u32);
        for arch in ARCHS {
            for metric in METRICS {
                for aggregate in AGGREGATES {
                    let kl = match arch.0 {
                        Variant::Vae => 0.3,
                        Variant::VqVae { .. } => 0.5,
                        _ => 0.0,
                    };
                    let bytes = model(
                        &mut rng,
                        arch,
                        metric,
                        aggregate,
                        (c, w, h, z),
                        [Activation::Tanh; 4],
                        kl,
                    );
                    // 300 windows: a full block of 256 and a partial one.
                    let data = rows(&mut rng, 300 + usize::from(w) - 1, usize::from(c));
                    let mut scorer = BatchScorer::from_bytes(&bytes).expect("model loads");
                    let batch = scorer.score(&scorer.windows(&data)).expect("whole windows");
                    let reference = detector_scores(&bytes, &data, usize::from(c));
                    assert_close(
                        &batch,
                        &reference,
                        &format!("{arch:?} {metric:?} {aggregate:?}"),
                    );
                }
            }
        }
    }

    /// Hierarchical models split each window and combine the two paths with the core's own
    /// functions; every metric, aggregate and activation, a partial block, and the SKAB size.
    #[test]
    fn hierarchical_matches_the_detector() {
        let mut rng = ChaCha8Rng::seed_from_u64(14);
        let hier = |block| {
            (
                Variant::Hierarchical {
                    block,
                    coarse_hidden: 5,
                    coarse_latent: 2,
                },
                false,
            )
        };
        for metric in [ErrorMetric::Mse, ErrorMetric::Mae] {
            for aggregate in AGGREGATES {
                for (i, &act) in ACTIVATIONS.iter().enumerate() {
                    let acts = [act, ACTIVATIONS[(i + 1) % 6], act, ACTIVATIONS[(i + 4) % 6]];
                    let shape = (3, 6, 12, 4);
                    let bytes = model(&mut rng, hier(3), metric, aggregate, shape, acts, 0.0);
                    let data = rows(&mut rng, 300 + 5, 3);
                    let reference = detector_scores(&bytes, &data, 3);
                    for (path, mut scorer) in scorers(&bytes) {
                        let batch = scorer.score(&scorer.windows(&data)).expect("whole windows");
                        let what = format!("{path}: {metric:?} {aggregate:?} {acts:?}");
                        assert_close(&batch, &reference, &what);
                    }
                }
            }
        }
        let acts = [
            Activation::Tanh,
            Activation::Linear,
            Activation::Tanh,
            Activation::Linear,
        ];
        let shape = (8, 16, 32, 8);
        let bytes = model(
            &mut rng,
            hier(4),
            ErrorMetric::Mse,
            Aggregate::MaxChannel,
            shape,
            acts,
            0.0,
        );
        let data = rows(&mut rng, 200, 8);
        let mut scorer = BatchScorer::from_bytes(&bytes).expect("model loads");
        let batch = scorer.score(&scorer.windows(&data)).expect("whole windows");
        assert_close(&batch, &detector_scores(&bytes, &data, 8), "SKAB size");
    }

    #[test]
    fn every_activation_matches_the_detector() {
        let mut rng = ChaCha8Rng::seed_from_u64(12);
        for arch in ARCHS {
            for (i, &act) in ACTIVATIONS.iter().enumerate() {
                let acts = [
                    act,
                    ACTIVATIONS[(i + 1) % ACTIVATIONS.len()],
                    ACTIVATIONS[(i + 2) % ACTIVATIONS.len()],
                    ACTIVATIONS[(i + 3) % ACTIVATIONS.len()],
                ];
                let bytes = model(
                    &mut rng,
                    arch,
                    ErrorMetric::Mse,
                    Aggregate::Mean,
                    (2, 8, 16, 7),
                    acts,
                    0.0,
                );
                let data = rows(&mut rng, 40, 2);
                let reference = detector_scores(&bytes, &data, 2);
                for (path, mut scorer) in scorers(&bytes) {
                    let batch = scorer.score(&scorer.windows(&data)).expect("whole windows");
                    assert_close(&batch, &reference, &format!("{path}: {arch:?} {acts:?}"));
                }
            }
        }
    }

    /// The SKAB-size model (the benchmark's shape) at hop 3, so `windows` skips like the
    /// detector does, and tiny dimensions below matrixmultiply's threshold (nalgebra's own loop).
    #[test]
    fn skab_size_with_hop_and_tiny_sizes_match_the_detector() {
        let mut rng = ChaCha8Rng::seed_from_u64(13);
        for (shape, samples) in [((8u16, 16u16, 64u32, 8u32), 600), ((2, 2, 3, 1), 50)] {
            for arch in ARCHS {
                let mut bytes = model(
                    &mut rng,
                    arch,
                    ErrorMetric::Mse,
                    Aggregate::MaxChannel,
                    shape,
                    [
                        Activation::Tanh,
                        Activation::Linear,
                        Activation::Tanh,
                        Activation::Linear,
                    ],
                    0.5,
                );
                let view = ModelView::from_bytes(&bytes).expect("valid");
                let (mut hd, chans, params) = (
                    *view.header(),
                    view.channels().collect::<Vec<_>>(),
                    view.weights().collect::<Vec<_>>(),
                );
                hd.window.hop = 3;
                bytes = encode_to_vec(&hd, &chans, &params).expect("valid");
                let c = usize::from(shape.0);
                let data = rows(&mut rng, samples, c);
                let reference = detector_scores(&bytes, &data, c);
                for (path, mut scorer) in scorers(&bytes) {
                    let batch = scorer.score(&scorer.windows(&data)).expect("whole windows");
                    assert_close(&batch, &reference, &format!("{path}: {shape:?} {arch:?}"));
                }
            }
        }
    }

    #[test]
    fn rejects_ragged_batches_and_wrong_score_counts() {
        let model = sensorae::testing::tiny_model_bytes();
        let mut scorer = BatchScorer::from_bytes(&model).expect("model loads");
        assert_eq!(
            scorer.score(&[0.0; 9]),
            Err(BatchError::Ragged {
                window: 8,
                found: 9
            })
        );
        assert_eq!(
            scorer.score_into(&[0.0; 16], &mut [0.0; 3]),
            Err(BatchError::ScoreCount {
                expected: 2,
                found: 3
            })
        );
        assert_eq!(scorer.score(&[]), Ok(vec![]));
        assert!(BatchScorer::from_bytes(b"not a model").is_err());
    }
}
