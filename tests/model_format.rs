//! The `.snae` format: golden bytes, round trips, and rejection of every corruption.

use sensorae::{
    AlarmHold, Arch, DecodeError, Detector, DynDetector, EncodeError, LoadError, ModelView,
    ShapeError, Variant, encode, param_count, testing,
};

use crate::common::Spec;

fn tiny() -> Vec<u8> {
    testing::tiny_model_bytes().to_vec()
}

/// Pins the format: any change of the framing, postcard layout or parameter order breaks this.
#[test]
fn golden_bytes() {
    let bytes = tiny();
    assert_eq!(&bytes[..4], b"SNAE");
    assert_eq!(u16::from_le_bytes([bytes[4], bytes[5]]), 1);
    let payload_len = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]) as usize;
    assert_eq!(bytes.len(), 10 + payload_len + 4);
    // Header: name "tiny", variant Plain (0), tied false, window (2, 4, 1), hidden 4, latent 2,
    // activations Tanh (4), Linear (0), Tanh (4), Linear (0), Standard (0), Mse (0), Mean (0),
    // kl 0.0, ewma 1.0, threshold 1.0, Fixed (0), 0 windows, alarm (2, 2), hold 0, adaptation
    // rate 0.0 and hold in alarm Explaining (2; a `bool` before, so 0 and 1 still read as
    // Follow and All), training zeros.
    let expected_header: &[u8] = &[
        4, b't', b'i', b'n', b'y', 0, 0, 2, 4, 1, 4, 2, 4, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0x80, 0x3f, 0, 0, 0x80, 0x3f, 0, 0, 2, 2, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0, 0,
    ];
    assert_eq!(&bytes[10..10 + expected_header.len()], expected_header);
    // First channel: name "a", offset 0.0, scale 1.0, min -10.0, max 10.0.
    let ch0: &[u8] = &[
        1, b'a', 0, 0, 0, 0, 0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc1, 0, 0, 0x20, 0x41,
    ];
    let at = 10 + expected_header.len();
    assert_eq!(&bytes[at..at + ch0.len()], ch0);
    // Weights start after both channels (18 + 18 bytes): parameter 0 first.
    let w = at + 2 * ch0.len();
    assert_eq!(&bytes[w..w + 4], &testing::param(0).to_le_bytes());
    assert_eq!(bytes.len() - 4 - w, 4 * param_count(Arch::Dense, 8, 4, 2));
    let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
    assert_eq!(crc, crc32_reference(&bytes[..bytes.len() - 4]));
}

