//! The source side: interns stream ids, partitions samples by stream onto workers and moves
//! them in batches over bounded queues.

use core::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};
use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError, RwLock},
    thread::{self, Thread},
    time::Instant,
};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use super::{ErrorKind, PipelineError, metrics::Counters, models::ModelMap, worker::Scorer};

/// A stream id interned by [`Router::intern`]: pushing by key ([`Router::push_key`]) skips
/// hashing the id, for sources that know their streams up front. Valid for the router that
/// made it (and the other routers of the same pipeline).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKey {
    /// Dense id shared by every router and worker of the pipeline.
    id: u32,
    /// The worker that owns the stream.
    worker: u32,
}

/// One sample in a [`Batch`]: its stream, where its values end and its sequence number.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry {
    /// Interned stream id ([`Interner`]).
    pub(crate) stream: u32,
    /// End of its values in [`Batch::values`] (they start where the previous entry's end).
    pub(crate) end: u32,
    /// Sequence number within the stream, if the source has one (used to drop redeliveries
    /// and count gaps).
    pub(crate) seq: Option<u64>,
}

/// Samples on their way to one worker, stored flat: one allocation per batch rather than one
/// per sample, and no shared reference count per sample.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) entries: Vec<Entry>,
    pub(crate) values: Vec<f32>,
    /// When the router accepted the batch's first sample.
    pub(crate) ingested: Instant,
}

impl Batch {
    fn with_capacity(samples: usize, values: usize) -> Self {
        Batch {
            entries: Vec::with_capacity(samples),
            values: Vec::with_capacity(values),
            ingested: Instant::now(),
        }
    }

    /// Number of samples.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Empties it for reuse, keeping its allocations.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
        self.values.clear();
    }

    /// Each sample with its values.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Entry, &[f32])> {
        let mut start = 0usize;
        self.entries.iter().map(move |e| {
            let end = e.end as usize;
            let values = self.values.get(start..end).unwrap_or(&[]);
            start = end;
            (e, values)
        })
    }
}

/// Dense ids for stream names, shared by every router (so a stream pushed by two sources is one
/// stream) and read by workers the first time they see an id.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: Mutex<HashMap<Arc<str>, u32, core::hash::BuildHasherDefault<FnvHasher>>>,
    names: RwLock<Vec<Arc<str>>>,
}

impl Interner {
    fn intern(&self, name: &str) -> u32 {
        let mut ids = self.ids.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&id) = ids.get(name) {
            return id;
        }
        let mut names = self.names.write().unwrap_or_else(PoisonError::into_inner);
        let id = u32::try_from(names.len()).unwrap_or(u32::MAX);
        let name: Arc<str> = Arc::from(name);
        names.push(Arc::clone(&name));
        ids.insert(name, id);
        id
    }

    /// How many ids have been handed out.
    pub(crate) fn len(&self) -> usize {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The name of an interned id.
    pub(crate) fn name(&self, id: u32) -> Option<Arc<str>> {
        self.names
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id as usize)
            .cloned()
    }
}

/// One worker's input lane as sources see it: where to wait for room in its queue, and the
/// batches it has emptied, for reuse.
#[derive(Debug)]
pub(crate) struct Lane {
    /// Sources blocked on the worker's full queue.
    pub(crate) room: Room,
    /// Emptied batches on their way back to the sources (bounded; extras are freed).
    pub(crate) spare_tx: Sender<Batch>,
    spare_rx: Receiver<Batch>,
}

impl Lane {
    /// A lane that keeps up to `spares` emptied batches.
    pub(crate) fn new(spares: usize) -> Self {
        let (spare_tx, spare_rx) = crossbeam_channel::bounded(spares.max(1));
        Lane {
            room: Room::default(),
            spare_tx,
            spare_rx,
        }
    }
}

/// Where sources wait for a full worker queue to drain to half. The worker wakes them once per
/// half queue ([`Room::notify`]), not once per batch it takes, which is what a source blocked on
/// the channel itself would cost it (a system call each); and sources do not nap for a guessed
/// time either, which left the worker idle whenever the nap outlasted the half queue.
#[derive(Debug, Default)]
pub(crate) struct Room {
    waiting: AtomicUsize,
    waiters: Mutex<Vec<Thread>>,
}

impl Room {
    /// Registers the calling thread to be woken by the next [`notify`](Room::notify).
    fn register(&self) {
        let me = thread::current();
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        if !waiters.iter().any(|t| t.id() == me.id()) {
            waiters.push(me);
            self.waiting.store(waiters.len(), Ordering::SeqCst);
        }
    }

