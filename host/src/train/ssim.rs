//! The structural similarity (SSIM) loss for 1-D sensor windows, trainer only.
//!
//! The seed (`reconstruction-losses.md`, "感知与结构损失") describes SSIM as comparing the local
//! luminance, contrast and structure of two signals, with stabilising constants against
//! division by zero, and the weighted combination `L = alpha * L_pixel + (1 - alpha) *
//! L_structural`. For a window (`x[t * C + c]`, time-major) it is taken per channel over the
//! time axis, with whole-window statistics (a window already is the local neighbourhood a
//! detector looks at): for target `x` and reconstruction `y` of one channel over `W` steps,
//!
//! ```text
//! mu_x = mean(x), var_x = mean((x - mu_x)^2), cov = mean((x - mu_x)(y - mu_y))  (population)
//! SSIM = (2 mu_x mu_y + C1)(2 cov + C2) / ((mu_x^2 + mu_y^2 + C1)(var_x + var_y + C2))
//! ```
//!
//! with `C1 = (0.01 L)^2`, `C2 = (0.03 L)^2` (the constants of Wang et al., 2004), `L` the
//! dynamic range of the *normalised* data: 1 for min-max scaling (training data in `[0, 1]`),
//! 4 for standardisation (about +-2 standard deviations). The structural loss is `1 - SSIM`
//! averaged over channels and windows. The model file's scoring metric stays MSE, MAE or BCE.

use super::net::Float;

/// SSIM settings of a training objective.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Ssim<T> {
    /// Weight of the pixel-wise loss; `1 - alpha` weighs `1 - SSIM`.
    pub alpha: T,
    /// Luminance constant `C1`.
    pub c1: T,
    /// Contrast/structure constant `C2`.
    pub c2: T,
    /// Channels per sample (the window is `x[t * C + c]`).
    pub channels: usize,
}

/// `K1` and `K2` of the SSIM constants `C1 = (K1 L)^2`, `C2 = (K2 L)^2`.
pub(crate) const K1: f64 = 0.01;
/// See [`K1`].
pub(crate) const K2: f64 = 0.03;

/// Dynamic range `L` of normalised data under a scaling.
pub(crate) fn dynamic_range(scaling: sensorae::Scaling) -> f64 {
    match scaling {
        sensorae::Scaling::MinMax => 1.0,
        sensorae::Scaling::Standard => 4.0,
    }
}

impl<T: Float> Ssim<T> {
    /// Settings for weight `alpha` on the pixel loss and data normalised by `scaling`.
    pub(crate) fn new(alpha: f32, scaling: sensorae::Scaling, channels: usize) -> Self {
        let l = dynamic_range(scaling);
        Ssim {
            alpha: T::of(f64::from(alpha)),
            c1: T::of((K1 * l).powi(2)),
            c2: T::of((K2 * l).powi(2)),
            channels,
        }
    }

