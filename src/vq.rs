//! Vector quantisation of a VQ-VAE's code: a fixed-size search over the K codes of the
//! codebook, no heap, no panic.
//!
//! The seed (`autoencoders-survey.md`, 5.1) describes the VQ-VAE: the encoder's continuous
//! output is mapped to the nearest vector of a learned, finite codebook, and the decoder runs
//! on that vector. At inference only the nearest-code search is new; the straight-through
//! estimator and the commitment loss are the trainer's business.

/// Finds the code nearest to `z` in squared Euclidean distance, ties going to the lower index.
/// `codebook` holds the codes one after the other, `z.len()` values each (the file's order).
/// Returns the code's index and the squared distance, or `None` when the codebook is empty or
/// not a whole number of codes. A NaN in `z` gives a NaN distance (and index 0), which the
/// detector saturates like any non-finite score.
///
/// # Examples
/// ```
/// let codebook = [0.0, 0.0, 1.0, 1.0, -1.0, 2.0];
/// assert_eq!(sensorae::nearest_code(&codebook, &[0.5, 1.5]), Some((1, 0.5)));
/// ```
#[must_use]
pub fn nearest_code(codebook: &[f32], z: &[f32]) -> Option<(usize, f32)> {
    let width = z.len();
    if width == 0 || codebook.is_empty() || !codebook.len().is_multiple_of(width) {
        return None;
    }
    let mut best = (0usize, f32::NAN);
    for (k, code) in codebook.chunks_exact(width).enumerate() {
        let mut d = 0.0f32;
        for (&e, &v) in code.iter().zip(z) {
            d += (v - e) * (v - e);
        }
        if k == 0 || d < best.1 {
            best = (k, d);
        }
    }
    Some(best)
}

/// Replaces `z` by its nearest code in `codebook` (K codes of `z.len()` values, one after the
/// other) and returns the squared distance between them; `None` when the sizes disagree.
#[must_use]
pub fn quantise(codebook: &[f32], z: &mut [f32]) -> Option<f32> {
    let width = z.len();
    let (k, distance) = nearest_code(codebook, z)?;
    let code = codebook.get(k.checked_mul(width)?..k.checked_add(1)?.checked_mul(width)?)?;
    // Element by element: `copy_from_slice` would keep a length-mismatch panic path in `push`
    // (the optimiser does not see that both are `width` long), which the no-panic proof refuses.
    for (v, &e) in z.iter_mut().zip(code) {
        *v = e;
    }
    Some(distance)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_code_takes_the_lower_index_on_ties_and_rejects_bad_sizes() {
        let codebook = [1.0, 0.0, -1.0, 0.0];
        assert_eq!(nearest_code(&codebook, &[0.0, 0.0]), Some((0, 1.0)));
        assert_eq!(nearest_code(&codebook, &[-0.5, 0.0]), Some((1, 0.25)));
        assert_eq!(nearest_code(&codebook, &[]), None);
        assert_eq!(nearest_code(&[], &[1.0]), None);
        assert_eq!(nearest_code(&codebook, &[1.0, 2.0, 3.0]), None);
        let mut z = [0.5, -0.5];
        assert_eq!(quantise(&codebook, &mut z), Some(0.5));
        assert_eq!(z, [1.0, 0.0]);
        let (_, d) = nearest_code(&codebook, &[f32::NAN, 0.0]).unwrap_or((9, 0.0));
        assert!(d.is_nan());
    }
}
