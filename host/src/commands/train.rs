//! `sensorae train`: fit a model to recorded CSV data, calibrate it and write the model file.

use std::{path::PathBuf, time::Duration};

use indicatif::{ProgressBar, ProgressStyle};
use sensorae::{
    Activation, Aggregate, AlarmHold, AlarmSpec, ErrorMetric, FaultPolicy, MaskAxis, Variant,
};

use crate::{
    calibrate::Method,
    commands::score::parse_delimiter,
    data::{self, CsvOptions},
    error::{Error, Result},
    files,
    fit::{self, FitOptions, Fitted},
    plot,
    train::{EpochStats, Noise, Optimizer, Sparsity, TrainConfig},
};

/// Arguments of `sensorae train`.
#[derive(Debug, clap::Args)]
#[allow(clippy::struct_excessive_bools)] // reason: independent command-line switches
pub struct TrainArgs {
    /// Training CSV file (repeat for several; windows never span two files).
    #[arg(long, required = true)]
    pub data: Vec<PathBuf>,
    /// Model file to write (atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Autoencoder family.
    #[arg(long, default_value = "ae", value_parser = parse_variant)]
    pub variant: Variant,
    /// Window length in rows.
    #[arg(long, default_value_t = 16)]
    pub window: u16,
    /// Rows between scored windows.
    #[arg(long, default_value_t = 1)]
    pub hop: u16,
    /// Hidden layer width.
    #[arg(long, default_value_t = 32)]
    pub hidden: u32,
    /// Code (latent) width.
    #[arg(long, default_value_t = 8)]
    pub latent: u32,
    /// Hidden-layer activation: linear, relu, leaky-relu, sigmoid, tanh.
    #[arg(long, default_value = "tanh", value_parser = parse_activation)]
    pub activation: Activation,
    /// Code activation.
    #[arg(long, default_value = "linear", value_parser = parse_activation)]
    pub code_activation: Activation,
    /// Output activation (sigmoid is implied by --loss bce).
    #[arg(long, value_parser = parse_activation)]
    pub output_activation: Option<Activation>,
    /// Slope of leaky-relu on the negative side.
    #[arg(long, default_value_t = 0.01)]
    pub leaky_slope: f32,
    /// Reconstruction loss and score: mse, mae or bce (bce scales inputs to [0, 1]); or, for
    /// training only, ssim (1 - SSIM per channel over the window) or combined:ALPHA or combined:ALPHA:PIXEL
    /// (ALPHA * PIXEL + (1 - ALPHA) * (1 - SSIM), PIXEL mse by default). The model then
    /// scores with the pixel metric (mse for ssim).
    #[arg(long, default_value = "mse", value_parser = parse_loss)]
    pub loss: Loss,
    /// L1-sparse code by soft-thresholding: the code activation becomes
    /// sign(u) max(|u| - LAMBDA, 0) (the LASSO solution), on every variant but the VAE.
    #[arg(long)]
    pub soft_threshold: Option<f32>,
    /// Decoder uses the encoder's transposed weights.
    #[arg(long)]
    pub tied: bool,
    /// L2 weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f32,
    /// Denoising corruption: gaussian:SIGMA, masking:P or salt-pepper:P.
    #[arg(long, value_parser = parse_noise)]
    pub noise: Option<Noise>,
    /// Sparse: L1 weight on the code.
    #[arg(long)]
    pub l1_code: Option<f32>,
    /// Sparse: KL sparsity RHO:BETA on the hidden layer (needs --activation sigmoid).
    #[arg(long, value_parser = parse_sparsity)]
    pub sparsity: Option<Sparsity>,
    /// Contractive: weight of the squared Frobenius norm of the encoder Jacobian.
    #[arg(long)]
    pub contractive: Option<f32>,
    /// VAE: weight of the KL term in the ELBO (beta-VAE).
    #[arg(long)]
    pub beta: Option<f32>,
    /// VAE: epochs over which the KL weight ramps up from 0.
    #[arg(long)]
    pub kl_warmup: Option<u32>,
    /// VAE: weight of the KL term added to the anomaly score.
    #[arg(long, default_value_t = 0.0)]
    pub kl_weight: f32,
    /// VQ-VAE: number of codebook entries K (default 16).
    #[arg(long)]
    pub codebook: Option<u16>,
    /// VQ-VAE: commitment weight beta of ||z_e - sg(e)||^2 (default 0.25).
    #[arg(long)]
    pub commitment: Option<f32>,
    /// VQ-VAE: weight of the squared distance to the nearest code added to the anomaly score.
    #[arg(long, default_value_t = 0.0)]
    pub distance_weight: f32,
    /// Masked: share of the time steps or channels hidden in each training window (default
    /// 0.5).
    #[arg(long)]
    pub mask_ratio: Option<f32>,
    /// Masked: hide whole time steps (time) or whole channels (channel).
    #[arg(long, value_parser = parse_mask)]
    pub mask: Option<MaskAxis>,
    /// Hierarchical: time steps per coarse block; the coarse part is each channel's mean
    /// over a block, the fine part the rest (default 4; must divide --window).
    #[arg(long)]
    pub block: Option<u16>,
    /// Hierarchical: hidden width of the coarse path (default 16).
    #[arg(long)]
    pub coarse_hidden: Option<u16>,
    /// Hierarchical: code width of the coarse path (default 4; --latent is the fine code's).
    #[arg(long)]
    pub coarse_latent: Option<u16>,
    /// Hierarchical: weight of the coarse reconstruction error (default 1).
    #[arg(long)]
    pub coarse_weight: Option<f32>,
    /// Hierarchical: weight of the fine reconstruction error (default 1; 0 trains the coarse
    /// structure alone).
    #[arg(long)]
    pub fine_weight: Option<f32>,
    /// Hierarchical: weight of the coarse gain's square g_c^2 (default 0).
    #[arg(long)]
    pub coarse_gain_penalty: Option<f32>,
    /// Hierarchical: weight of the fine gain's square g_f^2 (default 0).
    #[arg(long)]
    pub fine_gain_penalty: Option<f32>,
    /// Maximum epochs.
    #[arg(long, default_value_t = 60)]
    pub epochs: u32,
    /// Windows per mini-batch.
    #[arg(long, default_value_t = 32)]
    pub batch: u32,
    /// Learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f32,
    /// Optimiser: adam, or sgd:MOMENTUM.
    #[arg(long, default_value = "adam", value_parser = parse_optimizer)]
    pub optimizer: Optimizer,
    /// Fraction of the training rows, from the end, held out for validation and calibration.
    #[arg(long, default_value_t = 0.25)]
    pub val_fraction: f32,
    /// Stop after this many epochs without a better validation loss (0 = never).
    #[arg(long, default_value_t = 10)]
    pub patience: u32,
    /// Clip the gradient to this global L2 norm.
    #[arg(long)]
    pub clip_norm: Option<f32>,
    /// Random seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Use only the first N rows of each file for training.
    #[arg(long, conflicts_with = "train_fraction")]
    pub train_rows: Option<usize>,
    /// Use only the first fraction F of each file for training.
    #[arg(long)]
    pub train_fraction: Option<f64>,
    /// Threshold method: quantile:Q, sigma:K or pot:RISK or pot:RISK:INITIAL_QUANTILE.
    #[arg(long, default_value = "quantile:0.99")]
    pub threshold: Method,
    /// Window score: mean over all entries, or max-channel (largest per-channel error).
    #[arg(long, default_value = "mean", value_parser = parse_aggregate)]
    pub aggregate: Aggregate,
    /// EWMA smoothing factor of the score in (0, 1]; 1 is off.
    #[arg(long, default_value_t = 1.0)]
    pub ewma: f32,
    /// Consecutive exceeding windows that turn the alarm on.
    #[arg(long, default_value_t = 1)]
    pub alarm_on: u16,
    /// Consecutive normal windows that turn it off.
    #[arg(long, default_value_t = 1)]
    pub alarm_off: u16,
    /// Drift tracking: per-sample rate at which each channel's baseline follows slow level
    /// changes (e.g. 0.005 follows drift slower than ~200 samples); 0 is off.
    #[arg(long, default_value_t = 0.0)]
    pub adapt_rate: f32,
    /// Drift tracking while the alarm is on: `explaining` holds the baselines of the channels
    /// whose error exceeded the threshold during the alarm (and the largest) while the others
    /// keep following; `all` holds every baseline (a channel drifting through a long alarm can
    /// then keep it on after the anomaly ends); `follow` holds none (lasting anomalies fade).
    #[arg(long, default_value = "explaining", value_parser = parse_alarm_hold)]
    pub in_alarm: AlarmHold,
    /// Per-channel error normalisation: divide each channel's window error by its mean on the
    /// held-out windows (`held-out`) or the training windows (`train`), folded into the
    /// channel's scale and the first and last layers (no new field in the model file); `off`.
    #[arg(long, default_value = "off")]
    pub error_scale: crate::fit::ErrorScale,
    /// Samples of a faulty channel bridged by holding its last value (0 restarts the window).
    #[arg(long, default_value_t = 0)]
    pub hold_max: u16,
    /// Channels to use, in order (default: every numeric column but labels and times).
    #[arg(long, value_delimiter = ',')]
    pub columns: Option<Vec<String>>,
    /// Field delimiter (default: detected).
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Label column to leave out of the channels.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Time column to leave out of the channels.
    #[arg(long)]
    pub time_column: Option<String>,
    /// Save the loss curves as a PNG.
    #[arg(long)]
    pub plot: Option<PathBuf>,
    /// Model name stored in the file (default: the output file's stem).
    #[arg(long)]
    pub name: Option<String>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

fn usage(what: &str, found: &str, expected: &str) -> String {
    format!("{what}: expected {expected}, found `{found}`")
}

/// `--variant hierarchical` before `--block`, `--coarse-hidden` and `--coarse-latent`.
const HIERARCHICAL: Variant = Variant::Hierarchical {
    block: 4,
    coarse_hidden: 16,
    coarse_latent: 4,
};

/// Parses a variant name.
///
/// # Errors
/// A message listing the variants.
pub fn parse_variant(s: &str) -> std::result::Result<Variant, String> {
    Ok(match s {
        "ae" | "plain" => Variant::Plain,
        "sparse" => Variant::Sparse,
        "denoising" => Variant::Denoising,
        "contractive" => Variant::Contractive,
        "vae" => Variant::Vae,
        "vqvae" => Variant::VqVae { codebook: 16 },
        "masked" => Variant::Masked {
            mask: MaskAxis::Time,
        },
        "hierarchical" => HIERARCHICAL,
        _ => {
            return Err(usage(
                "variant",
                s,
                "ae, sparse, denoising, contractive, vae, vqvae, masked or hierarchical",
            ));
        }
    })
}

/// Parses a mask axis.
///
/// # Errors
/// A message listing the axes.
pub fn parse_mask(s: &str) -> std::result::Result<MaskAxis, String> {
    Ok(match s {
        "time" => MaskAxis::Time,
        "channel" => MaskAxis::Channel,
        _ => return Err(usage("mask", s, "time or channel")),
    })
}

/// Parses an activation name (`leaky-relu` takes its slope from `--leaky-slope`).
///
/// # Errors
/// A message listing the activations.
pub fn parse_activation(s: &str) -> std::result::Result<Activation, String> {
    Ok(match s {
        "linear" => Activation::Linear,
        "relu" => Activation::Relu,
        "leaky-relu" => Activation::LeakyRelu { slope: 0.01 },
        "sigmoid" => Activation::Sigmoid,
        "tanh" => Activation::Tanh,
        _ => {
            return Err(usage(
                "activation",
                s,
                "linear, relu, leaky-relu, sigmoid or tanh",
            ));
        }
    })
}

/// A training loss: the pixel-wise metric (also the model's scoring metric) and the optional
/// weight of that metric in a combination with the structural (SSIM) loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Loss {
    /// Pixel-wise loss and scoring metric.
    pub metric: ErrorMetric,
    /// `Some(alpha)`: train on `alpha * metric + (1 - alpha) * (1 - SSIM)`.
    pub ssim_alpha: Option<f32>,
}

