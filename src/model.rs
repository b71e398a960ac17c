//! What a model file describes: sizes, activations, normalisation, scoring, threshold and alarms.
//!
//! These types are the postcard payload of a `.snae` file (see `docs/model-format.md`). New enum
//! variants are only ever appended, so the postcard discriminants of existing ones never change.

use serde::{Deserialize, Serialize};

/// Largest number of channels a model may have.
pub const MAX_CHANNELS: usize = 64;
/// Largest window length, in samples.
pub const MAX_WINDOW: usize = 4096;
/// Largest layer width (input, hidden or latent). Small enough that the parameter count and
/// its byte size (at most about 5 * 8192^2 * 4 bytes) cannot wrap a 32-bit `usize`.
pub const MAX_WIDTH: usize = 8192;
/// Number of top channels a score reports.
pub const TOP_K: usize = 3;
/// Largest VQ-VAE codebook (number of codes K).
pub const MAX_CODEBOOK: usize = 1024;
/// Smallest block of a hierarchical model: a block of one time step would make the coarse part
/// the whole window and the fine part always zero.
pub const MIN_BLOCK: usize = 2;

/// Element-wise activation of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    /// `y = x`.
    Linear,
    /// `y = max(0, x)`.
    Relu,
    /// `y = x` for `x > 0`, else `slope * x`.
    LeakyRelu {
        /// Slope on the negative side, usually 0.01.
        slope: f32,
    },
    /// `y = 1 / (1 + e^-x)`.
    Sigmoid,
    /// `y = tanh(x)`.
    Tanh,
    /// Soft-thresholding, `y = sign(x) max(|x| - lambda, 0)`: the closed-form LASSO solution
    /// for an L1-penalised code (the seed's 软阈值算子), which sets small code entries exactly
    /// to zero. Used on the code layer (`--soft-threshold`).
    SoftThreshold {
        /// Threshold, finite and `>= 0`.
        lambda: f32,
    },
}

/// How the model was trained. Plain, sparse, denoising and contractive models share the
/// dense forward pass at inference; the VAE has mean and log-variance heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Variant {
    /// Plain undercomplete autoencoder.
    Plain,
    /// Sparse autoencoder (L1 on the code and/or KL sparsity on hidden units).
    Sparse,
    /// Denoising autoencoder.
    Denoising,
    /// Contractive autoencoder.
    Contractive,
    /// Small variational autoencoder.
    Vae,
    /// Vector-quantised VAE: the code is replaced by the nearest of `codebook` learned codes
    /// before decoding; the score adds `scoring.kl_weight` times the squared distance to that
    /// code. The codebook (K x Z) is stored after the encoder's code layer.
    VqVae {
        /// Number of codes K, 1 to [`MAX_CODEBOOK`].
        codebook: u16,
    },
    /// Masked autoencoder: trained to reconstruct windows with a share of their time steps or
    /// channels hidden (set to 0, the training mean); inference is the dense (or tied) pass.
    Masked {
        /// What the trainer hid.
        mask: MaskAxis,
    },
    /// Hierarchical (coarse/fine) autoencoder: the window splits into its per-channel means
    /// over blocks of `block` time steps (the coarse part) and the rest (the fine part, which
    /// has zero block means); a small dense autoencoder with its own code reconstructs each,
    /// and learned gains `g_c`, `g_f` scale the two paths. `layers` sizes the fine path.
    Hierarchical {
        /// Time steps per coarse block, at least [`MIN_BLOCK`], dividing the window length.
        block: u16,
        /// Hidden width of the coarse path, 1 to [`MAX_WIDTH`].
        coarse_hidden: u16,
        /// Code width of the coarse path, 1 to [`MAX_WIDTH`].
        coarse_latent: u16,
    },
}

/// What a masked autoencoder hides while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaskAxis {
    /// Whole time steps (every channel of a sample).
    Time,
    /// Whole channels (every time step of a channel): a detector can then score a window with
    /// a dropped channel hidden.
    Channel,
}

