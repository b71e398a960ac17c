//! Properties over arbitrary inputs: no panic, errors never negative or NaN, round trips.

use proptest::prelude::*;
use sensorae::{DynDetector, ErrorMetric, ModelView, Variant};

use crate::common::Spec;

fn any_value() -> impl Strategy<Value = f32> {
    prop_oneof![
        8 => -20.0f32..20.0,
        1 => Just(f32::NAN),
        1 => Just(f32::INFINITY),
        1 => Just(-1e38f32),
        1 => any::<f32>(),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever arrives, a score is finite and non-negative, and faults name a real channel.
    #[test]
    fn scores_are_finite_and_non_negative(
        samples in proptest::collection::vec(proptest::collection::vec(any_value(), 3), 1..80),
        variant in prop_oneof![Just(Variant::Plain), Just(Variant::Vae)],
        hold in 0u16..3,
    ) {
        let mut spec = Spec::new(3, 4, 5, 2).variant(variant, false);
        spec.header.faults.hold_max = hold;
        spec.header.scoring.kl_weight = 1.0;
        let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
        for s in &samples {
            let v = d.push(s);
            if let Some(score) = v.score() {
                prop_assert!(score.value.is_finite() && score.value >= 0.0);
                prop_assert!(score.raw.is_finite() && score.raw >= 0.0);
            }
            if let Some(f) = v.fault() {
                prop_assert!(f.channel.is_none_or(|c| c < 3));
            }
        }
        prop_assert!(d.channel_errors().iter().all(|e| e.is_finite() && *e >= 0.0));
    }

    #[test]
    fn entry_errors_are_never_negative(x in any::<f32>(), y in any::<f32>()) {
        for m in [ErrorMetric::Mse, ErrorMetric::Mae, ErrorMetric::Bce] {
            let e = m.entry(x, y);
            prop_assert!(e.is_nan() || e >= 0.0, "{m:?} {x} {y} -> {e}");
            if x.is_finite() && y.is_finite() && m == ErrorMetric::Bce {
                prop_assert!(e.is_finite());
            }
        }
    }

    /// The window always holds the last W valid samples, oldest first.
    #[test]
    fn windows_hold_the_last_valid_samples_in_order(
        values in proptest::collection::vec(-5.0f32..5.0, 1..60),
        w in 1u16..7,
    ) {
        let spec = Spec::new(1, w, 2, 1).identity_channels();
        let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
        for (t, &v) in values.iter().enumerate() {
            d.push(&[v]);
            let window: Vec<f32> = d.window().map(|s| s[0]).collect();
            let start = (t + 1).saturating_sub(usize::from(w));
            prop_assert_eq!(window, values[start..=t].to_vec());
        }
    }

    #[test]
    fn encode_decode_round_trip(
        c in 1u16..5, w in 1u16..6, h in 1u32..6, z in 1u32..4,
        tied in any::<bool>(), vae in any::<bool>(),
        threshold in 0.0f32..1e6, ewma in 0.01f32..=1.0,
        on in 1u16..10, off in 1u16..10,
        params_seed in any::<u32>(),
    ) {
        let variant = if vae { Variant::Vae } else { Variant::Plain };
        let mut spec = Spec::new(c, w, h, z).variant(variant, tied && !vae);
        spec.header.threshold.value = threshold;
        spec.header.scoring.ewma = ewma;
        spec.header.alarm.on_after = on;
        spec.header.alarm.off_after = off;
        for (i, p) in spec.params.iter_mut().enumerate() {
            *p = ((i as u32).wrapping_mul(2_654_435_761) ^ params_seed) as f32 / u32::MAX as f32;
        }
        let bytes = spec.bytes();
        let view = ModelView::from_bytes(&bytes).unwrap();
        prop_assert_eq!(*view.header(), spec.header);
        prop_assert_eq!(view.channels().collect::<Vec<_>>(), spec.channels.clone());
        prop_assert_eq!(view.weights().collect::<Vec<_>>(), spec.params.clone());
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = ModelView::from_bytes(&bytes);
        let _ = ModelView::from_payload(&bytes);
    }
}