fn parse_metric(s: &str) -> std::result::Result<ErrorMetric, String> {
    Ok(match s {
        "mse" => ErrorMetric::Mse,
        "mae" | "l1" => ErrorMetric::Mae,
        "bce" => ErrorMetric::Bce,
        _ => return Err(usage("loss", s, "mse, mae or bce")),
    })
}

/// Parses `mse`, `mae`, `bce`, `ssim` or `combined:ALPHA[:PIXEL]`.
///
/// # Errors
/// A message listing the losses.
pub fn parse_loss(s: &str) -> std::result::Result<Loss, String> {
    const FORMS: &str = "mse, mae, bce, ssim or combined:ALPHA[:mse|mae|bce]";
    let mut parts = s.split(':');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ssim"), None, _, _) => Ok(Loss {
            metric: ErrorMetric::Mse,
            ssim_alpha: Some(0.0),
        }),
        (Some("combined"), Some(alpha), pixel, None) => {
            let alpha = number("combined alpha", alpha)?;
            if !(0.0..=1.0).contains(&alpha) {
                return Err(usage("combined alpha", s, "a weight in [0, 1]"));
            }
            Ok(Loss {
                metric: pixel.map_or(Ok(ErrorMetric::Mse), parse_metric)?,
                ssim_alpha: Some(alpha),
            })
        }
        (Some(m), None, _, _) => Ok(Loss {
            metric: parse_metric(m).map_err(|_| usage("loss", s, FORMS))?,
            ssim_alpha: None,
        }),
        _ => Err(usage("loss", s, FORMS)),
    }
}