/// Files written while the hold in alarm was a `bool` (`freeze_in_alarm`) read as `Follow`
/// (false) and `All` (true); a variant index past the last is refused.
#[test]
fn alarm_hold_reads_the_former_bool() {
    let golden = tiny();
    // The hold's byte in the golden header (see `golden_bytes`).
    let at = 10 + 40;
    assert_eq!(golden[at], 2);
    let with = |byte: u8| {
        let mut b = golden.clone();
        b[at] = byte;
        let n = b.len() - 4;
        let crc = crc32_reference(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        b
    };
    for (byte, hold) in [
        (0, AlarmHold::Follow),
        (1, AlarmHold::All),
        (2, AlarmHold::Explaining),
    ] {
        let b = with(byte);
        let view = ModelView::from_bytes(&b).unwrap();
        assert_eq!(view.header().adaptation.in_alarm, hold);
    }
    assert!(ModelView::from_bytes(&with(3)).is_err());
}

/// Bitwise CRC-32 (ISO-HDLC, reflected 0xEDB88320), independent of the `crc` crate.
fn crc32_reference(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn round_trip_keeps_every_field() {
    let mut spec = Spec::new(3, 4, 5, 2).variant(Variant::Vae, false);
    spec.header.name = "pump-7";
    spec.header.scoring.kl_weight = 0.25;
    spec.header.scoring.ewma = 0.3;
    spec.header.threshold.method = sensorae::ThresholdMethod::Pot {
        risk: 1e-4,
        initial_quantile: 0.98,
    };
    spec.header.training.seed = 42;
    spec.channels[1].min = -1.5;
    let bytes = spec.bytes();
    let view = ModelView::from_bytes(&bytes).unwrap();
    assert_eq!(*view.header(), spec.header);
    assert_eq!(view.channels().collect::<Vec<_>>(), spec.channels);
    assert_eq!(view.weights().collect::<Vec<_>>(), spec.params);
}

#[test]
fn encode_into_buffer_matches_vec_and_reports_small_buffers() {
    let spec = Spec::new(2, 4, 4, 2);
    let v = spec.bytes();
    let mut buf = vec![0u8; v.len()];
    let n = encode(&spec.header, &spec.channels, &spec.params, &mut buf).unwrap();
    assert_eq!(&buf[..n], &v[..]);
    for short in [0, 5, 10, v.len() / 2, v.len() - 1] {
        let mut buf = vec![0u8; short];
        assert_eq!(
            encode(&spec.header, &spec.channels, &spec.params, &mut buf),
            Err(EncodeError::BufferTooSmall)
        );
    }
}

#[test]
fn every_single_bit_flip_is_rejected() {
    let bytes = tiny();
    let mut flipped = bytes.clone();
    for i in 0..bytes.len() * 8 {
        flipped[i / 8] ^= 1 << (i % 8);
        let err = ModelView::from_bytes(&flipped).expect_err("a flipped bit must be rejected");
        // The framing catches each flip before the body is trusted.
        assert!(
            matches!(
                err,
                DecodeError::BadMagic
                    | DecodeError::UnsupportedVersion { .. }
                    | DecodeError::Truncated { .. }
                    | DecodeError::TrailingBytes { .. }
                    | DecodeError::Checksum { .. }
            ),
            "bit {i}: {err:?}"
        );
        flipped[i / 8] ^= 1 << (i % 8);
    }
    assert_eq!(flipped, bytes);
}

/// The issue-9 additions are appended enum variants, so old files decode as before and the
/// new ones have pinned discriminants: `Variant` 5 VqVae { codebook: varint }, 6 Masked {
/// mask: 0 Time | 1 Channel }, `Activation` 5 SoftThreshold { lambda: f32 }.
#[test]
fn new_variants_and_activation_round_trip_with_pinned_bytes() {
    let mut vq = Spec::new(2, 4, 4, 2).variant(Variant::VqVae { codebook: 300 }, false);
    vq.header.layers.code = sensorae::Activation::SoftThreshold { lambda: 0.5 };
    vq.header.scoring.kl_weight = 0.125;
    let masked = Spec::new(2, 4, 4, 2).variant(
        Variant::Masked {
            mask: sensorae::MaskAxis::Channel,
        },
        true,
    );
    for (spec, variant_bytes) in [(&vq, &[5u8, 0xac, 0x02][..]), (&masked, &[6, 1][..])] {
        let bytes = spec.bytes();
        let view = ModelView::from_bytes(&bytes).unwrap();
        assert_eq!(*view.header(), spec.header);
        assert_eq!(view.weights().collect::<Vec<_>>(), spec.params);
        // Name "tiny" (5 bytes) then the variant.
        assert_eq!(&bytes[15..15 + variant_bytes.len()], variant_bytes);
    }
    assert_eq!(
        vq.params.len(),
        param_count(Arch::Dense, 8, 4, 2) + 300 * 2,
        "the codebook adds K * Z parameters"
    );
    // Code activation after tied (1), window (3), hidden, latent, encoder_hidden (1 byte).
    let bytes = vq.bytes();
    let at = 15 + 3 + 1 + 3 + 2 + 1;
    assert_eq!(bytes[at], 5);
    assert_eq!(&bytes[at + 1..at + 5], &0.5f32.to_le_bytes());
    let mut flipped = bytes.clone();
    for i in 0..bytes.len() * 8 {
        flipped[i / 8] ^= 1 << (i % 8);
        assert!(ModelView::from_bytes(&flipped).is_err(), "bit {i}");
        flipped[i / 8] ^= 1 << (i % 8);
    }
}

#[test]
fn bad_codebook_lambda_and_tied_vqvae_are_refused() {
    let invalid =
        |spec: &Spec| match sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params) {
            Err(EncodeError::Invalid(DecodeError::InvalidField { field })) => field,
            other => panic!("{other:?}"),
        };
    let zero = Spec::new(2, 4, 4, 2).variant(Variant::VqVae { codebook: 0 }, false);
    assert_eq!(invalid(&zero), "variant.codebook");
    let huge = Spec::new(2, 4, 4, 2).variant(Variant::VqVae { codebook: 1025 }, false);
    assert_eq!(invalid(&huge), "variant.codebook");
    let tied = Spec::new(2, 4, 4, 2).variant(Variant::VqVae { codebook: 4 }, true);
    assert_eq!(invalid(&tied), "tied");
    let mut soft = Spec::new(2, 4, 4, 2);
    soft.header.layers.code = sensorae::Activation::SoftThreshold { lambda: -0.1 };
    assert_eq!(invalid(&soft), "layers.code");
    // A fixed-size detector sized with the codebook loads the model.
    let ok = Spec::new(2, 4, 4, 2).variant(Variant::VqVae { codebook: 3 }, false);
    type Vq = Detector<2, 4, 8, 4, 2, { param_count(Arch::VqVae { codebook: 3 }, 8, 4, 2) }>;
    assert!(Vq::from_bytes(&ok.bytes()).is_ok());
    type Plain = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
    assert!(matches!(
        Plain::from_bytes(&ok.bytes()),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "parameters",
            ..
        }))
    ));
}

