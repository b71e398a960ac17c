//! The streaming detector: validate, normalise, window, reconstruct, score, alarm.

use nalgebra::Dim;

use crate::{
    codec::ModelView,
    decoded::Decoded,
    error::LoadError,
    model::{
        Adaptation, Aggregate, AlarmHold, AlarmSpec, Arch, Channel, FaultPolicy, Header, Layers,
        MaskAxis, Scaling, Scoring, TOP_K, Threshold, TrainingSummary, Variant, WindowSpec,
    },
    nn::{self, Dims, Scratch},
    storage::{Buffers, ChannelState, Fixed, Storage},
    verdict::{ChannelError, FaultKind, Score, SensorFault, Status, Verdict},
};

/// A detector with fixed sizes: C channels, window W, N = C * W inputs, H hidden, Z code,
/// P parameters (see [`param_count`](crate::param_count)) and S extra scratch values (see
/// [`scratch_len`](crate::scratch_len); 0 unless the model is hierarchical). It never
/// allocates, and `core::mem::size_of` gives all the memory it needs.
pub type Detector<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize = 0,
> = Engine<Fixed<C, W, N, H, Z, P, S>>;

/// A detector sized from the model file at load time (behind the `alloc` feature).
#[cfg(feature = "alloc")]
pub type DynDetector = Engine<crate::storage::Heap>;

/// Everything of a model's header a detector keeps (all of it but the name).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Config {
    /// Variant the trainer used.
    pub variant: Variant,
    /// Decoder uses the encoder's transposes.
    pub tied: bool,
    /// Windowing.
    pub window: WindowSpec,
    /// Layer sizes and activations.
    pub layers: Layers,
    /// How inputs were scaled.
    pub scaling: Scaling,
    /// Scoring rule.
    pub scoring: Scoring,
    /// Threshold.
    pub threshold: Threshold,
    /// Alarm hysteresis.
    pub alarm: AlarmSpec,
    /// Fault recovery.
    pub faults: FaultPolicy,
    /// Drift tracking.
    pub adaptation: Adaptation,
    /// Training summary.
    pub training: TrainingSummary,
}

impl Config {
    /// All zero bytes (see `State::last`); never used for scoring.
    const UNLOADED: Config = Config {
        variant: Variant::Plain,
        tied: false,
        window: WindowSpec {
            channels: 0,
            length: 0,
            hop: 0,
        },
        layers: Layers {
            hidden: 0,
            latent: 0,
            encoder_hidden: crate::Activation::Linear,
            code: crate::Activation::Linear,
            decoder_hidden: crate::Activation::Linear,
            output: crate::Activation::Linear,
        },
        scaling: Scaling::Standard,
        scoring: Scoring {
            metric: crate::ErrorMetric::Mse,
            aggregate: Aggregate::Mean,
            kl_weight: 0.0,
            ewma: 0.0,
        },
        threshold: Threshold {
            value: 0.0,
            method: crate::ThresholdMethod::Fixed,
            calibration_windows: 0,
        },
        alarm: AlarmSpec {
            on_after: 0,
            off_after: 0,
        },
        faults: FaultPolicy { hold_max: 0 },
        adaptation: Adaptation {
            rate: 0.0,
            in_alarm: AlarmHold::Follow,
        },
        training: TrainingSummary {
            epochs: 0,
            train_loss: 0.0,
            val_loss: 0.0,
            rows: 0,
            train_windows: 0,
            val_windows: 0,
            seed: 0,
        },
    };

    /// The inference architecture.
    #[must_use]
    pub const fn arch(&self) -> Arch {
        crate::model::arch_of(self.variant, self.tied)
    }

    /// The sizes a forward pass runs at.
    pub(crate) const fn dims(&self) -> Dims {
        Dims::of(&self.window, &self.layers)
    }

