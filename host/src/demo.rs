//! A built-in, deterministic generator of pump-like multichannel sensor data, so `sensorae demo`
//! needs no download and no external data.
//!
//! The simulated machine is a centrifugal pump sampled at 1 Hz with eight channels: two vibration
//! RMS channels, motor current, discharge pressure, motor temperature, flow rate, supply voltage
//! and a bearing thermocouple. A periodic load cycle drives them: current, pressure, flow and
//! vibration follow the load at once, the temperatures follow it through first-order lags, and
//! the voltage sags a little under load. Every channel carries sensor noise.
//!
//! The series is a normal training segment followed by a test segment with injected anomalies of
//! six kinds ([`AnomalyKind`]), each labelled with its kind, channel and row span. Anomalies sit
//! in slots of [`ANOMALY_SLOT_ROWS`] rows, so normal stretches of at least 250 rows separate them
//! and alarms have time to clear.
//!
//! # Examples
//! ```
//! use sensorae_host::demo::{DemoConfig, generate};
//!
//! let data = generate(&DemoConfig::default());
//! assert_eq!(data.channels.len(), 8);
//! assert_eq!(data.values.len(), data.rows() * data.channels.len());
//! assert_eq!(data.anomalies.len(), 12);
//! ```

use core::{f64::consts::TAU, fmt, ops::Range};
use std::{
    fs,
    io::{self, BufWriter, Write},
    path::{Path, PathBuf},
};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Rows per anomaly slot in the test segment: one anomaly per slot, placed so that at least 250
/// normal rows separate consecutive anomalies.
pub const ANOMALY_SLOT_ROWS: usize = 500;

/// Rows after an anomaly's end during which an alarm still counts as catching it (and not as a
/// false alarm): a windowed detector sees a sample until it leaves the window, and the alarm
/// logic adds its own latency.
pub const DEFAULT_GRACE_ROWS: usize = 60;

/// Rows simulated before row 0 and thrown away, so the lagging temperatures start settled.
const WARMUP_ROWS: usize = 600;

/// Where an anomaly starts inside its slot (plus a random jitter below `START_JITTER`).
const SLOT_LEAD_ROWS: usize = 150;
const START_JITTER: usize = 50;

/// Settings of the demo data generator.
///
/// # Examples
/// ```
/// use sensorae_host::demo::DemoConfig;
///
/// let cfg = DemoConfig { seed: 7, ..DemoConfig::default() };
/// assert_eq!(cfg.train_rows, 3000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoConfig {
    /// Seed of every random choice: the same seed gives the same data.
    pub seed: u64,
    /// Rows of the normal training segment.
    pub train_rows: usize,
    /// Rows of the test segment; it holds `test_rows / ANOMALY_SLOT_ROWS` anomalies.
    pub test_rows: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            train_rows: 3000,
            test_rows: 6000,
        }
    }
}

/// The kinds of injected anomaly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnomalyKind {
    /// A short, large excursion on one channel (1 to 4 rows).
    Spike,
    /// A slow ramp away from normal on one channel.
    Drift,
    /// A channel freezes at its last value.
    StuckAt,
    /// A channel's noise variance jumps.
    NoiseBurst,
    /// A load-following channel stops agreeing with the others: flow drops while current rises,
    /// or one channel's load cycle is shifted by half a period.
    BrokenCorrelation,
    /// A channel reports NaN: a sensor fault the detector must report, not score.
    Dropout,
}

impl AnomalyKind {
    /// Every kind, in the order they are injected.
    pub const ALL: [Self; 6] = [
        Self::Spike,
        Self::Drift,
        Self::StuckAt,
        Self::NoiseBurst,
        Self::BrokenCorrelation,
        Self::Dropout,
    ];

    /// A short human-readable name, e.g. `"stuck-at"`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Spike => "spike",
            Self::Drift => "drift",
            Self::StuckAt => "stuck-at",
            Self::NoiseBurst => "noise burst",
            Self::BrokenCorrelation => "broken correlation",
            Self::Dropout => "dropout",
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One injected anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InjectedAnomaly {
    /// What was injected.
    pub kind: AnomalyKind,
    /// The channel it was injected on (index into [`DemoData::channels`]).
    pub channel: usize,
    /// The rows it covers, indexed in the full series (training rows included).
    pub rows: Range<usize>,
}

/// Generated demo data: a normal training segment followed by a test segment with anomalies.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoData {
    /// Channel names, e.g. `"motor_current_a"`.
    pub channels: Vec<String>,
    /// Samples, rows x channels, row-major. Dropout rows hold NaN on their channel.
    pub values: Vec<f32>,
    /// Rows of the training segment (all normal); the test segment follows.
    pub train_rows: usize,
    /// Per row: 1 inside an injected anomaly, 0 otherwise.
    pub labels: Vec<u8>,
    /// The injected anomalies, in row order.
    pub anomalies: Vec<InjectedAnomaly>,
}

