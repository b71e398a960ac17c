//! Arbitrary bytes as a model file, checksum and all: never a panic; every rejection is a typed
//! error with a one-line message; the view, the heap detector and the fixed reference detector
//! agree on what they accept; an accepted model scores finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae::{DynDetector, LoadError, ModelView};
use sensorae_fuzz::{Reference, smoke};

fuzz_target!(|data: &[u8]| {
    let view = ModelView::from_bytes(data);
    let dynamic = DynDetector::from_bytes(data);
    let mut fixed = Box::new(Reference::new());
    let fixed_result = fixed.load(data);
    match view {
        Ok(view) => {
            let h = view.header();
            assert_eq!(view.channels().count(), usize::from(h.window.channels));
            assert_eq!(view.weights().len(), h.param_count());
            assert!(view.weights().all(f32::is_finite));
            assert!(matches!(fixed_result, Ok(()) | Err(LoadError::Shape(_))));
            let mut d = dynamic.expect("a valid view loads");
            smoke(&mut d);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
            assert_eq!(dynamic.err(), Some(LoadError::Decode(e)));
            assert_eq!(fixed_result, Err(LoadError::Decode(e)));
            // A detector whose load failed has no model: it must say so, not score.
            let v = fixed.push(&[0.0; 8]);
            assert_eq!(
                v.fault().map(|f| f.kind),
                Some(sensorae::FaultKind::NoModel)
            );
        }
    }
});