    /// Number of `f32` parameters (as [`Header::param_count`](crate::Header::param_count)).
    pub(crate) fn param_total(&self) -> usize {
        let d = self.dims();
        crate::model::param_count(self.arch(), d.n, d.h, d.z)
    }

    /// Whether the model needs the `logistic` feature (as
    /// [`Header::uses_logistic`](crate::Header::uses_logistic)).
    #[must_use]
    pub fn uses_logistic(&self) -> bool {
        crate::model::uses_logistic(&self.layers, &self.scoring)
    }

    /// Extra scratch values (as [`Header::scratch_len`](crate::Header::scratch_len)).
    #[must_use]
    pub const fn scratch_len(&self) -> usize {
        crate::model::scratch_len(self.arch(), self.dims().n)
    }
}

impl From<&Header<'_>> for Config {
    /// All of the header but its name.
    fn from(h: &Header<'_>) -> Self {
        Config {
            variant: h.variant,
            tied: h.tied,
            window: h.window,
            layers: h.layers,
            scaling: h.scaling,
            scoring: h.scoring,
            threshold: h.threshold,
            alarm: h.alarm,
            faults: h.faults,
            adaptation: h.adaptation,
            training: h.training,
        }
    }
}

/// Streaming state besides the buffers.
#[derive(Debug, Clone, Copy, PartialEq)]
struct State {
    loaded: bool,
    index: u64,
    head: usize,
    filled: u16,
    since_scored: u16,
    imputed_left: u16,
    smoothed: Option<f32>,
    above: u16,
    below: u16,
    alarm: bool,
    /// The last fresh score; meaningful once `scored` is set. A plain value rather than an
    /// `Option`, so that an unloaded detector is all zero bytes and a `static` one lands in
    /// `.bss` instead of costing its size in flash.
    last: Score,
    scored: bool,
}

impl State {
    const NEW: State = State {
        loaded: false,
        index: 0,
        head: 0,
        filled: 0,
        since_scored: 0,
        imputed_left: 0,
        smoothed: None,
        above: 0,
        below: 0,
        alarm: false,
        last: Score::ZERO,
        scored: false,
    };

    /// Forgets the window, smoothing and exceedance counts; keeps the sample count and the
    /// alarm, so a sensor fault during an anomaly neither silences the alarm nor lets drift
    /// tracking absorb the anomaly while the window refills.
    fn restart(&mut self) {
        *self = State {
            loaded: self.loaded,
            index: self.index,
            alarm: self.alarm,
            ..State::NEW
        };
    }
}

/// The detector over some [`Storage`]; use the [`Detector`] (fixed) or `DynDetector` (heap)
/// aliases.
#[derive(Debug, Clone)]
pub struct Engine<S> {
    config: Config,
    state: State,
    storage: S,
}

impl<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize,
> Detector<C, W, N, H, Z, P, S>
{
    /// An empty detector with no model: every push reports [`FaultKind::NoModel`] until
    /// [`load`](Engine::load) succeeds. `const`, so it can live in a `static` and be loaded in
    /// place, without the model ever passing through the stack.
    #[must_use]
    pub const fn new() -> Self {
        Engine {
            config: Config::UNLOADED,
            state: State::NEW,
            storage: Fixed::new(),
        }
    }

    /// Loads a model file into a new fixed-size detector.
    ///
    /// # Errors
    /// [`LoadError::Decode`] for a bad file, [`LoadError::Shape`] naming the expected and found
    /// size when the file has other sizes than `C`, `W`, `H`, `Z` or `P`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let mut detector = Self::new();
        detector.load(bytes)?;
        Ok(detector)
    }

    /// Pushes one sample of exactly `C` channels; see [`Engine::push`].
    pub fn push_array(&mut self, sample: &[f32; C]) -> Verdict {
        self.push(sample)
    }
}