const HIER: Variant = Variant::Hierarchical {
    block: 2,
    coarse_hidden: 3,
    coarse_latent: 1,
};

/// `Variant` 7 is Hierarchical { block, coarse_hidden, coarse_latent: varint u16 each }; its
/// parameters are the dense fine path, the dense coarse path on the N / b block means, then
/// the gains `[g_c, g_f]`.
#[test]
fn hierarchical_round_trips_with_pinned_bytes() {
    let spec = Spec::new(2, 4, 4, 2).variant(HIER, false);
    let bytes = spec.bytes();
    let view = ModelView::from_bytes(&bytes).unwrap();
    assert_eq!(*view.header(), spec.header);
    assert_eq!(view.weights().collect::<Vec<_>>(), spec.params);
    assert_eq!(&bytes[15..19], &[7, 2, 3, 1]);
    assert_eq!(
        spec.params.len(),
        param_count(Arch::Dense, 8, 4, 2) + param_count(Arch::Dense, 4, 3, 1) + 2
    );
    let mut flipped = bytes.clone();
    for i in 0..bytes.len() * 8 {
        flipped[i / 8] ^= 1 << (i % 8);
        assert!(ModelView::from_bytes(&flipped).is_err(), "bit {i}");
        flipped[i / 8] ^= 1 << (i % 8);
    }
}

