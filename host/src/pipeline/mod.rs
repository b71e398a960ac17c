//! The streaming pipeline: sources -> per-stream windowing and scoring on worker threads ->
//! sinks, over bounded [`crossbeam_channel`] queues.
//!
//! ```
//! use sensorae_host::pipeline::{Builder, IterSource, MemorySink, ModelMap};
//!
//! let model = sensorae::testing::tiny_model_bytes(); // 2 channels, window 4
//! let mut models = ModelMap::new();
//! models.add_bytes("pump-*", "tiny", &model)?;
//! // 4 interleaved streams of 25 samples each.
//! let samples = (0..100).map(|t| (format!("pump-{}", t % 4), vec![(t as f32 * 0.1).sin(), 0.5]));
//! let out = MemorySink::new();
//! let report = Builder::new(models)
//!     .workers(2)
//!     .source(IterSource::new(samples))
//!     .sink(out.clone())
//!     .run()?;
//! let m = &report.metrics;
//! assert_eq!(m.samples_in, 100);
//! assert_eq!(m.warming, 4 * 3); // each stream's first W - 1 samples
//! assert!(m.balanced()); // in == scored + warming + faulted + dropped + unmatched + duplicates
//! assert_eq!(out.records().len(), 100);
//! # Ok::<(), sensorae_host::pipeline::PipelineError>(())
//! ```
//!
//! # Streams and workers
//! A stream (one sensor's samples, named by its id) needs its own window and alarm state, so
//! each stream lives on exactly one worker: the source side hashes the id onto a worker
//! ([`partition`], like Kafka's key partitioning) and each worker clones a detector per stream
//! from the model whose pattern matches the id ([`ModelMap`]). Samples of one stream are scored
//! in the order the source read them.
//!
//! # Batches
//! Sources hand samples to a [`Router`], which sends them to workers in batches (up to
//! [`Builder::batch`] samples, and whatever is pending whenever the source pauses), so the
//! cost of a queue operation is shared by a batch: one channel operation per sample would cost
//! about as much as scoring a small model. A batch stores its samples flat (stream ids, value
//! ends, sequence numbers, and one array of values), so a sample costs no allocation and no
//! shared reference count. Stream ids are interned once per pipeline; a source that knows its
//! streams interns them up front ([`Router::intern`]) and pushes by [`StreamKey`], skipping the
//! hash of the id per sample.
//!
//! # Sources on the workers
//! Moving a sample from a source thread to a worker costs about as much as scoring it: its
//! values and entry are written on one core and read on another, and on 2 cores the source
//! thread takes CPU time from the workers. A source that knows its streams before it reads
//! (per-file [`CsvReplay`], or any [`Source::split`]) is therefore split by stream instead: one
//! part per worker, holding exactly the streams [`partition`] gives that worker, runs on the
//! worker's own thread and scores each sample as it reads it, with no queue and no copy in
//! between, as a Kafka Streams thread processes the partitions it consumes. A stream still
//! lives on exactly one worker, in order; counters, latency (per lot of [`Builder::batch`]
//! samples), records, sinks, stopping and failures work as with queues. This is the default
//! for a lone source with blocking back-pressure ([`Builder::sources_on_workers`]); several
//! sources, drop-oldest, and sources that learn their streams while reading (long-format
//! files, stdin, MQTT) run on their own threads and feed the queues. A part that pushes a
//! stream of another worker stops the pipeline with an error rather than split the stream.
//!
//! # Back-pressure
//! Queues are bounded ([`Builder::queue`]). By default a full queue blocks the source
//! ([`Backpressure::Block`]) until the worker has taken half of it; the worker then wakes it
//! once (waiting on the channel itself would cost the worker a wake-up, a system call, for every
//! batch it takes). Workers hand emptied batches back to the sources for reuse. With [`Backpressure::DropOldest`] the oldest queued batch is dropped instead,
//! and every dropped sample is counted in [`MetricsSnapshot::dropped`].
//!
//! # Shutdown and accounting
//! The pipeline stops at the end of every source's input, when the [`StopFlag`] is raised
//! (Ctrl-C in the command line), or when a thread fails. Sources stop reading, then every queue
//! drains: each sample that entered ends as scored, warming, faulted, dropped, unmatched (no
//! model) or a duplicate, and [`MetricsSnapshot::balanced`] checks the sum. A failed or panicking
//! thread raises a shared flag; sources stop, the queues drain, and [`Running::wait`] returns
//! the error of the thread that failed first, never hangs.
//!
//! # Metrics
//! [`Running::metrics`] (and [`Builder::metrics_every`]) give counters, queue depths and the
//! p50/p99 time from ingestion to verdict. It is timed per batch, to keep clock reads off the
//! per-sample path: from the router accepting the batch's first sample to the verdict on its
//! last, counted for every sample of the batch (an upper bound per sample; exact for batches of
//! one, and close for paced sources, whose batches are flushed at every pause).
//!
//! # Clustered brokers
//! The shard layout ([`mqtt`]: samples on `sensors/<shard>/<stream>`, each process owning a
//! fixed set of shards under its own client id with a persistent session) needs nothing from the
//! broker but topic routing, so it carries over to a cluster (EMQX, HiveMQ) or to mosquitto
//! brokers joined by bridges, with these limits:
//! - Topics and subscriptions carry over: a cluster routes a message published on any node to the
//!   node its subscriber is connected to; with bridges, only the topics a bridge forwards
//!   (`topic sensors/# out 1` from each edge broker towards the brokers the pipelines use).
//! - Client ids must be unique across the whole cluster: a second connection with the same id
//!   takes the session over and disconnects the first, and the two then take turns.
//! - A persistent session and its QoS 1 queue live on the node the client is connected to (EMQX
//!   unless its durable sessions are enabled; always with bridged mosquitto). A reconnect to
//!   another live EMQX node takes the session over; if that node is down, the queue is gone, and
//!   so is everything queued on a bridged mosquitto the process no longer reaches. HiveMQ
//!   replicates sessions across nodes. Pin each process to one node (no load balancer that moves
//!   its reconnects) or accept the loss; per-stream `seq` numbers count it as `gaps`.
//! - Order holds per publisher connection and topic. A sensor that reconnects through another node
//!   can interleave old and new samples; a `seq` lower than the last one is dropped as a
//!   duplicate, so the window never goes back in time.
//! - Never use shared subscriptions (`$share/...`): the cluster spreads one topic's messages
//!   over the group, so no process sees a whole window (see [`mqtt`]).
//! - Moving a shard to another process: start the new owner first (it subscribes and scores,
//!   each window warming up again), then stop the old one (it drains). Samples of the overlap
//!   are scored by both, none by neither; the other order loses what is published in between
//!   unless the new owner's persistent session already existed.
//!
//! # Measured
//! `sensorae bench pipeline --streams 10000 --channels 8 --seconds 10` (the reference model,
//! hop = window, 2 workers with the source split over them, a counting sink, a record per
//! window; the pipeline and raw scoring take 1-s turns in one process, each pipeline turn
//! compared with the raw turn after it), 5 runs on the otherwise idle 2-core machine on
//! 2026-12-03: pipeline / raw **0.82** (run medians 0.77-0.86; all 50 turns: median 0.80,
//! quartiles 0.73-0.87, range 0.56-1.02); 15.4-21.4 M samples/s and 0.96-1.34 M windows/s
//! through the pipeline against 18.6-27.6 M raw; latency p50 3-4 us, p99 53-82 us; peak memory
//! 31 MiB for 10,000 streams; nothing dropped or lost. Without records (`--emit alarms`):
//! 0.84-0.90 (3 runs). With the source on its own thread (`--routed`, the path of stdin, MQTT
//! and long-format files): 0.56 and 0.61, 11.8-14.2 M samples/s, p99 13-15 ms of queueing.
//!
//! Where the rest goes (`perf` by thread, per sample, relative to raw scoring's total; 6
//! profiles): the pipeline's own code 0.11-0.13 (`Scorer::score_one` 0.06-0.08: the stream's
//! slot, status and counts, and each window's record with its two reference-counted names;
//! `Router::push_key` 0.035-0.045; clock reads and the sink 0.02), and the detector's own
//! `push_inner` costs 1.06-1.35 times what it costs raw beside it: it waits on memory (about
//! 2.3 KB of state per stream, 23 MB for 10,000 streams). So the goal of coming within 10 % of
//! raw scoring is not reached with a verdict per sample and a record per window. The history
//! of these figures, and what was tried, is in `benches/README.md`.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod cli;
mod error;
mod metrics;
mod models;
pub mod mqtt;
mod router;
mod sink;
mod source;
mod worker;

