//! `sensorae bench pipeline`: the streaming pipeline's load figure.
//!
//! A reference-size model (8 channels, window 16, hidden 32, code 8 unless told otherwise) is
//! built in memory; a synthetic source pushes seeded samples for many streams, a round of one
//! sample per stream at a time, through the real pipeline (router, bounded queues with blocking
//! back-pressure, workers, a counting sink). Once every stream is past its first windows, the
//! pipeline and a raw scorer (as many threads calling [`DynDetector::push`] directly, on the
//! same streams in the same order, with no pipeline) take turns of `--turn` seconds until each
//! has had `--seconds`; the source waits at a gate during the raw turns. Each pipeline turn is
//! compared with the raw turn right after it: this kind of machine's speed drifts within
//! seconds, and only rates measured side by side say much about the pipeline's own cost.

mod proc_stats;
mod raw;
mod synthetic;

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Args, ValueEnum};
use sensorae::DynDetector;
use serde::Serialize;

use self::{
    proc_stats::{cpu_time, cpu_us_per_sample, peak_memory, per_thread_kind, thread_cpu},
    raw::Raw,
    synthetic::{Gate, Pool, Synthetic, model},
};
use crate::{
    error::{Error, Result},
    pipeline::{Backpressure, Builder, CountingSink, Emit, MetricsSnapshot, ModelMap, Running},
};

/// Which verdicts reach the sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchEmit {
    /// Every sample's verdict.
    All,
    /// One record per scored window (and faults and alarm changes).
    Scored,
    /// Alarm changes and faults only.
    Alarms,
}

impl BenchEmit {
    const fn emit(self) -> Emit {
        match self {
            BenchEmit::All => Emit::All,
            BenchEmit::Scored => Emit::Scored,
            BenchEmit::Alarms => Emit::Alarms,
        }
    }

    const fn name(self) -> &'static str {
        match self {
            BenchEmit::All => "all",
            BenchEmit::Scored => "scored",
            BenchEmit::Alarms => "alarms",
        }
    }
}

