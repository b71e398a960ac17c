//! Typed errors of the core: one small enum per operation.

use core::fmt;

/// Why model bytes were rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the file's fixed parts or its declared length.
    Truncated {
        /// Bytes the file needs.
        expected: usize,
        /// Bytes there are.
        found: usize,
    },
    /// The file does not start with `SNAE`.
    BadMagic,
    /// A format version this build does not read.
    UnsupportedVersion {
        /// Version in the file.
        found: u16,
    },
    /// Bytes after the checksum.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// The CRC-32 does not match the content.
    Checksum {
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the file.
        computed: u32,
    },
    /// The payload is not a valid postcard encoding of the expected structure.
    Payload,
    /// A header or channel field holds an impossible value.
    InvalidField {
        /// Which field.
        field: &'static str,
    },
    /// The weights section has the wrong length for the declared sizes.
    WeightsLength {
        /// Bytes the sizes imply.
        expected: usize,
        /// Bytes there are.
        found: usize,
    },
    /// A weight is NaN or infinite.
    NonFiniteWeight {
        /// Index of the parameter.
        index: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeError::Truncated { expected, found } => {
                write!(
                    f,
                    "model file truncated: expected {expected} bytes, found {found}"
                )
            }
            DecodeError::BadMagic => f.write_str("not a sensorae model file (magic is not SNAE)"),
            DecodeError::UnsupportedVersion { found } => write!(
                f,
                "unsupported model format version {found} (this build reads version {})",
                crate::codec::FORMAT_VERSION
            ),
            DecodeError::TrailingBytes { count } => {
                write!(
                    f,
                    "{count} unexpected bytes after the model file's checksum"
                )
            }
            DecodeError::Checksum { stored, computed } => write!(
                f,
                "model file checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): the file is corrupt"
            ),
            DecodeError::Payload => f.write_str("model payload does not decode"),
            DecodeError::InvalidField { field } => write!(f, "model field `{field}` is invalid"),
            DecodeError::WeightsLength { expected, found } => write!(
                f,
                "model weights section has {found} bytes, the sizes imply {expected}"
            ),
            DecodeError::NonFiniteWeight { index } => {
                write!(f, "model parameter {index} is NaN or infinite")
            }
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a model could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The model description is invalid (the same checks the reader makes).
    Invalid(DecodeError),
    /// The channel list length differs from the header's channel count.
    ChannelCount {
        /// Channels the header declares.
        expected: usize,
        /// Channels given.
        found: usize,
    },
    /// The parameter slice length differs from what the sizes imply.
    ParamCount {
        /// Parameters the sizes imply.
        expected: usize,
        /// Parameters given.
        found: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall => f.write_str("output buffer too small for the model"),
            EncodeError::Invalid(e) => write!(f, "invalid model: {e}"),
            EncodeError::ChannelCount { expected, found } => {
                write!(f, "header declares {expected} channels, {found} given")
            }
            EncodeError::ParamCount { expected, found } => {
                write!(f, "sizes imply {expected} parameters, {found} given")
            }
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why a valid model file does not fit a fixed-size detector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeError {
    /// A size of the file differs from the detector type's.
    Mismatch {
        /// Which size (`channels`, `window`, `input`, `hidden`, `latent`, `parameters`).
        what: &'static str,
        /// The detector type's size.
        expected: usize,
        /// The model file's size.
        found: usize,
    },
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ShapeError::Mismatch {
                what,
                expected,
                found,
            } => write!(
                f,
                "model {what} is {found}, the detector type was built for {expected}"
            ),
        }
    }
}

impl core::error::Error for ShapeError {}

/// Why a detector could not be loaded from model bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LoadError {
    /// The bytes are not a valid model file.
    Decode(DecodeError),
    /// The model is valid but has other sizes than the detector.
    Shape(ShapeError),
    /// The model is valid, but this build of the crate leaves out part of its inference.
    NotCompiledIn {
        /// What the model needs: its variant (`vae`, `vqvae`, `hierarchical`), or `sigmoid or
        /// BCE`.
        variant: &'static str,
        /// The cargo feature of `sensorae` that compiles it in.
        feature: &'static str,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Decode(e) => e.fmt(f),
            LoadError::Shape(e) => e.fmt(f),
            LoadError::NotCompiledIn { variant, feature } => write!(
                f,
                "this build of sensorae leaves out the inference of {variant} models, which \
                 this model needs (enable the `{feature}` feature)"
            ),
        }
    }
}

impl core::error::Error for LoadError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match self {
            LoadError::Decode(e) => Some(e),
            LoadError::Shape(e) => Some(e),
            LoadError::NotCompiledIn { .. } => None,
        }
    }
}

impl From<DecodeError> for LoadError {
    fn from(e: DecodeError) -> Self {
        LoadError::Decode(e)
    }
}

impl From<ShapeError> for LoadError {
    fn from(e: ShapeError) -> Self {
        LoadError::Shape(e)
    }
}
