//! The command line's error: one line that names the file, line or field, and an exit code.

use std::{io, path::PathBuf};

use crate::{
    calibrate::CalibrationError,
    data::DataError,
    metrics::MetricsError,
    pipeline::{ErrorKind as PipelineErrorKind, PipelineError},
    plot::PlotError,
    train::TrainError,
};

/// Anything a command can fail with. `Display` is one line; [`Error::exit_code`] is 2 for usage
/// errors and 1 for data and model errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A flag combination or value the command cannot use.
    #[error("{0}")]
    Usage(String),
    /// A CSV file could not be read or parsed.
    #[error(transparent)]
    Data(#[from] DataError),
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A model file is corrupt or not a model file.
    #[error("{}: {source}", path.display())]
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        source: sensorae::LoadError,
    },
    /// A model and a data file do not fit together.
    #[error("{}: {message}", path.display())]
    Mismatch {
        /// The data file.
        path: PathBuf,
        /// What does not fit, and what was expected.
        message: String,
    },
    /// Training failed.
    #[error("training: {0}")]
    Train(#[from] TrainError),
    /// The threshold could not be calibrated.
    #[error("calibration: {0}")]
    Calibration(#[from] CalibrationError),
    /// Metrics could not be computed.
    #[error("metrics: {0}")]
    Metrics(#[from] MetricsError),
    /// A plot could not be drawn.
    #[error(transparent)]
    Plot(#[from] PlotError),
    /// The streaming pipeline could not start or stopped on a failure.
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl Error {
    /// Process exit code: 2 for usage errors, 1 for everything else.
    #[must_use]
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) => 2,
            Error::Pipeline(e) if matches!(e.kind(), PipelineErrorKind::Config(_)) => 2,
            _ => 1,
        }
    }
}

/// Result of the command layer.
pub type Result<T, E = Error> = std::result::Result<T, E>;