/// Load figure of the streaming pipeline: synthetic streams through the real pipeline with
/// blocking back-pressure, then the same samples scored without it.
#[derive(Debug, Clone, Args)]
pub struct PipelineArgs {
    /// Number of streams (sensors), each with its own detector.
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// Channels per sample (values per stream per time step).
    #[arg(long, default_value_t = 8)]
    pub channels: u16,
    /// Seconds of pipeline turns (the raw scorer gets as many), after the warm-up.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Length of one turn, seconds (at most `--seconds`): the pipeline and the raw scorer
    /// alternate turns this long.
    #[arg(long, default_value_t = 1.0)]
    pub turn: f64,
    /// Worker threads (and threads of the raw scoring run).
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Samples between scored windows (default: the window length, windows do not overlap).
    #[arg(long)]
    pub hop: Option<u16>,
    /// Window length of the model.
    #[arg(long, default_value_t = 16)]
    pub window: u16,
    /// Hidden units of the model.
    #[arg(long, default_value_t = 32)]
    pub hidden: u32,
    /// Code (latent) units of the model.
    #[arg(long, default_value_t = 8)]
    pub latent: u32,
    /// Most samples per batch sent to a worker.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Capacity of each worker's queue, in samples.
    #[arg(long, default_value_t = crate::pipeline::DEFAULT_QUEUE)]
    pub queue: usize,
    /// Which verdicts become records for the (counting) sink.
    #[arg(long, value_enum, default_value = "scored")]
    pub emit: BenchEmit,
    /// Seed of the synthetic samples.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Run the source on its own thread feeding the workers' queues, instead of one part of it
    /// on each worker (see the pipeline's "Sources on the workers").
    #[arg(long)]
    pub routed: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What the benchmark measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PipelineFigures {
    /// Streams.
    pub streams: usize,
    /// Channels per sample.
    pub channels: u16,
    /// Window length.
    pub window: u16,
    /// Hop between scored windows.
    pub hop: u16,
    /// Hidden units.
    pub hidden: u32,
    /// Code units.
    pub latent: u32,
    /// Worker threads (and raw scoring threads).
    pub workers: usize,
    /// Samples per batch.
    pub batch: usize,
    /// Queue capacity per worker, in samples.
    pub queue: usize,
    /// Which verdicts became records.
    pub emit: &'static str,
    /// The sink used.
    pub sink: &'static str,
    /// Back-pressure policy.
    pub backpressure: &'static str,
    /// Where the source ran: `on-workers` (a part on each worker, no queue) or `routed` (its
    /// own thread, through the workers' queues).
    pub source_mode: &'static str,
    /// Samples the source pushed into the pipeline, warm-up included.
    pub samples: u64,
    /// Windows scored, warm-up included.
    pub windows: u64,
    /// Records the sink counted.
    pub records: u64,
    /// From start until every stream had two windows' worth of samples (detectors created,
    /// first windows scored), seconds.
    pub warmup_s: f64,
    /// Samples per second during the warm-up.
    pub warmup_samples_per_s: f64,
    /// Pipeline turns (and as many raw turns).
    pub turns: usize,
    /// Length of each turn, seconds.
    pub turn_s: f64,
    /// Seconds of pipeline turns.
    pub pipeline_s: f64,
    /// Samples with a verdict per second over the pipeline's turns (each turn from the gate's
    /// opening until everything pushed has a verdict).
    pub samples_per_s: f64,
    /// Windows scored per second over the pipeline's turns.
    pub windows_per_s: f64,
    /// Median time from ingestion to verdict, microseconds (whole run).
    pub latency_p50_us: f64,
    /// 99th percentile time from ingestion to verdict, microseconds (whole run).
    pub latency_p99_us: f64,
    /// Peak resident memory (`VmHWM`) after the pipeline's warm-up, before the raw scorer's
    /// detectors exist, bytes; `None` where unavailable.
    pub peak_memory_bytes: Option<u64>,
    /// Samples dropped on full queues.
    pub dropped: u64,
    /// Samples that entered but have no outcome (in minus accounted); 0 after a clean drain.
    pub lost: u64,
    /// Samples reported as sensor faults.
    pub faulted: u64,
    /// Samples per second over the raw turns.
    pub raw_samples_per_s: f64,
    /// Windows per second over the raw turns.
    pub raw_windows_per_s: f64,
    /// Pipeline / raw samples per second: the median of the turns' ratios.
    pub ratio: f64,
    /// Each pipeline turn's rate over the raw turn right after it, in order.
    pub turn_ratios: Vec<f64>,
    /// `samples_per_s / raw_samples_per_s`, over all turns together.
    pub ratio_of_totals: f64,
    /// CPU time (all threads) per sample over the pipeline's turns, microseconds; `None` where
    /// unavailable. Less sensitive to other load on the machine than the rates.
    pub cpu_us_per_sample: Option<f64>,
    /// The same over the raw turns.
    pub raw_cpu_us_per_sample: Option<f64>,
    /// CPU microseconds per sample over the pipeline's turns by kind of thread
    /// (`pipeline-worker`, `pipeline-source`, `pipeline-sink`); empty where unavailable.
    pub cpu_us_per_sample_by_thread: Vec<(String, f64)>,
}

/// Verdicts so far (scored, warming or faulted).
fn verdicts(m: &MetricsSnapshot) -> u64 {
    m.scored + m.warming + m.faulted
}

/// Closes the gate and waits until every part of the source waits at it and every sample it
/// pushed has an outcome (the queues have drained); gives up if the sources have ended (the
/// pipeline failed or was stopped), which [`Running::wait`] then reports.
fn pause(running: &Running, gate: &Gate) -> MetricsSnapshot {
    gate.close();
    loop {
        let m = running.metrics();
        if (gate.all_waiting() && m.balanced()) || running.sources_finished() {
            return m;
        }
        thread::sleep(Duration::from_micros(100));
    }
}

/// The median of some ratios (the upper one of an even count); 0 for none.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// What one turn (or several together) scored, how long it took, and the process's CPU time
/// meanwhile.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Turn {
    pub(super) samples: u64,
    pub(super) windows: u64,
    pub(super) elapsed: Duration,
    pub(super) cpu: Option<Duration>,
}

impl Turn {
    fn samples_per_s(&self) -> f64 {
        per_s(self.samples, self.elapsed)
    }

