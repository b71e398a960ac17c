//! Sensor faults: reported with the channel, never scored, never poisoning later scores.

use sensorae::{DynDetector, FaultKind, Status};

use crate::common::{Spec, signal};

fn model(hold_max: u16) -> Vec<u8> {
    let mut spec = Spec::new(3, 5, 4, 2);
    spec.header.faults.hold_max = hold_max;
    spec.header.threshold.value = 1e9;
    spec.bytes()
}

/// Scores of a clean run, to compare against runs with faults injected.
fn clean_scores(bytes: &[u8], len: usize) -> Vec<Option<f32>> {
    let mut d = DynDetector::from_bytes(bytes).unwrap();
    (0..len)
        .map(|t| d.push(&signal(t, 3)).score().map(|s| s.value))
        .collect()
}

#[test]
fn each_fault_kind_is_reported_with_its_channel() {
    let bytes = model(0);
    let cases = [
        (f32::NAN, FaultKind::NotANumber),
        (f32::INFINITY, FaultKind::Infinite),
        (f32::NEG_INFINITY, FaultKind::Infinite),
        (-11.0, FaultKind::BelowRange),
        (11.0, FaultKind::AboveRange),
        (1e38, FaultKind::AboveRange),
    ];
    for (value, kind) in cases {
        let mut d = DynDetector::from_bytes(&bytes).unwrap();
        for t in 0..6 {
            d.push(&signal(t, 3));
        }
        let mut s = signal(6, 3);
        s[2] = value;
        let v = d.push(&s);
        let f = v
            .fault()
            .copied()
            .unwrap_or_else(|| panic!("{value} not a fault"));
        assert_eq!(
            (f.channel, f.kind, f.faulty_channels, f.reset),
            (Some(2), kind, 1, true)
        );
    }
}

#[test]
fn overflow_after_normalisation_is_a_fault() {
    let mut spec = Spec::new(1, 2, 2, 1).identity_channels();
    spec.channels[0].scale = 1e-3;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    assert_eq!(d.push(&[3e38]).fault().unwrap().kind, FaultKind::Overflow);
}

#[test]
fn scoring_resumes_one_window_after_a_nan_storm() {
    let bytes = model(0);
    let clean = clean_scores(&bytes, 60);
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    for (t, clean_score) in clean.iter().enumerate() {
        let mut s = signal(t, 3);
        if (20..30).contains(&t) {
            s = vec![f32::NAN; 3];
        }
        let v = d.push(&s);
        match t {
            20..=29 => assert!(v.fault().is_some(), "t={t}"),
            // The window refills with W = 5 valid samples: 30..=33 warm up, 34 scores.
            30..=33 => assert!(matches!(v.status, Status::WarmingUp { .. }), "t={t}"),
            _ => {
                // Once the window holds only clean samples the score equals the clean run's.
                assert_eq!(v.score().map(|s| s.value), *clean_score, "t={t}");
            }
        }
    }
}

#[test]
fn short_faults_are_bridged_when_the_model_allows_it() {
    let bytes = model(2);
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    for t in 0..10 {
        d.push(&signal(t, 3));
    }
    let mut s = signal(10, 3);
    s[1] = f32::NAN;
    let f = *d.push(&s).fault().unwrap();
    assert!(!f.reset);
    let mut s = signal(11, 3);
    s[1] = f32::NAN;
    assert!(!d.push(&s).fault().unwrap().reset);
    // The next valid sample is scored at once, marked as holding an imputed value.
    let v = d.push(&signal(12, 3));
    assert!(v.score().unwrap().imputed);
    // Five valid samples later the held values have left the window.
    for t in 13..17 {
        d.push(&signal(t, 3));
    }
    assert!(!d.push(&signal(17, 3)).score().unwrap().imputed);
    // A third consecutive fault exceeds hold_max = 2 and resets.
    for t in 18..21 {
        let mut s = signal(t, 3);
        s[0] = f32::INFINITY;
        let f = *d.push(&s).fault().unwrap();
        assert_eq!(f.reset, t == 20, "t={t}");
    }
}

#[test]
fn missing_samples_and_wrong_lengths() {
    let bytes = model(0);
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    let f = *d.push_missing().fault().unwrap();
    assert_eq!(
        (f.channel, f.kind, f.faulty_channels),
        (None, FaultKind::Missing, 3)
    );
    let f = *d.push(&[1.0, 2.0]).fault().unwrap();
    assert_eq!(f.kind, FaultKind::WrongLength);
    let f = *d.push(&[1.0, 2.0, 3.0, 4.0]).fault().unwrap();
    assert_eq!(f.kind, FaultKind::WrongLength);
    // Indices keep counting through faults.
    assert_eq!(d.push(&signal(0, 3)).index, 3);
}

