//! Inference of the hierarchical (coarse/fine) autoencoder, no heap, no panic.
//!
//! The seed (`reconstruction-losses.md`, "先进架构与结构先验") describes a hierarchical
//! autoencoder: the input splits uniquely into two orthogonal parts, one in the span of a
//! coarse basis and one in the span of a fine basis; each part gets its own code, and each
//! scale's reconstruction path its own gain. For a window (`x[t * C + c]`, time-major) the coarse
//! basis here is the per-channel block indicator over blocks of `b` time steps: the coarse part
//! is `U P x`, `P x` the `N / b` block means and `U` repeating each over its block, and the fine
//! part is `x - U P x`, whose block means are zero. Both projections are orthogonal, so the two
//! parts are orthogonal.
//!
//! The fine path is a dense autoencoder `N -> H -> Z -> H -> N` on the fine part, the coarse
//! path a dense autoencoder `N/b -> Hc -> Zc -> Hc -> N/b` on the block means, and the
//! reconstruction is `g_c U dec_c + g_f (dec_f - U P dec_f)`: the fine output is projected onto
//! the fine part, so the coarse path alone explains the block means.

use crate::{
    model::{GAINS, Layers},
    nn::{Dims, Parts, Scratch, affine, take},
};

/// Sizes of the coarse path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Coarse {
    /// Time steps per block (b).
    pub block: usize,
    /// Hidden width (Hc).
    pub hidden: usize,
    /// Code width (Zc).
    pub latent: usize,
}

/// Reconstructs the window `x` into `xhat` with the parameters in file order (fine path, coarse
/// path, gains). `s.extra` holds [`crate::scratch_len`] values. `None` only if slice lengths
/// disagree with the sizes, which loading rules out.
pub(crate) fn reconstruct(
    layers: &Layers,
    d: Dims,
    coarse: Coarse,
    mut params: &[f32],
    x: Parts<'_>,
    s: Scratch<'_>,
    xhat: &mut [f32],
) -> Option<()> {
    let Dims { c, n, h, z } = d;
    let Coarse {
        block,
        hidden: hc,
        latent: zc,
    } = coarse;
    let nc = n.checked_div(block)?;
    let (fine_in, rest) = s.extra.split_at_mut_checked(n)?;
    let (means, rest) = rest.split_at_mut_checked(nc)?;
    let (coarse_h1, rest) = rest.split_at_mut_checked(hc)?;
    let (coarse_h2, rest) = rest.split_at_mut_checked(hc)?;
    let coarse_code = rest.get_mut(..zc)?;
    let p = &mut params;

    block_means_parts(x, c, block, means)?;
    subtract_block_means(x, c, block, means, fine_in)?;
    let fine = Stack { n, h, z };
    dense(p, layers, fine, [fine_in, &[]], s.h1, s.z, s.h2, xhat)?;
    // The fine input is spent: the coarse output takes its place.
    let coarse_out = fine_in.get_mut(..nc)?;
    let coarse = Stack {
        n: nc,
        h: hc,
        z: zc,
    };
    dense(
        p,
        layers,
        coarse,
        [means, &[]],
        coarse_h1,
        coarse_code,
        coarse_h2,
        coarse_out,
    )?;
    let gains = take(p, GAINS)?.first_chunk::<GAINS>()?;
    if !p.is_empty() {
        return None;
    }
    combine_scales(xhat, c, block, coarse_out, *gains, means)
}

/// Combines a hierarchical model's two outputs in place: `xhat` holds the fine path's output
/// `dec_f` (a time-major window) and becomes `g_f (dec_f - U P dec_f) + g_c U coarse`, with
/// `coarse` the coarse path's output (N / b block values) and `gains` = `[g_c, g_f]`; `means`
/// (N / b values) is scratch. The batch scorer shares it with the detector.
///
/// Returns `None` when the lengths do not fit `channels` and `block`.
///
/// # Examples
/// ```
/// // One channel, blocks of 2: the fine output [1, 3] has block mean 2, so its fine part is
/// // [-1, 1]; the coarse output 5 is repeated over the block.
/// let mut xhat = [1.0, 3.0];
/// sensorae::combine_scales(&mut xhat, 1, 2, &[5.0], [2.0, 0.5], &mut [0.0])
///     .ok_or("sizes")?;
/// assert_eq!(xhat, [0.5 * -1.0 + 2.0 * 5.0, 0.5 * 1.0 + 2.0 * 5.0]);
/// # Ok::<(), &str>(())
/// ```
pub fn combine_scales(
    xhat: &mut [f32],
    channels: usize,
    block: usize,
    coarse: &[f32],
    gains: [f32; GAINS],
    means: &mut [f32],
) -> Option<()> {
    let [g_c, g_f] = gains;
    block_means_parts([&*xhat, &[]], channels, block, means)?;
    for (t, sample) in xhat.chunks_exact_mut(channels.max(1)).enumerate() {
        let k = t.checked_div(block)?;
        let m = means.get(k * channels..(k + 1) * channels)?;
        let dc = coarse.get(k * channels..(k + 1) * channels)?;
        for ((y, &m), &dc) in sample.iter_mut().zip(m).zip(dc) {
            *y = g_f * (*y - m) + g_c * dc;
        }
    }
    Some(())
}