impl Variant {
    /// Short lowercase name, as the command line spells it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Variant::Plain => "ae",
            Variant::Sparse => "sparse",
            Variant::Denoising => "denoising",
            Variant::Contractive => "contractive",
            Variant::Vae => "vae",
            Variant::VqVae { .. } => "vqvae",
            Variant::Masked { .. } => "masked",
            Variant::Hierarchical { .. } => "hierarchical",
        }
    }

    /// The cargo feature of `sensorae` that compiles in this variant's inference, if it needs
    /// one (dense and tied models need none).
    #[must_use]
    pub const fn feature(self) -> Option<&'static str> {
        match self {
            Variant::Vae => Some("vae"),
            Variant::VqVae { .. } => Some("vqvae"),
            Variant::Hierarchical { .. } => Some("hierarchical"),
            _ => None,
        }
    }
}

/// The inference architecture, which fixes the order and shapes of the stored parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Encoder N->H->Z and decoder Z->H->N with separate weights.
    Dense,
    /// Like `Dense`, but the decoder uses the encoder's transposed weights (stored once).
    Tied,
    /// Encoder N->H, heads mu and log-variance H->Z, decoder Z->H->N.
    Vae,
    /// Like `Dense`, with a codebook of `codebook` codes of width Z between encoder and
    /// decoder; the decoder runs on the nearest code.
    VqVae {
        /// Number of codes K.
        codebook: usize,
    },
    /// A dense fine path N->H->Z->H->N on the window minus its block means, then a dense
    /// coarse path N/b->Hc->Zc->Hc->N/b on the block means, then the gains `[g_c, g_f]`; the
    /// reconstruction is `g_c * U(coarse) + g_f * (fine - U(block means of fine))`, `U`
    /// repeating each block mean over its block.
    Hierarchical {
        /// Time steps per block (b).
        block: usize,
        /// Coarse hidden width (Hc).
        coarse_hidden: usize,
        /// Coarse code width (Zc).
        coarse_latent: usize,
    },
}

/// Reconstruction error per entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorMetric {
    /// Squared error `(x - x')^2`.
    Mse,
    /// Absolute error `|x - x'|`.
    Mae,
    /// Binary cross-entropy; `x` is clamped to `[0, 1]` and `x'` to `[1e-7, 1 - 1e-7]`.
    Bce,
}

/// How entry errors become one window score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Aggregate {
    /// Mean over all `C*W` entries.
    Mean,
    /// Largest per-channel mean error: one broken channel stands out instead of being averaged
    /// away.
    MaxChannel,
}

/// How inputs were scaled: both are stored as `(x - offset) / scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scaling {
    /// `offset` = mean, `scale` = standard deviation (times the channel's error factor when
    /// the trainer folded per-channel error normalisation in: `sensorae train --error-scale`).
    Standard,
    /// `offset` = minimum, `scale` = maximum - minimum, so training data lies in `[0, 1]`.
    MinMax,
}

/// How the threshold was calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum ThresholdMethod {
    /// Set by hand.
    Fixed,
    /// The `q` quantile of held-out normal scores.
    Quantile {
        /// Quantile in `(0, 1)`.
        q: f32,
    },
    /// Mean plus `k` standard deviations of held-out normal scores.
    Sigma {
        /// Number of standard deviations.
        k: f32,
    },
    /// Peaks over threshold: a generalised Pareto tail fitted over an initial quantile, solved
    /// for a target false-alarm probability (as in SPOT).
    Pot {
        /// Target probability that a normal window exceeds the threshold.
        risk: f32,
        /// Quantile above which excesses were fitted.
        initial_quantile: f32,
    },
}

