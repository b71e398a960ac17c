//! Models decoded ahead of time (`ModelView::to_rust`, `Engine::load_decoded`) score exactly
//! as the file they came from, and a damaged one is refused.

use sensorae::{
    Activation, Aggregate, Arch, Channel, Config, DecodeError, Decoded, Detector, ErrorMetric,
    FaultKind, LoadError, MaskAxis, ModelView, PARAM_LAYOUT, ShapeError, Status, ThresholdMethod,
    Variant, param_count, param_layout_for, scratch_len,
};

use crate::common::{Spec, signal};

/// This machine's `target_arch`: the tests load what they decode here.
const HOST: &str = std::env::consts::ARCH;

/// The parts of a decoded model, owned.
struct Parts {
    config: Config,
    channels: Vec<Channel<'static>>,
    params: Vec<f32>,
}

impl Parts {
    fn of(spec: &Spec) -> Parts {
        let bytes = spec.bytes();
        let view = ModelView::from_bytes(&bytes).unwrap();
        Parts {
            config: Config::from(view.header()),
            // The spec's channels are what the file holds (names borrowed from the spec).
            channels: spec.channels.clone(),
            params: view.layout_params(HOST),
        }
    }

    fn decoded(&self) -> Decoded<'_> {
        Decoded {
            config: self.config,
            channels: &self.channels,
            params: &self.params,
            crc: Decoded::checksum(&self.params),
            layout: PARAM_LAYOUT,
        }
    }
}

/// A stream with missing values, so faults, bridging and window resets are compared too.
fn stream(t: usize, c: usize) -> Vec<f32> {
    let mut s = signal(t, c);
    if t % 37 == 5 {
        s[t % c] = f32::NAN;
    }
    if (90..100).contains(&t) {
        s[0] = f32::NAN;
    }
    s
}

fn same_verdicts<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize,
>(
    spec: &Spec,
) {
    let parts = Parts::of(spec);
    let mut from_file = Detector::<C, W, N, H, Z, P, S>::from_bytes(&spec.bytes()).unwrap();
    let mut decoded = Detector::<C, W, N, H, Z, P, S>::new();
    decoded.load_decoded(&parts.decoded()).unwrap();
    assert_eq!(decoded.config(), from_file.config());
    let mut scored = 0;
    for t in 0..300 {
        let s = stream(t, C);
        let (a, b) = (from_file.push(&s), decoded.push(&s));
        assert_eq!(a, b, "t={t}");
        if let (Some(x), Some(y)) = (a.score(), b.score()) {
            assert_eq!(x.value.to_bits(), y.value.to_bits(), "t={t}");
            scored += 1;
        }
    }
    assert!(scored > 100, "only {scored} scores compared");
    assert_eq!(from_file.channel_errors(), decoded.channel_errors());
}

#[test]
fn dense_decoded_scores_as_the_file() {
    let spec = Spec::new(3, 8, 6, 2).activations([
        Activation::Relu,
        Activation::SoftThreshold { lambda: 0.05 },
        Activation::LeakyRelu { slope: 0.01 },
        Activation::Linear,
    ]);
    same_verdicts::<3, 8, 24, 6, 2, { param_count(Arch::Dense, 24, 6, 2) }, 0>(&spec);
}

#[test]
fn tied_decoded_scores_as_the_file() {
    let spec = Spec::new(3, 8, 6, 2).variant(Variant::Plain, true);
    same_verdicts::<3, 8, 24, 6, 2, { param_count(Arch::Tied, 24, 6, 2) }, 0>(&spec);
}

#[test]
fn masked_bce_decoded_scores_as_the_file() {
    let spec = Spec::new(2, 8, 5, 3)
        .variant(
            Variant::Masked {
                mask: MaskAxis::Channel,
            },
            false,
        )
        .activations([
            Activation::Tanh,
            Activation::Tanh,
            Activation::Tanh,
            Activation::Sigmoid,
        ])
        .metric(ErrorMetric::Bce, Aggregate::MaxChannel);
    same_verdicts::<2, 8, 16, 5, 3, { param_count(Arch::Dense, 16, 5, 3) }, 0>(&spec);
}