/// Parses a window aggregate.
///
/// # Errors
/// A message listing the aggregates.
pub fn parse_aggregate(s: &str) -> std::result::Result<Aggregate, String> {
    Ok(match s {
        "mean" => Aggregate::Mean,
        "max-channel" => Aggregate::MaxChannel,
        _ => return Err(usage("aggregate", s, "mean or max-channel")),
    })
}

/// Parses `follow`, `all` or `explaining`.
///
/// # Errors
/// A usage message naming the flag and the accepted values.
pub fn parse_alarm_hold(s: &str) -> std::result::Result<AlarmHold, String> {
    Ok(match s {
        "follow" => AlarmHold::Follow,
        "all" => AlarmHold::All,
        "explaining" => AlarmHold::Explaining,
        _ => return Err(usage("in-alarm", s, "follow, all or explaining")),
    })
}

fn number(what: &str, s: &str) -> std::result::Result<f32, String> {
    s.parse::<f32>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| usage(what, s, "a number"))
}

/// Parses `gaussian:SIGMA`, `masking:P` or `salt-pepper:P`.
///
/// # Errors
/// A message with the accepted forms.
pub fn parse_noise(s: &str) -> std::result::Result<Noise, String> {
    let (kind, level) = s.split_once(':').unwrap_or((s, ""));
    let level = number("noise level", level)?;
    Ok(match kind {
        "gaussian" => Noise::Gaussian { sigma: level },
        "masking" => Noise::Masking { p: level },
        "salt-pepper" => Noise::SaltPepper { p: level },
        _ => {
            return Err(usage(
                "noise",
                s,
                "gaussian:SIGMA, masking:P or salt-pepper:P",
            ));
        }
    })
}

