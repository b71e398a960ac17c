//! `sensorae stream`: the pipeline from the command line.

use core::time::Duration;
use std::{
    collections::HashSet,
    path::Path,
    sync::{Mutex, PoisonError},
};

use clap::{Args, ValueEnum};

use super::{
    Backpressure, Builder, CsvReplay, CsvSink, Emit, JsonLines, LineFormat, LinesSource, ModelMap,
    PipelineError, Running, StopFlag,
    mqtt::{MqttEndpoint, MqttSink, MqttSource, parse_shards},
};

/// Input format on standard input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StdinFormat {
    /// One JSON object per line: `{"stream":"pump-1","values":[...],"seq":7}`.
    Json,
    /// A header line, then rows; `--stream-column` names the stream of each row.
    Csv,
}

/// Which verdicts are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EmitArg {
    /// Every sample's verdict.
    All,
    /// Fresh scores, faults and alarm changes.
    Scored,
    /// Alarm changes and faults only.
    Alarms,
}

/// Score live sensor streams: read samples (CSV replay, stdin, MQTT), score each stream with its
/// model on worker threads, write verdicts (JSON lines, CSV, MQTT). Ctrl-C stops reading and
/// drains every queue; a second Ctrl-C exits at once.
#[derive(Debug, Clone, Args)]
pub struct StreamArgs {
    /// Model file for every stream, or `PATTERN=FILE` for streams whose id matches the glob
    /// (`pump-*=pump.snae`); repeat for several groups, the first match wins.
    #[arg(long = "model", value_name = "[PATTERN=]FILE", required = true)]
    pub models: Vec<String>,
    /// Replay a CSV file as one stream, named `STREAM` or after the file; repeatable.
    #[arg(long = "csv", value_name = "[STREAM=]FILE")]
    pub csv: Vec<String>,
    /// Replay a long-format CSV file whose `--stream-column` names each row's stream.
    #[arg(long = "long-csv", value_name = "FILE")]
    pub long_csv: Vec<String>,
    /// Column holding the stream id in long-format CSV (files and stdin).
    #[arg(long, value_name = "NAME", default_value = "stream")]
    pub stream_column: String,
    /// Read samples from standard input.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub stdin: Option<StdinFormat>,
    /// Subscribe to an MQTT broker at HOST:PORT (loopback or a trusted network; no TLS).
    #[arg(long, value_name = "HOST:PORT")]
    pub mqtt: Option<String>,
    /// Topic filter to subscribe to; repeatable (default `<prefix>/+/+`, or the owned shards).
    #[arg(long = "topic", value_name = "FILTER")]
    pub topics: Vec<String>,
    /// Topic prefix of sample topics `<prefix>/<shard>/<stream>`.
    #[arg(long, value_name = "PREFIX", default_value = "sensors")]
    pub topic_prefix: String,
    /// Shards this process owns, e.g. `0-3` or `0,2,4-5` (requires `--shard-count`).
    #[arg(long, value_name = "LIST", requires = "shard_count")]
    pub shards: Option<String>,
    /// Total number of shards across all processes.
    #[arg(long, value_name = "N")]
    pub shard_count: Option<u32>,
    /// MQTT client id (stable across restarts so the broker keeps the session).
    #[arg(long, value_name = "ID")]
    pub client_id: Option<String>,
    /// Worker threads.
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub workers: usize,
    /// Queue capacity per worker, in samples (see `Builder::queue`).
    #[arg(long, value_name = "N", default_value_t = super::DEFAULT_QUEUE)]
    pub queue: usize,
    /// Most samples per batch sent to a worker.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub batch: usize,
    /// Drop the oldest queued samples when a worker falls behind (counted), instead of waiting.
    #[arg(long)]
    pub drop_oldest: bool,
    /// Read `--csv` files on a thread of their own and queue the samples to the workers, rather
    /// than each worker reading its own streams' files (the default when `--csv` is the only
    /// input; see `Builder::sources_on_workers`).
    #[arg(long)]
    pub routed: bool,
    /// Replay CSV in real time at HZ samples per second per stream.
    #[arg(long, value_name = "HZ")]
    pub pace: Option<f64>,
    /// Write verdicts as JSON lines to FILE (`-` for standard output, the default output).
    #[arg(long, value_name = "FILE")]
    pub out_json: Option<String>,
    /// Write verdicts as CSV to FILE.
    #[arg(long, value_name = "FILE")]
    pub out_csv: Option<String>,
    /// Publish verdicts to `<PREFIX>/verdict/<stream>` and alarm changes to
    /// `<PREFIX>/alarm/<stream>` on the `--mqtt` broker.
    #[arg(long, value_name = "PREFIX", requires = "mqtt")]
    pub publish: Option<String>,
    /// Which verdicts to write.
    #[arg(long, value_enum, default_value = "all")]
    pub emit: EmitArg,
    /// Print metrics to stderr every SECS seconds (0: only at the end).
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub metrics_every: f64,
    /// Stop and drain once samples have arrived and then none came for SECS seconds (for
    /// jobs that score a burst from a broker and exit; by default only Ctrl-C stops a
    /// subscription).
    #[arg(long, value_name = "SECS")]
    pub idle_exit: Option<f64>,
}

