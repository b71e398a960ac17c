//! Link-time proof of panic freedom: each `#[no_panic]` function below fails the release link
//! (`detected panic in function ...`) if the optimised code of its body can reach a panic.
//! `cargo run --release` builds the proof and runs each function once.
//!
//! Covered: decoding and validating a model file, loading it into a fixed-size detector (the
//! firmware's paths, no heap: from the file, and decoded ahead of time), and every push (a sample, a gap) of the reference model's
//! detector type and a small one.

use std::hint::black_box;

use no_panic::no_panic;
use sensorae::{
    Arch, Config, DecodeError, Decoded, Detector, Header, LoadError, ModelView, PARAM_LAYOUT,
    Verdict, param_count,
};

/// The reference model's detector: C=8, W=16, H=32, Z=8.
type Reference = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
/// A small one, as in the crate example: C=2, W=4, H=4, Z=2.
type Tiny = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;

#[no_panic]
fn decode(bytes: &[u8]) -> Result<Header<'_>, DecodeError> {
    ModelView::from_bytes(bytes).map(|v| *v.header())
}

#[no_panic]
fn decode_payload(bytes: &[u8]) -> Result<Header<'_>, DecodeError> {
    ModelView::from_payload(bytes).map(|v| *v.header())
}

#[no_panic]
fn load_reference(d: &mut Reference, bytes: &[u8]) -> Result<(), LoadError> {
    d.load(bytes)
}

#[no_panic]
fn load_decoded_reference(d: &mut Reference, model: &Decoded<'_>) -> Result<(), LoadError> {
    d.load_decoded(model)
}

#[no_panic]
fn push_reference(d: &mut Reference, sample: &[f32]) -> Verdict {
    d.push(sample)
}

#[no_panic]
fn push_missing_reference(d: &mut Reference) -> Verdict {
    d.push_missing()
}

#[no_panic]
fn load_tiny(d: &mut Tiny, bytes: &[u8]) -> Result<(), LoadError> {
    d.load(bytes)
}

#[no_panic]
fn push_tiny(d: &mut Tiny, sample: &[f32]) -> Verdict {
    d.push(sample)
}

fn main() {
    let model: &[u8] = include_bytes!("../../../firmware/model.snae");
    let model = black_box(model);
    assert!(decode(model).is_ok());
    assert!(decode_payload(&model[10..model.len() - 4]).is_ok());
    let mut d = Box::new(Reference::new());
    assert!(load_reference(&mut d, model).is_ok());
    for t in 0..40 {
        let sample = black_box([t as f32 * 0.01; 8]);
        let _ = push_reference(&mut d, &sample);
    }
    let _ = push_missing_reference(&mut d);
    // The firmware's default path: the same model decoded ahead of time.
    let view = ModelView::from_bytes(model).expect("the committed model reads");
    let channels: Vec<_> = view.channels().collect();
    let params = view.layout_params(std::env::consts::ARCH);
    let decoded = Decoded {
        config: Config::from(view.header()),
        channels: &channels,
        params: &params,
        crc: Decoded::checksum(&params),
        layout: PARAM_LAYOUT,
    };
    let mut d = Box::new(Reference::new());
    assert!(load_decoded_reference(&mut d, black_box(&decoded)).is_ok());
    let _ = push_reference(&mut d, &black_box([0.5; 8]));
    let tiny_model = sensorae::testing::tiny_model_bytes();
    let mut t = Tiny::new();
    assert!(load_tiny(&mut t, black_box(&tiny_model)).is_ok());
    let _ = push_tiny(&mut t, black_box(&[0.5, 0.25]));
    println!("no-panic: decode, load and push proven panic-free at link time, and ran");
}
