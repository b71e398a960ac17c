//! Reliability of the core on the trained reference model (`firmware/model.snae`: SKAB
//! `valve1/0`, first 400 rows, C=8 W=16 H=32 Z=8, drift tracking on): every corruption of the
//! file is refused with a typed error, and sensor faults injected into the real SKAB stream are
//! reported with their channel, never scored, and leave the clean parts' scores alone.
//! `docs/reliability.md` has the table of cases and the commands.

use sensorae::{
    Channel, DecodeError, DynDetector, FaultKind, Header, ModelView, Status, Verdict, encode_to_vec,
};

/// The trained reference model.
const TRAINED: &[u8] = include_bytes!("../firmware/model.snae");
const SKAB_VALVE1_0: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../shared/data/skab/valve1/0.csv"
);

/// The trained model with its header and channels edited (weights unchanged).
fn edited(edit: impl FnOnce(&mut Header<'_>, &mut Vec<Channel<'_>>)) -> Vec<u8> {
    let view = ModelView::from_bytes(TRAINED).unwrap();
    let mut header = *view.header();
    let mut channels: Vec<Channel<'_>> = view.channels().collect();
    let params: Vec<f32> = view.weights().collect();
    edit(&mut header, &mut channels);
    encode_to_vec(&header, &channels, &params).unwrap()
}

/// Every score finite and non-negative, top channels and faults naming real channels.
fn check(v: &Verdict, channels: usize) {
    match &v.status {
        Status::Normal(s) | Status::Anomalous { score: s, .. } => {
            assert!(s.value.is_finite() && s.value >= 0.0, "{v:?}");
            assert!(s.raw.is_finite() && s.raw >= 0.0, "{v:?}");
            for t in s.top.iter().flatten() {
                assert!(usize::from(t.channel) < channels, "{v:?}");
                // Not `is_finite`: a channel error can be +inf today (see the regression test
                // `channel_errors_saturate_like_the_score`).
                assert!(t.error >= 0.0, "{v:?}");
            }
        }
        Status::Fault(f) => {
            assert!(f.channel.is_none_or(|c| usize::from(c) < channels), "{v:?}");
        }
        Status::WarmingUp { .. } => {}
    }
}

mod corruption {
    use super::*;
    use sensorae::{Arch, Detector, LoadError, param_count};

    type Reference = Detector<8, 16, 128, 32, 8, { param_count(Arch::Dense, 128, 32, 8) }>;

