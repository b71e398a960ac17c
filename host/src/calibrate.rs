//! Threshold calibration from held-out scores of normal data.
//!
//! Three methods ([`Method`]):
//! - **Quantile** `q`: the `q` quantile of the scores, interpolated linearly between order
//!   statistics (numpy's default, Hyndman and Fan type 7): with the scores sorted as
//!   `x[0] <= ... <= x[n-1]` and `h = (n - 1) q`, it is `x[⌊h⌋] + (h - ⌊h⌋)(x[⌊h⌋+1] - x[⌊h⌋])`.
//! - **Sigma** `k`: mean plus `k` sample standard deviations (`n - 1` in the denominator).
//! - **Peaks over threshold** (SPOT, Siffer et al., KDD 2017): an initial threshold `t` at a high
//!   quantile of the scores, a generalised Pareto distribution (shape `γ`, scale `σ`) fitted by
//!   maximum likelihood to the `N_t` excesses over `t`, and the threshold
//!   `z = t + (σ/γ)((risk·n/N_t)^(-γ) - 1)` that a normal score exceeds with probability `risk`
//!   (`z = t - σ ln(risk·n/N_t)` in the exponential limit `γ → 0`). It extrapolates to
//!   false-alarm rates far below `1/n`, where a quantile cannot reach.
//!
//! # Examples
//! ```
//! use sensorae_host::calibrate::{Method, calibrate};
//!
//! let scores: Vec<f32> = (1..=10).map(|i| i as f32).collect();
//! let cal = calibrate(&scores, &"quantile:0.9".parse()?)?;
//! assert!((cal.threshold - 9.1).abs() < 1e-6);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use core::{fmt, str::FromStr};

use sensorae::ThresholdMethod;
use serde::Serialize;

/// Fewest excesses over the initial threshold that a peaks-over-threshold fit accepts.
pub const MIN_POT_EXCESSES: usize = 10;

/// Initial quantile of peaks over threshold when `pot:RISK` does not give one.
pub const DEFAULT_INITIAL_QUANTILE: f64 = 0.98;

/// How to turn held-out normal scores into a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Method {
    /// The `q` quantile, `0 < q < 1`; needs at least `ceil(1 / (1 - q))` scores.
    Quantile {
        /// Quantile.
        q: f64,
    },
    /// Mean plus `k` standard deviations, `k` finite; needs at least 2 scores.
    Sigma {
        /// Number of standard deviations.
        k: f64,
    },
    /// Peaks over threshold: the threshold a normal score exceeds with probability `risk`.
    /// Needs `0 < risk < 1 - initial_quantile` and at least [`MIN_POT_EXCESSES`] scores above
    /// the initial threshold.
    Pot {
        /// Target false-alarm probability per score.
        risk: f64,
        /// Quantile of the scores used as the initial threshold, in `(0, 1)`.
        initial_quantile: f64,
    },
}

impl Method {
    /// Checks the parameters' ranges.
    ///
    /// # Errors
    /// [`CalibrationError::InvalidParameter`] naming the parameter and its range.
    pub fn validate(&self) -> Result<(), CalibrationError> {
        let bad = |reason: String| {
            Err(CalibrationError::InvalidParameter {
                method: *self,
                reason,
            })
        };
        match *self {
            Method::Quantile { q } if !(q > 0.0 && q < 1.0) => {
                bad(format!("quantile q must be in (0, 1), found {q}"))
            }
            Method::Sigma { k } if !k.is_finite() => {
                bad(format!("sigma k must be finite, found {k}"))
            }
            Method::Pot {
                initial_quantile: iq,
                ..
            } if !(iq > 0.0 && iq < 1.0) => {
                bad(format!("initial quantile must be in (0, 1), found {iq}"))
            }
            Method::Pot {
                risk,
                initial_quantile: iq,
            } if !(risk > 0.0 && risk < 1.0 - iq) => bad(format!(
                "risk must be in (0, 1 - initial quantile) = (0, {}), found {risk}",
                1.0 - iq
            )),
            _ => Ok(()),
        }
    }

