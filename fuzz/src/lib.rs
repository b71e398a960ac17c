//! What the fuzz targets share: models to push into, a sample decoder that mostly yields
//! in-range values (so windows fill and get scored) with specials mixed in, and the checks every
//! verdict must pass.

use std::sync::OnceLock;

use sensorae::{
    Activation, Aggregate, Arch, Channel, Detector, DynDetector, ErrorMetric, FaultKind, ModelView,
    Scaling, Status, Variant, Verdict, encode_to_vec, param_count, testing,
};

/// The detector type of the reference model (`firmware/model.snae`): C=8, W=16, H=32, Z=8.
pub type Reference = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;
/// The detector type of [`models`]`()[1]`: C=3, W=4, H=5, Z=2.
pub type Small = Detector<3, 4, 12, 5, 2, { param_count(Arch::Dense, 12, 5, 2) }>;

/// A trained model (SKAB valve1/0, drift tracking on, max-channel scoring).
pub const TRAINED: &[u8] = include_bytes!("../../firmware/model.snae");

/// Prefix, payload and CRC-32: a model file around a payload.
#[must_use]
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.extend_from_slice(&sensorae::MAGIC);
    out.extend_from_slice(&sensorae::FORMAT_VERSION.to_le_bytes());
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(payload);
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The models the `push` target drives, covering every scoring, fault and drift path:
/// 0 the trained reference; 1 dense with ranges, bridging, EWMA, hop 2 and drift frozen in
/// alarm; 2 a VAE with its KL term, no ranges and a tiny scale (normalising can overflow);
/// 3 a tied model with BCE scoring.
pub fn models() -> &'static [Vec<u8>] {
    static MODELS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    MODELS.get_or_init(|| {
        let build = |mut h: sensorae::Header<'static>,
                     edit: &dyn Fn(&mut Vec<Channel<'static>>)| {
            let mut channels: Vec<_> = (0..usize::from(h.window.channels))
                .map(testing::channel)
                .collect();
            edit(&mut channels);
            h.name = "fuzz";
            let params: Vec<f32> = (0..h.param_count()).map(testing::param).collect();
            encode_to_vec(&h, &channels, &params).expect("valid fuzz model")
        };
        let mut dense = testing::header(3, 4, 5, 2);
        dense.window.hop = 2;
        dense.faults.hold_max = 2;
        dense.scoring.ewma = 0.3;
        dense.scoring.aggregate = Aggregate::MaxChannel;
        dense.threshold.value = 0.5;
        dense.alarm.on_after = 1;
        dense.alarm.off_after = 1;
        dense.adaptation = sensorae::Adaptation {
            rate: 0.05,
            in_alarm: sensorae::AlarmHold::Explaining,
        };
        let mut vae = testing::header(2, 3, 4, 2);
        vae.variant = Variant::Vae;
        vae.scoring.kl_weight = 0.5;
        vae.scoring.metric = ErrorMetric::Mae;
        vae.scoring.ewma = 0.7;
        vae.layers.output = Activation::Sigmoid;
        let mut tied = testing::header(2, 5, 3, 2);
        tied.tied = true;
        tied.scaling = Scaling::MinMax;
        tied.scoring.metric = ErrorMetric::Bce;
        tied.layers.encoder_hidden = Activation::LeakyRelu { slope: 0.01 };
        tied.layers.output = Activation::Sigmoid;
        tied.faults.hold_max = 1;
        vec![
            TRAINED.to_vec(),
            build(dense, &|_| {}),
            build(vae, &|chs| {
                for ch in chs.iter_mut() {
                    ch.min = f32::NEG_INFINITY;
                    ch.max = f32::INFINITY;
                    ch.scale = 1e-30;
                }
            }),
            build(tied, &|chs| {
                for ch in chs.iter_mut() {
                    ch.min = f32::MIN;
                    ch.max = f32::MAX;
                }
            }),
        ]
    })
}

