//! Arbitrary sample streams (NaN, infinities, out-of-range, 1e38, stuck values, gaps, wrong
//! lengths, resets, threshold changes) into valid models. Never a panic; every score finite and
//! non-negative; a fault exactly when a value is invalid, naming the first invalid channel; the
//! fixed-size detector and the heap one give identical verdicts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae::FaultKind;
use sensorae_fuzz::{Op, Stream, apply, check_verdict, expected_fault, loaded};

fuzz_target!(|data: &[u8]| {
    let Some((&which, ops)) = data.split_first() else {
        return;
    };
    let all = loaded();
    let model = &all[usize::from(which) % all.len()];
    let view = model.view;
    let channels = usize::from(view.header().window.channels);
    let mut dynamic = model.dynamic.clone();
    // A fixed-size twin where one exists: same code over other storage, same verdicts.
    let mut reference = model.reference.clone();
    let mut small = model.small.clone();
    let mut twin = |op: &Op| {
        if let Some(d) = reference.as_mut() {
            Some(apply(&mut **d, op))
        } else {
            small.as_mut().map(|d| apply(&mut **d, op))
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