impl<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize,
> Default for Detector<C, W, N, H, Z, P, S>
{
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(feature = "alloc")]
impl DynDetector {
    /// Loads a model file of any size.
    ///
    /// # Errors
    /// [`LoadError::Decode`] for a bad file.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, LoadError> {
        let mut detector = Engine {
            config: Config::UNLOADED,
            state: State::NEW,
            storage: crate::storage::Heap::default(),
        };
        detector.load(bytes)?;
        Ok(detector)
    }
}

impl<S: Storage> Engine<S> {
    /// Replaces the model in place. On error the detector is left without a model.
    ///
    /// # Errors
    /// As [`Detector::from_bytes`].
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), LoadError> {
        self.state = State::NEW;
        let view = ModelView::from_bytes(bytes)?;
        let h = view.header();
        let config = Config::from(h);
        self.prepare(&config)?;
        nn::load_params(
            config.arch(),
            config.dims(),
            view.weight_bytes(),
            self.storage.params_mut(),
        );
        self.finish(config, view.channels());
        Ok(())
    }

    /// Loads a model decoded ahead of time (by a build script, with `ModelView::to_rust`,
    /// feature `alloc`): no file is read, so firmware that calls only this links no model
    /// reader. The values were checked when the file was
    /// decoded; this checks the sizes against the detector's, the layout version and the
    /// parameters' checksum (against flash corruption), then copies them. On error the
    /// detector is left without a model.
    ///
    /// # Errors
    /// [`LoadError::Shape`] for other sizes (or a channel or parameter list of another length
    /// than the configuration's), [`LoadError::NotCompiledIn`] as [`load`](Engine::load),
    /// [`LoadError::Decode`] with [`DecodeError::UnsupportedVersion`](crate::DecodeError) for
    /// parameters laid out by another version of this crate, or
    /// [`DecodeError::Checksum`](crate::DecodeError) when they do not match their checksum.
    pub fn load_decoded(&mut self, model: &Decoded<'_>) -> Result<(), LoadError> {
        self.state = State::NEW;
        let config = model.config;
        self.prepare(&config)?;
        model.check(&config)?;
        // `prepare` sized the storage from the configuration.
        let params = self.storage.params_mut();
        crate::storage::same("parameter list", params.len(), model.params.len())?;
        params.copy_from_slice(model.params);
        self.finish(config, model.channels.iter().copied());
        Ok(())
    }

    /// The checks shared by both loads: inference compiled in, sizes fit.
    fn prepare(&mut self, config: &Config) -> Result<(), LoadError> {
        compiled_in(config.variant)?;
        logistic_compiled_in(config.uses_logistic())?;
        Ok(self.storage.prepare(config)?)
    }

    /// Channel states, cleared errors and the configuration, after the parameters.
    fn finish<'c>(&mut self, config: Config, channels: impl Iterator<Item = Channel<'c>>) {
        let b = self.storage.buffers();
        for (slot, ch) in b.channels.iter_mut().zip(channels) {
            *slot = ChannelState {
                offset: ch.offset,
                inv_scale: 1.0 / ch.scale,
                min: ch.min,
                max: ch.max,
                ..ChannelState::IDENTITY
            };
        }
        b.errors.fill(0.0);
        self.config = config;
        self.state.loaded = true;
    }

    /// The loaded model's configuration.
    #[must_use]
    pub const fn config(&self) -> &Config {
        &self.config
    }

    /// Per-channel mean errors of the last scored window.
    #[must_use]
    pub fn channel_errors(&self) -> &[f32] {
        self.storage.errors()
    }

    /// The normalised samples in the window, oldest first (fewer than W while warming up).
    pub fn window(&self) -> impl Iterator<Item = &[f32]> {
        let channels = usize::from(self.config.window.channels).max(1);
        let ring = self.storage.ring();
        let filled = usize::from(self.state.filled);
        let length = usize::from(self.config.window.length);
        let head = self.state.head;
        // While warming up the oldest sample sits `filled` slots behind the head.
        let start = (head + length - filled) % length.max(1);
        (0..filled).filter_map(move |i| {
            let slot = (start + i) % length.max(1);
            ring.get(slot * channels..(slot + 1) * channels)
        })
    }

    /// Changes the threshold (for example after recalibrating on site).
    pub fn set_threshold(&mut self, value: f32) {
        if value.is_finite() && value >= 0.0 {
            self.config.threshold.value = value;
        }
    }

    /// Forgets the window, smoothing, alarm state, tracked baselines and sample count; keeps
    /// the model.
    pub fn reset(&mut self) {
        self.state = State {
            loaded: self.state.loaded,
            ..State::NEW
        };
        for ch in self.storage.buffers().channels.iter_mut() {
            ch.has_last = false;
            ch.faulty_run = 0;
            ch.baseline = 0.0;
            ch.masked_left = 0;
            ch.explains = false;
        }
    }

    /// Whether the alarm is on now (fault verdicts do not carry it; an alarm holds through
    /// sensor faults).
    #[must_use]
    pub fn alarm(&self) -> bool {
        self.state.alarm
    }

    /// The tracked per-channel baselines, in normalised units (all 0 without adaptation).
    pub fn baselines(&self) -> impl Iterator<Item = f32> + '_ {
        self.storage.channel_states().iter().map(|c| c.baseline)
    }

    /// Marks a missing sample (a gap in the stream): reported as a fault, handled by the
    /// model's recovery rule like a sample whose every channel is faulty.
    pub fn push_missing(&mut self) -> Verdict {
        self.push_inner(None)
    }

    /// Pushes one sample, raw sensor values in model channel order, and returns the verdict.
    ///
    /// A sample with a NaN, an infinity, a value outside its channel's range or of the wrong
    /// length is a [`SensorFault`]; it is never scored. If every faulty channel's run of faults is
    /// at most the model's `hold_max`, its last valid value is held and the window goes on
    /// (scores of windows holding such a value are marked `imputed`); otherwise the window,
    /// smoothing and exceedance counts restart, and scoring resumes once the window is full
    /// again. A model trained with whole channels masked (`Variant::Masked` with
    /// `MaskAxis::Channel`) does not restart for a channel that is out longer than that: it
    /// hides the channel (0 in its input, as in training) and keeps scoring on the others,
    /// leaving the hidden channel out of the score until the window no longer holds a hidden
    /// value (those scores are marked `imputed`); such a sample is scored rather than reported
    /// as a fault. It restarts only when every channel is out.
    /// An alarm that was on stays on through the fault ([`alarm`](Self::alarm)) until
    /// enough normal windows after it turn it off.
    pub fn push(&mut self, sample: &[f32]) -> Verdict {
        self.push_inner(Some(sample))
    }

    fn fault_verdict(&self, fault: SensorFault) -> Verdict {
        Verdict {
            index: self.state.index,
            status: Status::Fault(fault),
            hidden: None,
        }
    }

    fn push_inner(&mut self, sample: Option<&[f32]>) -> Verdict {
        // Only the few fields needed here are copied: a copy of the whole `Config` was ~130
        // bytes of `push`'s stack.
        let channels = usize::from(self.config.window.channels);
        let window = self.config.window.length;
        if !self.state.loaded {
            let v = self.fault_verdict(SensorFault {
                channel: None,
                kind: FaultKind::NoModel,
                faulty_channels: 0,
                reset: false,
            });
            self.state.index = self.state.index.wrapping_add(1);
            return v;
        }
        if let Some(s) = sample
            && s.len() != channels
        {
            let v = self.fault_verdict(SensorFault {
                channel: None,
                kind: FaultKind::WrongLength,
                faulty_channels: 0,
                reset: false,
            });
            self.state.index = self.state.index.wrapping_add(1);
            return v;
        }
        let mut fault: Option<SensorFault> = None;
        let mut must_reset = false;
        let hold_max = self.config.faults.hold_max;
        // A model trained with whole channels hidden can score without a dropped channel.
        let can_mask = matches!(
            self.config.variant,
            Variant::Masked {
                mask: MaskAxis::Channel
            }
        ) && sample.is_some();
        let mut masked_now = 0usize;
        let head = self.state.head;
        let b = self.storage.buffers();
        let Some(slot) = b.ring.get_mut(head * channels..(head + 1) * channels) else {
            return self.fault_verdict(SensorFault {
                channel: None,
                kind: FaultKind::NoModel,
                faulty_channels: 0,
                reset: false,
            });
        };
        for (c, (ch, out)) in b.channels.iter_mut().zip(slot.iter_mut()).enumerate() {
            let kind = match sample.and_then(|s| s.get(c)) {
                None => Err(FaultKind::Missing),
                Some(&v) => classify(v, ch),
            };
            match kind {
                Ok(normalised) => {
                    ch.last = normalised;
                    ch.has_last = true;
                    ch.faulty_run = 0;
                    ch.masked_left = ch.masked_left.saturating_sub(1);
                    *out = normalised - ch.baseline;
                }
                Err(kind) => {
                    ch.faulty_run = ch.faulty_run.saturating_add(1);
                    if ch.has_last && ch.faulty_run <= hold_max {
                        ch.masked_left = ch.masked_left.saturating_sub(1);
                        *out = ch.last - ch.baseline;
                    } else if can_mask {
                        // Hidden as in training: 0 in the model's input, out of the score.
                        *out = 0.0;
                        ch.masked_left = window;
                        masked_now += 1;
                    } else {
                        must_reset = true;
                    }
                    let f = fault.get_or_insert(SensorFault {
                        channel: u16::try_from(c).ok(),
                        kind: if sample.is_none() {
                            FaultKind::Missing
                        } else {
                            kind
                        },
                        faulty_channels: 0,
                        reset: false,
                    });
                    f.faulty_channels = f.faulty_channels.saturating_add(1);
                }
            }
        }
        if sample.is_none()
            && let Some(f) = fault.as_mut()
        {
            f.channel = None;
        }
        // Masking needs at least one channel left to score from.
        if masked_now > 0 && masked_now >= channels {
            must_reset = true;
        }
        // A sample whose only faults are hidden channels is scored, not reported as a fault.
        if let Some(mut f) = fault
            && (must_reset || masked_now == 0)
        {
            if must_reset {
                self.state.restart();
                for ch in self.storage.buffers().channels.iter_mut() {
                    ch.masked_left = 0;
                }
                f.reset = true;
            } else {
                self.advance(window);
                self.state.imputed_left = window;
            }
            let v = self.fault_verdict(f);
            self.state.index = self.state.index.wrapping_add(1);
            return v;
        }
        self.advance(window);
        self.state.imputed_left = if masked_now > 0 {
            window
        } else {
            self.state.imputed_left.saturating_sub(1)
        };
        let mut v = self.after_valid_sample();
        // Scored around a hidden channel: the fault is still reported, with its channel.
        v.hidden = fault;
        self.track_drift();
        self.state.index = self.state.index.wrapping_add(1);
        v
    }

    /// Moves each channel's baseline towards its latest valid value, except those the alarm
    /// holds still.
    fn track_drift(&mut self) {
        let a = self.config.adaptation;
        if a.rate <= 0.0 {
            return;
        }
        let alarm = self.state.alarm;
        if alarm && a.in_alarm == AlarmHold::All {
            return;
        }
        let explaining = alarm && a.in_alarm == AlarmHold::Explaining;
        // Channels join the explanation in exceeding windows; it lasts until the alarm clears.
        let exceeds = explaining && self.state.scored && self.state.last.exceeds;
        let threshold = self.config.threshold.value;
        // The window's largest error, which its score already ranked.
        let top = self.state.last.top[0].map_or(usize::MAX, |t| usize::from(t.channel));
        let b = self.storage.buffers();
        for (c, (ch, &e)) in b.channels.iter_mut().zip(b.errors.iter()).enumerate() {
            if !explaining {
                ch.explains = false;
            } else if exceeds && (e > threshold || c == top) {
                ch.explains = true;
            }
            if !ch.explains {
                ch.baseline += a.rate * (ch.last - ch.baseline);
            }
        }
    }

    /// Moves the ring head past the sample just written.
    fn advance(&mut self, window: u16) {
        let st = &mut self.state;
        st.head = if st.head + 1 >= usize::from(window) {
            0
        } else {
            st.head + 1
        };
        st.filled = st.filled.saturating_add(1).min(window);
        st.since_scored = st.since_scored.saturating_add(1);
    }

    fn after_valid_sample(&mut self) -> Verdict {
        let index = self.state.index;
        let (window, scoring, threshold, alarm) = (
            self.config.window,
            self.config.scoring,
            self.config.threshold.value,
            self.config.alarm,
        );
        if self.state.filled < window.length {
            return Verdict {
                index,
                status: Status::WarmingUp {
                    filled: self.state.filled,
                    needed: window.length,
                },
                hidden: None,
            };
        }
        if self.state.scored && self.state.since_scored < window.hop {
            let score = Score {
                fresh: false,
                ..self.state.last
            };
            let status = if self.state.alarm {
                Status::Anomalous {
                    score,
                    onset: false,
                }
            } else {
                Status::Normal(score)
            };
            return Verdict {
                index,
                status,
                hidden: None,
            };
        }
        let raw = self.score_window();
        self.state.since_scored = 0;
        let a = scoring.ewma;
        let value = match self.state.smoothed {
            Some(prev) if a < 1.0 => a * raw + (1.0 - a) * prev,
            _ => raw,
        };
        self.state.smoothed = Some(value);
        let exceeds = value > threshold;
        let onset = self.update_alarm(exceeds, &alarm);
        let score = Score {
            value,
            raw,
            exceeds,
            fresh: true,
            imputed: self.state.imputed_left > 0,
            top: top_channels(self.storage.errors()),
        };
        self.state.last = score;
        self.state.scored = true;
        let status = if self.state.alarm {
            Status::Anomalous { score, onset }
        } else {
            Status::Normal(score)
        };
        Verdict {
            index,
            status,
            hidden: None,
        }
    }

    /// Returns true when this window turned the alarm on.
    fn update_alarm(&mut self, exceeds: bool, alarm: &AlarmSpec) -> bool {
        let st = &mut self.state;
        if exceeds {
            st.above = st.above.saturating_add(1);
            st.below = 0;
        } else {
            st.below = st.below.saturating_add(1);
            st.above = 0;
        }
        if !st.alarm && st.above >= alarm.on_after {
            st.alarm = true;
            return true;
        }
        if st.alarm && st.below >= alarm.off_after {
            st.alarm = false;
        }
        false
    }

    /// Scores the full window in the ring. Finite and non-negative: an overflowing
    /// reconstruction scores `f32::MAX`.
    fn score_window(&mut self) -> f32 {
        let cfg = &self.config;
        let (n, h, z) = self.storage.dims();
        let channels = usize::from(cfg.window.channels);
        let split = self.state.head * channels;
        let Buffers {
            params,
            ring,
            xhat,
            h1,
            h2,
            z: zs,
            logvar,
            errors,
            channels: chans,
            scratch,
            ..
        } = self.storage.buffers();
        // Oldest sample first: the ring from the head to its end, then from its start. Read in
        // place, in that order, by the first layer and the errors (no copy of the window).
        let (newer, older) = ring.split_at(split.min(ring.len()));
        let x = [older, newer];
        let latent = nn::reconstruct(
            cfg.arch(),
            &cfg.layers,
            Dims {
                c: channels,
                n: n.value(),
                h: h.value(),
                z: z.value(),
            },
            params,
            x,
            Scratch {
                h1,
                z: zs,
                logvar,
                h2,
                extra: scratch,
            },
            xhat,
        );
        let Some(code_distance) = latent else {
            errors.fill(f32::MAX);
            return f32::MAX;
        };
        let mean = nn::channel_errors(cfg.scoring.metric, x, xhat, errors);
        // A NaN or overflowing reconstruction saturates like the score, so the per-channel
        // explanation stays finite and `MaxChannel` (whose fold skips NaN) cannot read 0.
        // Channels hidden after a dropout (channel-masked models) are left out of the score.
        let mut kept = 0usize;
        let mut kept_sum = 0.0f32;
        for (e, ch) in errors.iter_mut().zip(chans.iter()) {
            if ch.masked_left > 0 {
                *e = 0.0;
            } else {
                if e.is_nan() || *e > f32::MAX {
                    *e = f32::MAX;
                }
                kept += 1;
                kept_sum += *e;
            }
        }
        let mean = if kept < errors.len() && kept > 0 {
            kept_sum / kept as f32
        } else {
            mean
        };
        let mut score = match cfg.scoring.aggregate {
            Aggregate::Mean => mean,
            Aggregate::MaxChannel => errors.iter().fold(0.0f32, |m, &e| m.max(e)),
        };
        if cfg.scoring.kl_weight > 0.0 {
            match cfg.arch() {
                #[cfg(feature = "vae")]
                Arch::Vae => score += cfg.scoring.kl_weight * nn::kl_divergence(zs, logvar),
                Arch::VqVae { .. } => score += cfg.scoring.kl_weight * code_distance,
                // Without the `vae` feature a VAE is never loaded.
                _ => {}
            }
        }
        if score.is_nan() || score > f32::MAX {
            f32::MAX
        } else {
            score.max(0.0)
        }
    }
}