    /// Fewest scores the method accepts (see each variant); a peaks-over-threshold fit may
    /// still find too few excesses when many scores tie.
    #[must_use]
    pub fn min_points(&self) -> usize {
        // The small slack keeps e.g. 1 / (1 - 0.9) = 10.000000000000002 at 10.
        let at_least = |x: f64| (x - 1e-9).ceil().max(1.0) as usize;
        match *self {
            Method::Quantile { q } => at_least(1.0 / (1.0 - q)),
            Method::Sigma { .. } => 2,
            Method::Pot {
                initial_quantile, ..
            } => at_least(MIN_POT_EXCESSES as f64 / (1.0 - initial_quantile)),
        }
    }

    /// The core's record of this method, stored in the model file.
    #[must_use]
    pub fn to_threshold_method(&self) -> ThresholdMethod {
        match *self {
            Method::Quantile { q } => ThresholdMethod::Quantile { q: q as f32 },
            Method::Sigma { k } => ThresholdMethod::Sigma { k: k as f32 },
            Method::Pot {
                risk,
                initial_quantile,
            } => ThresholdMethod::Pot {
                risk: risk as f32,
                initial_quantile: initial_quantile as f32,
            },
        }
    }
}

/// Same form as [`FromStr`] reads: `quantile:0.99`, `sigma:3`, `pot:0.0001:0.98`.
impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Quantile { q } => write!(f, "quantile:{q}"),
            Method::Sigma { k } => write!(f, "sigma:{k}"),
            Method::Pot {
                risk,
                initial_quantile,
            } => write!(f, "pot:{risk}:{initial_quantile}"),
        }
    }
}

/// Parses `quantile:Q`, `sigma:K` or `pot:RISK[:INITIAL_QUANTILE]` (initial quantile
/// [`DEFAULT_INITIAL_QUANTILE`] when left out), and checks the ranges.
///
/// # Examples
/// ```
/// use sensorae_host::calibrate::Method;
///
/// assert_eq!("sigma:3".parse::<Method>()?, Method::Sigma { k: 3.0 });
/// assert_eq!(
///     "pot:1e-4".parse::<Method>()?,
///     Method::Pot { risk: 1e-4, initial_quantile: 0.98 }
/// );
/// assert!("quantile:1.5".parse::<Method>().is_err());
/// # Ok::<(), sensorae_host::calibrate::MethodParseError>(())
/// ```
impl FromStr for Method {
    type Err = MethodParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| MethodParseError {
            input: s.to_owned(),
            reason,
        };
        let number = |name: &str, text: &str| {
            text.trim()
                .parse::<f64>()
                .map_err(|_| err(format!("{name} `{text}` is not a number")))
        };
        let mut parts = s.trim().split(':');
        let name = parts.next().unwrap_or("").to_ascii_lowercase();
        let args: Vec<&str> = parts.collect();
        let method = match (name.as_str(), args.as_slice()) {
            ("quantile", [q]) => Method::Quantile {
                q: number("quantile", q)?,
            },
            ("sigma", [k]) => Method::Sigma { k: number("k", k)? },
            ("pot", [risk]) => Method::Pot {
                risk: number("risk", risk)?,
                initial_quantile: DEFAULT_INITIAL_QUANTILE,
            },
            ("pot", [risk, iq]) => Method::Pot {
                risk: number("risk", risk)?,
                initial_quantile: number("initial quantile", iq)?,
            },
            ("quantile" | "sigma" | "pot", _) => {
                return Err(err(format!("wrong number of parameters for `{name}`")));
            }
            _ => return Err(err(format!("unknown method `{name}`"))),
        };
        method
            .validate()
            .map_err(|e| match e {
                CalibrationError::InvalidParameter { reason, .. } => err(reason),
                other => err(other.to_string()),
            })
            .map(|()| method)
    }
}

/// A calibration method that could not be parsed.
///
/// `Display` is one line with the input, the reason and the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "calibration method `{input}`: {reason}; expected `quantile:Q`, `sigma:K` or \
     `pot:RISK[:INITIAL_QUANTILE]`, e.g. `quantile:0.999`, `sigma:3`, `pot:1e-4`"
)]
pub struct MethodParseError {
    input: String,
    reason: String,
}

