//! Train, calibrate the threshold on held-out windows, and produce a model file: the workflow
//! behind `sensorae train`, `sensorae demo` and `sensorae bench skab`.

use sensorae::{
    Activation, AlarmSpec, Arch, DynDetector, ErrorMetric, FaultPolicy, Scoring, Threshold,
    ThresholdMethod,
};

use crate::{
    calibrate::{self, Calibration, Method},
    error::{Error, Result},
    train::{self, Deployment, Progress, TrainConfig, TrainedModel},
};

/// How a model is scored and alarmed once trained.
#[derive(Debug, Clone, PartialEq)]
pub struct FitOptions {
    /// Model name written into the file.
    pub name: String,
    /// Training settings.
    pub train: TrainConfig,
    /// Window aggregate, smoothing and VAE KL weight (the metric is the training loss).
    pub aggregate: sensorae::Aggregate,
    /// EWMA factor in `(0, 1]`; 1 is off.
    pub ewma: f32,
    /// VAE: weight of the KL term in the score.
    pub kl_weight: f32,
    /// Threshold calibration method.
    pub threshold: Method,
    /// Alarm hysteresis.
    pub alarm: AlarmSpec,
    /// Sensor-fault recovery.
    pub faults: FaultPolicy,
    /// Valid physical range per channel, if known.
    pub ranges: Option<Vec<(f32, f32)>>,
    /// Drift tracking of the channel levels.
    pub adaptation: sensorae::Adaptation,
    /// Per-channel error normalisation.
    pub error_scale: ErrorScale,
}

/// Per-channel error normalisation: each channel's window error is divided by that channel's
/// mean window error on normal windows of the training part, so that a channel the model always
/// reconstructs poorly does not dominate the score (per-feature residual standardisation, as in
/// T²/Q and MSET detectors).
///
/// It needs no field in the model file: the divisor `d` is folded into the channel's scale
/// (times `sqrt(d)` for MSE, `d` for MAE), the first layer's inputs of that channel (times the
/// same factor) and the output layer's outputs of that channel (divided by it), so the network
/// computes the same function of the raw input and its reconstruction of the channel comes out
/// divided by the factor. That is exact for a linear output layer; models with another output
/// activation, tied weights or the hierarchical architecture are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ErrorScale {
    /// No normalisation.
    #[default]
    Off,
    /// Divisors from the held-out windows the threshold is calibrated on.
    HeldOut,
    /// Divisors from the training windows (in-sample).
    Train,
}

impl std::str::FromStr for ErrorScale {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "off" => Ok(ErrorScale::Off),
            "held-out" => Ok(ErrorScale::HeldOut),
            "train" => Ok(ErrorScale::Train),
            _ => Err(format!(
                "unknown error scale `{s}`: expected off, held-out or train"
            )),
        }
    }
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            name: "sensorae".to_owned(),
            train: TrainConfig::default(),
            aggregate: sensorae::Aggregate::Mean,
            ewma: 1.0,
            kl_weight: 0.0,
            threshold: Method::Quantile { q: 0.99 },
            alarm: AlarmSpec {
                on_after: 1,
                off_after: 1,
            },
            faults: FaultPolicy { hold_max: 0 },
            ranges: None,
            adaptation: sensorae::Adaptation::OFF,
            error_scale: ErrorScale::Off,
        }
    }
}

/// A trained and calibrated model.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The model file.
    pub bytes: Vec<u8>,
    /// What training produced.
    pub model: TrainedModel,
    /// The threshold and how it was found.
    pub calibration: Calibration,
    /// The held-out scores it was calibrated on.
    pub calibration_scores: Vec<f32>,
}

impl FitOptions {
    fn scoring(&self, model: &TrainedModel) -> Scoring {
        Scoring {
            metric: model.loss,
            aggregate: self.aggregate,
            kl_weight: self.kl_weight,
            ewma: self.ewma,
        }
    }

