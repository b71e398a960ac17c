//! `sensorae bench skab`: the Skoltech Anomaly Benchmark's outlier-detection protocol.
//!
//! Each of the 34 labelled files is its own problem: the first 400 rows are the training part
//! (the scaler and the model are fitted on them, the threshold comes from held-out windows at
//! their end), rows 400 on are the test part. F1, FAR and MAR are pointwise over the test rows
//! of all files together.

use std::path::{Path, PathBuf};

use sensorae::{Activation, DynDetector, ErrorMetric};

use crate::{
    commands::train::TrainArgs,
    data::{self, CsvOptions, Table},
    error::{Error, Result},
    fit::{self, FitOptions},
    inject,
    metrics::Confusion,
};

/// Rows of each file used for training.
pub const TRAIN_ROWS: usize = 400;

/// Rows of each piece the anomaly-free recording is cut into (`--anomaly-free`): about the
/// length of a labelled file (SKAB's 34 average 1,100 rows).
pub const PIECE_ROWS: usize = 1150;

/// The published SKAB leaderboard (outlier detection), from the SKAB README: name, F1, FAR %,
/// MAR %.
pub const LEADERBOARD: [(&str, f64, f64, f64); 6] = [
    ("Conv-AE", 0.78, 13.55, 28.02),
    ("MSET", 0.78, 39.73, 14.13),
    ("T-squared+Q (PCA)", 0.76, 26.62, 24.92),
    ("LSTM-AE", 0.74, 29.96, 25.92),
    ("Vanilla AE", 0.39, 2.59, 75.15),
    ("Isolation forest", 0.29, 2.56, 82.89),
];

/// How predictions are aligned with rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alignment {
    /// The streaming verdicts as `sensorae score` gives them.
    Causal,
    /// SKAB's notebooks: row i is flagged if the windows ending at rows i .. i+W-2 all exceed
    /// the threshold. Looks ahead; not causal.
    Leaderboard,
}

impl Alignment {
    /// Lowercase name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Alignment::Causal => "causal",
            Alignment::Leaderboard => "leaderboard",
        }
    }
}

/// One result row of the benchmark.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct BenchRow {
    /// Variant name, or `no-model` for the baseline.
    pub variant: String,
    /// `causal` or `leaderboard`.
    pub alignment: &'static str,
    /// F1 = TP / (TP + (FP + FN) / 2).
    pub f1: f64,
    /// False-alarm rate, percent.
    pub far: f64,
    /// Missed-alarm rate, percent.
    pub mar: f64,
}

/// The causal verdicts of one variant on one file's test rows (`--per-file`): where its false
/// alarms and misses come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FileRow {
    /// Variant name.
    pub variant: String,
    /// The file, relative to the data folder (`valve1/4.csv`).
    pub file: String,
    /// Anomalous rows alarmed.
    pub tp: u64,
    /// Normal rows alarmed.
    pub fp: u64,
    /// Anomalous rows missed.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// Normal rows not alarmed.
    pub tn: u64,
    /// The alarm was still on at the file's last row.
    pub alarm_at_end: bool,
}

/// The labelled files in the benchmark's order: `valve1`, `valve2`, `other`, numerically.
///
/// # Errors
/// [`Error::Read`] when a folder is missing.
pub fn skab_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for folder in ["valve1", "valve2", "other"] {
        let dir = root.join(folder);
        let entries = std::fs::read_dir(&dir).map_err(|source| Error::Read {
            path: dir.clone(),
            source,
        })?;
        let mut numbered: Vec<(u32, PathBuf)> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let n = p.file_stem()?.to_str()?.parse::<u32>().ok()?;
                (p.extension()? == "csv").then_some((n, p))
            })
            .collect();
        numbered.sort();
        files.extend(numbered.into_iter().map(|(_, p)| p));
    }
    Ok(files)
}

/// What one variant gave on the benchmark.
#[derive(Debug, Clone)]
pub struct VariantResult {
    /// Its rows under both alignments.
    pub rows: Vec<BenchRow>,
    /// The no-model baseline's rows, fitted with the same settings.
    pub baseline: Vec<BenchRow>,
    /// Its causal verdicts per file.
    pub files: Vec<FileRow>,
}

/// Per-row exceedance and alarm of one detector over a whole file.
struct Streamed {
    exceeds: Vec<bool>,
    alarms: Vec<bool>,
}