/// Why no threshold could be calibrated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// A parameter is out of range.
    #[error("calibration {method}: {reason}")]
    InvalidParameter {
        /// The method asked for.
        method: Method,
        /// Which parameter and its range.
        reason: String,
    },
    /// A score is NaN or infinite.
    #[error("calibration score {index} is {value}: scores must be finite")]
    NonFinite {
        /// Position in the scores.
        index: usize,
        /// The score.
        value: f32,
    },
    /// Fewer scores than the method needs.
    #[error("calibration {method} needs at least {needed} scores, found {found}")]
    TooFewPoints {
        /// The method asked for.
        method: Method,
        /// Scores needed.
        needed: usize,
        /// Scores given.
        found: usize,
    },
    /// Too few scores above the initial threshold of peaks over threshold (ties at the top).
    #[error(
        "calibration {method} needs at least {needed} scores above the initial threshold \
         {initial_threshold}, found {found}: give more scores or lower the initial quantile"
    )]
    TooFewExcesses {
        /// The method asked for.
        method: Method,
        /// Excesses needed.
        needed: usize,
        /// Excesses found.
        found: usize,
        /// The initial threshold.
        initial_threshold: f64,
    },
    /// Ties left fewer scores above the initial threshold than `risk` asks for, so the target
    /// lies below the initial threshold.
    #[error(
        "calibration {method}: only a fraction {fraction} of the scores lies above the initial \
         threshold, not more than the risk: lower the initial quantile"
    )]
    RiskBelowTail {
        /// The method asked for.
        method: Method,
        /// Fraction of scores above the initial threshold.
        fraction: f64,
    },
    /// The threshold is not a finite `f32` (an extremely heavy fitted tail).
    #[error("calibration {method}: threshold {value} is not a finite f32")]
    NotFinite {
        /// The method asked for.
        method: Method,
        /// The threshold computed.
        value: f64,
    },
}

/// Generalised Pareto tail fitted by peaks over threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TailFit {
    /// Shape `γ` (0: exponential tail, > 0: heavy, < 0: bounded). Restricted to `γ >= -1`,
    /// where the likelihood is bounded.
    pub gamma: f64,
    /// Scale `σ > 0`.
    pub sigma: f64,
    /// Initial threshold `t`.
    pub initial_threshold: f64,
    /// Number of scores above `t` (`N_t`).
    pub excesses: usize,
}

/// A calibrated threshold and how it was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Calibration {
    /// The threshold: a score above it is anomalous.
    pub threshold: f32,
    /// The method, as stored in the model file.
    pub method: ThresholdMethod,
    /// Number of scores it was calibrated on.
    pub points: usize,
    /// The fitted tail, for peaks over threshold.
    pub tail: Option<TailFit>,
}

/// Calibrates a threshold from scores of held-out normal data.
///
/// # Errors
/// [`CalibrationError`]: parameters out of range, a non-finite score, too few scores (the
/// message says how many are needed and how many were given), or too few excesses for a tail
/// fit.
///
/// # Examples
/// ```
/// use sensorae_host::calibrate::{Method, calibrate};
///
/// let scores = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
/// let cal = calibrate(&scores, &Method::Sigma { k: 1.0 })?;
/// assert!((cal.threshold - (5.0 + (32.0f32 / 7.0).sqrt())).abs() < 1e-5);
/// # Ok::<(), sensorae_host::calibrate::CalibrationError>(())
/// ```
pub fn calibrate(scores: &[f32], method: &Method) -> Result<Calibration, CalibrationError> {
    method.validate()?;
    if let Some((index, &value)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(CalibrationError::NonFinite { index, value });
    }
    let n = scores.len();
    let needed = method.min_points();
    if n < needed {
        return Err(CalibrationError::TooFewPoints {
            method: *method,
            needed,
            found: n,
        });
    }
    let mut sorted: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    sorted.sort_by(f64::total_cmp);

    let (threshold, tail) = match *method {
        Method::Quantile { q } => (quantile_sorted(&sorted, q), None),
        Method::Sigma { k } => {
            let (mean, std) = mean_std(&sorted);
            (mean + k * std, None)
        }
        Method::Pot {
            risk,
            initial_quantile,
        } => {
            let t = quantile_sorted(&sorted, initial_quantile);
            let excesses: Vec<f64> = sorted.iter().filter(|&&s| s > t).map(|s| s - t).collect();
            if excesses.len() < MIN_POT_EXCESSES {
                return Err(CalibrationError::TooFewExcesses {
                    method: *method,
                    needed: MIN_POT_EXCESSES,
                    found: excesses.len(),
                    initial_threshold: t,
                });
            }
            let ratio = risk * n as f64 / excesses.len() as f64;
            if ratio >= 1.0 {
                return Err(CalibrationError::RiskBelowTail {
                    method: *method,
                    fraction: excesses.len() as f64 / n as f64,
                });
            }
            let fit = fit_gpd(&excesses);
            let z = t + gpd_excess_quantile(fit.gamma, fit.sigma, ratio);
            let tail = TailFit {
                gamma: fit.gamma,
                sigma: fit.sigma,
                initial_threshold: t,
                excesses: excesses.len(),
            };
            (z, Some(tail))
        }
    };
    let threshold32 = threshold as f32;
    if !threshold32.is_finite() {
        return Err(CalibrationError::NotFinite {
            method: *method,
            value: threshold,
        });
    }
    Ok(Calibration {
        threshold: threshold32,
        method: method.to_threshold_method(),
        points: n,
        tail,
    })
}