    /// The turns together (CPU time only if known for every turn).
    fn total(turns: &[Turn]) -> Turn {
        Turn {
            samples: turns.iter().map(|t| t.samples).sum(),
            windows: turns.iter().map(|t| t.windows).sum(),
            elapsed: turns.iter().map(|t| t.elapsed).sum(),
            cpu: turns.iter().map(|t| t.cpu).sum(),
        }
    }
}

/// Runs a turn and adds the process's CPU time over it.
fn with_cpu(turn: impl FnOnce() -> Turn) -> Turn {
    let before = cpu_time();
    let t = turn();
    Turn {
        cpu: cpu_time().zip(before).and_then(|(a, b)| a.checked_sub(b)),
        ..t
    }
}

/// One pipeline turn: opens the gate for `length`, then pauses the source and lets the
/// pipeline drain.
fn pipeline_turn(running: &Running, gate: &Gate, length: Duration) -> Turn {
    let before = running.metrics();
    let start = Instant::now();
    gate.open();
    thread::sleep(length);
    let after = pause(running, gate);
    Turn {
        samples: verdicts(&after).saturating_sub(verdicts(&before)),
        windows: after.windows.saturating_sub(before.windows),
        elapsed: start.elapsed(),
        cpu: None,
    }
}

/// Samples per second of `samples` over `elapsed` (0 for no time).
fn per_s(samples: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 {
        samples as f64 / secs
    } else {
        0.0
    }
}

/// Runs the benchmark: the pipeline's warm-up, then alternating pipeline and raw turns.
///
/// # Errors
/// [`Error::Usage`] for impossible sizes; [`Error::Pipeline`] when the pipeline fails.
pub fn measure(args: &PipelineArgs) -> Result<PipelineFigures> {
    if args.streams == 0 || args.channels == 0 || args.window == 0 {
        return Err(Error::Usage(
            "--streams, --channels and --window must be at least 1".into(),
        ));
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0 && args.turn.is_finite() && args.turn > 0.0)
    {
        return Err(Error::Usage("--seconds and --turn must be positive".into()));
    }
    let hop = args.hop.unwrap_or(args.window).clamp(1, args.window);
    let workers = args.workers.max(1);
    let pool = Arc::new(Pool::new(usize::from(args.channels), args.seed));
    let bytes = model(args, hop, &pool)?;
    let detector = DynDetector::from_bytes(&bytes)
        .map_err(|e| Error::Usage(format!("cannot load the model: {e}")))?;
    let names: Vec<String> = (0..args.streams).map(|s| format!("s{s}")).collect();
    let mut models = ModelMap::new();
    models.add_bytes("*", "reference", &bytes)?;
    let sink = CountingSink::new();
    let gate = Arc::new(Gate::default());
    let started = Instant::now();
    let running = Builder::new(models)
        .workers(workers)
        .batch(args.batch)
        .queue(args.queue)
        .backpressure(Backpressure::Block)
        .emit(args.emit.emit())
        .sources_on_workers(!args.routed)
        .source(Synthetic::new(
            names.iter().cloned().enumerate().collect(),
            Arc::clone(&pool),
            Arc::clone(&gate),
        ))
        .sink(sink.clone())
        .start()?;
    // Warm-up: every stream's detector created and past its first windows.
    let warm = 2 * usize::from(args.window);
    let warm_samples = (warm * args.streams) as u64;
    while verdicts(&running.metrics()) < warm_samples && !running.sources_finished() {
        thread::sleep(Duration::from_millis(5));
    }
    let warmed = pause(&running, &gate);
    let warmup = started.elapsed();
    let peak = peak_memory();
    let mut raw = Raw::new(&detector, &names, &pool, workers, warm);
    let length = Duration::from_secs_f64(args.turn.min(args.seconds));
    let turns = (args.seconds / args.turn).ceil().max(1.0) as usize;
    let threads_before = thread_cpu();
    let mut pipeline_turns: Vec<Turn> = Vec::with_capacity(turns);
    let mut raw_turns: Vec<Turn> = Vec::with_capacity(turns);
    for _ in 0..turns {
        if running.sources_finished() {
            break;
        }
        pipeline_turns.push(with_cpu(|| pipeline_turn(&running, &gate, length)));
        raw_turns.push(with_cpu(|| raw.turn(&pool, length)));
    }
    let threads_after = thread_cpu();
    running.stop();
    let report = running.wait()?;
    let m = report.metrics;
    let turn_ratios: Vec<f64> = pipeline_turns
        .iter()
        .zip(&raw_turns)
        .map(|(p, r)| p.samples_per_s() / r.samples_per_s().max(1e-9))
        .collect();
    let (p, r) = (Turn::total(&pipeline_turns), Turn::total(&raw_turns));
    let (samples_per_s, raw_samples_per_s) = (p.samples_per_s(), r.samples_per_s());
    Ok(PipelineFigures {
        streams: args.streams,
        channels: args.channels,
        window: args.window,
        hop,
        hidden: args.hidden,
        latent: args.latent,
        workers,
        batch: args.batch,
        queue: args.queue,
        emit: args.emit.name(),
        sink: "counting (records counted, not formatted)",
        backpressure: "block",
        source_mode: if args.routed { "routed" } else { "on-workers" },
        samples: m.samples_in,
        windows: m.windows,
        records: sink.records(),
        warmup_s: warmup.as_secs_f64(),
        warmup_samples_per_s: per_s(verdicts(&warmed), warmup),
        turns: turn_ratios.len(),
        turn_s: length.as_secs_f64(),
        pipeline_s: p.elapsed.as_secs_f64(),
        samples_per_s,
        windows_per_s: per_s(p.windows, p.elapsed),
        latency_p50_us: m.latency_p50.as_secs_f64() * 1e6,
        latency_p99_us: m.latency_p99.as_secs_f64() * 1e6,
        peak_memory_bytes: peak,
        dropped: m.dropped,
        lost: m.samples_in.saturating_sub(m.accounted()),
        faulted: m.faulted,
        raw_samples_per_s,
        raw_windows_per_s: per_s(r.windows, r.elapsed),
        ratio: median(&turn_ratios),
        turn_ratios,
        ratio_of_totals: samples_per_s / raw_samples_per_s.max(1e-9),
        cpu_us_per_sample: cpu_us_per_sample(Some(Duration::ZERO), p.cpu, p.samples),
        raw_cpu_us_per_sample: cpu_us_per_sample(Some(Duration::ZERO), r.cpu, r.samples),
        cpu_us_per_sample_by_thread: per_thread_kind(
            threads_before.as_ref(),
            threads_after.as_ref(),
            p.samples,
        ),
    })
}