#[test]
fn inconsistent_hierarchical_headers_are_refused() {
    let field = |variant: Variant, tied: bool, window: u16| {
        let mut spec = Spec::new(2, window, 4, 2);
        spec.header.variant = variant;
        spec.header.tied = tied;
        // Sizes the weights from the saturating count; the header check comes first anyway.
        let count = spec.header.param_count().min(1 << 16);
        spec.params = vec![0.0; count];
        match sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params) {
            Err(EncodeError::Invalid(DecodeError::InvalidField { field })) => field,
            other => panic!("{variant:?}: {other:?}"),
        }
    };
    let hier = |block, coarse_hidden, coarse_latent| Variant::Hierarchical {
        block,
        coarse_hidden,
        coarse_latent,
    };
    // A block must have at least 2 steps and divide the window.
    assert_eq!(field(hier(0, 3, 1), false, 4), "variant.block");
    assert_eq!(field(hier(1, 3, 1), false, 4), "variant.block");
    assert_eq!(field(hier(3, 3, 1), false, 4), "variant.block");
    assert_eq!(field(hier(8, 3, 1), false, 4), "variant.block");
    assert_eq!(field(hier(u16::MAX, 3, 1), false, 4), "variant.block");
    // Coarse sizes within 1 ..= MAX_WIDTH.
    assert_eq!(field(hier(2, 0, 1), false, 4), "variant.coarse_hidden");
    assert_eq!(field(hier(2, 8193, 1), false, 4), "variant.coarse_hidden");
    assert_eq!(field(hier(2, 3, 0), false, 4), "variant.coarse_latent");
    assert_eq!(
        field(hier(2, 3, u16::MAX), false, 4),
        "variant.coarse_latent"
    );
    assert_eq!(field(HIER, true, 4), "tied");
    // The largest sizes the limits allow still count without wrapping, even on 32 bits.
    let widest = Arch::Hierarchical {
        block: 2,
        coarse_hidden: sensorae::MAX_WIDTH,
        coarse_latent: sensorae::MAX_WIDTH,
    };
    let w = sensorae::MAX_WIDTH;
    let most = param_count(widest, w, w, w);
    assert!(
        most.checked_mul(4).is_some_and(|b| b <= u32::MAX as usize),
        "{most}"
    );
    // Out-of-range sizes saturate instead of wrapping or dividing by zero.
    let huge = Arch::Hierarchical {
        block: 0,
        coarse_hidden: usize::MAX,
        coarse_latent: 1,
    };
    assert_eq!(
        param_count(huge, 8, 4, 2),
        param_count(Arch::Dense, 8, 4, 2) + 2
    );
    assert_eq!(param_count(Arch::Dense, usize::MAX, 2, 1), usize::MAX);
    assert_eq!(sensorae::scratch_len(huge, 8), usize::MAX);
}

#[test]
fn fixed_hierarchical_detector_needs_its_scratch() {
    let spec = Spec::new(2, 4, 4, 2).variant(HIER, false);
    const ARCH: Arch = Arch::Hierarchical {
        block: 2,
        coarse_hidden: 3,
        coarse_latent: 1,
    };
    const P: usize = param_count(ARCH, 8, 4, 2);
    const S: usize = sensorae::scratch_len(ARCH, 8);
    assert_eq!(S, 8 + 4 + 2 * 3 + 1);
    type Hier = Detector<2, 4, 8, 4, 2, P, S>;
    let mut fixed = Hier::from_bytes(&spec.bytes()).unwrap();
    let mut heap = DynDetector::from_bytes(&spec.bytes()).unwrap();
    for t in 0..12 {
        let sample = crate::common::signal(t, 2);
        let (a, b) = (fixed.push(&sample), heap.push(&sample));
        assert_eq!(a, b, "t={t}");
    }
    type NoScratch = Detector<2, 4, 8, 4, 2, P>;
    assert!(matches!(
        NoScratch::from_bytes(&spec.bytes()),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "scratch",
            expected: 0,
            found: S,
        }))
    ));
}

#[test]
fn every_truncation_and_extension_is_rejected() {
    let bytes = tiny();
    for len in 0..bytes.len() {
        let err = ModelView::from_bytes(&bytes[..len]).unwrap_err();
        assert!(
            matches!(err, DecodeError::Truncated { .. }),
            "len {len}: {err:?}"
        );
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        ModelView::from_bytes(&longer).unwrap_err(),
        DecodeError::TrailingBytes { count: 1 }
    );
}

#[test]
fn header_errors_are_typed() {
    let mut bytes = tiny();
    bytes[4] = 9;
    assert_eq!(
        ModelView::from_bytes(&bytes).unwrap_err(),
        DecodeError::UnsupportedVersion { found: 9 }
    );
    assert_eq!(
        ModelView::from_bytes(b"PK\x03\x04 a zip file, not a model").unwrap_err(),
        DecodeError::BadMagic
    );
}

