//! Streaming anomaly detection for sensors with small autoencoders, on a microcontroller or a
//! server, from the same code: no heap, no panics, no `unsafe`.
//!
//! A model file (`.snae`, written by the `sensorae` command line) carries the network, the
//! per-channel normalisation, the scoring rule, a calibrated threshold and the alarm settings.
//! A [`Detector`] of matching fixed sizes loads it, takes one sample at a time and returns a
//! [`Verdict`] per sample.
//!
//! ```
//! use sensorae::{Detector, Status, param_count, Arch};
//! # let model = sensorae::testing::tiny_model_bytes();
//! // 2 channels, window 4 (N = 8), hidden 4, code 2.
//! type Tiny = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
//! let mut detector = Tiny::from_bytes(&model)?;
//! for t in 0..10 {
//!     let sample = [(t as f32 * 0.3).sin(), (t as f32 * 0.3).cos()];
//!     match detector.push(&sample).status {
//!         Status::WarmingUp { .. } => {}
//!         Status::Normal(score) => assert!(score.value >= 0.0),
//!         Status::Anomalous { onset, .. } => { let _ = onset; }
//!         Status::Fault(fault) => panic!("unexpected fault {fault:?}"),
//!     }
//! }
//! # Ok::<(), sensorae::LoadError>(())
//! ```
//!
//! # Firmware: the model decoded at build time
//! A build script can read and check the model file on the host and write it out as Rust
//! constants (`ModelView::to_rust`, behind the `alloc` feature); the device then loads them with
//! [`Engine::load_decoded`] and links no file reader (see `firmware/` in the repository).
//! [`Engine::load`] reads a file at run time, for models that arrive in the field.
//!
//! # Windows
//! A window is the last W valid samples of C channels, flattened **time-major**, oldest first:
//! entry `t * C + c` is channel `c` at time `t`. A window is scored every `hop` samples once it is
//! full.
//!
//! # Scores
//! The entry error is squared, absolute or binary cross-entropy (probabilities clamped to
//! `[1e-7, 1 - 1e-7]`). Per-channel errors are means over the window; the window score is the mean
//! over all entries or the largest channel error, plus `kl_weight * KL` for a VAE that asks for
//! it, optionally EWMA-smoothed. Scores are always finite.
//!
//! # Alarms and faults
//! The alarm turns on after `on_after` consecutive scores above the threshold and off after
//! `off_after` consecutive scores at or below it. NaN, infinite, out-of-range and missing values
//! are sensor faults, reported per sample with the channel and never scored; see
//! [`Engine::push`] for the recovery rule.
//!
//! # Memory
//! A `Detector<C, W, N, H, Z, P>` holds `P` parameters and `2N + 2H + 2Z` scratch values as `f32`,
//! plus about 30 bytes per channel; `core::mem::size_of` gives the exact figure. A hierarchical
//! model needs `S = scratch_len(arch, N)` more, as `Detector<C, W, N, H, Z, P, S>`.
#![cfg_attr(not(test), no_std)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo
    )
)]

#[cfg(feature = "alloc")]
extern crate alloc;

mod codec;
mod decoded;
mod detector;
mod error;
#[cfg(feature = "hierarchical")]
mod hier;
mod model;
mod nn;
mod storage;
#[doc(hidden)]
pub mod testing;
mod verdict;
#[cfg(feature = "vqvae")]
mod vq;
mod wire;

#[cfg(feature = "alloc")]
pub use codec::encode_to_vec;
pub use codec::{CRC_LEN, FORMAT_VERSION, MAGIC, ModelView, PREFIX_LEN, encode};
#[cfg(feature = "alloc")]
pub use decoded::param_layout_for;
pub use decoded::{Decoded, PARAM_LAYOUT};
#[cfg(feature = "alloc")]
pub use detector::DynDetector;
pub use detector::{Config, Detector, Engine};
pub use error::{DecodeError, EncodeError, LoadError, ShapeError};
#[cfg(feature = "hierarchical")]
pub use hier::{block_means, combine_scales, fine_part};
pub use model::{
    Activation, Adaptation, Aggregate, AlarmHold, AlarmSpec, Arch, Channel, ErrorMetric,
    FaultPolicy, GAINS, Header, Layers, MAX_CHANNELS, MAX_CODEBOOK, MAX_WIDTH, MAX_WINDOW,
    MIN_BLOCK, MaskAxis, Scaling, Scoring, TOP_K, Threshold, ThresholdMethod, TrainingSummary,
    Variant, WindowSpec, arch_of, param_count, scratch_len,
};
pub use nn::{BCE_EPS, LOGVAR_CLAMP, TANH_CLAMP, TANH_LINEAR_BELOW, TANH_P, TANH_Q, kl_divergence};
#[cfg(feature = "alloc")]
pub use storage::Heap;
pub use storage::{Buffers, ChannelState, Fixed, Storage};
pub use verdict::{ChannelError, FaultKind, Score, SensorFault, Status, Verdict};
#[cfg(feature = "vqvae")]
pub use vq::{nearest_code, quantise};

/// The README's Rust examples, compiled and run as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
