//! The worker side: one detector per stream, verdicts to records.

use std::{sync::Arc, time::Instant};

use crossbeam_channel::{Receiver, Sender};
use sensorae::{DynDetector, Status};
use serde::{Deserialize, Serialize};

use super::{
    PipelineError,
    metrics::{Counters, LocalLatency},
    models::Model,
    router::{Batch, Shared},
};

/// Which verdicts become records for the sinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Emit {
    /// One record per sample.
    #[default]
    All,
    /// Fresh scores, faults and alarm changes (skips warming up and repeated scores between
    /// hops).
    Scored,
    /// Alarm onsets and clears, and faults.
    Alarms,
}

/// What a record says about its sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordStatus {
    /// The window is still filling.
    Warming,
    /// Scored, alarm off.
    Normal,
    /// Scored, alarm on.
    Anomalous,
    /// A sensor fault; not scored.
    Fault,
}

/// An alarm change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AlarmEvent {
    /// The alarm turned on at this sample.
    On,
    /// The alarm turned off at this sample.
    Off,
}

/// One verdict as the sinks write it (a JSON line, a CSV row or an MQTT message).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Stream id (shared with the stream's other records).
    pub stream: Arc<str>,
    /// Sample index within the stream (counted by its detector from 0).
    pub index: u64,
    /// The source's sequence number, if any.
    pub seq: Option<u64>,
    /// Outcome.
    pub status: RecordStatus,
    /// Score compared with the threshold (absent while warming and on faults).
    pub score: Option<f32>,
    /// The model's threshold.
    pub threshold: f32,
    /// The score was computed at this sample (not repeated between hops).
    pub fresh: bool,
    /// Alarm on or off at this sample.
    pub event: Option<AlarmEvent>,
    /// Name of the channel with the largest error.
    pub top_channel: Option<Arc<str>>,
    /// Fault kind (`nan`, `above-range`, ...).
    pub fault: Option<String>,
    /// Name of the first faulty channel.
    pub fault_channel: Option<Arc<str>>,
    /// Microseconds from ingestion to verdict.
    pub latency_us: u64,
}

/// A worker's copies of its models' channel names, per model (a handful).
type NameCopies = Vec<(Arc<Model>, Arc<[Arc<str>]>)>;

/// This worker's copies of `model`'s channel names, made on first use.
fn channel_names(names: &mut NameCopies, model: &Arc<Model>) -> Arc<[Arc<str>]> {
    if let Some((_, n)) = names.iter().find(|(m, _)| Arc::ptr_eq(m, model)) {
        return Arc::clone(n);
    }
    let own: Arc<[Arc<str>]> = model.channels.iter().map(|c| Arc::from(&**c)).collect();
    names.push((Arc::clone(model), Arc::clone(&own)));
    own
}

/// Fewest records a worker hands to the sink at once while its input is busy.
const SINK_LOT: usize = 256;

/// A scored stream's state on its worker.
struct Scoring {
    detector: DynDetector,
    /// The model's channel names, this worker's own copies: records clone them, and a name
    /// shared by every worker would have its reference count bounce between the cores.
    channels: Arc<[Arc<str>]>,
    name: Arc<str>,
    last_seq: Option<u64>,
}

/// Per-stream state on its worker, indexed by interned stream id.
enum Slot {
    /// Not seen yet by this worker.
    Unknown,
    Scoring {
        /// The alarm as this stream's records last reported it. Kept here rather than in the
        /// boxed state: the slots are read in order, a line of the box per sample is not.
        alarm: bool,
        state: Box<Scoring>,
    },
    /// No model matches: samples are counted, not scored.
    Unmatched,
}

/// A worker's scoring state: one slot per stream it owns, the records not yet handed to the
/// sink, and its latency histogram. It scores batches from its queue ([`Worker`]) or, when the
/// worker runs its part of a source itself, straight from that part's [`Router`](super::Router).
pub(crate) struct Scorer {
    /// Its worker's index, and that of its lane in [`Shared::lanes`].
    pub(crate) id: usize,
    output: Sender<Vec<Record>>,
    counters: Arc<Counters>,
    shared: Arc<Shared>,
    emit: Emit,
    slots: Vec<Slot>,
    unmatched_names: Vec<String>,
    names: NameCopies,
    latency: LocalLatency,
    records: Vec<Record>,
    /// Counts of the samples scored since the last [`settle`](Scorer::settle).
    tally: Tally,
    /// The first record made since the last settle.
    lot_from: usize,
    /// Test hook: fail after this many samples.
    #[cfg(test)]
    fail_after: Option<u64>,
    #[cfg(test)]
    seen: u64,
}