#[test]
fn vae_decoded_scores_as_the_file() {
    let mut spec = Spec::new(2, 8, 5, 3).variant(Variant::Vae, false);
    spec.header.scoring.kl_weight = 0.1;
    spec.header.scoring.ewma = 0.5;
    same_verdicts::<2, 8, 16, 5, 3, { param_count(Arch::Vae, 16, 5, 3) }, 0>(&spec);
}

#[test]
fn vqvae_decoded_scores_as_the_file() {
    let spec = Spec::new(2, 8, 5, 3).variant(Variant::VqVae { codebook: 4 }, false);
    const ARCH: Arch = Arch::VqVae { codebook: 4 };
    same_verdicts::<2, 8, 16, 5, 3, { param_count(ARCH, 16, 5, 3) }, 0>(&spec);
}

#[test]
fn hierarchical_decoded_scores_as_the_file() {
    let variant = Variant::Hierarchical {
        block: 4,
        coarse_hidden: 3,
        coarse_latent: 2,
    };
    let spec = Spec::new(2, 8, 5, 3).variant(variant, false);
    const ARCH: Arch = Arch::Hierarchical {
        block: 4,
        coarse_hidden: 3,
        coarse_latent: 2,
    };
    same_verdicts::<2, 8, 16, 5, 3, { param_count(ARCH, 16, 5, 3) }, { scratch_len(ARCH, 16) }>(
        &spec,
    );
}

type Small = Detector<3, 8, 24, 6, 2, { param_count(Arch::Dense, 24, 6, 2) }>;

/// After a refused load the detector has no model: it reports that instead of scoring.
fn assert_unloaded(d: &mut Small) {
    let v = d.push(&[0.0; 3]);
    assert!(
        matches!(v.status, Status::Fault(f) if f.kind == FaultKind::NoModel),
        "{v:?}"
    );
}

#[test]
fn a_damaged_decoded_model_is_refused() {
    let parts = Parts::of(&Spec::new(3, 8, 6, 2));
    let mut d = Small::new();
    d.load_decoded(&parts.decoded()).unwrap();

    // One flipped bit in flash.
    let mut flipped = parts.params.clone();
    flipped[17] = f32::from_bits(flipped[17].to_bits() ^ 1 << 9);
    let good = parts.decoded();
    let bad = Decoded {
        params: &flipped,
        ..good
    };
    assert_eq!(
        d.load_decoded(&bad),
        Err(LoadError::Decode(DecodeError::Checksum {
            stored: good.crc,
            computed: Decoded::checksum(&flipped),
        }))
    );
    assert_unloaded(&mut d);

    let other_layout = Decoded {
        layout: PARAM_LAYOUT + 1,
        ..good
    };
    assert_eq!(
        d.load_decoded(&other_layout),
        Err(LoadError::Decode(DecodeError::UnsupportedVersion {
            found: PARAM_LAYOUT + 1
        }))
    );
    assert_unloaded(&mut d);

    let short = Decoded {
        channels: &parts.channels[..2],
        ..good
    };
    assert_eq!(
        d.load_decoded(&short),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "channel list",
            expected: 3,
            found: 2
        }))
    );
    let truncated = Decoded {
        params: &parts.params[1..],
        crc: Decoded::checksum(&parts.params[1..]),
        ..good
    };
    assert!(matches!(
        d.load_decoded(&truncated),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "parameter list",
            ..
        }))
    ));
    assert_unloaded(&mut d);
}

#[test]
fn other_sizes_are_refused_by_name() {
    let parts = Parts::of(&Spec::new(3, 8, 7, 2));
    let mut d = Small::new();
    assert_eq!(
        d.load_decoded(&parts.decoded()),
        Err(LoadError::Shape(ShapeError::Mismatch {
            what: "hidden",
            expected: 6,
            found: 7
        }))
    );
    assert_unloaded(&mut d);
}

