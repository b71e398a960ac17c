//! Synthetic anomalies for the label-free sensitivity check (`sensorae bench skab
//! --anomaly-free --inject`).
//!
//! The anomaly-free pieces measure false alarms only, so they cannot weigh a threshold or an
//! alarm count against what it costs in misses. Here each piece gets one anomaly of a fixed
//! design in its test part, labelled 1 (every other row 0), so F1, FAR and MAR can be computed
//! without any of SKAB's test labels. The design was fixed before any run:
//!
//! - piece `k` (0-based) gets a segment of [`SEGMENT_ROWS`] rows starting at row
//!   `train_rows + 150 + (37 * k) % 200` of the piece; after it the signal is the original;
//! - `sigma_c` is channel c's population standard deviation over the piece's training rows;
//! - the kind is `k % 4` ([`Kind`]): a level shift of +3 sigma on channels `k` and `k + 3`; a
//!   ramp from 0 to +4 sigma on channel `k`; Gaussian noise of 2 sigma on channels `k` and
//!   `k + 5` (ChaCha8, seed `7 + k`); channels `k` and `k + 2` stuck at their value in the
//!   segment's first row. Channel numbers are taken modulo the channel count (8 for SKAB).
//!
//! # Examples
//! ```
//! use sensorae_host::inject::{Kind, plan};
//!
//! let p = plan(1, 8, 400);
//! assert_eq!(p.kind, Kind::Ramp);
//! assert_eq!(p.start, 400 + 150 + 37);
//! assert_eq!(p.channels, vec![1]);
//! ```

use core::ops::Range;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::{
    data::Table,
    demo::gauss,
    error::{Error, Result},
};

/// Rows of each injected anomaly.
pub const SEGMENT_ROWS: usize = 200;

/// Rows between the end of the training part and the earliest start of a segment.
pub const LEAD_ROWS: usize = 150;

/// Piece `k`'s segment starts `(STRIDE * k) % SPREAD` rows after the earliest start.
pub const STRIDE: usize = 37;

/// See [`STRIDE`].
pub const SPREAD: usize = 200;

/// The noise burst's seed is `SEED_BASE + k`.
pub const SEED_BASE: u64 = 7;

/// What is injected, by `k % 4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// +3 sigma on two channels for the whole segment.
    LevelShift,
    /// One channel rising linearly from 0 (first row) to +4 sigma (last row).
    Ramp,
    /// Gaussian noise of standard deviation 2 sigma added to two channels.
    NoiseBurst,
    /// Two channels held at their value in the segment's first row.
    StuckAt,
}

impl Kind {
    /// The kind of piece `k`.
    #[must_use]
    pub const fn of_piece(k: usize) -> Kind {
        match k % 4 {
            0 => Kind::LevelShift,
            1 => Kind::Ramp,
            2 => Kind::NoiseBurst,
            _ => Kind::StuckAt,
        }
    }

    /// Lowercase name.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::LevelShift => "level-shift",
            Kind::Ramp => "ramp",
            Kind::NoiseBurst => "noise-burst",
            Kind::StuckAt => "stuck-at",
        }
    }
}

/// The anomaly of one piece: its kind, rows and channels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injection {
    /// What is injected.
    pub kind: Kind,
    /// First row of the segment, counted from the piece's first row.
    pub start: usize,
    /// Channels changed, without repeats.
    pub channels: Vec<usize>,
    /// Seed of the noise burst's generator (unused by the other kinds).
    pub seed: u64,
}

impl Injection {
    /// The segment's rows.
    #[must_use]
    pub const fn rows(&self) -> Range<usize> {
        self.start..self.start + SEGMENT_ROWS
    }
}

/// The anomaly of piece `k` in pieces of `channels` channels whose first `train_rows` rows are
/// the training part.
///
/// # Examples
/// ```
/// use sensorae_host::inject::{Kind, plan};
///
/// let p = plan(6, 8, 400);
/// assert_eq!(p.kind, Kind::NoiseBurst);
/// assert_eq!(p.start, 400 + 150 + 22);
/// assert_eq!(p.channels, vec![6, 3]);
/// assert_eq!(p.seed, 13);
/// ```
#[must_use]
pub fn plan(k: usize, channels: usize, train_rows: usize) -> Injection {
    let kind = Kind::of_piece(k);
    let n = channels.max(1);
    let offsets: &[usize] = match kind {
        Kind::LevelShift => &[0, 3],
        Kind::Ramp => &[0],
        Kind::NoiseBurst => &[0, 5],
        Kind::StuckAt => &[0, 2],
    };
    let mut chosen = Vec::with_capacity(offsets.len());
    for o in offsets {
        let c = (k + o) % n;
        if !chosen.contains(&c) {
            chosen.push(c);
        }
    }
    Injection {
        kind,
        start: train_rows + LEAD_ROWS + (STRIDE * k) % SPREAD,
        channels: chosen,
        seed: SEED_BASE + k as u64,
    }
}

