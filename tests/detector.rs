//! Windowing, hop, smoothing, alarms and top channels of the streaming detector.

use sensorae::{
    Activation, Aggregate, Arch, Detector, DynDetector, ErrorMetric, Status, param_count,
};

use crate::common::{Spec, signal};

/// A model with all parameters zero and identity normalisation: the reconstruction is 0, so the
/// MSE score of a window is the mean of its squared inputs.
fn zero_model(channels: u16, window: u16) -> Spec {
    Spec::new(channels, window, 3, 2)
        .activations([Activation::Linear; 4])
        .zeroed()
        .identity_channels()
}

#[test]
fn windows_are_chronological_and_time_major() {
    let spec = Spec::new(3, 4, 4, 2).identity_channels();
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    for t in 0usize..11 {
        d.push(&[t as f32, 100.0 + t as f32, 200.0 + t as f32]);
        let window: Vec<Vec<f32>> = d.window().map(<[f32]>::to_vec).collect();
        let first = (t + 1).saturating_sub(4);
        let want: Vec<Vec<f32>> = (first..=t)
            .map(|s| vec![s as f32, 100.0 + s as f32, 200.0 + s as f32])
            .collect();
        assert_eq!(window, want, "after sample {t}");
    }
}

#[test]
fn warms_up_then_scores_every_hop() {
    let mut spec = zero_model(1, 3);
    spec.header.window.hop = 2;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    let mut fresh = vec![];
    for t in 0..9 {
        let v = d.push(&[t as f32]);
        assert_eq!(v.index, t as u64);
        match v.status {
            Status::WarmingUp { filled, needed } => {
                assert_eq!((filled, needed), (t as u16 + 1, 3));
                fresh.push(None);
            }
            _ => fresh.push(Some(v.score().unwrap().fresh)),
        }
    }
    let f = |b| Some(b);
    assert_eq!(
        fresh,
        vec![
            None,
            None,
            f(true),
            f(false),
            f(true),
            f(false),
            f(true),
            f(false),
            f(true)
        ]
    );
    // The window ending at sample 8 is [6, 7, 8]: mean square (36 + 49 + 64) / 3.
    let last = d.push(&[9.0]).score().copied().unwrap();
    assert!(!last.fresh);
    assert!((last.value - 149.0 / 3.0).abs() < 1e-4);
}

#[test]
fn alarm_turns_on_after_k_and_off_after_m() {
    let mut spec = zero_model(1, 1);
    spec.header.alarm.on_after = 3;
    spec.header.alarm.off_after = 2;
    spec.header.threshold.value = 1.0;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    // Score = x^2: above the threshold for |x| > 1.
    let xs = [
        0.0, 2.0, 2.0, 0.0, 2.0, 2.0, 2.0, 2.0, 0.0, 2.0, 0.0, 0.0, 0.0,
    ];
    let mut states = String::new();
    for x in xs {
        let v = d.push(&[x]);
        states.push(match v.status {
            Status::Anomalous { onset: true, .. } => 'O',
            Status::Anomalous { .. } => 'A',
            Status::Normal(_) => '.',
            _ => '?',
        });
    }
    // Two exceedances are not enough; the third in a row sets it; one normal window among
    // exceedances does not clear it; two in a row do.
    assert_eq!(states, "......OAAAA..");
}

#[test]
fn ewma_smooths_the_score() {
    let mut spec = zero_model(1, 1);
    spec.header.scoring.ewma = 0.25;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    let s1 = *d.push(&[2.0]).score().unwrap();
    assert_eq!((s1.raw, s1.value), (4.0, 4.0));
    let s2 = *d.push(&[0.0]).score().unwrap();
    assert_eq!(s2.raw, 0.0);
    assert!((s2.value - 3.0).abs() < 1e-6);
    let s3 = *d.push(&[4.0]).score().unwrap();
    assert!((s3.value - (0.25 * 16.0 + 0.75 * 3.0)).abs() < 1e-5);
}

