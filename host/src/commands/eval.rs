//! `sensorae eval`: detection metrics of a model on a labelled file.

use std::path::PathBuf;

use crate::{
    commands::score::{ReadArgs, score_file},
    error::{Error, Result},
    metrics,
};

/// Arguments of `sensorae eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// Model file.
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled CSV file with the model's channels as columns.
    #[arg(long)]
    pub data: PathBuf,
    /// Column of 0/1 anomaly labels.
    #[arg(long, default_value = "anomaly")]
    pub label_column: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Reading options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Scores the file and computes the metrics, pointwise on the rows that have a score.
///
/// # Errors
/// As `score`, and [`Error::Mismatch`] when no row has a score.
pub fn evaluate(args: &EvalArgs) -> Result<metrics::Report> {
    let (_, table, verdicts) = score_file(
        &args.model,
        &args.data,
        &args.read,
        Some(args.label_column.clone()),
    )?;
    let labels = table.labels.as_deref().unwrap_or(&[]);
    let scores: Vec<Option<f32>> = verdicts.iter().map(|v| v.score).collect();
    let alarms: Vec<bool> = verdicts.iter().map(|v| v.alarm).collect();
    if scores.iter().all(Option::is_none) {
        return Err(Error::Mismatch {
            path: args.data.clone(),
            message:
                "no row was scored: the file is shorter than one window or every window has a fault"
                    .to_owned(),
        });
    }
    Ok(metrics::evaluate(&scores, &alarms, labels)?)
}

/// Runs `sensorae eval`.
///
/// # Errors
/// As [`evaluate`].
pub fn run(args: &EvalArgs) -> Result<()> {
    let report = evaluate(args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        print!("{}", describe(&report));
    }
    Ok(())
}

fn percent(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{:.2} %", 100.0 * v))
}

fn fixed(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.4}"))
}

/// The table `eval` prints.
#[must_use]
pub fn describe(r: &metrics::Report) -> String {
    let c = &r.confusion;
    let delay = r
        .mean_delay_rows
        .map_or_else(|| "n/a".to_owned(), |d| format!("{d:.1} rows"));
    format!(
        "rows scored        {} of {}\n\
         TP / FP / TN / FN  {} / {} / {} / {}\n\
         precision          {}\n\
         recall             {}\n\
         F1                 {}\n\
         false-alarm rate   {}\n\
         missed-alarm rate  {}\n\
         ROC-AUC            {}\n\
         PR-AUC (AP)        {}\n\
         anomalies          {} detected, {} missed of {}\n\
         mean delay         {delay}\n",
        r.scored_rows,
        r.rows,
        c.tp,
        c.fp,
        c.tn,
        c.fn_,
        fixed(r.precision),
        fixed(r.recall),
        fixed(r.f1),
        percent(r.false_alarm_rate),
        percent(r.missed_alarm_rate),
        fixed(r.roc_auc),
        fixed(r.average_precision),
        r.detected_segments,
        r.missed_segments,
        r.segments,
    )
}