/// The flag the Ctrl-C handler raises (the handler is installed once per process).
static CURRENT_STOP: Mutex<Option<StopFlag>> = Mutex::new(None);

fn install_ctrl_c(flag: &StopFlag) {
    *CURRENT_STOP.lock().unwrap_or_else(PoisonError::into_inner) = Some(flag.clone());
    // An error means a handler is already installed (an earlier run): it reads CURRENT_STOP.
    let _ = ctrlc::try_set_handler(|| {
        let current = CURRENT_STOP
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match current {
            Some(f) if !f.is_stopped() => {
                eprintln!("sensorae stream: stopping, draining queues (Ctrl-C again to exit now)");
                f.stop();
            }
            _ => std::process::exit(130),
        }
    });
}

/// Stream ids for `--csv` files: the given name, else the file stem, else parent/stem when
/// stems repeat (SKAB's `valve1/0.csv` and `valve2/0.csv`).
fn csv_streams(specs: &[String]) -> Vec<(String, String)> {
    let stem = |p: &str| {
        Path::new(p)
            .file_stem()
            .map_or_else(|| p.to_owned(), |s| s.to_string_lossy().into_owned())
    };
    let stems: Vec<String> = specs.iter().map(|s| stem(s)).collect();
    let mut seen = HashSet::new();
    let repeated: HashSet<&String> = stems.iter().filter(|s| !seen.insert(*s)).collect();
    specs
        .iter()
        .zip(&stems)
        .map(|(spec, st)| match spec.split_once('=') {
            Some((name, path)) => (name.to_owned(), path.to_owned()),
            None if repeated.contains(st) => {
                let parent = Path::new(spec)
                    .parent()
                    .and_then(Path::file_name)
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (format!("{parent}-{st}"), spec.clone())
            }
            None => (st.clone(), spec.clone()),
        })
        .collect()
}

/// Builds the pipeline the arguments describe (without a Ctrl-C handler).
///
/// # Errors
/// [`ErrorKind::Config`](super::ErrorKind::Config) for contradictory or missing arguments,
/// `Model` for a model that cannot be loaded, `Io` for an output file that cannot be created.
pub fn build(args: &StreamArgs, stop: StopFlag) -> Result<Builder, PipelineError> {
    let mut models = ModelMap::new();
    for spec in &args.models {
        models.add_spec(spec)?;
    }
    let mut b = Builder::new(models)
        .workers(args.workers)
        .queue(args.queue)
        .batch(args.batch)
        .stop_flag(stop)
        .sources_on_workers(!args.routed)
        .backpressure(if args.drop_oldest {
            Backpressure::DropOldest
        } else {
            Backpressure::Block
        })
        .emit(match args.emit {
            EmitArg::All => Emit::All,
            EmitArg::Scored => Emit::Scored,
            EmitArg::Alarms => Emit::Alarms,
        });
    let mut any_source = false;
    if !args.csv.is_empty() || !args.long_csv.is_empty() {
        let mut replay = CsvReplay::new().pace(args.pace);
        for (stream, path) in csv_streams(&args.csv) {
            replay = replay.file(stream, path);
        }
        for path in &args.long_csv {
            replay = replay.long(path, &args.stream_column);
        }
        b = b.source(replay);
        any_source = true;
    }
    if let Some(format) = args.stdin {
        let format = match format {
            StdinFormat::Json => LineFormat::Json,
            StdinFormat::Csv => LineFormat::Csv {
                stream_column: args.stream_column.clone(),
            },
        };
        b = b.source(LinesSource::stdin(format));
        any_source = true;
    }
    let endpoint = args
        .mqtt
        .as_deref()
        .map(str::parse::<MqttEndpoint>)
        .transpose()?;
    let shards = match (&args.shards, args.shard_count) {
        (Some(list), Some(count)) => Some(parse_shards(list, count)?),
        (None, Some(count)) => Some((0..count).collect()),
        _ => None,
    };
    let client_id = args
        .client_id
        .clone()
        .unwrap_or_else(|| match &args.shards {
            Some(list) => format!("sensorae-stream-{list}"),
            None => "sensorae-stream".to_owned(),
        });
    if let Some(endpoint) = &endpoint {
        let prefix = args.topic_prefix.trim_end_matches('/');
        let mut source = MqttSource::new(endpoint.clone(), &client_id);
        for t in &args.topics {
            source = source.topic(t);
        }
        match &shards {
            Some(s) => source = source.shards(prefix, s),
            None if args.topics.is_empty() => source = source.topic(&format!("{prefix}/+/+")),
            None => {}
        }
        b = b.source(source);
        any_source = true;
    } else if shards.is_some() || !args.topics.is_empty() {
        return Err(PipelineError::config("--shards and --topic need --mqtt"));
    }
    if !any_source {
        return Err(PipelineError::config(
            "no input: give --csv, --long-csv, --stdin or --mqtt",
        ));
    }
    let mut any_sink = false;
    if let Some(path) = &args.out_csv {
        b = b.sink(CsvSink::create(path)?);
        any_sink = true;
    }
    if let (Some(prefix), Some(endpoint)) = (&args.publish, &endpoint) {
        b = b.sink(MqttSink::new(
            endpoint,
            &format!("{client_id}-out"),
            prefix,
        )?);
        any_sink = true;
    }
    match args.out_json.as_deref() {
        Some("-") => b = b.sink(JsonLines::stdout()),
        Some(path) => b = b.sink(JsonLines::create(path)?),
        None if !any_sink => b = b.sink(JsonLines::stdout()),
        None => {}
    }
    if args.metrics_every > 0.0 && args.metrics_every.is_finite() {
        b = b.metrics_every(Duration::from_secs_f64(args.metrics_every), |m| {
            eprintln!("sensorae stream: {m}");
        });
    }
    Ok(b)
}

