//! Train, calibrate the threshold on held-out windows, and produce a model file: the workflow
//! behind `sensorae train`, `sensorae demo` and `sensorae bench skab`.

use sensorae::{AlarmSpec, DynDetector, FaultPolicy, Scoring, Threshold, ThresholdMethod};

use crate::{
    calibrate::{self, Calibration, Method},
    error::Result,
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
pub fn calibrate_model(model: TrainedModel, data: &[f32], opts: &FitOptions) -> Result<Fitted> {
    let c = model.channels.len();
    let held_out = if model.val_rows.is_empty() {
        model.train_rows.clone()
    } else {
        model.val_rows.clone()
    };
    let rows = data
        .get(held_out.start * c..held_out.end * c)
        .unwrap_or(&[]);
    let provisional = opts.encode(
        &model,
        Threshold {
            value: f32::MAX,
            method: ThresholdMethod::Fixed,
            calibration_windows: 0,
        },
    )?;
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
