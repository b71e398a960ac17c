//! Test models, synthetic streams and a reference scorer.

use std::collections::BTreeMap;

use sensorae::{Channel, DynDetector, Status, encode_to_vec, testing};
use sensorae_host::pipeline::{AlarmEvent, Record, RecordStatus};

pub const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

/// A model with `channels` named `a`, `b`, ..., identity scaling, range [-100, 100], alarm on
/// after 2 and off after 2 windows above / at or below `threshold`.
pub fn model(channels: u16, window: u16, hidden: u32, latent: u32, threshold: f32) -> Vec<u8> {
    let mut header = testing::header(channels, window, hidden, latent);
    header.threshold.value = threshold;
    let chans: Vec<Channel<'static>> = (0..usize::from(channels))
        .map(|c| Channel {
            name: NAMES.get(c).copied().unwrap_or("x"),
            offset: 0.0,
            scale: 1.0,
            min: -100.0,
            max: 100.0,
        })
        .collect();
    let params: Vec<f32> = (0..header.param_count()).map(testing::param).collect();
    encode_to_vec(&header, &chans, &params).expect("valid test model")
}

/// Normal behaviour of stream `s` at time `t`: sines of different phases.
pub fn normal(s: usize, t: usize, channels: usize) -> Vec<f32> {
    (0..channels)
        .map(|c| ((t as f32) * 0.21 + (c + s) as f32 * 0.7).sin() * 0.8)
        .collect()
}

/// Stream `s`: normal, with a level shift on channel 0 from `len/2` for `len/10` samples in odd
/// streams, and a NaN every 97 samples in streams divisible by 3.
pub fn sample(s: usize, t: usize, len: usize, channels: usize) -> Vec<f32> {
    let mut v = normal(s, t, channels);
    if s % 2 == 1 && t >= len / 2 && t < len / 2 + len / 10 {
        v[0] += 6.0;
    }
    if s.is_multiple_of(3) && t % 97 == 96 {
        v[channels - 1] = f32::NAN;
    }
    v
}

/// A threshold between the normal scores of `model(.., f32::MAX)` and the anomalous ones: 1.5
/// times the largest normal score.
pub fn calibrated(channels: u16, window: u16, hidden: u32, latent: u32) -> Vec<u8> {
    let bytes = model(channels, window, hidden, latent, f32::MAX);
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    let mut max = 0.0f32;
    for s in 0..4 {
        d.reset();
        for t in 0..500 {
            if let Some(score) = d.push(&normal(s, t, usize::from(channels))).score() {
                max = max.max(score.value);
            }
        }
    }
    model(channels, window, hidden, latent, max * 1.5)
}

/// What a record says, without the latency: compared between runs.
pub type Key = (
    u64,
    Option<u64>,
    RecordStatus,
    Option<u32>,
    Option<AlarmEvent>,
    Option<String>,
);

pub fn key(r: &Record) -> Key {
    (
        r.index,
        r.seq,
        r.status,
        r.score.map(f32::to_bits),
        r.event,
        r.fault.clone(),
    )
}

/// Records per stream, in arrival order.
pub fn by_stream(records: &[Record]) -> BTreeMap<String, Vec<Key>> {
    let mut m: BTreeMap<String, Vec<Key>> = BTreeMap::new();
    for r in records {
        m.entry(r.stream.to_string()).or_default().push(key(r));
    }
    m
}

/// The keys a single detector gives for one stream, scored directly.
pub fn reference(model: &[u8], samples: &[Vec<f32>], seqs: bool) -> Vec<Key> {
    let mut d = DynDetector::from_bytes(model).unwrap();
    let mut alarm = false;
    samples
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let verdict = d.push(v);
            let was = alarm;
            let status = match verdict.status {
                Status::WarmingUp { .. } => {
                    alarm = false;
                    RecordStatus::Warming
                }
                Status::Normal(_) => {
                    alarm = false;
                    RecordStatus::Normal
                }
                Status::Anomalous { .. } => {
                    alarm = true;
                    RecordStatus::Anomalous
                }
                Status::Fault(f) => {
                    if f.reset {
                        alarm = false;
                    }
                    RecordStatus::Fault
                }
            };
            let event = match (was, alarm) {
                (false, true) => Some(AlarmEvent::On),
                (true, false) => Some(AlarmEvent::Off),
                _ => None,
            };
            (
                verdict.index,
                seqs.then_some(i as u64),
                status,
                verdict.score().map(|s| s.value.to_bits()),
                event,
                verdict.fault().map(|f| f.kind.name().to_owned()),
            )
        })
        .collect()
}

/// Runs `f` on a thread and fails the test if it takes longer than `secs`.
pub fn within<T: Send + 'static>(secs: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = crossbeam_channel::bounded(1);
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(secs))
        .unwrap_or_else(|_| panic!("timed out after {secs} s"))
}