use core::{
    any::Any,
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};
use std::{
    sync::Arc,
    thread::{self, JoinHandle},
    time::Instant,
};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};

pub use error::{ErrorKind, PipelineError};

/// Default capacity of each worker's queue, in samples ([`Builder::queue`]): 64 Ki samples,
/// 3.7 MB per worker at 8 channels. Measured with `sensorae bench pipeline` on 2 cores, 4 Ki
/// samples gave 5.0-5.6 M samples/s and 128 Ki 6.8-7.1 M: the source shares the cores with
/// the workers, and a queue that drains within one of its time slices leaves a worker idle.
pub const DEFAULT_QUEUE: usize = 65_536;
pub use metrics::MetricsSnapshot;
pub use models::{Model, ModelMap, glob_match};
pub use router::{Backpressure, Router, StopFlag, StreamKey, by_worker, fnv1a, partition};
pub use sink::{CountingSink, CsvSink, JsonLines, MemorySink, Sink};
pub use source::{CsvReplay, IterSource, LineFormat, LinesSource, NON_CHANNEL_COLUMNS, Source};
pub use worker::{AlarmEvent, Emit, Record, RecordStatus};

use metrics::Registry;
use router::{Batch, Shared};
use worker::{Scorer, Worker};

/// A function called with the metrics every period.
pub type Reporter = Box<dyn FnMut(&MetricsSnapshot) + Send>;