    /// What a flip of bit `bit` must be refused as, by where it lies in the frame.
    fn expect_flip(bit: usize, err: DecodeError) {
        let byte = bit / 8;
        let ok = match byte {
            0..=3 => err == DecodeError::BadMagic,
            4..=5 => matches!(err, DecodeError::UnsupportedVersion { .. }),
            // The payload length: a larger one reads as truncated, a smaller one as trailing.
            6..=9 => matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::TrailingBytes { .. }
            ),
            _ => matches!(err, DecodeError::Checksum { .. }),
        };
        assert!(ok, "bit {bit} (byte {byte}): {err:?}");
    }

    fn flip(bytes: &mut [u8], bit: usize) {
        bytes[bit / 8] ^= 1 << (bit % 8);
    }

    /// Bits checked by default: all of the prefix, header and channels (the first 640 bytes)
    /// and of the last 64 bytes (the end of the weights and the CRC), and every 97th bit of the
    /// weights between. The whole set is `every_bit_flip_of_the_trained_model` (ignored).
    fn sampled_bits(len: usize) -> impl Iterator<Item = usize> {
        let bits = len * 8;
        (0..bits).filter(move |&b| b < 640 * 8 || b >= bits - 64 * 8 || b % 97 == 0)
    }

    #[test]
    fn sampled_bit_flips_of_the_trained_model_are_rejected() {
        let mut bytes = TRAINED.to_vec();
        let mut fixed = Box::new(Reference::new());
        let mut cases = 0;
        for (i, bit) in sampled_bits(bytes.len()).enumerate() {
            flip(&mut bytes, bit);
            let err = ModelView::from_bytes(&bytes).unwrap_err();
            expect_flip(bit, err);
            // The loaders report the same error; a failed load leaves no model behind.
            if i % 16 == 0 {
                assert_eq!(
                    DynDetector::from_bytes(&bytes).unwrap_err(),
                    LoadError::Decode(err)
                );
                assert_eq!(fixed.load(&bytes), Err(LoadError::Decode(err)));
                let v = fixed.push(&[0.0; 8]);
                assert_eq!(v.fault().map(|f| f.kind), Some(FaultKind::NoModel));
            }
            flip(&mut bytes, bit);
            cases += 1;
        }
        assert_eq!(bytes, TRAINED);
        assert!(cases > 8_000, "{cases} cases");
        assert!(fixed.load(TRAINED).is_ok());
    }

    /// All 287,464 single-bit flips (about 10 GB of CRC): release only.
    /// `cargo test --release --all-features --test tests -- --ignored every_bit_flip_of_the`
    #[test]
    #[ignore = "all 287,464 flips: run in release (scripts/fuzz.sh does)"]
    fn every_bit_flip_of_the_trained_model() {
        let mut bytes = TRAINED.to_vec();
        let start = std::time::Instant::now();
        for bit in 0..bytes.len() * 8 {
            flip(&mut bytes, bit);
            expect_flip(bit, ModelView::from_bytes(&bytes).unwrap_err());
            flip(&mut bytes, bit);
        }
        assert_eq!(bytes, TRAINED);
        eprintln!(
            "{} flips rejected in {:.1?}",
            TRAINED.len() * 8,
            start.elapsed()
        );
    }

    #[test]
    fn every_truncation_and_extension_of_the_trained_model_is_rejected() {
        let total = TRAINED.len();
        for len in 0..total {
            let err = ModelView::from_bytes(&TRAINED[..len]).unwrap_err();
            // Shorter than the fixed parts: they are what is expected; longer: the whole file.
            let expected = if len < 10 { 14 } else { total };
            assert_eq!(
                err,
                DecodeError::Truncated {
                    expected,
                    found: len
                },
                "len {len}"
            );
        }
        let mut longer = TRAINED.to_vec();
        for extra in 1..=64 {
            longer.push(extra as u8);
            assert_eq!(
                ModelView::from_bytes(&longer).unwrap_err(),
                DecodeError::TrailingBytes { count: extra }
            );
        }
    }

    /// A file whose checksum was recomputed after the damage (a buggy writer, not a bad disk):
    /// the body decoder must refuse it or yield a model that scores finite values.
    #[test]
    fn body_flips_behind_a_valid_checksum_are_refused_or_score_finite() {
        let payload = &TRAINED[10..TRAINED.len() - 4];
        let stream = super::faults::skab_rows();
        let (mut refused, mut loaded) = (0, 0);
        let mut body = payload.to_vec();
        // Header and channels (the first 600 payload bytes) entirely, weights every 31st bit.
        let bits = (0..payload.len() * 8).filter(|&b| b < 600 * 8 || b % 31 == 0);
        for bit in bits {
            flip(&mut body, bit);
            let mut file = b"SNAE\x01\x00".to_vec();
            file.extend_from_slice(&(body.len() as u32).to_le_bytes());
            file.extend_from_slice(&body);
            let crc = crc_iso_hdlc(&file);
            file.extend_from_slice(&crc.to_le_bytes());
            match DynDetector::from_bytes(&file) {
                Err(LoadError::Decode(e)) => {
                    assert!(!e.to_string().contains('\n'));
                    refused += 1;
                }
                Err(e) => panic!("bit {bit}: {e:?}"),
                Ok(mut d) => {
                    loaded += 1;
                    let c = usize::from(d.config().window.channels);
                    let w = usize::from(d.config().window.length);
                    // One scored window (the SKAB rows are 8 wide; a flipped channel count
                    // gets wrong-length faults, which must be reported, not scored).
                    for row in stream.iter().take(w.min(64) + 1) {
                        check(&d.push(row), c);
                    }
                }
            }
            flip(&mut body, bit);
        }
        assert!(refused > 500 && loaded > 5000, "{refused} {loaded}");
    }

    /// Bitwise CRC-32 (ISO-HDLC), independent of the core's.
    fn crc_iso_hdlc(data: &[u8]) -> u32 {
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
}

