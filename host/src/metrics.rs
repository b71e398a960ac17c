//! Evaluation of scores and alarms against 0/1 labels.
//!
//! - Pointwise counts ([`Confusion`]) over the rows that have a score, with precision, recall,
//!   F1, false-alarm rate `FP/(FP+TN)` and missed-alarm rate `FN/(FN+TP)`. Counts add up, so a
//!   benchmark over many files (SKAB) sums them and computes the rates once.
//! - ROC-AUC of the score against the labels ([`roc_auc`]): the Mann-Whitney statistic, the
//!   probability that a random anomalous row scores above a random normal one, ties counting
//!   one half.
//! - PR-AUC as average precision ([`average_precision`]): `Σ (R_k - R_{k-1}) P_k` over the
//!   distinct score values taken as thresholds from the highest down, where `P_k`, `R_k` are the
//!   precision and recall of "score >= k-th value" (scikit-learn's definition; no interpolation).
//! - Detection delay ([`DetectionDelay`]): for each labelled anomaly segment (a maximal run of
//!   label 1), the rows from its first row to the first alarm inside it; segments with no alarm
//!   are counted as missed, not averaged in.
//!
//! Degenerate inputs never divide by zero: a rate whose denominator is zero is `None` (no
//! positives: no recall, missed-alarm rate, ROC-AUC or average precision; no negatives: no
//! false-alarm rate or ROC-AUC). Results are never NaN.
//!
//! # Examples
//! ```
//! use sensorae_host::metrics::evaluate;
//!
//! let scores = [Some(0.1), Some(0.4), Some(0.35), Some(0.8), None];
//! let alarms = [false, true, false, true, false];
//! let labels = [0, 0, 1, 1, 1];
//! let report = evaluate(&scores, &alarms, &labels)?;
//! assert_eq!(report.confusion.tp, 1);
//! assert_eq!(report.roc_auc, Some(0.75));
//! assert_eq!(report.scored_rows, 4);
//! # Ok::<(), sensorae_host::metrics::MetricsError>(())
//! ```

use core::{
    iter::Sum,
    ops::{Add, AddAssign},
};

use serde::Serialize;

/// Why inputs could not be evaluated. Rows are 0-based indices into the slices given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// The slices differ in length.
    #[error(
        "evaluation inputs differ in length: {scores} scores, {alarms} alarms, {labels} labels; \
         expected one of each per row"
    )]
    LengthMismatch {
        /// Number of scores.
        scores: usize,
        /// Number of alarms.
        alarms: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is not 0 or 1.
    #[error("row {row}: label {value}, expected 0 or 1")]
    BadLabel {
        /// Row index.
        row: usize,
        /// The label.
        value: u8,
    },
    /// A score is NaN or infinite (a row without a score should be `None`).
    #[error("row {row}: score {value}, expected a finite number (or no score)")]
    NonFiniteScore {
        /// Row index.
        row: usize,
        /// The score.
        value: f32,
    },
}

/// Pointwise confusion counts. Adds with `+`, `+=` and `sum()`, to pool many files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Alarm on an anomalous row.
    pub tp: u64,
    /// Alarm on a normal row.
    pub fp: u64,
    /// No alarm on a normal row.
    pub tn: u64,
    /// No alarm on an anomalous row.
    #[serde(rename = "fn")]
    pub fn_: u64,
}

/// `num / den`, or `None` when `den` is 0.
fn ratio(num: f64, den: f64) -> Option<f64> {
    (den > 0.0).then(|| num / den)
}

