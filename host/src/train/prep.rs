//! From raw rows to normalised training and validation windows.
//!
//! The validation part is the *end* of the rows (time order), normalisation statistics come
//! from the training part only, and windows are made inside each part separately, so no window
//! straddles the split and nothing about the validation rows leaks into training.

use core::ops::Range;

use sensorae::Scaling;

use super::{ChannelNorm, TrainError};

/// Normalised rows and the windows cut from them.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub channels: usize,
    pub window: usize,
    /// Normalised values, row-major (`rows x C`); missing values are NaN.
    pub data: Vec<f32>,
    pub norms: Vec<ChannelNorm>,
    pub train_rows: Range<usize>,
    pub val_rows: Range<usize>,
    /// First row of each training window.
    pub train_starts: Vec<usize>,
    /// First row of each validation window.
    pub val_starts: Vec<usize>,
    /// Per-channel smallest and largest normalised training value (salt-and-pepper levels).
    pub low: Vec<f32>,
    pub high: Vec<f32>,
}

impl Prepared {
    /// The window starting at row `start`, flattened time-major (`x[t * C + c]`): a window is
    /// a contiguous run of row-major rows.
    pub(crate) fn window_at(&self, start: usize) -> &[f32] {
        let c = self.channels;
        &self.data[start * c..(start + self.window) * c]
    }
}

/// Per-channel statistics over the non-missing values of `rows`, in f64.
fn channel_norm(
    data: &[f32],
    channels: usize,
    rows: Range<usize>,
    c: usize,
    name: &str,
    scaling: Scaling,
) -> Result<ChannelNorm, TrainError> {
    let values = rows
        .map(|r| data[r * channels + c])
        .filter(|v| v.is_finite())
        .map(f64::from);
    let (mut count, mut sum) = (0usize, 0.0f64);
    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.clone() {
        count += 1;
        sum += v;
        min = min.min(v);
        max = max.max(v);
    }
    if count == 0 {
        return Err(TrainError::EmptyChannel {
            name: name.to_owned(),
        });
    }
    let (offset, spread) = match scaling {
        Scaling::Standard => {
            let mean = sum / count as f64;
            let var = values.map(|v| (v - mean) * (v - mean)).sum::<f64>() / count as f64;
            (mean, var.sqrt())
        }
        Scaling::MinMax => (min, max - min),
    };
    // A constant (or overflowing) channel would divide by zero: store 1 as the format asks.
    let scale = spread as f32;
    let scale = if scale.is_finite() && scale > 0.0 && (1.0 / scale).is_finite() {
        scale
    } else {
        1.0
    };
    Ok(ChannelNorm {
        name: name.to_owned(),
        offset: offset as f32,
        scale,
    })
}

/// Starts of the windows inside `rows`, every `hop` rows from its first row, skipping windows
/// with a missing value.
fn window_starts(missing: &[bool], rows: Range<usize>, window: usize, hop: usize) -> Vec<usize> {
    // before[i] = number of rows with a missing value before row i.
    let mut before = Vec::with_capacity(missing.len() + 1);
    let mut count = 0usize;
    before.push(0);
    for &m in missing {
        count += usize::from(m);
        before.push(count);
    }
    let mut starts = Vec::new();
    let mut s = rows.start;
    while s + window <= rows.end {
        if before[s + window] == before[s] {
            starts.push(s);
        }
        s += hop;
    }
    starts
}