fn stream(bytes: &[u8], table: &Table) -> Result<Streamed> {
    let mut detector = DynDetector::from_bytes(bytes).map_err(|source| Error::Model {
        path: "<in memory>".into(),
        source,
    })?;
    let mut exceeds = Vec::with_capacity(table.rows());
    let mut alarms = Vec::with_capacity(table.rows());
    for i in 0..table.rows() {
        let v = detector.push(table.row(i));
        exceeds.push(v.score().is_some_and(|s| s.exceeds));
        alarms.push(v.is_alarm());
    }
    Ok(Streamed { exceeds, alarms })
}

/// SKAB's look-ahead rule: row i is flagged if the windows ending at rows i ..= i + w - 2 all
/// exceed; rows the rule cannot reach are not flagged.
#[must_use]
pub fn leaderboard_flags(exceeds: &[bool], window: usize) -> Vec<bool> {
    let span = window.saturating_sub(1).max(1);
    (0..exceeds.len())
        .map(|i| {
            exceeds
                .get(i..i + span)
                .is_some_and(|ws| ws.iter().all(|&e| e))
        })
        .collect()
}

/// Confusion counts of both alignments for one detector on one file's test rows, and whether
/// the alarm was on at the last row.
fn confusions(bytes: &[u8], table: &Table, window: usize) -> Result<([Confusion; 2], bool)> {
    let labels = table.labels.as_deref().unwrap_or(&[]);
    let s = stream(bytes, table)?;
    let lead = leaderboard_flags(&s.exceeds, window);
    let test = TRAIN_ROWS.min(labels.len())..labels.len();
    let labels = labels.get(test.clone()).unwrap_or(&[]);
    let at_end = s.alarms.last().copied().unwrap_or(false);
    Ok((
        [
            Confusion::from_alarms(s.alarms.get(test.clone()).unwrap_or(&[]), labels)?,
            Confusion::from_alarms(lead.get(test).unwrap_or(&[]), labels)?,
        ],
        at_end,
    ))
}

/// The no-model baseline of a fitted model: all weights zero and a linear output, so the
/// score is the squared distance of the normalised window from the training mean; same
/// normalisation, threshold rule and alarms.
fn baseline(opts: &FitOptions, fitted: &fit::Fitted, train: &[f32]) -> Result<Vec<u8>> {
    let mut model = fitted.model.clone();
    model.params.iter_mut().for_each(|p| *p = 0.0);
    model.layers.output = Activation::Linear;
    model.loss = ErrorMetric::Mse;
    model.scaling = sensorae::Scaling::Standard;
    let opts = FitOptions {
        name: "no-model".to_owned(),
        ..opts.clone()
    };
    Ok(fit::calibrate_model(model, train, &opts)?.bytes)
}

/// Runs the protocol for one variant's settings on `files` (under `root`); returns its rows,
/// the baseline's and its per-file verdicts.
///
/// # Errors
/// Data, training and calibration errors naming the file.
pub fn run_variant(
    root: &Path,
    files: &[PathBuf],
    opts: &FitOptions,
    progress: &mut dyn FnMut(&Path),
) -> Result<VariantResult> {
    let mut tables = Vec::with_capacity(files.len());
    for path in files {
        let table = data::read_csv(path, &CsvOptions::skab())?;
        let name = path
            .strip_prefix(root)
            .unwrap_or(path)
            .display()
            .to_string();
        tables.push((name, table));
    }
    run_tables(&tables, opts, progress)
}