/// Sets up a pipeline: models, sources, sinks and sizes; then [`start`](Builder::start) or
/// [`run`](Builder::run) it.
pub struct Builder {
    models: ModelMap,
    sources: Vec<Box<dyn Source>>,
    sinks: Vec<Box<dyn Sink>>,
    workers: usize,
    queue: usize,
    batch: usize,
    backpressure: Backpressure,
    emit: Emit,
    reporter: Option<(Duration, Reporter)>,
    stop: StopFlag,
    on_workers: bool,
    #[cfg(test)]
    fail_worker_after: Option<u64>,
}

impl Builder {
    /// A pipeline scoring with `models`, 2 workers, queues of [`DEFAULT_QUEUE`] samples per worker in batches
    /// of 64, blocking back-pressure, a record per sample, no sources and no sinks yet.
    #[must_use]
    pub fn new(models: ModelMap) -> Self {
        Builder {
            models,
            sources: Vec::new(),
            sinks: Vec::new(),
            workers: 2,
            queue: DEFAULT_QUEUE,
            batch: 64,
            backpressure: Backpressure::Block,
            emit: Emit::All,
            reporter: None,
            stop: StopFlag::new(),
            on_workers: true,
            #[cfg(test)]
            fail_worker_after: None,
        }
    }

    /// Adds a source (each runs on its own thread).
    #[must_use]
    pub fn source(mut self, source: impl Source + 'static) -> Self {
        self.sources.push(Box::new(source));
        self
    }

