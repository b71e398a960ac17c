//! Differential: the core's hand-written postcard reader of the model header and channels
//! (`testing::take_header`/`take_channel`) against the reference, `postcard::take_from_bytes`
//! with serde's derived `Deserialize`. On any bytes, both fail, or both succeed with
//! bit-identical values (compared re-encoded, so NaN payloads count) and the same rest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae::{Channel, Header, testing};

fn same<T: serde::Serialize + std::fmt::Debug>(
    reference: Option<(T, &[u8])>,
    ours: Option<(T, &[u8])>,
) {
    match (reference, ours) {
        (None, None) => {}
        (Some((a, rest_a)), Some((b, rest_b))) => {
            assert_eq!(
                postcard::to_allocvec(&a).unwrap(),
                postcard::to_allocvec(&b).unwrap(),
                "{a:?} vs {b:?}"
            );
            assert!(std::ptr::eq(rest_a, rest_b), "remaining bytes differ");
        }
        (a, b) => panic!("postcard accepts: {}, ours: {}", a.is_some(), b.is_some()),
    }
}

fuzz_target!(|data: &[u8]| {
    same(
        postcard::take_from_bytes::<Header<'_>>(data).ok(),
        testing::take_header(data),
    );
    same(
        postcard::take_from_bytes::<Channel<'_>>(data).ok(),
        testing::take_channel(data),
    );
    // The channels that follow an accepted header, as the payload decoder reads them.
    if let Ok((header, mut rest)) = postcard::take_from_bytes::<Header<'_>>(data) {
        for _ in 0..header.window.channels.min(64) {
            same(
                postcard::take_from_bytes::<Channel<'_>>(rest).ok(),
                testing::take_channel(rest),
            );
            match postcard::take_from_bytes::<Channel<'_>>(rest) {
                Ok((_, tail)) => rest = tail,
                Err(_) => break,
            }
        }
    }
});