/// Counts of one batch, added to the shared counters once per batch.
#[derive(Default)]
struct Tally {
    scored: u64,
    warming: u64,
    faulted: u64,
    unmatched: u64,
    duplicates: u64,
    gaps: u64,
    windows: u64,
    alarms: u64,
}

impl Scorer {
    pub(crate) fn new(
        id: usize,
        output: Sender<Vec<Record>>,
        counters: Arc<Counters>,
        shared: Arc<Shared>,
        emit: Emit,
        #[cfg(test)] fail_after: Option<u64>,
    ) -> Self {
        Scorer {
            id,
            output,
            counters,
            shared,
            emit,
            slots: Vec::new(),
            unmatched_names: Vec::new(),
            names: NameCopies::new(),
            latency: LocalLatency::new(),
            records: Vec::new(),
            tally: Tally::default(),
            lot_from: 0,
            #[cfg(test)]
            fail_after,
            #[cfg(test)]
            seen: 0,
        }
    }

    /// The state of a stream seen for the first time: a detector cloned from its model.
    fn resolve(&mut self, id: u32) -> Slot {
        let Some(name) = self.shared.interner.name(id) else {
            return Slot::Unmatched;
        };
        match self.shared.models.resolve(&name) {
            Some(model) => Slot::Scoring {
                alarm: false,
                state: Box::new(Scoring {
                    detector: model.detector.clone(),
                    channels: channel_names(&mut self.names, model),
                    name,
                    last_seq: None,
                }),
            },
            None => {
                self.unmatched_names.push(name.to_string());
                Slot::Unmatched
            }
        }
    }

    /// Scores one batch, in order, and adds its counts to the shared counters.
    pub(crate) fn score(&mut self, batch: &Batch) -> Result<(), PipelineError> {
        for (entry, values) in batch.iter() {
            self.score_one(entry.stream, values, entry.seq)?;
        }
        self.settle(batch.ingested);
        Ok(())
    }

    /// Makes the slot of a stream not seen before (a no-op for an unmatched one).
    #[cold]
    fn first_sight(&mut self, stream: u32) {
        let index = stream as usize;
        if index >= self.slots.len() {
            // Room for every id interned so far, at once, rather than a reallocation for each
            // new stream while its detectors are being allocated.
            let room = (index + 1).max(self.shared.interner.len());
            self.slots.resize_with(room, || Slot::Unknown);
        }
        if matches!(self.slots.get(index), Some(Slot::Unknown)) {
            let resolved = self.resolve(stream);
            if let Some(slot) = self.slots.get_mut(index) {
                *slot = resolved;
            }
        }
    }

    /// Scores one sample of the interned stream `stream`; its counts wait for the next
    /// [`settle`](Scorer::settle).
    #[inline]
    pub(crate) fn score_one(
        &mut self,
        stream: u32,
        values: &[f32],
        seq: Option<u64>,
    ) -> Result<(), PipelineError> {
        #[cfg(test)]
        {
            self.seen += 1;
            if self.fail_after.is_some_and(|n| self.seen > n) {
                return Err(PipelineError::new(super::ErrorKind::Worker {
                    worker: self.id,
                    message: "injected failure".into(),
                }));
            }
        }
        let index = stream as usize;
        if !matches!(self.slots.get(index), Some(Slot::Scoring { .. })) {
            self.first_sight(stream);
        }
        let Some(Slot::Scoring { alarm, state }) = self.slots.get_mut(index) else {
            self.tally.unmatched += 1;
            return Ok(());
        };
        let tally = &mut self.tally;
        let Scoring {
            detector,
            channels,
            name,
            last_seq,
        } = &mut **state;
        if let Some(seq) = seq {
            match *last_seq {
                Some(last) if seq <= last => {
                    tally.duplicates += 1;
                    return Ok(());
                }
                Some(last) => tally.gaps += seq - last - 1,
                None => {}
            }
            *last_seq = Some(seq);
        }
        let verdict = detector.push(values);
        let was = *alarm;
        let (status, now) = match verdict.status {
            Status::WarmingUp { .. } => {
                tally.warming += 1;
                (RecordStatus::Warming, false)
            }
            Status::Normal(s) => {
                tally.scored += 1;
                tally.windows += u64::from(s.fresh);
                (RecordStatus::Normal, false)
            }
            Status::Anomalous { score, onset } => {
                tally.scored += 1;
                tally.windows += u64::from(score.fresh);
                tally.alarms += u64::from(onset);
                (RecordStatus::Anomalous, true)
            }
            Status::Fault(f) => {
                tally.faulted += 1;
                (RecordStatus::Fault, was && !f.reset)
            }
        };
        let event = match (was, now) {
            (false, true) => Some(AlarmEvent::On),
            (true, false) => Some(AlarmEvent::Off),
            _ => None,
        };
        // Written only on a change: the slots stay clean in the cache between alarms, so
        // scoring a round of streams does not write every slot's line back.
        if event.is_some() {
            *alarm = now;
        }
        let score = verdict.score();
        let fresh = score.is_some_and(|s| s.fresh);
        let keep = match self.emit {
            Emit::All => true,
            Emit::Scored => fresh || event.is_some() || status == RecordStatus::Fault,
            Emit::Alarms => event.is_some() || status == RecordStatus::Fault,
        };
        if !keep {
            return Ok(());
        }
        let channel = |c: u16| channels.get(usize::from(c)).cloned();
        let fault = verdict.fault();
        self.records.push(Record {
            stream: Arc::clone(name),
            index: verdict.index,
            seq,
            status,
            score: score.map(|s| s.value),
            threshold: detector.config().threshold.value,
            fresh,
            event,
            top_channel: score
                .and_then(|s| s.top.first().copied().flatten())
                .and_then(|c| channel(c.channel)),
            fault: fault.map(|f| f.kind.name().to_owned()),
            fault_channel: fault.and_then(|f| f.channel).and_then(channel),
            latency_us: 0,
        });
        Ok(())
    }

