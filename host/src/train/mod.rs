//! The trainer: fits any autoencoder family of the model format to recorded sensor rows and
//! returns a [`TrainedModel`] that encodes to a `.snae` file.
//!
//! ```no_run
//! use sensorae::{Aggregate, AlarmSpec, ErrorMetric, FaultPolicy, Scoring, Threshold,
//!     ThresholdMethod, Variant};
//! use sensorae_host::train::{train, TrainConfig};
//!
//! # fn main() -> Result<(), sensorae_host::train::TrainError> {
//! // 500 rows of 2 channels, row-major; NaN marks a missing value.
//! let data: Vec<f32> = (0..1000).map(|i| (i as f32 * 0.05).sin()).collect();
//! let names = vec!["a".to_string(), "b".to_string()];
//! let cfg = TrainConfig { window: 8, epochs: 5, ..TrainConfig::new(Variant::Denoising) };
//! let model = train(&data, &names, &cfg, &mut |p| {
//!     if let Some(val) = p.val_loss {
//!         println!("epoch {}/{}: train {:.4} val {val:.4}", p.epoch, p.epochs, p.train_loss);
//!     }
//! })?;
//! let bytes = model.to_bytes(
//!     "demo",
//!     Scoring { metric: ErrorMetric::Mse, aggregate: Aggregate::Mean, kl_weight: 0.0, ewma: 1.0 },
//!     Threshold { value: 1.0, method: ThresholdMethod::Fixed, calibration_windows: 0 },
//!     AlarmSpec { on_after: 1, off_after: 1 },
//!     FaultPolicy { hold_max: 0 },
//!     None,
//! )?;
//! # let _ = bytes;
//! # Ok(())
//! # }
//! ```
//!
//! # Objective
//! Every reconstruction loss is the mean over the `N = C * W` entries of a window, averaged
//! over the batch, so an MSE model's loss is on the scale of the detector's `Mean` score.
//! Regularisers add to it, each batch-averaged: L1 on the code (`lambda * |z|_1`), KL sparsity
//! on the encoder hidden layer (`beta * sum_j KL(rho || rho_hat_j)`, `rho_hat` the batch mean
//! activation), the contractive penalty (`lambda * ||J_f(x)||_F^2` of the encoder `x -> z`),
//! the VAE's `beta * KL(q(z|x) || N(0, I)) / N` (the KL summed over the code, divided by N like
//! the reconstruction, so that `beta = 1` is the ELBO per entry) and L2 weight decay
//! (`0.5 * wd * |W|^2`, weights only). Denoising corrupts the input and reconstructs the clean
//! window. The validation loss is the clean, deterministic reconstruction loss (the VAE decodes
//! its mean), which is what the detector scores; early stopping watches it.
//!
//! # Determinism
//! One `ChaCha8Rng` seeded with [`TrainConfig::seed`] draws the initial weights, the shuffles,
//! the noise and the VAE samples, in a fixed order on one thread: the same rows, settings and
//! seed give bit-identical parameters.

mod net;
mod optim;
mod prep;
mod ssim;

use core::{fmt, ops::Range, time::Duration};
use std::time::Instant;

use rand::{RngExt, SeedableRng, seq::SliceRandom};
use rand_chacha::ChaCha8Rng;
use sensorae::{
    Activation, AlarmSpec, Arch, Channel, ErrorMetric, FaultPolicy, Header, Layers, MAX_CHANNELS,
    MAX_WIDTH, MAX_WINDOW, MaskAxis, Scaling, Scoring, Threshold, TrainingSummary, Variant,
    WindowSpec,
};

use net::{Act, Batch, Float, Layout, Penalties, Spec, Workspace};

/// Input corruption of the denoising autoencoder, applied to normalised training windows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Noise {
    /// No corruption.
    None,
    /// Adds `N(0, sigma^2)` to every entry.
    Gaussian {
        /// Standard deviation, in normalised units (> 0).
        sigma: f32,
    },
    /// Sets each entry to 0 with probability `p`.
    Masking {
        /// Probability in `(0, 1)`.
        p: f32,
    },
    /// Sets each entry with probability `p` to its channel's smallest or largest normalised
    /// training value (each half the time).
    SaltPepper {
        /// Probability in `(0, 1)`.
        p: f32,
    },
}

/// KL sparsity target on the encoder hidden layer (which must be sigmoid).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sparsity {
    /// Target mean activation, in `(0, 1)`, e.g. 0.05.
    pub rho: f32,
    /// Weight of `sum_j KL(rho || rho_hat_j)` (> 0).
    pub beta: f32,
}

/// The hierarchical autoencoder's per-scale weights: the seed's "weight each scale's
/// reconstruction error and gain differently". The objective is `coarse * (mean error of the
/// block means) + fine * (mean error of the fine part) + coarse_gain * g_c^2 + fine_gain *
/// g_f^2`; with MSE, [`Scales::EVEN`] makes it the detector's mean score. A fine weight of 0
/// trains the coarse structure alone; a small one makes fine detail a secondary correction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Weight of the coarse reconstruction error (`>= 0`).
    pub coarse: f32,
    /// Weight of the fine reconstruction error (`>= 0`; `coarse + fine > 0`).
    pub fine: f32,
    /// Weight of `g_c^2` (`>= 0`).
    pub coarse_gain: f32,
    /// Weight of `g_f^2` (`>= 0`).
    pub fine_gain: f32,
}

impl Scales {
    /// Both errors weighted 1, no gain penalty.
    pub const EVEN: Scales = Scales {
        coarse: 1.0,
        fine: 1.0,
        coarse_gain: 0.0,
        fine_gain: 0.0,
    };
}

/// Optimiser.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Optimizer {
    /// Adam with bias correction; weight decay is added to the gradient (L2, not AdamW).
    Adam {
        /// First-moment decay, in `[0, 1)`; usually 0.9.
        beta1: f32,
        /// Second-moment decay, in `[0, 1)`; usually 0.999.
        beta2: f32,
        /// Denominator guard (> 0); usually 1e-8.
        eps: f32,
    },
    /// Stochastic gradient descent with (heavy-ball) momentum.
    Sgd {
        /// Momentum in `[0, 1)`; 0 is plain SGD.
        momentum: f32,
    },
}

impl Optimizer {
    /// Adam with beta1 0.9, beta2 0.999, eps 1e-8.
    #[must_use]
    pub const fn adam() -> Self {
        Optimizer::Adam {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

/// Everything the trainer needs to know. Start from [`TrainConfig::new`] (or `default()`, a
/// plain autoencoder) and override fields; [`TrainConfig::validate`] says what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    /// Autoencoder family; the family knobs below must match it (e.g. `noise` only for
    /// denoising), so that no setting is silently ignored.
    pub variant: Variant,
    /// Window length W in rows (1..=4096).
    pub window: u16,
    /// Rows between window starts (>= 1), in training and in the detector.
    pub hop: u16,
    /// Hidden width H.
    pub hidden: u32,
    /// Code width Z.
    pub latent: u32,
    /// Encoder hidden activation.
    pub encoder_hidden: Activation,
    /// Code activation (ignored by the VAE, whose heads are linear).
    pub code: Activation,
    /// Decoder hidden activation.
    pub decoder_hidden: Activation,
    /// Output activation (must be sigmoid for BCE).
    pub output: Activation,
    /// Reconstruction loss (pixel-wise), and the model file's scoring metric.
    pub loss: ErrorMetric,
    /// Train on `alpha * loss + (1 - alpha) * (1 - SSIM)` with this `alpha` in `[0, 1]`
    /// (`Some(0.0)`: SSIM alone), SSIM taken per channel over each window's time axis on the
    /// normalised data (see the `ssim` module). `None`: the pixel loss alone. Scoring is
    /// unchanged: the file's metric is still `loss`.
    pub ssim_alpha: Option<f32>,
    /// Input scaling; `None` picks min-max for BCE and standardisation otherwise.
    pub scaling: Option<Scaling>,
    /// Decoder uses the encoder's transposed weights (not for the VAE).
    pub tied: bool,
    /// L2 weight decay on weights (not biases), `>= 0`.
    pub weight_decay: f32,
    /// Denoising: the input corruption (set for, and only for, `Variant::Denoising`).
    pub noise: Noise,
    /// Sparse: weight of L1 on the code (`>= 0`).
    pub l1_code: f32,
    /// Sparse: KL sparsity on the encoder hidden layer.
    pub sparsity: Option<Sparsity>,
    /// Contractive: weight of the squared Frobenius norm of the encoder Jacobian (`> 0` for,
    /// and only for, `Variant::Contractive`).
    pub contractive: f32,
    /// VAE: weight of the KL term (`>= 0`; 1 is the ELBO, taken per input entry like the
    /// reconstruction loss).
    pub beta: f32,
    /// VAE: the KL weight grows linearly, reaching `beta` at this epoch (0 = no warm-up).
    pub kl_warmup_epochs: u32,
    /// VQ-VAE: commitment weight beta of `||z_e - sg[e]||^2` (`>= 0`; the codebook loss
    /// `||sg[z_e] - e||^2` has weight 1), both divided by N like the VAE's KL.
    pub commitment: f32,
    /// Masked autoencoder: share of the time steps or channels (the variant's axis) hidden in
    /// each training window, in `(0, 1)`; at least one and, with more than one, never all.
    pub mask_ratio: f32,
    /// Hierarchical: the weight of each scale's reconstruction error and gain (anything but
    /// [`Scales::EVEN`] only for `Variant::Hierarchical`).
    pub scales: Scales,
    /// Maximum number of passes over the training windows (>= 1).
    pub epochs: u32,
    /// Windows per mini-batch (>= 1).
    pub batch: u32,
    /// Learning rate (> 0).
    pub lr: f32,
    /// Optimiser.
    pub optimizer: Optimizer,
    /// Fraction of rows, taken from the end, held out for validation, in `[0, 0.9]`.
    pub val_fraction: f32,
    /// Stop after this many epochs without a better validation objective (see
    /// [`EpochStats::val_objective`]); `None` runs all epochs. Either way the best epoch's
    /// parameters are kept.
    pub patience: Option<u32>,
    /// Rescale each batch gradient to at most this global L2 norm.
    pub clip_norm: Option<f32>,
    /// Initial bias of ReLU and leaky-ReLU layers (a small positive value keeps units alive);
    /// other biases start at 0.
    pub bias_init: f32,
    /// Seed of every random draw.
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            variant: Variant::Plain,
            window: 16,
            hop: 1,
            hidden: 32,
            latent: 8,
            encoder_hidden: Activation::Tanh,
            code: Activation::Linear,
            decoder_hidden: Activation::Tanh,
            output: Activation::Linear,
            loss: ErrorMetric::Mse,
            ssim_alpha: None,
            scaling: None,
            tied: false,
            weight_decay: 0.0,
            noise: Noise::None,
            l1_code: 0.0,
            sparsity: None,
            contractive: 0.0,
            beta: 1.0,
            kl_warmup_epochs: 0,
            commitment: 0.0,
            mask_ratio: 0.0,
            scales: Scales::EVEN,
            epochs: 50,
            batch: 32,
            lr: 1e-3,
            optimizer: Optimizer::adam(),
            val_fraction: 0.2,
            patience: Some(10),
            clip_norm: None,
            bias_init: 0.01,
            seed: 0,
        }
    }
}

