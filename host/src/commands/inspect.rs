//! `sensorae inspect`: what is in a model file.

use std::{fmt::Write as _, path::PathBuf};

use sensorae::{ModelView, ThresholdMethod};

use crate::{
    error::{Error, Result},
    files,
};

/// Arguments of `sensorae inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Model file to describe (its checksum is verified).
    pub model: PathBuf,
    /// Also write the model decoded as Rust source, `pub static MODEL: sensorae::Decoded`, for
    /// firmware to `include!` and load with `load_decoded` without a model reader (what
    /// firmware/build.rs does at build time).
    #[arg(long, value_name = "FILE")]
    pub rust: Option<PathBuf>,
    /// The `target_arch` whose kernel layout `--rust` writes the parameters in: `arm` for
    /// Cortex-M, anything else for 64-bit hosts.
    #[arg(long, default_value = "arm", requires = "rust")]
    pub target_arch: String,
}

/// Describes a model file in a few aligned lines.
///
/// # Errors
/// [`Error::Read`] or [`Error::Model`] naming the file.
pub fn run(args: &InspectArgs) -> Result<String> {
    let bytes = files::read(&args.model)?;
    let view = ModelView::from_bytes(&bytes).map_err(|e| Error::Model {
        path: args.model.clone(),
        source: e.into(),
    })?;
    if let Some(out) = &args.rust {
        files::write_atomic(out, view.to_rust("MODEL", &args.target_arch).as_bytes())?;
    }
    Ok(describe(&view, bytes.len()))
}

/// The description `inspect` prints.
#[must_use]
pub fn describe(view: &ModelView<'_>, file_bytes: usize) -> String {
    let h = view.header();
    let l = &h.layers;
    let n = h.input();
    let p = h.param_count();
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:<14} {v}");
    };
    line("name", h.name.to_owned());
    line(
        "variant",
        format!(
            "{}{} ({:?} inference)",
            h.variant.name(),
            if h.tied { ", tied weights" } else { "" },
            h.arch()
        ),
    );
    line(
        "sizes",
        format!(
            "{} channels x window {} (hop {}) = {n} -> {} -> {} -> {} -> {n}",
            h.window.channels, h.window.length, h.window.hop, l.hidden, l.latent, l.hidden
        ),
    );
    if let sensorae::Variant::Hierarchical {
        block,
        coarse_hidden,
        coarse_latent,
    } = h.variant
    {
        // The gains are the last two parameters, [g_c, g_f].
        let gains: Vec<f32> = view
            .weights()
            .skip(p.saturating_sub(sensorae::GAINS))
            .collect();
        let nc = n / usize::from(block).max(1);
        line(
            "scales",
            format!(
                "fine (above) on the window minus its block means; coarse on the means of \
                 blocks of {block} steps = {nc} -> {coarse_hidden} -> {coarse_latent} -> \
                 {coarse_hidden} -> {nc}; gains coarse {:?}, fine {:?}",
                gains.first().copied().unwrap_or(f32::NAN),
                gains.get(1).copied().unwrap_or(f32::NAN),
            ),
        );
    }
    line(
        "activations",
        format!(
            "encoder {:?}, code {:?}, decoder {:?}, output {:?}",
            l.encoder_hidden, l.code, l.decoder_hidden, l.output
        ),
    );
    line(
        "parameters",
        format!("{p} ({} bytes of f32 weights)", p * 4),
    );
    line(
        "file",
        format!(
            "{file_bytes} bytes, format v{}, CRC-32 verified",
            sensorae::FORMAT_VERSION
        ),
    );
    // What a firmware engineer types: the fixed detector's sizes and the core's features.
    let scratch = h.scratch_len();
    let features: Vec<&str> = h.features().collect();
    line(
        "device",
        format!(
            "Detector<{}, {}, {n}, {}, {}, {p}{}>, sensorae features: {}",
            h.window.channels,
            h.window.length,
            l.hidden,
            l.latent,
            if scratch > 0 {
                format!(", {scratch}")
            } else {
                String::new()
            },
            if features.is_empty() {
                "none (default-features = false)".to_owned()
            } else {
                features.join(", ")
            }
        ),
    );
    line("scaling", format!("{:?}", h.scaling));
    let sc = &h.scoring;
    let mut scoring = format!(
        "{:?} entries, {:?} over the window",
        sc.metric, sc.aggregate
    );
    if sc.kl_weight > 0.0 {
        let term = if matches!(h.variant, sensorae::Variant::VqVae { .. }) {
            "squared code distance"
        } else {
            "KL"
        };
        let _ = write!(scoring, ", + {} x {term}", sc.kl_weight);
    }
    if sc.ewma < 1.0 {
        let _ = write!(scoring, ", EWMA alpha {}", sc.ewma);
    }
    line("scoring", scoring);
    let how = match h.threshold.method {
        ThresholdMethod::Fixed => "set by hand".to_owned(),
        ThresholdMethod::Quantile { q } => format!("quantile {q}"),
        ThresholdMethod::Sigma { k } => format!("mean + {k} sigma"),
        ThresholdMethod::Pot {
            risk,
            initial_quantile,
        } => format!("peaks over threshold, risk {risk:e}, initial quantile {initial_quantile}"),
    };
    line(
        "threshold",
        format!(
            "{} ({how}, on {} held-out windows)",
            h.threshold.value, h.threshold.calibration_windows
        ),
    );
    line(
        "alarm",
        format!(
            "on after {} exceeding windows, off after {} normal ones",
            h.alarm.on_after, h.alarm.off_after
        ),
    );
    line(
        "faults",
        if h.faults.hold_max == 0 {
            "a faulty sample restarts the window".to_owned()
        } else {
            format!(
                "hold the last valid value for up to {} samples, then restart",
                h.faults.hold_max
            )
        },
    );
    line(
        "drift",
        if h.adaptation.rate > 0.0 {
            format!(
                "baselines follow level drift at rate {}{}",
                h.adaptation.rate,
                match h.adaptation.in_alarm {
                    sensorae::AlarmHold::Follow => ", also while the alarm is on",
                    sensorae::AlarmHold::All => ", all held while the alarm is on",
                    sensorae::AlarmHold::Explaining => {
                        ", those of the channels explaining an alarm held while it is on"
                    }
                }
            )
        } else {
            "not tracked".to_owned()
        },
    );
    let t = &h.training;
    line(
        "training",
        format!(
            "{} epochs, train loss {}, validation loss {}, {} rows ({} train / {} validation windows), seed {}",
            t.epochs, t.train_loss, t.val_loss, t.rows, t.train_windows, t.val_windows, t.seed
        ),
    );
    let _ = writeln!(s, "channels:");
    for (i, c) in view.channels().enumerate() {
        let range = if c.min.is_finite() || c.max.is_finite() {
            format!(", valid [{}, {}]", c.min, c.max)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "  {i:>2} {:<24} offset {}, scale {}{range}",
            c.name, c.offset, c.scale
        );
    }
    s
}