/// Refuses a model whose architecture's inference this build leaves out (cargo features).
fn compiled_in(variant: Variant) -> Result<(), LoadError> {
    #[allow(clippy::match_like_matches_macro)]
    // reason: the arms are `cfg!`, true or false per build
    let compiled = match variant {
        Variant::Vae => cfg!(feature = "vae"),
        Variant::VqVae { .. } => cfg!(feature = "vqvae"),
        Variant::Hierarchical { .. } => cfg!(feature = "hierarchical"),
        _ => true,
    };
    match variant.feature() {
        Some(feature) if !compiled => Err(LoadError::NotCompiledIn {
            variant: variant.name(),
            feature,
        }),
        _ => Ok(()),
    }
}

/// Refuses a model that uses the sigmoid activation or the BCE error in a build without the
/// `logistic` feature.
fn logistic_compiled_in(uses: bool) -> Result<(), LoadError> {
    if uses && !cfg!(feature = "logistic") {
        return Err(LoadError::NotCompiledIn {
            variant: "sigmoid or BCE",
            feature: "logistic",
        });
    }
    Ok(())
}

/// Validates and normalises one raw value. The common case (a finite value in range) takes two
/// comparisons and a finiteness test of the result: NaN fails both comparisons, and NaN or an
/// infinity that passes them normalises to a non-finite value; which fault it was is sorted out
/// only then, in the order NaN, infinite, below range, above range, overflow.
#[inline(always)]
fn classify(v: f32, ch: &ChannelState) -> Result<f32, FaultKind> {
    let out_of_range = if v < ch.min {
        FaultKind::BelowRange
    } else if v > ch.max {
        FaultKind::AboveRange
    } else {
        let n = (v - ch.offset) * ch.inv_scale;
        if n.is_finite() {
            return Ok(n);
        }
        FaultKind::Overflow
    };
    Err(if v.is_nan() {
        FaultKind::NotANumber
    } else if v.is_infinite() {
        FaultKind::Infinite
    } else {
        out_of_range
    })
}