    /// Adds a sink (all sinks run on one sink thread and get every record).
    #[must_use]
    pub fn sink(mut self, sink: impl Sink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Number of worker threads (at least 1).
    #[must_use]
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// Capacity of each worker's queue, in samples (rounded up to whole batches). Under full
    /// load it is also the queueing delay: at the reference model's ~3 M samples/s per worker,
    /// [`DEFAULT_QUEUE`] is about 20 ms. A short queue drains within a scheduler time slice, so
    /// a worker sharing its core with a source idles whenever the source is not running.
    #[must_use]
    pub fn queue(mut self, samples: usize) -> Self {
        self.queue = samples.max(1);
        self
    }

    /// Most samples per batch sent to a worker.
    #[must_use]
    pub fn batch(mut self, samples: usize) -> Self {
        self.batch = samples.max(1);
        self
    }

    /// Whether a lone source that can [`split`](Source::split) by stream runs as one part on
    /// each worker's thread, scoring what it reads with no queue in between (the default; see
    /// [Sources on the workers](crate::pipeline#sources-on-the-workers)). With `false`, or with several
    /// sources, drop-oldest back-pressure or a source that cannot split, sources run on their
    /// own threads and feed the workers' queues.
    #[must_use]
    pub fn sources_on_workers(mut self, yes: bool) -> Self {
        self.on_workers = yes;
        self
    }

    /// What a source does when a worker's queue is full.
    #[must_use]
    pub fn backpressure(mut self, policy: Backpressure) -> Self {
        self.backpressure = policy;
        self
    }

    /// Which verdicts become records.
    #[must_use]
    pub fn emit(mut self, emit: Emit) -> Self {
        self.emit = emit;
        self
    }

    /// Calls `report` with the metrics every `period` while running.
    #[must_use]
    pub fn metrics_every(
        mut self,
        period: Duration,
        report: impl FnMut(&MetricsSnapshot) + Send + 'static,
    ) -> Self {
        self.reporter = Some((period, Box::new(report)));
        self
    }

    /// Uses `flag` to stop the pipeline (for example from a signal handler).
    #[must_use]
    pub fn stop_flag(mut self, flag: StopFlag) -> Self {
        self.stop = flag;
        self
    }

    #[cfg(test)]
    fn fail_worker_after(mut self, n: u64) -> Self {
        self.fail_worker_after = Some(n);
        self
    }

    /// Starts every thread and returns at once.
    ///
    /// # Errors
    /// [`ErrorKind::Config`] without models or sources, `Io` when a thread cannot start.
    pub fn start(mut self) -> Result<Running, PipelineError> {
        if self.models.is_empty() {
            return Err(PipelineError::config("no model"));
        }
        if self.sources.is_empty() {
            return Err(PipelineError::config("no source"));
        }
        let started = Instant::now();
        let parts = self.split_source();
        let shared = Arc::new(Shared {
            stop: self.stop.clone(),
            failed: AtomicBool::new(false),
            models: self.models,
            interner: router::Interner::default(),
            // Parts on the workers have no queues, so no lanes back to a source.
            lanes: if parts.is_some() {
                Vec::new()
            } else {
                (0..self.workers)
                    .map(|_| router::Lane::new(self.queue.div_ceil(self.batch).max(1)))
                    .collect()
            },
        });
        let registry = Arc::new(Registry::default());
        let (sink_tx, sink_rx) = crossbeam_channel::bounded::<Vec<Record>>(4 * self.workers + 4);
        let emit = self.emit;
        #[cfg(test)]
        let fail_after = self.fail_worker_after;
        let scorer = |id: usize| {
            Scorer::new(
                id,
                sink_tx.clone(),
                registry.register(),
                Arc::clone(&shared),
                emit,
                #[cfg(test)]
                fail_after,
            )
        };
        let start = Start {
            scorer: &scorer,
            registry: &registry,
            shared: &shared,
            workers: self.workers,
            batch: self.batch,
        };
        let parts_running = Arc::new(AtomicUsize::new(0));
        let (workers, sources, receivers) = match parts {
            Some((name, parts)) => {
                let workers = spawn_parts(&start, parts, &name, &parts_running)?;
                (workers, Vec::new(), Vec::new())
            }
            None => {
                let r = spawn_routed(&start, self.sources, self.queue, self.backpressure)?;
                (r.workers, r.sources, r.queues)
            }
        };
        // The sink thread ends when the workers' senders and this one (at return) are gone.
        let mut sinks = self.sinks;
        let sink_input = sink_rx.clone();
        let sink = spawn("pipeline-sink", &shared, move || {
            run_sinks(&mut sinks, &sink_input)
        })?;
        let done = Arc::new(AtomicBool::new(false));
        let probe = Probe {
            registry,
            queues: receivers,
            sink_queue: sink_rx,
            started,
        };
        let reporter = match self.reporter {
            Some((period, mut report)) => {
                let probe = probe.clone();
                let done = Arc::clone(&done);
                let h = thread::Builder::new()
                    .name("pipeline-metrics".into())
                    .spawn(move || {
                        loop {
                            let end = Instant::now() + period;
                            while Instant::now() < end {
                                if done.load(Ordering::SeqCst) {
                                    return;
                                }
                                thread::sleep(Duration::from_millis(20).min(period));
                            }
                            report(&probe.snapshot());
                        }
                    })
                    .map_err(|e| PipelineError::io("spawn metrics thread", e))?;
                Some(h)
            }
            None => None,
        };
        Ok(Running {
            sources,
            parts_running,
            workers,
            sink,
            reporter,
            done,
            shared,
            probe,
        })
    }

    /// Starts the pipeline and waits for it to finish (end of input, stop flag or failure).
    ///
    /// # Errors
    /// As [`Builder::start`] and [`Running::wait`].
    pub fn run(self) -> Result<Report, PipelineError> {
        self.start()?.wait()
    }
}

impl Builder {
    /// The lone source's parts, one per worker, with its description, when it is to run on the
    /// workers ([`Builder::sources_on_workers`]).
    fn split_source(&mut self) -> Option<(String, Vec<Box<dyn Source>>)> {
        if !self.on_workers || self.backpressure != Backpressure::Block {
            return None;
        }
        let [source] = self.sources.as_mut_slice() else {
            return None;
        };
        let parts = source.split(self.workers)?;
        if parts.len() != self.workers {
            return None;
        }
        let name = source.describe();
        self.sources.clear();
        Some((name, parts))
    }
}

/// A worker's thread, with what it returns: the streams no model matched.
type WorkerHandle = JoinHandle<Result<Vec<String>, PipelineError>>;
/// A source's description and thread.
type SourceHandle = (String, JoinHandle<Result<(), PipelineError>>);

/// The threads and queues [`spawn_routed`] started.
struct Routed {
    workers: Vec<WorkerHandle>,
    sources: Vec<SourceHandle>,
    /// The workers' queues, for the metrics.
    queues: Vec<Receiver<Batch>>,
}

/// What starting the workers needs from [`Builder::start`].
struct Start<'a> {
    /// Worker `id`'s scoring state.
    scorer: &'a dyn Fn(usize) -> Scorer,
    registry: &'a Registry,
    shared: &'a Arc<Shared>,
    workers: usize,
    batch: usize,
}