/// Population standard deviation of channel `c` over the first `rows` rows (non-finite
/// values skipped; 0 when none is finite).
fn sigma(table: &Table, c: usize, rows: usize) -> f64 {
    let n = table.channels.len();
    let values: Vec<f64> = (0..rows.min(table.rows()))
        .filter_map(|r| table.values.get(r * n + c).copied())
        .filter(|v| v.is_finite())
        .map(f64::from)
        .collect();
    if values.is_empty() {
        return 0.0;
    }
    let count = values.len() as f64;
    let mean = values.iter().sum::<f64>() / count;
    (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / count).sqrt()
}

/// Injects `injection` into `table` and labels its rows: 1 in the segment, 0 elsewhere. Sigma
/// comes from the first `train_rows` rows, which are left as they are.
///
/// # Errors
/// [`Error::Mismatch`] naming the table's file when the segment does not fit in the table,
/// starts inside the training part, names a missing channel, or would write a value that is
/// not finite (the table is then left partly changed).
pub fn inject(table: &mut Table, injection: &Injection, train_rows: usize) -> Result<()> {
    let n = table.channels.len();
    let rows = injection.rows();
    let path = table.path.clone();
    let fail = |message: String| Error::Mismatch {
        path: path.clone(),
        message,
    };
    if rows.start < train_rows || rows.end > table.rows() {
        return Err(fail(format!(
            "injected segment {}..{} must lie between the training part ({train_rows} rows) and the end ({} rows)",
            rows.start,
            rows.end,
            table.rows()
        )));
    }
    if let Some(&c) = injection.channels.iter().find(|&&c| c >= n) {
        return Err(fail(format!(
            "injected channel {c} does not exist ({n} channels)"
        )));
    }
    let sigmas: Vec<f64> = injection
        .channels
        .iter()
        .map(|&c| sigma(table, c, train_rows))
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(injection.seed);
    let first: Vec<f32> = injection
        .channels
        .iter()
        .map(|&c| table.values.get(rows.start * n + c).copied().unwrap_or(0.0))
        .collect();
    let last = (SEGMENT_ROWS - 1) as f64;
    for (i, r) in rows.clone().enumerate() {
        for (j, &c) in injection.channels.iter().enumerate() {
            let s = sigmas.get(j).copied().unwrap_or(0.0);
            let Some(v) = table.values.get_mut(r * n + c) else {
                continue;
            };
            let new = match injection.kind {
                Kind::LevelShift => (f64::from(*v) + 3.0 * s) as f32,
                Kind::Ramp => (f64::from(*v) + 4.0 * s * i as f64 / last) as f32,
                Kind::NoiseBurst => (f64::from(*v) + 2.0 * s * f64::from(gauss(&mut rng))) as f32,
                Kind::StuckAt => first.get(j).copied().unwrap_or(*v),
            };
            if !new.is_finite() {
                let name = table.channels.get(c).cloned().unwrap_or_default();
                return Err(fail(format!(
                    "injected {} gives a value that is not finite at row {r}, channel {name}",
                    injection.kind.name()
                )));
            }
            *v = new;
        }
    }
    let mut labels = vec![0; table.rows()];
    labels
        .get_mut(rows)
        .into_iter()
        .flatten()
        .for_each(|l| *l = 1);
    table.labels = Some(labels);
    Ok(())
}