impl Confusion {
    /// Counts alarms against labels, row by row.
    ///
    /// # Errors
    /// [`MetricsError::LengthMismatch`] or [`MetricsError::BadLabel`].
    ///
    /// # Examples
    /// ```
    /// use sensorae_host::metrics::Confusion;
    ///
    /// let c = Confusion::from_alarms(&[true, true, false, false], &[1, 0, 1, 0])?;
    /// assert_eq!((c.tp, c.fp, c.tn, c.fn_), (1, 1, 1, 1));
    /// # Ok::<(), sensorae_host::metrics::MetricsError>(())
    /// ```
    pub fn from_alarms(alarms: &[bool], labels: &[u8]) -> Result<Self, MetricsError> {
        if alarms.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                scores: alarms.len(),
                alarms: alarms.len(),
                labels: labels.len(),
            });
        }
        let mut c = Self::default();
        for (row, (&alarm, &label)) in alarms.iter().zip(labels).enumerate() {
            c.record(alarm, is_anomaly(row, label)?);
        }
        Ok(c)
    }

    /// Counts one row.
    pub fn record(&mut self, alarm: bool, anomalous: bool) {
        match (alarm, anomalous) {
            (true, true) => self.tp += 1,
            (true, false) => self.fp += 1,
            (false, false) => self.tn += 1,
            (false, true) => self.fn_ += 1,
        }
    }

    /// All rows counted.
    #[must_use]
    pub fn total(&self) -> u64 {
        self.tp + self.fp + self.tn + self.fn_
    }

    /// Anomalous rows (`TP + FN`).
    #[must_use]
    pub fn positives(&self) -> u64 {
        self.tp + self.fn_
    }

    /// Normal rows (`FP + TN`).
    #[must_use]
    pub fn negatives(&self) -> u64 {
        self.fp + self.tn
    }

    /// `TP / (TP + FP)`; `None` without any alarm.
    #[must_use]
    pub fn precision(&self) -> Option<f64> {
        ratio(self.tp as f64, (self.tp + self.fp) as f64)
    }

    /// `TP / (TP + FN)`; `None` without anomalous rows.
    #[must_use]
    pub fn recall(&self) -> Option<f64> {
        ratio(self.tp as f64, self.positives() as f64)
    }

    /// `2 TP / (2 TP + FP + FN)`, the harmonic mean of precision and recall; 0 when there are
    /// alarms or anomalies but no hit; `None` when there are neither.
    #[must_use]
    pub fn f1(&self) -> Option<f64> {
        let tp = self.tp as f64;
        ratio(2.0 * tp, 2.0 * tp + (self.fp + self.fn_) as f64)
    }

    /// SKAB's form `TP / (TP + (FP + FN) / 2)`: the same number as [`Confusion::f1`].
    #[must_use]
    pub fn f1_skab(&self) -> Option<f64> {
        let tp = self.tp as f64;
        ratio(tp, tp + (self.fp + self.fn_) as f64 / 2.0)
    }

    /// False-alarm rate `FP / (FP + TN)`; `None` without normal rows.
    #[must_use]
    pub fn false_alarm_rate(&self) -> Option<f64> {
        ratio(self.fp as f64, self.negatives() as f64)
    }

    /// Missed-alarm rate `FN / (FN + TP)`; `None` without anomalous rows.
    #[must_use]
    pub fn missed_alarm_rate(&self) -> Option<f64> {
        ratio(self.fn_ as f64, self.positives() as f64)
    }
}

impl Add for Confusion {
    type Output = Confusion;

    fn add(self, o: Confusion) -> Confusion {
        Confusion {
            tp: self.tp + o.tp,
            fp: self.fp + o.fp,
            tn: self.tn + o.tn,
            fn_: self.fn_ + o.fn_,
        }
    }
}

impl AddAssign for Confusion {
    fn add_assign(&mut self, o: Confusion) {
        *self = *self + o;
    }
}

impl Sum for Confusion {
    fn sum<I: Iterator<Item = Confusion>>(iter: I) -> Confusion {
        iter.fold(Confusion::default(), Add::add)
    }
}

fn is_anomaly(row: usize, label: u8) -> Result<bool, MetricsError> {
    match label {
        0 => Ok(false),
        1 => Ok(true),
        value => Err(MetricsError::BadLabel { row, value }),
    }
}

/// Checks labels and scores, giving `(score, anomalous)` pairs.
fn pairs(scores: &[f32], labels: &[u8]) -> Result<Vec<(f32, bool)>, MetricsError> {
    if scores.len() != labels.len() {
        return Err(MetricsError::LengthMismatch {
            scores: scores.len(),
            alarms: scores.len(),
            labels: labels.len(),
        });
    }
    scores
        .iter()
        .zip(labels)
        .enumerate()
        .map(|(row, (&value, &label))| {
            if !value.is_finite() {
                return Err(MetricsError::NonFiniteScore { row, value });
            }
            Ok((value, is_anomaly(row, label)?))
        })
        .collect()
}

