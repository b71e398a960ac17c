//! Arbitrary bytes as a model payload, past the checksum, so the fuzzer reaches the body decoder
//! (postcard header, channels, weights, field validation). Never a panic; framing the payload
//! changes nothing about the verdict; an accepted model loads and scores finite values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae::{DynDetector, ModelView};
use sensorae_fuzz::{frame, smoke};

fuzz_target!(|data: &[u8]| {
    let framed = frame(data);
    let whole = ModelView::from_bytes(&framed);
    match ModelView::from_payload(data) {
        Ok(view) => {
            let whole = whole.expect("a valid payload makes a valid file");
            // Debug, not `==`: the training summary's losses may be NaN (informational only).
            assert_eq!(
                format!("{:?}", whole.header()),
                format!("{:?}", view.header())
            );
            assert_eq!(
                view.channels().count(),
                usize::from(view.header().window.channels)
            );
            assert_eq!(view.weights().len(), view.header().param_count());
            let mut d = DynDetector::from_bytes(&framed).expect("a valid file loads");
            smoke(&mut d);
        }
        Err(e) => {
            assert_eq!(whole.err(), Some(e));
            let msg = e.to_string();
            assert!(!msg.is_empty() && !msg.contains('\n'), "{msg:?}");
        }
    }
});