#[test]
fn max_channel_aggregate_and_top_channels() {
    let spec = zero_model(4, 2).metric(ErrorMetric::Mse, Aggregate::MaxChannel);
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    d.push(&[1.0, 0.0, 3.0, 2.0]);
    let v = d.push(&[1.0, 0.0, 1.0, 2.0]);
    let s = v.score().unwrap();
    // Channel means of squares: 1, 0, 5, 4.
    assert_eq!(d.channel_errors(), &[1.0, 0.0, 5.0, 4.0]);
    assert_eq!(s.value, 5.0);
    let top: Vec<(u16, f32)> = s
        .top
        .iter()
        .flatten()
        .map(|c| (c.channel, c.error))
        .collect();
    assert_eq!(top, vec![(2, 5.0), (3, 4.0), (0, 1.0)]);
}

#[test]
fn reset_forgets_window_and_alarm() {
    let mut spec = zero_model(1, 2);
    spec.header.alarm.on_after = 1;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    d.push(&[5.0]);
    assert!(d.push(&[5.0]).is_alarm());
    d.reset();
    let v = d.push(&[0.0]);
    assert_eq!(v.index, 0);
    assert!(matches!(v.status, Status::WarmingUp { filled: 1, .. }));
    assert!(!d.push(&[0.0]).is_alarm());
}

#[test]
fn normalisation_uses_offset_and_scale() {
    let mut spec = zero_model(2, 1);
    spec.channels[0].offset = 10.0;
    spec.channels[0].scale = 2.0;
    spec.channels[1].offset = -1.0;
    spec.channels[1].scale = 0.5;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    d.push(&[14.0, 0.0]);
    assert_eq!(d.window().next().unwrap(), &[2.0, 2.0]);
    assert_eq!(d.channel_errors(), &[4.0, 4.0]);
}

#[test]
fn detector_is_send_and_its_size_follows_the_formula() {
    const N: usize = 128;
    type Reference = Detector<8, 16, N, 32, 8, { param_count(Arch::Dense, N, 32, 8) }>;
    fn assert_send<T: Send>() {}
    assert_send::<Reference>();
    assert_send::<DynDetector>();
    let p = param_count(Arch::Dense, N, 32, 8);
    let floats = p + 2 * N + 2 * 32 + 2 * 8 + 8; // ring and reconstruction: the window is read in place
    let size = core::mem::size_of::<Reference>();
    // Floats, plus per-channel state (32 bytes each) and about 200 bytes of configuration and
    // streaming state.
    assert!(size >= floats * 4, "{size}");
    assert!(size <= floats * 4 + 8 * 32 + 256, "{size}");
}

#[test]
fn fixed_detector_push_array() {
    let bytes = sensorae::testing::tiny_model_bytes();
    type Tiny = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
    let mut d = Tiny::from_bytes(&bytes).unwrap();
    for t in 0..6 {
        let s = signal(t, 2);
        let v = d.push_array(&[s[0], s[1]]);
        assert_eq!(v.score().is_some(), t >= 3);
    }
}

#[test]
fn unloaded_detector_reports_no_model() {
    type Tiny = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
    static_assertions_const();
    let mut d = Tiny::new();
    let v = d.push(&[0.0, 0.0]);
    assert_eq!(v.fault().unwrap().kind, sensorae::FaultKind::NoModel);
    assert!(d.load(b"garbage").is_err());
    assert_eq!(
        d.push(&[0.0, 0.0]).fault().unwrap().kind,
        sensorae::FaultKind::NoModel
    );
}

/// `Detector::new` is usable in a `static` initialiser.
fn static_assertions_const() {
    type Tiny = Detector<2, 4, 8, 4, 2, { param_count(Arch::Dense, 8, 4, 2) }>;
    static EMPTY: std::sync::Mutex<Tiny> = std::sync::Mutex::new(Tiny::new());
    assert!(EMPTY.lock().is_ok());
}

