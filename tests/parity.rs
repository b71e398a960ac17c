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

/// Clones of a heap detector share its weights (one copy for many streams); reloading one
/// clone with another model must leave the others scoring exactly as before.
#[test]
fn clones_share_weights_without_aliasing() {
    let a = Spec::new(3, 5, 4, 2).bytes();
    let mut other = Spec::new(3, 5, 4, 2);
    other.params.iter_mut().for_each(|p| *p *= -0.5);
    let b = other.bytes();
    let scores = |d: &mut DynDetector| -> Vec<u32> {
        (0..30)
            .filter_map(|t| d.push(&signal(t, 3)).score().map(|s| s.raw.to_bits()))
            .collect()
    };
    let prototype = DynDetector::from_bytes(&a).unwrap();
    let expected = scores(&mut prototype.clone());
    let mut first = prototype.clone();
    let mut second = prototype.clone();
    second.load(&b).unwrap();
    let reloaded = scores(&mut second);
    assert_ne!(reloaded, expected, "the other model scores differently");
    assert_eq!(scores(&mut first), expected);
    assert_eq!(scores(&mut prototype.clone()), expected);
    assert_eq!(reloaded, scores(&mut DynDetector::from_bytes(&b).unwrap()));
}
