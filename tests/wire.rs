//! The model decoder's hand-written postcard reader (`testing::take_header`/`take_channel`)
//! against the reference, `postcard::take_from_bytes` with serde's derived `Deserialize`: on
//! every header and channel the test models use, on arbitrary ones, on random bytes and on
//! mutations of valid encodings, both fail, or both succeed with bit-identical values and the
//! same remaining bytes.

use proptest::prelude::*;
use sensorae::{
    Activation, Adaptation, Aggregate, AlarmHold, AlarmSpec, Channel, ErrorMetric, FaultPolicy,
    Header, Layers, MaskAxis, Scaling, Scoring, Threshold, ThresholdMethod, TrainingSummary,
    Variant, WindowSpec, testing,
};

use crate::common::Spec;

/// Whether the reference accepted `bytes` (the two decoders agree, or this panics).
pub fn same_header(bytes: &[u8]) -> bool {
    let reference = postcard::take_from_bytes::<Header<'_>>(bytes).ok();
    same(reference, testing::take_header(bytes), bytes)
}

/// As [`same_header`], for a channel.
pub fn same_channel(bytes: &[u8]) -> bool {
    let reference = postcard::take_from_bytes::<Channel<'_>>(bytes).ok();
    same(reference, testing::take_channel(bytes), bytes)
}

fn same<T: serde::Serialize + core::fmt::Debug>(
    reference: Option<(T, &[u8])>,
    ours: Option<(T, &[u8])>,
    bytes: &[u8],
) -> bool {
    match (reference, ours) {
        (None, None) => false,
        (Some((a, rest_a)), Some((b, rest_b))) => {
            // Re-encoded, so floats compare bit for bit (NaN payloads and signs included).
            assert_eq!(
                postcard::to_allocvec(&a).unwrap(),
                postcard::to_allocvec(&b).unwrap(),
                "values differ on {bytes:?}: {a:?} vs {b:?}"
            );
            assert!(
                core::ptr::eq(rest_a, rest_b),
                "remaining bytes differ on {bytes:?}: {} vs {}",
                rest_a.len(),
                rest_b.len()
            );
            true
        }
        (a, b) => panic!(
            "postcard accepts: {}, ours accepts: {}, on {bytes:?}",
            a.is_some(),
            b.is_some()
        ),
    }
}

/// Checks the header and every channel of a model file's payload; returns the payload's end of
/// channels (where the weights start).
pub fn same_model(file: &[u8]) -> usize {
    let payload = &file[sensorae::PREFIX_LEN..file.len() - sensorae::CRC_LEN];
    assert!(same_header(payload), "a test model's header must decode");
    let (header, mut rest) = postcard::take_from_bytes::<Header<'_>>(payload).unwrap();
    for _ in 0..header.window.channels {
        assert!(same_channel(rest), "a test model's channel must decode");
        rest = postcard::take_from_bytes::<Channel<'_>>(rest).unwrap().1;
    }
    payload.len() - rest.len()
}

/// Counts of the two outcomes, so a test can require both (a check that only ever sees
/// rejections proves nothing about values).
#[derive(Default)]
struct Tally {
    accepted: usize,
    rejected: usize,
}

impl Tally {
    fn add(&mut self, accepted: bool) {
        if accepted {
            self.accepted += 1;
        } else {
            self.rejected += 1;
        }
    }
}

/// Every single-byte mutation of `bytes`: each bit flipped, each truncation, each byte value
/// inserted at each position, each byte replaced by each value, each byte removed.
fn every_mutation(bytes: &[u8], check: fn(&[u8]) -> bool) -> Tally {
    let mut tally = Tally::default();
    let mut b = bytes.to_vec();
    for i in 0..bytes.len() {
        for v in 0..=255u8 {
            b[i] = v;
            tally.add(check(&b));
        }
        b[i] = bytes[i];
        let mut removed = bytes.to_vec();
        removed.remove(i);
        tally.add(check(&removed));
    }
    for n in 0..bytes.len() {
        tally.add(check(&bytes[..n]));
    }
    for i in 0..=bytes.len() {
        for v in 0..=255u8 {
            let mut inserted = bytes.to_vec();
            inserted.insert(i, v);
            tally.add(check(&inserted));
        }
    }
    tally
}