    fn encode(&self, model: &TrainedModel, threshold: Threshold) -> Result<Vec<u8>> {
        Ok(model.encode(&Deployment {
            name: &self.name,
            scoring: self.scoring(model),
            threshold,
            alarm: self.alarm,
            faults: self.faults,
            adaptation: self.adaptation,
            ranges: self.ranges.as_deref(),
        })?)
    }
}

/// Scores rows `rows` of `data` (row-major, `channels` wide) with a model file and returns the
/// fresh window scores, as the detector would emit them.
#[must_use]
pub fn window_scores(bytes: &[u8], data: &[f32], channels: usize) -> Vec<f32> {
    let Ok(mut detector) = DynDetector::from_bytes(bytes) else {
        return Vec::new();
    };
    data.chunks_exact(channels.max(1))
        .filter_map(|row| {
            detector
                .push(row)
                .score()
                .filter(|s| s.fresh)
                .map(|s| s.value)
        })
        .collect()
}

/// Mean per-channel error of the fresh windows of `data` (row-major, `channels` wide) under a
/// model file, as the detector computes it (drift tracking included); empty if the model does
/// not load or no window is scored.
#[must_use]
pub fn mean_channel_errors(bytes: &[u8], data: &[f32], channels: usize) -> Vec<f32> {
    let Ok(mut detector) = DynDetector::from_bytes(bytes) else {
        return Vec::new();
    };
    let mut sums = vec![0.0f64; channels];
    let mut n = 0u32;
    for row in data.chunks_exact(channels.max(1)) {
        if detector.push(row).score().is_some_and(|s| s.fresh) {
            for (sum, &e) in sums.iter_mut().zip(detector.channel_errors()) {
                *sum += f64::from(e);
            }
            n += 1;
        }
    }
    if n == 0 {
        return Vec::new();
    }
    sums.iter().map(|&s| (s / f64::from(n)) as f32).collect()
}

/// Folds per-channel error divisors `divisors` into a trained model (see [`ErrorScale`]):
/// afterwards channel `c`'s window error is the former one divided by `divisors[c]`. A
/// divisor that is not finite and positive leaves its channel alone.
///
/// # Errors
/// [`Error::Usage`] for a model whose output activation is not linear, a tied or hierarchical
/// model, a BCE model, or a divisor count that is not the channel count.
pub fn fold_error_scales(model: &mut TrainedModel, divisors: &[f32]) -> Result<()> {
    let c = model.channels.len();
    if divisors.len() != c {
        return Err(Error::Usage(format!(
            "error scales: {} divisors for {c} channels",
            divisors.len()
        )));
    }
    if model.layers.output != Activation::Linear {
        return Err(Error::Usage(
            "error scales need a linear output layer".to_owned(),
        ));
    }
    if !matches!(model.arch(), Arch::Dense | Arch::Vae | Arch::VqVae { .. }) {
        return Err(Error::Usage(format!(
            "error scales need separate first and last layers; not for a {} model",
            if model.tied {
                "tied"
            } else {
                model.variant.name()
            }
        )));
    }
    let factors: Vec<f32> = divisors
        .iter()
        .map(|&d| {
            let d = if d.is_finite() && d > 0.0 { d } else { 1.0 };
            match model.loss {
                ErrorMetric::Mse => Ok(d.sqrt()),
                ErrorMetric::Mae => Ok(d),
                ErrorMetric::Bce => Err(Error::Usage(
                    "error scales need an MSE or MAE model".to_owned(),
                )),
            }
        })
        .collect::<Result<_>>()?;
    let n = c * usize::from(model.window.length);
    let h = model.layers.hidden as usize;
    let p = model.params.len();
    if p != model.arch_param_count() || p < n * h + n + n * h {
        return Err(Error::Usage(
            "error scales: the parameters do not match the model's sizes".to_owned(),
        ));
    }
    // W1 (H x N, column-major) is first: input j's column is params[j H .. (j + 1) H]. The
    // last layer W4 (N x H), then b4 (N), end every dense, VAE and VQ-VAE layout.
    let w4 = p - n - n * h;
    let b4 = p - n;
    for j in 0..n {
        let f = factors[j % c];
        for w in &mut model.params[j * h..(j + 1) * h] {
            *w *= f;
        }
        for k in 0..h {
            model.params[w4 + k * n + j] /= f;
        }
        model.params[b4 + j] /= f;
    }
    for (ch, f) in model.channels.iter_mut().zip(&factors) {
        ch.scale *= f;
    }
    Ok(())
}