/// The model of the golden source below: a VAE with every kind of literal the writer makes
/// (enum variants with and without fields, infinite ranges, a POT threshold).
fn golden_spec() -> Spec {
    let mut spec = Spec::new(2, 4, 3, 2)
        .variant(Variant::Vae, false)
        .activations([
            Activation::LeakyRelu { slope: 0.01 },
            Activation::Linear,
            Activation::Tanh,
            Activation::Linear,
        ]);
    spec.header.name = "golden \"vae\"";
    spec.header.threshold.method = ThresholdMethod::Pot {
        risk: 1e-4,
        initial_quantile: 0.98,
    };
    spec.header.scoring.kl_weight = 0.25;
    spec.channels[1].min = f32::NEG_INFINITY;
    spec.channels[1].max = f32::INFINITY;
    spec
}

mod golden_source {
    // Written by `ModelView::to_rust` (test `to_rust_writes_the_golden_source`), compiled here.
    include!("data/decoded_vae.rs");
}

const GOLDEN: &str = "tests/data/decoded_vae.rs";

/// The writer's output is the committed file (rewrite it with `SENSORAE_BLESS=1`), and that
/// file, compiled, scores exactly as the model file.
#[test]
fn to_rust_writes_the_golden_source() {
    let spec = golden_spec();
    let bytes = spec.bytes();
    let view = ModelView::from_bytes(&bytes).unwrap();
    let text = view.to_rust("MODEL", HOST);
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("SENSORAE_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);

    let compiled = &golden_source::MODEL;
    assert_eq!(compiled.config, Config::from(view.header()));
    assert_eq!(compiled.channels, &spec.channels[..]);
    assert_eq!(compiled.params, &view.layout_params(HOST)[..]);
    const P: usize = param_count(Arch::Vae, 8, 3, 2);
    let mut from_file = Detector::<2, 4, 8, 3, 2, P>::from_bytes(&bytes).unwrap();
    let mut decoded = Detector::<2, 4, 8, 3, 2, P>::new();
    decoded.load_decoded(compiled).unwrap();
    for t in 0..100 {
        let s = stream(t, 2);
        assert_eq!(from_file.push(&s), decoded.push(&s), "t={t}");
    }
}

/// A build script on a PC lays the parameters out for the Cortex-M, whose kernel takes 16 rows
/// at a time (32 on hosts): entry (row, col) of a 32 x 128 first layer sits in block
/// `row / 16`, after that block's earlier columns, at `row % 16`.
#[test]
fn parameters_are_laid_out_for_the_target() {
    let spec = Spec::new(8, 16, 32, 8);
    let bytes = spec.bytes();
    let view = ModelView::from_bytes(&bytes).unwrap();
    let (rows, cols) = (32, 128);
    for (arch, wide) in [("arm", 16), ("x86_64", 32), ("aarch64", 32)] {
        let params = view.layout_params(arch);
        assert_eq!(params.len(), spec.params.len());
        for col in 0..cols {
            for row in 0..rows {
                let file = spec.params[col * rows + row];
                let at = row / wide * wide * cols + col * wide + row % wide;
                assert_eq!(
                    params[at].to_bits(),
                    file.to_bits(),
                    "{arch} ({row}, {col})"
                );
            }
        }
        // Biases and the other layers follow, each in place.
        assert_eq!(params[rows * cols], spec.params[rows * cols]);
    }
    assert_ne!(param_layout_for("arm"), param_layout_for("x86_64"));
    assert_eq!(param_layout_for(HOST), PARAM_LAYOUT);
    // Laid out for another target, a model is refused by a detector here.
    let other = if HOST == "arm" { "x86_64" } else { "arm" };
    let params = view.layout_params(other);
    let decoded = Decoded {
        config: Config::from(view.header()),
        channels: &spec.channels,
        params: &params,
        crc: Decoded::checksum(&params),
        layout: param_layout_for(other),
    };
    let mut d = Detector::<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>::new();
    assert_eq!(
        d.load_decoded(&decoded),
        Err(LoadError::Decode(DecodeError::UnsupportedVersion {
            found: param_layout_for(other)
        }))
    );
}