/// The headers the test suite's models use, with every enum variant and a name beyond ASCII.
fn fixture_models() -> Vec<Vec<u8>> {
    let mut specs = vec![Spec::new(2, 4, 4, 2), Spec::new(8, 16, 32, 8)];
    for variant in [
        Variant::Plain,
        Variant::Sparse,
        Variant::Denoising,
        Variant::Contractive,
        Variant::Vae,
        Variant::VqVae { codebook: 300 },
        Variant::Masked {
            mask: MaskAxis::Time,
        },
        Variant::Masked {
            mask: MaskAxis::Channel,
        },
        Variant::Hierarchical {
            block: 2,
            coarse_hidden: 3,
            coarse_latent: 1,
        },
    ] {
        specs.push(Spec::new(2, 4, 4, 2).variant(variant, false));
    }
    let mut odd = Spec::new(2, 4, 200, 2);
    odd.header.name = "Ventil 1 / Ölpumpe ✓";
    odd.header.tied = true;
    odd.header.layers.encoder_hidden = Activation::LeakyRelu { slope: 0.01 };
    odd.header.layers.code = Activation::SoftThreshold { lambda: 0.5 };
    odd.header.layers.decoder_hidden = Activation::Sigmoid;
    odd.header.layers.output = Activation::Relu;
    odd.header.scaling = Scaling::MinMax;
    odd.header.scoring.metric = ErrorMetric::Bce;
    odd.header.scoring.aggregate = Aggregate::MaxChannel;
    odd.header.threshold.method = ThresholdMethod::Pot {
        risk: 1e-3,
        initial_quantile: 0.98,
    };
    odd.header.threshold.calibration_windows = 70_000;
    odd.header.adaptation = Adaptation {
        rate: 0.01,
        in_alarm: AlarmHold::All,
    };
    odd.header.training.rows = u64::MAX;
    odd.header.training.seed = 1 << 40;
    odd.header.alarm.on_after = u16::MAX;
    let mut odd = odd.refill();
    odd.channels[1].name = "Druck, bar — ∆p";
    odd.channels[1].min = f32::NEG_INFINITY;
    let mut specs: Vec<_> = specs.iter().map(Spec::bytes).collect();
    specs.push(odd.bytes());
    for (method, hold) in [
        (ThresholdMethod::Quantile { q: 0.99 }, AlarmHold::Follow),
        (ThresholdMethod::Sigma { k: 3.0 }, AlarmHold::Explaining),
    ] {
        let mut spec = Spec::new(3, 2, 5, 3);
        spec.header.threshold.method = method;
        spec.header.adaptation.in_alarm = hold;
        specs.push(spec.bytes());
    }
    specs.push(testing::tiny_model_bytes().to_vec());
    specs.push(include_bytes!("../firmware/model.snae").to_vec());
    specs
}

/// The fixtures decode alike, and so does every single-byte mutation of their header and of
/// their first channel (with the rest of the payload after it, so remaining bytes count).
#[test]
fn hand_decoder_matches_postcard_on_fixtures_and_every_mutation() {
    let models = fixture_models();
    let (mut headers, mut channels) = (Tally::default(), Tally::default());
    for file in &models {
        let end = same_model(file);
        let payload = &file[sensorae::PREFIX_LEN..file.len() - sensorae::CRC_LEN];
        // The header and the first channel plus a few bytes after (mutating all of a large
        // model's payload would repeat the same checks on weights the decoders never read).
        let header_len = payload.len()
            - postcard::take_from_bytes::<Header<'_>>(payload)
                .unwrap()
                .1
                .len();
        let window = &payload[..(header_len + 4).min(payload.len())];
        let t = every_mutation(window, same_header);
        headers.accepted += t.accepted;
        headers.rejected += t.rejected;
        let channel = &payload[header_len..end.min(header_len + 40)];
        let t = every_mutation(channel, same_channel);
        channels.accepted += t.accepted;
        channels.rejected += t.rejected;
    }
    assert!(headers.accepted > 100_000 && headers.rejected > 100_000);
    assert!(channels.accepted > 100_000 && channels.rejected > 10_000);
}

