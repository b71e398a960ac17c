//! Small deterministic models for examples, tests and benchmarks (not part of the stable API).

use crate::{
    Activation, Adaptation, Aggregate, AlarmSpec, Channel, ErrorMetric, FaultPolicy, Header,
    Layers, Scaling, Scoring, Threshold, ThresholdMethod, TrainingSummary, Variant, WindowSpec,
    encode,
};

/// Model bytes in a fixed buffer.
#[derive(Debug, Clone)]
pub struct ModelBytes {
    buf: [u8; 4096],
    len: usize,
}

impl core::ops::Deref for ModelBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or(&[])
    }
}

/// A header for `channels` x `window` inputs, `hidden` and `latent` units, tanh layers, MSE
/// mean scoring, threshold 1.0, alarm on after 2 and off after 2.
#[must_use]
pub fn header(channels: u16, window: u16, hidden: u32, latent: u32) -> Header<'static> {
    Header {
        name: "tiny",
        variant: Variant::Plain,
        tied: false,
        window: WindowSpec {
            channels,
            length: window,
            hop: 1,
        },
        layers: Layers {
            hidden,
            latent,
            encoder_hidden: Activation::Tanh,
            code: Activation::Linear,
            decoder_hidden: Activation::Tanh,
            output: Activation::Linear,
        },
        scaling: Scaling::Standard,
        scoring: Scoring {
            metric: ErrorMetric::Mse,
            aggregate: Aggregate::Mean,
            kl_weight: 0.0,
            ewma: 1.0,
        },
        threshold: Threshold {
            value: 1.0,
            method: ThresholdMethod::Fixed,
            calibration_windows: 0,
        },
        alarm: AlarmSpec {
            on_after: 2,
            off_after: 2,
        },
        faults: FaultPolicy { hold_max: 0 },
        adaptation: Adaptation::OFF,
        training: TrainingSummary {
            epochs: 0,
            train_loss: 0.0,
            val_loss: 0.0,
            rows: 0,
            train_windows: 0,
            val_windows: 0,
            seed: 0,
        },
    }
}

/// Deterministic small parameter `i`, in about `[-0.5, 0.5]`.
#[must_use]
pub fn param(i: usize) -> f32 {
    let x = (i as f32 + 1.0) * 0.618_034;
    (x - libm::floorf(x)) - 0.5
}

/// Channel `c` of a test model: offset `0.1 * c`, scale 1, range `[-10, 10]`.
#[must_use]
pub fn channel(c: usize) -> Channel<'static> {
    const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
    Channel {
        name: NAMES.get(c).copied().unwrap_or("x"),
        offset: 0.1 * c as f32,
        scale: 1.0,
        min: -10.0,
        max: 10.0,
    }
}

/// Encodes `header` with [`channel`] channels and [`param`] parameters.
#[must_use]
pub fn model_bytes(header: &Header<'_>) -> ModelBytes {
    let mut channels = [channel(0); 8];
    for (c, slot) in channels.iter_mut().enumerate() {
        *slot = channel(c);
    }
    let mut params = [0.0f32; 512];
    for (i, p) in params.iter_mut().enumerate() {
        *p = param(i);
    }
    let c = usize::from(header.window.channels).min(8);
    let p = header.param_count().min(512);
    let mut out = ModelBytes {
        buf: [0; 4096],
        len: 0,
    };
    out.len = encode(
        header,
        channels.get(..c).unwrap_or(&[]),
        params.get(..p).unwrap_or(&[]),
        &mut out.buf,
    )
    .unwrap_or(0);
    out
}

/// The model of the crate example: 2 channels, window 4, hidden 4, code 2.
#[must_use]
pub fn tiny_model_bytes() -> ModelBytes {
    model_bytes(&header(2, 4, 4, 2))
}

/// The model decoder's own reader of a postcard-encoded [`Header`] at the front of `bytes`: the
/// header and the bytes after it, or `None` where `postcard::take_from_bytes` fails. Exposed
/// so tests and fuzzing can compare it with postcard and serde's derive (the reference).
#[must_use]
pub fn take_header(bytes: &[u8]) -> Option<(Header<'_>, &[u8])> {
    crate::wire::take_header(bytes)
}

/// As [`take_header`], for one [`Channel`].
#[must_use]
pub fn take_channel(bytes: &[u8]) -> Option<(Channel<'_>, &[u8])> {
    crate::wire::take_channel(bytes)
}
