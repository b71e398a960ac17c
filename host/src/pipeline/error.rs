//! The pipeline's one error type.

use core::fmt;
use std::{io, path::PathBuf};

/// Why a pipeline could not be built or stopped early; [`kind`](PipelineError::kind) says which
/// part failed and carries its context.
#[derive(Debug)]
pub struct PipelineError {
    kind: Box<ErrorKind>,
}

/// What went wrong, with the file, stream, broker or thread it concerns.
#[derive(Debug)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A bad setting: no models, no sources, a bad pattern, shard range or address.
    Config(String),
    /// Reading or writing a file or stream failed.
    Io {
        /// What was being read or written.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A model file could not be read or loaded.
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// A CSV input could not be read.
    Csv {
        /// The file (or `stdin`).
        what: String,
        /// Why, with the line when known.
        message: String,
    },
    /// The MQTT broker could not be reached or refused a request.
    Mqtt {
        /// `host:port` of the broker.
        broker: String,
        /// Why.
        message: String,
    },
    /// A source thread failed or panicked.
    Source {
        /// The source's description.
        source_name: String,
        /// Why.
        message: String,
    },
    /// A worker thread failed or panicked; its queued samples were not scored.
    Worker {
        /// Worker number.
        worker: usize,
        /// Why.
        message: String,
    },
    /// The sink thread failed or panicked.
    Sink(String),
    /// A queue was closed because the thread at its other end stopped (a consequence of another
    /// failure, which is the one reported when known).
    Disconnected(&'static str),
}

impl PipelineError {
    /// Creates an error of the given kind.
    #[must_use]
    pub fn new(kind: ErrorKind) -> Self {
        PipelineError {
            kind: Box::new(kind),
        }
    }

    /// A configuration error.
    #[must_use]
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Config(message.into()))
    }

    /// An I/O error on `what`.
    #[must_use]
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::new(ErrorKind::Io {
            what: what.into(),
            source,
        })
    }

    /// An MQTT error with the broker's address.
    #[must_use]
    pub fn mqtt(broker: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Mqtt {
            broker: broker.into(),
            message: message.into(),
        })
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &ErrorKind {
        &self.kind
    }

    /// True for an error that only follows from another thread's failure.
    #[must_use]
    pub fn is_secondary(&self) -> bool {
        matches!(*self.kind, ErrorKind::Disconnected(_))
    }
}

impl fmt::Display for PipelineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.kind {
            ErrorKind::Config(m) => write!(f, "{m}"),
            ErrorKind::Io { what, source } => write!(f, "{what}: {source}"),
            ErrorKind::Model { path, message } => write!(f, "model {}: {message}", path.display()),
            ErrorKind::Csv { what, message } => write!(f, "{what}: {message}"),
            ErrorKind::Mqtt { broker, message } => write!(f, "mqtt broker {broker}: {message}"),
            ErrorKind::Source {
                source_name,
                message,
            } => write!(f, "source {source_name}: {message}"),
            ErrorKind::Worker { worker, message } => write!(f, "worker {worker}: {message}"),
            ErrorKind::Sink(m) => write!(f, "sink: {m}"),
            ErrorKind::Disconnected(what) => write!(f, "{what} closed early"),
        }
    }
}

impl core::error::Error for PipelineError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &*self.kind {
            ErrorKind::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}