/// Varints at the edges postcard draws: overlong encodings are accepted, a last byte beyond
/// the type's bits and a continuation on the last possible byte are refused.
#[test]
fn varint_edges_match_postcard() {
    let spec = Spec::new(2, 4, 4, 2);
    let file = spec.bytes();
    let payload = &file[sensorae::PREFIX_LEN..file.len() - sensorae::CRC_LEN];
    // Name "tiny" (5 bytes), variant, tied; then channels (u16) at 7, ..., hidden (u32) at
    // 10, ..., rows (u64) at 50 (see `model_format::golden_bytes`).
    let (channels_at, hidden_at, rows_at) = (7, 10, 50);
    assert_eq!(payload[channels_at], 2);
    assert_eq!(payload[hidden_at], 4);
    assert_eq!(
        payload.len() - testing::take_header(payload).unwrap().1.len(),
        54
    );
    let with = |at: usize, varint: &[u8]| {
        let mut b = payload[..at].to_vec();
        b.extend_from_slice(varint);
        b.extend_from_slice(&payload[at + 1..]);
        same_header(&b)
    };
    let mut accepted = 0;
    // Every encoding of up to three bytes in the u16 field, and then in the u32 one.
    for at in [channels_at, hidden_at, rows_at] {
        for a in 0..=255u8 {
            accepted += usize::from(with(at, &[a]));
            for b in 0..=255u8 {
                accepted += usize::from(with(at, &[a, b]));
                if a >= 0x80 && b >= 0x80 {
                    for c in [0u8, 1, 2, 3, 4, 15, 16, 0x7f, 0x80, 0x83, 0xff] {
                        accepted += usize::from(with(at, &[a, b, c]));
                    }
                }
            }
        }
    }
    assert!(accepted > 100_000, "{accepted}");
    // Longest forms: u16 last byte 3 ok / 4 not; u32 15 / 16; u64 1 / 2; a continuation bit on
    // the last possible byte is refused; overlong zeros are fine.
    let cases: &[(usize, &[u8], bool)] = &[
        (channels_at, &[0x82, 0x80, 0x00], true),
        (channels_at, &[0xff, 0xff, 0x03], true),
        (channels_at, &[0xff, 0xff, 0x04], false),
        (channels_at, &[0xff, 0xff, 0x83, 0x00], false),
        (hidden_at, &[0x84, 0x80, 0x80, 0x80, 0x00], true),
        (hidden_at, &[0xff, 0xff, 0xff, 0xff, 0x0f], true),
        (hidden_at, &[0xff, 0xff, 0xff, 0xff, 0x10], false),
        (hidden_at, &[0x84, 0x80, 0x80, 0x80, 0x80, 0x00], false),
        (
            rows_at,
            &[0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00],
            true,
        ),
        (
            rows_at,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
            true,
        ),
        (
            rows_at,
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02],
            false,
        ),
        (
            rows_at,
            &[
                0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
            ],
            false,
        ),
    ];
    for &(at, varint, ok) in cases {
        assert_eq!(with(at, varint), ok, "{varint:x?} at {at}");
    }
    // A name length written overlong reads the same name.
    let mut b = vec![0x84, 0x80, 0x00];
    b.extend_from_slice(&payload[1..]);
    assert!(same_header(&b));
    assert_eq!(testing::take_header(&b).unwrap().0.name, "tiny");
}

/// Strings: the name's bytes replaced by every short sequence, valid UTF-8 or not.
#[test]
fn names_match_postcard_on_every_short_byte_sequence() {
    let file = Spec::new(2, 4, 4, 2).bytes();
    let payload = &file[sensorae::PREFIX_LEN..file.len() - sensorae::CRC_LEN];
    let with = |name: &[u8]| {
        let mut b = vec![u8::try_from(name.len()).unwrap()];
        b.extend_from_slice(name);
        b.extend_from_slice(&payload[5..]);
        same_header(&b)
    };
    let mut tally = Tally::default();
    for a in 0..=255u8 {
        tally.add(with(&[a]));
        for b in 0..=255u8 {
            tally.add(with(&[a, b]));
            tally.add(with(&[b'x', a, b]));
        }
    }
    for lead in [0xe0u8, 0xed, 0xef, 0xf0, 0xf4, 0xf5] {
        for b in 0x70..=0xc0u8 {
            for c in [0x7fu8, 0x80, 0xbf, 0xc0] {
                tally.add(with(&[lead, b, c]));
                tally.add(with(&[lead, b, c, 0x80]));
            }
        }
    }
    assert!(tally.accepted > 20_000 && tally.rejected > 50_000);
}

fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![any::<f32>(), any::<u32>().prop_map(f32::from_bits)]
}

fn any_u16() -> impl Strategy<Value = u16> {
    prop_oneof![0..128u16, any::<u16>()]
}

fn any_u32() -> impl Strategy<Value = u32> {
    prop_oneof![0..128u32, any::<u32>()]
}

fn any_u64() -> impl Strategy<Value = u64> {
    prop_oneof![0..128u64, any::<u64>()]
}

fn any_activation() -> impl Strategy<Value = Activation> {
    prop_oneof![
        Just(Activation::Linear),
        Just(Activation::Relu),
        any_f32().prop_map(|slope| Activation::LeakyRelu { slope }),
        Just(Activation::Sigmoid),
        Just(Activation::Tanh),
        any_f32().prop_map(|lambda| Activation::SoftThreshold { lambda }),
    ]
}

fn any_variant() -> impl Strategy<Value = Variant> {
    prop_oneof![
        Just(Variant::Plain),
        Just(Variant::Sparse),
        Just(Variant::Denoising),
        Just(Variant::Contractive),
        Just(Variant::Vae),
        any_u16().prop_map(|codebook| Variant::VqVae { codebook }),
        prop_oneof![Just(MaskAxis::Time), Just(MaskAxis::Channel)]
            .prop_map(|mask| Variant::Masked { mask }),
        (any_u16(), any_u16(), any_u16()).prop_map(|(block, coarse_hidden, coarse_latent)| {
            Variant::Hierarchical {
                block,
                coarse_hidden,
                coarse_latent,
            }
        }),
    ]
}

fn any_method() -> impl Strategy<Value = ThresholdMethod> {
    prop_oneof![
        Just(ThresholdMethod::Fixed),
        any_f32().prop_map(|q| ThresholdMethod::Quantile { q }),
        any_f32().prop_map(|k| ThresholdMethod::Sigma { k }),
        (any_f32(), any_f32()).prop_map(|(risk, initial_quantile)| ThresholdMethod::Pot {
            risk,
            initial_quantile
        }),
    ]
}

/// Any value of the header's type with an empty name (valid or not: the decoders read before
/// any field is checked).
fn any_header() -> impl Strategy<Value = Header<'static>> {
    let window = (any_u16(), any_u16(), any_u16()).prop_map(|(channels, length, hop)| WindowSpec {
        channels,
        length,
        hop,
    });
    let layers = (
        any_u32(),
        any_u32(),
        [
            any_activation(),
            any_activation(),
            any_activation(),
            any_activation(),
        ],
    )
        .prop_map(|(hidden, latent, [a, b, c, d])| Layers {
            hidden,
            latent,
            encoder_hidden: a,
            code: b,
            decoder_hidden: c,
            output: d,
        });
    let scoring = (
        prop_oneof![
            Just(ErrorMetric::Mse),
            Just(ErrorMetric::Mae),
            Just(ErrorMetric::Bce)
        ],
        prop_oneof![Just(Aggregate::Mean), Just(Aggregate::MaxChannel)],
        any_f32(),
        any_f32(),
    )
        .prop_map(|(metric, aggregate, kl_weight, ewma)| Scoring {
            metric,
            aggregate,
            kl_weight,
            ewma,
        });
    let threshold =
        (any_f32(), any_method(), any_u32()).prop_map(|(value, method, calibration_windows)| {
            Threshold {
                value,
                method,
                calibration_windows,
            }
        });
    let tail = (
        any_u16(),
        any_u16(),
        any_u16(),
        any_f32(),
        prop_oneof![
            Just(AlarmHold::Follow),
            Just(AlarmHold::All),
            Just(AlarmHold::Explaining)
        ],
        (
            any_u32(),
            any_f32(),
            any_f32(),
            any_u64(),
            any_u32(),
            any_u32(),
            any_u64(),
        ),
    )
        .prop_map(|(on_after, off_after, hold_max, rate, in_alarm, t)| {
            let (epochs, train_loss, val_loss, rows, train_windows, val_windows, seed) = t;
            (
                AlarmSpec {
                    on_after,
                    off_after,
                },
                FaultPolicy { hold_max },
                Adaptation { rate, in_alarm },
                TrainingSummary {
                    epochs,
                    train_loss,
                    val_loss,
                    rows,
                    train_windows,
                    val_windows,
                    seed,
                },
            )
        });
    (
        any_variant(),
        any::<bool>(),
        window,
        layers,
        prop_oneof![Just(Scaling::Standard), Just(Scaling::MinMax)],
        scoring,
        threshold,
        tail,
    )
        .prop_map(
            |(variant, tied, window, layers, scaling, scoring, threshold, tail)| {
                let (alarm, faults, adaptation, training) = tail;
                Header {
                    name: "",
                    variant,
                    tied,
                    window,
                    layers,
                    scaling,
                    scoring,
                    threshold,
                    alarm,
                    faults,
                    adaptation,
                    training,
                }
            },
        )
}