/// A model loaded once into each detector that fits it (loading checks 36 KB of CRC; the fuzz
/// targets clone these instead).
pub struct Loaded {
    /// The model file, checked.
    pub view: ModelView<'static>,
    /// Heap detector.
    pub dynamic: DynDetector,
    /// The fixed reference-size detector, if the model has its sizes.
    pub reference: Option<Box<Reference>>,
    /// The fixed small detector, if the model has its sizes.
    pub small: Option<Box<Small>>,
}

/// [`models`], loaded.
pub fn loaded() -> &'static [Loaded] {
    static LOADED: OnceLock<Vec<Loaded>> = OnceLock::new();
    LOADED.get_or_init(|| {
        models()
            .iter()
            .map(|bytes| {
                let mut reference = Box::new(Reference::new());
                let mut small = Box::new(Small::new());
                Loaded {
                    view: ModelView::from_bytes(bytes).expect("valid fuzz model"),
                    dynamic: DynDetector::from_bytes(bytes).expect("valid fuzz model"),
                    reference: reference.load(bytes).is_ok().then_some(reference),
                    small: small.load(bytes).is_ok().then_some(small),
                }
            })
            .collect()
    })
}

/// Reads bytes as pushes; everything is deterministic in the bytes.
pub struct Stream<'a> {
    data: &'a [u8],
    /// Per channel `(offset, scale)`, to map bytes to typical values.
    norm: Vec<(f32, f32)>,
    last: Vec<f32>,
}

/// One operation on a detector.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Push this sample.
    Push(Vec<f32>),
    /// A whole sample missing.
    Missing,
    /// Forget the window and state.
    Reset,
    /// Change the threshold (invalid values are ignored by the detector).
    Threshold(f32),
}

impl<'a> Stream<'a> {
    /// A stream for a model's channels.
    #[must_use]
    pub fn new(data: &'a [u8], view: &ModelView<'_>) -> Self {
        let norm: Vec<_> = view.channels().map(|c| (c.offset, c.scale)).collect();
        let last = vec![0.0; norm.len()];
        Stream { data, norm, last }
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.data.split_first()?;
        self.data = rest;
        Some(b)
    }

    fn f32(&mut self) -> Option<f32> {
        let (b, rest) = self.data.split_first_chunk::<4>()?;
        self.data = rest;
        Some(f32::from_le_bytes(*b))
    }

    /// A value for channel `c`: mostly within a few standard deviations of the training mean,
    /// sometimes a special or raw bits.
    fn value(&mut self, c: usize) -> Option<f32> {
        let b = self.byte()?;
        let (offset, scale) = self.norm.get(c).copied().unwrap_or((0.0, 1.0));
        Some(match b {
            0..=199 => offset + scale * (f32::from(b) - 100.0) / 25.0,
            200 => f32::NAN,
            201 => f32::INFINITY,
            202 => f32::NEG_INFINITY,
            203 => 1e38,
            204 => -1e38,
            205 => f32::MAX,
            206 => f32::MIN,
            207 => f32::MIN_POSITIVE / 2.0,
            208 => 0.0,
            209..=239 => self.last.get(c).copied().unwrap_or(0.0),
            _ => self.f32()?,
        })
    }

    /// The next operation, `None` at the end of the bytes.
    pub fn next_op(&mut self) -> Option<(Op, usize)> {
        let tag = self.byte()?;
        let channels = self.norm.len();
        let op = match tag % 16 {
            0..=9 => {
                let sample = (0..channels)
                    .map(|c| self.value(c))
                    .collect::<Option<Vec<_>>>()?;
                self.last.clone_from(&sample);
                Op::Push(sample)
            }
            // The previous sample again, `tag / 16 + 1` times: stuck sensors, and windows that
            // fill from few bytes.
            10..=11 => return Some((Op::Push(self.last.clone()), usize::from(tag / 16) + 1)),
            12 => Op::Missing,
            13 => {
                let len = usize::from(self.byte()?) % (2 * channels + 1);
                let len = if len == channels { len + 1 } else { len };
                Op::Push(vec![1.0; len])
            }
            14 => Op::Reset,
            _ => Op::Threshold(self.f32()?),
        };
        Some((op, 1))
    }
}

