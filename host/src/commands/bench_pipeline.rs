//! `sensorae bench pipeline`: the streaming pipeline's load figure.
//!
//! A reference-size model (8 channels, window 16, hidden 32, code 8 unless told otherwise) is
//! built in memory; a synthetic source pushes seeded samples for many streams, a round of one
//! sample per stream at a time, through the real pipeline (router, bounded queues with blocking
//! back-pressure, workers, a counting sink) for a fixed time; then the pipeline stops and
//! drains. The same samples are then scored by as many threads calling
//! [`DynDetector::push`] directly, without the pipeline, and the two rates are compared.

use core::{hint::black_box, time::Duration};
use std::{
    collections::BTreeMap,
    sync::{Arc, Barrier, Mutex, PoisonError},
    thread,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Args, ValueEnum};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sensorae::{Channel, DynDetector, encode_to_vec, testing};
use serde::Serialize;

use crate::{
    error::{Error, Result},
    pipeline::{
        Backpressure, Builder, CountingSink, Emit, ModelMap, PipelineError, Router, Source,
        StreamKey, partition,
    },
};

/// Rows in the pool of synthetic samples (each stream reads it at its own phase).
const POOL_ROWS: usize = 1024;

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
    /// Seconds to feed the pipeline before it stops and drains.
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
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
    /// Rounds of a pipeline run followed by the raw run of the same samples; the figures are
    /// those of the round with the median ratio (this kind of machine's speed drifts within
    /// seconds, so only ratios measured side by side mean much).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
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
    /// Worker threads.
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
    /// Samples the source pushed into the pipeline.
    pub samples: u64,
    /// Windows scored.
    pub windows: u64,
    /// Records the sink counted.
    pub records: u64,
    /// Wall time from start to drained, seconds.
    pub elapsed_s: f64,
    /// Samples per second of wall time, start to drained.
    pub samples_per_s: f64,
    /// Windows scored per second.
    pub windows_per_s: f64,
    /// Median time from ingestion to verdict, microseconds.
    pub latency_p50_us: f64,
    /// 99th percentile time from ingestion to verdict, microseconds.
    pub latency_p99_us: f64,
    /// Peak resident memory of the process after the pipeline run (`VmHWM`), bytes; `None` where
    /// unavailable.
    pub peak_memory_bytes: Option<u64>,
    /// CPU time of the pipeline run (all threads) per sample, microseconds; `None` where
    /// unavailable. Less sensitive to other load on the machine than the rates.
    pub cpu_us_per_sample: Option<f64>,
    /// Samples dropped on full queues.
    pub dropped: u64,
    /// Samples that entered but have no outcome (in minus accounted); 0 after a clean drain.
    pub lost: u64,
    /// Samples reported as sensor faults.
    pub faulted: u64,
    /// The same samples scored directly by as many threads: samples per second.
    pub raw_samples_per_s: f64,
    /// Windows per second of the raw run.
    pub raw_windows_per_s: f64,
    /// Wall time of the raw run, seconds.
    pub raw_elapsed_s: f64,
    /// CPU time of the raw run per sample, microseconds.
    pub raw_cpu_us_per_sample: Option<f64>,
    /// `samples_per_s / raw_samples_per_s`: the median of the rounds.
    pub ratio: f64,
    /// Each round's ratio, in order (the other figures are the median round's).
    pub round_ratios: Vec<f64>,
    /// Each round's steady-state ratio, where measured.
    pub round_steady_ratios: Vec<Option<f64>>,
    /// Samples per second once every stream has had two windows' worth of samples (detectors
    /// created, caches and pages warm), to the end of the drain.
    pub steady_samples_per_s: Option<f64>,
    /// The same for the raw run.
    pub raw_steady_samples_per_s: Option<f64>,
    /// `steady_samples_per_s / raw_steady_samples_per_s`.
    pub steady_ratio: Option<f64>,
    /// CPU microseconds per sample in the pipeline's steady state.
    pub steady_cpu_us_per_sample: Option<f64>,
    /// CPU microseconds per sample in the raw run's steady state.
    pub raw_steady_cpu_us_per_sample: Option<f64>,
    /// The pipeline's steady-state CPU microseconds per sample by kind of thread
    /// (`pipeline-worker`, `pipeline-source`, `pipeline-sink`), all threads of a kind together;
    /// empty where unavailable.
    pub steady_cpu_us_per_sample_by_thread: Vec<(String, f64)>,
}