/// Header of the payload: everything except the channels and the weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Header<'a> {
    /// Free-form model name.
    pub name: &'a str,
    /// Variant the trainer used.
    pub variant: Variant,
    /// Decoder uses the encoder's transposes (not for the VAE).
    pub tied: bool,
    /// Windowing.
    pub window: WindowSpec,
    /// Layer sizes and activations.
    pub layers: Layers,
    /// How inputs were scaled.
    pub scaling: Scaling,
    /// Scoring rule.
    pub scoring: Scoring,
    /// Threshold on the (smoothed) score.
    pub threshold: Threshold,
    /// Alarm hysteresis.
    pub alarm: AlarmSpec,
    /// Sensor-fault recovery.
    pub faults: FaultPolicy,
    /// Tracking of slow drift in channel levels.
    pub adaptation: Adaptation,
    /// What training did.
    pub training: TrainingSummary,
}

/// Windowing: `channels` values per sample, windows of `length` samples every `hop` samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSpec {
    /// Channels per sample (C).
    pub channels: u16,
    /// Samples per window (W).
    pub length: u16,
    /// Samples between scored windows (S >= 1).
    pub hop: u16,
}

/// Layer sizes and activations. The input width is `channels * length`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Layers {
    /// Hidden width (H).
    pub hidden: u32,
    /// Code width (Z).
    pub latent: u32,
    /// Encoder hidden layer.
    pub encoder_hidden: Activation,
    /// Code layer (ignored for the VAE, whose heads are linear).
    pub code: Activation,
    /// Decoder hidden layer.
    pub decoder_hidden: Activation,
    /// Output layer (sigmoid for BCE models).
    pub output: Activation,
}

/// Scoring rule.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Scoring {
    /// Error per entry.
    pub metric: ErrorMetric,
    /// Entries to window score.
    pub aggregate: Aggregate,
    /// Weight of the latent term of the score, 0 turning it off: for a VAE, adds
    /// `kl_weight * KL(q(z|x) || N(0, I))`; for a VQ-VAE, `kl_weight * ||z - e||^2`, the
    /// squared distance from the code to its nearest codebook entry. Other families ignore it.
    pub kl_weight: f32,
    /// EWMA smoothing factor in `(0, 1]` (`s = a * raw + (1 - a) * s_prev`); 1 turns it off.
    pub ewma: f32,
}

/// Threshold and its provenance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// Scores above this value exceed.
    pub value: f32,
    /// How it was set.
    pub method: ThresholdMethod,
    /// Number of held-out windows it was calibrated on.
    pub calibration_windows: u32,
}

/// Alarm hysteresis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmSpec {
    /// Consecutive exceeding windows that turn the alarm on (k >= 1).
    pub on_after: u16,
    /// Consecutive normal windows that turn it off (m >= 1).
    pub off_after: u16,
}

/// Sensor-fault recovery rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultPolicy {
    /// A channel fault lasting at most this many consecutive samples is bridged by holding the
    /// channel's last valid value; a longer one (or 0 here) resets the window.
    pub hold_max: u16,
}

/// Slow drift of the channels' levels, tracked on the device: each channel's baseline (in
/// normalised units, starting at 0, the training mean) follows the stream as
/// `b += rate * (x - b)` and is subtracted before windowing, so a sensor that warms up or wears
/// over hours does not read as an anomaly. While the alarm is on, `in_alarm` says which
/// baselines hold still, so a lasting anomaly is not absorbed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Adaptation {
    /// Per-sample rate in `[0, 1)`: 0 turns tracking off; `1 / T` follows drift slower than `T`
    /// samples.
    pub rate: f32,
    /// Which baselines hold still while the alarm is on.
    pub in_alarm: AlarmHold,
}

impl Adaptation {
    /// No tracking.
    pub const OFF: Adaptation = Adaptation {
        rate: 0.0,
        in_alarm: AlarmHold::Explaining,
    };
}