/// Returns when the sources have finished, or stops the pipeline once input arrived and then
/// nothing new came for `idle`.
fn stop_when_idle(running: &Running, idle: Duration) {
    let poll = Duration::from_millis(20).min(idle);
    let (mut seen, mut since) = (0, std::time::Instant::now());
    while !running.sources_finished() {
        std::thread::sleep(poll);
        let n = running.metrics().samples_in;
        if n != seen {
            (seen, since) = (n, std::time::Instant::now());
        } else if n > 0 && since.elapsed() >= idle {
            running.stop();
            return;
        }
    }
}

/// Runs `sensorae stream`: builds the pipeline, stops it on Ctrl-C, prints the final metrics
/// to stderr.
///
/// # Errors
/// As [`build`], and the pipeline's first failure.
pub fn run(args: &StreamArgs) -> Result<(), PipelineError> {
    let stop = StopFlag::new();
    let builder = build(args, stop.clone())?;
    install_ctrl_c(&stop);
    let running = builder.start()?;
    if let Some(secs) = args.idle_exit {
        stop_when_idle(&running, Duration::from_secs_f64(secs.max(0.0)));
    }
    let report = running.wait()?;
    let m = &report.metrics;
    eprintln!("sensorae stream: done: {m}");
    if !report.unmatched_streams.is_empty() {
        eprintln!(
            "sensorae stream: no model for {} stream(s): {}",
            report.unmatched_streams.len(),
            report.unmatched_streams.join(", ")
        );
    }
    if !m.balanced() {
        eprintln!(
            "sensorae stream: {} sample(s) unaccounted for",
            m.samples_in.abs_diff(m.accounted())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_stream_names() {
        let specs = ["a/0.csv", "b/0.csv", "x/pump.csv", "p7=y/z.csv"].map(String::from);
        let names: Vec<String> = csv_streams(&specs).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a-0", "b-0", "pump", "p7"]);
    }

    #[test]
    fn arguments_parse() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            stream: StreamArgs,
        }
        let cli = Cli::try_parse_from([
            "sensorae",
            "--model",
            "pump-*=p.snae",
            "--model",
            "v.snae",
            "--mqtt",
            "127.0.0.1:1883",
            "--shards",
            "0-3",
            "--shard-count",
            "8",
            "--drop-oldest",
            "--emit",
            "alarms",
        ])
        .unwrap();
        assert_eq!(cli.stream.models.len(), 2);
        assert!(cli.stream.drop_oldest);
        assert_eq!(cli.stream.emit, EmitArg::Alarms);
        assert!(Cli::try_parse_from(["sensorae", "--csv", "x.csv"]).is_err());
        assert!(Cli::try_parse_from(["sensorae", "--model", "m", "--shards", "0"]).is_err());
    }
}
