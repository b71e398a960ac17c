//! The command line's commands; `main.rs` parses them with clap and calls [`run`].

pub mod bench;
pub mod bench_pipeline;
pub mod demo;
pub mod eval;
pub mod inspect;
pub mod plot;
pub mod score;
pub mod train;

use std::path::PathBuf;

use crate::error::{Error, Result};

/// `sensorae`: train, calibrate, evaluate and inspect streaming autoencoder anomaly detectors.
#[derive(Debug, clap::Parser)]
#[command(name = "sensorae", version, about, long_about = None)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// One command.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Train a model on CSV data, calibrate its threshold and write a model file.
    Train(Box<train::TrainArgs>),
    /// Score a CSV file: one verdict per row.
    Score(score::ScoreArgs),
    /// Score a labelled CSV file and report detection metrics.
    Eval(eval::EvalArgs),
    /// Describe a model file and verify its checksum.
    Inspect(inspect::InspectArgs),
    /// Plot channels, score, threshold and alarms of a CSV file.
    Plot(plot::PlotArgs),
    /// Generate pump-like data with injected anomalies, train, score and report what was caught.
    Demo(demo::DemoArgs),
    /// Score live sensor streams (CSV replay, stdin, MQTT) on worker threads.
    Stream(Box<crate::pipeline::cli::StreamArgs>),
    /// Run a benchmark.
    Bench {
        /// Which benchmark.
        #[command(subcommand)]
        which: BenchCommand,
    },
}

/// Benchmarks.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// The Skoltech Anomaly Benchmark (outlier detection protocol).
    Skab(bench::SkabArgs),
    /// The streaming pipeline's load figure: synthetic streams through the pipeline, and the
    /// same samples scored without it.
    Pipeline(bench_pipeline::PipelineArgs),
}

/// Runs a parsed command line, printing results to standard output.
///
/// # Errors
/// The command's error; [`Error::exit_code`] gives the process exit code.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => {
            let fitted = train::run(&args)?;
            let m = &fitted.model;
            println!(
                "wrote {} ({} bytes): {} epochs, validation loss {}, threshold {} ({} held-out windows)",
                args.out.display(),
                fitted.bytes.len(),
                m.summary.epochs,
                m.summary.val_loss,
                fitted.calibration.threshold,
                fitted.calibration_scores.len()
            );
            Ok(())
        }
        Command::Score(args) => score::run(&args),
        Command::Eval(args) => eval::run(&args),
        Command::Inspect(args) => {
            print!("{}", inspect::run(&args)?);
            Ok(())
        }
        Command::Plot(args) => plot::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Stream(args) => Ok(crate::pipeline::cli::run(&args)?),
        Command::Bench {
            which: BenchCommand::Skab(args),
        } => bench::run(&args),
        Command::Bench {
            which: BenchCommand::Pipeline(args),
        } => bench_pipeline::run(&args),
    }
}

/// Checks that an output path's directory exists, before long work starts.
///
/// # Errors
/// [`Error::Usage`] naming the missing directory.
pub fn check_output_dir(path: &std::path::Path) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    if dir.is_dir() {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{}: the directory {} does not exist",
            path.display(),
            dir.display()
        )))
    }
}