    /// Mean `1 - SSIM` over the channels and the `cols` windows (columns of `n` entries) of
    /// `target` and `xhat`. With `grad`, adds `weight * d(mean (1 - SSIM))/d xhat` to it.
    pub(crate) fn loss(
        &self,
        target: &[T],
        xhat: &[T],
        n: usize,
        cols: usize,
        weight: T,
        mut grad: Option<&mut [T]>,
    ) -> T {
        let c = self.channels.max(1);
        let w = n / c;
        let (zero, one, two) = (T::of(0.0), T::of(1.0), T::of(2.0));
        if w == 0 || cols == 0 {
            return zero;
        }
        let inv_w = one / T::of(w as f64);
        let per = one / T::of((c * cols) as f64);
        let mut total = zero;
        for col in 0..cols {
            let base = col * n;
            let xs = &target[base..base + n];
            let ys = &xhat[base..base + n];
            for ch in 0..c {
                let at = |t: usize| t * c + ch;
                let (mut mx, mut my) = (zero, zero);
                for t in 0..w {
                    mx += xs[at(t)];
                    my += ys[at(t)];
                }
                mx *= inv_w;
                my *= inv_w;
                let (mut vx, mut vy, mut cov) = (zero, zero, zero);
                for t in 0..w {
                    let (dx, dy) = (xs[at(t)] - mx, ys[at(t)] - my);
                    vx += dx * dx;
                    vy += dy * dy;
                    cov += dx * dy;
                }
                vx *= inv_w;
                vy *= inv_w;
                cov *= inv_w;
                let a1 = two * mx * my + self.c1;
                let a2 = two * cov + self.c2;
                let b1 = mx * mx + my * my + self.c1;
                let b2 = vx + vy + self.c2;
                let s = a1 * a2 / (b1 * b2);
                total += one - s;
                if let Some(g) = grad.as_deref_mut() {
                    // dS/dy_t = (1/W) [2 mu_x A2/(B1 B2) + 2 A1 (x_t - mu_x)/(B1 B2)
                    //                  - 2 S mu_y / B1 - 2 S (y_t - mu_y) / B2]; loss is -S.
                    let bb = b1 * b2;
                    let k = -weight * per * inv_w * two;
                    let common = mx * a2 / bb - s * my / b1;
                    for t in 0..w {
                        let i = at(t);
                        let d = common + a1 * (xs[i] - mx) / bb - s * (ys[i] - my) / b2;
                        g[base + i] += k * d;
                    }
                }
            }
        }
        total * per
    }
}

#[cfg(test)]
mod tests {
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;

    fn setup(c: usize, w: usize, cols: usize) -> (Ssim<f64>, Vec<f64>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = c * w;
        let x: Vec<f64> = (0..n * cols).map(|_| rng.random_range(-1.5..1.5)).collect();
        let y: Vec<f64> = x.iter().map(|v| v + rng.random_range(-0.5..0.5)).collect();
        (Ssim::new(0.0, sensorae::Scaling::Standard, c), x, y)
    }

    #[test]
    fn identical_windows_have_ssim_one_and_loss_zero() {
        let (s, x, _) = setup(3, 8, 2);
        assert!(s.loss(&x, &x, 24, 2, 1.0, None).abs() < 1e-12);
        // A scaled copy keeps the structure but not the luminance and contrast.
        let y: Vec<f64> = x.iter().map(|v| 0.5 * v).collect();
        assert!(s.loss(&x, &y, 24, 2, 1.0, None) > 1e-3);
    }

    #[test]
    fn ssim_of_one_channel_matches_the_formula_by_hand() {
        // x = [0, 2], y = [1, 1]: mu_x = mu_y = 1, var_x = 1, var_y = 0, cov = 0;
        // SSIM = (2 + C1) C2 / ((2 + C1)(1 + C2)) = C2 / (1 + C2).
        let s = Ssim::<f64>::new(0.0, sensorae::Scaling::Standard, 1);
        let c2 = (0.03f64 * 4.0).powi(2);
        let loss = s.loss(&[0.0, 2.0], &[1.0, 1.0], 2, 1, 1.0, None);
        assert!((loss - (1.0 - c2 / (1.0 + c2))).abs() < 1e-12, "{loss}");
    }

    #[test]
    fn ssim_gradient_matches_finite_differences() {
        for (c, w, cols) in [(3, 8, 2), (1, 5, 3), (2, 1, 2)] {
            let (s, x, y) = setup(c, w, cols);
            let n = c * w;
            let mut g = vec![0.0; n * cols];
            s.loss(&x, &y, n, cols, 0.7, Some(&mut g));
            let mut yy = y.clone();
            let step = 1e-6;
            let mut worst = 0.0f64;
            for i in 0..yy.len() {
                let keep = yy[i];
                yy[i] = keep + step;
                let up = s.loss(&x, &yy, n, cols, 1.0, None);
                yy[i] = keep - step;
                let down = s.loss(&x, &yy, n, cols, 1.0, None);
                yy[i] = keep;
                worst = worst.max((0.7 * (up - down) / (2.0 * step) - g[i]).abs());
            }
            let scale = g.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(scale > 1e-4, "degenerate: {scale}");
            assert!(worst / scale < 1e-6, "{c}x{w}x{cols}: {worst} / {scale}");
        }
    }
}