    /// Wakes every registered source. One atomic load when none waits.
    pub(crate) fn notify(&self) {
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        self.waiting.store(0, Ordering::SeqCst);
        for t in waiters.drain(..) {
            t.unpark();
        }
    }
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

/// Groups `items` by the worker [`partition`] gives each one's stream id, over `workers`
/// workers, keeping their order: the parts a [`Source::split`](super::Source::split) returns.
/// `None` when an item has no single stream id.
pub fn by_worker<T>(
    items: impl IntoIterator<Item = T>,
    workers: usize,
    id: impl Fn(&T) -> Option<&str>,
) -> Option<Vec<Vec<T>>> {
    let workers = workers.max(1);
    let mut groups: Vec<Vec<T>> = (0..workers).map(|_| Vec::new()).collect();
    for item in items {
        let w = partition(id(&item)?, workers);
        groups.get_mut(w)?.push(item);
    }
    Some(groups)
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
    pub(crate) interner: Interner,
    /// One per worker, in worker order.
    pub(crate) lanes: Vec<Lane>,
}

/// A source's handle into the pipeline: [`push`](Router::push) samples, and the router batches
/// them per worker and sends a batch when it is full or on [`flush`](Router::flush).
/// Sources should flush before they wait for input, so samples do not sit in a batch.
///
/// A router given to a part of a split source ([`Source::split`](super::Source::split)) runs on
/// that part's worker and scores each sample there as it is pushed, with no queue in between.
#[derive(Debug)]
pub struct Router {
    queues: Vec<Sender<Batch>>,
    /// Receiver ends, kept only for drop-oldest.
    drains: Vec<Receiver<Batch>>,
    /// One per worker; none for a router on its worker.
    buffers: Vec<Batch>,
    /// Workers the streams are partitioned over.
    workers: usize,
    batch: usize,
    /// Values per batch to reserve (the most a batch has held).
    values_hint: usize,
    interned: StreamMap<String, StreamKey>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    /// The worker's scoring state, for a router that runs on its worker.
    local: Option<Local>,
}

/// A worker's [`Scorer`], owned by the router of the source part that runs on that worker. It
/// scores each sample as it is pushed (no copy into a batch) and settles the counts once per
/// lot of [`Builder::batch`](super::Builder::batch) samples.
struct Local {
    scorer: Box<Scorer>,
    /// Samples scored since the last settle.
    pending: usize,
    /// When the first of them was pushed.
    since: Instant,
}

impl Local {
    /// Counts the pending samples in, with their verdicts.
    fn settle(&mut self, counters: &Counters) {
        if self.pending > 0 {
            Counters::add(&counters.samples_in, self.pending as u64);
            Counters::add(&counters.batches, 1);
            self.scorer.settle(self.since);
            self.pending = 0;
        }
    }
}

impl core::fmt::Debug for Local {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Local(worker {}, {} pending)",
            self.scorer.id, self.pending
        )
    }
}

impl Router {
    pub(crate) fn new(
        queues: Vec<Sender<Batch>>,
        drains: Vec<Receiver<Batch>>,
        batch: usize,
        counters: Arc<Counters>,
        shared: Arc<Shared>,
    ) -> Self {
        let batch = batch.max(1);
        let buffers = queues
            .iter()
            .map(|_| Batch::with_capacity(batch, 0))
            .collect();
        Router {
            workers: queues.len(),
            queues,
            drains,
            buffers,
            batch,
            values_hint: 0,
            interned: StreamMap::default(),
            counters,
            shared,
            local: None,
        }
    }

    /// A router that scores on the calling thread with `scorer`, the state of worker
    /// `scorer.id` of `workers`: for a source part that pushes only that worker's streams.
    pub(crate) fn on_worker(
        scorer: Scorer,
        workers: usize,
        batch: usize,
        counters: Arc<Counters>,
        shared: Arc<Shared>,
    ) -> Self {
        let batch = batch.max(1);
        Router {
            queues: Vec::new(),
            drains: Vec::new(),
            buffers: Vec::new(),
            workers: workers.max(1),
            batch,
            values_hint: 0,
            interned: StreamMap::default(),
            counters,
            shared,
            local: Some(Local {
                scorer: Box::new(scorer),
                pending: 0,
                since: Instant::now(),
            }),
        }
    }

    /// The scoring state of a router made by [`on_worker`](Router::on_worker), after its last
    /// [`flush`](Router::flush).
    pub(crate) fn into_scorer(self) -> Option<Scorer> {
        self.local.map(|l| *l.scorer)
    }

    /// The key of `stream`, for [`push_key`](Router::push_key).
    pub fn intern(&mut self, stream: &str) -> StreamKey {
        if let Some(&key) = self.interned.get(stream) {
            return key;
        }
        let key = StreamKey {
            id: self.shared.interner.intern(stream),
            worker: u32::try_from(partition(stream, self.workers)).unwrap_or(0),
        };
        self.interned.insert(stream.to_owned(), key);
        key
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
        self.push_slice(stream, &values, seq)
    }

    /// Accepts one sample of `stream`, copying its values.
    ///
    /// # Errors
    /// As [`Router::push`].
    pub fn push_slice(
        &mut self,
        stream: &str,
        values: &[f32],
        seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        let key = self.intern(stream);
        self.push_key(key, values, seq)
    }