impl DemoData {
    /// Number of rows (training and test).
    #[must_use]
    pub fn rows(&self) -> usize {
        self.labels.len()
    }

    /// One row of samples, or `None` past the end.
    #[must_use]
    pub fn row(&self, row: usize) -> Option<&[f32]> {
        let c = self.channels.len();
        self.values.get(row * c..(row + 1) * c)
    }

    /// One channel's samples over all rows, or `None` for an unknown channel.
    #[must_use]
    pub fn column(&self, channel: usize) -> Option<Vec<f32>> {
        let c = self.channels.len();
        (channel < c).then(|| {
            self.values
                .iter()
                .skip(channel)
                .step_by(c)
                .copied()
                .collect()
        })
    }

    /// Writes the data as CSV with the header `time,<channels...>,anomaly`: time is the row
    /// index in seconds, NaN is written as `NaN`, anomaly is the row's label. The file is
    /// written to a temporary file in the same directory and renamed, so a failure never leaves
    /// a partial file.
    ///
    /// # Errors
    /// Any I/O error, with the path in its message.
    ///
    /// # Examples
    /// ```no_run
    /// use sensorae_host::demo::{DemoConfig, generate};
    ///
    /// generate(&DemoConfig::default()).write_csv("pump.csv")?;
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn write_csv(&self, path: impl AsRef<Path>) -> io::Result<()> {
        let path = path.as_ref();
        let tmp = temp_path(path);
        let result = self
            .write_csv_to(&tmp)
            .and_then(|()| fs::rename(&tmp, path));
        if result.is_err() {
            // Best effort: the temporary file may not exist if creating it failed.
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    }

    fn write_csv_to(&self, path: &Path) -> io::Result<()> {
        let file = fs::File::create(path)?;
        let mut w = BufWriter::new(file);
        write!(w, "time")?;
        for name in &self.channels {
            write!(w, ",{name}")?;
        }
        writeln!(w, ",anomaly")?;
        let c = self.channels.len().max(1);
        for (row, (samples, label)) in self.values.chunks(c).zip(&self.labels).enumerate() {
            write!(w, "{row}")?;
            for v in samples {
                // `{}` on f32 prints the shortest text that parses back to the same value.
                write!(w, ",{v}")?;
            }
            writeln!(w, ",{label}")?;
        }
        let file = w.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()
    }
}

/// A temporary file name next to `path`, so the final rename stays on one file system.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "demo".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}", std::process::id()))
}

/// How one channel responds to the machine's load.
struct ChannelSpec {
    name: &'static str,
    /// Value at zero load.
    base: f32,
    /// Change from zero to full load (negative: falls under load).
    gain: f32,
    /// Standard deviation of the sensor noise.
    noise: f32,
    /// Time constant of a first-order lag behind the load, in rows (0: no lag).
    lag_rows: f32,
    /// Whether the channel follows the load at once (eligible for stuck-at and broken
    /// correlation, where a lagging or flat channel would barely change).
    follows_load: bool,
}

impl ChannelSpec {
    /// A typical excursion size for this channel, used to scale anomalies.
    fn span(&self) -> f32 {
        (self.gain.abs() * 0.6).max(8.0 * self.noise)
    }
}

const FLOW: usize = 5;

const CHANNELS: [ChannelSpec; 8] = [
    ChannelSpec {
        name: "vib_de_mm_s",
        base: 1.2,
        gain: 2.5,
        noise: 0.10,
        lag_rows: 0.0,
        follows_load: true,
    },
    ChannelSpec {
        name: "vib_nde_mm_s",
        base: 0.9,
        gain: 1.8,
        noise: 0.08,
        lag_rows: 0.0,
        follows_load: true,
    },
    ChannelSpec {
        name: "motor_current_a",
        base: 12.0,
        gain: 18.0,
        noise: 0.3,
        lag_rows: 0.0,
        follows_load: true,
    },
    ChannelSpec {
        name: "discharge_pressure_bar",
        base: 2.0,
        gain: 4.0,
        noise: 0.06,
        lag_rows: 2.0,
        follows_load: true,
    },
    ChannelSpec {
        name: "motor_temp_c",
        base: 40.0,
        gain: 30.0,
        noise: 0.1,
        lag_rows: 90.0,
        follows_load: false,
    },
    ChannelSpec {
        name: "flow_m3_h",
        base: 20.0,
        gain: 60.0,
        noise: 0.9,
        lag_rows: 1.0,
        follows_load: true,
    },
    ChannelSpec {
        name: "supply_voltage_v",
        base: 401.0,
        gain: -6.0,
        noise: 0.8,
        lag_rows: 0.0,
        follows_load: false,
    },
    ChannelSpec {
        name: "bearing_tc_c",
        base: 35.0,
        gain: 18.0,
        noise: 0.25,
        lag_rows: 180.0,
        follows_load: false,
    },
];