/// Starts one worker per part of the split source `name`, each reading its part and scoring
/// what it reads; `running` counts the parts still reading.
fn spawn_parts(
    start: &Start<'_>,
    parts: Vec<Box<dyn Source>>,
    name: &str,
    running: &Arc<AtomicUsize>,
) -> Result<Vec<WorkerHandle>, PipelineError> {
    running.store(parts.len(), Ordering::SeqCst);
    let mut workers = Vec::new();
    for (id, part) in parts.into_iter().enumerate() {
        let router = Router::on_worker(
            (start.scorer)(id),
            start.workers,
            start.batch,
            start.registry.register(),
            Arc::clone(start.shared),
        );
        let (running, name) = (Arc::clone(running), name.to_owned());
        workers.push(spawn(
            &format!("pipeline-worker-{id}"),
            start.shared,
            move || {
                let r = run_part(part, router, &name);
                running.fetch_sub(1, Ordering::SeqCst);
                r
            },
        )?);
    }
    Ok(workers)
}

/// Starts the workers, each fed by a bounded queue, and a thread per source feeding them.
fn spawn_routed(
    start: &Start<'_>,
    sources: Vec<Box<dyn Source>>,
    queue: usize,
    backpressure: Backpressure,
) -> Result<Routed, PipelineError> {
    let batches = queue.div_ceil(start.batch).max(1);
    let (mut workers, mut senders, mut receivers) = (Vec::new(), Vec::new(), Vec::new());
    for id in 0..start.workers {
        let (tx, rx) = crossbeam_channel::bounded::<Batch>(batches);
        let worker = Worker {
            input: rx.clone(),
            scorer: (start.scorer)(id),
        };
        workers.push(spawn(
            &format!("pipeline-worker-{id}"),
            start.shared,
            move || worker.run(),
        )?);
        senders.push(tx);
        receivers.push(rx);
    }
    let mut handles = Vec::new();
    for (i, mut source) in sources.into_iter().enumerate() {
        let name = source.describe();
        let drains = match backpressure {
            Backpressure::Block => Vec::new(),
            Backpressure::DropOldest => receivers.clone(),
        };
        let mut router = Router::new(
            senders.clone(),
            drains,
            start.batch,
            start.registry.register(),
            Arc::clone(start.shared),
        );
        let handle = spawn(&format!("pipeline-source-{i}"), start.shared, move || {
            let r = source.run(&mut router);
            // Whatever was read still goes to the workers, also after an error.
            let flushed = router.flush();
            r.and(flushed)
        })?;
        handles.push((name, handle));
    }
    Ok(Routed {
        workers,
        sources: handles,
        queues: receivers,
    })
}

