//! Counters and latency histograms, written by one thread each and summed on demand.

use core::{
    fmt,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::Duration,
};
use std::sync::{Arc, Mutex, PoisonError};

/// Sub-buckets per power of two in the latency histogram (relative error below 1/8).
const SUB: usize = 8;
/// Buckets: values up to 2^40 ns (about 18 minutes); larger ones land in the last.
const BUCKETS: usize = 40 * SUB;

/// One thread's counters. Atomics so that the metrics reporter can read them while the owner
/// writes, without locks; each thread owns its own set so no cache line is shared on the hot path.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) samples_in: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) malformed: AtomicU64,
    pub(crate) scored: AtomicU64,
    pub(crate) warming: AtomicU64,
    pub(crate) faulted: AtomicU64,
    pub(crate) unmatched: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) gaps: AtomicU64,
    pub(crate) windows: AtomicU64,
    pub(crate) alarms: AtomicU64,
    pub(crate) emitted: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl Counters {
    pub(crate) fn new() -> Self {
        Counters {
            samples_in: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            malformed: AtomicU64::new(0),
            scored: AtomicU64::new(0),
            warming: AtomicU64::new(0),
            faulted: AtomicU64::new(0),
            unmatched: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            gaps: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            alarms: AtomicU64::new(0),
            emitted: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Relaxed);
        }
    }
}

/// A worker's latency histogram since it last added it to its [`Counters`] (once per batch or
/// lot, to keep atomics off the per-sample path).
#[derive(Debug)]
pub(crate) struct LocalLatency {
    buckets: Box<[u64]>,
    /// The buckets holding counts: a lot is timed once, so this is one or a few, and adding
    /// them costs that many atomics rather than a pass over every bucket.
    touched: Vec<usize>,
}

impl LocalLatency {
    pub(crate) fn new() -> Self {
        LocalLatency {
            buckets: vec![0; BUCKETS].into_boxed_slice(),
            touched: Vec::new(),
        }
    }

    #[cfg(test)]
    pub(crate) fn record(&mut self, d: Duration) {
        self.record_n(d, 1);
    }

    /// Counts `n` samples that took `d`.
    pub(crate) fn record_n(&mut self, d: Duration, n: u64) {
        if n == 0 {
            return;
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let b = bucket_of(ns);
        if let Some(count) = self.buckets.get_mut(b) {
            if *count == 0 {
                self.touched.push(b);
            }
            *count += n;
        }
    }

    /// Adds the counts to `counters` and starts again from zero.
    pub(crate) fn take_into(&mut self, counters: &Counters) {
        for b in self.touched.drain(..) {
            if let (Some(count), Some(slot)) = (self.buckets.get_mut(b), counters.latency.get(b)) {
                slot.fetch_add(core::mem::take(count), Relaxed);
            }
        }
    }
}

/// Log-linear bucket of a value in nanoseconds.
fn bucket_of(ns: u64) -> usize {
    if ns < SUB as u64 {
        return ns as usize;
    }
    let exp = 63 - ns.leading_zeros() as usize; // ns >= 8, so exp >= 3
    let sub = ((ns >> (exp - 3)) & (SUB as u64 - 1)) as usize;
    ((exp - 2) * SUB + sub).min(BUCKETS - 1)
}

/// The smallest value that falls in bucket `b` (the reported quantile is this lower edge).
fn bucket_floor(b: usize) -> u64 {
    if b < SUB {
        return b as u64;
    }
    let exp = b / SUB + 2;
    let sub = (b % SUB) as u64;
    (SUB as u64 + sub) << (exp - 3)
}

/// All counter sets of one pipeline.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    sets: Mutex<Vec<Arc<Counters>>>,
}

impl Registry {
    pub(crate) fn register(&self) -> Arc<Counters> {
        let c = Arc::new(Counters::new());
        self.sets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::clone(&c));
        c
    }

    pub(crate) fn snapshot(
        &self,
        queues: Vec<usize>,
        sink_queue: usize,
        elapsed: Duration,
    ) -> MetricsSnapshot {
        let sets = self.sets.lock().unwrap_or_else(PoisonError::into_inner);
        let sum =
            |f: fn(&Counters) -> &AtomicU64| sets.iter().map(|c| f(c).load(Relaxed)).sum::<u64>();
        let mut hist = vec![0u64; BUCKETS];
        for c in sets.iter() {
            for (h, a) in hist.iter_mut().zip(c.latency.iter()) {
                *h += a.load(Relaxed);
            }
        }
        let q = |p: f64| quantile(&hist, p);
        MetricsSnapshot {
            samples_in: sum(|c| &c.samples_in),
            scored: sum(|c| &c.scored),
            warming: sum(|c| &c.warming),
            faulted: sum(|c| &c.faulted),
            dropped: sum(|c| &c.dropped),
            unmatched: sum(|c| &c.unmatched),
            duplicates: sum(|c| &c.duplicates),
            malformed: sum(|c| &c.malformed),
            gaps: sum(|c| &c.gaps),
            windows: sum(|c| &c.windows),
            alarms: sum(|c| &c.alarms),
            emitted: sum(|c| &c.emitted),
            batches: sum(|c| &c.batches),
            reconnects: sum(|c| &c.reconnects),
            queue_depths: queues,
            sink_queue,
            latency_p50: q(0.50),
            latency_p99: q(0.99),
            latency_max: q(1.0),
            elapsed,
        }
    }
}