/// An anomaly with the parameters drawn for it.
struct Planned {
    anomaly: InjectedAnomaly,
    /// Signed size in units of the channel's span (meaning depends on the kind).
    magnitude: f32,
    /// For broken correlation: invert the load (true) or shift it by half a period (false).
    invert: bool,
}

/// Generates the demo data for `cfg`. Deterministic: the same config gives the same data.
///
/// # Examples
/// ```
/// use sensorae_host::demo::{AnomalyKind, DemoConfig, generate};
///
/// let data = generate(&DemoConfig { seed: 1, train_rows: 100, test_rows: 1000 });
/// assert_eq!(data.rows(), 1100);
/// assert_eq!(data.anomalies[0].kind, AnomalyKind::Spike);
/// ```
#[must_use]
pub fn generate(cfg: &DemoConfig) -> DemoData {
    synthesize(cfg, true)
}

/// Separate random streams, so the anomaly plan never shifts the noise and a clean twin of the
/// data (same noise, nothing injected) can be made for tests.
fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// A standard normal sample (Box-Muller; rand 0.10 has no normal distribution of its own).
pub(crate) fn gauss(rng: &mut ChaCha8Rng) -> f32 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // in (0, 1], so ln is finite
    let u2: f64 = rng.random();
    ((-2.0 * u1.ln()).sqrt() * (TAU * u2).cos()) as f32
}

fn synthesize(cfg: &DemoConfig, inject: bool) -> DemoData {
    let c = CHANNELS.len();
    let rows = cfg.train_rows + cfg.test_rows;
    let mut load_rng = rng(cfg.seed, 0);
    let mut noise_rng = rng(cfg.seed, 1);
    let mut plan_rng = rng(cfg.seed, 2);

    // The load cycle: a main period of about three minutes, a faster ripple, a slow duty
    // modulation and a mean-reverting random part, so no two cycles look exactly alike.
    let period = load_rng.random_range(150.0..210.0f64);
    let ripple = load_rng.random_range(31.0..43.0f64);
    let duty = load_rng.random_range(900.0..1300.0f64);
    let phases: [f64; 3] = [
        load_rng.random_range(0.0..TAU),
        load_rng.random_range(0.0..TAU),
        load_rng.random_range(0.0..TAU),
    ];
    let total = WARMUP_ROWS + rows;
    let mut load = Vec::with_capacity(total);
    let mut walk = 0.0f64;
    for i in 0..total {
        let t = i as f64;
        walk = 0.98 * walk + 0.01 * f64::from(gauss(&mut load_rng));
        let l = 0.55
            + 0.25 * (TAU * t / period + phases[0]).sin()
            + 0.06 * (TAU * t / ripple + phases[1]).sin()
            + 0.08 * (TAU * t / duty + phases[2]).sin()
            + walk;
        load.push(l.clamp(0.05, 1.05) as f32);
    }

    let plan = plan_anomalies(cfg, &mut plan_rng);

    // Per-channel load: the shared load, except where a broken correlation rewires a channel.
    let mut channel_load: Vec<Vec<f32>> = vec![load.clone(); c];
    let half_period = (period / 2.0).round() as usize;
    if inject {
        for p in plan
            .iter()
            .filter(|p| p.anomaly.kind == AnomalyKind::BrokenCorrelation)
        {
            let Some(target) = channel_load.get_mut(p.anomaly.channel) else {
                continue;
            };
            for row in p.anomaly.rows.clone() {
                let i = WARMUP_ROWS + row;
                let replaced = if p.invert {
                    1.1 - load[i]
                } else {
                    load[i - half_period.min(WARMUP_ROWS)]
                };
                target[i] = replaced;
            }
        }
    }

    let mut values = vec![0.0f32; rows * c];
    let mut state: Vec<f32> = CHANNELS.iter().map(|s| s.base + s.gain * load[0]).collect();
    for i in 0..total {
        let channels = CHANNELS.iter().zip(&channel_load).zip(state.iter_mut());
        for (ch, ((spec, level), lagged)) in channels.enumerate() {
            let target = spec.base + spec.gain * level[i];
            if spec.lag_rows > 0.0 {
                *lagged += (target - *lagged) / spec.lag_rows;
            } else {
                *lagged = target;
            }
            let noisy = *lagged + spec.noise * gauss(&mut noise_rng);
            if let Some(row) = i.checked_sub(WARMUP_ROWS) {
                values[row * c + ch] = noisy;
            }
        }
    }

    let mut labels = vec![0u8; rows];
    let mut burst_rng = rng(cfg.seed, 3);
    for p in &plan {
        let a = &p.anomaly;
        let spec = &CHANNELS[a.channel];
        let span = spec.span();
        labels[a.rows.clone()].fill(1);
        if !inject {
            continue;
        }
        let len = a.rows.len() as f32;
        let before = values[(a.rows.start - 1) * c + a.channel];
        for (k, row) in a.rows.clone().enumerate() {
            let v = &mut values[row * c + a.channel];
            match a.kind {
                AnomalyKind::Spike => *v += p.magnitude * span,
                AnomalyKind::Drift => *v += p.magnitude * span * (k + 1) as f32 / len,
                AnomalyKind::StuckAt => *v = before,
                AnomalyKind::NoiseBurst => *v += p.magnitude * span * gauss(&mut burst_rng),
                AnomalyKind::BrokenCorrelation => {} // rewired above, through the load
                AnomalyKind::Dropout => *v = f32::NAN,
            }
        }
    }

    DemoData {
        channels: CHANNELS.iter().map(|s| s.name.to_owned()).collect(),
        values,
        train_rows: cfg.train_rows,
        labels,
        anomalies: plan.into_iter().map(|p| p.anomaly).collect(),
    }
}