/// A mutation of a byte string: flip a bit, truncate, insert, delete or overwrite a run.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Overwrite(usize, Vec<u8>),
}

fn any_edit() -> impl Strategy<Value = Edit> {
    let bytes = proptest::collection::vec(any::<u8>(), 1..6);
    prop_oneof![
        (any::<usize>(), 0..8u8).prop_map(|(i, bit)| Edit::Flip(i, bit)),
        any::<usize>().prop_map(Edit::Truncate),
        (any::<usize>(), bytes.clone()).prop_map(|(i, b)| Edit::Insert(i, b)),
        (any::<usize>(), 1..6usize).prop_map(|(i, n)| Edit::Delete(i, n)),
        (any::<usize>(), bytes).prop_map(|(i, b)| Edit::Overwrite(i, b)),
    ]
}

fn apply(bytes: &mut Vec<u8>, edit: &Edit) {
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % (len + 1) };
    match edit {
        Edit::Flip(i, bit) if !bytes.is_empty() => {
            let i = i % bytes.len();
            bytes[i] ^= 1 << bit;
        }
        Edit::Truncate(n) => bytes.truncate(at(*n, bytes.len())),
        Edit::Insert(i, b) => {
            let i = at(*i, bytes.len());
            bytes.splice(i..i, b.iter().copied());
        }
        Edit::Delete(i, n) => {
            let i = at(*i, bytes.len());
            let end = (i + n).min(bytes.len());
            bytes.drain(i..end);
        }
        Edit::Overwrite(i, b) => {
            let i = at(*i, bytes.len());
            for (k, &v) in b.iter().enumerate() {
                if let Some(slot) = bytes.get_mut(i + k) {
                    *slot = v;
                }
            }
        }
        Edit::Flip(..) => {}
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// Any header and channel values, encoded by postcard, then followed by other bytes, then
    /// mutated a few times: the decoders agree at every step.
    #[test]
    fn hand_decoder_matches_postcard_on_any_values_and_mutations(
        header in any_header(),
        name in any::<String>(),
        channel in (any::<String>(), any_f32(), any_f32(), any_f32(), any_f32()),
        tail in proptest::collection::vec(any::<u8>(), 0..8),
        edits in proptest::collection::vec(any_edit(), 1..4),
    ) {
        let header = Header { name: &name, ..header };
        let (ch_name, offset, scale, min, max) = channel;
        let channel = Channel { name: &ch_name, offset, scale, min, max };
        let mut h = postcard::to_allocvec(&header).unwrap();
        let mut c = postcard::to_allocvec(&channel).unwrap();
        c.extend_from_slice(&tail);
        h.extend_from_slice(&c);
        prop_assert!(same_header(&h));
        prop_assert!(same_channel(&c));
        prop_assert_eq!(testing::take_header(&h).unwrap().0.name, name.as_str());
        for edit in &edits {
            apply(&mut h, edit);
            apply(&mut c, edit);
            same_header(&h);
            same_channel(&c);
        }
    }

    /// Random bytes, and random bytes behind a valid name (so the decoders get past it).
    #[test]
    fn hand_decoder_matches_postcard_on_random_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        same_header(&bytes);
        same_channel(&bytes);
        let mut named = vec![4, b't', b'i', b'n', b'y'];
        named.extend_from_slice(&bytes);
        same_header(&named);
        same_channel(&named);
    }
}
