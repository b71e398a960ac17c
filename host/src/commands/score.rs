//! `sensorae score`: one verdict per input row.

use std::{io, path::PathBuf};

use crate::{
    data::{self, CsvOptions, Table},
    error::{Error, Result},
    files::{self, LoadedModel},
    scoring::{self, RowVerdict},
};

/// How to read a data file whose channels a model names.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReadArgs {
    /// Field delimiter (default: detected among comma, semicolon and tab).
    #[arg(long, value_parser = parse_delimiter)]
    pub delimiter: Option<u8>,
    /// Column with timestamps, kept out of the channels.
    #[arg(long)]
    pub time_column: Option<String>,
}

/// Parses `,`, `;`, `tab` or `\t`.
///
/// # Errors
/// A message naming the accepted delimiters.
pub fn parse_delimiter(s: &str) -> std::result::Result<u8, String> {
    match s {
        "tab" | "\\t" | "\t" => Ok(b'\t'),
        _ if s.len() == 1 && s.is_ascii() => Ok(s.as_bytes()[0]),
        _ => Err(format!(
            "expected one ASCII character or `tab`, found `{s}`"
        )),
    }
}

/// Arguments of `sensorae score`.
#[derive(Debug, clap::Args)]
pub struct ScoreArgs {
    /// Model file.
    #[arg(long)]
    pub model: PathBuf,
    /// CSV file with the model's channels as columns.
    #[arg(long)]
    pub data: PathBuf,
    /// Output CSV (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Reading options.
    #[command(flatten)]
    pub read: ReadArgs,
}

/// Reads `path` with the model's channels, and the label column if asked.
///
/// # Errors
/// [`Error::Data`] naming the file, line and column.
pub fn read_for_model(
    model: &LoadedModel,
    path: &std::path::Path,
    read: &ReadArgs,
    label_column: Option<String>,
) -> Result<Table> {
    let opts = CsvOptions {
        delimiter: read.delimiter,
        columns: Some(model.channel_names()),
        label_column,
        time_column: read.time_column.clone(),
    };
    let table = data::read_csv(path, &opts)?;
    scoring::check_channels(model, &table)?;
    Ok(table)
}

/// Scores a file and returns the verdicts with the loaded model.
///
/// # Errors
/// As [`LoadedModel::open`] and [`read_for_model`].
pub fn score_file(
    model_path: &std::path::Path,
    data_path: &std::path::Path,
    read: &ReadArgs,
    label_column: Option<String>,
) -> Result<(LoadedModel, Table, Vec<RowVerdict>)> {
    let mut model = LoadedModel::open(model_path)?;
    let table = read_for_model(&model, data_path, read, label_column)?;
    let verdicts = scoring::score_rows(&mut model.detector, &table);
    Ok((model, table, verdicts))
}

/// Runs `sensorae score`.
///
/// # Errors
/// As [`score_file`], and [`Error::Write`] for the output.
pub fn run(args: &ScoreArgs) -> Result<()> {
    let (model, table, verdicts) = score_file(&args.model, &args.data, &args.read, None)?;
    let threshold = model.detector.config().threshold.value;
    match &args.out {
        Some(path) => files::write_atomic_with(path, |w| {
            scoring::write_scores(w, &verdicts, threshold, &table.channels)
        }),
        None => {
            let stdout = io::stdout();
            let mut lock = io::BufWriter::new(stdout.lock());
            scoring::write_scores(&mut lock, &verdicts, threshold, &table.channels).map_err(
                |source| Error::Write {
                    path: "<stdout>".into(),
                    source,
                },
            )
        }
    }
}