/// Parses `RHO:BETA`.
///
/// # Errors
/// A message with the accepted form.
pub fn parse_sparsity(s: &str) -> std::result::Result<Sparsity, String> {
    let (rho, beta) = s
        .split_once(':')
        .ok_or_else(|| usage("sparsity", s, "RHO:BETA, e.g. 0.05:0.1"))?;
    Ok(Sparsity {
        rho: number("sparsity rho", rho)?,
        beta: number("sparsity beta", beta)?,
    })
}

/// Parses `adam` or `sgd:MOMENTUM`.
///
/// # Errors
/// A message with the accepted forms.
pub fn parse_optimizer(s: &str) -> std::result::Result<Optimizer, String> {
    match s.split_once(':') {
        None if s == "adam" => Ok(Optimizer::adam()),
        None if s == "sgd" => Ok(Optimizer::Sgd { momentum: 0.9 }),
        Some(("sgd", m)) => Ok(Optimizer::Sgd {
            momentum: number("momentum", m)?,
        }),
        _ => Err(usage("optimizer", s, "adam, sgd or sgd:MOMENTUM")),
    }
}

impl TrainArgs {
    /// The trainer and fit settings these flags ask for.
    ///
    /// # Errors
    /// [`Error::Usage`] when a knob does not belong to the chosen variant.
    pub fn fit_options(&self) -> Result<FitOptions> {
        let with_slope = |a: Activation| match a {
            Activation::LeakyRelu { .. } => Activation::LeakyRelu {
                slope: self.leaky_slope,
            },
            other => other,
        };
        let only = |flag: &str, variant: Variant| -> Result<()> {
            if self.variant.name() == variant.name() {
                Ok(())
            } else {
                Err(Error::Usage(format!(
                    "--{flag} belongs to --variant {}, not {}",
                    variant.name(),
                    self.variant.name()
                )))
            }
        };
        let mut variant = self.variant;
        if let Some(k) = self.codebook {
            only("codebook", Variant::VqVae { codebook: 0 })?;
            variant = Variant::VqVae { codebook: k };
        }
        if let Some(mask) = self.mask {
            only("mask", Variant::Masked { mask })?;
            variant = Variant::Masked { mask };
        }
        if let Variant::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } = variant
        {
            variant = Variant::Hierarchical {
                block: self.block.unwrap_or(block),
                coarse_hidden: self.coarse_hidden.unwrap_or(coarse_hidden),
                coarse_latent: self.coarse_latent.unwrap_or(coarse_latent),
            };
        } else {
            for (flag, set) in [
                ("block", self.block.is_some()),
                ("coarse-hidden", self.coarse_hidden.is_some()),
                ("coarse-latent", self.coarse_latent.is_some()),
            ] {
                if set {
                    only(flag, HIERARCHICAL)?;
                }
            }
        }
        let mut t = TrainConfig::new(variant);
        for (flag, value, slot) in [
            ("coarse-weight", self.coarse_weight, &mut t.scales.coarse),
            ("fine-weight", self.fine_weight, &mut t.scales.fine),
            (
                "coarse-gain-penalty",
                self.coarse_gain_penalty,
                &mut t.scales.coarse_gain,
            ),
            (
                "fine-gain-penalty",
                self.fine_gain_penalty,
                &mut t.scales.fine_gain,
            ),
        ] {
            if let Some(v) = value {
                only(flag, HIERARCHICAL)?;
                *slot = v;
            }
        }
        t.window = self.window;
        t.hop = self.hop;
        t.hidden = self.hidden;
        t.latent = self.latent;
        t.encoder_hidden = with_slope(self.activation);
        t.decoder_hidden = with_slope(self.activation);
        t.code = with_slope(self.code_activation);
        if let Some(lambda) = self.soft_threshold {
            if self.code_activation != Activation::Linear {
                return Err(Error::Usage(
                    "--soft-threshold sets the code activation; leave --code-activation linear"
                        .to_owned(),
                ));
            }
            t.code = Activation::SoftThreshold { lambda };
        }
        t.loss = self.loss.metric;
        t.ssim_alpha = self.loss.ssim_alpha;
        t.output = match (self.output_activation, self.loss.metric) {
            (Some(a), _) => with_slope(a),
            (None, ErrorMetric::Bce) => Activation::Sigmoid,
            (None, _) => Activation::Linear,
        };
        t.tied = self.tied;
        t.weight_decay = self.weight_decay;
        if let Some(b) = self.commitment {
            only("commitment", Variant::VqVae { codebook: 0 })?;
            t.commitment = b;
        }
        if self.distance_weight != 0.0 {
            only("distance-weight", Variant::VqVae { codebook: 0 })?;
        }
        if let Some(r) = self.mask_ratio {
            only(
                "mask-ratio",
                Variant::Masked {
                    mask: MaskAxis::Time,
                },
            )?;
            t.mask_ratio = r;
        }
        if let Some(noise) = self.noise {
            only("noise", Variant::Denoising)?;
            t.noise = noise;
        }
        if let Some(l1) = self.l1_code {
            only("l1-code", Variant::Sparse)?;
            t.l1_code = l1;
        }
        if let Some(s) = self.sparsity {
            only("sparsity", Variant::Sparse)?;
            t.sparsity = Some(s);
        }
        if let Some(c) = self.contractive {
            only("contractive", Variant::Contractive)?;
            t.contractive = c;
        }
        if let Some(b) = self.beta {
            only("beta", Variant::Vae)?;
            t.beta = b;
        }
        if let Some(k) = self.kl_warmup {
            only("kl-warmup", Variant::Vae)?;
            t.kl_warmup_epochs = k;
        }
        if self.kl_weight != 0.0 {
            only("kl-weight", Variant::Vae)?;
        }
        t.epochs = self.epochs;
        t.batch = self.batch;
        t.lr = self.lr;
        t.optimizer = self.optimizer;
        t.val_fraction = self.val_fraction;
        t.patience = (self.patience > 0).then_some(self.patience);
        t.clip_norm = self.clip_norm;
        t.seed = self.seed;
        let name = self.name.clone().unwrap_or_else(|| {
            self.out
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "sensorae".to_owned())
        });
        Ok(FitOptions {
            name,
            train: t,
            aggregate: self.aggregate,
            ewma: self.ewma,
            // One latent-score weight in the file: the VAE's KL or the VQ-VAE's code distance.
            kl_weight: if matches!(variant, Variant::VqVae { .. }) {
                self.distance_weight
            } else {
                self.kl_weight
            },
            threshold: self.threshold,
            alarm: AlarmSpec {
                on_after: self.alarm_on,
                off_after: self.alarm_off,
            },
            faults: FaultPolicy {
                hold_max: self.hold_max,
            },
            ranges: None,
            adaptation: sensorae::Adaptation {
                rate: self.adapt_rate,
                in_alarm: self.in_alarm,
            },
            error_scale: self.error_scale,
        })
    }

    fn csv_options(&self) -> CsvOptions {
        CsvOptions {
            delimiter: self.delimiter,
            columns: self.columns.clone(),
            label_column: self.label_column.clone(),
            time_column: self.time_column.clone(),
        }
    }
}