/// Seeded sample rows: a sine per channel plus a little noise, read by every stream at its own
/// phase so that the generator costs one slice copy per sample.
#[derive(Debug)]
struct Pool {
    channels: usize,
    values: Vec<f32>,
}

impl Pool {
    fn new(channels: usize, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = Vec::with_capacity(POOL_ROWS * channels);
        for t in 0..POOL_ROWS {
            for c in 0..channels {
                let phase = t as f32 * core::f32::consts::TAU / 64.0 + c as f32 * 0.7;
                values.push(phase.sin() * 0.8 + rng.random_range(-0.05f32..0.05));
            }
        }
        Pool { channels, values }
    }

    /// Stream `s`'s sample at step `t`.
    fn row(&self, t: usize, s: usize) -> &[f32] {
        let r = (t + s.wrapping_mul(17)) % POOL_ROWS;
        self.values
            .get(r * self.channels..(r + 1) * self.channels)
            .unwrap_or(&[])
    }
}

/// Rounds of one sample per stream, until the pipeline stops.
struct Synthetic {
    /// Each stream's index among all streams (its phase in the pool) and its id.
    streams: Vec<(usize, String)>,
    pool: Arc<Pool>,
}

impl Source for Synthetic {
    fn describe(&self) -> String {
        format!("synthetic ({} streams)", self.streams.len())
    }

    fn split(&mut self, workers: usize) -> Option<Vec<Box<dyn Source>>> {
        let mut parts: Vec<Vec<(usize, String)>> = vec![Vec::new(); workers.max(1)];
        for (s, name) in &self.streams {
            parts
                .get_mut(partition(name, workers))?
                .push((*s, name.clone()));
        }
        Some(
            parts
                .into_iter()
                .map(|streams| {
                    Box::new(Synthetic {
                        streams,
                        pool: Arc::clone(&self.pool),
                    }) as Box<dyn Source>
                })
                .collect(),
        )
    }