/// One anomaly per slot of the test segment, kinds in the order of [`AnomalyKind::ALL`].
fn plan_anomalies(cfg: &DemoConfig, rng: &mut ChaCha8Rng) -> Vec<Planned> {
    let slots = cfg.test_rows / ANOMALY_SLOT_ROWS;
    let load_followers: Vec<usize> = (0..CHANNELS.len())
        .filter(|&ch| CHANNELS[ch].follows_load)
        .collect();
    let mut plan = Vec::with_capacity(slots);
    let mut broken = 0usize;
    for slot in 0..slots {
        let kind = AnomalyKind::ALL[slot % AnomalyKind::ALL.len()];
        // At least one row precedes the anomaly, so stuck-at has a last value to freeze.
        let start = (cfg.train_rows + slot * ANOMALY_SLOT_ROWS + SLOT_LEAD_ROWS).max(1)
            + rng.random_range(0..START_JITTER);
        let pick_any = |rng: &mut ChaCha8Rng| rng.random_range(0..CHANNELS.len());
        let pick_follower =
            |rng: &mut ChaCha8Rng| load_followers[rng.random_range(0..load_followers.len())];
        let sign = |rng: &mut ChaCha8Rng| if rng.random_bool(0.5) { 1.0 } else { -1.0 };
        let (channel, len, magnitude, invert) = match kind {
            // Upwards: a negative vibration or current reading would be a different fault.
            AnomalyKind::Spike => (
                pick_any(rng),
                rng.random_range(1..=4),
                rng.random_range(1.0..1.5f32),
                false,
            ),
            AnomalyKind::Drift => (
                pick_any(rng),
                200,
                sign(rng) * rng.random_range(0.7..1.0f32),
                false,
            ),
            AnomalyKind::StuckAt => (pick_follower(rng), 150, 0.0, false),
            AnomalyKind::NoiseBurst => (pick_any(rng), 100, rng.random_range(0.25..0.35f32), false),
            AnomalyKind::BrokenCorrelation => {
                // First flow against current (a blockage signature), then phase shifts.
                let invert = broken & 1 == 0;
                broken += 1;
                let channel = if invert {
                    FLOW
                } else {
                    let others: Vec<usize> = load_followers
                        .iter()
                        .copied()
                        .filter(|&ch| ch != FLOW)
                        .collect();
                    others[rng.random_range(0..others.len())]
                };
                (channel, 150, 0.0, invert)
            }
            AnomalyKind::Dropout => (pick_any(rng), 40, 0.0, false),
        };
        plan.push(Planned {
            anomaly: InjectedAnomaly {
                kind,
                channel,
                rows: start..start + len,
            },
            magnitude,
            invert,
        });
    }
    plan
}

/// The outcome for one injected anomaly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnomalyOutcome {
    /// The anomaly.
    pub anomaly: InjectedAnomaly,
    /// Rows from the anomaly's start to the first alarm (first reported fault for
    /// [`AnomalyKind::Dropout`]) inside its span or the grace period after it; `None`: missed.
    pub delay_rows: Option<usize>,
}