/// Splits, normalises and windows the rows. `data` is row-major with `names.len()` channels;
/// non-finite values are missing.
pub(crate) fn prepare(
    data: &[f32],
    names: &[String],
    window: usize,
    hop: usize,
    val_fraction: f32,
    scaling: Scaling,
) -> Result<Prepared, TrainError> {
    let channels = names.len();
    if channels == 0 || !data.chunks_exact(channels).remainder().is_empty() {
        return Err(TrainError::Shape {
            values: data.len(),
            channels,
        });
    }
    let rows = data.len() / channels;
    let val_len = ((rows as f64) * f64::from(val_fraction)).round() as usize;
    let split = rows - val_len.min(rows);
    let train_rows = 0..split;
    let val_rows = split..rows;
    let norms = names
        .iter()
        .enumerate()
        .map(|(c, name)| channel_norm(data, channels, train_rows.clone(), c, name, scaling))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(data.len());
    let mut missing = Vec::with_capacity(rows);
    for row in data.chunks_exact(channels) {
        let mut any = false;
        for (&v, norm) in row.iter().zip(&norms) {
            // The detector's arithmetic, so training sees exactly the values it will score.
            let x = (v - norm.offset) * (1.0 / norm.scale);
            if x.is_finite() {
                out.push(x);
            } else {
                any = true;
                out.push(f32::NAN);
            }
        }
        missing.push(any);
    }
    let train_starts = window_starts(&missing, train_rows.clone(), window, hop);
    let val_starts = window_starts(&missing, val_rows.clone(), window, hop);
    let mut low = vec![f32::INFINITY; channels];
    let mut high = vec![f32::NEG_INFINITY; channels];
    for row in out[..split * channels].chunks_exact(channels) {
        for ((&v, lo), hi) in row.iter().zip(&mut low).zip(&mut high) {
            if v.is_finite() {
                *lo = lo.min(v);
                *hi = hi.max(v);
            }
        }
    }
    Ok(Prepared {
        channels,
        window,
        data: out,
        norms,
        train_rows,
        val_rows,
        train_starts,
        val_starts,
        low,
        high,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(c: usize) -> Vec<String> {
        (0..c).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn split_is_time_ordered_and_windows_stay_inside_their_part() {
        // 20 rows of 2 channels; 25% validation = the last 5 rows.
        let data: Vec<f32> = (0..40).map(|i| i as f32).collect();
        let p = prepare(&data, &names(2), 3, 2, 0.25, Scaling::Standard).unwrap();
        assert_eq!(p.train_rows, 0..15);
        assert_eq!(p.val_rows, 15..20);
        assert_eq!(p.train_starts, vec![0, 2, 4, 6, 8, 10, 12]);
        assert_eq!(p.val_starts, vec![15, 17]);
        // Time-major window: rows 2, 3, 4, channels interleaved.
        let w = p.window_at(2);
        assert_eq!(w.len(), 6);
        let norm = |r: usize, c: usize| ((2 * r + c) as f32 - p.norms[c].offset) / p.norms[c].scale;
        for t in 0..3 {
            for c in 0..2 {
                assert!((w[t * 2 + c] - norm(2 + t, c)).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn statistics_come_from_training_rows_only_and_ignore_nan() {
        let data = vec![1.0f32, 3.0, f32::NAN, 5.0, 1000.0, 1000.0];
        // 6 rows x 1 channel; validation = the last 2 rows (the 1000s).
        let p = prepare(&data, &names(1), 1, 1, 1.0 / 3.0, Scaling::Standard).unwrap();
        assert_eq!(p.train_rows, 0..4);
        assert!((p.norms[0].offset - 3.0).abs() < 1e-6);
        let std = (8.0f32 / 3.0).sqrt();
        assert!((p.norms[0].scale - std).abs() < 1e-6);
        // The NaN row makes no window.
        assert_eq!(p.train_starts, vec![0, 1, 3]);
        let mm = prepare(&data, &names(1), 1, 1, 1.0 / 3.0, Scaling::MinMax).unwrap();
        assert_eq!((mm.norms[0].offset, mm.norms[0].scale), (1.0, 4.0));
        assert_eq!((mm.low[0], mm.high[0]), (0.0, 1.0));
    }

    #[test]
    fn constant_channel_gets_unit_scale_and_empty_channel_is_an_error() {
        let data = vec![2.0f32, f32::NAN, 2.0, f32::NAN, 2.0, f32::NAN];
        let err = prepare(&data, &names(2), 1, 1, 0.0, Scaling::Standard).unwrap_err();
        assert!(matches!(err, TrainError::EmptyChannel { ref name } if name == "c1"));
        let p = prepare(&data[..1], &names(1), 1, 1, 0.0, Scaling::Standard).unwrap();
        assert_eq!(p.norms[0].scale, 1.0);
        let bad = prepare(&data[..5], &names(2), 1, 1, 0.0, Scaling::Standard).unwrap_err();
        assert!(matches!(
            bad,
            TrainError::Shape {
                values: 5,
                channels: 2
            }
        ));
    }
}