impl TrainConfig {
    /// Defaults with a sensible knob for `variant`: sparse gets L1 1e-3 on the code, denoising
    /// Gaussian noise 0.1, contractive weight 1e-3, the VAE beta 1 with 5 warm-up epochs, the
    /// VQ-VAE commitment 0.25 (the VQ-VAE paper's), the masked autoencoder a mask ratio 0.5.
    #[must_use]
    pub fn new(variant: Variant) -> Self {
        let base = TrainConfig {
            variant,
            ..TrainConfig::default()
        };
        match variant {
            Variant::Plain => base,
            Variant::Sparse => TrainConfig {
                l1_code: 1e-3,
                ..base
            },
            Variant::Denoising => TrainConfig {
                noise: Noise::Gaussian { sigma: 0.1 },
                ..base
            },
            Variant::Contractive => TrainConfig {
                contractive: 1e-3,
                ..base
            },
            Variant::Vae => TrainConfig {
                kl_warmup_epochs: 5,
                ..base
            },
            Variant::VqVae { .. } => TrainConfig {
                commitment: 0.25,
                ..base
            },
            Variant::Masked { .. } => TrainConfig {
                mask_ratio: 0.5,
                ..base
            },
            Variant::Hierarchical { .. } => base,
        }
    }

    /// The scaling training uses: the explicit one, else min-max for BCE, else standard.
    #[must_use]
    pub fn effective_scaling(&self) -> Scaling {
        self.scaling.unwrap_or(if self.loss == ErrorMetric::Bce {
            Scaling::MinMax
        } else {
            Scaling::Standard
        })
    }

    /// The inference architecture these settings produce.
    #[must_use]
    pub fn arch(&self) -> Arch {
        arch_of(self.variant, self.tied)
    }

    /// Checks every setting for `channels` input channels.
    ///
    /// # Errors
    /// [`TrainError::Config`] naming the first setting out of range and what is allowed.
    pub fn validate(&self, channels: usize) -> Result<(), TrainError> {
        fn bad(knob: &'static str, value: impl fmt::Debug, allowed: &'static str) -> TrainError {
            TrainError::Config {
                knob,
                value: format!("{value:?}"),
                allowed,
            }
        }
        fn check(ok: bool, e: impl FnOnce() -> TrainError) -> Result<(), TrainError> {
            if ok { Ok(()) } else { Err(e()) }
        }
        let fin = |v: f32| v.is_finite();
        check((1..=MAX_CHANNELS).contains(&channels), || {
            bad("channels", channels, "1 to 64 channels")
        })?;
        let w = usize::from(self.window);
        check((1..=MAX_WINDOW).contains(&w), || {
            bad("window", self.window, "1 to 4096 rows")
        })?;
        check(channels * w <= MAX_WIDTH, || {
            bad("window", self.window, "channels * window at most 8192")
        })?;
        check(self.hop >= 1, || bad("hop", self.hop, "at least 1"))?;
        let widths = 1..=MAX_WIDTH as u32;
        check(widths.contains(&self.hidden), || {
            bad("hidden", self.hidden, "1 to 8192")
        })?;
        check(widths.contains(&self.latent), || {
            bad("latent", self.latent, "1 to 8192")
        })?;
        for (knob, a) in [
            ("encoder_hidden", self.encoder_hidden),
            ("code", self.code),
            ("decoder_hidden", self.decoder_hidden),
            ("output", self.output),
        ] {
            if let Activation::LeakyRelu { slope } = a {
                check(fin(slope) && (0.0..1.0).contains(&slope), || {
                    bad(knob, a, "a leaky ReLU slope in [0, 1)")
                })?;
            }
        }
        if let Some(a) = self.ssim_alpha {
            check(fin(a) && (0.0..=1.0).contains(&a), || {
                bad("ssim_alpha", a, "in [0, 1] (the weight of the pixel loss)")
            })?;
        }
        if let Activation::SoftThreshold { lambda } = self.code {
            check(fin(lambda) && lambda >= 0.0, || {
                bad("code", self.code, "a soft-threshold lambda finite and >= 0")
            })?;
            check(self.variant != Variant::Vae, || {
                bad(
                    "code",
                    self.code,
                    "no soft threshold for the VAE (its heads are linear)",
                )
            })?;
        }
        let scaling = self.effective_scaling();
        if self.loss == ErrorMetric::Bce {
            check(self.output == Activation::Sigmoid, || {
                bad("output", self.output, "Sigmoid with the BCE loss")
            })?;
            check(scaling == Scaling::MinMax, || {
                bad("scaling", scaling, "MinMax with the BCE loss")
            })?;
        }
        check(!(self.tied && self.variant == Variant::Vae), || {
            bad("tied", self.tied, "false for the VAE")
        })?;
        let vq = matches!(self.variant, Variant::VqVae { .. });
        check(!(self.tied && vq), || {
            bad("tied", self.tied, "false for the VQ-VAE")
        })?;
        if let Variant::VqVae { codebook } = self.variant {
            check(
                (1..=sensorae::MAX_CODEBOOK).contains(&usize::from(codebook)),
                || bad("codebook", codebook, "1 to 1024 codes"),
            )?;
        }
        check(fin(self.commitment) && self.commitment >= 0.0, || {
            bad("commitment", self.commitment, "finite and >= 0")
        })?;
        check(vq || self.commitment == 0.0, || {
            bad("variant", self.variant, "VqVae when commitment is set")
        })?;
        let masked = matches!(self.variant, Variant::Masked { .. });
        check(
            !masked || (fin(self.mask_ratio) && self.mask_ratio > 0.0 && self.mask_ratio < 1.0),
            || {
                bad(
                    "mask_ratio",
                    self.mask_ratio,
                    "in (0, 1) for the masked variant",
                )
            },
        )?;
        check(masked || self.mask_ratio == 0.0, || {
            bad("variant", self.variant, "Masked when mask_ratio is set")
        })?;
        self.validate_hierarchical(w)?;
        check(fin(self.weight_decay) && self.weight_decay >= 0.0, || {
            bad("weight_decay", self.weight_decay, "finite and >= 0")
        })?;
        // A family's knob on another family would be silently ignored: reject it instead.
        let sparse = self.variant == Variant::Sparse;
        check(fin(self.l1_code) && self.l1_code >= 0.0, || {
            bad("l1_code", self.l1_code, "finite and >= 0")
        })?;
        check(
            sparse || (self.l1_code == 0.0 && self.sparsity.is_none()),
            || {
                bad(
                    "variant",
                    self.variant,
                    "Sparse when l1_code or sparsity is set",
                )
            },
        )?;
        check(
            !sparse || self.l1_code > 0.0 || self.sparsity.is_some(),
            || {
                bad(
                    "l1_code",
                    self.l1_code,
                    "> 0, or a sparsity target, for the sparse variant",
                )
            },
        )?;
        if let Some(s) = self.sparsity {
            check(fin(s.rho) && s.rho > 0.0 && s.rho < 1.0, || {
                bad("sparsity.rho", s.rho, "in (0, 1)")
            })?;
            check(fin(s.beta) && s.beta > 0.0, || {
                bad("sparsity.beta", s.beta, "finite and > 0")
            })?;
            check(self.encoder_hidden == Activation::Sigmoid, || {
                bad(
                    "encoder_hidden",
                    self.encoder_hidden,
                    "Sigmoid with KL sparsity (activations must lie in (0, 1))",
                )
            })?;
        }
        let denoising = self.variant == Variant::Denoising;
        match self.noise {
            Noise::None => check(!denoising, || {
                bad(
                    "noise",
                    self.noise,
                    "Gaussian, Masking or SaltPepper for denoising",
                )
            })?,
            Noise::Gaussian { sigma } => check(fin(sigma) && sigma > 0.0, || {
                bad("noise", self.noise, "sigma finite and > 0")
            })?,
            Noise::Masking { p } | Noise::SaltPepper { p } => {
                check(fin(p) && p > 0.0 && p < 1.0, || {
                    bad("noise", self.noise, "p in (0, 1)")
                })?;
            }
        }
        check(denoising || self.noise == Noise::None, || {
            bad("variant", self.variant, "Denoising when noise is set")
        })?;
        check(fin(self.contractive) && self.contractive >= 0.0, || {
            bad("contractive", self.contractive, "finite and >= 0")
        })?;
        let contractive = self.variant == Variant::Contractive;
        check(contractive == (self.contractive > 0.0), || {
            bad(
                "contractive",
                self.contractive,
                "> 0 for, and only for, the contractive variant",
            )
        })?;
        check(fin(self.beta) && self.beta >= 0.0, || {
            bad("beta", self.beta, "finite and >= 0")
        })?;
        check(self.epochs >= 1, || {
            bad("epochs", self.epochs, "at least 1")
        })?;
        check(self.batch >= 1, || bad("batch", self.batch, "at least 1"))?;
        check(fin(self.lr) && self.lr > 0.0, || {
            bad("lr", self.lr, "finite and > 0")
        })?;
        match self.optimizer {
            Optimizer::Adam { beta1, beta2, eps } => {
                let ok = (0.0..1.0).contains(&beta1)
                    && (0.0..1.0).contains(&beta2)
                    && fin(eps)
                    && eps > 0.0;
                check(ok, || {
                    bad(
                        "optimizer",
                        self.optimizer,
                        "beta1, beta2 in [0, 1) and eps > 0",
                    )
                })?;
            }
            Optimizer::Sgd { momentum } => check((0.0..1.0).contains(&momentum), || {
                bad("optimizer", self.optimizer, "momentum in [0, 1)")
            })?,
        }
        check((0.0..=0.9).contains(&self.val_fraction), || {
            bad("val_fraction", self.val_fraction, "in [0, 0.9]")
        })?;
        check(self.patience != Some(0), || {
            bad("patience", self.patience, "None or >= 1")
        })?;
        if let Some(c) = self.clip_norm {
            check(fin(c) && c > 0.0, || bad("clip_norm", c, "finite and > 0"))?;
        }
        check(fin(self.bias_init), || {
            bad("bias_init", self.bias_init, "finite")
        })?;
        Ok(())
    }
}

impl TrainConfig {
    /// The hierarchical variant's sizes and weights, and that no other variant sets weights.
    fn validate_hierarchical(&self, window: usize) -> Result<(), TrainError> {
        let bad = |knob: &'static str, value: String, allowed: &'static str| TrainError::Config {
            knob,
            value,
            allowed,
        };
        let Variant::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } = self.variant
        else {
            return if self.scales == Scales::EVEN {
                Ok(())
            } else {
                Err(bad(
                    "variant",
                    format!("{:?}", self.variant),
                    "Hierarchical when per-scale weights are set",
                ))
            };
        };
        let block = usize::from(block);
        if block < sensorae::MIN_BLOCK || !window.is_multiple_of(block) {
            return Err(bad(
                "block",
                block.to_string(),
                "at least 2 time steps, dividing the window",
            ));
        }
        for (knob, v) in [
            ("coarse_hidden", coarse_hidden),
            ("coarse_latent", coarse_latent),
        ] {
            if !(1..=MAX_WIDTH).contains(&usize::from(v)) {
                return Err(bad(knob, v.to_string(), "1 to 8192"));
            }
        }
        if self.tied {
            return Err(bad(
                "tied",
                "true".into(),
                "false for the hierarchical variant",
            ));
        }
        // The fine part is signed (its block means are 0), so it is no probability to
        // take a cross-entropy of.
        if self.loss == ErrorMetric::Bce {
            return Err(bad(
                "loss",
                "Bce".into(),
                "Mse or Mae for the hierarchical variant (its fine part is signed)",
            ));
        }
        let s = self.scales;
        let weights = [s.coarse, s.fine, s.coarse_gain, s.fine_gain];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || s.coarse + s.fine <= 0.0 {
            return Err(bad(
                "scales",
                format!("{s:?}"),
                "finite weights >= 0, coarse + fine > 0",
            ));
        }
        Ok(())
    }
}