fn quantile(hist: &[u64], p: f64) -> Duration {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return Duration::ZERO;
    }
    // The rank of the p-quantile, 1-based: the smallest bucket whose cumulative count reaches it.
    let rank = ((p * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (b, &n) in hist.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Duration::from_nanos(bucket_floor(b));
        }
    }
    Duration::ZERO
}

/// The pipeline's counters at one moment, summed over all threads.
///
/// Every sample counted in `samples_in` ends in exactly one of `scored`, `warming`, `faulted`,
/// `dropped`, `unmatched` or `duplicates` once the pipeline has drained;
/// [`MetricsSnapshot::balanced`] checks that.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSnapshot {
    /// Samples accepted from sources.
    pub samples_in: u64,
    /// Samples whose verdict carried a score (normal or anomalous).
    pub scored: u64,
    /// Samples taken while a stream's window was filling.
    pub warming: u64,
    /// Samples the detector reported as sensor faults.
    pub faulted: u64,
    /// Samples dropped by the drop-oldest policy on a full queue.
    pub dropped: u64,
    /// Samples of streams no model pattern matches.
    pub unmatched: u64,
    /// Samples whose sequence number was already seen for their stream (redelivered).
    pub duplicates: u64,
    /// Input lines or messages that could not be parsed (never counted in `samples_in`).
    pub malformed: u64,
    /// Sequence numbers skipped within a stream (samples lost before they reached us).
    pub gaps: u64,
    /// Windows scored (fresh scores; with hop 1 one per scored sample).
    pub windows: u64,
    /// Alarm onsets.
    pub alarms: u64,
    /// Records handed to the sinks.
    pub emitted: u64,
    /// Batches moved from sources to workers.
    pub batches: u64,
    /// Broker reconnections.
    pub reconnects: u64,
    /// Batches waiting in each worker's queue (none listed when the source runs on the
    /// workers, which have no queue).
    pub queue_depths: Vec<usize>,
    /// Batches of records waiting for the sinks.
    pub sink_queue: usize,
    /// Median time from ingestion to verdict (bucket lower edge, within 1/8).
    pub latency_p50: Duration,
    /// 99th percentile time from ingestion to verdict.
    pub latency_p99: Duration,
    /// Largest time from ingestion to verdict (bucket lower edge).
    pub latency_max: Duration,
    /// Time since the pipeline started.
    pub elapsed: Duration,
}

impl MetricsSnapshot {
    /// Samples with a known outcome.
    #[must_use]
    pub fn accounted(&self) -> u64 {
        self.scored + self.warming + self.faulted + self.dropped + self.unmatched + self.duplicates
    }

    /// Every sample that entered has an outcome (true once the pipeline has drained).
    #[must_use]
    pub fn balanced(&self) -> bool {
        self.accounted() == self.samples_in
    }

    /// Samples with a verdict per second of elapsed time.
    #[must_use]
    pub fn throughput(&self) -> f64 {
        let verdicts = self.scored + self.warming + self.faulted;
        verdicts as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl fmt::Display for MetricsSnapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:.1}s in={} scored={} warming={} faulted={} dropped={} unmatched={} dup={} \
             malformed={} gaps={} windows={} alarms={} queues={:?} sink={} \
             latency p50={}us p99={}us ({:.0} samples/s)",
            self.elapsed.as_secs_f64(),
            self.samples_in,
            self.scored,
            self.warming,
            self.faulted,
            self.dropped,
            self.unmatched,
            self.duplicates,
            self.malformed,
            self.gaps,
            self.windows,
            self.alarms,
            self.queue_depths,
            self.sink_queue,
            self.latency_p50.as_micros(),
            self.latency_p99.as_micros(),
            self.throughput(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for ns in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            17,
            100,
            1000,
            123_456,
            10_000_000_000,
        ] {
            let b = bucket_of(ns);
            assert!(b >= last, "{ns}");
            last = b;
            let lo = bucket_floor(b);
            assert!(lo <= ns && ns - lo <= ns / 8 + 1, "{ns} -> {lo}");
        }
    }

    #[test]
    fn quantiles_of_a_uniform_histogram() {
        let mut local = LocalLatency::new();
        for us in 1..=1000u64 {
            local.record(Duration::from_micros(us));
        }
        let c = Counters::new();
        local.take_into(&c);
        let reg = Registry::default();
        reg.sets.lock().unwrap().push(Arc::new(c));
        let s = reg.snapshot(vec![], 0, Duration::from_secs(1));
        let p50 = s.latency_p50.as_micros() as f64;
        let p99 = s.latency_p99.as_micros() as f64;
        assert!((p50 - 500.0).abs() < 500.0 / 8.0 + 1.0, "{p50}");
        assert!((p99 - 990.0).abs() < 990.0 / 8.0 + 1.0, "{p99}");
    }
}