/// ROC-AUC from `(score, anomalous)` pairs by ranks (ties get their average rank).
fn roc_auc_pairs(pairs: &mut [(f32, bool)]) -> Option<f64> {
    let pos = pairs.iter().filter(|p| p.1).count() as f64;
    let neg = pairs.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < pairs.len() {
        let j = i + pairs[i..].iter().take_while(|p| p.0 == pairs[i].0).count();
        // Ranks i+1 ..= j share their mean.
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        rank_sum += mean_rank * pairs[i..j].iter().filter(|p| p.1).count() as f64;
        i = j;
    }
    Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
}

/// Average precision from `(score, anomalous)` pairs.
fn average_precision_pairs(pairs: &mut [(f32, bool)]) -> Option<f64> {
    let pos = pairs.iter().filter(|p| p.1).count() as f64;
    if pos == 0.0 {
        return None;
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp, mut prev_recall, mut ap) = (0.0, 0.0, 0.0, 0.0);
    let mut i = 0;
    while i < pairs.len() {
        // All rows tied at this score cross the threshold together.
        let j = i + pairs[i..].iter().take_while(|p| p.0 == pairs[i].0).count();
        let hits = pairs[i..j].iter().filter(|p| p.1).count() as f64;
        tp += hits;
        fp += (j - i) as f64 - hits;
        let recall = tp / pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
        i = j;
    }
    Some(ap)
}

/// ROC-AUC of `scores` against 0/1 `labels`; `None` when either class is absent.
///
/// # Errors
/// Different lengths, a label other than 0/1, or a non-finite score.
///
/// # Examples
/// ```
/// let auc = sensorae_host::metrics::roc_auc(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1])?;
/// assert_eq!(auc, Some(0.75));
/// # Ok::<(), sensorae_host::metrics::MetricsError>(())
/// ```
pub fn roc_auc(scores: &[f32], labels: &[u8]) -> Result<Option<f64>, MetricsError> {
    Ok(roc_auc_pairs(&mut pairs(scores, labels)?))
}

/// Average precision (PR-AUC) of `scores` against 0/1 `labels`, as defined in the module docs;
/// `None` without anomalous rows.
///
/// # Errors
/// Different lengths, a label other than 0/1, or a non-finite score.
///
/// # Examples
/// ```
/// let ap = sensorae_host::metrics::average_precision(&[0.1, 0.4, 0.35, 0.8], &[0, 0, 1, 1])?;
/// assert!((ap.unwrap() - 5.0 / 6.0).abs() < 1e-12);
/// # Ok::<(), sensorae_host::metrics::MetricsError>(())
/// ```
pub fn average_precision(scores: &[f32], labels: &[u8]) -> Result<Option<f64>, MetricsError> {
    Ok(average_precision_pairs(&mut pairs(scores, labels)?))
}

/// Detection delays over labelled anomaly segments. Adds with `+`, `+=` and `sum()`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DetectionDelay {
    /// Anomaly segments (maximal runs of label 1).
    pub segments: u64,
    /// Segments with an alarm inside.
    pub detected: u64,
    /// Sum over detected segments of the rows from the segment's start to its first alarm.
    pub total_delay_rows: u64,
}

impl DetectionDelay {
    /// Finds the segments in `labels` and the first alarm inside each. A segment that runs to
    /// the end of the slice ends there.
    ///
    /// # Errors
    /// Different lengths or a label other than 0/1.
    ///
    /// # Examples
    /// ```
    /// use sensorae_host::metrics::DetectionDelay;
    ///
    /// let d = DetectionDelay::from_alarms(&[false, false, true, false], &[0, 1, 1, 1])?;
    /// assert_eq!(d.mean(), Some(1.0));
    /// # Ok::<(), sensorae_host::metrics::MetricsError>(())
    /// ```
    pub fn from_alarms(alarms: &[bool], labels: &[u8]) -> Result<Self, MetricsError> {
        if alarms.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                scores: alarms.len(),
                alarms: alarms.len(),
                labels: labels.len(),
            });
        }
        let mut d = Self::default();
        // Start row of the open segment, and whether it has been detected.
        let mut open: Option<(usize, bool)> = None;
        for (row, (&alarm, &label)) in alarms.iter().zip(labels).enumerate() {
            if is_anomaly(row, label)? {
                let (start, detected) = *open.get_or_insert_with(|| {
                    d.segments += 1;
                    (row, false)
                });
                if alarm && !detected {
                    d.detected += 1;
                    d.total_delay_rows += (row - start) as u64;
                    open = Some((start, true));
                }
            } else {
                open = None;
            }
        }
        Ok(d)
    }

    /// Segments without any alarm inside.
    #[must_use]
    pub fn missed(&self) -> u64 {
        self.segments - self.detected.min(self.segments)
    }

    /// Mean delay in rows over detected segments; `None` when none was detected.
    #[must_use]
    pub fn mean(&self) -> Option<f64> {
        ratio(self.total_delay_rows as f64, self.detected as f64)
    }
}

