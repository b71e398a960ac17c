//! The source side: interns stream ids, partitions samples by stream onto workers and moves
//! them in batches over bounded queues.

use core::sync::atomic::{AtomicBool, Ordering};
use std::{collections::HashMap, sync::Arc, time::Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{ErrorKind, PipelineError, metrics::Counters, models::ModelMap};

/// One sample on its way to a worker.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Stream (sensor) id.
    pub stream: Arc<str>,
    /// Raw values in the model's channel order.
    pub values: Vec<f32>,
    /// Sequence number within the stream, if the source has one (used to drop redeliveries and
    /// count gaps).
    pub seq: Option<u64>,
    /// When the pipeline accepted it.
    pub ingested: Instant,
}

/// What a source does when a worker's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backpressure {
    /// Wait until the worker catches up (nothing is lost; the source slows down).
    #[default]
    Block,
    /// Drop the oldest queued batch to make room; its samples are counted as dropped.
    DropOldest,
}

/// A flag that asks a running pipeline to stop: sources stop reading, then every queue drains.
/// Cloning shares the flag, so a signal handler can hold one.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    /// A flag not yet raised.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag.
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// The flag was raised.
    #[must_use]
    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The worker that owns a stream: a hash of its id modulo the worker count, so a stream always
/// lands on the same worker. The FNV-1a hash is mixed first (splitmix64's finaliser) so that the
/// worker is independent of the MQTT shard (`fnv1a % shard_count`): a process owning shards
/// 0, 2, 4, 6 of 8 still spreads its streams over 2 workers.
#[must_use]
pub fn partition(stream: &str, buckets: usize) -> usize {
    let mut z = fnv1a(stream.as_bytes());
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z % buckets.max(1) as u64) as usize
}

/// 64-bit FNV-1a: stable across processes, platforms and releases (unlike `DefaultHasher`).
#[must_use]
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// FNV-1a as a `HashMap` hasher for stream ids: short keys, no untrusted-collision concern worth
/// SipHash's cost on the per-sample path (ids come from our own sources).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FnvHasher(u64);

impl core::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let start = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        self.0 = bytes.iter().fold(start, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    }
}

/// A `HashMap` keyed by stream id.
pub(crate) type StreamMap<K, V> = HashMap<K, V, core::hash::BuildHasherDefault<FnvHasher>>;

/// State shared by every router and worker of a pipeline.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) stop: StopFlag,
    /// Raised when any thread failed: sources stop at once and routers stop waiting.
    pub(crate) failed: AtomicBool,
    pub(crate) models: ModelMap,
}

/// A source's handle into the pipeline: [`push`](Router::push) samples, and the router batches
/// them per worker and sends a batch when it is full or on [`flush`](Router::flush).
/// Sources should flush before they wait for input, so samples do not sit in a batch.
#[derive(Debug)]
pub struct Router {
    queues: Vec<Sender<Vec<Sample>>>,
    /// Receiver ends, kept only for drop-oldest.
    drains: Vec<Receiver<Vec<Sample>>>,
    buffers: Vec<Vec<Sample>>,
    batch: usize,
    interned: StreamMap<String, (Arc<str>, usize)>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
}

impl Router {
    pub(crate) fn new(
        queues: Vec<Sender<Vec<Sample>>>,
        drains: Vec<Receiver<Vec<Sample>>>,
        batch: usize,
        counters: Arc<Counters>,
        shared: Arc<Shared>,
    ) -> Self {
        let buffers = queues.iter().map(|_| Vec::with_capacity(batch)).collect();
        Router {
            queues,
            drains,
            buffers,
            batch: batch.max(1),
            interned: StreamMap::default(),
            counters,
            shared,
        }
    }

    /// Accepts one sample of `stream`.
    ///
    /// # Errors
    /// [`ErrorKind::Disconnected`] when the worker is gone (another thread failed).
    pub fn push(
        &mut self,
        stream: &str,
        values: Vec<f32>,
        seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        let workers = self.queues.len();
        let (id, worker) = match self.interned.get(stream) {
            Some((id, w)) => (Arc::clone(id), *w),
            None => {
                let id: Arc<str> = Arc::from(stream);
                let w = partition(stream, workers);
                self.interned
                    .insert(stream.to_owned(), (Arc::clone(&id), w));
                (id, w)
            }
        };
        let sample = Sample {
            stream: id,
            values,
            seq,
            ingested: Instant::now(),
        };
        Counters::add(&self.counters.samples_in, 1);
        let full = match self.buffers.get_mut(worker) {
            Some(buf) => {
                buf.push(sample);
                buf.len() >= self.batch
            }
            None => false,
        };
        if full {
            self.send(worker)?;
        }
        Ok(())
    }

    /// Counts an input line or message that could not be parsed.
    pub fn malformed(&self) {
        Counters::add(&self.counters.malformed, 1);
    }

    /// Counts a broker reconnection.
    pub fn reconnected(&self) {
        Counters::add(&self.counters.reconnects, 1);
    }

    /// Sends every partial batch.
    ///
    /// # Errors
    /// As [`Router::push`].
    pub fn flush(&mut self) -> Result<(), PipelineError> {
        for w in 0..self.buffers.len() {
            self.send(w)?;
        }
        Ok(())
    }

    /// The pipeline was asked to stop or a thread failed: the source should return.
    #[must_use]
    pub fn stopping(&self) -> bool {
        self.shared.stop.is_stopped() || self.shared.failed.load(Ordering::SeqCst)
    }

    /// Channel names of the model that will score `stream`, if any (so a CSV source can pick
    /// its columns by name).
    #[must_use]
    pub fn channels_for(&self, stream: &str) -> Option<&[String]> {
        self.shared
            .models
            .resolve(stream)
            .map(|m| m.channels.as_slice())
    }

    fn send(&mut self, worker: usize) -> Result<(), PipelineError> {
        let (Some(buf), Some(queue)) = (self.buffers.get_mut(worker), self.queues.get(worker))
        else {
            return Ok(());
        };
        if buf.is_empty() {
            return Ok(());
        }
        let mut batch = core::mem::replace(buf, Vec::with_capacity(self.batch));
        Counters::add(&self.counters.batches, 1);
        let gone = || PipelineError::new(ErrorKind::Disconnected("worker queue"));
        match self.drains.get(worker) {
            None => super::send_or_fail(queue, batch, &self.shared, "worker queue"),
            Some(drain) => loop {
                if self.shared.failed.load(Ordering::SeqCst) {
                    return Err(gone());
                }
                match queue.try_send(batch) {
                    Ok(()) => return Ok(()),
                    Err(TrySendError::Disconnected(_)) => return Err(gone()),
                    Err(TrySendError::Full(back)) => {
                        batch = back;
                        // The worker may take it first; then the retry succeeds.
                        if let Ok(old) = drain.try_recv() {
                            Counters::add(&self.counters.dropped, old.len() as u64);
                        }
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_is_the_published_function() {
        // Test vectors of FNV-1a 64.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn partition_spreads_streams() {
        let mut counts = [0usize; 4];
        for i in 0..400 {
            counts[partition(&format!("pump-{i}"), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
        assert_eq!(partition("x", 0), 0);
        // Streams of the even shards of 8 still use both of 2 workers.
        let even: Vec<String> = (0..400)
            .map(|i| format!("s{i}"))
            .filter(|s| (fnv1a(s.as_bytes()) % 8).is_multiple_of(2))
            .collect();
        let on_zero = even.iter().filter(|s| partition(s, 2) == 0).count();
        assert!(
            on_zero > even.len() / 4 && on_zero < even.len() * 3 / 4,
            "{on_zero}"
        );
    }
}