/// Reads the training files, keeps each file's training part and joins them with one missing
/// row between files, so that no training window spans two files.
///
/// # Errors
/// Data errors naming the file, and [`Error::Mismatch`] when files have other channels.
pub fn load_training_rows(
    paths: &[PathBuf],
    opts: &CsvOptions,
    train_rows: Option<usize>,
    train_fraction: Option<f64>,
) -> Result<(Vec<String>, Vec<f32>)> {
    let mut channels: Option<Vec<String>> = None;
    let mut values = Vec::new();
    for path in paths {
        let table = data::read_csv(path, opts)?;
        if let Some(first) = &channels {
            if *first != table.channels {
                return Err(Error::Mismatch {
                    path: path.clone(),
                    message: format!(
                        "channels [{}] differ from the first file's [{}]",
                        table.channels.join(", "),
                        first.join(", ")
                    ),
                });
            }
            values.extend(std::iter::repeat_n(f32::NAN, first.len()));
        }
        let rows = match (train_rows, train_fraction) {
            (Some(n), _) => n.min(table.rows()),
            (None, Some(f)) if (0.0..=1.0).contains(&f) => {
                // Rounded down: a fraction never takes a row it does not cover.
                (table.rows() as f64 * f) as usize
            }
            (None, Some(f)) => {
                return Err(Error::Usage(format!(
                    "--train-fraction: expected a number in [0, 1], found {f}"
                )));
            }
            (None, None) => table.rows(),
        };
        let c = table.channels.len();
        values.extend_from_slice(table.values.get(..rows * c).unwrap_or(&table.values));
        channels.get_or_insert(table.channels);
    }
    Ok((channels.unwrap_or_default(), values))
}