impl Add for DetectionDelay {
    type Output = DetectionDelay;

    fn add(self, o: DetectionDelay) -> DetectionDelay {
        DetectionDelay {
            segments: self.segments + o.segments,
            detected: self.detected + o.detected,
            total_delay_rows: self.total_delay_rows + o.total_delay_rows,
        }
    }
}

impl AddAssign for DetectionDelay {
    fn add_assign(&mut self, o: DetectionDelay) {
        *self = *self + o;
    }
}

impl Sum for DetectionDelay {
    fn sum<I: Iterator<Item = DetectionDelay>>(iter: I) -> DetectionDelay {
        iter.fold(DetectionDelay::default(), Add::add)
    }
}

/// Everything [`Evaluation::report`] computes, for printing or `--json`. Rates are `None`
/// (JSON `null`) where undefined, never NaN.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Rows given.
    pub rows: u64,
    /// Rows with a score: the rows counted below.
    pub scored_rows: u64,
    /// Pointwise counts over scored rows.
    pub confusion: Confusion,
    /// `TP / (TP + FP)`.
    pub precision: Option<f64>,
    /// `TP / (TP + FN)`.
    pub recall: Option<f64>,
    /// F1, equal to SKAB's `TP / (TP + (FP + FN) / 2)`.
    pub f1: Option<f64>,
    /// `FP / (FP + TN)`.
    pub false_alarm_rate: Option<f64>,
    /// `FN / (FN + TP)`.
    pub missed_alarm_rate: Option<f64>,
    /// ROC-AUC of the score over scored rows.
    pub roc_auc: Option<f64>,
    /// Average precision of the score over scored rows.
    pub average_precision: Option<f64>,
    /// Anomaly segments.
    pub segments: u64,
    /// Segments with an alarm inside.
    pub detected_segments: u64,
    /// Segments without an alarm.
    pub missed_segments: u64,
    /// Mean detection delay in rows over detected segments.
    pub mean_delay_rows: Option<f64>,
}

/// Accumulates many files (or streams), then reports pooled metrics: counts and delays add;
/// the AUCs are computed over all scored rows together.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Evaluation {
    rows: u64,
    confusion: Confusion,
    delay: DetectionDelay,
    scored: Vec<(f32, bool)>,
}

impl Evaluation {
    /// An empty evaluation.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one file's rows: `scores[i]` is `None` where the detector gave no score (window
    /// not yet full, sensor fault); such rows are left out of the counts and the AUCs, and an
    /// alarm there is ignored (time still passes for the detection delay). Anomaly segments do
    /// not continue across calls.
    ///
    /// # Errors
    /// Different lengths, a label other than 0/1, or a non-finite score; nothing is added then.
    pub fn add(
        &mut self,
        scores: &[Option<f32>],
        alarms: &[bool],
        labels: &[u8],
    ) -> Result<(), MetricsError> {
        if scores.len() != alarms.len() || scores.len() != labels.len() {
            return Err(MetricsError::LengthMismatch {
                scores: scores.len(),
                alarms: alarms.len(),
                labels: labels.len(),
            });
        }
        let mut confusion = Confusion::default();
        let mut scored = Vec::new();
        let mut effective = Vec::with_capacity(alarms.len());
        for (row, ((&score, &alarm), &label)) in scores.iter().zip(alarms).zip(labels).enumerate() {
            let anomalous = is_anomaly(row, label)?;
            match score {
                Some(value) if !value.is_finite() => {
                    return Err(MetricsError::NonFiniteScore { row, value });
                }
                Some(value) => {
                    confusion.record(alarm, anomalous);
                    scored.push((value, anomalous));
                    effective.push(alarm);
                }
                None => effective.push(false),
            }
        }
        let delay = DetectionDelay::from_alarms(&effective, labels)?;
        self.rows += scores.len() as u64;
        self.confusion += confusion;
        self.delay += delay;
        self.scored.extend(scored);
        Ok(())
    }

