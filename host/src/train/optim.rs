//! Optimisers over the flat parameter vector, and global gradient-norm clipping.

use super::{Optimizer, net::Float};

/// Optimiser state for one parameter vector.
pub(crate) struct State<T> {
    kind: Optimizer,
    lr: T,
    step: i32,
    m: Vec<T>,
    v: Vec<T>,
}

impl<T: Float> State<T> {
    pub(crate) fn new(kind: Optimizer, lr: f32, len: usize) -> Self {
        let zero = T::of(0.0);
        let adam = matches!(kind, Optimizer::Adam { .. });
        State {
            kind,
            lr: T::of(f64::from(lr)),
            step: 0,
            m: vec![zero; len],
            v: vec![zero; if adam { len } else { 0 }],
        }
    }

    /// One update of `params` along `grad`.
    pub(crate) fn step(&mut self, params: &mut [T], grad: &[T]) {
        let one = T::of(1.0);
        self.step = self.step.saturating_add(1);
        match self.kind {
            Optimizer::Adam { beta1, beta2, eps } => {
                let (b1, b2) = (T::of(f64::from(beta1)), T::of(f64::from(beta2)));
                let eps = T::of(f64::from(eps));
                // Bias corrections: m_hat = m / c1, v_hat = v / c2 (Kingma & Ba, algorithm 1).
                let c1 = one - T::of(f64::from(beta1).powi(self.step));
                let c2 = one - T::of(f64::from(beta2).powi(self.step));
                let lr = self.lr / c1;
                let inv_c2 = one / c2;
                let moments = self.m.iter_mut().zip(self.v.iter_mut());
                for ((p, &g), (m, v)) in params.iter_mut().zip(grad).zip(moments) {
                    *m = b1 * *m + (one - b1) * g;
                    *v = b2 * *v + (one - b2) * g * g;
                    *p -= lr * *m / ((*v * inv_c2).fsqrt() + eps);
                }
            }
            Optimizer::Sgd { momentum } => {
                let mu = T::of(f64::from(momentum));
                for ((p, &g), m) in params.iter_mut().zip(grad).zip(&mut self.m) {
                    *m = mu * *m + g;
                    *p -= self.lr * *m;
                }
            }
        }
    }
}

/// Scales `grad` down to global L2 norm `max` if it is longer; returns the norm before.
pub(crate) fn clip_norm<T: Float>(grad: &mut [T], max: T) -> T {
    let mut sq = T::of(0.0);
    for &g in grad.iter() {
        sq += g * g;
    }
    let norm = sq.fsqrt();
    if norm > max {
        let s = max / norm;
        grad.iter_mut().for_each(|g| *g *= s);
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adam_first_step_moves_each_parameter_by_lr_against_the_gradient_sign() {
        let mut s = State::<f64>::new(Optimizer::adam(), 0.1, 3);
        let mut p = vec![1.0, 1.0, 1.0];
        s.step(&mut p, &[2.0, -0.5, 0.0]);
        // m_hat = g, v_hat = g^2 => step = lr * g / (|g| + eps).
        assert!((p[0] - 0.9).abs() < 1e-6);
        assert!((p[1] - 1.1).abs() < 1e-6);
        assert_eq!(p[2], 1.0);
    }

    #[test]
    fn sgd_momentum_accumulates_velocity() {
        let mut s = State::<f64>::new(Optimizer::Sgd { momentum: 0.5 }, 0.1, 1);
        let mut p = vec![0.0];
        s.step(&mut p, &[1.0]);
        assert!((p[0] + 0.1).abs() < 1e-7);
        s.step(&mut p, &[1.0]);
        // velocity 1 + 0.5 => total -0.25.
        assert!((p[0] + 0.25).abs() < 1e-7);
    }

    #[test]
    fn clipping_rescales_to_the_global_norm() {
        let mut g = vec![3.0f64, 4.0];
        assert_eq!(clip_norm(&mut g, 1.0), 5.0);
        assert!((g[0] - 0.6).abs() < 1e-12 && (g[1] - 0.8).abs() < 1e-12);
        let mut h = vec![0.3f64, 0.4];
        clip_norm(&mut h, 1.0);
        assert_eq!(h, vec![0.3, 0.4]);
    }
}