mod faults {
    use super::*;
    use sensorae::Adaptation;

    const C: usize = 8;
    const W: usize = 16;

    /// The SKAB rows of `valve1/0.csv`, in the model's channel order.
    pub fn skab_rows() -> Vec<Vec<f32>> {
        let text = std::fs::read_to_string(SKAB_VALVE1_0).expect("SKAB data in ../shared");
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split(';').collect();
        let view = ModelView::from_bytes(TRAINED).unwrap();
        let cols: Vec<usize> = view
            .channels()
            .map(|ch| header.iter().position(|h| *h == ch.name).unwrap())
            .collect();
        lines
            .map(|l| {
                let cells: Vec<&str> = l.split(';').collect();
                cols.iter().map(|&c| cells[c].parse().unwrap()).collect()
            })
            .collect()
    }

    /// One pushed input.
    #[derive(Clone, Debug)]
    enum Input {
        Sample(Vec<f32>),
        Missing,
    }

    fn run(model: &[u8], inputs: &[Input]) -> Vec<Verdict> {
        let mut d = DynDetector::from_bytes(model).unwrap();
        inputs
            .iter()
            .enumerate()
            .map(|(t, input)| {
                let v = match input {
                    Input::Sample(s) => d.push(s),
                    Input::Missing => d.push_missing(),
                };
                assert_eq!(v.index, t as u64);
                check(&v, C);
                v
            })
            .collect()
    }

    fn clean() -> Vec<Input> {
        skab_rows().into_iter().map(Input::Sample).collect()
    }

    /// The trained model with drift tracking off, so that a clean run is the exact reference
    /// for windows after a fault (with it on, the baselines do not move during a fault: the
    /// reference is then the stream with the faulty rows deleted; see `drift_tracking_...`).
    fn no_drift() -> Vec<u8> {
        edited(|h, _| h.adaptation = Adaptation::OFF)
    }

    /// Physical ranges: each channel's span in the whole file, widened by that span on both
    /// sides (wider than the data, as a sensor's rated range is).
    fn with_ranges() -> Vec<u8> {
        let rows = skab_rows();
        edited(|h, chs| {
            h.adaptation = Adaptation::OFF;
            for (c, ch) in chs.iter_mut().enumerate() {
                let lo = rows.iter().map(|r| r[c]).fold(f32::INFINITY, f32::min);
                let hi = rows.iter().map(|r| r[c]).fold(f32::NEG_INFINITY, f32::max);
                ch.min = lo - (hi - lo);
                ch.max = hi + (hi - lo);
            }
        })
    }

    /// How the alarm must behave after a reset: the hysteresis replayed with fresh counts over
    /// the reference's exceed flags, from the first window after the fault, starting from the
    /// alarm state before the fault (a fault does not clear an alarm).
    fn replay_alarm(exceeds: &[bool], was_on: bool, on_after: u16, off_after: u16) -> Vec<bool> {
        let (mut alarm, mut above, mut below) = (was_on, 0u16, 0u16);
        exceeds
            .iter()
            .map(|&e| {
                if e {
                    above += 1;
                    below = 0;
                } else {
                    below += 1;
                    above = 0;
                }
                if !alarm && above >= on_after {
                    alarm = true;
                } else if alarm && below >= off_after {
                    alarm = false;
                }
                alarm
            })
            .collect()
    }

