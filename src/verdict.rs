//! What one pushed sample yields.

use core::fmt;

use crate::model::TOP_K;

/// The outcome of one [`push`](crate::Engine::push).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Verdict {
    /// Zero-based index of the pushed sample since the detector was loaded or reset.
    pub index: u64,
    /// What the detector concluded.
    pub status: Status,
    /// A sensor fault this sample had that the detector scored around rather than stopping
    /// for: only a channel-masked model ([`Variant::Masked`](crate::Variant::Masked) over
    /// channels) does that, hiding the faulty channel from its input and its score. `None`
    /// otherwise; faults that stop scoring are in `status` as [`Status::Fault`].
    pub hidden: Option<SensorFault>,
}

/// What the detector concluded about a pushed sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Status {
    /// The window is not full yet; no score.
    WarmingUp {
        /// Valid samples in the window.
        filled: u16,
        /// Samples a window needs.
        needed: u16,
    },
    /// The alarm is off.
    Normal(Score),
    /// The alarm is on.
    Anomalous {
        /// The latest score.
        score: Score,
        /// This push turned the alarm on.
        onset: bool,
    },
    /// The sample could not be scored.
    Fault(SensorFault),
}

impl Verdict {
    /// The latest score, if the window has been scored.
    #[must_use]
    pub const fn score(&self) -> Option<&Score> {
        match &self.status {
            Status::Normal(score) | Status::Anomalous { score, .. } => Some(score),
            Status::WarmingUp { .. } | Status::Fault(_) => None,
        }
    }

    /// The alarm is on.
    #[must_use]
    pub const fn is_alarm(&self) -> bool {
        matches!(self.status, Status::Anomalous { .. })
    }

    /// The sensor fault, if this sample had one: the one that stopped scoring, or one a
    /// channel-masked model scored around ([`hidden`](Self::hidden)).
    #[must_use]
    pub const fn fault(&self) -> Option<&SensorFault> {
        match &self.status {
            Status::Fault(fault) => Some(fault),
            _ => self.hidden.as_ref(),
        }
    }
}

/// A window's anomaly score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Score {
    /// The score compared with the threshold (after EWMA smoothing, if the model smooths).
    /// Always finite and non-negative.
    pub value: f32,
    /// The window's score before smoothing.
    pub raw: f32,
    /// `value` is above the threshold.
    pub exceeds: bool,
    /// The window was scored at this push; false between hops, where the last score is repeated.
    pub fresh: bool,
    /// The window holds a value bridged over a short sensor fault.
    pub imputed: bool,
    /// The channels with the largest mean error, largest first.
    pub top: [Option<ChannelError>; TOP_K],
}

impl Score {
    /// A zero score, no channels.
    pub const ZERO: Score = Score {
        value: 0.0,
        raw: 0.0,
        exceeds: false,
        fresh: false,
        imputed: false,
        top: [None; TOP_K],
    };
}

/// One channel's mean reconstruction error over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelError {
    /// Channel index.
    pub channel: u16,
    /// Mean error over the window.
    pub error: f32,
}

/// A sample that could not be scored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SensorFault {
    /// The first faulty channel, or `None` for a whole missing sample or a sample of the wrong
    /// length.
    pub channel: Option<u16>,
    /// What was wrong with it.
    pub kind: FaultKind,
    /// How many channels of the sample were faulty.
    pub faulty_channels: u16,
    /// The window was reset; scoring resumes once it is full again.
    pub reset: bool,
}

/// What was wrong with a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// NaN: a missing or unreadable value.
    NotANumber,
    /// Plus or minus infinity.
    Infinite,
    /// Below the channel's physical minimum.
    BelowRange,
    /// Above the channel's physical maximum.
    AboveRange,
    /// So large that normalising it overflows.
    Overflow,
    /// The whole sample is missing (a gap in the stream).
    Missing,
    /// The sample has another number of channels than the model.
    WrongLength,
    /// No model has been loaded into the detector.
    NoModel,
}

impl FaultKind {
    /// Short lowercase name, as the command line prints it.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            FaultKind::NotANumber => "nan",
            FaultKind::Infinite => "inf",
            FaultKind::BelowRange => "below-range",
            FaultKind::AboveRange => "above-range",
            FaultKind::Overflow => "overflow",
            FaultKind::Missing => "missing",
            FaultKind::WrongLength => "wrong-length",
            FaultKind::NoModel => "no-model",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
