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
//! With the source split over the workers (the default since 2026-12-03), `sensorae bench
//! pipeline --streams 10000 --channels 8 --seconds 10` on the otherwise idle 2-core machine,
//! 8 runs of 3 or 5 rounds (each round the pipeline and then the raw scoring of the same
//! samples), 36 rounds in all over two hours: pipeline / raw **0.82** (median; rounds 0.58-1.10,
//! run medians 0.70-0.96). The first 21 rounds, while the machine was faster (raw steady-state
//! CPU 0.068-0.084 us per sample), gave a median of 0.895; the last 15, after the alarm-bit
//! change below but with raw at 0.064-0.107 us, 0.76: this VM's speed drifts within seconds and
//! the pipeline seems to lose more of it than raw scoring. 14.8-24.2 M samples/s and 0.92-1.51 M
//! windows/s through the pipeline, latency p50 2-4 us and p99 45-82 us (per lot of 64 samples,
//! no queueing left), peak memory 32 MiB after 3 rounds, nothing dropped or lost. What the
//! workers add to raw scoring is the per-sample verdict accounting (status, counters, alarm
//! events, a record per window): a build that only pushed and counted windows measured 0.93 and
//! 0.98 against 0.88 and 0.89 for the full one (4 alternating runs of 4 rounds of 6 s), and
//! `perf` puts `Scorer::score_one`, `Router::push_key` and the clock reads at about 5 % of all
//! cycles. Writing a stream's alarm bit only when it changes (it dirtied every slot's line each
//! round) is the one change of it kept. Whether running raw after the pipeline biases the
//! ratio was checked with a build that also scored 40 M samples raw *before* each pipeline
//! run (10 rounds of 2 s): raw before 23.3 M samples/s, raw after 23.4 M (means), pipeline 21.0
//! M, so no order bias and a ratio of 0.90 by means (0.88 by medians); `--seconds 2 --rounds
//! 15` gave medians of 0.81 and 0.86. In `perf`, the detector's own `push_inner` takes 0.87 to
//! 1.34 times its raw share in the pipeline phase from one profile to the next, so most of the
//! spread is the memory the scoring waits on, not the pipeline's code. So the within-10 % goal
//! is not met reliably here. The
//! same command with `--routed` (the source on its own thread through the queues, as before), 6
//! rounds in the faster period: 0.51-0.67 (median 0.58), 15.1-17.0 M samples/s, p50 3.9-4.2 ms
//! and p99 9-12 ms of queueing, workers 0.092-0.103 us and the source 0.012-0.014 us per
//! sample. Sources that cannot split (stdin, MQTT, long-format files) still pay that: the
//! figures below are theirs.
//!
//! Re-measured later on 2026-12-02, same command, after the core's push-side changes for the
//! Cortex-M (1.03-1.10x faster scoring on hosts): 10.4-12.0 M samples/s through the pipeline
//! (5 runs), raw 25.2-25.7 M, pipeline / raw **0.41-0.47**; steady-state CPU per sample: workers
//! 0.113-0.118 us against 0.076-0.078 us raw, the source **0.046-0.056 us**, the sink 0.002 us.
//! The build from before those changes (aca0513) gives the same on the same machine in
//! alternating runs (0.446 / 0.406 against 0.411 / 0.412, source 0.040-0.054 us), so the drop
//! from 0.62 is the VM, not the code: scoring on one core got faster (raw 21.5 -> 25.5 M) and
//! the source thread's CPU per sample tripled with the same code. `perf record` of a 6 s run:
//! `Router::push_key` (a copy of 32 bytes and a 16-byte entry into the batch) takes 17 % of all
//! cycles, nearly all of it on the instructions right after its stores, i.e. waiting for stores
//! to complete: consistent with every batch line having to be taken back from the worker core
//! that read it last. Batches of 512 or 2,048 samples instead of 64: 0.42 / 0.43 (source
//! 0.046 us), so that cost is per sample, not per batch. Entries of 8 bytes instead of 24
//! (sequence numbers in a side vector only for batches that have them), so 40 bytes cross per
//! sample instead of 56: ratio 0.440 against 0.423 (medians of 3 alternating runs), within the
//! noise; not kept.
//!
//! Earlier that day: final build of 2026-12-02 (the core's `push` now runs its kernel compiled for AVX2, so the
//! reference model scores about 1.4x faster than in the figures below), same command, 3 runs on
//! the idle 2-core machine: **13.3 M samples/s** (13.0-13.8) through the pipeline, 833 k
//! windows/s, p50 4.7 ms and p99 12.6-13.6 ms of queueing, peak memory 37 MiB, nothing dropped or
//! lost; raw scoring 21.5 M (17.9-22.2), so pipeline / raw **0.62** (0.59-0.77). Steady-state CPU
//! per sample: workers 0.115 us (0.114-0.117) against 0.086-0.108 us for the raw threads, the
//! source 0.015 us, the sink 0.002 us. The within-10 % goal is further away than before, not
//! because the pipeline got slower (it is 2.4x faster) but because the scoring it is compared
//! with got cheaper while the cost of moving a sample between threads did not: a sample is
//! about 56 bytes (values and entry) written on the source's core and read on a worker's, which
//! with the source's own work is 0.03-0.05 us per sample against 0.09 us of scoring. With
//! `--workers 1` (the source gets the other core) the ratio is 0.58 / 0.86 / 0.74 (4.5-5.0 M
//! samples/s against 5.9-8.4 M raw on one thread; the one worker then holds all 10,000 streams'
//! state: 0.20 us per sample against 0.12-0.17 us raw). The 2 M samples/s goal holds with room.
//!
//! Before that, `sensorae bench pipeline --streams 10000 --channels 8 --seconds 10` with the current
//! defaults (queues of [`DEFAULT_QUEUE`] samples, batches of 64, sources woken by the worker at
//! half queue, emptied batches reused, no division per routed sample, per-worker channel
//! names), 3 runs on the otherwise idle 2-core machine: 5.48 M samples/s (5.31-6.10) through
//! the pipeline, raw 6.77 M (6.36-8.28), pipeline / raw 0.79 (0.66-0.96); p50 12.6 ms and p99
//! 27 ms (queueing under full load), peak memory 37 MiB, nothing dropped or lost. The rates of
//! this VM drift by 2x over the day (an hour earlier the same build did 6.5-9.6 M through the
//! pipeline), so compare within a run. The bench prints steady-state CPU per sample by kind of
//! thread: workers 0.306 us (0.270-0.320) against 0.286 us for the raw threads, the source
//! 0.023 us, the sink 0.003 us. With `--workers 1` (the source and sink get the other core) the
//! pipeline matches raw scoring on one thread (ratios 1.21, 0.73, 1.03). The within-10 % goal
//! with 2 workers on 2 cores is still missed: callgrind counts ~14 % more instructions in all,
//! the rest is the cache and scheduling cost of a third busy thread on two cores. Queue size was
//! the largest lever (4 Ki samples: 5.0-5.6 M samples/s; 128 Ki: 6.8-7.1 M, in one sitting).
//!
//! Earlier, with queues of 4096 samples (the reference model, C = 8, W = 16, H = 32, Z = 8,
//! hop = window; 2 workers, batches of 64, blocking back-pressure, a counting sink, a record
//! per window), median of 5 runs on the 2-core
//! development machine while other builds kept its load average near 4 (figures in brackets:
//! the range of the 5 runs):
//! - 1.62 M samples/s (1.41-2.60), 101 k windows/s, start to drained; no sample dropped or lost;
//! - the same samples scored by 2 threads calling `DynDetector::push` directly: 2.23 M
//!   samples/s (1.91-3.53); pipeline / raw 0.71 (0.63-0.90), the same in steady state (after
//!   each stream's first 32 samples);
//! - CPU time per sample, which the other load distorts less: 0.66 us through the pipeline,
//!   0.49 us raw (steady state 0.64 and 0.48). In a profile taken at a quieter moment (3.2 M
//!   against 3.6 M samples/s in steady state) the workers' scoring costs what raw scoring costs,
//!   and the source, the sink, the worker loop and the kernel add about 12%; under load the gap
//!   grows (a third more CPU per sample here), as the extra threads share the two cores with
//!   everything else;
//! - latency p50 1.0 ms, p99 38 ms: with blocking back-pressure the queues stay full, so this is
//!   queueing time (plus descheduling on the loaded machine), timed per batch;
//! - peak memory (VmHWM) 370 MiB: each stream's detector held its own copy of the model's 8,904
//!   parameters (35.6 KB), 356 MB for 10,000 streams, so a scored window read its parameters
//!   from DRAM (fixed since: the clones share them, see below);
//! - with the weights shared between a model's per-stream detectors (the core's heap storage
//!   keeps them behind an `Arc`; before, every stream copied 35.6 KB), same command, 3 runs at
//!   load average 1.3-1.8: 7.13 M samples/s (5.27-7.89) through the pipeline, 14.3 M (8.5-15.3)
//!   raw, pipeline / raw 0.55 (0.47-0.62), peak memory 31.8 MB instead of 370 MiB, CPU per
//!   sample 0.24 us against 0.13 us raw, p50 0.29 ms, p99 5.2 ms, nothing dropped or lost. The
//!   weights now stay in cache, which is most of the gain; the ratio goal (within 10 % of raw)
//!   is still missed: per-sample routing and batching cost about as much as the scoring itself;
//! - on the final build before that change, at a quiet moment (load average 1.6, 3 runs): 2.78 M
//!   samples/s (2.30-3.03) through the pipeline, 4.88 M (3.95-5.36) raw, pipeline / raw 0.58
//!   (0.52-0.62); CPU per sample 0.65 us against 0.40 us. The 2 M samples/s goal holds when the
//!   machine is not shared; the within-10%-of-raw goal does not: with hop = window a sample costs
//!   the raw path little more than a ring write, so the pipeline's per-sample bookkeeping
//!   (routing, batching, a stream lookup) is the larger part;
//! - before the flat batches (a `Vec` and an `Arc` clone per sample, two clock reads per sample,
//!   a wake-up of the blocked source per batch, and the previous core): 0.49 M samples/s,
//!   pipeline / raw 0.31-0.33.
//!
//! With `cargo bench -p sensorae-host --bench pipeline` (hop 1, 64 streams; measured before the
//! flat batches, figures vary by about 30% with the load):
//! - scoring: 2.5-3.7 us per sample on one thread;
//! - the whole path without scoring (streams no model matches: source, routing, queue, worker
//!   lookup): 0.2-0.35 us per sample with batches of 64-256, 0.6-0.9 us with batches of 1;
//! - 2 workers: 210-260 thousand samples per second over 64 streams; SKAB's 34 files (37,401
//!   rows) replay in about 0.4 s;
//! - latency: p50 0.08 ms, p99 3 ms for paced replay; over MQTT on loopback p50 2-4 ms, which is
//!   mostly the 5 ms batch linger ([`mqtt::MqttSource::linger`]).

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
pub use router::{Backpressure, Router, StopFlag, StreamKey, fnv1a, partition};
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
    sources: Vec<(String, JoinHandle<Result<(), PipelineError>>)>,
    /// Parts of a split source still reading on their workers.
    parts_running: Arc<AtomicUsize>,
    workers: Vec<JoinHandle<Result<Vec<String>, PipelineError>>>,
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