    /// A fault over rows `rows` must: be reported on exactly those rows with `channel` and
    /// `kind`; leave earlier rows as in the reference; give the first score again exactly W
    /// valid samples after it; from there give the reference's raw scores and top channels
    /// bit for bit, and the alarm of the hysteresis restarted there from the alarm before it.
    fn assert_fault_contained(
        reference: &[Verdict],
        faulted: &[Verdict],
        rows: std::ops::Range<usize>,
        channel: Option<u16>,
        kind: FaultKind,
        on_after: u16,
        off_after: u16,
    ) {
        for t in 0..rows.start {
            assert_eq!(faulted[t], reference[t], "row {t} before the fault");
        }
        for t in rows.clone() {
            let f = faulted[t]
                .fault()
                .unwrap_or_else(|| panic!("row {t}: no fault"));
            assert_eq!((f.channel, f.kind), (channel, kind), "row {t}");
            assert!(f.reset, "row {t}: hold_max 0 resets");
        }
        let resume = rows.end + W - 1;
        for v in &faulted[rows.end..resume.min(faulted.len())] {
            assert!(matches!(v.status, Status::WarmingUp { .. }), "{v:?}");
        }
        let mut exceeds = vec![];
        for t in resume..faulted.len() {
            let (f, r) = (faulted[t].score(), reference[t].score());
            let (f, r) = (f.unwrap(), r.unwrap_or_else(|| panic!("row {t}")));
            assert_eq!(
                (f.raw.to_bits(), f.top, f.exceeds, f.imputed),
                (r.raw.to_bits(), r.top, r.exceeds, r.imputed),
                "row {t}"
            );
            exceeds.push(r.exceeds);
        }
        let alarms: Vec<bool> = faulted[resume..].iter().map(Verdict::is_alarm).collect();
        let was_on = rows.start > 0 && reference[rows.start - 1].is_alarm();
        assert_eq!(alarms, replay_alarm(&exceeds, was_on, on_after, off_after));
    }

    /// Injects `value` on `channel` over `rows` of the stream.
    fn inject(rows: std::ops::Range<usize>, channel: Option<usize>, value: f32) -> Vec<Input> {
        let mut inputs = clean();
        for input in &mut inputs[rows] {
            if let Input::Sample(s) = input {
                match channel {
                    Some(c) => s[c] = value,
                    None => s.fill(value),
                }
            }
        }
        inputs
    }

    #[test]
    fn each_fault_class_is_reported_and_contained() {
        let plain = no_drift();
        let ranged = with_ranges();
        let reference = run(&plain, &clean());
        let ranged_reference = run(&ranged, &clean());
        assert_eq!(
            ranged_reference, reference,
            "the ranges hold the clean data"
        );
        let view = ModelView::from_bytes(&plain).unwrap();
        let alarm = view.header().alarm;
        // (rows, channel, value, kind, ranged model)
        type Case = (std::ops::Range<usize>, Option<usize>, f32, FaultKind, bool);
        let cases: &[Case] = &[
            (600..650, None, f32::NAN, FaultKind::NotANumber, false),
            (500..501, Some(3), f32::NAN, FaultKind::NotANumber, false),
            (700..720, Some(7), f32::INFINITY, FaultKind::Infinite, false),
            (
                450..452,
                Some(0),
                f32::NEG_INFINITY,
                FaultKind::Infinite,
                false,
            ),
            // Accelerometer1's scale is 2.9e-4: 1e38 overflows when normalised.
            (800..805, Some(0), 1e38, FaultKind::Overflow, false),
            (820..821, Some(1), -f32::MAX, FaultKind::Overflow, false),
            (900..930, Some(6), 1e38, FaultKind::AboveRange, true),
            (900..901, Some(2), -1e38, FaultKind::BelowRange, true),
            (1000..1010, Some(4), 200.0, FaultKind::AboveRange, true),
        ];
        for (rows, channel, value, kind, ranged_model) in cases.iter().cloned() {
            let (model, reference) = if ranged_model {
                (&ranged, &ranged_reference)
            } else {
                (&plain, &reference)
            };
            let faulted = run(model, &inject(rows.clone(), channel, value));
            let expected_channel = Some(channel.unwrap_or(0) as u16);
            assert_fault_contained(
                reference,
                &faulted,
                rows.clone(),
                expected_channel,
                kind,
                alarm.on_after,
                alarm.off_after,
            );
            let f = faulted[rows.start].fault().unwrap();
            let expected_count = if channel.is_some() { 1 } else { C as u16 };
            assert_eq!(f.faulty_channels, expected_count, "{rows:?}");
        }
    }