fn arch_of(variant: Variant, tied: bool) -> Arch {
    sensorae::arch_of(variant, tied)
}

/// A progress report, sent after every batch and once more at the end of each epoch (then
/// with `val_loss` set, if there are validation windows), for progress bars and loss curves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Epoch, from 1.
    pub epoch: u32,
    /// Maximum number of epochs.
    pub epochs: u32,
    /// Batches done in this epoch.
    pub batch: u32,
    /// Batches per epoch.
    pub batches: u32,
    /// Mean training objective over this epoch's windows so far.
    pub train_loss: f32,
    /// Validation loss, only in the end-of-epoch report.
    pub val_loss: Option<f32>,
    /// Time since training started.
    pub elapsed: Duration,
}

/// What one epoch did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochStats {
    /// Epoch, from 1.
    pub epoch: u32,
    /// Mean training objective (reconstruction plus every penalty) per window.
    pub train_loss: f32,
    /// Mean training reconstruction loss (of corrupted inputs for denoising, of sampled codes
    /// for the VAE).
    pub train_recon: f32,
    /// Reconstruction loss of the validation windows, clean and deterministic (the VAE
    /// decodes its mean); `None` without validation windows.
    pub val_loss: Option<f32>,
    /// The training objective on the validation windows (penalties included, fixed noise
    /// draws for denoising, the VAE decoding its mean): what early stopping watches, so that
    /// model selection does not work against the regulariser. `None` without validation.
    pub val_objective: Option<f32>,
    /// VAE: mean `KL(q(z|x) || N(0, I))` per training window (0 for other families).
    pub kl: f32,
    /// VQ-VAE: mean squared distance from the code to its nearest codebook entry per training
    /// window (0 for other families).
    pub code_distance: f32,
    /// Wall time of the epoch.
    pub elapsed: Duration,
}

/// One channel's normalisation, `(x - offset) / scale`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelNorm {
    /// Column name.
    pub name: String,
    /// Mean (standard scaling) or minimum (min-max) over the training rows.
    pub offset: f32,
    /// Standard deviation or range over the training rows; 1 where that is zero or not finite.
    pub scale: f32,
}

/// A trained model: everything a model file needs except the scoring rule, threshold, alarm
/// and fault settings, which calibration decides.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainedModel {
    /// Family trained.
    pub variant: Variant,
    /// Decoder uses the encoder's transposes.
    pub tied: bool,
    /// Channels, window length and hop.
    pub window: WindowSpec,
    /// Layer sizes and activations.
    pub layers: Layers,
    /// Input scaling.
    pub scaling: Scaling,
    /// Loss trained with.
    pub loss: ErrorMetric,
    /// Per-channel normalisation, in input column order.
    pub channels: Vec<ChannelNorm>,
    /// Parameters in model-file order: those of the epoch with the best validation objective.
    pub params: Vec<f32>,
    /// Epochs run, the best epoch's losses, rows, windows and seed.
    pub summary: TrainingSummary,
    /// One entry per epoch run.
    pub history: Vec<EpochStats>,
    /// Validation loss of the initial parameters, before any update (the start of the loss
    /// curve); `None` without validation windows.
    pub initial_val_loss: Option<f32>,
    /// Rows used for training.
    pub train_rows: Range<usize>,
    /// Rows held out for validation (the end of the data).
    pub val_rows: Range<usize>,
}

impl TrainedModel {
    /// Number of parameters the model file holds for this model's sizes.
    #[must_use]
    pub fn arch_param_count(&self) -> usize {
        sensorae::param_count(
            self.arch(),
            usize::from(self.window.channels) * usize::from(self.window.length),
            self.layers.hidden as usize,
            self.layers.latent as usize,
        )
    }

    /// The inference architecture.
    #[must_use]
    pub fn arch(&self) -> Arch {
        arch_of(self.variant, self.tied)
    }

    /// Encodes a model file; the caller chooses the scoring rule, threshold, alarm and fault
    /// settings, and optionally each channel's valid physical range (`(min, max)` in raw
    /// units; without it every finite value is valid).
    ///
    /// # Errors
    /// [`TrainError::Config`] if `ranges` has the wrong length, [`TrainError::Encode`] if the
    /// model file would be invalid (e.g. BCE scoring of a standardised model).
    pub fn to_bytes(
        &self,
        name: &str,
        scoring: Scoring,
        threshold: Threshold,
        alarm: AlarmSpec,
        faults: FaultPolicy,
        ranges: Option<&[(f32, f32)]>,
    ) -> Result<Vec<u8>, TrainError> {
        self.encode(&Deployment {
            name,
            scoring,
            threshold,
            alarm,
            faults,
            adaptation: sensorae::Adaptation::OFF,
            ranges,
        })
    }

    /// Encodes a model file with every deployment setting, drift tracking included.
    ///
    /// # Errors
    /// As [`TrainedModel::to_bytes`].
    pub fn encode(&self, d: &Deployment<'_>) -> Result<Vec<u8>, TrainError> {
        let Deployment {
            name,
            scoring,
            threshold,
            alarm,
            faults,
            adaptation,
            ranges,
        } = *d;
        if let Some(r) = ranges
            && r.len() != self.channels.len()
        {
            return Err(TrainError::Config {
                knob: "ranges",
                value: format!("{} ranges", r.len()),
                allowed: "one (min, max) per channel",
            });
        }
        let header = Header {
            name,
            variant: self.variant,
            tied: self.tied,
            window: self.window,
            layers: self.layers,
            scaling: self.scaling,
            scoring,
            threshold,
            alarm,
            faults,
            adaptation,
            training: self.summary,
        };
        let channels: Vec<Channel<'_>> = self
            .channels
            .iter()
            .enumerate()
            .map(|(i, ch)| {
                let (min, max) = ranges
                    .and_then(|r| r.get(i).copied())
                    .unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
                Channel {
                    name: &ch.name,
                    offset: ch.offset,
                    scale: ch.scale,
                    min,
                    max,
                }
            })
            .collect();
        Ok(sensorae::encode_to_vec(&header, &channels, &self.params)?)
    }
}

/// How a trained model is deployed: everything in a model file that training does not decide.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Deployment<'a> {
    /// Model name.
    pub name: &'a str,
    /// Scoring rule.
    pub scoring: Scoring,
    /// Threshold and its provenance.
    pub threshold: Threshold,
    /// Alarm hysteresis.
    pub alarm: AlarmSpec,
    /// Sensor-fault recovery.
    pub faults: FaultPolicy,
    /// Drift tracking.
    pub adaptation: sensorae::Adaptation,
    /// Valid physical range per channel, raw units; `None`: every finite value.
    pub ranges: Option<&'a [(f32, f32)]>,
}

/// Why training failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TrainError {
    /// A setting is out of range.
    #[error("bad setting {knob} = {value}: allowed is {allowed}")]
    Config {
        /// The setting.
        knob: &'static str,
        /// Its value.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// The data is not a whole number of rows.
    #[error("{values} values are not whole rows of {channels} channels")]
    Shape {
        /// Number of values given.
        values: usize,
        /// Number of channels named.
        channels: usize,
    },
    /// A part of the data has no complete window.
    #[error(
        "the {part} rows {rows:?} hold no window: a window needs {window} consecutive rows \
         without a missing value (give more rows{hint})"
    )]
    TooFewWindows {
        /// `"training"` or `"validation"`.
        part: &'static str,
        /// Rows of that part.
        rows: Range<usize>,
        /// Window length, the number of rows needed.
        window: usize,
        /// What else would help.
        hint: &'static str,
    },
    /// A channel has no valid value in the training rows.
    #[error("channel {name} has no valid value in the training rows")]
    EmptyChannel {
        /// Channel name.
        name: String,
    },
    /// The loss became NaN or infinite.
    #[error(
        "training diverged in epoch {epoch}: the loss is not finite; lower lr or set clip_norm"
    )]
    Diverged {
        /// Epoch, from 1.
        epoch: u32,
    },
    /// The model file could not be written.
    #[error("invalid model file: {0}")]
    Encode(#[from] sensorae::EncodeError),
}

/// Trains a model on `data`, `rows x channels.len()` values row-major (non-finite values are
/// missing), reporting progress through `progress`.
///
/// # Errors
/// [`TrainError`] for bad settings, data that is not whole rows, no window in the training or
/// validation part, an all-missing channel, or divergence.
pub fn train(
    data: &[f32],
    channels: &[String],
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainedModel, TrainError> {
    fit::<f32>(data, channels, cfg, progress)
}

/// Standard-normal draws by the Box-Muller transform (keeps the spare).
struct Gauss {
    spare: Option<f64>,
}

impl Gauss {
    fn sample(&mut self, rng: &mut ChaCha8Rng) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = 1.0 - rng.random::<f64>();
        let u2 = rng.random::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let t = core::f64::consts::TAU * u2;
        self.spare = Some(r * t.sin());
        r * t.cos()
    }
}

fn relu_family(a: Activation) -> bool {
    matches!(a, Activation::Relu | Activation::LeakyRelu { .. })
}

/// Initial parameters: Glorot-uniform weights for tanh, sigmoid and linear layers, He-uniform
/// (scaled for the leaky slope) for ReLU-family layers; `bias_init` on ReLU-family biases. A
/// hierarchical model's coarse network is drawn the same way after the fine one, and its gains
/// start at 1.
fn init_params<T: Float>(
    lay: &Layout,
    acts: [Activation; 4],
    bias_init: f32,
    rng: &mut ChaCha8Rng,
) -> Vec<T> {
    let mut p = vec![T::of(0.0); lay.total];
    init_network(&mut p, lay, acts, bias_init, rng);
    if let Some(hier) = &lay.hier {
        init_network(&mut p, &hier.coarse, acts, bias_init, rng);
        p[hier.gains.clone()]
            .iter_mut()
            .for_each(|g| *g = T::of(1.0));
    }
    p
}

