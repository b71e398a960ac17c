//! Arbitrary sample streams (NaN, infinities, out-of-range, 1e38, stuck values, gaps, wrong
//! lengths, resets, threshold changes) into valid models. Never a panic; every score finite and
//! non-negative; a fault exactly when a value is invalid, naming the first invalid channel; the
//! fixed-size detector and the heap one give identical verdicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae::{DynDetector, FaultKind, ModelView};
use sensorae_fuzz::{Op, Reference, Small, Stream, apply, check_verdict, expected_fault, models};

fuzz_target!(|data: &[u8]| {
    let Some((&which, ops)) = data.split_first() else {
        return;
    };
    let models = models();
    let bytes = &models[usize::from(which) % models.len()];
    let view = ModelView::from_bytes(bytes).expect("valid model");
    let channels = usize::from(view.header().window.channels);
    let mut dynamic = DynDetector::from_bytes(bytes).expect("valid model");
    // A fixed-size twin where one exists: same code over other storage, same verdicts.
    let mut reference = Box::new(Reference::new());
    let mut small = Box::new(Small::new());
    let has_reference = reference.load(bytes).is_ok();
    let has_small = small.load(bytes).is_ok();
    let mut twin = |op: &Op| {
        if has_reference {
            Some(apply(&mut *reference, op))
        } else if has_small {
            Some(apply(&mut *small, op))
        } else {
            None
        }
    };
    let mut stream = Stream::new(ops, &view);
    let mut index = 0u64;
    while let Some((op, times)) = stream.next_op() {
        for _ in 0..times {
            if op == Op::Reset {
                index = 0;
            }
            let v = apply(&mut dynamic, &op);
            if let Some(t) = twin(&op) {
                assert_eq!(t, v, "fixed and heap detectors differ on {op:?}");
            }
            let Some(v) = v else { continue };
            check_verdict(&v, channels, index);
            index += 1;
            let expected = match &op {
                Op::Push(s) => expected_fault(&view, s),
                _ => Some((None, FaultKind::Missing)),
            };
            let found = v.fault().map(|f| (f.channel, f.kind));
            assert_eq!(found, expected, "{op:?} gave {v:?}");
        }
    }
});