#[test]
fn invalid_fields_are_refused_on_write() {
    let mut spec = Spec::new(2, 4, 4, 2);
    spec.header.window.hop = 0;
    assert!(matches!(
        sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params),
        Err(EncodeError::Invalid(DecodeError::InvalidField {
            field: "window.hop"
        }))
    ));
    let mut spec = Spec::new(2, 4, 4, 2);
    spec.channels[0].scale = 0.0;
    assert!(matches!(
        sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params),
        Err(EncodeError::Invalid(DecodeError::InvalidField {
            field: "channel.scale"
        }))
    ));
    let mut spec = Spec::new(2, 4, 4, 2);
    spec.params[3] = f32::NAN;
    assert!(matches!(
        sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params),
        Err(EncodeError::Invalid(DecodeError::NonFiniteWeight {
            index: 3
        }))
    ));
    let mut spec = Spec::new(2, 4, 4, 2);
    spec.params.pop();
    assert!(matches!(
        sensorae::encode_to_vec(&spec.header, &spec.channels, &spec.params),
        Err(EncodeError::ParamCount { .. })
    ));
}

/// A body that passes the checksum but lies about its sizes is still rejected.
#[test]
fn payload_with_wrong_weight_count_is_rejected() {
    let spec = Spec::new(2, 4, 4, 2);
    let bytes = spec.bytes();
    let payload = &bytes[10..bytes.len() - 4];
    assert!(matches!(
        ModelView::from_payload(&payload[..payload.len() - 4]),
        Err(DecodeError::WeightsLength { .. })
    ));
    let mut nan = payload.to_vec();
    let end = nan.len();
    nan[end - 4..].copy_from_slice(&f32::NAN.to_le_bytes());
    assert!(matches!(
        ModelView::from_payload(&nan),
        Err(DecodeError::NonFiniteWeight { .. })
    ));
}

#[test]
fn fixed_detector_names_expected_and_found_sizes() {
    let bytes = tiny(); // C=2, W=4, H=4, Z=2
    type Wrong = Detector<2, 4, 8, 5, 2, { param_count(Arch::Dense, 8, 5, 2) }>;
    assert_eq!(
        Wrong::from_bytes(&bytes).unwrap_err(),
        LoadError::Shape(ShapeError::Mismatch {
            what: "hidden",
            expected: 5,
            found: 4
        })
    );
    type WrongChannels = Detector<3, 4, 12, 4, 2, { param_count(Arch::Dense, 12, 4, 2) }>;
    let err = WrongChannels::from_bytes(&bytes).unwrap_err();
    assert_eq!(
        err.to_string(),
        "model channels is 2, the detector type was built for 3"
    );
    type Right = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
    assert!(Right::from_bytes(&bytes).is_ok());
    // A tied model has fewer parameters: the same sizes with another P are refused by name.
    let tied = Spec::new(2, 4, 4, 2).variant(Variant::Plain, true).bytes();
    assert!(matches!(
        Right::from_bytes(&tied),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "parameters",
            ..
        }))
    ));
    assert!(DynDetector::from_bytes(&tied).is_ok());
}

/// `uses_logistic` names exactly the models the `logistic` feature is needed for: a sigmoid in
/// any layer, or the BCE score.
#[test]
fn the_logistic_feature_is_needed_for_sigmoid_and_bce_models_only() {
    use sensorae::{
        Activation::{Linear, Sigmoid, Tanh},
        Aggregate, ErrorMetric,
    };
    let plain = Spec::new(2, 4, 4, 2).activations([Tanh, Tanh, Tanh, Linear]);
    assert!(!plain.header.uses_logistic());
    for at in 0..4 {
        let mut a = [Tanh, Tanh, Tanh, Linear];
        a[at] = Sigmoid;
        assert!(
            Spec::new(2, 4, 4, 2).activations(a).header.uses_logistic(),
            "{at}"
        );
    }
    let mae = plain.clone().metric(ErrorMetric::Mae, Aggregate::Mean);
    assert!(!mae.header.uses_logistic());
    let bce = plain.metric(ErrorMetric::Bce, Aggregate::Mean);
    assert!(bce.header.uses_logistic());
    // Such a model loads with the feature (CI runs the workspace tests with every feature).
    assert!(DynDetector::from_bytes(&bce.bytes()).is_ok());
}