#[test]
fn faults_elsewhere_leave_clean_alarms_unchanged() {
    let mut spec = Spec::new(3, 5, 4, 2);
    spec.header.alarm.on_after = 1;
    spec.header.alarm.off_after = 1;
    spec.header.threshold.value = 0.0; // Every clean window alarms.
    let bytes = spec.bytes();
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    let mut alarms = vec![];
    for t in 0..40 {
        let mut s = signal(t, 3);
        if t == 12 {
            s[1] = 1e38;
        }
        alarms.push(d.push(&s).is_alarm());
    }
    // Clean windows before the fault and after the refill alarm exactly as without it.
    assert!(alarms[4..12].iter().all(|&a| a));
    assert!(!alarms[12..17].iter().any(|&a| a));
    assert!(alarms[17..].iter().all(|&a| a));
}

#[test]
fn an_alarm_holds_through_a_fault_until_normal_windows_clear_it() {
    let mut spec = Spec::new(3, 5, 4, 2);
    spec.header.alarm.on_after = 1;
    spec.header.alarm.off_after = 3;
    spec.header.threshold.value = 0.0; // Every window exceeds until the threshold moves.
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    for t in 0..8 {
        d.push(&signal(t, 3));
    }
    assert!(d.alarm());
    d.set_threshold(1e9); // From now on every window is normal.
    let mut s = signal(8, 3);
    s[2] = f32::NAN;
    let v = d.push(&s);
    assert!(v.fault().is_some_and(|f| f.reset), "{v:?}");
    assert!(d.alarm(), "a fault does not clear the alarm");
    // The window refills (4 warm-up rows), then 3 normal windows turn the alarm off.
    let alarms: Vec<bool> = (9..20).map(|t| d.push(&signal(t, 3)).is_alarm()).collect();
    assert!(alarms[..4].iter().all(|&a| !a), "warming up: no score");
    assert!(!d.alarm());
    assert_eq!(alarms[4..], [true, true, false, false, false, false, false]);
}

/// A channel-masked model keeps scoring through a long dropout of one channel: the channel is
/// hidden (0 in the input, as in training) and left out of the score, scores are marked
/// `imputed`, and once the window holds no hidden value the scores are the clean run's again.
/// A plain model restarts instead, and so does the masked one when every channel is out.
#[test]
fn channel_masked_model_scores_through_a_dropout_without_the_channel() {
    let masked = |axis| {
        let mut spec =
            Spec::new(3, 5, 4, 2).variant(sensorae::Variant::Masked { mask: axis }, false);
        spec.header.threshold.value = 1e9;
        spec.bytes()
    };
    let bytes = masked(sensorae::MaskAxis::Channel);
    let clean = clean_scores(&bytes, 40);
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    for (t, clean_score) in clean.iter().enumerate() {
        let mut s = signal(t, 3);
        let out = (10..20).contains(&t);
        if out {
            s[1] = f32::NAN;
        }
        let v = d.push(&s);
        if t < 5 - 1 {
            continue;
        }
        let score = v.score().copied().unwrap_or_else(|| panic!("t={t}: {v:?}"));
        // Scored around, and still reported with its channel and kind.
        let hidden = v.fault().map(|f| (f.channel, f.kind, f.reset));
        if out {
            assert_eq!(
                hidden,
                Some((Some(1), FaultKind::NotANumber, false)),
                "t={t}"
            );
        } else {
            assert_eq!(hidden, None, "t={t}");
        }
        if (10..20 + 5 - 1).contains(&t) {
            assert!(score.imputed, "t={t}");
            assert_eq!(d.channel_errors()[1], 0.0, "t={t}: hidden channel scored");
            assert!(
                score
                    .top
                    .iter()
                    .flatten()
                    .all(|c| c.channel != 1 || c.error == 0.0)
            );
        } else {
            assert!(!score.imputed, "t={t}");
            assert_eq!(Some(score.value), *clean_score, "t={t}");
        }
    }
    // Time-masked and plain models restart on the same dropout; all channels out restarts too.
    for bytes in [masked(sensorae::MaskAxis::Time), model(0)] {
        let mut d = DynDetector::from_bytes(&bytes).unwrap();
        for t in 0..10 {
            d.push(&signal(t, 3));
        }
        let mut s = signal(10, 3);
        s[1] = f32::NAN;
        assert!(d.push(&s).fault().unwrap().reset);
    }
    let mut d = DynDetector::from_bytes(&bytes).unwrap();
    for t in 0..10 {
        d.push(&signal(t, 3));
    }
    assert!(d.push(&[f32::NAN; 3]).fault().unwrap().reset);
}