    fn run(&mut self, router: &mut Router) -> core::result::Result<(), PipelineError> {
        // Interned once, like a replay that knows its streams: pushing by key skips the id hash.
        let keys: Vec<(usize, StreamKey)> = self
            .streams
            .iter()
            .map(|(s, n)| (*s, router.intern(n)))
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        let mut pushed = 0u32;
        for t in 0.. {
            for &(s, key) in &keys {
                router.push_key(key, self.pool.row(t, s), None)?;
                pushed = pushed.wrapping_add(1);
                if pushed.is_multiple_of(1024) && router.stopping() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// The reference-size model with channel ranges that the synthetic data never leaves and a
/// threshold of 1.5 times the largest score of the first streams' normal data.
fn model(args: &PipelineArgs, hop: u16, pool: &Pool) -> Result<Vec<u8>> {
    let names: Vec<String> = (0..args.channels).map(|c| format!("c{c}")).collect();
    let channels: Vec<Channel<'_>> = names
        .iter()
        .map(|name| Channel {
            name,
            offset: 0.0,
            scale: 1.0,
            min: -100.0,
            max: 100.0,
        })
        .collect();
    let mut header = testing::header(args.channels, args.window, args.hidden, args.latent);
    header.window.hop = hop;
    header.threshold.value = f32::MAX;
    let params: Vec<f32> = (0..header.param_count()).map(testing::param).collect();
    let bad = |e: &dyn core::fmt::Display| Error::Usage(format!("cannot build the model: {e}"));
    let bytes = encode_to_vec(&header, &channels, &params).map_err(|e| bad(&e))?;
    let mut d = DynDetector::from_bytes(&bytes).map_err(|e| bad(&e))?;
    let mut max = 0.0f32;
    for s in 0..4 {
        d.reset();
        for t in 0..POOL_ROWS {
            if let Some(score) = d.push(pool.row(t, s)).score() {
                max = max.max(score.value);
            }
        }
    }
    header.threshold.value = if max > 0.0 { max * 1.5 } else { 1.0 };
    encode_to_vec(&header, &channels, &params).map_err(|e| bad(&e))
}

/// Peak resident set size of this process (`VmHWM` on Linux).
fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat` (Linux; in
/// clock ticks of 10 ms).
fn cpu_time() -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User and system time from a `stat` line of `/proc`.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time so far of each kind of thread of this process, by name without its number
/// (`pipeline-worker-1` reads `pipeline-worker`; Linux keeps 15 characters of a name), from
/// `/proc/self/task` (Linux). Threads that exit while it reads are skipped.
fn thread_cpu() -> Option<BTreeMap<String, Duration>> {
    let mut by_kind = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or("");
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        if let Some(t) = stat_cpu(&stat) {
            *by_kind.entry(kind.to_owned()).or_insert(Duration::ZERO) += t;
        }
    }
    Some(by_kind)
}

/// CPU microseconds per sample of each kind of pipeline thread between two [`thread_cpu`]
/// readings.
fn per_thread_kind(
    before: Option<&BTreeMap<String, Duration>>,
    after: Option<&BTreeMap<String, Duration>>,
    samples: u64,
) -> Vec<(String, f64)> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    if samples == 0 {
        return Vec::new();
    }
    after
        .iter()
        .filter(|(kind, _)| kind.starts_with("pipeline-"))
        .map(|(kind, &t)| {
            let used = t.saturating_sub(before.get(kind).copied().unwrap_or(Duration::ZERO));
            (kind.clone(), used.as_secs_f64() * 1e6 / samples as f64)
        })
        .collect()
}

/// CPU microseconds per sample between two readings of [`cpu_time`].
fn cpu_us_per_sample(
    before: Option<Duration>,
    after: Option<Duration>,
    samples: u64,
) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (samples > 0).then(|| used.as_secs_f64() * 1e6 / samples as f64)
}

/// A point in a run after which it is in steady state: when it was reached, the process's CPU
/// time then, and the samples with a verdict by then.
#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    cpu: Option<Duration>,
    samples: u64,
}

/// Samples per second and CPU microseconds per sample from `mark` to `end`.
fn steady_rate(mark: Option<Mark>, end: Mark) -> (Option<f64>, Option<f64>) {
    let Some(mark) = mark else {
        return (None, None);
    };
    let samples = end.samples.saturating_sub(mark.samples);
    let secs = end.at.saturating_duration_since(mark.at).as_secs_f64();
    let rate = (secs > 0.0 && samples > 0).then(|| samples as f64 / secs);
    (rate, cpu_us_per_sample(mark.cpu, end.cpu, samples))
}

/// What the raw run measured.
struct RawRun {
    elapsed: Duration,
    windows: u64,
    /// After `warm` rounds (every detector created and past its first windows).
    steady: Option<Mark>,
    end: Mark,
}

/// Scores the first `total` samples of the synthetic order (round by round, stream by stream)
/// on `workers` threads, each owning the streams the pipeline's partition gives its worker, with
/// one detector per stream cloned on first use, as a worker does. The threads meet once, after
/// `warm` rounds, to mark the start of the steady state.
fn raw(
    detector: &DynDetector,
    names: &[String],
    pool: &Pool,
    total: u64,
    workers: usize,
    warm: usize,
) -> RawRun {
    let n = names.len().max(1);
    let mut owned: Vec<Vec<usize>> = vec![Vec::new(); workers];
    for (s, name) in names.iter().enumerate() {
        if let Some(list) = owned.get_mut(partition(name, workers)) {
            list.push(s);
        }
    }
    let rounds = usize::try_from(total.div_ceil(n as u64)).unwrap_or(usize::MAX);
    let total_samples = total;
    let total = usize::try_from(total).unwrap_or(usize::MAX);
    let barrier = Barrier::new(owned.len());
    let steady: Mutex<Option<Mark>> = Mutex::new(None);
    let start = Instant::now();
    let windows = thread::scope(|scope| {
        let handles: Vec<_> = owned
            .iter()
            .map(|mine| {
                let (barrier, steady) = (&barrier, &steady);
                scope.spawn(move || {
                    let mut detectors: Vec<Option<Box<DynDetector>>> = Vec::new();
                    detectors.resize_with(mine.len(), || None);
                    let mut windows = 0u64;
                    for t in 0..rounds {
                        if t == warm && barrier.wait().is_leader() {
                            *steady.lock().unwrap_or_else(PoisonError::into_inner) = Some(Mark {
                                at: Instant::now(),
                                cpu: cpu_time(),
                                samples: (warm * n) as u64,
                            });
                        }
                        for (&s, slot) in mine.iter().zip(detectors.iter_mut()) {
                            if t * n + s >= total {
                                break;
                            }
                            let d = slot.get_or_insert_with(|| Box::new(detector.clone()));
                            let verdict = d.push(pool.row(t, s));
                            windows += u64::from(verdict.score().is_some_and(|s| s.fresh));
                            black_box(&verdict);
                        }
                    }
                    windows
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(0))
            .sum::<u64>()
    });
    let end = Mark {
        at: Instant::now(),
        cpu: cpu_time(),
        samples: total_samples,
    };
    RawRun {
        elapsed: end.at.saturating_duration_since(start),
        windows,
        steady: steady.into_inner().unwrap_or_else(PoisonError::into_inner),
        end,
    }
}

/// Runs the benchmark: `args.rounds` rounds, reported by the round with the median ratio.
///
/// # Errors
/// [`Error::Usage`] for impossible sizes; [`Error::Pipeline`] when the pipeline fails.
pub fn measure(args: &PipelineArgs) -> Result<PipelineFigures> {
    let mut rounds = (0..args.rounds.max(1))
        .map(|_| measure_round(args))
        .collect::<Result<Vec<_>>>()?;
    let round_ratios: Vec<f64> = rounds.iter().map(|f| f.ratio).collect();
    let round_steady_ratios = rounds.iter().map(|f| f.steady_ratio).collect();
    rounds.sort_by(|a, b| a.ratio.total_cmp(&b.ratio));
    let mut median = rounds.swap_remove(rounds.len() / 2);
    median.round_ratios = round_ratios;
    median.round_steady_ratios = round_steady_ratios;
    Ok(median)
}

/// One round: the pipeline for `args.seconds`, then the raw run of the same samples.
fn measure_round(args: &PipelineArgs) -> Result<PipelineFigures> {
    if args.streams == 0 || args.channels == 0 || args.window == 0 {
        return Err(Error::Usage(
            "--streams, --channels and --window must be at least 1".into(),
        ));
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        return Err(Error::Usage("--seconds must be positive".into()));
    }
    let hop = args.hop.unwrap_or(args.window).clamp(1, args.window);
    let workers = args.workers.max(1);
    let pool = Arc::new(Pool::new(usize::from(args.channels), args.seed));
    let bytes = model(args, hop, &pool)?;
    let detector = DynDetector::from_bytes(&bytes)
        .map_err(|e| Error::Usage(format!("cannot load the model: {e}")))?;
    let names: Arc<Vec<String>> = Arc::new((0..args.streams).map(|s| format!("s{s}")).collect());
    let mut models = ModelMap::new();
    models.add_bytes("*", "reference", &bytes)?;
    let sink = CountingSink::new();
    let cpu_start = cpu_time();
    let running = Builder::new(models)
        .workers(workers)
        .batch(args.batch)
        .queue(args.queue)
        .backpressure(Backpressure::Block)
        .emit(args.emit.emit())
        .sources_on_workers(!args.routed)
        .source(Synthetic {
            streams: names.iter().cloned().enumerate().collect(),
            pool: Arc::clone(&pool),
        })
        .sink(sink.clone())
        .start()?;
    // Steady state starts once every stream has had `warm` samples (its detector created and
    // its first windows scored); the start-to-drained figures include that setup.
    let warm = 2 * usize::from(args.window);
    let warm_samples = (warm * args.streams) as u64;
    let mut steady: Option<Mark> = None;
    let mut threads_at_steady = None;
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    while Instant::now() < deadline && !running.sources_finished() {
        thread::sleep((deadline - Instant::now()).min(Duration::from_millis(20)));
        if steady.is_none() {
            let m = running.metrics();
            let verdicts = m.scored + m.warming + m.faulted;
            if verdicts >= warm_samples {
                steady = Some(Mark {
                    at: Instant::now(),
                    cpu: cpu_time(),
                    samples: verdicts,
                });
                threads_at_steady = thread_cpu();
            }
        }
    }
    // Read before the stop: the pipeline's threads are gone once it has drained.
    let threads_at_stop = thread_cpu();
    let verdicts_at_stop = {
        let m = running.metrics();
        m.scored + m.warming + m.faulted
    };
    running.stop();
    let report = running.wait()?;
    let cpu_pipeline = cpu_time();
    let m = report.metrics;
    let end = Mark {
        at: Instant::now(),
        cpu: cpu_pipeline,
        samples: m.scored + m.warming + m.faulted,
    };
    let (steady_samples_per_s, steady_cpu) = steady_rate(steady, end);
    let peak = peak_memory();
    let elapsed = m.elapsed.as_secs_f64().max(1e-9);
    let r = raw(&detector, &names, &pool, m.samples_in, workers, warm);
    let (raw_steady_samples_per_s, raw_steady_cpu) = steady_rate(r.steady, r.end);
    let (raw_windows, cpu_raw) = (r.windows, r.end.cpu);
    let raw_s = r.elapsed.as_secs_f64().max(1e-9);
    let samples_per_s = m.samples_in as f64 / elapsed;
    let raw_samples_per_s = m.samples_in as f64 / raw_s;
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
        elapsed_s: elapsed,
        samples_per_s,
        windows_per_s: m.windows as f64 / elapsed,
        latency_p50_us: m.latency_p50.as_secs_f64() * 1e6,
        latency_p99_us: m.latency_p99.as_secs_f64() * 1e6,
        peak_memory_bytes: peak,
        cpu_us_per_sample: cpu_us_per_sample(cpu_start, cpu_pipeline, m.samples_in),
        dropped: m.dropped,
        lost: m.samples_in.saturating_sub(m.accounted()),
        faulted: m.faulted,
        raw_samples_per_s,
        raw_windows_per_s: raw_windows as f64 / raw_s,
        raw_elapsed_s: raw_s,
        raw_cpu_us_per_sample: cpu_us_per_sample(cpu_pipeline, cpu_raw, m.samples_in),
        ratio: samples_per_s / raw_samples_per_s.max(1e-9),
        round_ratios: Vec::new(),
        round_steady_ratios: Vec::new(),
        steady_samples_per_s,
        raw_steady_samples_per_s,
        steady_ratio: steady_samples_per_s
            .zip(raw_steady_samples_per_s)
            .map(|(p, r)| p / r.max(1e-9)),
        steady_cpu_us_per_sample: steady_cpu,
        raw_steady_cpu_us_per_sample: raw_steady_cpu,
        steady_cpu_us_per_sample_by_thread: per_thread_kind(
            threads_at_steady.as_ref(),
            threads_at_stop.as_ref(),
            verdicts_at_stop.saturating_sub(steady.map_or(0, |s| s.samples)),
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
    if f.round_ratios.len() > 1 {
        println!(
            "{} rounds (pipeline, then raw); the figures are the round with the median ratio",
            f.round_ratios.len()
        );
    }
    println!(
        "pipeline: {} samples in {:.2} s (start to drained): {}samples/s, {}windows/s, {} records",
        f.samples,
        f.elapsed_s,
        rate(f.samples_per_s),
        rate(f.windows_per_s),
        f.records
    );
    println!(
        "latency (ingestion to verdict): p50 {:.0} us, p99 {:.0} us",
        f.latency_p50_us, f.latency_p99_us
    );
    match f.peak_memory_bytes {
        Some(b) => println!("peak memory (VmHWM): {:.1} MiB", b as f64 / 1048576.0),
        None => println!("peak memory: unavailable"),
    }
    println!(
        "dropped {}, lost {}, faulted {}",
        f.dropped, f.lost, f.faulted
    );
    println!(
        "raw scoring ({} threads calling DynDetector::push, no pipeline): {}samples/s, \
         {}windows/s in {:.2} s",
        f.workers,
        rate(f.raw_samples_per_s),
        rate(f.raw_windows_per_s),
        f.raw_elapsed_s
    );
    let cpu =
        |x: Option<f64>| x.map_or_else(|| "unavailable".to_owned(), |us| format!("{us:.3} us"));
    println!(
        "CPU per sample (all threads): pipeline {}, raw {}",
        cpu(f.cpu_us_per_sample),
        cpu(f.raw_cpu_us_per_sample)
    );
    let ratios: Vec<String> = f.round_ratios.iter().map(|r| format!("{r:.3}")).collect();
    println!(
        "pipeline / raw (samples/s): {:.3}, the median of {} round(s): {}",
        f.ratio,
        f.round_ratios.len(),
        ratios.join(" ")
    );
    let opt_rate = |x: Option<f64>| x.map_or_else(|| "n/a ".to_owned(), rate);
    println!(
        "steady state (after each stream's first {} samples): pipeline {}samples/s, raw \
         {}samples/s, ratio {}; CPU per sample: pipeline {}, raw {}",
        2 * u32::from(f.window),
        opt_rate(f.steady_samples_per_s),
        opt_rate(f.raw_steady_samples_per_s),
        f.steady_ratio
            .map_or_else(|| "n/a".to_owned(), |r| format!("{r:.3}")),
        cpu(f.steady_cpu_us_per_sample),
        cpu(f.raw_steady_cpu_us_per_sample)
    );
    if !f.steady_cpu_us_per_sample_by_thread.is_empty() {
        let parts: Vec<String> = f
            .steady_cpu_us_per_sample_by_thread
            .iter()
            .map(|(kind, us)| format!("{kind} {us:.3} us"))
            .collect();
        println!(
            "steady-state CPU per sample by thread (raw: {}): {}",
            cpu(f.raw_steady_cpu_us_per_sample),
            parts.join(", ")
        );
    }
    Ok(())
}