/// The `TOP_K` channels with the largest errors, largest first; ties keep the lower index.
fn top_channels(errors: &[f32]) -> [Option<ChannelError>; TOP_K] {
    let mut top: [Option<ChannelError>; TOP_K] = [None; TOP_K];
    for (c, &e) in errors.iter().enumerate() {
        let Ok(channel) = u16::try_from(c) else {
            break;
        };
        let mut item = ChannelError { channel, error: e };
        for slot in top.iter_mut() {
            match slot {
                Some(cur) if cur.error >= item.error => {}
                Some(cur) => core::mem::swap(cur, &mut item),
                None => {
                    *slot = Some(item);
                    break;
                }
            }
        }
    }
    top
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `classify` as it was before the fault kinds were sorted out after the range tests: each
    /// test in turn.
    fn classify_in_turn(v: f32, ch: &ChannelState) -> Result<f32, FaultKind> {
        if v.is_nan() {
            return Err(FaultKind::NotANumber);
        }
        if v.is_infinite() {
            return Err(FaultKind::Infinite);
        }
        if v < ch.min {
            return Err(FaultKind::BelowRange);
        }
        if v > ch.max {
            return Err(FaultKind::AboveRange);
        }
        let n = (v - ch.offset) * ch.inv_scale;
        if n.is_finite() {
            Ok(n)
        } else {
            Err(FaultKind::Overflow)
        }
    }

    /// The same verdict and the same bits for specials, range edges and overflowing scales.
    #[test]
    fn classify_matches_the_tests_in_turn() {
        let specials = [
            0.0,
            -0.0,
            1.0,
            -1.5,
            2.5,
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ];
        let mut checked = 0;
        for (min, max) in [
            (-1.5, 2.5),
            (f32::NEG_INFINITY, f32::INFINITY),
            (f32::MIN, f32::MAX),
            (f32::NAN, f32::NAN),
            (0.0, 0.0),
        ] {
            for (offset, inv_scale) in [(0.0, 1.0), (1.0, 1e30), (-1e30, 1e10), (0.5, 0.0)] {
                let ch = ChannelState {
                    offset,
                    inv_scale,
                    min,
                    max,
                    ..ChannelState::ZERO
                };
                for v in specials {
                    let (got, want) = (classify(v, &ch), classify_in_turn(v, &ch));
                    assert_eq!(
                        got.map(f32::to_bits),
                        want.map(f32::to_bits),
                        "{v} {min} {max}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, 5 * 4 * 13);
    }

    /// With every feature on (as CI tests) nothing is refused; CI also runs this test without
    /// them, where each left-out architecture is refused by name.
    #[test]
    fn architectures_left_out_are_refused_by_name() {
        let cases = [
            (Variant::Vae, "vae", cfg!(feature = "vae")),
            (
                Variant::VqVae { codebook: 4 },
                "vqvae",
                cfg!(feature = "vqvae"),
            ),
            (
                Variant::Hierarchical {
                    block: 2,
                    coarse_hidden: 2,
                    coarse_latent: 1,
                },
                "hierarchical",
                cfg!(feature = "hierarchical"),
            ),
        ];
        for (variant, feature, compiled) in cases {
            let got = compiled_in(variant);
            if compiled {
                assert_eq!(got, Ok(()));
            } else {
                assert_eq!(
                    got,
                    Err(LoadError::NotCompiledIn {
                        variant: variant.name(),
                        feature
                    })
                );
            }
        }
        assert_eq!(compiled_in(Variant::Plain), Ok(()));
        assert_eq!(compiled_in(Variant::Sparse), Ok(()));
        let logistic = if cfg!(feature = "logistic") {
            Ok(())
        } else {
            Err(LoadError::NotCompiledIn {
                variant: "sigmoid or BCE",
                feature: "logistic",
            })
        };
        assert_eq!(logistic_compiled_in(true), logistic);
        assert_eq!(logistic_compiled_in(false), Ok(()));
    }
}