/// Runs a source part on its worker's thread, scoring as it reads; then flushes and hands the
/// last records to the sink. A read error is reported as the source's (named `name`).
fn run_part(
    mut part: Box<dyn Source>,
    mut router: Router,
    name: &str,
) -> Result<Vec<String>, PipelineError> {
    let read = part.run(&mut router).map_err(|e| match e.kind() {
        ErrorKind::Worker { .. } | ErrorKind::Disconnected(_) => e,
        _ => PipelineError::new(ErrorKind::Source {
            source_name: name.to_owned(),
            message: e.to_string(),
        }),
    });
    // Whatever was read is still scored and handed over, also after a read error.
    let flushed = router.flush();
    let finished = match router.into_scorer() {
        Some(scorer) => scorer.finish(),
        None => Ok(Vec::new()),
    };
    read?;
    flushed?;
    finished
}

/// Raises the failure flag when a pipeline thread unwinds from a panic, so that the other
/// threads stop waiting on it.
struct PanicGuard(Arc<Shared>);

impl Drop for PanicGuard {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.failed.store(true, Ordering::SeqCst);
        }
    }
}

/// Spawns a named pipeline thread. When it returns an error (or panics) it raises the shared
/// failure flag, so that the other threads stop waiting on it; a failure to spawn stops what
/// was already started.
fn spawn<T: Send + 'static>(
    name: &str,
    shared: &Arc<Shared>,
    f: impl FnOnce() -> Result<T, PipelineError> + Send + 'static,
) -> Result<JoinHandle<Result<T, PipelineError>>, PipelineError> {
    let guard = PanicGuard(Arc::clone(shared));
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let r = f();
            if r.is_err() {
                guard.0.failed.store(true, Ordering::SeqCst);
            }
            r
        })
        .map_err(|e| {
            shared.failed.store(true, Ordering::SeqCst);
            PipelineError::io(format!("spawn {name}"), e)
        })
}