/// Injects piece `k`'s anomaly ([`plan`]) into each of `pieces` (in order, `k` from 0) and
/// appends its kind to the piece's name.
///
/// # Errors
/// As [`inject`].
pub fn inject_pieces(
    pieces: Vec<(String, Table)>,
    train_rows: usize,
) -> Result<Vec<(String, Table)>> {
    pieces
        .into_iter()
        .enumerate()
        .map(|(k, (name, mut table))| {
            let injection = plan(k, table.channels.len(), train_rows);
            inject(&mut table, &injection, train_rows)?;
            Ok((format!("{name}:{}", injection.kind.name()), table))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROWS: usize = 1150;
    const CHANNELS: usize = 8;
    const TRAIN: usize = 400;

    /// Channel c alternates around `10 c` by `±(c + 1)` in the training rows (so its sigma is
    /// exactly c + 1) and by `±0.5 (c + 1)` after them, so a sigma taken from the wrong rows
    /// shows; plus a slow ramp so no two rows are alike.
    fn piece() -> Table {
        let mut values = Vec::with_capacity(ROWS * CHANNELS);
        for r in 0..ROWS {
            for c in 0..CHANNELS {
                let sign = if r % 2 == 0 { 1.0 } else { -1.0 };
                let spread = if r < TRAIN { 1.0 } else { 0.5 };
                let drift = if r < TRAIN { 0.0 } else { r as f32 * 1e-3 };
                values.push(10.0 * c as f32 + sign * spread * (c + 1) as f32 + drift);
            }
        }
        Table {
            path: "piece.csv".into(),
            channels: (0..CHANNELS).map(|c| format!("ch{c}")).collect(),
            values,
            labels: Some(vec![0; ROWS]),
            times: None,
            lines: (2..ROWS as u64 + 2).collect(),
        }
    }

    fn injected(k: usize) -> (Table, Table, Injection) {
        let before = piece();
        let mut after = before.clone();
        let p = plan(k, CHANNELS, TRAIN);
        inject(&mut after, &p, TRAIN).unwrap();
        (before, after, p)
    }

    fn diff(before: &Table, after: &Table, r: usize, c: usize) -> f32 {
        after.values[r * CHANNELS + c] - before.values[r * CHANNELS + c]
    }

    #[test]
    fn segments_are_where_the_design_puts_them() {
        let starts: Vec<usize> = (0..8).map(|k| plan(k, CHANNELS, TRAIN).start).collect();
        assert_eq!(starts, [550, 587, 624, 661, 698, 735, 572, 609]);
        let kinds: Vec<Kind> = (0..8).map(|k| plan(k, CHANNELS, TRAIN).kind).collect();
        assert_eq!(
            kinds,
            [
                Kind::LevelShift,
                Kind::Ramp,
                Kind::NoiseBurst,
                Kind::StuckAt,
                Kind::LevelShift,
                Kind::Ramp,
                Kind::NoiseBurst,
                Kind::StuckAt,
            ]
        );
        let channels: Vec<Vec<usize>> = (0..8).map(|k| plan(k, CHANNELS, TRAIN).channels).collect();
        assert_eq!(
            channels,
            [
                vec![0, 3],
                vec![1],
                vec![2, 7],
                vec![3, 5],
                vec![4, 7],
                vec![5],
                vec![6, 3],
                vec![7, 1],
            ]
        );
        assert_eq!(plan(2, CHANNELS, TRAIN).seed, 9);
        for k in 0..8 {
            let rows = plan(k, CHANNELS, TRAIN).rows();
            assert_eq!(rows.len(), SEGMENT_ROWS);
            assert!(rows.start >= TRAIN + LEAD_ROWS && rows.end <= ROWS);
        }
    }

    #[test]
    fn labels_mark_exactly_the_segment() {
        for k in 0..8 {
            let (_, after, p) = injected(k);
            let labels = after.labels.unwrap();
            assert_eq!(labels.len(), ROWS);
            for (r, &l) in labels.iter().enumerate() {
                assert_eq!(l, u8::from(p.rows().contains(&r)), "k {k} row {r}");
            }
        }
    }

    #[test]
    fn only_the_segment_of_the_chosen_channels_changes() {
        for k in 0..8 {
            let (before, after, p) = injected(k);
            for r in 0..ROWS {
                for c in 0..CHANNELS {
                    if p.rows().contains(&r) && p.channels.contains(&c) {
                        continue;
                    }
                    assert_eq!(diff(&before, &after, r, c), 0.0, "k {k} row {r} ch {c}");
                }
            }
        }
    }

    #[test]
    fn level_shift_adds_three_training_sigmas() {
        let (before, after, p) = injected(4);
        assert_eq!(p.channels, [4, 7]);
        for r in p.rows() {
            for c in [4, 7] {
                let want = 3.0 * (c + 1) as f32;
                assert!((diff(&before, &after, r, c) - want).abs() < 1e-4);
            }
        }
    }

    #[test]
    fn ramp_rises_from_zero_to_four_sigmas() {
        let (before, after, p) = injected(5);
        let sigma = 6.0;
        let rows: Vec<usize> = p.rows().collect();
        assert_eq!(diff(&before, &after, rows[0], 5), 0.0);
        let end = diff(&before, &after, rows[SEGMENT_ROWS - 1], 5);
        assert!((end - 4.0 * sigma).abs() < 1e-4);
        let mid = diff(&before, &after, rows[100], 5);
        assert!((mid - 4.0 * sigma * 100.0 / 199.0).abs() < 1e-4);
        for pair in rows.windows(2) {
            assert!(diff(&before, &after, pair[1], 5) > diff(&before, &after, pair[0], 5));
        }
        assert_eq!(diff(&before, &after, p.rows().end, 5), 0.0);
    }

    #[test]
    fn noise_burst_adds_zero_mean_noise_of_two_sigmas() {
        let (before, after, p) = injected(2);
        assert_eq!(p.channels, [2, 7]);
        // Both channels' noise in units of 2 sigma: 400 draws of a standard normal (seed 9's
        // happen to have a standard deviation of 1.09).
        let mut z = Vec::new();
        for c in [2, 7] {
            for r in p.rows() {
                let d = f64::from(diff(&before, &after, r, c));
                assert_ne!(d, 0.0, "ch {c} row {r}");
                z.push(d / (2.0 * (c + 1) as f64));
            }
        }
        let mean = z.iter().sum::<f64>() / z.len() as f64;
        let sd = (z.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / z.len() as f64).sqrt();
        assert!((sd - 1.0).abs() < 0.15, "sd {sd}");
        assert!(mean.abs() < 0.2, "mean {mean}");
    }

    #[test]
    fn stuck_at_holds_the_first_row() {
        let (before, after, p) = injected(7);
        assert_eq!(p.channels, [7, 1]);
        for c in [7, 1] {
            let held = before.values[p.start * CHANNELS + c];
            for r in p.rows() {
                assert_eq!(after.values[r * CHANNELS + c], held);
            }
            // The fixture alternates, so holding changes every other row.
            assert_ne!(diff(&before, &after, p.start + 1, c), 0.0);
            let end = p.rows().end;
            assert_eq!(diff(&before, &after, end, c), 0.0);
        }
    }

    #[test]
    fn injection_is_deterministic_and_seeded_per_piece() {
        for k in 0..8 {
            assert_eq!(injected(k).1.values, injected(k).1.values);
        }
        // Same rows and channels, other seed: other noise.
        let mut a = piece();
        let mut b = piece();
        let p = plan(2, CHANNELS, TRAIN);
        inject(&mut a, &p, TRAIN).unwrap();
        inject(&mut b, &Injection { seed: 8, ..p }, TRAIN).unwrap();
        assert_ne!(a.values, b.values);
    }

    #[test]
    fn pieces_are_numbered_in_order_and_named_by_kind() {
        let pieces = (0..4).map(|k| (format!("p{k}"), piece())).collect();
        let out = inject_pieces(pieces, TRAIN).unwrap();
        let names: Vec<&str> = out.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            ["p0:level-shift", "p1:ramp", "p2:noise-burst", "p3:stuck-at"]
        );
        let (_, third) = &out[2];
        let labels = third.labels.as_ref().unwrap();
        assert_eq!(labels.iter().position(|&l| l == 1), Some(624));
    }

    #[test]
    fn values_that_are_not_finite_are_refused() {
        let mut t = piece();
        let p = plan(0, CHANNELS, TRAIN);
        t.values[(p.start + 10) * CHANNELS] = f32::NAN;
        assert!(inject(&mut t, &p, TRAIN).is_err());
        // A training spread of ±2e38 gives sigma 2e38: +3 sigma overflows f32.
        let mut t = piece();
        for r in 0..TRAIN {
            t.values[r * CHANNELS] = if r % 2 == 0 { 2e38 } else { -2e38 };
        }
        assert!(inject(&mut t, &p, TRAIN).is_err());
    }

    #[test]
    fn segments_outside_the_test_part_are_refused() {
        let mut t = piece();
        let p = plan(0, CHANNELS, TRAIN);
        assert!(
            inject(
                &mut t,
                &Injection {
                    start: 300,
                    ..p.clone()
                },
                TRAIN
            )
            .is_err()
        );
        assert!(
            inject(
                &mut t,
                &Injection {
                    start: 1000,
                    ..p.clone()
                },
                TRAIN
            )
            .is_err()
        );
        let bad = Injection {
            channels: vec![8],
            ..p
        };
        assert!(inject(&mut t, &bad, TRAIN).is_err());
    }
}