/// Linear interpolation between order statistics (numpy's default); `sorted` is ascending and
/// not empty, `q` in `[0, 1]`.
fn quantile_sorted(sorted: &[f64], q: f64) -> f64 {
    let Some(&last) = sorted.last() else {
        return f64::NAN;
    };
    let h = (sorted.len() - 1) as f64 * q;
    let lo = h.floor() as usize;
    match (sorted.get(lo), sorted.get(lo + 1)) {
        (Some(&a), Some(&b)) => a + (h - lo as f64) * (b - a),
        (Some(&a), None) => a,
        _ => last,
    }
}

/// Mean and sample standard deviation (two-pass, for accuracy); `values.len() >= 2`.
fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - mean) * (v - mean)).sum();
    (mean, (ss / (n - 1.0)).sqrt())
}

/// Maximum-likelihood generalised Pareto parameters.
#[derive(Debug, Clone, Copy)]
struct GpdFit {
    gamma: f64,
    sigma: f64,
}

/// Excess over the initial threshold whose tail probability is `ratio` times that of the
/// initial threshold:
/// `(σ/γ)(ratio^(-γ) - 1)`, computed with `expm1` so it stays exact as `γ → 0`, where it tends
/// to `-σ ln(ratio)`.
fn gpd_excess_quantile(gamma: f64, sigma: f64, ratio: f64) -> f64 {
    let ln_r = ratio.ln();
    if gamma.abs() < 1e-12 {
        -sigma * ln_r
    } else {
        sigma * (-gamma * ln_r).exp_m1() / gamma
    }
}