/// Runs `sensorae train` and returns the fitted model (already written to `--out`).
///
/// # Errors
/// Usage, data, training, calibration and write errors.
pub fn run(args: &TrainArgs) -> Result<Fitted> {
    let opts = args.fit_options()?;
    let (channels, values) = load_training_rows(
        &args.data,
        &args.csv_options(),
        args.train_rows,
        args.train_fraction,
    )?;
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(u64::from(opts.train.epochs))
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} epoch {pos}/{len} [{bar:30}] {msg} ({elapsed}, ~{eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let mut last_val = None;
    let fitted = fit::fit(&values, &channels, &opts, &mut |p| {
        if p.val_loss.is_some() {
            last_val = p.val_loss;
            bar.set_position(u64::from(p.epoch));
        }
        let val = last_val.map(|v| format!(" val {v:.4}")).unwrap_or_default();
        bar.set_message(format!(
            "batch {}/{} loss {:.4}{val}",
            p.batch, p.batches, p.train_loss
        ));
    });
    bar.finish_and_clear();
    let fitted = fitted?;
    if let Some(path) = &args.plot {
        plot::plot_losses(path, &loss_points(&fitted.model.history), "training loss")?;
    }
    files::write_atomic(&args.out, &fitted.bytes)?;
    Ok(fitted)
}

/// Per-epoch losses in the form the loss plot takes.
#[must_use]
pub fn loss_points(history: &[EpochStats]) -> Vec<(usize, f32, Option<f32>)> {
    history
        .iter()
        .map(|e| (e.epoch as usize, e.train_loss, e.val_loss))
        .collect()
}