/// [`init_params`] for the tensors of one network.
fn init_network<T: Float>(
    p: &mut [T],
    lay: &Layout,
    acts: [Activation; 4],
    bias_init: f32,
    rng: &mut ChaCha8Rng,
) {
    let (n, h, z) = (lay.n, lay.h, lay.z);
    let code = if lay.arch == Arch::Vae {
        Activation::Linear
    } else {
        acts[1]
    };
    // (weights, fan_out, fan_in, activation after it); tied decoders reuse w1 and w2.
    let layers = [
        (lay.w1.clone(), h, n, acts[0]),
        (lay.w2.clone(), z, h, code),
        (lay.wl.clone(), z, h, Activation::Linear),
        (lay.w3.clone(), h, z, acts[2]),
        (lay.w4.clone(), n, h, acts[3]),
    ];
    for (w, fan_out, fan_in, act) in layers {
        let limit = match act {
            Activation::Relu => (6.0 / fan_in as f64).sqrt(),
            Activation::LeakyRelu { slope } => {
                let s = f64::from(slope);
                (6.0 / ((1.0 + s * s) * fan_in as f64)).sqrt()
            }
            _ => (6.0 / (fan_in + fan_out) as f64).sqrt(),
        };
        for v in &mut p[w] {
            *v = T::of(rng.random_range(-limit..limit));
        }
    }
    let biases = [
        (lay.b1.clone(), acts[0]),
        (lay.b2.clone(), code),
        (lay.b3.clone(), acts[2]),
        (lay.b4.clone(), acts[3]),
    ];
    for (b, act) in biases {
        if relu_family(act) {
            p[b].iter_mut()
                .for_each(|v| *v = T::of(f64::from(bias_init)));
        }
    }
}

/// Corrupts one normalised window (`x[t * C + c]`) for the denoising autoencoder.
fn corrupt<T: Float>(
    noise: Noise,
    x: &mut [T],
    prep: &prep::Prepared,
    rng: &mut ChaCha8Rng,
    gauss: &mut Gauss,
) {
    match noise {
        Noise::None => {}
        Noise::Gaussian { sigma } => {
            let s = f64::from(sigma);
            for v in x {
                *v += T::of(s * gauss.sample(rng));
            }
        }
        Noise::Masking { p } => {
            let p = f64::from(p);
            for v in x {
                if rng.random::<f64>() < p {
                    *v = T::of(0.0);
                }
            }
        }
        Noise::SaltPepper { p } => {
            let p = f64::from(p);
            for (i, v) in x.iter_mut().enumerate() {
                if rng.random::<f64>() < p {
                    let c = i % prep.channels;
                    let level = if rng.random::<bool>() {
                        prep.high[c]
                    } else {
                        prep.low[c]
                    };
                    *v = T::of(f64::from(level));
                }
            }
        }
    }
}

/// Hides a share `ratio` of one normalised window's (`x[t * C + c]`) time steps or channels:
/// sets them to 0, the training mean, and marks them with 1 in `mask` (0 elsewhere). Hides at
/// least one unit and, when there is more than one, never all of them.
fn mask_window<T: Float>(
    axis: MaskAxis,
    ratio: f32,
    channels: usize,
    x: &mut [T],
    mask: &mut [T],
    rng: &mut ChaCha8Rng,
) {
    let channels = channels.max(1);
    let steps = x.len() / channels;
    let units = match axis {
        MaskAxis::Time => steps,
        MaskAxis::Channel => channels,
    };
    let most = if units > 1 { units - 1 } else { units };
    let hide = ((f64::from(ratio) * units as f64).round() as usize).clamp(1, most.max(1));
    let mut order: Vec<usize> = (0..units).collect();
    for i in 0..hide.min(units) {
        let j = rng.random_range(i..units);
        order.swap(i, j);
    }
    mask.iter_mut().for_each(|m| *m = T::of(0.0));
    for &u in &order[..hide.min(units)] {
        let entries: Box<dyn Iterator<Item = usize>> = match axis {
            MaskAxis::Time => Box::new((0..channels).map(move |c| u * channels + c)),
            MaskAxis::Channel => Box::new((0..steps).map(move |t| t * channels + u)),
        };
        for i in entries {
            x[i] = T::of(0.0);
            mask[i] = T::of(1.0);
        }
    }
}

/// Copies the windows starting at `starts` into the columns of `out`.
fn gather<T: Float>(prep: &prep::Prepared, starts: &[usize], out: &mut [T]) {
    let n = prep.channels * prep.window;
    for (col, &s) in out.chunks_exact_mut(n).zip(starts) {
        for (o, &v) in col.iter_mut().zip(prep.window_at(s)) {
            *o = T::of(f64::from(v));
        }
    }
}

/// Mean deterministic reconstruction loss over the windows at `starts`.
fn eval_windows<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    params: &[T],
    ws: &mut Workspace<T>,
    prep: &prep::Prepared,
    starts: &[usize],
    buf: &mut [T],
) -> Option<f64> {
    if starts.is_empty() {
        return None;
    }
    let mut total = 0.0f64;
    for chunk in starts.chunks(ws.capacity()) {
        gather(prep, chunk, buf);
        let loss = net::eval_loss(spec, lay, params, ws, buf, chunk.len());
        total += loss.to_f64() * chunk.len() as f64;
    }
    Some(total / starts.len() as f64)
}

/// Inputs and buffers for the validation objective.
struct ValObjective<'a, T> {
    spec: &'a Spec<T>,
    lay: &'a Layout,
    pen: &'a Penalties<T>,
    noise: Noise,
    /// Masked autoencoder: the axis and share hidden.
    masking: Option<(MaskAxis, f32)>,
    seed: u64,
    clean: &'a mut [T],
    noisy: &'a mut [T],
    mask: &'a mut [T],
    grad: &'a mut [T],
}

impl<T: Float> ValObjective<'_, T> {
    /// Mean objective over the validation windows; the noise is drawn from the same seed each
    /// time, so epochs are compared on the same corruption.
    fn eval(&mut self, params: &[T], ws: &mut Workspace<T>, prep: &prep::Prepared) -> f64 {
        let starts = &prep.val_starts;
        let n = self.lay.n;
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5641_4c49_4400_0000);
        let mut gauss = Gauss { spare: None };
        let mut total = 0.0f64;
        for chunk in starts.chunks(ws.capacity()) {
            let cols = chunk.len();
            gather(prep, chunk, self.clean);
            let input: &[T] = if let Some((axis, ratio)) = self.masking {
                self.noisy[..cols * n].copy_from_slice(&self.clean[..cols * n]);
                for (col, m) in self.noisy[..cols * n]
                    .chunks_exact_mut(n)
                    .zip(self.mask.chunks_exact_mut(n))
                {
                    mask_window(axis, ratio, prep.channels, col, m, &mut rng);
                }
                self.noisy
            } else if self.noise == Noise::None {
                self.clean
            } else {
                self.noisy[..cols * n].copy_from_slice(&self.clean[..cols * n]);
                for col in self.noisy[..cols * n].chunks_exact_mut(n) {
                    corrupt(self.noise, col, prep, &mut rng, &mut gauss);
                }
                self.noisy
            };
            let batch = Batch {
                input,
                target: self.clean,
                eps: None,
                mask: self.masking.map(|_| &self.mask[..]),
                cols,
            };
            let parts =
                net::loss_and_grad(self.spec, self.lay, self.pen, params, ws, batch, self.grad);
            total += parts.objective.to_f64() * cols as f64;
        }
        total / starts.len().max(1) as f64
    }
}

/// Starts a VQ-VAE codebook at the encoder's codes of K training windows drawn at random
/// (cycling, with a little jitter, when there are fewer windows than codes), so that every
/// code begins where data lies instead of dying unused.
fn init_codebook<T: Float>(
    spec: &Spec<T>,
    lay: &Layout,
    params: &mut [T],
    ws: &mut Workspace<T>,
    prep: &prep::Prepared,
    buf: &mut [T],
    rng: &mut ChaCha8Rng,
) {
    let (k, z) = (lay.k, lay.z);
    let mut starts = prep.train_starts.clone();
    if starts.is_empty() {
        return;
    }
    starts.shuffle(rng);
    let picks: Vec<usize> = (0..k).map(|i| starts[i % starts.len()]).collect();
    let mut codes = Vec::with_capacity(k * z);
    for chunk in picks.chunks(ws.capacity()) {
        gather(prep, chunk, buf);
        codes.extend_from_slice(net::encode(spec, lay, params, ws, buf, chunk.len()));
    }
    let jitter = k > starts.len();
    for (p, c) in params[lay.codebook.clone()].iter_mut().zip(codes) {
        *p = if jitter {
            c + T::of(rng.random_range(-0.01..0.01))
        } else {
            c
        };
    }
}