/// Formats a rate with a k/M suffix.
fn rate(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2} M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1} k", x / 1e3)
    } else {
        format!("{x:.0} ")
    }
}

/// Runs the benchmark and prints the figures.
///
/// # Errors
/// As [`measure`].
pub fn run(args: &PipelineArgs) -> Result<()> {
    let f = measure(args)?;
    if args.json {
        let line = serde_json::to_string(&f)
            .map_err(|e| Error::Usage(format!("cannot write JSON: {e}")))?;
        println!("{line}");
        return Ok(());
    }
    let when = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    println!(
        "bench pipeline (unix time {when}): {} streams x {} channels, window {}, hop {}, \
         hidden {}, code {}",
        f.streams, f.channels, f.window, f.hop, f.hidden, f.latent
    );
    if f.source_mode == "routed" {
        println!(
            "  source on its own thread: {} workers, batches of {}, queues of {} samples, {} \
             back-pressure, emit {}, sink: {}",
            f.workers, f.batch, f.queue, f.backpressure, f.emit, f.sink
        );
    } else {
        println!(
            "  source split by stream, a part on each of {} workers (no queue), batches of {}, \
             emit {}, sink: {}",
            f.workers, f.batch, f.emit, f.sink
        );
    }
    println!(
        "warm-up (every stream's first {} samples): {:.2} s, {}samples/s; then {} turn(s) of {} s \
         each, pipeline then raw, the source held at a gate during raw turns",
        2 * u32::from(f.window),
        f.warmup_s,
        rate(f.warmup_samples_per_s),
        f.turns,
        f.turn_s
    );
    println!(
        "pipeline: {} samples in all, {:.2} s of turns: {}samples/s, {}windows/s, {} records",
        f.samples,
        f.pipeline_s,
        rate(f.samples_per_s),
        rate(f.windows_per_s),
        f.records
    );
    println!(
        "latency (ingestion to verdict): p50 {:.0} us, p99 {:.0} us",
        f.latency_p50_us, f.latency_p99_us
    );
    match f.peak_memory_bytes {
        Some(b) => println!(
            "peak memory (VmHWM) after the warm-up: {:.1} MiB",
            b as f64 / 1048576.0
        ),
        None => println!("peak memory: unavailable"),
    }
    println!(
        "dropped {}, lost {}, faulted {}",
        f.dropped, f.lost, f.faulted
    );
    println!(
        "raw scoring ({} threads calling DynDetector::push, no pipeline): {}samples/s, \
         {}windows/s",
        f.workers,
        rate(f.raw_samples_per_s),
        rate(f.raw_windows_per_s),
    );
    let cpu =
        |x: Option<f64>| x.map_or_else(|| "unavailable".to_owned(), |us| format!("{us:.3} us"));
    let by_thread: Vec<String> = f
        .cpu_us_per_sample_by_thread
        .iter()
        .map(|(kind, us)| format!("{kind} {us:.3} us"))
        .collect();
    println!(
        "CPU per sample (all threads): pipeline {} ({}), raw {}",
        cpu(f.cpu_us_per_sample),
        by_thread.join(", "),
        cpu(f.raw_cpu_us_per_sample)
    );
    let ratios: Vec<String> = f.turn_ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "pipeline / raw (samples/s): {:.3}, the median of {} turn(s): {}; over all turns {:.3}",
        f.ratio,
        f.turn_ratios.len(),
        ratios.join(" "),
        f.ratio_of_totals
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(streams: usize, routed: bool) -> PipelineArgs {
        PipelineArgs {
            streams,
            channels: 4,
            seconds: 1.0,
            turn: 1.0,
            workers: 2,
            hop: None,
            window: 8,
            hidden: 8,
            latent: 2,
            batch: 16,
            queue: 256,
            emit: BenchEmit::Scored,
            seed: 3,
            routed,
            json: true,
        }
    }

    /// The instrument itself: while the gate is closed no sample enters and everything that
    /// entered has a verdict; once it opens the source goes on; a stop ends parts waiting at it.
    #[test]
    fn the_gate_holds_the_source_and_the_pipeline_drains() {
        for routed in [false, true] {
            let a = args(50, routed);
            let pool = Arc::new(Pool::new(usize::from(a.channels), a.seed));
            let bytes = model(&a, a.window, &pool).unwrap();
            let mut models = ModelMap::new();
            models.add_bytes("*", "reference", &bytes).unwrap();
            let gate = Arc::new(Gate::default());
            let running = Builder::new(models)
                .workers(a.workers)
                .batch(a.batch)
                .queue(a.queue)
                .sources_on_workers(!routed)
                .source(Synthetic::new(
                    (0..a.streams).map(|s| (s, format!("s{s}"))).collect(),
                    Arc::clone(&pool),
                    Arc::clone(&gate),
                ))
                .sink(CountingSink::new())
                .start()
                .unwrap();
            while running.metrics().samples_in < 10_000 {
                thread::sleep(Duration::from_millis(1));
            }
            let held = pause(&running, &gate);
            assert!(held.balanced(), "routed {routed}: {held}");
            assert_eq!(verdicts(&held), held.samples_in);
            thread::sleep(Duration::from_millis(50));
            assert_eq!(
                running.metrics().samples_in,
                held.samples_in,
                "routed {routed}"
            );
            let turn = pipeline_turn(&running, &gate, Duration::from_millis(20));
            assert!(turn.samples > 0, "routed {routed}");
            let after = running.metrics();
            assert!(after.balanced(), "routed {routed}: {after}");
            assert_eq!(after.samples_in, held.samples_in + turn.samples);
            running.stop();
            let report = running.wait().unwrap();
            assert_eq!(report.metrics.samples_in, after.samples_in);
            assert!(report.metrics.balanced());
        }
    }

    #[test]
    fn the_median_of_an_even_count_is_the_upper_one() {
        assert_eq!(median(&[]), 0.0);
        assert_eq!(median(&[0.7]), 0.7);
        assert_eq!(median(&[0.9, 0.7, 0.8]), 0.8);
        assert_eq!(median(&[0.9, 0.7]), 0.9);
    }
}