impl AnomalyOutcome {
    /// Whether the detector caught the anomaly.
    #[must_use]
    pub fn caught(&self) -> bool {
        self.delay_rows.is_some()
    }
}

/// Caught and missed anomalies of one kind.
#[derive(Debug, Clone, PartialEq)]
pub struct KindSummary {
    /// The kind.
    pub kind: AnomalyKind,
    /// How many were injected.
    pub injected: usize,
    /// How many were caught.
    pub caught: usize,
    /// Mean detection delay of the caught ones, in rows.
    pub mean_delay_rows: Option<f64>,
}

/// How well a detector's alarms and fault reports match the injected anomalies of a
/// [`DemoData`]. Only the test segment counts: the training segment was seen in training.
#[derive(Debug, Clone, PartialEq)]
pub struct CatchReport {
    /// Channel names, to print the outcomes.
    pub channels: Vec<String>,
    /// One outcome per injected anomaly, in row order.
    pub outcomes: Vec<AnomalyOutcome>,
    /// One summary per kind that was injected, in the order of [`AnomalyKind::ALL`].
    pub by_kind: Vec<KindSummary>,
    /// The grace period used, in rows.
    pub grace_rows: usize,
    /// Normal test rows judged for false alarms (outside anomalies and their grace periods).
    pub normal_rows: usize,
    /// Normal test rows with an alarm.
    pub false_alarm_rows: usize,
    /// Alarm runs that start on a normal test row.
    pub false_alarm_events: usize,
    /// Test rows with a reported sensor fault outside every dropout and its grace period.
    pub spurious_fault_rows: usize,
}

impl CatchReport {
    /// The share of normal test rows with an alarm (0 when there are none).
    #[must_use]
    pub fn false_alarm_rate(&self) -> f64 {
        if self.normal_rows == 0 {
            0.0
        } else {
            self.false_alarm_rows as f64 / self.normal_rows as f64
        }
    }

    /// How many anomalies were caught.
    #[must_use]
    pub fn caught(&self) -> usize {
        self.outcomes.iter().filter(|o| o.caught()).count()
    }
}

/// Matches per-row alarm and fault flags (indexed like the full series of `data`) against its
/// injected anomalies, with [`DEFAULT_GRACE_ROWS`]. Rows past the end of a flag slice count as
/// unflagged.
///
/// # Examples
/// ```
/// use sensorae_host::demo::{DemoConfig, catch_report, generate};
///
/// let data = generate(&DemoConfig::default());
/// let alarms: Vec<bool> = data.labels.iter().map(|&l| l == 1).collect();
/// let faults = data.values.chunks(data.channels.len()).map(|r| r.iter().any(|v| v.is_nan()));
/// let report = catch_report(&data, &alarms, &faults.collect::<Vec<_>>());
/// assert_eq!(report.caught(), data.anomalies.len());
/// println!("{report}");
/// ```
#[must_use]
pub fn catch_report(data: &DemoData, alarms: &[bool], faults: &[bool]) -> CatchReport {
    catch_report_with_grace(data, alarms, faults, DEFAULT_GRACE_ROWS)
}

/// [`catch_report`] with a chosen grace period: an alarm up to `grace_rows` rows after an
/// anomaly's end still catches it, and is not a false alarm.
#[must_use]
pub fn catch_report_with_grace(
    data: &DemoData,
    alarms: &[bool],
    faults: &[bool],
    grace_rows: usize,
) -> CatchReport {
    let rows = data.rows();
    let flag = |flags: &[bool], row: usize| flags.get(row).copied().unwrap_or(false);
    let judged = |a: &InjectedAnomaly| a.rows.start..(a.rows.end + grace_rows).min(rows);

    let outcomes: Vec<AnomalyOutcome> = data
        .anomalies
        .iter()
        .map(|a| {
            let flags = if a.kind == AnomalyKind::Dropout {
                faults
            } else {
                alarms
            };
            let delay_rows = judged(a)
                .find(|&row| flag(flags, row))
                .map(|row| row - a.rows.start);
            AnomalyOutcome {
                anomaly: a.clone(),
                delay_rows,
            }
        })
        .collect();

    let by_kind = AnomalyKind::ALL
        .iter()
        .filter_map(|&kind| {
            let of_kind: Vec<&AnomalyOutcome> =
                outcomes.iter().filter(|o| o.anomaly.kind == kind).collect();
            if of_kind.is_empty() {
                return None;
            }
            let delays: Vec<usize> = of_kind.iter().filter_map(|o| o.delay_rows).collect();
            let mean_delay_rows = (!delays.is_empty())
                .then(|| delays.iter().sum::<usize>() as f64 / delays.len() as f64);
            Some(KindSummary {
                kind,
                injected: of_kind.len(),
                caught: delays.len(),
                mean_delay_rows,
            })
        })
        .collect();

    // Rows an anomaly may still explain: its span and grace period.
    let mut excused = vec![false; rows];
    let mut dropout_excused = vec![false; rows];
    for a in &data.anomalies {
        for row in judged(a) {
            excused[row] = true;
            if a.kind == AnomalyKind::Dropout {
                dropout_excused[row] = true;
            }
        }
    }
    let test = data.train_rows.min(rows)..rows;
    let mut report = CatchReport {
        channels: data.channels.clone(),
        outcomes,
        by_kind,
        grace_rows,
        normal_rows: 0,
        false_alarm_rows: 0,
        false_alarm_events: 0,
        spurious_fault_rows: 0,
    };
    for row in test {
        if flag(faults, row) && !dropout_excused[row] {
            report.spurious_fault_rows += 1;
        }
        if excused[row] {
            continue;
        }
        report.normal_rows += 1;
        if flag(alarms, row) {
            report.false_alarm_rows += 1;
            if row == 0 || !flag(alarms, row - 1) {
                report.false_alarm_events += 1;
            }
        }
    }
    report
}