    #[test]
    fn dropouts_and_long_gaps_are_missing_samples() {
        let plain = no_drift();
        let reference = run(&plain, &clean());
        let alarm = ModelView::from_bytes(&plain).unwrap().header().alarm;
        for rows in [430..431, 600..1100] {
            let mut inputs = clean();
            inputs[rows.clone()].fill(Input::Missing);
            let faulted = run(&plain, &inputs);
            assert_fault_contained(
                &reference,
                &faulted,
                rows.clone(),
                None,
                FaultKind::Missing,
                alarm.on_after,
                alarm.off_after,
            );
            assert_eq!(faulted[rows.start].fault().unwrap().faulty_channels, 8);
        }
    }

    /// With drift tracking on, the baselines stand still during a fault (they must not learn
    /// from invalid data), so afterwards they equal those of the stream with the faulty rows
    /// deleted, and so do the raw scores: a fault costs the stream nothing but its own rows.
    /// Exact when the baselines are not frozen in alarm; see the next test for when they are.
    #[test]
    fn drift_tracking_skips_faulty_rows() {
        let model = edited(|h, _| h.adaptation.in_alarm = sensorae::AlarmHold::Follow);
        let rows = 600..650;
        let (faulted, reference) = fault_and_deleted(&model, &clean(), rows.clone());
        for t in rows.end + W - 1..faulted.len() {
            let f = faulted[t].score().unwrap();
            let r = reference[t - rows.len()].score().unwrap();
            assert_eq!(
                (f.raw.to_bits(), f.top),
                (r.raw.to_bits(), r.top),
                "row {t}"
            );
        }
        // The clean run's baselines moved during those rows: its raw scores differ.
        let clean_run = run(&model, &clean());
        let differ = (rows.end + W..faulted.len())
            .filter(|&t| faulted[t].score().unwrap().raw != clean_run[t].score().unwrap().raw)
            .count();
        assert!(differ > 0);
    }

    /// NaN on Thermocouple over `rows` of `base`; the reference is `base` with those rows
    /// deleted.
    fn fault_and_deleted(
        model: &[u8],
        base: &[Input],
        rows: std::ops::Range<usize>,
    ) -> (Vec<Verdict>, Vec<Verdict>) {
        let mut inputs = base.to_vec();
        for input in &mut inputs[rows.clone()] {
            if let Input::Sample(s) = input {
                s[5] = f32::NAN;
            }
        }
        let deleted: Vec<Input> = base
            .iter()
            .enumerate()
            .filter(|(t, _)| !rows.contains(t))
            .map(|(_, i)| i.clone())
            .collect();
        (run(model, &inputs), run(model, &deleted))
    }