/// Runs the protocol for one variant's settings on labelled tables, each named for the
/// per-file rows; returns its rows, the baseline's and its per-table verdicts.
///
/// # Errors
/// Training and calibration errors naming the table's file.
pub fn run_tables(
    tables: &[(String, Table)],
    opts: &FitOptions,
    progress: &mut dyn FnMut(&Path),
) -> Result<VariantResult> {
    let mut ours = [Confusion::default(); 2];
    let mut base = [Confusion::default(); 2];
    let mut per_file = Vec::with_capacity(tables.len());
    let window = usize::from(opts.train.window);
    let variant = opts.train.variant.name();
    for (name, table) in tables {
        let path = &table.path;
        progress(path);
        let c = table.channels.len();
        let train = table
            .values
            .get(..TRAIN_ROWS.min(table.rows()) * c)
            .unwrap_or(&[]);
        let fitted =
            fit::fit(train, &table.channels, opts, &mut |_| {}).map_err(|e| Error::Mismatch {
                path: path.clone(),
                message: e.to_string(),
            })?;
        let ([a, b], alarm_at_end) = confusions(&fitted.bytes, table, window)?;
        ours[0] += a;
        ours[1] += b;
        per_file.push(FileRow {
            variant: variant.to_owned(),
            file: name.clone(),
            tp: a.tp,
            fp: a.fp,
            fn_: a.fn_,
            tn: a.tn,
            alarm_at_end,
        });
        let base_bytes = baseline(opts, &fitted, train)?;
        let ([a, b], _) = confusions(&base_bytes, table, window)?;
        base[0] += a;
        base[1] += b;
    }
    let rows = |name: &str, cs: [Confusion; 2]| {
        [Alignment::Causal, Alignment::Leaderboard]
            .into_iter()
            .zip(cs)
            .map(|(al, c)| BenchRow {
                variant: name.to_owned(),
                alignment: al.name(),
                f1: c.f1().unwrap_or(0.0),
                far: 100.0 * c.false_alarm_rate().unwrap_or(0.0),
                mar: 100.0 * c.missed_alarm_rate().unwrap_or(0.0),
            })
            .collect::<Vec<_>>()
    };
    Ok(VariantResult {
        rows: rows(variant, ours),
        baseline: rows("no-model", base),
        files: per_file,
    })
}

/// The anomaly-free recording (`anomaly-free/anomaly-free.csv` under `root`) cut into
/// consecutive pieces of [`PIECE_ROWS`] rows (the rest is dropped), each labelled normal
/// throughout: the same protocol on them measures false alarms only, without test labels.
///
/// # Errors
/// [`Error::Read`] or a data error when the file is missing or malformed.
pub fn anomaly_free_pieces(root: &Path) -> Result<Vec<(String, Table)>> {
    let path = root.join("anomaly-free").join("anomaly-free.csv");
    let opts = CsvOptions {
        label_column: None,
        ..CsvOptions::skab()
    };
    let table = data::read_csv(&path, &opts)?;
    let c = table.channels.len();
    let pieces = table.rows() / PIECE_ROWS;
    Ok((0..pieces)
        .map(|k| {
            let rows = k * PIECE_ROWS..(k + 1) * PIECE_ROWS;
            let piece = Table {
                path: table.path.clone(),
                channels: table.channels.clone(),
                values: table
                    .values
                    .get(rows.start * c..rows.end * c)
                    .unwrap_or(&[])
                    .to_vec(),
                labels: Some(vec![0; PIECE_ROWS]),
                times: table
                    .times
                    .as_ref()
                    .and_then(|t| t.get(rows.clone()))
                    .map(<[_]>::to_vec),
                lines: table.lines.get(rows.clone()).unwrap_or(&[]).to_vec(),
            };
            (format!("anomaly-free/{}-{}", rows.start, rows.end), piece)
        })
        .collect())
}

/// The benchmark's fixed settings for a variant, chosen before looking at any test result:
/// see the README's SKAB section for the reasoning.
///
/// # Errors
/// [`Error::Usage`] if the variant's knobs do not parse.
pub fn default_options(variant: &str) -> Result<FitOptions> {
    options(variant, &[])
}