/// Which channel baselines hold still while the alarm is on. (Stored as a variant index, so
/// files written when this was a `bool` read as `Follow` (false) and `All` (true).)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AlarmHold {
    /// None: every baseline keeps following, so a lasting anomaly fades out of the score.
    Follow,
    /// Every baseline. A channel that drifts during a long alarm without being part of the
    /// anomaly then keeps the score high after the anomaly ends, and the alarm may never clear.
    All,
    /// The channels that explain the alarm: from its onset until it clears, each channel whose
    /// error exceeded the threshold in a window that exceeded it (and always the window's
    /// largest), while the others keep following their drift.
    Explaining,
}

/// What the trainer did, for `inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrainingSummary {
    /// Epochs run.
    pub epochs: u32,
    /// Final training loss.
    pub train_loss: f32,
    /// Final validation loss.
    pub val_loss: f32,
    /// Rows of data used for training and validation.
    pub rows: u64,
    /// Windows used for training.
    pub train_windows: u32,
    /// Windows used for validation.
    pub val_windows: u32,
    /// Random seed.
    pub seed: u64,
}

/// One input channel: its name, normalisation and valid physical range.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Channel<'a> {
    /// Column name.
    pub name: &'a str,
    /// Subtracted before scaling.
    pub offset: f32,
    /// Divided by after subtracting; always > 0 (a zero spread is stored as 1).
    pub scale: f32,
    /// Smallest valid raw value (may be `-inf`).
    pub min: f32,
    /// Largest valid raw value (may be `+inf`).
    pub max: f32,
}

impl Header<'_> {
    /// The inference architecture this header implies.
    #[must_use]
    pub const fn arch(&self) -> Arch {
        arch_of(self.variant, self.tied)
    }

    /// Input width N = C * W.
    #[must_use]
    pub const fn input(&self) -> usize {
        self.window.channels as usize * self.window.length as usize
    }

    /// Number of `f32` parameters the weights section holds.
    #[must_use]
    pub const fn param_count(&self) -> usize {
        param_count(
            self.arch(),
            self.input(),
            self.layers.hidden as usize,
            self.layers.latent as usize,
        )
    }

    /// Extra scratch values a detector needs besides its fixed buffers (see [`scratch_len`]).
    #[must_use]
    pub const fn scratch_len(&self) -> usize {
        scratch_len(self.arch(), self.input())
    }

    /// Whether a layer uses the sigmoid activation or the score the binary cross-entropy:
    /// their inference is the cargo feature `logistic` of `sensorae`.
    #[must_use]
    pub fn uses_logistic(&self) -> bool {
        uses_logistic(&self.layers, &self.scoring)
    }

    /// The optional cargo features of `sensorae` this model's inference needs (its
    /// architecture's, then `logistic`), for build scripts and tools that configure firmware.
    pub fn features(&self) -> impl Iterator<Item = &'static str> {
        [
            self.variant.feature(),
            self.uses_logistic().then_some("logistic"),
        ]
        .into_iter()
        .flatten()
    }
}

/// Whether a layer uses the sigmoid activation or the score the binary cross-entropy.
pub(crate) fn uses_logistic(l: &Layers, scoring: &Scoring) -> bool {
    [l.encoder_hidden, l.code, l.decoder_hidden, l.output].contains(&Activation::Sigmoid)
        || scoring.metric == ErrorMetric::Bce
}

/// The inference architecture of a variant, with or without tied weights (the VAE, the
/// VQ-VAE and the hierarchical model are never tied; the reader rejects such files).
#[must_use]
pub const fn arch_of(variant: Variant, tied: bool) -> Arch {
    match (variant, tied) {
        (Variant::Vae, _) => Arch::Vae,
        (Variant::VqVae { codebook }, _) => Arch::VqVae {
            codebook: codebook as usize,
        },
        (
            Variant::Hierarchical {
                block,
                coarse_hidden,
                coarse_latent,
            },
            _,
        ) => Arch::Hierarchical {
            block: block as usize,
            coarse_hidden: coarse_hidden as usize,
            coarse_latent: coarse_latent as usize,
        },
        (_, true) => Arch::Tied,
        (_, false) => Arch::Dense,
    }
}