    /// Finding: with baselines held in alarm (the trained model's setting), a fault during an alarm
    /// resets the alarm, so the baselines track the anomalous data while the window refills:
    /// the fault lets drift tracking absorb part of the anomaly. Here Pressure is stuck 5
    /// standard deviations high over rows 420..570 (an alarm throughout, see
    /// `stuck_channels_are_scored_not_faulted`) and Thermocouple reads NaN over 460..470.
    /// Fails until the freeze survives the reset (proposed change in `docs/reliability.md`).
    #[test]
    fn a_fault_in_alarm_keeps_drift_tracking_frozen() {
        let view = ModelView::from_bytes(TRAINED).unwrap();
        let p = view.channels().nth(3).unwrap();
        let base = inject(420..570, Some(3), p.offset + 5.0 * p.scale);
        let rows = 460..470;
        let (faulted, reference) = fault_and_deleted(TRAINED, &base, rows.clone());
        assert!(
            reference[rows.start - 1].is_alarm(),
            "the fault starts in alarm"
        );
        let differ: Vec<usize> = (rows.end + W - 1..570)
            .filter(|&t| {
                let f = faulted[t].score().unwrap();
                f.raw.to_bits() != reference[t - rows.len()].score().unwrap().raw.to_bits()
            })
            .collect();
        let alarms = |vs: &[Verdict]| vs.iter().filter(|v| v.is_alarm()).count();
        assert!(
            differ.is_empty(),
            "{} rows differ ({:?}); alarms over 485..570: {} with the fault, {} without",
            differ.len(),
            differ.first()..differ.last(),
            alarms(&faulted[485..570]),
            alarms(&reference[485 - rows.len()..570 - rows.len()]),
        );
    }

    /// Faults up to `hold_max` samples long are bridged: no reset, the last valid value held,
    /// the windows holding it marked imputed; with EWMA off, scores after those windows equal
    /// the clean run's.
    #[test]
    fn short_faults_are_bridged_and_marked_imputed() {
        let model = edited(|h, _| {
            h.adaptation = Adaptation::OFF;
            h.faults.hold_max = 3;
        });
        let reference = run(&model, &clean());
        let rows = 700..703;
        let faulted = run(&model, &inject(rows.clone(), Some(2), f32::NAN));
        for t in rows.clone() {
            let f = faulted[t].fault().unwrap();
            assert_eq!(
                (f.channel, f.kind, f.reset),
                (Some(2), FaultKind::NotANumber, false)
            );
        }
        for v in &faulted[rows.end..rows.end + W - 1] {
            assert!(v.score().unwrap().imputed, "{v:?}");
        }
        for t in rows.end + W - 1..faulted.len() {
            let (f, r) = (faulted[t].score().unwrap(), reference[t].score().unwrap());
            assert!(!f.imputed);
            assert_eq!(f.raw.to_bits(), r.raw.to_bits(), "row {t}");
        }
        // One more faulty sample than hold_max resets the window.
        let faulted = run(&model, &inject(700..704, Some(2), f32::NAN));
        assert!(faulted[703].fault().unwrap().reset);
    }

    /// Valid but extreme values (no physical ranges, so not faults): the reconstruction error
    /// overflows f32 and the score saturates at `f32::MAX`, finite, and alarms; with EWMA
    /// smoothing too.
    #[test]
    fn extreme_valid_values_saturate_the_score() {
        for ewma in [1.0, 0.3, 0.9] {
            let model = edited(|h, _| {
                h.adaptation = Adaptation::OFF;
                h.scoring.ewma = ewma;
            });
            let mut inputs = inject(600..640, Some(6), 1e38);
            // Voltage's scale is 10.5: 1e38 normalises to 9.5e36, a valid value.
            if let Input::Sample(s) = &mut inputs[640] {
                s[6] = f32::MAX;
            }
            let verdicts = run(&model, &inputs);
            for v in &verdicts[600..641] {
                let s = v.score().unwrap_or_else(|| panic!("{v:?}"));
                assert!(s.exceeds, "{v:?}");
            }
            assert!(verdicts[641].is_alarm());
        }
    }