    /// Pooled counts so far.
    #[must_use]
    pub fn confusion(&self) -> Confusion {
        self.confusion
    }

    /// Pooled detection delays so far.
    #[must_use]
    pub fn delay(&self) -> DetectionDelay {
        self.delay
    }

    /// The metrics over everything added.
    #[must_use]
    pub fn report(&self) -> Report {
        let c = self.confusion;
        let mut pairs = self.scored.clone();
        Report {
            rows: self.rows,
            scored_rows: self.scored.len() as u64,
            confusion: c,
            precision: c.precision(),
            recall: c.recall(),
            f1: c.f1(),
            false_alarm_rate: c.false_alarm_rate(),
            missed_alarm_rate: c.missed_alarm_rate(),
            roc_auc: roc_auc_pairs(&mut pairs),
            average_precision: average_precision_pairs(&mut pairs),
            segments: self.delay.segments,
            detected_segments: self.delay.detected,
            missed_segments: self.delay.missed(),
            mean_delay_rows: self.delay.mean(),
        }
    }
}

/// Evaluates one file: [`Evaluation::add`] then [`Evaluation::report`].
///
/// # Errors
/// As [`Evaluation::add`].
pub fn evaluate(
    scores: &[Option<f32>],
    alarms: &[bool],
    labels: &[u8],
) -> Result<Report, MetricsError> {
    let mut e = Evaluation::new();
    e.add(scores, alarms, labels)?;
    Ok(e.report())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-12)
    }

    // tp = rows 0, 1; fp = 2, 7; fn = 3; tn = 4, 5, 6.
    const ALARMS: [bool; 8] = [true, true, true, false, false, false, false, true];
    const LABELS: [u8; 8] = [1, 1, 0, 1, 0, 0, 0, 0];

    #[test]
    fn confusion_rates_by_hand() {
        let c = Confusion::from_alarms(&ALARMS, &LABELS).unwrap();
        assert_eq!(
            c,
            Confusion {
                tp: 2,
                fp: 2,
                tn: 3,
                fn_: 1
            }
        );
        assert!(close(c.precision(), 0.5));
        assert!(close(c.recall(), 2.0 / 3.0));
        // 2 * 0.5 * (2/3) / (0.5 + 2/3) = 4/7, and 2 / (2 + 3/2) = 4/7.
        assert!(close(c.f1(), 4.0 / 7.0));
        assert!(close(c.f1_skab(), 4.0 / 7.0));
        assert!(close(c.false_alarm_rate(), 0.4));
        assert!(close(c.missed_alarm_rate(), 1.0 / 3.0));
    }

    #[test]
    fn skab_f1_equals_the_usual_f1() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for _ in 0..200 {
            let mut n = || u64::from(rng.random::<u8>() % 20);
            let c = Confusion {
                tp: n(),
                fp: n(),
                tn: n(),
                fn_: n(),
            };
            let usual = match (c.precision(), c.recall()) {
                (Some(p), Some(r)) if p + r > 0.0 => 2.0 * p * r / (p + r),
                _ if c.fp + c.fn_ > 0 => 0.0,
                _ => f64::NAN,
            };
            match c.f1_skab() {
                Some(f) => {
                    assert!((f - usual).abs() < 1e-12, "{c:?}");
                    assert_eq!(c.f1(), c.f1_skab());
                }
                None => assert!(usual.is_nan() && c.f1().is_none(), "{c:?}"),
            }
        }
    }

    #[test]
    fn confusion_adds_across_files() {
        let a = Confusion::from_alarms(&ALARMS[..4], &LABELS[..4]).unwrap();
        let b = Confusion::from_alarms(&ALARMS[4..], &LABELS[4..]).unwrap();
        let all = Confusion::from_alarms(&ALARMS, &LABELS).unwrap();
        assert_eq!(a + b, all);
        assert_eq!([a, b].into_iter().sum::<Confusion>(), all);
        let mut c = a;
        c += b;
        assert_eq!(c, all);
    }

    #[test]
    fn degenerate_counts_give_none_not_nan() {
        let empty = Confusion::default();
        for rate in [
            empty.precision(),
            empty.recall(),
            empty.f1(),
            empty.f1_skab(),
            empty.false_alarm_rate(),
            empty.missed_alarm_rate(),
        ] {
            assert_eq!(rate, None);
        }
        // Only normal rows, no alarm: nothing to find, no false alarm.
        let normal = Confusion::from_alarms(&[false, false], &[0, 0]).unwrap();
        assert_eq!(normal.recall(), None);
        assert_eq!(normal.f1(), None);
        assert_eq!(normal.false_alarm_rate(), Some(0.0));
        // Only anomalous rows, all missed: F1 0, not undefined.
        let missed = Confusion::from_alarms(&[false, false], &[1, 1]).unwrap();
        assert_eq!(missed.f1(), Some(0.0));
        assert_eq!(missed.false_alarm_rate(), None);
        assert_eq!(missed.missed_alarm_rate(), Some(1.0));

        let r = evaluate(&[], &[], &[]).unwrap();
        assert_eq!(r.roc_auc, None);
        assert_eq!(r.average_precision, None);
        assert_eq!(r.mean_delay_rows, None);
        assert_eq!(roc_auc(&[1.0, 2.0], &[1, 1]).unwrap(), None);
        assert_eq!(roc_auc(&[1.0, 2.0], &[0, 0]).unwrap(), None);
        assert_eq!(average_precision(&[1.0, 2.0], &[0, 0]).unwrap(), None);
        assert_eq!(average_precision(&[1.0, 2.0], &[1, 1]).unwrap(), Some(1.0));
    }

    #[test]
    fn roc_auc_and_average_precision_by_hand() {
        // scikit-learn's documentation example.
        let scores = [0.1, 0.4, 0.35, 0.8];
        let labels = [0, 0, 1, 1];
        assert_eq!(roc_auc(&scores, &labels).unwrap(), Some(0.75));
        // Thresholds 0.8: P 1, R 1/2; 0.4: P 1/2, R 1/2; 0.35: P 2/3, R 1; so
        // 1/2 * 1 + 0 + 1/2 * 2/3 = 5/6.
        assert!(close(
            average_precision(&scores, &labels).unwrap(),
            5.0 / 6.0
        ));
        // Ties: pairs (pos 1 vs neg 1) 1/2, (1 vs 2) 0, (2 vs 1) 1, (2 vs 2) 1/2.
        assert_eq!(
            roc_auc(&[1.0, 1.0, 2.0, 2.0], &[0, 1, 0, 1]).unwrap(),
            Some(0.5)
        );
        // Tied top group {2: pos, 2: neg}: P 1/2, R 1/2; then {1: pos}: P 2/3, R 1.
        assert!(close(
            average_precision(&[2.0, 2.0, 1.0], &[1, 0, 1]).unwrap(),
            0.25 + 0.5 * 2.0 / 3.0
        ));
        // Perfect and reversed rankings.
        assert_eq!(roc_auc(&[1.0, 2.0, 3.0], &[0, 1, 1]).unwrap(), Some(1.0));
        assert_eq!(roc_auc(&[3.0, 2.0, 1.0], &[0, 1, 1]).unwrap(), Some(0.0));
    }

    #[test]
    fn roc_auc_matches_a_pairwise_count() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        for _ in 0..50 {
            let n = 1 + usize::from(rng.random::<u8>() % 60);
            // Few distinct values, so ties are common.
            let scores: Vec<f32> = (0..n).map(|_| f32::from(rng.random::<u8>() % 7)).collect();
            let labels: Vec<u8> = (0..n).map(|_| rng.random::<u8>() % 2).collect();
            let (mut wins, mut pairs) = (0.0, 0.0);
            for (i, &si) in scores.iter().enumerate() {
                for (j, &sj) in scores.iter().enumerate() {
                    if labels[i] == 1 && labels[j] == 0 {
                        pairs += 1.0;
                        wins += if si > sj {
                            1.0
                        } else if si == sj {
                            0.5
                        } else {
                            0.0
                        };
                    }
                }
            }
            let auc = roc_auc(&scores, &labels).unwrap();
            if pairs == 0.0 {
                assert_eq!(auc, None);
            } else {
                assert!(close(auc, wins / pairs), "{auc:?} vs {}", wins / pairs);
            }
        }
    }

    #[test]
    fn detection_delay_by_hand() {
        let labels = [0, 1, 1, 1, 0, 0, 1, 1, 0, 1, 1];
        let alarms = [
            true, false, false, true, false, false, true, false, false, false, false,
        ];
        // Segment 1..=3 first alarm at 3: delay 2; 6..=7 at 6: delay 0; 9..=10 missed.
        let d = DetectionDelay::from_alarms(&alarms, &labels).unwrap();
        assert_eq!(
            d,
            DetectionDelay {
                segments: 3,
                detected: 2,
                total_delay_rows: 2
            }
        );
        assert_eq!(d.missed(), 1);
        assert_eq!(d.mean(), Some(1.0));
        // Later alarms in a detected segment do not count again.
        let d = DetectionDelay::from_alarms(&[false, true, true], &[1, 1, 1]).unwrap();
        assert_eq!(d.total_delay_rows, 1);
        assert_eq!(d.detected, 1);
        // No segment detected: mean is None.
        let d = DetectionDelay::from_alarms(&[true, false], &[0, 1]).unwrap();
        assert_eq!((d.segments, d.mean()), (1, None));
        assert_eq!(
            d + d,
            DetectionDelay {
                segments: 2,
                detected: 0,
                total_delay_rows: 0
            }
        );
    }

    #[test]
    fn evaluation_skips_unscored_rows_and_pools_files() {
        let scores = [None, Some(0.2), Some(0.9), None, Some(0.8), Some(0.1)];
        let alarms = [true, false, true, true, true, false];
        let labels = [1, 1, 1, 0, 1, 0];
        let r = evaluate(&scores, &alarms, &labels).unwrap();
        assert_eq!((r.rows, r.scored_rows), (6, 4));
        // The alarm on unscored row 0 is ignored; the one on row 3 is not a false alarm.
        assert_eq!(
            r.confusion,
            Confusion {
                tp: 2,
                fp: 0,
                tn: 1,
                fn_: 1
            }
        );
        // Segment 0..=2: first alarm on a scored row is row 2.
        assert_eq!((r.segments, r.detected_segments), (2, 2));
        assert_eq!(r.mean_delay_rows, Some(1.0));
        // Positives 0.2, 0.9, 0.8 vs negative 0.1: all above.
        assert_eq!(r.roc_auc, Some(1.0));
        assert!(close(r.f1, 0.8));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["confusion"]["fn"], 1);
        assert_eq!(json["false_alarm_rate"], 0.0);

        // Pooling the same file twice doubles the counts and keeps the rates.
        let mut e = Evaluation::new();
        e.add(&scores, &alarms, &labels).unwrap();
        e.add(&scores, &alarms, &labels).unwrap();
        let pooled = e.report();
        assert_eq!(pooled.confusion, r.confusion + r.confusion);
        assert_eq!(pooled.segments, 4);
        assert_eq!(pooled.f1, r.f1);
        assert_eq!(pooled.roc_auc, r.roc_auc);
        // An empty report serialises without NaN.
        let json = serde_json::to_string(&Evaluation::new().report()).unwrap();
        assert!(json.contains("\"roc_auc\":null"), "{json}");
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_row() {
        let e = evaluate(&[Some(1.0)], &[true, false], &[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "evaluation inputs differ in length: 1 scores, 2 alarms, 1 labels; expected one of \
             each per row"
        );
        let e = evaluate(&[Some(1.0), Some(2.0)], &[true, false], &[0, 2]).unwrap_err();
        assert_eq!(e.to_string(), "row 1: label 2, expected 0 or 1");
        let e = evaluate(&[Some(f32::NAN)], &[true], &[0]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "row 0: score NaN, expected a finite number (or no score)"
        );
        assert!(roc_auc(&[1.0], &[0, 1]).is_err());
        // A failed add leaves the evaluation unchanged.
        let mut ev = Evaluation::new();
        assert!(
            ev.add(&[Some(1.0), Some(2.0)], &[true, true], &[1, 3])
                .is_err()
        );
        assert_eq!(ev, Evaluation::new());
    }
}