#[test]
fn drift_tracking_follows_slow_level_changes() {
    let mut spec = zero_model(1, 4);
    spec.header.threshold.value = 1.0;
    spec.header.alarm.on_after = 1;
    let ramp = |t: usize| t as f32 * 0.01; // Reaches 3 (score 9) after 300 samples.
    let mut fixed = DynDetector::from_bytes(&spec.bytes()).unwrap();
    spec.header.adaptation = sensorae::Adaptation {
        rate: 0.1,
        in_alarm: sensorae::AlarmHold::All,
    };
    let mut tracking = DynDetector::from_bytes(&spec.bytes()).unwrap();
    let (mut alarms_fixed, mut alarms_tracking) = (0, 0);
    for t in 0..300 {
        alarms_fixed += usize::from(fixed.push(&[ramp(t)]).is_alarm());
        alarms_tracking += usize::from(tracking.push(&[ramp(t)]).is_alarm());
    }
    assert!(alarms_fixed > 150, "{alarms_fixed}");
    assert_eq!(alarms_tracking, 0);
    // The baseline lags a ramp of slope s by about s / rate.
    let b = tracking.baselines().next().unwrap();
    assert!((b - (ramp(299) - 0.01 / 0.1)).abs() < 0.02, "{b}");
}

/// A step on channel 0 (the anomaly, samples 50..150) while channel 1 drifts steadily. Holding
/// every baseline in alarm freezes channel 1's too, so its drift keeps the alarm on after the
/// step ends; holding only the explaining channel lets channel 1 keep following, and the alarm
/// clears as soon as the step is over; following everything absorbs the step itself.
#[test]
fn holding_only_the_explaining_channels_lets_the_alarm_clear() {
    let mut spec = zero_model(2, 1);
    spec.header.threshold.value = 1.0;
    spec.header.scoring.aggregate = sensorae::Aggregate::MaxChannel;
    spec.header.alarm.on_after = 1;
    spec.header.alarm.off_after = 1;
    let run = |hold: sensorae::AlarmHold| {
        let mut spec = spec.clone();
        spec.header.adaptation = sensorae::Adaptation {
            rate: 0.1,
            in_alarm: hold,
        };
        let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
        let alarms: Vec<bool> = (0..300)
            .map(|t| {
                let step = if (50..150).contains(&t) { 5.0 } else { 0.0 };
                d.push(&[step, 0.02 * t as f32]).is_alarm()
            })
            .collect();
        (alarms, d.baselines().collect::<Vec<f32>>())
    };
    let (explaining, baselines) = run(sensorae::AlarmHold::Explaining);
    assert!(
        explaining[50..150].iter().all(|&a| a),
        "the step alarms throughout"
    );
    assert!(
        !explaining[150..].iter().any(|&a| a),
        "and the alarm clears when it ends"
    );
    assert!(!explaining[..50].iter().any(|&a| a));
    // Channel 1 followed its ramp through the alarm: it lags by slope * (1 - rate) / rate.
    assert!(
        (baselines[1] - (0.02 * 299.0 - 0.02 * 0.9 / 0.1)).abs() < 1e-3,
        "{baselines:?}"
    );
    assert_eq!(
        baselines[0], 0.0,
        "the step never moved channel 0's baseline"
    );
    let (all, _) = run(sensorae::AlarmHold::All);
    assert!(
        all[50..].iter().all(|&a| a),
        "holding every baseline never clears"
    );
    let (follow, _) = run(sensorae::AlarmHold::Follow);
    assert!(
        follow[50..150].iter().filter(|&&a| a).count() < 30,
        "following absorbs the step"
    );
}

#[test]
fn drift_tracking_holds_still_during_an_alarm() {
    let mut spec = zero_model(1, 1);
    spec.header.threshold.value = 1.0;
    spec.header.alarm.on_after = 1;
    spec.header.alarm.off_after = 1;
    spec.header.adaptation = sensorae::Adaptation {
        rate: 0.1,
        in_alarm: sensorae::AlarmHold::All,
    };
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    d.push(&[0.0]);
    // A step to 5 alarms at once and stays alarmed: the baseline does not absorb it.
    for _ in 0..200 {
        assert!(d.push(&[5.0]).is_alarm());
    }
    assert_eq!(d.baselines().next(), Some(0.0));
    // Without the freeze the same step is absorbed and the alarm clears.
    spec.header.adaptation.in_alarm = sensorae::AlarmHold::Follow;
    let mut d = DynDetector::from_bytes(&spec.bytes()).unwrap();
    d.push(&[0.0]);
    let alarms = (0..200).filter(|_| d.push(&[5.0]).is_alarm()).count();
    assert!(alarms < 30, "{alarms}");
}