    /// A stuck sensor repeats a valid value: not a fault by definition (only NaN, infinite,
    /// out-of-range or overflowing values are). On normal rows 420..570 of valve1/0: stuck at
    /// its last value, a channel is invisible to this model (the reconstruction of a flat
    /// channel is as good as of a live one, scores stay at the clean level); stuck 5 standard
    /// deviations off, every channel raises the score above the threshold and alarms for the
    /// whole stretch (the jump alarms before drift tracking can absorb it, and the baselines
    /// freeze in alarm).
    #[test]
    fn stuck_channels_are_scored_not_faulted() {
        let view = ModelView::from_bytes(TRAINED).unwrap();
        let channels: Vec<Channel<'_>> = view.channels().collect();
        let threshold = view.header().threshold.value;
        let rows = 420..570;
        let scored = rows.start + W..rows.end;
        let reference = run(TRAINED, &clean());
        let mean = |vs: &[Verdict]| {
            vs.iter().map(|v| v.score().unwrap().value).sum::<f32>() / vs.len() as f32
        };
        let clean_mean = mean(&reference[scored.clone()]);
        assert!(reference[scored.clone()].iter().all(|v| !v.is_alarm()));
        let rows_data = skab_rows();
        for (c, ch) in channels.iter().enumerate() {
            let last = rows_data[rows.start - 1][c];
            let flat = run(TRAINED, &inject(rows.clone(), Some(c), last));
            assert!(flat.iter().all(|v| v.fault().is_none()), "channel {c}");
            let m = mean(&flat[scored.clone()]);
            assert!(
                (m - clean_mean).abs() < 0.2 * clean_mean,
                "channel {c}: {m}"
            );
            assert!(
                flat[scored.clone()].iter().all(|v| !v.is_alarm()),
                "channel {c}"
            );

            let off = run(
                TRAINED,
                &inject(rows.clone(), Some(c), ch.offset + 5.0 * ch.scale),
            );
            assert!(off.iter().all(|v| v.fault().is_none()), "channel {c}");
            assert!(mean(&off[scored.clone()]) > threshold, "channel {c}");
            assert!(
                off[scored.clone()].iter().all(Verdict::is_alarm),
                "channel {c}"
            );
        }
    }
}

/// Fuzz and test findings, kept as tests: each fails until its fix is in (then drop the
/// `ignore`). Minimal inputs and proposed fixes are in `docs/reliability.md`.
mod findings {
    use super::*;
    use crate::common::Spec;
    use sensorae::{Activation, Aggregate, ErrorMetric};

    /// Found by the `model_payload` fuzz target: a reconstruction that turns NaN (here
    /// `1e38 * 10 + -1e38 * 10 = inf - inf` in a linear encoder) makes every channel error NaN;
    /// `MaxChannel` folds them with `f32::max`, which skips NaN, so the window scores 0.0: a
    /// broken window reads as perfectly normal and can never alarm. (`Mean` gets `f32::MAX`.)
    #[test]
    fn nan_reconstruction_scores_max_not_zero() {
        let mut spec = Spec::new(1, 2, 1, 1)
            .activations([Activation::Linear; 4])
            .identity_channels()
            .metric(ErrorMetric::Mse, Aggregate::MaxChannel)
            .zeroed();
        spec.params[0] = 1e38;
        spec.params[1] = -1e38;
        let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
        d.push(&[10.0]);
        let v = d.push(&[10.0]);
        let s = v.score().unwrap();
        assert_eq!(s.value, f32::MAX, "{v:?}");
        assert!(s.exceeds);
        assert!(d.channel_errors().iter().all(|e| !e.is_nan()), "{v:?}");
    }

    /// A valid value so large that its squared error overflows (Voltage = 1e38, no ranges)
    /// saturates the window score at `f32::MAX`, but the channel's mean error in `Score::top`
    /// and `channel_errors()` is `+inf`: the score says finite, its explanation does not.
    #[test]
    fn channel_errors_saturate_like_the_score() {
        let model = edited(|h, _| h.adaptation = sensorae::Adaptation::OFF);
        let mut d = DynDetector::from_bytes(&model).unwrap();
        let rows = faults::skab_rows();
        for row in &rows[..15] {
            d.push(row);
        }
        let mut extreme = rows[15].clone();
        extreme[6] = 1e38;
        let v = d.push(&extreme);
        let s = v.score().unwrap();
        assert_eq!(s.value, f32::MAX);
        assert!(s.top.iter().flatten().all(|t| t.error.is_finite()), "{v:?}");
        assert!(d.channel_errors().iter().all(|e| e.is_finite()));
    }
}
