//! The raw side of the comparison: the same streams scored by threads calling
//! [`DynDetector::push`] directly, with no pipeline.

use core::hint::black_box;
use std::{
    thread,
    time::{Duration, Instant},
};

use sensorae::DynDetector;

use super::{Turn, synthetic::Pool};
use crate::pipeline::partition;

/// One raw thread's streams (those the pipeline's partition gives its worker), a boxed detector
/// for each, as a worker keeps them, and the round it has reached.
struct RawThread {
    streams: Vec<usize>,
    #[expect(
        clippy::vec_box,
        reason = "boxed one by one, as a worker keeps its streams' state, so memory is laid out alike"
    )]
    detectors: Vec<Box<DynDetector>>,
    round: usize,
}

/// The raw scorers, kept between turns.
pub(super) struct Raw {
    threads: Vec<RawThread>,
}

impl Raw {
    /// Detectors for `streams` streams over `workers` threads, each thread scoring its streams'
    /// first `warm` rounds (so, like the pipeline's at the first turn, every detector exists
    /// and is past its first windows). Each thread makes its own detectors, as a worker does.
    pub(super) fn new(
        detector: &DynDetector,
        names: &[String],
        pool: &Pool,
        workers: usize,
        warm: usize,
    ) -> Self {
        let mut owned: Vec<Vec<usize>> = vec![Vec::new(); workers.max(1)];
        for (s, name) in names.iter().enumerate() {
            if let Some(list) = owned.get_mut(partition(name, workers)) {
                list.push(s);
            }
        }
        let threads = thread::scope(|scope| {
            let handles: Vec<_> = owned
                .into_iter()
                .map(|streams| {
                    scope.spawn(move || {
                        let detectors =
                            streams.iter().map(|_| Box::new(detector.clone())).collect();
                        let mut t = RawThread {
                            streams,
                            detectors,
                            round: 0,
                        };
                        for _ in 0..warm {
                            t.round(pool);
                        }
                        t
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        Raw { threads }
    }

    /// Scores rounds on every thread until `length` has passed (each thread finishes the round
    /// it is in).
    pub(super) fn turn(&mut self, pool: &Pool, length: Duration) -> Turn {
        let start = Instant::now();
        let deadline = start + length;
        let counts: Vec<(u64, u64)> = thread::scope(|scope| {
            let handles: Vec<_> = self
                .threads
                .iter_mut()
                .map(|t| {
                    scope.spawn(move || {
                        let (mut samples, mut windows) = (0u64, 0u64);
                        while Instant::now() < deadline {
                            windows += t.round(pool);
                            samples += t.streams.len() as u64;
                        }
                        (samples, windows)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        Turn {
            samples: counts.iter().map(|c| c.0).sum(),
            windows: counts.iter().map(|c| c.1).sum(),
            elapsed: start.elapsed(),
            cpu: None,
        }
    }
}

impl RawThread {
    /// One sample for each of its streams, in order, as the source pushes them; returns the
    /// windows scored.
    fn round(&mut self, pool: &Pool) -> u64 {
        let mut windows = 0;
        for (&s, d) in self.streams.iter().zip(self.detectors.iter_mut()) {
            let verdict = d.push(pool.row(self.round, s));
            windows += u64::from(verdict.score().is_some_and(|s| s.fresh));
            black_box(&verdict);
        }
        self.round += 1;
        windows
    }
}
