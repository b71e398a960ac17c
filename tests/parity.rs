//! Fixed-size and heap detectors run the same code: their verdicts are bit-identical.

use sensorae::{Activation, Arch, Detector, DynDetector, Variant, param_count};

use crate::common::{Spec, signal};

fn compare<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
>(
    spec: &Spec,
) {
    let bytes = spec.bytes();
    let mut fixed = Detector::<C, W, N, H, Z, P>::from_bytes(&bytes).unwrap();
    let mut dynamic = DynDetector::from_bytes(&bytes).unwrap();
    for t in 0..200 {
        let mut s = signal(t, C);
        if t % 37 == 5 {
            s[t % C] = f32::NAN;
        }
        let (a, b) = (fixed.push(&s), dynamic.push(&s));
        assert_eq!(a, b, "t={t}");
        if let (Some(x), Some(y)) = (a.score(), b.score()) {
            assert_eq!(x.value.to_bits(), y.value.to_bits());
        }
    }
    assert_eq!(fixed.channel_errors(), dynamic.channel_errors());
}

#[test]
fn dense_fixed_and_dynamic_are_bit_identical() {
    let spec = Spec::new(3, 8, 6, 2).activations([
        Activation::Relu,
        Activation::Tanh,
        Activation::LeakyRelu { slope: 0.01 },
        Activation::Linear,
    ]);
    compare::<3, 8, 24, 6, 2, { param_count(Arch::Dense, 24, 6, 2) }>(&spec);
}

#[test]
fn tied_fixed_and_dynamic_are_bit_identical() {
    let spec = Spec::new(3, 8, 6, 2).variant(Variant::Plain, true);
    compare::<3, 8, 24, 6, 2, { param_count(Arch::Tied, 24, 6, 2) }>(&spec);
}

#[test]
fn vae_fixed_and_dynamic_are_bit_identical() {
    let mut spec = Spec::new(2, 8, 5, 3).variant(Variant::Vae, false);
    spec.header.scoring.kl_weight = 0.1;
    spec.header.scoring.ewma = 0.5;
    compare::<2, 8, 16, 5, 3, { param_count(Arch::Vae, 16, 5, 3) }>(&spec);
}
