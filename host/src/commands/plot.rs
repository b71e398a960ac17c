//! `sensorae plot`: channels, score, threshold, alarms and labels in one PNG.

use std::path::PathBuf;

use crate::{
    commands::score::{ReadArgs, score_file},
    error::Result,
    plot::{self, ScorePlot},
};

/// Arguments of `sensorae plot`.
#[derive(Debug, clap::Args)]
pub struct PlotArgs {
    /// Model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV file with the model's channels as columns.
    #[arg(long)]
    pub data: PathBuf,
    /// PNG file to write.
    #[arg(long)]
    pub out: PathBuf,
    /// Column of 0/1 anomaly labels to shade, if the file has one.
    #[arg(long)]
    pub label_column: Option<String>,
    /// Reading options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Runs `sensorae plot`.
///
/// # Errors
/// As `score`, and plot errors naming the output file.
pub fn run(args: &PlotArgs) -> Result<()> {
    super::check_output_dir(&args.out)?;
    let (model, table, verdicts) = score_file(
        &args.model,
        &args.data,
        &args.read,
        args.label_column.clone(),
    )?;
    let scores: Vec<Option<f32>> = verdicts.iter().map(|v| v.score).collect();
    let alarms: Vec<bool> = verdicts.iter().map(|v| v.alarm).collect();
    let title = format!("{} on {}", model.path.display(), table.path.display());
    plot::plot_scores(
        &args.out,
        &ScorePlot {
            channels: &table.channels,
            values: &table.values,
            scores: &scores,
            threshold: model.detector.config().threshold.value,
            alarms: &alarms,
            labels: table.labels.as_deref(),
            title: &title,
        },
    )?;
    Ok(())
}
