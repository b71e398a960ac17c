//! The bench's source: seeded synthetic streams, and the reference-size model that scores them.

use core::{
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    time::Duration,
};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sensorae::{Channel, DynDetector, encode_to_vec, testing};

use super::PipelineArgs;
use crate::{
    error::{Error, Result},
    pipeline::{PipelineError, Router, Source, StreamKey, by_worker},
};

/// Rows in the pool of synthetic samples (each stream reads it at its own phase).
const POOL_ROWS: usize = 1024;

/// Seeded sample rows: a sine per channel plus a little noise, read by every stream at its own
/// phase so that the generator costs one slice copy per sample.
#[derive(Debug)]
pub(super) struct Pool {
    channels: usize,
    values: Vec<f32>,
}

impl Pool {
    pub(super) fn new(channels: usize, seed: u64) -> Self {
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
    pub(super) fn row(&self, t: usize, s: usize) -> &[f32] {
        let r = (t + s.wrapping_mul(17)) % POOL_ROWS;
        self.values
            .get(r * self.channels..(r + 1) * self.channels)
            .unwrap_or(&[])
    }
}

/// Where the bench holds the source while the raw side has its turn. Waiting parts block on a
/// condition variable rather than poll, so they take no CPU from the raw turn.
#[derive(Debug, Default)]
pub(super) struct Gate {
    closed: AtomicBool,
    lock: Mutex<()>,
    opened: Condvar,
    /// Parts of the source that exist (counted from their making to their drop, so a part that
    /// has not started yet is waited for, and one that has ended is not).
    parts: AtomicUsize,
    /// Parts waiting at the closed gate, their pushes flushed.
    waiting: AtomicUsize,
}

impl Gate {
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    pub(super) fn open(&self) {
        let _held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(false, Ordering::SeqCst);
        self.opened.notify_all();
    }

    /// Every part that has started is waiting at the gate.
    pub(super) fn all_waiting(&self) -> bool {
        self.waiting.load(Ordering::SeqCst) == self.parts.load(Ordering::SeqCst)
    }

    /// Flushes the part's pending samples (so none waits out the pause in a batch or an
    /// unsettled lot) and waits while the gate is closed.
    fn wait(&self, router: &mut Router) -> core::result::Result<(), PipelineError> {
        router.flush()?;
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let mut held = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        // The timeout only bounds how late a stop is seen.
        while self.closed.load(Ordering::SeqCst) && !router.stopping() {
            held = self
                .opened
                .wait_timeout(held, Duration::from_millis(50))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        drop(held);
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        Ok(())
    }
}

/// Rounds of one sample per stream, until the pipeline stops; waits at its gate while the bench
/// has it closed.
pub(super) struct Synthetic {
    /// Each stream's index among all streams (its phase in the pool) and its id.
    streams: Vec<(usize, String)>,
    pool: Arc<Pool>,
    gate: Arc<Gate>,
}

impl Synthetic {
    /// A source (or a part of one) of `streams`, counted by its gate until dropped.
    pub(super) fn new(streams: Vec<(usize, String)>, pool: Arc<Pool>, gate: Arc<Gate>) -> Self {
        gate.parts.fetch_add(1, Ordering::SeqCst);
        Synthetic {
            streams,
            pool,
            gate,
        }
    }
}

impl Drop for Synthetic {
    fn drop(&mut self) {
        self.gate.parts.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Source for Synthetic {
    fn describe(&self) -> String {
        format!("synthetic ({} streams)", self.streams.len())
    }

    fn split(&mut self, workers: usize) -> Option<Vec<Box<dyn Source>>> {
        let groups = by_worker(self.streams.iter().cloned(), workers, |(_, name)| {
            Some(name.as_str())
        })?;
        Some(
            groups
                .into_iter()
                .map(|streams| {
                    Box::new(Synthetic::new(
                        streams,
                        Arc::clone(&self.pool),
                        Arc::clone(&self.gate),
                    )) as Box<dyn Source>
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
                if pushed.is_multiple_of(1024) {
                    if self.gate.closed.load(Ordering::Relaxed) {
                        self.gate.wait(router)?;
                    }
                    if router.stopping() {
                        return Ok(());
                    }
                }
            }
        }
        Ok(())
    }
}

/// The reference-size model with channel ranges that the synthetic data never leaves and a
/// threshold of 1.5 times the largest score of the first streams' normal data.
pub(super) fn model(args: &PipelineArgs, hop: u16, pool: &Pool) -> Result<Vec<u8>> {
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