/// Trains on `data` (`rows x channels.len()`, row-major), then calibrates the threshold with
/// [`calibrate_model`].
///
/// # Errors
/// Training, calibration (too few held-out windows for the method) and encoding errors.
pub fn fit(
    data: &[f32],
    channels: &[String],
    opts: &FitOptions,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Fitted> {
    let model = train::train(data, channels, &opts.train, progress)?;
    calibrate_model(model, data, opts)
}

/// Sets the threshold of a trained model from the scores of its held-out validation rows of
/// `data` (the end of the training data, which training never fitted), or of its training
/// rows when there is no validation part, and encodes the model file.
///
/// # Errors
/// Calibration (too few held-out windows for the method) and encoding errors.
pub fn calibrate_model(mut model: TrainedModel, data: &[f32], opts: &FitOptions) -> Result<Fitted> {
    let c = model.channels.len();
    let held_out = if model.val_rows.is_empty() {
        model.train_rows.clone()
    } else {
        model.val_rows.clone()
    };
    let rows_of = |r: &std::ops::Range<usize>| data.get(r.start * c..r.end * c).unwrap_or(&[]);
    // The model with a threshold nothing reaches: scored for its errors, never for alarms.
    let provisional = |m: &TrainedModel| {
        opts.encode(
            m,
            Threshold {
                value: f32::MAX,
                method: ThresholdMethod::Fixed,
                calibration_windows: 0,
            },
        )
    };
    if opts.error_scale != ErrorScale::Off {
        let from = match opts.error_scale {
            ErrorScale::Train => &model.train_rows,
            _ => &held_out,
        };
        let divisors = mean_channel_errors(&provisional(&model)?, rows_of(from), c);
        if !divisors.is_empty() {
            fold_error_scales(&mut model, &divisors)?;
        }
    }
    let provisional = provisional(&model)?;
    let rows = rows_of(&held_out);
    let scores = window_scores(&provisional, rows, c);
    let calibration = calibrate::calibrate(&scores, &opts.threshold)?;
    let bytes = opts.encode(
        &model,
        Threshold {
            value: calibration.threshold,
            method: calibration.method,
            calibration_windows: u32::try_from(scores.len()).unwrap_or(u32::MAX),
        },
    )?;
    Ok(Fitted {
        bytes,
        model,
        calibration,
        calibration_scores: scores,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 3 channels of 240 rows: two sines of different speeds and a noisy ramp.
    fn rows() -> Vec<f32> {
        (0..240)
            .flat_map(|t| {
                let t = t as f32;
                [
                    (t * 0.2).sin(),
                    10.0 * (t * 0.05).cos(),
                    0.01 * t + 0.3 * (t * 1.7).sin(),
                ]
            })
            .collect()
    }

    fn options(variant: sensorae::Variant, error_scale: ErrorScale) -> FitOptions {
        FitOptions {
            train: TrainConfig {
                variant,
                window: 6,
                hidden: 8,
                latent: 3,
                epochs: 5,
                val_fraction: 0.25,
                ..TrainConfig::default()
            },
            threshold: Method::Sigma { k: 3.0 },
            error_scale,
            ..FitOptions::default()
        }
    }

    fn names() -> Vec<String> {
        ["a", "b", "c"].map(str::to_owned).to_vec()
    }

    fn unscaled(model: &TrainedModel, opts: &FitOptions) -> Vec<u8> {
        opts.encode(
            model,
            Threshold {
                value: f32::MAX,
                method: ThresholdMethod::Fixed,
                calibration_windows: 0,
            },
        )
        .unwrap()
    }

    #[test]
    fn folded_divisors_divide_each_channel_error() {
        let data = rows();
        for (variant, loss) in [
            (sensorae::Variant::Plain, ErrorMetric::Mse),
            (sensorae::Variant::Plain, ErrorMetric::Mae),
            (sensorae::Variant::Vae, ErrorMetric::Mse),
            (sensorae::Variant::VqVae { codebook: 4 }, ErrorMetric::Mse),
        ] {
            let mut opts = options(variant, ErrorScale::Off);
            opts.train.loss = loss;
            let model = train::train(&data, &names(), &opts.train, &mut |_| {}).unwrap();
            let before = mean_channel_errors(&unscaled(&model, &opts), &data, 3);
            let divisors = [4.0, 1.0, 0.25];
            let mut folded = model.clone();
            fold_error_scales(&mut folded, &divisors).unwrap();
            let after = mean_channel_errors(&unscaled(&folded, &opts), &data, 3);
            for c in 0..3 {
                let want = before[c] / divisors[c];
                assert!(
                    (after[c] - want).abs() <= 1e-3 * want,
                    "{variant:?} {loss:?} channel {c}: {} -> {}, want {want}",
                    before[c],
                    after[c]
                );
            }
        }
    }

    #[test]
    fn held_out_scaling_gives_every_channel_mean_error_one_there() {
        let data = rows();
        let opts = options(sensorae::Variant::Plain, ErrorScale::HeldOut);
        let fitted = fit(&data, &names(), &opts, &mut |_| {}).unwrap();
        let val = &fitted.model.val_rows;
        let held_out = &data[val.start * 3..val.end * 3];
        let errors = mean_channel_errors(&fitted.bytes, held_out, 3);
        for (c, e) in errors.iter().enumerate() {
            assert!((e - 1.0).abs() < 1e-3, "channel {c}: {e}");
        }
        // Without it the channels' held-out errors differ: the scaling had something to do.
        let plain = fit(
            &data,
            &names(),
            &options(sensorae::Variant::Plain, ErrorScale::Off),
            &mut |_| {},
        )
        .unwrap();
        let raw = mean_channel_errors(&plain.bytes, held_out, 3);
        let spread = raw.iter().copied().fold(0.0f32, f32::max)
            / raw.iter().copied().fold(f32::MAX, f32::min);
        assert!(spread > 1.5, "{raw:?}");
    }

    #[test]
    fn architectures_it_cannot_fold_are_refused() {
        let data = rows();
        let mut opts = options(sensorae::Variant::Plain, ErrorScale::Off);
        opts.train.tied = true;
        let mut tied = train::train(&data, &names(), &opts.train, &mut |_| {}).unwrap();
        let e = fold_error_scales(&mut tied, &[1.0, 2.0, 3.0]).unwrap_err();
        assert!(e.to_string().contains("tied"), "{e}");
        opts.train.tied = false;
        opts.train.loss = ErrorMetric::Bce;
        opts.train.output = Activation::Sigmoid;
        let mut bce = train::train(&data, &names(), &opts.train, &mut |_| {}).unwrap();
        let e = fold_error_scales(&mut bce, &[1.0, 2.0, 3.0]).unwrap_err();
        assert!(e.to_string().contains("linear output"), "{e}");
        let mut plain = train::train(
            &data,
            &names(),
            &options(sensorae::Variant::Plain, ErrorScale::Off).train,
            &mut |_| {},
        )
        .unwrap();
        let e = fold_error_scales(&mut plain, &[1.0, 2.0]).unwrap_err();
        assert!(e.to_string().contains("2 divisors for 3 channels"), "{e}");
    }
}