/// A variant's [`default_options`] with `extra` `sensorae train` flags after them; a flag given
/// in both takes the value from `extra` (`--set` of `bench skab`).
///
/// # Errors
/// [`Error::Usage`] if the knobs do not parse.
pub fn options(variant: &str, extra: &[String]) -> Result<FitOptions> {
    use clap::Parser;
    #[derive(clap::Parser)]
    #[command(args_override_self = true)]
    struct Wrapper {
        #[command(flatten)]
        train: TrainArgs,
    }
    let mut argv = vec![
        "bench",
        "--data",
        "-",
        "--out",
        "skab.snae",
        "--variant",
        variant,
        "--window",
        "16",
        "--hidden",
        "32",
        "--latent",
        "8",
        "--epochs",
        "60",
        "--batch",
        "32",
        "--val-fraction",
        "0.25",
        "--patience",
        "10",
        // Rule v5 (README): threshold, alarm counts and drift rate chosen on the anomaly-free
        // pieces with injected anomalies (`scripts/skab-inject-sweep.py`); v3 was sigma:3,
        // 2/8, 0.1.
        "--threshold",
        "sigma:5",
        "--aggregate",
        "max-channel",
        "--alarm-on",
        "2",
        "--alarm-off",
        "4",
        "--adapt-rate",
        "0.05",
        "--seed",
        "0",
    ];
    match variant {
        "denoising" => argv.extend(["--noise", "gaussian:0.1"]),
        "sparse" => argv.extend(["--l1-code", "1e-3"]),
        "contractive" => argv.extend(["--contractive", "1e-3"]),
        "vae" => argv.extend(["--beta", "0.1"]),
        // 32 codes for 34 small training sets of ~300 windows; the score adds the mean squared
        // code distance per code dimension (1/Z with Z = 8).
        "vqvae" => argv.extend([
            "--codebook",
            "32",
            "--commitment",
            "0.25",
            "--distance-weight",
            "0.125",
        ]),
        // Hide half the channels: the model must predict channels from the others, which is
        // what a broken sensor relationship violates.
        "masked" => argv.extend(["--mask", "channel", "--mask-ratio", "0.5"]),
        // Blocks of 4 of the 16 steps: the coarse path sees 4 means per channel (32 values),
        // the fine path (the 32/8 network above) the rest; both errors weighted 1, so the
        // objective is the plain MSE and the two scales differ only in their structure.
        "hierarchical" => argv.extend([
            "--block",
            "4",
            "--coarse-hidden",
            "16",
            "--coarse-latent",
            "4",
        ]),
        _ => {}
    }
    argv.extend(extra.iter().map(String::as_str));
    // Clap's message runs over several lines (usage, help hint); the first says what is wrong.
    let w = Wrapper::try_parse_from(argv).map_err(|e| {
        let text = e.to_string();
        let first = text.lines().next().unwrap_or_default();
        Error::Usage(format!(
            "{variant}: {}",
            first.trim_start_matches("error: ")
        ))
    })?;
    let mut opts = w.train.fit_options()?;
    opts.name = format!("skab-{variant}");
    Ok(opts)
}

/// Arguments of `sensorae bench skab`.
#[derive(Debug, clap::Args)]
pub struct SkabArgs {
    /// The SKAB data folder (holding valve1, valve2 and other).
    #[arg(long, default_value = "../shared/data/skab")]
    pub data: PathBuf,
    /// Variants to run, comma-separated: ae, sparse, denoising, contractive, vae, vqvae,
    /// masked, hierarchical.
    #[arg(long, value_delimiter = ',', default_value = "ae")]
    pub variant: Vec<String>,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also each file's causal verdicts: true and false alarms, misses, and whether the alarm
    /// was still on at the file's end (with `--json`, one object per file and variant).
    #[arg(long)]
    pub per_file: bool,
    /// Extra `sensorae train` flags for every variant, after its defaults (which they
    /// override), as one string: `--set '--adapt-rate 0.01 --ewma 0.5'`.
    #[arg(long, allow_hyphen_values = true)]
    pub set: Option<String>,
    /// Instead of the labelled files, the anomaly-free recording cut into pieces of 1,150
    /// rows, each run like a labelled file: every alarm after its first 400 rows is false, so
    /// this measures the false-alarm rate without looking at any test label (how the README's
    /// rules were selected).
    #[arg(long)]
    pub anomaly_free: bool,
    /// With `--anomaly-free`: inject one synthetic anomaly of 200 rows into each piece's test
    /// part (level shift, ramp, noise burst or stuck-at, by piece; `inject` module) and label
    /// it, so F1 and misses can be measured too, still without any SKAB test label.
    #[arg(long, requires = "anomaly_free")]
    pub inject: bool,
}

/// The per-file table of `--per-file`.
fn print_files(files: &[FileRow]) {
    let width = files
        .iter()
        .map(|f| f.file.len())
        .max()
        .unwrap_or(0)
        .max(16);
    println!("causal verdicts per file (test rows):");
    println!(
        "{:<14} {:<width$} {:>5} {:>5} {:>5} {:>5}  alarm at end",
        "variant", "file", "TP", "FP", "FN", "TN"
    );
    for f in files {
        println!(
            "{:<14} {:<width$} {:>5} {:>5} {:>5} {:>5}  {}",
            f.variant,
            f.file,
            f.tp,
            f.fp,
            f.fn_,
            f.tn,
            if f.alarm_at_end { "yes" } else { "" }
        );
    }
    let at_end = files.iter().filter(|f| f.alarm_at_end).count();
    println!(
        "{at_end} of {} (file, variant) runs end in alarm",
        files.len()
    );
}

