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
    alarm: bool,
}

/// Per-stream state on its worker, indexed by interned stream id.
enum Slot {
    /// Not seen yet by this worker.
    Unknown,
    Scoring(Box<Scoring>),
    /// No model matches: samples are counted, not scored.
    Unmatched,
}

pub(crate) struct Worker {
    /// Its index, and that of its lane in [`Shared::lanes`].
    pub(crate) id: usize,
    pub(crate) input: Receiver<Batch>,
    pub(crate) output: Sender<Vec<Record>>,
    pub(crate) counters: Arc<Counters>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) emit: Emit,
    /// Test hook: fail after this many samples.
    #[cfg(test)]
    pub(crate) fail_after: Option<u64>,
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

impl Worker {
    /// The state of a stream seen for the first time: a detector cloned from its model.
    fn resolve(&self, id: u32, unmatched_names: &mut Vec<String>, names: &mut NameCopies) -> Slot {
        let Some(name) = self.shared.interner.name(id) else {
            return Slot::Unmatched;
        };
        match self.shared.models.resolve(&name) {
            Some(model) => Slot::Scoring(Box::new(Scoring {
                detector: model.detector.clone(),
                channels: channel_names(names, model),
                name,
                last_seq: None,
                alarm: false,
            })),
            None => {
                unmatched_names.push(name.to_string());
                Slot::Unmatched
            }
        }
    }

    /// Scores batches until every router is gone and the queue is empty.
    ///
    /// Latency is measured per batch (two clock reads per batch, none per sample): from the
    /// router accepting the batch's first sample to the verdict on its last, counted once for
    /// each verdict of the batch. That is an upper bound for every sample in it, and exact for a
    /// batch of one.
    pub(crate) fn run(self) -> Result<Vec<String>, PipelineError> {
        let mut slots: Vec<Slot> = Vec::new();
        let mut unmatched_names = Vec::new();
        let mut names = NameCopies::new();
        let mut latency = LocalLatency::new();
        #[cfg(test)]
        let mut seen = 0u64;
        let mut records = Vec::new();
        let half = self.input.capacity().unwrap_or(1) / 2;
        let lane = self.shared.lanes.get(self.id);
        for mut batch in &self.input {
            if let Some(lane) = lane
                && self.input.len() <= half
            {
                lane.room.notify();
            }
            let mut tally = Tally::default();
            let fresh_from = records.len();
            for (entry, values) in batch.iter() {
                #[cfg(test)]
                {
                    seen += 1;
                    if self.fail_after.is_some_and(|n| seen > n) {
                        return Err(PipelineError::new(super::ErrorKind::Worker {
                            worker: self.id,
                            message: "injected failure".into(),
                        }));
                    }
                }
                let index = entry.stream as usize;
                if index >= slots.len() {
                    slots.resize_with(index + 1, || Slot::Unknown);
                }
                let Some(slot) = slots.get_mut(index) else {
                    tally.unmatched += 1;
                    continue;
                };
                if matches!(slot, Slot::Unknown) {
                    *slot = self.resolve(entry.stream, &mut unmatched_names, &mut names);
                }
                let Slot::Scoring(state) = slot else {
                    tally.unmatched += 1;
                    continue;
                };
                let Scoring {
                    detector,
                    channels,
                    name,
                    last_seq,
                    alarm,
                } = &mut **state;
                if let Some(seq) = entry.seq {
                    match *last_seq {
                        Some(last) if seq <= last => {
                            tally.duplicates += 1;
                            continue;
                        }
                        Some(last) => tally.gaps += seq - last - 1,
                        None => {}
                    }
                    *last_seq = Some(seq);
                }
                let verdict = detector.push(values);
                let was = *alarm;
                let status = match verdict.status {
                    Status::WarmingUp { .. } => {
                        tally.warming += 1;
                        *alarm = false;
                        RecordStatus::Warming
                    }
                    Status::Normal(s) => {
                        tally.scored += 1;
                        tally.windows += u64::from(s.fresh);
                        *alarm = false;
                        RecordStatus::Normal
                    }
                    Status::Anomalous { score, onset } => {
                        tally.scored += 1;
                        tally.windows += u64::from(score.fresh);
                        tally.alarms += u64::from(onset);
                        *alarm = true;
                        RecordStatus::Anomalous
                    }
                    Status::Fault(f) => {
                        tally.faulted += 1;
                        if f.reset {
                            *alarm = false;
                        }
                        RecordStatus::Fault
                    }
                };
                let event = match (was, *alarm) {
                    (false, true) => Some(AlarmEvent::On),
                    (true, false) => Some(AlarmEvent::Off),
                    _ => None,
                };
                let score = verdict.score();
                let fresh = score.is_some_and(|s| s.fresh);
                let keep = match self.emit {
                    Emit::All => true,
                    Emit::Scored => fresh || event.is_some() || status == RecordStatus::Fault,
                    Emit::Alarms => event.is_some() || status == RecordStatus::Fault,
                };
                if !keep {
                    continue;
                }
                let channel = |c: u16| channels.get(usize::from(c)).cloned();
                let fault = verdict.fault();
                records.push(Record {
                    stream: Arc::clone(name),
                    index: verdict.index,
                    seq: entry.seq,
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
            }
            let elapsed = Instant::now().saturating_duration_since(batch.ingested);
            if let Some(lane) = lane {
                batch.clear();
                // A full return lane means the sources hold enough spares: this one is freed.
                let _ = lane.spare_tx.try_send(batch);
            }
            let verdicts = tally.scored + tally.warming + tally.faulted;
            latency.record_n(elapsed, verdicts);
            let latency_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
            for r in records.iter_mut().skip(fresh_from) {
                r.latency_us = latency_us;
            }
            let c = &self.counters;
            Counters::add(&c.scored, tally.scored);
            Counters::add(&c.warming, tally.warming);
            Counters::add(&c.faulted, tally.faulted);
            Counters::add(&c.unmatched, tally.unmatched);
            Counters::add(&c.duplicates, tally.duplicates);
            Counters::add(&c.gaps, tally.gaps);
            Counters::add(&c.windows, tally.windows);
            Counters::add(&c.alarms, tally.alarms);
            latency.take_into(c);
            // Records go to the sink in lots of at least `SINK_LOT`, or whatever is ready when
            // the input runs dry: a send to a sleeping sink thread is a system call and a context
            // switch, too much to pay per batch.
            if records.len() >= SINK_LOT || (!records.is_empty() && self.input.is_empty()) {
                Counters::add(&c.emitted, records.len() as u64);
                let lot = core::mem::replace(&mut records, Vec::with_capacity(SINK_LOT));
                super::send_or_fail(&self.output, lot, &self.shared, "sink queue")?;
            }
        }
        if !records.is_empty() {
            Counters::add(&self.counters.emitted, records.len() as u64);
            super::send_or_fail(&self.output, records, &self.shared, "sink queue")?;
        }
        Ok(unmatched_names)
    }
}