/// The block means of a time-major window (`x[t * C + c]`): `out[k * C + c]` is the mean of
/// channel `c` over time steps `k b .. (k + 1) b`, summed in time order and divided by `b`
/// (the coarse part of the hierarchical model).
///
/// Returns `None` for 0 channels or a 0 block, or when `out` is too short.
///
/// # Examples
/// ```
/// // Two channels, four steps, blocks of 2.
/// let x = [1.0, 10.0, 3.0, 20.0, 5.0, 30.0, 7.0, 40.0];
/// let mut means = [0.0; 4];
/// sensorae::block_means(&x, 2, 2, &mut means).ok_or("sizes")?;
/// assert_eq!(means, [2.0, 15.0, 6.0, 35.0]);
/// # Ok::<(), &str>(())
/// ```
pub fn block_means(x: &[f32], channels: usize, block: usize, out: &mut [f32]) -> Option<()> {
    block_means_parts([x, &[]], channels, block, out)
}

/// `out = x - U means`: the fine part of a time-major window, given its [`block_means`].
///
/// Returns `None` for 0 channels or a 0 block, or when `means` or `out` is too short.
///
/// # Examples
/// ```
/// let x = [1.0, 3.0, 5.0, 9.0];
/// let mut fine = [0.0; 4];
/// sensorae::fine_part(&x, 1, 2, &[2.0, 7.0], &mut fine).ok_or("sizes")?;
/// assert_eq!(fine, [-1.0, 1.0, -2.0, 2.0]);
/// # Ok::<(), &str>(())
/// ```
pub fn fine_part(
    x: &[f32],
    channels: usize,
    block: usize,
    means: &[f32],
    out: &mut [f32],
) -> Option<()> {
    subtract_block_means([x, &[]], channels, block, means, out)
}

/// Widths of a dense encoder-decoder `n -> h -> z -> h -> n`.
#[derive(Debug, Clone, Copy)]
struct Stack {
    n: usize,
    h: usize,
    z: usize,
}

/// The dense encoder-decoder of `Arch::Dense` on the next parameters: `x` through `h1`, `code`
/// and `h2` into `out`.
#[allow(clippy::too_many_arguments)] // reason: the buffers differ per path; two call sites
fn dense(
    p: &mut &[f32],
    l: &Layers,
    d: Stack,
    x: Parts<'_>,
    h1: &mut [f32],
    code: &mut [f32],
    h2: &mut [f32],
    out: &mut [f32],
) -> Option<()> {
    let Stack { n, h, z } = d;
    let (w1, b1) = (take(p, h * n)?, take(p, h)?);
    affine(w1, b1, h, n, false, x, h1, l.encoder_hidden)?;
    let (w2, b2) = (take(p, z * h)?, take(p, z)?);
    affine(w2, b2, z, h, false, [h1, &[]], code, l.code)?;
    let (w3, b3) = (take(p, h * z)?, take(p, h)?);
    affine(w3, b3, h, z, false, [code, &[]], h2, l.decoder_hidden)?;
    let (w4, b4) = (take(p, n * h)?, take(p, n)?);
    affine(w4, b4, n, h, false, [h2, &[]], out, l.output)
}

/// [`block_means`] of a window in two parts of whole samples.
fn block_means_parts(x: Parts<'_>, channels: usize, block: usize, out: &mut [f32]) -> Option<()> {
    if channels == 0 || block == 0 {
        return None;
    }
    out.fill(0.0);
    let mut t = 0usize;
    for part in x {
        for sample in part.chunks_exact(channels) {
            let k = t.checked_div(block)?;
            let row = out.get_mut(k * channels..(k + 1) * channels)?;
            for (o, &v) in row.iter_mut().zip(sample) {
                *o += v;
            }
            t += 1;
        }
    }
    let b = block as f32;
    out.iter_mut().for_each(|o| *o /= b);
    Some(())
}

/// [`fine_part`] of a window in two parts of whole samples.
fn subtract_block_means(
    x: Parts<'_>,
    channels: usize,
    block: usize,
    means: &[f32],
    out: &mut [f32],
) -> Option<()> {
    if channels == 0 || block == 0 {
        return None;
    }
    let mut t = 0usize;
    let mut outs = out.chunks_exact_mut(channels);
    for part in x {
        for sample in part.chunks_exact(channels) {
            let k = t.checked_div(block)?;
            let m = means.get(k * channels..(k + 1) * channels)?;
            let o = outs.next()?;
            for ((o, &v), &m) in o.iter_mut().zip(sample).zip(m) {
                *o = v - m;
            }
            t += 1;
        }
    }
    Some(())
}