    /// Adds the counts of the samples scored since the last settle to the shared counters, and
    /// their latency: from `since`, when the first of them was accepted, to now, counted once
    /// for each of their verdicts. One clock read per lot, none per sample: an upper bound for
    /// every sample of the lot, exact for a lot of one.
    pub(crate) fn settle(&mut self, since: Instant) {
        let tally = core::mem::take(&mut self.tally);
        let elapsed = Instant::now().saturating_duration_since(since);
        let verdicts = tally.scored + tally.warming + tally.faulted;
        self.latency.record_n(elapsed, verdicts);
        let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        for r in self.records.iter_mut().skip(self.lot_from) {
            r.latency_us = latency_us;
        }
        self.lot_from = self.records.len();
        let c = &self.counters;
        Counters::add(&c.scored, tally.scored);
        Counters::add(&c.warming, tally.warming);
        Counters::add(&c.faulted, tally.faulted);
        Counters::add(&c.unmatched, tally.unmatched);
        Counters::add(&c.duplicates, tally.duplicates);
        Counters::add(&c.gaps, tally.gaps);
        Counters::add(&c.windows, tally.windows);
        Counters::add(&c.alarms, tally.alarms);
        self.latency.take_into(c);
    }

    /// Hands the records to the sink once there are at least `SINK_LOT` of them, or whatever
    /// there is when `idle` (the input ran dry): a send to a sleeping sink thread is a system
    /// call and a context switch, too much to pay per batch.
    pub(crate) fn hand_over(&mut self, idle: bool) -> Result<(), PipelineError> {
        if self.records.len() >= SINK_LOT || (idle && !self.records.is_empty()) {
            Counters::add(&self.counters.emitted, self.records.len() as u64);
            let lot = core::mem::replace(&mut self.records, Vec::with_capacity(SINK_LOT));
            self.lot_from = 0;
            super::send_or_fail(&self.output, lot, &self.shared, "sink queue")?;
        }
        Ok(())
    }

    /// Hands over the last records; returns the ids of the streams no model matched.
    pub(crate) fn finish(mut self) -> Result<Vec<String>, PipelineError> {
        self.hand_over(true)?;
        Ok(self.unmatched_names)
    }
}

/// A worker fed by its queue: scores batches until every router is gone and the queue is empty.
pub(crate) struct Worker {
    pub(crate) input: Receiver<Batch>,
    pub(crate) scorer: Scorer,
}

impl Worker {
    pub(crate) fn run(mut self) -> Result<Vec<String>, PipelineError> {
        let half = self.input.capacity().unwrap_or(1) / 2;
        let shared = Arc::clone(&self.scorer.shared);
        let lane = shared.lanes.get(self.scorer.id);
        for mut batch in &self.input {
            if let Some(lane) = lane
                && self.input.len() <= half
            {
                lane.room.notify();
            }
            self.scorer.score(&batch)?;
            if let Some(lane) = lane {
                batch.clear();
                // A full return lane means the sources hold enough spares: this one is freed.
                let _ = lane.spare_tx.try_send(batch);
            }
            self.scorer.hand_over(self.input.is_empty())?;
        }
        self.scorer.finish()
    }
}