/// Fits a generalised Pareto distribution to positive excesses by maximum likelihood.
///
/// Grimshaw's reparametrisation, as in SPOT: with `x = γ/σ`, the likelihood's maximum over `γ`
/// for fixed `x` is at `γ(x) = mean(ln(1 + x y_i))`, `σ = γ(x)/x`, leaving a one-dimensional
/// profile `l(x) = -n ln(γ(x)/x) - n(1 + γ(x))` (at `x = 0` the exponential fit, `σ = mean`).
/// Rather than root-finding its derivative, which misses maxima at the edge of the domain, the
/// profile is scanned on a log-spaced grid of `s = x·max(y)` on both sides of 0 and the best
/// point refined by golden-section search. `s` is kept where `γ >= -1`; below that the
/// likelihood is unbounded.
fn fit_gpd(y: &[f64]) -> GpdFit {
    let ymax = y.iter().copied().fold(0.0, f64::max);
    let z: Vec<f64> = y.iter().map(|v| v / ymax).collect();
    let n = z.len() as f64;
    let gamma_of = |s: f64| z.iter().map(|&zi| (s * zi).ln_1p()).sum::<f64>() / n;
    let mean_z = z.iter().sum::<f64>() / n;
    // (gamma, sigma in units of ymax) at s.
    let params = |s: f64| {
        if s.abs() < 1e-12 {
            (0.0, mean_z)
        } else {
            let g = gamma_of(s);
            (g, g / s)
        }
    };
    let profile = |s: f64| {
        let (g, sig) = params(s);
        if sig > 0.0 && g.is_finite() {
            -sig.ln() - (1.0 + g)
        } else {
            f64::NEG_INFINITY
        }
    };

    // gamma_of increases with s and tends to -inf as s -> -1: bisect for gamma = -1.
    let (mut lo, mut hi) = (-1.0_f64, 0.0_f64);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if gamma_of(mid) < -1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let s_low = hi;

    const STEPS: i32 = 160;
    let mut grid: Vec<f64> = (0..=STEPS)
        .map(|i| s_low * 10f64.powf(-8.0 * f64::from(i) / f64::from(STEPS)))
        .collect();
    grid.push(0.0);
    grid.extend((0..=STEPS).map(|i| 10f64.powf(-8.0 + 16.0 * f64::from(i) / f64::from(STEPS))));
    let values: Vec<f64> = grid.iter().map(|&s| profile(s)).collect();
    let best = values
        .iter()
        .enumerate()
        .fold(0, |b, (i, v)| if *v > values[b] { i } else { b });

    // Golden-section search between the best grid point's neighbours.
    let mut a = grid[best.saturating_sub(1)];
    let mut b = grid[(best + 1).min(grid.len() - 1)];
    let phi = 0.5 * (5f64.sqrt() - 1.0);
    let mut c = b - phi * (b - a);
    let mut d = a + phi * (b - a);
    let (mut fc, mut fd) = (profile(c), profile(d));
    for _ in 0..100 {
        if fc > fd {
            b = d;
            d = c;
            fd = fc;
            c = b - phi * (b - a);
            fc = profile(c);
        } else {
            a = c;
            c = d;
            fc = fd;
            d = a + phi * (b - a);
            fd = profile(d);
        }
    }
    let s_best = if fc.max(fd) > values[best] {
        if fc > fd { c } else { d }
    } else {
        grid[best]
    };
    let (gamma, sigma) = params(s_best);
    GpdFit {
        gamma,
        sigma: sigma * ymax,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn err(scores: &[f32], method: &str) -> String {
        match calibrate(scores, &method.parse().unwrap()) {
            Ok(c) => panic!("expected an error, got {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// Draws from a generalised Pareto distribution (location 0) by inverting its CDF.
    fn gpd_sample(rng: &mut ChaCha8Rng, gamma: f64, sigma: f64, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = 1.0 - rng.random::<f64>(); // in (0, 1]
                gpd_excess_quantile(gamma, sigma, u) as f32
            })
            .collect()
    }

    /// GPD log-likelihood, to check the fit is a maximum.
    fn log_likelihood(y: &[f64], gamma: f64, sigma: f64) -> f64 {
        y.iter()
            .map(|&v| {
                if gamma.abs() < 1e-12 {
                    -sigma.ln() - v / sigma
                } else {
                    let w = 1.0 + gamma * v / sigma;
                    if w <= 0.0 {
                        f64::NEG_INFINITY
                    } else {
                        -sigma.ln() - (1.0 + 1.0 / gamma) * w.ln()
                    }
                }
            })
            .sum()
    }

    #[test]
    fn quantile_interpolates_linearly_like_numpy() {
        // Shuffled 1..=10: h = 9 * 0.9 = 8.1, so 9 + 0.1 * (10 - 9).
        let scores = [7.0, 3.0, 10.0, 1.0, 9.0, 2.0, 8.0, 4.0, 6.0, 5.0];
        let c = calibrate(&scores, &Method::Quantile { q: 0.9 }).unwrap();
        assert!((c.threshold - 9.1).abs() < 1e-6, "{}", c.threshold);
        assert_eq!(c.points, 10);
        assert_eq!(c.method, ThresholdMethod::Quantile { q: 0.9 });
        assert_eq!(c.tail, None);
        // 1..=20 at 0.95: h = 18.05, so 19.05.
        let scores: Vec<f32> = (1..=20).rev().map(|i| i as f32).collect();
        let c = calibrate(&scores, &Method::Quantile { q: 0.95 }).unwrap();
        assert!((c.threshold - 19.05).abs() < 1e-5, "{}", c.threshold);
        // Exact order statistic: h = 19 * 0.5 = 9.5 between 10 and 11.
        assert_eq!(
            quantile_sorted(&(1..=20).map(f64::from).collect::<Vec<_>>(), 0.5),
            10.5
        );
    }

    #[test]
    fn sigma_is_mean_plus_k_sample_deviations() {
        // Mean 5, sum of squared deviations 32, sample variance 32 / 7.
        let scores = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        let c = calibrate(&scores, &Method::Sigma { k: 3.0 }).unwrap();
        let expected = 5.0 + 3.0 * (32.0f64 / 7.0).sqrt();
        assert!((f64::from(c.threshold) - expected).abs() < 1e-5);
        assert_eq!(c.method, ThresholdMethod::Sigma { k: 3.0 });
        let c = calibrate(&[1.0, 1.0], &Method::Sigma { k: 3.0 }).unwrap();
        assert_eq!(c.threshold, 1.0);
    }

    #[test]
    fn too_few_points_say_how_many() {
        let fifty = vec![1.0; 50];
        assert_eq!(
            err(&fifty, "quantile:0.99"),
            "calibration quantile:0.99 needs at least 100 scores, found 50"
        );
        assert_eq!(Method::Quantile { q: 0.9 }.min_points(), 10);
        assert_eq!(Method::Quantile { q: 0.5 }.min_points(), 2);
        assert_eq!(
            err(&[1.0], "sigma:3"),
            "calibration sigma:3 needs at least 2 scores, found 1"
        );
        assert_eq!(
            err(&fifty, "pot:1e-4"),
            "calibration pot:0.0001:0.98 needs at least 500 scores, found 50"
        );
        // Enough scores but ties at the top leave too few excesses.
        let mut tied = vec![1.0; 600];
        tied[0] = 2.0;
        assert_eq!(
            err(&tied, "pot:1e-4"),
            "calibration pot:0.0001:0.98 needs at least 10 scores above the initial threshold 1, \
             found 1: give more scores or lower the initial quantile"
        );
        assert_eq!(
            err(&[], "sigma:1"),
            "calibration sigma:1 needs at least 2 scores, found 0"
        );
    }

    #[test]
    fn non_finite_scores_are_rejected() {
        assert_eq!(
            err(&[1.0, f32::NAN, 2.0], "sigma:3"),
            "calibration score 1 is NaN: scores must be finite"
        );
        assert_eq!(
            err(&[f32::INFINITY, 2.0], "sigma:3"),
            "calibration score 0 is inf: scores must be finite"
        );
    }

    #[test]
    fn methods_parse_print_and_check_ranges() {
        for (text, method) in [
            ("quantile:0.99", Method::Quantile { q: 0.99 }),
            ("sigma:3", Method::Sigma { k: 3.0 }),
            (
                "pot:1e-4",
                Method::Pot {
                    risk: 1e-4,
                    initial_quantile: 0.98,
                },
            ),
            (
                "POT:0.001:0.95",
                Method::Pot {
                    risk: 1e-3,
                    initial_quantile: 0.95,
                },
            ),
        ] {
            let parsed: Method = text.parse().unwrap();
            assert_eq!(parsed, method);
            assert_eq!(parsed.to_string().parse::<Method>().unwrap(), method);
        }
        let tail = "; expected `quantile:Q`, `sigma:K` or `pot:RISK[:INITIAL_QUANTILE]`, e.g. \
                    `quantile:0.999`, `sigma:3`, `pot:1e-4`";
        for (text, reason) in [
            ("median", "unknown method `median`"),
            ("quantile", "wrong number of parameters for `quantile`"),
            ("quantile:x", "quantile `x` is not a number"),
            ("quantile:1", "quantile q must be in (0, 1), found 1"),
            ("sigma:inf", "sigma k must be finite, found inf"),
            (
                "pot:0.5",
                "risk must be in (0, 1 - initial quantile) = (0, 0.020000000000000018), found 0.5",
            ),
            (
                "pot:1e-3:1.2",
                "initial quantile must be in (0, 1), found 1.2",
            ),
        ] {
            let e = text.parse::<Method>().unwrap_err().to_string();
            assert_eq!(e, format!("calibration method `{text}`: {reason}{tail}"));
        }
        assert_eq!(
            calibrate(&[1.0; 10], &Method::Quantile { q: f64::NAN })
                .unwrap_err()
                .to_string(),
            "calibration quantile:NaN: quantile q must be in (0, 1), found NaN"
        );
    }

    #[test]
    fn pot_on_exponential_scores_finds_zero_shape_and_the_true_quantile() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let lambda = 2.0;
        // Exponential(2) is a GPD with shape 0 and scale 1/2.
        // 4,000 excesses: the shape's standard error is about 0.016.
        let scores = gpd_sample(&mut rng, 0.0, 1.0 / lambda, 200_000);
        let risk = 1e-4;
        let c = calibrate(
            &scores,
            &Method::Pot {
                risk,
                initial_quantile: 0.98,
            },
        )
        .unwrap();
        let tail = c.tail.unwrap();
        assert!(tail.gamma.abs() < 0.05, "{tail:?}");
        // Memoryless: excesses keep the scale 1/lambda.
        assert!((tail.sigma - 0.5).abs() < 0.05, "{tail:?}");
        assert!((3990..=4010).contains(&tail.excesses), "{tail:?}");
        let truth = -risk.ln() / lambda;
        let z = f64::from(c.threshold);
        assert!((z - truth).abs() / truth < 0.05, "{z} vs {truth}");
        assert_eq!(
            c.method,
            ThresholdMethod::Pot {
                risk: 1e-4,
                initial_quantile: 0.98
            }
        );
    }

    #[test]
    fn pot_on_pareto_scores_recovers_the_shape_and_the_tail_quantile() {
        let (gamma, sigma) = (0.25, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let scores = gpd_sample(&mut rng, gamma, sigma, 200_000);
        let risk = 1e-5;
        let c = calibrate(
            &scores,
            &Method::Pot {
                risk,
                initial_quantile: 0.98,
            },
        )
        .unwrap();
        let tail = c.tail.unwrap();
        assert!((tail.gamma - gamma).abs() < 0.06, "{tail:?}");
        // Excesses over t of a GPD are GPD with the same shape and scale sigma + gamma t.
        let sigma_t = sigma + gamma * tail.initial_threshold;
        assert!((tail.sigma - sigma_t).abs() / sigma_t < 0.1, "{tail:?}");
        // True (1 - risk) quantile.
        let truth = gpd_excess_quantile(gamma, sigma, risk);
        let z = f64::from(c.threshold);
        assert!((z - truth).abs() / truth < 0.15, "{z} vs {truth}");
    }

    #[test]
    fn pot_on_bounded_scores_finds_a_negative_shape() {
        let (gamma, sigma) = (-0.3, 1.0);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let scores = gpd_sample(&mut rng, gamma, sigma, 50_000);
        let c = calibrate(
            &scores,
            &Method::Pot {
                risk: 1e-4,
                initial_quantile: 0.98,
            },
        )
        .unwrap();
        let tail = c.tail.unwrap();
        assert!((tail.gamma - gamma).abs() < 0.1, "{tail:?}");
        let truth = gpd_excess_quantile(gamma, sigma, 1e-4);
        let z = f64::from(c.threshold);
        assert!((z - truth).abs() / truth < 0.05, "{z} vs {truth}");
    }

    #[test]
    fn gpd_fit_is_a_likelihood_maximum() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        for gamma in [-0.4, 0.0, 0.3, 1.0] {
            let y: Vec<f64> = gpd_sample(&mut rng, gamma, 2.0, 400)
                .into_iter()
                .map(f64::from)
                .filter(|&v| v > 0.0)
                .collect();
            let fit = fit_gpd(&y);
            let best = log_likelihood(&y, fit.gamma, fit.sigma);
            assert!(best.is_finite(), "{gamma}: {fit:?}");
            for (dg, ds) in [
                (0.02, 0.0),
                (-0.02, 0.0),
                (0.0, 0.02),
                (0.0, -0.02),
                (0.02, 0.02),
            ] {
                let other = log_likelihood(&y, fit.gamma + dg, fit.sigma * (1.0 + ds));
                assert!(
                    other <= best + 1e-9,
                    "{gamma}: {fit:?} beaten at {dg}, {ds}"
                );
            }
        }
    }

    #[test]
    fn excess_quantile_is_continuous_at_zero_shape() {
        let exp = gpd_excess_quantile(0.0, 2.0, 1e-3);
        assert!((exp - 2.0 * 1e3f64.ln()).abs() < 1e-12);
        assert!((gpd_excess_quantile(1e-9, 2.0, 1e-3) - exp).abs() < 1e-6);
        assert!((gpd_excess_quantile(-1e-9, 2.0, 1e-3) - exp).abs() < 1e-6);
    }
}