fn fit<T: Float>(
    data: &[f32],
    names: &[String],
    cfg: &TrainConfig,
    progress: &mut dyn FnMut(&Progress),
) -> Result<TrainedModel, TrainError> {
    let started = Instant::now();
    cfg.validate(names.len())?;
    let scaling = cfg.effective_scaling();
    let window = usize::from(cfg.window);
    let hop = usize::from(cfg.hop);
    let prep = prep::prepare(data, names, window, hop, cfg.val_fraction, scaling)?;
    if prep.train_starts.is_empty() {
        return Err(TrainError::TooFewWindows {
            part: "training",
            rows: prep.train_rows.clone(),
            window,
            hint: ", or use a shorter window",
        });
    }
    if cfg.val_fraction > 0.0 && prep.val_starts.is_empty() {
        return Err(TrainError::TooFewWindows {
            part: "validation",
            rows: prep.val_rows.clone(),
            window,
            hint: ", a larger val_fraction, or val_fraction 0",
        });
    }
    let (c, n) = (prep.channels, prep.channels * window);
    let (h, z) = (cfg.hidden as usize, cfg.latent as usize);
    let arch = cfg.arch();
    let lay = Layout::new(arch, c, n, h, z);
    let acts = [cfg.encoder_hidden, cfg.code, cfg.decoder_hidden, cfg.output];
    let spec = Spec {
        acts: acts.map(Act::new),
        loss: cfg.loss,
        ssim: cfg.ssim_alpha.map(|a| ssim::Ssim::new(a, scaling, c)),
    };
    let of = |v: f32| T::of(f64::from(v));
    let mut pen = Penalties {
        weight_decay: of(cfg.weight_decay),
        l1_code: of(cfg.l1_code),
        sparsity: cfg.sparsity.map(|s| (of(s.rho), of(s.beta))),
        contractive: of(cfg.contractive),
        kl: T::of(0.0),
        commitment: of(cfg.commitment),
        scales: net::ScaleWeights {
            coarse: of(cfg.scales.coarse),
            fine: of(cfg.scales.fine),
            coarse_gain: of(cfg.scales.coarse_gain),
            fine_gain: of(cfg.scales.fine_gain),
        },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut gauss = Gauss { spare: None };
    let mut params = init_params::<T>(&lay, acts, cfg.bias_init, &mut rng);
    let mut grad = vec![T::of(0.0); lay.total];
    let mut opt = optim::State::<T>::new(cfg.optimizer, cfg.lr, lay.total);
    let most = prep.train_starts.len().max(prep.val_starts.len());
    let cap = (cfg.batch as usize).min(most).max(1);
    let mut ws = Workspace::<T>::new(&lay, cap, cfg.contractive > 0.0);
    let mut clean = vec![T::of(0.0); cap * n];
    let denoising = cfg.noise != Noise::None;
    let masking = match cfg.variant {
        Variant::Masked { mask } => Some((mask, cfg.mask_ratio)),
        _ => None,
    };
    let mut noisy = vec![
        T::of(0.0);
        if denoising || masking.is_some() {
            cap * n
        } else {
            0
        }
    ];
    let mut mask = vec![T::of(0.0); if masking.is_some() { cap * n } else { 0 }];
    if lay.k > 0 {
        init_codebook(
            &spec,
            &lay,
            &mut params,
            &mut ws,
            &prep,
            &mut clean,
            &mut rng,
        );
    }
    let vae = arch == Arch::Vae;
    let mut eps = vec![T::of(0.0); if vae { cap * z } else { 0 }];
    let mut order = prep.train_starts.clone();
    let batches = u32::try_from(order.len().div_ceil(cap)).unwrap_or(u32::MAX);
    let clip = cfg.clip_norm.map(of);
    let regularised = denoising
        || lay.hier.is_some()
        || masking.is_some()
        || lay.k > 0
        || cfg.ssim_alpha.is_some()
        || vae
        || cfg.weight_decay > 0.0
        || cfg.l1_code > 0.0
        || cfg.sparsity.is_some()
        || cfg.contractive > 0.0;

    let initial = eval_windows(
        &spec,
        &lay,
        &params,
        &mut ws,
        &prep,
        &prep.val_starts,
        &mut clean,
    );
    let mut history: Vec<EpochStats> = Vec::new();
    let mut best = params.clone();
    let mut best_metric = f64::INFINITY;
    let mut best_epoch = 0usize;
    let mut since_best = 0u32;
    for epoch in 1..=cfg.epochs {
        let epoch_start = Instant::now();
        if vae {
            let warm = if cfg.kl_warmup_epochs == 0 {
                1.0
            } else {
                (f64::from(epoch) / f64::from(cfg.kl_warmup_epochs)).min(1.0)
            };
            pen.kl = T::of(f64::from(cfg.beta) * warm);
        }
        order.shuffle(&mut rng);
        let (mut sum_obj, mut sum_recon, mut sum_kl) = (0.0f64, 0.0f64, 0.0f64);
        let mut sum_distance = 0.0f64;
        let mut seen = 0usize;
        for (bi, chunk) in order.chunks(cap).enumerate() {
            let cols = chunk.len();
            gather(&prep, chunk, &mut clean);
            let input: &[T] = if let Some((axis, ratio)) = masking {
                noisy[..cols * n].copy_from_slice(&clean[..cols * n]);
                for (col, m) in noisy[..cols * n]
                    .chunks_exact_mut(n)
                    .zip(mask.chunks_exact_mut(n))
                {
                    mask_window(axis, ratio, c, col, m, &mut rng);
                }
                &noisy
            } else if denoising {
                noisy[..cols * n].copy_from_slice(&clean[..cols * n]);
                for col in noisy[..cols * n].chunks_exact_mut(n) {
                    corrupt(cfg.noise, col, &prep, &mut rng, &mut gauss);
                }
                &noisy
            } else {
                &clean
            };
            if vae {
                for e in &mut eps[..cols * z] {
                    *e = T::of(gauss.sample(&mut rng));
                }
            }
            let batch = Batch {
                input,
                target: &clean,
                eps: vae.then_some(&eps[..]),
                mask: masking.map(|_| &mask[..]),
                cols,
            };
            let parts = net::loss_and_grad(&spec, &lay, &pen, &params, &mut ws, batch, &mut grad);
            let obj = parts.objective.to_f64();
            if !obj.is_finite() {
                return Err(TrainError::Diverged { epoch });
            }
            if let Some(max) = clip {
                optim::clip_norm(&mut grad, max);
            }
            opt.step(&mut params, &grad);
            let w = cols as f64;
            sum_obj += obj * w;
            sum_recon += parts.recon.to_f64() * w;
            sum_kl += parts.kl.to_f64() * w;
            sum_distance += parts.code_distance.to_f64() * w;
            seen += cols;
            progress(&Progress {
                epoch,
                epochs: cfg.epochs,
                batch: u32::try_from(bi + 1).unwrap_or(u32::MAX),
                batches,
                train_loss: (sum_obj / seen as f64) as f32,
                val_loss: None,
                elapsed: started.elapsed(),
            });
        }
        let count = order.len() as f64;
        let train_loss = sum_obj / count;
        let val = eval_windows(
            &spec,
            &lay,
            &params,
            &mut ws,
            &prep,
            &prep.val_starts,
            &mut clean,
        );
        // Only regularised families need the separate objective pass.
        let val_objective = match val {
            Some(recon) if !regularised => Some(recon),
            Some(_) => Some(
                ValObjective {
                    spec: &spec,
                    lay: &lay,
                    pen: &pen,
                    noise: cfg.noise,
                    masking,
                    seed: cfg.seed,
                    clean: &mut clean,
                    noisy: &mut noisy,
                    mask: &mut mask,
                    grad: &mut grad,
                }
                .eval(&params, &mut ws, &prep),
            ),
            None => None,
        };
        if val.is_some_and(|v| !v.is_finite()) || val_objective.is_some_and(|v| !v.is_finite()) {
            return Err(TrainError::Diverged { epoch });
        }
        let stats = EpochStats {
            epoch,
            train_loss: train_loss as f32,
            train_recon: (sum_recon / count) as f32,
            val_loss: val.map(|v| v as f32),
            val_objective: val_objective.map(|v| v as f32),
            kl: (sum_kl / count) as f32,
            code_distance: (sum_distance / count) as f32,
            elapsed: epoch_start.elapsed(),
        };
        history.push(stats);
        progress(&Progress {
            epoch,
            epochs: cfg.epochs,
            batch: batches,
            batches,
            train_loss: stats.train_loss,
            val_loss: stats.val_loss,
            elapsed: started.elapsed(),
        });
        // Without validation windows the training objective decides which epoch is best.
        let metric = val_objective.unwrap_or(train_loss);
        if metric < best_metric {
            best_metric = metric;
            best.copy_from_slice(&params);
            best_epoch = history.len() - 1;
            since_best = 0;
        } else {
            since_best += 1;
            if cfg.patience.is_some_and(|p| since_best >= p) {
                break;
            }
        }
    }
    let best_stats = history.get(best_epoch).copied();
    let summary = TrainingSummary {
        epochs: u32::try_from(history.len()).unwrap_or(u32::MAX),
        train_loss: best_stats.map_or(f32::NAN, |s| s.train_loss),
        val_loss: best_stats.and_then(|s| s.val_loss).unwrap_or(f32::NAN),
        rows: (prep.train_rows.len() + prep.val_rows.len()) as u64,
        train_windows: u32::try_from(prep.train_starts.len()).unwrap_or(u32::MAX),
        val_windows: u32::try_from(prep.val_starts.len()).unwrap_or(u32::MAX),
        seed: cfg.seed,
    };
    Ok(TrainedModel {
        variant: cfg.variant,
        tied: cfg.tied,
        window: WindowSpec {
            channels: u16::try_from(c).unwrap_or(u16::MAX),
            length: cfg.window,
            hop: cfg.hop,
        },
        layers: Layers {
            hidden: cfg.hidden,
            latent: cfg.latent,
            encoder_hidden: cfg.encoder_hidden,
            code: cfg.code,
            decoder_hidden: cfg.decoder_hidden,
            output: cfg.output,
        },
        scaling,
        loss: cfg.loss,
        channels: prep.norms,
        params: best.iter().map(|v| v.to_f32()).collect(),
        summary,
        history,
        initial_val_loss: initial.map(|v| v as f32),
        train_rows: prep.train_rows,
        val_rows: prep.val_rows,
    })
}

#[cfg(test)]
mod tests {
    use sensorae::{Aggregate, DynDetector, ThresholdMethod};

    use super::*;

    const SKAB: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/skab/valve1/0.csv"
    );
    const TRAIN_ROWS: usize = 400;

    /// SKAB valve1/0: 8 sensor columns (row-major) and the `anomaly` label of each row.
    fn skab() -> (Vec<f32>, Vec<String>, Vec<bool>) {
        let text = std::fs::read_to_string(SKAB).unwrap();
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(';').collect();
        let names = header[1..9].iter().map(|s| s.to_string()).collect();
        let (mut data, mut labels) = (Vec::new(), Vec::new());
        for line in lines.filter(|l| !l.trim().is_empty()) {
            let f: Vec<&str> = line.split(';').collect();
            data.extend(f[1..9].iter().map(|v| v.trim().parse::<f32>().unwrap()));
            labels.push(f[9].trim().parse::<f32>().unwrap() > 0.5);
        }
        (data, names, labels)
    }

    fn quick(variant: Variant) -> TrainConfig {
        TrainConfig {
            window: 16,
            hidden: 32,
            latent: 8,
            epochs: 30,
            batch: 32,
            lr: 3e-3,
            patience: None,
            ..TrainConfig::new(variant)
        }
    }

    fn scoring(metric: ErrorMetric) -> Scoring {
        Scoring {
            metric,
            aggregate: Aggregate::Mean,
            kl_weight: 0.0,
            ewma: 1.0,
        }
    }

    fn bytes(model: &TrainedModel) -> Vec<u8> {
        let threshold = Threshold {
            value: 1.0,
            method: ThresholdMethod::Fixed,
            calibration_windows: 0,
        };
        let alarm = AlarmSpec {
            on_after: 1,
            off_after: 1,
        };
        let faults = FaultPolicy { hold_max: 0 };
        model
            .to_bytes("test", scoring(model.loss), threshold, alarm, faults, None)
            .unwrap()
    }

    /// Raw window scores of every full window (hop 1), from the core's streaming detector.
    fn detector_scores(model: &TrainedModel, data: &[f32]) -> Vec<f32> {
        let mut det = DynDetector::from_bytes(&bytes(model)).unwrap();
        let c = model.channels.len();
        data.chunks_exact(c)
            .filter_map(|row| det.push(row).score().map(|s| s.raw))
            .collect()
    }

    /// The trainer's own deterministic forward pass and loss, per window, in f32.
    fn trainer_scores(model: &TrainedModel, data: &[f32]) -> Vec<f32> {
        per_window(model, data, |spec, lay, ws, x| {
            net::eval_loss(spec, lay, &model.params, ws, x, 1)
        })
    }

    /// `f` over every hop-1 window of `data`, normalised as the model does, with the trainer's
    /// layout and a one-column workspace.
    fn per_window<R>(
        model: &TrainedModel,
        data: &[f32],
        mut f: impl FnMut(&Spec<f32>, &Layout, &mut Workspace<f32>, &[f32]) -> R,
    ) -> Vec<R> {
        let c = model.channels.len();
        let w = usize::from(model.window.length);
        let (n, h, z) = (
            c * w,
            model.layers.hidden as usize,
            model.layers.latent as usize,
        );
        let lay = Layout::new(model.arch(), c, n, h, z);
        let l = model.layers;
        let spec = Spec {
            acts: [l.encoder_hidden, l.code, l.decoder_hidden, l.output].map(Act::<f32>::new),
            loss: model.loss,
            ssim: None,
        };
        let mut ws = Workspace::new(&lay, 1, false);
        let norm: Vec<f32> = data
            .chunks_exact(c)
            .flat_map(|row| {
                row.iter()
                    .zip(&model.channels)
                    .map(|(&v, ch)| (v - ch.offset) * (1.0 / ch.scale))
                    .collect::<Vec<_>>()
            })
            .collect();
        (0..=data.len() / c - w)
            .map(|s| f(&spec, &lay, &mut ws, &norm[s * c..(s + w) * c]))
            .collect()
    }

    fn mean(v: impl IntoIterator<Item = f32>) -> f64 {
        let (mut sum, mut count) = (0.0f64, 0usize);
        for x in v {
            sum += f64::from(x);
            count += 1;
        }
        sum / count.max(1) as f64
    }

    /// Mean detector score of the test windows (after the training rows) ending on a labelled
    /// anomaly row, and of those ending on a normal row.
    fn anomaly_vs_normal(model: &TrainedModel, data: &[f32], labels: &[bool]) -> (f64, f64) {
        let c = model.channels.len();
        let w = usize::from(model.window.length);
        let test = &data[TRAIN_ROWS * c..];
        let scores = detector_scores(model, test);
        let last_rows = &labels[TRAIN_ROWS + w - 1..];
        let pick = |want: bool| {
            scores
                .iter()
                .zip(last_rows)
                .filter(move |(_, l)| **l == want)
                .map(|(s, _)| *s)
        };
        (mean(pick(true)), mean(pick(false)))
    }

    fn fit_skab(cfg: &TrainConfig) -> (TrainedModel, Vec<f32>, Vec<bool>) {
        let (data, names, labels) = skab();
        let model = train(&data[..TRAIN_ROWS * names.len()], &names, cfg, &mut |_| {}).unwrap();
        (model, data, labels)
    }

    #[test]
    fn every_variant_learns_skab_and_scores_anomalies_higher() {
        for variant in [
            Variant::Plain,
            Variant::Sparse,
            Variant::Denoising,
            Variant::Contractive,
            Variant::Vae,
        ] {
            let (model, data, labels) = fit_skab(&quick(variant));
            let start = model.initial_val_loss.unwrap();
            let best = model.summary.val_loss;
            assert!(
                best < 0.5 * start,
                "{variant:?}: val loss {start} -> {best}"
            );
            let (anomalous, normal) = anomaly_vs_normal(&model, &data, &labels);
            assert!(
                anomalous > normal,
                "{variant:?}: anomaly {anomalous} vs normal {normal}"
            );
        }
    }

    #[test]
    fn exported_parameters_score_like_the_trainer() {
        let (data, names, _) = skab();
        let rows = &data[..200 * names.len()];
        let cases = [
            TrainConfig {
                epochs: 3,
                ..quick(Variant::Plain)
            },
            TrainConfig {
                epochs: 3,
                tied: true,
                loss: ErrorMetric::Mae,
                ..quick(Variant::Sparse)
            },
            TrainConfig {
                epochs: 3,
                ..quick(Variant::Vae)
            },
            TrainConfig {
                epochs: 3,
                loss: ErrorMetric::Bce,
                output: Activation::Sigmoid,
                encoder_hidden: Activation::Relu,
                ..quick(Variant::Denoising)
            },
        ];
        for cfg in cases {
            let model = train(rows, &names, &cfg, &mut |_| {}).unwrap();
            let probe = &data[300 * names.len()..360 * names.len()];
            let device = detector_scores(&model, probe);
            let host = trainer_scores(&model, probe);
            assert_eq!(device.len(), host.len());
            assert_eq!(device.len(), 60 - 16 + 1);
            for (d, h) in device.iter().zip(&host) {
                assert!(
                    (d - h).abs() <= 1e-5 * h.abs().max(1e-3),
                    "{cfg:?}: {d} vs {h}"
                );
            }
        }
    }

    /// A VQ-VAE's detector score is the reconstruction error plus the weighted squared
    /// distance to the nearest code, exactly as the trainer's own forward pass computes them.
    #[test]
    fn vqvae_detector_scores_equal_the_trainers_forward() {
        let (data, names, _) = skab();
        let rows = &data[..200 * names.len()];
        let cfg = TrainConfig {
            epochs: 3,
            code: Activation::SoftThreshold { lambda: 0.01 },
            ssim_alpha: Some(0.8),
            ..quick(Variant::VqVae { codebook: 8 })
        };
        let model = train(rows, &names, &cfg, &mut |_| {}).unwrap();
        assert_eq!(model.params.len(), model.arch_param_count());
        let weight = 0.5f32;
        let bytes = model
            .to_bytes(
                "vq",
                Scoring {
                    kl_weight: weight,
                    ..scoring(ErrorMetric::Mse)
                },
                Threshold {
                    value: 1.0,
                    method: ThresholdMethod::Fixed,
                    calibration_windows: 0,
                },
                AlarmSpec {
                    on_after: 1,
                    off_after: 1,
                },
                FaultPolicy { hold_max: 0 },
                None,
            )
            .unwrap();
        let probe = &data[300 * names.len()..360 * names.len()];
        let mut det = DynDetector::from_bytes(&bytes).unwrap();
        let device: Vec<f32> = probe
            .chunks_exact(names.len())
            .filter_map(|row| det.push(row).score().map(|s| s.raw))
            .collect();
        // The trainer's reconstruction loss and code distance per window (its forward pass
        // leaves the distances in the workspace).
        let recon = per_window(&model, probe, |spec, lay, ws, x| {
            let loss = net::eval_loss(spec, lay, &model.params, ws, x, 1);
            (loss, ws.code_distances(1, 8)[0])
        });
        assert_eq!(device.len(), recon.len());
        let mut distances = Vec::new();
        for (d, &(r, dist)) in device.iter().zip(&recon) {
            distances.push(dist);
            let host = r + weight * dist;
            assert!(
                (d - host).abs() <= 1e-5 * host.abs().max(1e-3),
                "{d} vs {host}"
            );
        }
        assert!(distances.iter().any(|&d| d > 0.0));
    }

    fn hierarchical(block: u16) -> Variant {
        Variant::Hierarchical {
            block,
            coarse_hidden: 16,
            coarse_latent: 4,
        }
    }

    /// The detector's score of a hierarchical model is the trainer's own forward pass and
    /// reconstruction loss (the per-window mean error of the combined reconstruction).
    #[test]
    fn hierarchical_detector_scores_equal_the_trainers_forward() {
        let (data, names, _) = skab();
        let rows = &data[..200 * names.len()];
        let cases = [
            TrainConfig {
                epochs: 3,
                ..quick(hierarchical(4))
            },
            TrainConfig {
                epochs: 3,
                loss: ErrorMetric::Mae,
                ssim_alpha: Some(0.5),
                encoder_hidden: Activation::Relu,
                scales: Scales {
                    coarse: 2.0,
                    fine: 0.5,
                    coarse_gain: 0.1,
                    fine_gain: 0.1,
                },
                weight_decay: 1e-4,
                ..quick(hierarchical(8))
            },
        ];
        for cfg in cases {
            let model = train(rows, &names, &cfg, &mut |_| {}).unwrap();
            assert_eq!(model.params.len(), model.arch_param_count());
            let probe = &data[300 * names.len()..360 * names.len()];
            let device = detector_scores(&model, probe);
            let host = trainer_scores(&model, probe);
            assert_eq!(device.len(), 60 - 16 + 1);
            assert_eq!(device.len(), host.len());
            for (d, h) in device.iter().zip(&host) {
                assert!(
                    (d - h).abs() <= 1e-5 * h.abs().max(1e-3),
                    "{:?}: {d} vs {h}",
                    cfg.variant
                );
            }
        }
    }

    /// Mean squared error of the coarse part (block means) and of the fine part of the
    /// reconstruction, and the mean energy of each part of the windows, over `data`.
    fn scale_errors(model: &TrainedModel, data: &[f32]) -> [f64; 4] {
        let Variant::Hierarchical { block, .. } = model.variant else {
            panic!("not hierarchical");
        };
        let (c, b) = (model.channels.len(), usize::from(block));
        let split = |v: &[f32]| {
            let steps = v.len() / c;
            let mut means = vec![0.0f64; (steps / b) * c];
            for (i, &e) in v.iter().enumerate() {
                means[(i / c) / b * c + i % c] += f64::from(e) / b as f64;
            }
            let fine: Vec<f64> = (0..v.len())
                .map(|i| f64::from(v[i]) - means[(i / c) / b * c + i % c])
                .collect();
            (means, fine)
        };
        let sums = per_window(model, data, |spec, lay, ws, x| {
            net::eval_loss(spec, lay, &model.params, ws, x, 1);
            let xhat = ws.scales(1).0.to_vec();
            let ((mx, fx), (my, fy)) = (split(x), split(&xhat));
            let sq = |a: &[f64], b: &[f64]| -> f64 {
                a.iter().zip(b).map(|(p, q)| (p - q).powi(2)).sum::<f64>() / a.len() as f64
            };
            let zeros = vec![0.0; fx.len()];
            [
                sq(&mx, &my),
                sq(&fx, &fy),
                sq(&mx, &zeros[..mx.len()]),
                sq(&fx, &zeros),
            ]
        });
        let mut total = [0.0; 4];
        for s in &sums {
            for (t, v) in total.iter_mut().zip(s) {
                *t += v / sums.len() as f64;
            }
        }
        total
    }

    /// The scale weights steer what the model learns: with the fine error weighted 0 and the
    /// fine gain penalised, the fine gain goes to 0 and the model reconstructs the coarse part
    /// only (its fine error is the fine part's whole energy); with even weights it
    /// reconstructs both.
    #[test]
    fn hierarchical_scale_weights_steer_the_reconstruction() {
        let (data, names, _) = skab();
        let rows = &data[..TRAIN_ROWS * names.len()];
        let base = TrainConfig {
            epochs: 40,
            ..quick(hierarchical(4))
        };
        let coarse_only = TrainConfig {
            scales: Scales {
                fine: 0.0,
                fine_gain: 1.0,
                ..Scales::EVEN
            },
            ..base.clone()
        };
        let probe = &data[..TRAIN_ROWS * names.len()];
        let gains = |m: &TrainedModel| {
            let p = &m.params;
            (p[p.len() - 2], p[p.len() - 1])
        };
        let even = train(rows, &names, &base, &mut |_| {}).unwrap();
        let only = train(rows, &names, &coarse_only, &mut |_| {}).unwrap();
        let [ec, ef, energy_c, energy_f] = scale_errors(&even, probe);
        let [oc, of, _, _] = scale_errors(&only, probe);
        assert!(energy_f > 1e-3 && energy_c > 1e-3, "{energy_c} {energy_f}");
        // Measured on valve1/0: fine gain 1.09 -> 0.18; fine error 0.348 (even) and 0.456
        // (coarse only) of a fine energy 0.455; coarse error 0.166 and 0.161 of 0.631.
        let ((_, g_even), (_, g_only)) = (gains(&even), gains(&only));
        assert!(
            g_only.abs() < 0.25 && g_even > 0.5,
            "fine gains {g_even} {g_only}"
        );
        assert!(
            (of - energy_f).abs() < 0.01 * energy_f,
            "{of} vs {energy_f}"
        );
        assert!(oc < 0.5 * energy_c, "coarse error {oc} of {energy_c}");
        assert!(ef < 0.85 * energy_f, "even: fine error {ef} of {energy_f}");
        assert!(ec < 0.5 * energy_c, "even: coarse error {ec} of {energy_c}");
    }

    #[test]
    fn hierarchical_settings_are_checked() {
        let bad = |cfg: TrainConfig| match cfg.validate(8) {
            Err(TrainError::Config { knob, .. }) => knob,
            other => panic!("{other:?}"),
        };
        assert_eq!(bad(quick(hierarchical(3))), "block");
        assert_eq!(bad(quick(hierarchical(1))), "block");
        assert_eq!(
            bad(TrainConfig {
                tied: true,
                ..quick(hierarchical(4))
            }),
            "tied"
        );
        assert_eq!(
            bad(TrainConfig {
                loss: ErrorMetric::Bce,
                output: Activation::Sigmoid,
                scaling: Some(sensorae::Scaling::MinMax),
                ..quick(hierarchical(4))
            }),
            "loss"
        );
        let scales = |s: Scales| TrainConfig {
            scales: s,
            ..quick(hierarchical(4))
        };
        for s in [
            Scales {
                coarse: 0.0,
                fine: 0.0,
                ..Scales::EVEN
            },
            Scales {
                coarse: -1.0,
                ..Scales::EVEN
            },
            Scales {
                fine_gain: f32::NAN,
                ..Scales::EVEN
            },
        ] {
            assert_eq!(bad(scales(s)), "scales");
        }
        assert_eq!(
            bad(TrainConfig {
                scales: Scales {
                    fine: 0.5,
                    ..Scales::EVEN
                },
                ..quick(Variant::Plain)
            }),
            "variant"
        );
        assert!(
            scales(Scales {
                fine: 0.0,
                ..Scales::EVEN
            })
            .validate(8)
            .is_ok()
        );
    }

    #[test]
    fn masked_and_ssim_variants_learn_skab_and_score_anomalies_higher() {
        let cases = [
            quick(Variant::Masked {
                mask: MaskAxis::Channel,
            }),
            quick(Variant::Masked {
                mask: MaskAxis::Time,
            }),
            quick(Variant::VqVae { codebook: 16 }),
            quick(hierarchical(4)),
            TrainConfig {
                ssim_alpha: Some(0.5),
                ..quick(Variant::Plain)
            },
            TrainConfig {
                code: Activation::SoftThreshold { lambda: 0.05 },
                ..quick(Variant::Plain)
            },
        ];
        for cfg in cases {
            let (model, data, labels) = fit_skab(&cfg);
            // A masked model is trained on its hidden entries only, so what must fall is the
            // masked objective, not the clean full reconstruction the detector scores.
            let (start, best) = if matches!(cfg.variant, Variant::Masked { .. }) {
                let objectives: Vec<f32> = model
                    .history
                    .iter()
                    .filter_map(|e| e.val_objective)
                    .collect();
                let least = objectives.iter().copied().fold(f32::INFINITY, f32::min);
                // Predicting hidden channels from the others is harder than copying: measured
                // 1.35 -> 1.07 after the first epoch for channel masking on valve1/0.
                (objectives[0] / 0.7 * 0.9, least)
            } else {
                (model.initial_val_loss.unwrap(), model.summary.val_loss)
            };
            assert!(
                best < 0.7 * start,
                "{:?}: val loss {start} -> {best}",
                cfg.variant
            );
            let (anomalous, normal) = anomaly_vs_normal(&model, &data, &labels);
            assert!(
                anomalous > normal,
                "{:?}: anomaly {anomalous} vs normal {normal}",
                cfg.variant
            );
        }
    }

    #[test]
    fn masking_hides_the_asked_share_of_steps_or_channels() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (c, w) = (4, 6);
        for (axis, ratio, hidden) in [
            (MaskAxis::Time, 0.5, 3 * c),
            (MaskAxis::Channel, 0.5, 2 * w),
            (MaskAxis::Channel, 0.99, 3 * w),
            (MaskAxis::Time, 0.01, c),
        ] {
            let mut x = vec![1.0f64; c * w];
            let mut m = vec![0.0f64; c * w];
            mask_window(axis, ratio, c, &mut x, &mut m, &mut rng);
            assert_eq!(
                m.iter().filter(|&&v| v == 1.0).count(),
                hidden,
                "{axis:?} {ratio}"
            );
            for (v, k) in x.iter().zip(&m) {
                assert_eq!(*v, 1.0 - k);
            }
        }
    }

    #[test]
    fn same_seed_gives_identical_parameters_and_another_seed_does_not() {
        let (data, names, _) = skab();
        let rows = &data[..200 * names.len()];
        for variant in [Variant::Vae, Variant::Denoising] {
            let cfg = TrainConfig {
                epochs: 2,
                seed: 42,
                ..quick(variant)
            };
            let a = train(rows, &names, &cfg, &mut |_| {}).unwrap();
            let b = train(rows, &names, &cfg, &mut |_| {}).unwrap();
            let bits = |m: &TrainedModel| m.params.iter().map(|p| p.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&a), bits(&b));
            let c = train(rows, &names, &TrainConfig { seed: 43, ..cfg }, &mut |_| {}).unwrap();
            assert_ne!(bits(&a), bits(&c));
        }
    }

    /// Mean encoder hidden activation over the training windows.
    fn mean_hidden(model: &TrainedModel, data: &[f32]) -> f64 {
        let c = model.channels.len();
        let w = usize::from(model.window.length);
        let (n, h, z) = (
            c * w,
            model.layers.hidden as usize,
            model.layers.latent as usize,
        );
        let lay = Layout::new(model.arch(), c, n, h, z);
        let l = model.layers;
        let spec = Spec {
            acts: [l.encoder_hidden, l.code, l.decoder_hidden, l.output].map(Act::<f32>::new),
            loss: model.loss,
            ssim: None,
        };
        let prep = prep::prepare(data, &names_of(model), w, 1, 0.2, model.scaling).unwrap();
        let mut ws = Workspace::new(&lay, 1, false);
        let mut total = 0.0;
        for &s in &prep.train_starts {
            net::forward(
                &spec,
                &lay,
                &model.params,
                &mut ws,
                prep.window_at(s),
                None,
                1,
            );
            total += mean(ws.h1(1, h).iter().copied());
        }
        total / prep.train_starts.len() as f64
    }

    fn names_of(model: &TrainedModel) -> Vec<String> {
        model.channels.iter().map(|c| c.name.clone()).collect()
    }

    #[test]
    fn kl_sparsity_pulls_the_mean_hidden_activation_to_rho() {
        let rho = 0.05;
        let sigmoid = TrainConfig {
            encoder_hidden: Activation::Sigmoid,
            ..quick(Variant::Plain)
        };
        let sparse = TrainConfig {
            variant: Variant::Sparse,
            l1_code: 0.0,
            sparsity: Some(Sparsity { rho, beta: 1.0 }),
            // Moving sigmoid biases to about -3 takes more steps than reconstruction does.
            epochs: 150,
            lr: 1e-2,
            ..sigmoid.clone()
        };
        let (dense_model, data, _) = fit_skab(&sigmoid);
        let (sparse_model, _, _) = fit_skab(&sparse);
        let train = &data[..TRAIN_ROWS * 8];
        let free = mean_hidden(&dense_model, train);
        let held = mean_hidden(&sparse_model, train);
        let rho = f64::from(rho);
        assert!(
            (held - rho).abs() < 0.02,
            "mean activation {held}, target {rho}"
        );
        assert!(
            (free - rho).abs() > 5.0 * (held - rho).abs(),
            "free {free}, sparse {held}"
        );
    }

    #[test]
    fn denoising_reconstructs_corrupted_windows_closer_to_the_clean_ones() {
        let noise = Noise::Masking { p: 0.5 };
        // Both fully trained (no early stop on the shifted last rows), identically otherwise.
        let den = TrainConfig {
            noise,
            epochs: 60,
            val_fraction: 0.0,
            ..quick(Variant::Denoising)
        };
        let plain = TrainConfig {
            noise: Noise::None,
            variant: Variant::Plain,
            ..den.clone()
        };
        let (dm, data, _) = fit_skab(&den);
        let (pm, _, _) = fit_skab(&plain);
        // Corrupt the training windows with the training noise, the same draws for both models.
        let rows = &data[..TRAIN_ROWS * 8];
        // (error on corrupted windows, error on clean ones), both against the clean window.
        let error = |model: &TrainedModel| {
            let w = usize::from(model.window.length);
            let prep = prep::prepare(rows, &names_of(model), w, 1, 0.0, model.scaling).unwrap();
            let l = model.layers;
            let (n, h, z) = (8 * w, l.hidden as usize, l.latent as usize);
            let lay = Layout::new(model.arch(), 8, n, h, z);
            let spec = Spec {
                acts: [l.encoder_hidden, l.code, l.decoder_hidden, l.output].map(Act::<f32>::new),
                loss: model.loss,
                ssim: None,
            };
            let mut ws = Workspace::new(&lay, 1, false);
            let mut rng = ChaCha8Rng::seed_from_u64(9);
            let mut gauss = Gauss { spare: None };
            let sq = |ws: &Workspace<f32>, clean: &[f32]| {
                mean(
                    ws.xhat(1, n)
                        .iter()
                        .zip(clean)
                        .map(|(y, x)| (y - x) * (y - x)),
                )
            };
            let (mut noisy_err, mut clean_err) = (0.0, 0.0);
            for &s in &prep.train_starts {
                let clean = prep.window_at(s);
                let mut noisy = clean.to_vec();
                corrupt(noise, &mut noisy, &prep, &mut rng, &mut gauss);
                net::forward(&spec, &lay, &model.params, &mut ws, &noisy, None, 1);
                noisy_err += sq(&ws, clean);
                net::forward(&spec, &lay, &model.params, &mut ws, clean, None, 1);
                clean_err += sq(&ws, clean);
            }
            let count = prep.train_starts.len() as f64;
            (noisy_err / count, clean_err / count)
        };
        let ((d, d_clean), (p, p_clean)) = (error(&dm), error(&pm));
        assert!(d < p, "denoising {d} vs plain {p}");
        // Much of SKAB is sensor noise no model reconstructs; what the corruption adds is the
        // part a denoising autoencoder is trained to remove.
        let (d_extra, p_extra) = (d - d_clean, p - p_clean);
        assert!(
            d_extra < 0.6 * p_extra,
            "error added by the corruption: denoising {d_extra} vs plain {p_extra}"
        );
    }

    /// Mean squared Frobenius norm of the encoder Jacobian over the training windows, built
    /// explicitly per window.
    fn jacobian_norm(model: &TrainedModel, rows: &[f32]) -> f64 {
        let w = usize::from(model.window.length);
        let (n, h, z) = (
            8 * w,
            model.layers.hidden as usize,
            model.layers.latent as usize,
        );
        let prep = prep::prepare(rows, &names_of(model), w, 1, 0.2, model.scaling).unwrap();
        let lay = Layout::new(model.arch(), 8, n, h, z);
        let l = model.layers;
        let spec = Spec {
            acts: [l.encoder_hidden, l.code, l.decoder_hidden, l.output].map(Act::<f32>::new),
            loss: model.loss,
            ssim: None,
        };
        let (w1, w2) = (&model.params[lay.w1.clone()], &model.params[lay.w2.clone()]);
        let mut ws = Workspace::new(&lay, 1, false);
        let mut total = 0.0f64;
        for &s in &prep.train_starts {
            net::forward(
                &spec,
                &lay,
                &model.params,
                &mut ws,
                prep.window_at(s),
                None,
                1,
            );
            let h1 = ws.h1(1, h);
            // Tanh hidden, linear code: J = W2 diag(1 - h1^2) W1.
            for k in 0..z {
                for i in 0..n {
                    let j_ki: f32 = (0..h)
                        .map(|j| w2[j * z + k] * (1.0 - h1[j] * h1[j]) * w1[i * h + j])
                        .sum();
                    total += f64::from(j_ki * j_ki);
                }
            }
        }
        total / prep.train_starts.len() as f64
    }

    #[test]
    fn contractive_penalty_lowers_the_encoder_jacobian_norm() {
        let with = TrainConfig {
            contractive: 0.05,
            ..quick(Variant::Contractive)
        };
        let without = quick(Variant::Plain);
        let (cm, data, _) = fit_skab(&with);
        let (pm, _, _) = fit_skab(&without);
        let rows = &data[..TRAIN_ROWS * 8];
        let (jc, jp) = (jacobian_norm(&cm, rows), jacobian_norm(&pm, rows));
        assert!(jc < 0.5 * jp, "contractive {jc} vs plain {jp}");
    }

    #[test]
    fn vae_kl_is_finite_and_falls_with_larger_beta() {
        let kl = |beta: f32| {
            let cfg = TrainConfig {
                beta,
                kl_warmup_epochs: 3,
                ..quick(Variant::Vae)
            };
            let (model, _, _) = fit_skab(&cfg);
            model.history.last().unwrap().kl
        };
        let (low, high) = (kl(0.1), kl(2.0));
        assert!(low.is_finite() && high.is_finite());
        assert!(
            high < 0.7 * low,
            "KL with beta 2: {high}, with beta 0.1: {low}"
        );
    }

    #[test]
    fn progress_reports_every_batch_and_each_epoch_end() {
        let (data, names, _) = skab();
        let cfg = TrainConfig {
            epochs: 2,
            batch: 64,
            ..quick(Variant::Plain)
        };
        let mut reports = Vec::new();
        let model = train(&data[..200 * 8], &names, &cfg, &mut |p| reports.push(*p)).unwrap();
        // 160 training rows -> 145 windows -> 3 batches of 64, plus one epoch-end report.
        assert_eq!(reports.len(), 2 * 4);
        assert_eq!((reports[0].batch, reports[0].batches), (1, 3));
        assert!(reports[0].val_loss.is_none() && reports[3].val_loss.is_some());
        assert_eq!(model.history.len(), 2);
        assert_eq!(model.summary.train_windows, 145);
        assert_eq!(model.train_rows, 0..160);
        assert_eq!(model.val_rows, 160..200);
    }

    #[test]
    fn early_stopping_keeps_the_best_epoch() {
        let (data, names, _) = skab();
        let cfg = TrainConfig {
            epochs: 60,
            lr: 0.05,
            patience: Some(2),
            ..quick(Variant::Plain)
        };
        let model = train(&data[..200 * 8], &names, &cfg, &mut |_| {}).unwrap();
        let vals: Vec<f32> = model.history.iter().map(|e| e.val_loss.unwrap()).collect();
        let best = vals.iter().copied().fold(f32::INFINITY, f32::min);
        assert_eq!(model.summary.val_loss, best);
        // The kept parameters are the best epoch's: their validation loss is the best one.
        let val = &data[160 * 8..200 * 8];
        let again = mean(trainer_scores(&model, val));
        assert!((again - f64::from(best)).abs() < 1e-4 * f64::from(best));
        if model.history.len() < 60 {
            let last_two = &vals[vals.len() - 2..];
            assert!(last_two.iter().all(|&v| v >= best));
        }
    }

    #[test]
    fn bad_settings_name_the_knob_and_what_is_allowed() {
        let names: Vec<String> = vec!["a".into()];
        let data = vec![0.0f32; 100];
        let err = |cfg: TrainConfig| match train(&data, &names, &cfg, &mut |_| {}) {
            Err(TrainError::Config { knob, allowed, .. }) => (knob, allowed),
            other => panic!("expected a config error, got {other:?}"),
        };
        let d = TrainConfig::default();
        assert_eq!(
            err(TrainConfig {
                hop: 0,
                ..d.clone()
            })
            .0,
            "hop"
        );
        assert_eq!(
            err(TrainConfig {
                loss: ErrorMetric::Bce,
                ..d.clone()
            })
            .0,
            "output"
        );
        let bce = TrainConfig {
            loss: ErrorMetric::Bce,
            output: Activation::Sigmoid,
            ..d.clone()
        };
        assert_eq!(
            err(TrainConfig {
                scaling: Some(Scaling::Standard),
                ..bce.clone()
            })
            .0,
            "scaling"
        );
        assert_eq!(bce.effective_scaling(), Scaling::MinMax);
        assert_eq!(
            err(TrainConfig {
                tied: true,
                ..TrainConfig::new(Variant::Vae)
            })
            .0,
            "tied"
        );
        let kl = TrainConfig {
            sparsity: Some(Sparsity {
                rho: 0.05,
                beta: 1.0,
            }),
            ..TrainConfig::new(Variant::Sparse)
        };
        assert_eq!(err(kl).0, "encoder_hidden");
        assert_eq!(
            err(TrainConfig {
                noise: Noise::Masking { p: 0.2 },
                ..d.clone()
            })
            .0,
            "variant"
        );
        assert_eq!(
            err(TrainConfig {
                noise: Noise::None,
                ..TrainConfig::new(Variant::Denoising)
            })
            .0,
            "noise"
        );
        assert_eq!(
            err(TrainConfig {
                contractive: 0.0,
                ..TrainConfig::new(Variant::Contractive)
            })
            .0,
            "contractive"
        );
        assert_eq!(
            err(TrainConfig {
                val_fraction: 0.95,
                ..d.clone()
            })
            .0,
            "val_fraction"
        );
        let (knob, allowed) = err(TrainConfig {
            encoder_hidden: Activation::LeakyRelu { slope: 1.5 },
            ..d.clone()
        });
        assert_eq!(
            (knob, allowed),
            ("encoder_hidden", "a leaky ReLU slope in [0, 1)")
        );
    }

    #[test]
    fn too_few_rows_says_how_many_a_window_needs() {
        let names: Vec<String> = vec!["a".into(), "b".into()];
        let data = vec![1.0f32; 2 * 20];
        let cfg = TrainConfig {
            window: 16,
            ..TrainConfig::default()
        };
        let e = train(&data, &names, &cfg, &mut |_| {}).unwrap_err();
        assert!(
            matches!(
                e,
                TrainError::TooFewWindows {
                    part: "validation",
                    window: 16,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains("16 consecutive rows"), "{e}");
        let e = train(
            &data,
            &names,
            &TrainConfig {
                window: 21,
                val_fraction: 0.0,
                ..cfg
            },
            &mut |_| {},
        );
        assert!(matches!(
            e,
            Err(TrainError::TooFewWindows {
                part: "training",
                ..
            })
        ));
        let e = train(&data[..3], &names, &TrainConfig::default(), &mut |_| {});
        assert!(matches!(
            e,
            Err(TrainError::Shape {
                values: 3,
                channels: 2
            })
        ));
    }

    #[test]
    fn missing_values_skip_windows_and_training_without_validation_works() {
        let names: Vec<String> = vec!["a".into()];
        let mut data: Vec<f32> = (0..60).map(|i| (i as f32 * 0.3).sin()).collect();
        data[30] = f32::NAN;
        let cfg = TrainConfig {
            window: 4,
            epochs: 2,
            val_fraction: 0.0,
            ..TrainConfig::default()
        };
        let model = train(&data, &names, &cfg, &mut |_| {}).unwrap();
        // 57 windows, minus the 4 that contain row 30.
        assert_eq!(model.summary.train_windows, 53);
        assert!(model.summary.val_loss.is_nan() && model.initial_val_loss.is_none());
        assert!(model.history.iter().all(|e| e.val_loss.is_none()));
    }

    #[test]
    fn ranges_must_match_the_channels() {
        let names: Vec<String> = vec!["a".into()];
        let data: Vec<f32> = (0..60).map(|i| (i as f32 * 0.3).sin()).collect();
        let cfg = TrainConfig {
            window: 4,
            epochs: 1,
            ..TrainConfig::default()
        };
        let model = train(&data, &names, &cfg, &mut |_| {}).unwrap();
        let t = Threshold {
            value: 1.0,
            method: ThresholdMethod::Fixed,
            calibration_windows: 0,
        };
        let a = AlarmSpec {
            on_after: 1,
            off_after: 1,
        };
        let f = FaultPolicy { hold_max: 0 };
        let s = scoring(ErrorMetric::Mse);
        let two = [(-1.0, 1.0), (-1.0, 1.0)];
        assert!(matches!(
            model.to_bytes("m", s, t, a, f, Some(&two)),
            Err(TrainError::Config { knob: "ranges", .. })
        ));
        let bytes = model.to_bytes("m", s, t, a, f, Some(&two[..1])).unwrap();
        let view = sensorae::ModelView::from_bytes(&bytes).unwrap();
        assert_eq!(view.header().training, model.summary);
        let bce = model.to_bytes("m", scoring(ErrorMetric::Bce), t, a, f, None);
        assert!(matches!(bce, Err(TrainError::Encode(_))));
    }
}

#[cfg(test)]
mod speed {
    use super::*;

    /// Epoch time on the whole SKAB file (C = 8, W = 16, H = 64, Z = 8, batch 32). Run with
    /// `cargo test --release -p sensorae-host --lib train::speed -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, run by hand in release mode"]
    fn epoch_time_on_skab() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/data/skab/valve1/0.csv"
        ))
        .unwrap();
        let mut lines = text.lines();
        let names: Vec<String> = lines
            .next()
            .unwrap()
            .split(';')
            .skip(1)
            .take(8)
            .map(str::to_string)
            .collect();
        let data: Vec<f32> = lines
            .filter(|l| !l.trim().is_empty())
            .flat_map(|l| {
                l.split(';')
                    .skip(1)
                    .take(8)
                    .map(|v| v.parse::<f32>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        for variant in [Variant::Plain, Variant::Contractive, Variant::Vae] {
            let cfg = TrainConfig {
                hidden: 64,
                latent: 8,
                epochs: 20,
                patience: None,
                ..TrainConfig::new(variant)
            };
            let model = train(&data, &names, &cfg, &mut |_| {}).unwrap();
            let secs: f64 = model
                .history
                .iter()
                .map(|e| e.elapsed.as_secs_f64())
                .sum::<f64>()
                / 20.0;
            let windows = f64::from(model.summary.train_windows);
            println!(
                "{variant:?}: {:.2} ms/epoch, {windows} train windows, {:.0} samples/s",
                secs * 1e3,
                windows / secs
            );
        }
    }
}