/// Number of `f32` parameters of an architecture with input N, hidden H and code Z.
///
/// Use it for the `P` parameter of a fixed-size [`Detector`](crate::Detector). Saturates at
/// `usize::MAX` instead of wrapping (the reader's size limits keep real models far below), and a
/// hierarchical block of 0 counts no coarse path.
///
/// # Examples
/// ```
/// use sensorae::{param_count, Arch};
/// // W1 (32x128) + b1 + W2 (8x32) + b2 + W3 (32x8) + b3 + W4 (128x32) + b4
/// assert_eq!(param_count(Arch::Dense, 128, 32, 8), 4096 + 32 + 256 + 8 + 256 + 32 + 4096 + 128);
/// // A VQ-VAE adds its codebook, K codes of width Z.
/// assert_eq!(
///     param_count(Arch::VqVae { codebook: 16 }, 128, 32, 8),
///     param_count(Arch::Dense, 128, 32, 8) + 16 * 8
/// );
/// // A hierarchical model adds a dense coarse path on the N / b block means and two gains.
/// let hier = Arch::Hierarchical { block: 4, coarse_hidden: 8, coarse_latent: 2 };
/// assert_eq!(
///     param_count(hier, 128, 32, 8),
///     param_count(Arch::Dense, 128, 32, 8) + param_count(Arch::Dense, 32, 8, 2) + 2
/// );
/// ```
#[must_use]
pub const fn param_count(arch: Arch, n: usize, h: usize, z: usize) -> usize {
    let encoder = mul(h, n)
        .saturating_add(h)
        .saturating_add(mul(z, h))
        .saturating_add(z);
    let dense_decoder = mul(h, z)
        .saturating_add(h)
        .saturating_add(mul(n, h))
        .saturating_add(n);
    match arch {
        Arch::Dense => encoder.saturating_add(dense_decoder),
        Arch::Tied => encoder.saturating_add(h).saturating_add(n),
        Arch::Vae => encoder
            .saturating_add(mul(z, h))
            .saturating_add(z)
            .saturating_add(dense_decoder),
        Arch::VqVae { codebook } => encoder
            .saturating_add(mul(codebook, z))
            .saturating_add(dense_decoder),
        Arch::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } => {
            let coarse = match n.checked_div(block) {
                Some(nc) => param_count(Arch::Dense, nc, coarse_hidden, coarse_latent),
                None => 0,
            };
            encoder
                .saturating_add(dense_decoder)
                .saturating_add(coarse)
                .saturating_add(GAINS)
        }
    }
}

/// Number of gains of a hierarchical model, `[g_c, g_f]`, the last parameters.
pub const GAINS: usize = 2;

const fn mul(a: usize, b: usize) -> usize {
    a.saturating_mul(b)
}

/// Extra `f32` scratch values an architecture needs at input width N, besides the buffers
/// every detector has: for a hierarchical model `N + N/b + 2 Hc + Zc` (the fine input, the
/// block means, the coarse hidden layers and code), 0 for the others. Use it for the `S`
/// parameter of a fixed-size [`Detector`](crate::Detector).
///
/// # Examples
/// ```
/// use sensorae::{scratch_len, Arch};
/// assert_eq!(scratch_len(Arch::Dense, 128), 0);
/// let hier = Arch::Hierarchical { block: 4, coarse_hidden: 8, coarse_latent: 2 };
/// assert_eq!(scratch_len(hier, 128), 128 + 32 + 2 * 8 + 2);
/// ```
#[must_use]
pub const fn scratch_len(arch: Arch, n: usize) -> usize {
    match arch {
        Arch::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } => {
            let nc = match n.checked_div(block) {
                Some(nc) => nc,
                None => 0,
            };
            n.saturating_add(nc)
                .saturating_add(mul(2, coarse_hidden))
                .saturating_add(coarse_latent)
        }
        Arch::Dense | Arch::Tied | Arch::Vae | Arch::VqVae { .. } => 0,
    }
}