/// The sink thread: writes batches as they come, flushes when idle, finishes at the end.
fn run_sinks(
    sinks: &mut [Box<dyn Sink>],
    input: &Receiver<Vec<Record>>,
) -> Result<(), PipelineError> {
    let flush_every = Duration::from_millis(100);
    let mut last_flush = Instant::now();
    loop {
        match input.recv_timeout(flush_every) {
            Ok(records) => {
                for s in sinks.iter_mut() {
                    s.write(&records)?;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        if last_flush.elapsed() >= flush_every {
            for s in sinks.iter_mut() {
                s.flush()?;
            }
            last_flush = Instant::now();
        }
    }
    for s in sinks.iter_mut() {
        s.finish()?;
    }
    Ok(())
}

/// Sends, waiting while the queue is full, but gives up when a thread has failed (the queue's
/// other end may be gone while the metrics probe still holds a receiver).
pub(crate) fn send_or_fail<T>(
    queue: &Sender<T>,
    mut item: T,
    shared: &Shared,
    what: &'static str,
) -> Result<(), PipelineError> {
    loop {
        match queue.send_timeout(item, Duration::from_millis(50)) {
            Ok(()) => return Ok(()),
            Err(SendTimeoutError::Timeout(back)) => {
                if shared.failed.load(Ordering::SeqCst) {
                    return Err(PipelineError::new(ErrorKind::Disconnected(what)));
                }
                item = back;
            }
            Err(SendTimeoutError::Disconnected(_)) => {
                return Err(PipelineError::new(ErrorKind::Disconnected(what)));
            }
        }
    }
}

/// Reads the counters and queue lengths of a running pipeline.
#[derive(Debug, Clone)]
struct Probe {
    registry: Arc<Registry>,
    queues: Vec<Receiver<Batch>>,
    sink_queue: Receiver<Vec<Record>>,
    started: Instant,
}

impl Probe {
    fn snapshot(&self) -> MetricsSnapshot {
        self.registry.snapshot(
            self.queues.iter().map(Receiver::len).collect(),
            self.sink_queue.len(),
            self.started.elapsed(),
        )
    }
}

/// A started pipeline.
pub struct Running {
    sources: Vec<SourceHandle>,
    /// Parts of a split source still reading on their workers.
    parts_running: Arc<AtomicUsize>,
    workers: Vec<WorkerHandle>,
    sink: JoinHandle<Result<(), PipelineError>>,
    reporter: Option<JoinHandle<()>>,
    done: Arc<AtomicBool>,
    shared: Arc<Shared>,
    probe: Probe,
}

/// What a finished pipeline did.
#[derive(Debug, Clone)]
pub struct Report {
    /// Final counters (balanced after a clean run).
    pub metrics: MetricsSnapshot,
    /// Stream ids no model pattern matched.
    pub unmatched_streams: Vec<String>,
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "panicked".to_owned())
}

impl Running {
    /// Asks the pipeline to stop: sources stop reading and the queues drain.
    pub fn stop(&self) {
        self.shared.stop.stop();
    }

    /// The flag [`stop`](Running::stop) raises.
    #[must_use]
    pub fn stop_flag(&self) -> StopFlag {
        self.shared.stop.clone()
    }

    /// Whether every source has stopped reading (end of input, a stop, or a failure).
    #[must_use]
    pub fn sources_finished(&self) -> bool {
        self.sources.iter().all(|(_, h)| h.is_finished())
            && self.parts_running.load(Ordering::SeqCst) == 0
    }

    /// The counters now.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.probe.snapshot()
    }

    /// Waits until every thread has finished and every queue has drained.
    ///
    /// # Errors
    /// The first failure of a source, worker or sink (a panic is reported as a failure of that
    /// thread); errors that only follow from it are not reported.
    pub fn wait(self) -> Result<Report, PipelineError> {
        let mut errors: Vec<PipelineError> = Vec::new();
        for (name, h) in self.sources {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.push(match e.kind() {
                    ErrorKind::Disconnected(_) => e,
                    _ => PipelineError::new(ErrorKind::Source {
                        source_name: name,
                        message: e.to_string(),
                    }),
                }),
                Err(p) => {
                    self.shared.failed.store(true, Ordering::SeqCst);
                    errors.push(PipelineError::new(ErrorKind::Source {
                        source_name: name,
                        message: panic_message(p.as_ref()),
                    }));
                }
            }
        }
        let mut unmatched_streams = Vec::new();
        for (id, h) in self.workers.into_iter().enumerate() {
            match h.join() {
                Ok(Ok(names)) => unmatched_streams.extend(names),
                Ok(Err(e)) => errors.push(e),
                Err(p) => {
                    self.shared.failed.store(true, Ordering::SeqCst);
                    errors.push(PipelineError::new(ErrorKind::Worker {
                        worker: id,
                        message: panic_message(p.as_ref()),
                    }));
                }
            }
        }
        match self.sink.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(match e.kind() {
                ErrorKind::Disconnected(_) => e,
                _ => PipelineError::new(ErrorKind::Sink(e.to_string())),
            }),
            Err(p) => errors.push(PipelineError::new(ErrorKind::Sink(panic_message(
                p.as_ref(),
            )))),
        }
        self.done.store(true, Ordering::SeqCst);
        if let Some(h) = self.reporter {
            let _ = h.join();
        }
        let metrics = self.probe.snapshot();
        // The root cause first: a worker or sink failure explains a source's closed queue.
        errors.sort_by_key(|e| match e.kind() {
            ErrorKind::Worker { .. } | ErrorKind::Sink(_) => 0,
            ErrorKind::Disconnected(_) => 2,
            _ => 1,
        });
        match errors.into_iter().next() {
            Some(e) => Err(e),
            None => {
                unmatched_streams.sort();
                Ok(Report {
                    metrics,
                    unmatched_streams,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endless() -> IterSource {
        IterSource::new((0..usize::MAX).map(|t| (format!("s{}", t % 7), vec![0.1, 0.2])))
    }

    /// A worker that fails mid-stream stops the pipeline with its error (sources blocked on a
    /// full queue see the failure flag), under both back-pressure policies.
    #[test]
    fn worker_failure_stops_the_pipeline() {
        for policy in [Backpressure::Block, Backpressure::DropOldest] {
            let mut models = ModelMap::new();
            models
                .add_bytes("*", "tiny", &sensorae::testing::tiny_model_bytes())
                .unwrap();
            let running = Builder::new(models)
                .workers(3)
                .queue(32)
                .batch(8)
                .backpressure(policy)
                .source(endless())
                .sink(MemorySink::new())
                .fail_worker_after(5000)
                .start()
                .unwrap();
            let (tx, rx) = crossbeam_channel::bounded(1);
            thread::spawn(move || {
                let _ = tx.send(running.wait());
            });
            let err = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("the pipeline hung after a worker failure")
                .unwrap_err();
            assert!(
                matches!(err.kind(), ErrorKind::Worker { .. }),
                "{policy:?}: {err}"
            );
            assert!(err.to_string().contains("injected failure"), "{err}");
        }
    }

    #[test]
    fn configuration_errors() {
        let err = Builder::new(ModelMap::new())
            .source(endless())
            .start()
            .err();
        assert!(matches!(
            err.map(|e| e.to_string()).as_deref(),
            Some("no model")
        ));
        let mut models = ModelMap::new();
        models
            .add_bytes("*", "tiny", &sensorae::testing::tiny_model_bytes())
            .unwrap();
        assert!(Builder::new(models).start().is_err());
    }
}