    /// Accepts one sample of the stream `key` names (from [`Router::intern`]), copying its
    /// values: the cheapest way in, for sources that know their streams.
    ///
    /// # Errors
    /// As [`Router::push`].
    pub fn push_key(
        &mut self,
        key: StreamKey,
        values: &[f32],
        seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        if let Some(local) = &mut self.local {
            if key.worker as usize != local.scorer.id {
                return Err(misrouted(&self.shared, key, local.scorer.id));
            }
            if local.pending == 0 {
                local.since = Instant::now();
            }
            local.pending += 1;
            local.scorer.score_one(key.id, values, seq)?;
            if local.pending >= self.batch {
                local.settle(&self.counters);
                local.scorer.hand_over(false)?;
            }
            return Ok(());
        }
        let workers = self.buffers.len().max(1);
        // A key's worker is below the count by construction; no division on the per-sample path.
        let worker = match key.worker as usize {
            w if w < workers => w,
            w => w % workers,
        };
        let full = match self.buffers.get_mut(worker) {
            Some(buf) => {
                if buf.entries.is_empty() {
                    buf.ingested = Instant::now();
                }
                buf.values.extend_from_slice(values);
                buf.entries.push(Entry {
                    stream: key.id,
                    end: u32::try_from(buf.values.len()).unwrap_or(u32::MAX),
                    seq,
                });
                buf.entries.len() >= self.batch
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
        match &mut self.local {
            Some(local) => {
                local.settle(&self.counters);
                local.scorer.hand_over(true)
            }
            None => Ok(()),
        }
    }

    /// The pipeline was asked to stop or a thread failed: the source should return.
    #[must_use]
    pub fn stopping(&self) -> bool {
        self.shared.stop.is_stopped() || self.shared.failed.load(Ordering::SeqCst)
    }

    /// Channel names of the model that will score `stream`, if any (so a CSV source can pick
    /// its columns by name).
    #[must_use]
    pub fn channels_for(&self, stream: &str) -> Option<&[Arc<str>]> {
        self.shared
            .models
            .resolve(stream)
            .map(|m| m.channels.as_slice())
    }

    /// Blocking back-pressure: waits until the worker has taken half its queue and wakes this
    /// thread ([`Room`]). Registers first and checks again, so a wake-up between the check and
    /// the park is not lost; the timeout only bounds how late a failure elsewhere is seen.
    fn wait_for_room(&self, worker: usize, queue: &Sender<Batch>) -> Result<(), PipelineError> {
        let half = queue.capacity().unwrap_or(1) / 2;
        let Some(lane) = self.shared.lanes.get(worker) else {
            return Ok(());
        };
        while queue.len() > half {
            if self.shared.failed.load(Ordering::SeqCst) {
                return Err(PipelineError::new(ErrorKind::Disconnected("worker queue")));
            }
            lane.room.register();
            if queue.len() > half {
                thread::park_timeout(Duration::from_millis(20));
            }
        }
        Ok(())
    }

    /// An empty batch: one the worker gave back, or a new one.
    fn fresh_batch(&self, worker: usize) -> Batch {
        self.shared
            .lanes
            .get(worker)
            .and_then(|lane| lane.spare_rx.try_recv().ok())
            .unwrap_or_else(|| Batch::with_capacity(self.batch, self.values_hint))
    }

    fn send(&mut self, worker: usize) -> Result<(), PipelineError> {
        let (Some(buf), Some(queue)) = (self.buffers.get_mut(worker), self.queues.get(worker))
        else {
            return Ok(());
        };
        if buf.entries.is_empty() {
            return Ok(());
        }
        self.values_hint = self.values_hint.max(buf.values.len());
        let fresh = self.fresh_batch(worker);
        let Some(buf) = self.buffers.get_mut(worker) else {
            return Ok(());
        };
        let mut batch = core::mem::replace(buf, fresh);
        Counters::add(&self.counters.samples_in, batch.len() as u64);
        Counters::add(&self.counters.batches, 1);
        let gone = || PipelineError::new(ErrorKind::Disconnected("worker queue"));
        match self.drains.get(worker) {
            None => match queue.try_send(batch) {
                Ok(()) => Ok(()),
                Err(TrySendError::Disconnected(_)) => Err(gone()),
                Err(TrySendError::Full(back)) => {
                    self.wait_for_room(worker, queue)?;
                    super::send_or_fail(queue, back, &self.shared, "worker queue")
                }
            },
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

/// A source part pushed a stream its worker does not own: a [`Source::split`](super::Source::split)
/// that did not partition by [`partition`]. Scoring it here could split the stream over two
/// workers, so the pipeline stops instead.
fn misrouted(shared: &Shared, key: StreamKey, worker: usize) -> PipelineError {
    let name = shared
        .interner
        .name(key.id)
        .map_or_else(|| format!("#{}", key.id), |n| n.to_string());
    PipelineError::new(ErrorKind::Worker {
        worker,
        message: format!(
            "a source part pushed stream `{name}`, which belongs to worker {}",
            key.worker
        ),
    })
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