impl fmt::Display for CatchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<20} {:>8} {:>7} {:>7} {:>12}",
            "kind", "injected", "caught", "missed", "mean delay"
        )?;
        for k in &self.by_kind {
            let delay = k
                .mean_delay_rows
                .map_or_else(|| "-".to_owned(), |d| format!("{d:.1} rows"));
            writeln!(
                f,
                "{:<20} {:>8} {:>7} {:>7} {:>12}",
                k.kind.name(),
                k.injected,
                k.caught,
                k.injected - k.caught,
                delay
            )?;
        }
        let injected = self.outcomes.len();
        let caught = self.caught();
        writeln!(
            f,
            "{:<20} {:>8} {:>7} {:>7}",
            "total",
            injected,
            caught,
            injected - caught
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>3}  {:<20} {:<24} {:>13}  {:<6} {:>5}",
            "#", "kind", "channel", "rows", "result", "delay"
        )?;
        for (i, o) in self.outcomes.iter().enumerate() {
            let a = &o.anomaly;
            let channel = self.channels.get(a.channel).map_or("?", String::as_str);
            let rows = format!("{}..{}", a.rows.start, a.rows.end);
            let (result, delay) = match o.delay_rows {
                Some(d) => ("caught", d.to_string()),
                None => ("missed", "-".to_owned()),
            };
            writeln!(
                f,
                "{:>3}  {:<20} {:<24} {:>13}  {:<6} {:>5}",
                i + 1,
                a.kind.name(),
                channel,
                rows,
                result,
                delay
            )?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "false alarms: {} of {} normal test rows ({:.2} %), in {} alarm runs",
            self.false_alarm_rows,
            self.normal_rows,
            100.0 * self.false_alarm_rate(),
            self.false_alarm_events
        )?;
        write!(
            f,
            "sensor faults outside dropouts: {} rows (grace period {} rows after each anomaly)",
            self.spurious_fault_rows, self.grace_rows
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CURRENT: usize = 2;

    const CFG: DemoConfig = DemoConfig {
        seed: 42,
        train_rows: 3000,
        test_rows: 6000,
    };

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
    }

    fn pearson(a: &[f32], b: &[f32]) -> f64 {
        let n = a.len() as f64;
        let ma = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let mb = b.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
        for (&x, &y) in a.iter().zip(b) {
            let (dx, dy) = (f64::from(x) - ma, f64::from(y) - mb);
            sab += dx * dy;
            saa += dx * dx;
            sbb += dy * dy;
        }
        sab / (saa * sbb).sqrt()
    }

    fn std(a: &[f32]) -> f64 {
        let n = a.len() as f64;
        let m = a.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        (a.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / n).sqrt()
    }

    #[test]
    fn same_seed_same_data_other_seed_other_data() {
        let a = generate(&CFG);
        let b = generate(&CFG);
        assert!(same_bits(&a.values, &b.values));
        assert_eq!(a.anomalies, b.anomalies);
        let c = generate(&DemoConfig { seed: 43, ..CFG });
        assert!(!same_bits(&a.values, &c.values));
    }

    #[test]
    fn shape_and_all_kinds_present_and_separated() {
        let d = generate(&CFG);
        assert_eq!(d.channels.len(), 8);
        assert_eq!(d.rows(), 9000);
        assert_eq!(d.values.len(), 9000 * 8);
        assert_eq!(d.anomalies.len(), 12);
        for kind in AnomalyKind::ALL {
            assert_eq!(d.anomalies.iter().filter(|a| a.kind == kind).count(), 2);
        }
        for a in &d.anomalies {
            assert!(a.rows.start >= d.train_rows && a.rows.end <= d.rows());
            assert!(a.channel < d.channels.len());
        }
        for pair in d.anomalies.windows(2) {
            assert!(pair[1].rows.start >= pair[0].rows.end + 250, "{pair:?}");
        }
    }

    #[test]
    fn labels_match_anomaly_spans() {
        let d = generate(&CFG);
        let mut expected = vec![0u8; d.rows()];
        for a in &d.anomalies {
            expected[a.rows.clone()].fill(1);
        }
        assert_eq!(d.labels, expected);
        assert!(d.labels[..d.train_rows].iter().all(|&l| l == 0));
    }

    #[test]
    fn normal_channels_are_correlated_as_designed() {
        let d = generate(&CFG);
        let train = |ch: usize| d.column(ch).unwrap()[..d.train_rows].to_vec();
        let current = train(CURRENT);
        assert!(pearson(&current, &train(FLOW)) > 0.8);
        assert!(pearson(&current, &train(3)) > 0.8); // pressure
        assert!(pearson(&current, &train(0)) > 0.8); // vibration
        assert!(pearson(&current, &train(6)) < -0.3); // voltage sags under load
        // The motor temperature lags the load: it matches the load of a minute ago better.
        let temp = train(4);
        let lag = 60;
        let now = pearson(&current[lag..], &temp[lag..]);
        let earlier = pearson(&current[..current.len() - lag], &temp[lag..]);
        assert!(earlier > now, "earlier {earlier} now {now}");
        assert!(d.values[..d.train_rows * 8].iter().all(|v| v.is_finite()));
    }

    #[test]
    fn anomalies_change_the_data_only_where_labelled() {
        let d = generate(&CFG);
        let clean = synthesize(&CFG, false);
        let c = d.channels.len();
        for row in 0..d.rows() {
            for ch in 0..c {
                let inside = d
                    .anomalies
                    .iter()
                    .any(|a| a.channel == ch && a.rows.contains(&row));
                let (v, w) = (d.values[row * c + ch], clean.values[row * c + ch]);
                if !inside {
                    assert_eq!(v.to_bits(), w.to_bits(), "row {row} channel {ch}");
                }
                assert_eq!(
                    v.is_nan(),
                    inside
                        && d.anomalies.iter().any(|a| {
                            a.kind == AnomalyKind::Dropout
                                && a.channel == ch
                                && a.rows.contains(&row)
                        })
                );
            }
        }
        for a in &d.anomalies {
            let span = CHANNELS[a.channel].span();
            let noise = CHANNELS[a.channel].noise;
            let got: Vec<f32> = a
                .rows
                .clone()
                .map(|r| d.values[r * c + a.channel])
                .collect();
            let base: Vec<f32> = a
                .rows
                .clone()
                .map(|r| clean.values[r * c + a.channel])
                .collect();
            let diff: Vec<f32> = got.iter().zip(&base).map(|(g, b)| g - b).collect();
            match a.kind {
                AnomalyKind::Spike => assert!(diff.iter().all(|&x| x >= span)),
                AnomalyKind::Drift => {
                    let end = diff[diff.len() - 1].abs();
                    assert!(end >= 0.7 * span && diff[0].abs() < 0.01 * span, "{a:?}");
                }
                AnomalyKind::StuckAt => {
                    assert!(got.iter().all(|&x| x.to_bits() == got[0].to_bits()));
                    assert!(std(&base) > 2.0 * f64::from(noise));
                }
                AnomalyKind::NoiseBurst => assert!(std(&diff) > 0.2 * f64::from(span)),
                AnomalyKind::BrokenCorrelation => {
                    let other = if a.channel == CURRENT { FLOW } else { CURRENT };
                    let reference: Vec<f32> =
                        a.rows.clone().map(|r| d.values[r * c + other]).collect();
                    let r = pearson(&got, &reference);
                    assert!(r < 0.3, "{a:?}: correlation {r}");
                }
                AnomalyKind::Dropout => assert!(got.iter().all(|v| v.is_nan())),
            }
        }
    }

    #[test]
    fn short_test_segment_has_no_anomalies() {
        let d = generate(&DemoConfig {
            seed: 1,
            train_rows: 0,
            test_rows: 499,
        });
        assert!(d.anomalies.is_empty());
        assert!(d.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn csv_round_trips_through_a_reader() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.csv");
        let d = generate(&DemoConfig {
            seed: 3,
            train_rows: 100,
            test_rows: 1000,
        });
        d.write_csv(&path).unwrap();
        let mut reader = csv::Reader::from_path(&path).unwrap();
        let header: Vec<String> = reader
            .headers()
            .unwrap()
            .iter()
            .map(str::to_owned)
            .collect();
        assert_eq!(header.first().map(String::as_str), Some("time"));
        assert_eq!(header.last().map(String::as_str), Some("anomaly"));
        assert_eq!(header[1..9], d.channels[..]);
        let mut values = Vec::new();
        let mut labels = Vec::new();
        for rec in reader.records() {
            let rec = rec.unwrap();
            for field in rec.iter().skip(1).take(8) {
                values.push(field.parse::<f32>().unwrap());
            }
            labels.push(rec[9].parse::<u8>().unwrap());
        }
        assert!(same_bits(&values, &d.values));
        assert_eq!(labels, d.labels);
        // Only the final file remains: the temporary one was renamed.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn csv_into_missing_directory_names_the_path_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("demo.csv");
        let err = generate(&DemoConfig {
            seed: 3,
            train_rows: 10,
            test_rows: 10,
        })
        .write_csv(&path)
        .unwrap_err();
        assert!(err.to_string().contains("demo.csv"), "{err}");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn catch_report_on_a_hand_made_alarm_vector() {
        let d = generate(&CFG);
        let rows = d.rows();
        let mut alarms = vec![false; rows];
        let mut faults = vec![false; rows];
        let mut expected_delays = Vec::new();
        for (i, a) in d.anomalies.iter().enumerate() {
            let flags = if a.kind == AnomalyKind::Dropout {
                &mut faults
            } else {
                &mut alarms
            };
            match i % 3 {
                // Caught inside the span, 1 row late.
                0 => {
                    flags[a.rows.start + 1] = true;
                    expected_delays.push(Some(1));
                }
                // Caught in the grace period after the end.
                1 => {
                    let row = a.rows.end + DEFAULT_GRACE_ROWS - 1;
                    flags[row] = true;
                    expected_delays.push(Some(row - a.rows.start));
                }
                // Too late: missed, and the alarm is a false one.
                _ => {
                    flags[a.rows.end + DEFAULT_GRACE_ROWS] = true;
                    expected_delays.push(None);
                }
            }
        }
        // A false-alarm run of 5 rows and an alarm in the training segment (not counted).
        alarms[d.train_rows + 10..d.train_rows + 15].fill(true);
        alarms[5] = true;
        // A spurious fault on a normal row.
        faults[d.train_rows + 20] = true;

        let report = catch_report(&d, &alarms, &faults);
        let delays: Vec<Option<usize>> = report.outcomes.iter().map(|o| o.delay_rows).collect();
        assert_eq!(delays, expected_delays);
        assert_eq!(report.caught(), 8);
        assert_eq!(report.by_kind.len(), 6);
        let missed_alarms = expected_delays
            .iter()
            .zip(&d.anomalies)
            .filter(|(e, a)| e.is_none() && a.kind != AnomalyKind::Dropout)
            .count();
        assert_eq!(report.false_alarm_rows, 5 + missed_alarms);
        assert_eq!(report.false_alarm_events, 1 + missed_alarms);
        let missed_dropouts = expected_delays
            .iter()
            .zip(&d.anomalies)
            .filter(|(e, a)| e.is_none() && a.kind == AnomalyKind::Dropout)
            .count();
        assert!(missed_alarms > 0 && missed_dropouts > 0);
        assert_eq!(report.spurious_fault_rows, 1 + missed_dropouts);
        let excused: usize = d
            .anomalies
            .iter()
            .map(|a| a.rows.len() + DEFAULT_GRACE_ROWS)
            .sum();
        assert_eq!(report.normal_rows, CFG.test_rows - excused);
        assert!(
            (report.false_alarm_rate() * report.normal_rows as f64
                - report.false_alarm_rows as f64)
                .abs()
                < 1e-9
        );

        let spike = &report.by_kind[0];
        assert_eq!((spike.kind, spike.injected), (AnomalyKind::Spike, 2));
        let text = report.to_string();
        for kind in AnomalyKind::ALL {
            assert!(text.contains(kind.name()), "{text}");
        }
        assert!(text.contains("missed") && text.contains("false alarms"));
    }

    #[test]
    fn catch_report_tolerates_short_flag_slices() {
        let d = generate(&CFG);
        let report = catch_report(&d, &[], &[]);
        assert_eq!(report.caught(), 0);
        assert_eq!(report.false_alarm_rows, 0);
    }
}