/// The fault a detector must report for `sample`, by the rules of `Engine::push`: the first
/// channel that is NaN, infinite, out of its range, or overflows when normalised.
#[must_use]
pub fn expected_fault(view: &ModelView<'_>, sample: &[f32]) -> Option<(Option<u16>, FaultKind)> {
    let channels: Vec<Channel<'_>> = view.channels().collect();
    if sample.len() != channels.len() {
        return Some((None, FaultKind::WrongLength));
    }
    sample
        .iter()
        .zip(&channels)
        .enumerate()
        .find_map(|(c, (&v, ch))| {
            let kind = if v.is_nan() {
                FaultKind::NotANumber
            } else if v.is_infinite() {
                FaultKind::Infinite
            } else if v < ch.min {
                FaultKind::BelowRange
            } else if v > ch.max {
                FaultKind::AboveRange
            } else if !((v - ch.offset) * (1.0 / ch.scale)).is_finite() {
                FaultKind::Overflow
            } else {
                return None;
            };
            Some((u16::try_from(c).ok(), kind))
        })
}

/// The invariants of one verdict: the index counts pushes, scores are finite and non-negative,
/// top channels and faults name real channels.
pub fn check_verdict(v: &Verdict, channels: usize, index: u64) {
    assert_eq!(v.index, index, "index must count every push");
    match &v.status {
        Status::WarmingUp { filled, needed } => assert!(filled < needed, "{v:?}"),
        Status::Normal(s) | Status::Anomalous { score: s, .. } => {
            assert!(s.value.is_finite() && s.value >= 0.0, "score {v:?}");
            assert!(s.raw.is_finite() && s.raw >= 0.0, "raw score {v:?}");
            for t in s.top.iter().flatten() {
                assert!(usize::from(t.channel) < channels, "top channel {v:?}");
                assert!(t.error.is_finite() && t.error >= 0.0, "channel error {v:?}");
            }
        }
        Status::Fault(f) => {
            if let Some(c) = f.channel {
                assert!(usize::from(c) < channels, "fault channel {v:?}");
            }
            assert!(usize::from(f.faulty_channels) <= channels, "{v:?}");
        }
    }
}

/// Applies one operation and returns the verdict, if it pushed.
pub fn apply<S: sensorae::Storage>(d: &mut sensorae::Engine<S>, op: &Op) -> Option<Verdict> {
    match op {
        Op::Push(s) => Some(d.push(s)),
        Op::Missing => Some(d.push_missing()),
        Op::Reset => {
            d.reset();
            None
        }
        Op::Threshold(t) => {
            d.set_threshold(*t);
            None
        }
    }
}

/// Pushes `W + 2` samples of a smooth signal, a NaN sample and a gap into a freshly loaded
/// detector and checks every verdict.
pub fn smoke(d: &mut DynDetector) {
    let channels = usize::from(d.config().window.channels);
    let pushes = u64::from(d.config().window.length) + 2;
    for t in 0..pushes {
        let sample: Vec<f32> = (0..channels)
            .map(|c| ((t as f32) * 0.37 + c as f32).sin())
            .collect();
        check_verdict(&d.push(&sample), channels, t);
    }
    let v = d.push(&vec![f32::NAN; channels]);
    check_verdict(&v, channels, pushes);
    assert_eq!(v.fault().map(|f| f.kind), Some(FaultKind::NotANumber));
    let v = d.push_missing();
    check_verdict(&v, channels, pushes + 1);
    assert_eq!(v.fault().map(|f| f.kind), Some(FaultKind::Missing));
}