/// The F1 / FAR / MAR table.
fn print_rows(rows: &[BenchRow]) {
    println!(
        "{:<20} {:<12} {:>6} {:>8} {:>8}",
        "variant", "alignment", "F1", "FAR %", "MAR %"
    );
    for r in rows {
        println!(
            "{:<20} {:<12} {:>6.3} {:>8.2} {:>8.2}",
            r.variant, r.alignment, r.f1, r.far, r.mar
        );
    }
}

/// Runs `sensorae bench skab` and prints its rows.
///
/// # Errors
/// Data, training and calibration errors naming the file.
pub fn run(args: &SkabArgs) -> Result<()> {
    let tables = if args.anomaly_free && args.inject {
        inject::inject_pieces(anomaly_free_pieces(&args.data)?, TRAIN_ROWS)?
    } else if args.anomaly_free {
        anomaly_free_pieces(&args.data)?
    } else {
        let files = skab_files(&args.data)?;
        if files.len() != 34 {
            return Err(Error::Usage(format!(
                "{}: expected the 34 labelled SKAB files in valve1, valve2 and other, found {}",
                args.data.display(),
                files.len()
            )));
        }
        let mut tables = Vec::with_capacity(files.len());
        for path in &files {
            let name = path
                .strip_prefix(&args.data)
                .unwrap_or(path)
                .display()
                .to_string();
            tables.push((name, data::read_csv(path, &CsvOptions::skab())?));
        }
        tables
    };
    let extra: Vec<String> = args
        .set
        .as_deref()
        .unwrap_or("")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut rows = Vec::new();
    let mut baseline_rows = Vec::new();
    let mut file_rows = Vec::new();
    let live = !args.json && std::io::IsTerminal::is_terminal(&std::io::stderr());
    for variant in &args.variant {
        let opts = options(variant, &extra)?;
        let started = std::time::Instant::now();
        let result = run_tables(&tables, &opts, &mut |p| {
            if live {
                eprint!("\r{variant}: {:<40}", p.display());
            }
        })?;
        if live {
            eprint!("\r");
        }
        if !args.json {
            eprintln!(
                "{variant}: {} files in {:.1} s{:40}",
                tables.len(),
                started.elapsed().as_secs_f64(),
                ""
            );
        }
        rows.extend(result.rows);
        if baseline_rows.is_empty() {
            baseline_rows = result.baseline;
        }
        file_rows.extend(result.files);
    }
    rows.extend(baseline_rows);
    if args.json {
        for r in &rows {
            println!("{}", serde_json::to_string(r).unwrap_or_default());
        }
        if args.per_file {
            for f in &file_rows {
                println!("{}", serde_json::to_string(f).unwrap_or_default());
            }
        }
        return Ok(());
    }
    if args.per_file {
        print_files(&file_rows);
    }
    if args.inject {
        println!(
            "SKAB anomaly-free recording with injected anomalies, {} pieces of {PIECE_ROWS} rows, first {TRAIN_ROWS} of each for training, one injected anomaly of {} rows in each test part, pointwise over the test rows",
            tables.len(),
            inject::SEGMENT_ROWS
        );
        print_rows(&rows);
        println!(
            "injected anomalies, not SKAB's: not comparable with the published leaderboard. `causal` is what `sensorae score` does live; `leaderboard` flags a row only if the next W-1 windows exceed too, so it is not causal."
        );
        return Ok(());
    }
    if args.anomaly_free {
        println!(
            "SKAB anomaly-free recording, {} pieces of {PIECE_ROWS} rows, first {TRAIN_ROWS} of each for training; every alarm on the other rows is false",
            tables.len()
        );
        println!("{:<20} {:<12} {:>8}", "variant", "alignment", "FAR %");
        for r in &rows {
            println!("{:<20} {:<12} {:>8.2}", r.variant, r.alignment, r.far);
        }
        return Ok(());
    }
    println!(
        "SKAB outlier detection, 34 files, first {TRAIN_ROWS} rows of each for training, pointwise over the test rows"
    );
    print_rows(&rows);
    println!(
        "published leaderboard (SKAB README; its alignment looks ahead like `leaderboard` above):"
    );
    for (name, f1, far, mar) in LEADERBOARD {
        println!(
            "{name:<20} {:<12} {f1:>6.2} {far:>8.2} {mar:>8.2}",
            "published"
        );
    }
    println!(
        "`causal` is what `sensorae score` does live; `leaderboard` flags a row only if the next W-1 windows exceed too, so it is not causal."
    );
    Ok(())
}
