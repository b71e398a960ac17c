//! Reading and writing `.snae` model files.
//!
//! ```text
//! offset 0   magic  b"SNAE"
//!        4   format version, u16 little-endian
//!        6   payload length L, u32 little-endian
//!       10   payload: postcard(Header) ++ C x postcard(Channel) ++ P x f32 little-endian
//!   10 + L   CRC-32 (ISO-HDLC) of bytes 0 .. 10 + L, u32 little-endian
//! ```
//! The weights section is the postcard encoding of `[f32; P]` (postcard writes no length for a
//! fixed array), each matrix column-major. `docs/model-format.md` is the full specification.

use crate::{
    error::{DecodeError, EncodeError},
    model::{
        Activation, Aggregate, Channel, ErrorMetric, Header, MAX_CHANNELS, MAX_CODEBOOK, MAX_WIDTH,
        MAX_WINDOW, MIN_BLOCK, Scaling, ThresholdMethod, Variant,
    },
    nn::{self, Dims},
    wire,
};

/// The four bytes every model file starts with.
pub const MAGIC: [u8; 4] = *b"SNAE";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Bytes before the payload.
pub const PREFIX_LEN: usize = 10;
/// Bytes of the trailing checksum.
pub const CRC_LEN: usize = 4;

/// Bitwise, without a lookup table: the 1 KiB table of the default (`Table<1>`) was the
/// largest single item of the loader on a microcontroller; checking is once per load.
const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// A checked, borrowed view of a model file: the header is decoded, channels and weights are
/// validated and read on demand without copying.
#[derive(Debug, Clone, Copy)]
pub struct ModelView<'a> {
    header: Header<'a>,
    channels: &'a [u8],
    weights: &'a [u8],
}

impl<'a> ModelView<'a> {
    /// Checks magic, version, length, checksum, every field and size, and that every weight is
    /// finite, before anything is used.
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first check that failed.
    ///
    /// # Examples
    /// ```
    /// assert!(sensorae::ModelView::from_bytes(b"not a model").is_err());
    /// ```
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let fixed = PREFIX_LEN + CRC_LEN;
        let (Some(magic), Some(version), Some(len)) = (
            bytes.first_chunk::<4>(),
            bytes.get(4..).and_then(<[u8]>::first_chunk::<2>),
            bytes.get(6..).and_then(<[u8]>::first_chunk::<4>),
        ) else {
            return Err(DecodeError::Truncated {
                expected: fixed,
                found: bytes.len(),
            });
        };
        if *magic != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = u16::from_le_bytes(*version);
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion { found: version });
        }
        let payload_len = u32::from_le_bytes(*len) as usize;
        let total = payload_len.saturating_add(fixed);
        if bytes.len() < total {
            return Err(DecodeError::Truncated {
                expected: total,
                found: bytes.len(),
            });
        }
        if bytes.len() > total {
            return Err(DecodeError::TrailingBytes {
                count: bytes.len() - total,
            });
        }
        let body_end = PREFIX_LEN + payload_len;
        let (Some(body), Some(crc)) = (
            bytes.get(..body_end),
            bytes.get(body_end..).and_then(<[u8]>::first_chunk::<4>),
        ) else {
            return Err(DecodeError::Payload);
        };
        let stored = u32::from_le_bytes(*crc);
        let computed = CRC32.checksum(body);
        if stored != computed {
            return Err(DecodeError::Checksum { stored, computed });
        }
        let payload = body.get(PREFIX_LEN..).ok_or(DecodeError::Payload)?;
        Self::from_payload(payload)
    }

    /// Decodes and validates a payload without the prefix and checksum (for fuzzing the body
    /// decoder and for tools that frame payloads themselves).
    ///
    /// # Errors
    /// A [`DecodeError`] naming the first check that failed.
    pub fn from_payload(payload: &'a [u8]) -> Result<Self, DecodeError> {
        let (header, mut rest) = wire::take_header(payload).ok_or(DecodeError::Payload)?;
        validate_header(&header)?;
        let channels_start = rest;
        for _ in 0..header.window.channels {
            let (channel, tail) = wire::take_channel(rest).ok_or(DecodeError::Payload)?;
            validate_channel(&channel)?;
            rest = tail;
        }
        let channels = channels_start
            .get(..channels_start.len() - rest.len())
            .ok_or(DecodeError::Payload)?;
        let expected = param_total(&header).saturating_mul(4);
        if rest.len() != expected {
            return Err(DecodeError::WeightsLength {
                expected,
                found: rest.len(),
            });
        }
        let view = ModelView {
            header,
            channels,
            weights: rest,
        };
        if let Some(index) = view.weights().position(|w| !w.is_finite()) {
            return Err(DecodeError::NonFiniteWeight { index });
        }
        Ok(view)
    }

    /// The decoded header.
    #[must_use]
    pub const fn header(&self) -> &Header<'a> {
        &self.header
    }

    /// The channels in order.
    pub fn channels(&self) -> impl Iterator<Item = Channel<'a>> + 'a {
        let mut rest = self.channels;
        core::iter::from_fn(move || {
            let (channel, tail) = wire::take_channel(rest)?;
            rest = tail;
            Some(channel)
        })
    }

    /// The weights section: the parameters as little-endian `f32`s, in file order.
    pub(crate) const fn weight_bytes(&self) -> &'a [u8] {
        self.weights
    }

    /// The parameters in file order (see `docs/model-format.md`).
    pub fn weights(&self) -> impl ExactSizeIterator<Item = f32> + 'a {
        self.weights
            .as_chunks::<4>()
            .0
            .iter()
            .map(|b| f32::from_le_bytes(*b))
    }
}

/// Writes a model file into `out` and returns the number of bytes written.
///
/// The header, channels and parameters get the same checks the reader makes, so whatever is
/// written can be read back.
///
/// # Errors
/// [`EncodeError::Invalid`] for a field the reader would reject, a count mismatch, or
/// [`EncodeError::BufferTooSmall`].
pub fn encode(
    header: &Header<'_>,
    channels: &[Channel<'_>],
    params: &[f32],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    check_before_encode(header, channels, params)?;
    let payload_start = PREFIX_LEN;
    let mut at = payload_start;
    at += postcard::to_slice(
        header,
        out.get_mut(at..).ok_or(EncodeError::BufferTooSmall)?,
    )
    .map_err(|_| EncodeError::BufferTooSmall)?
    .len();
    for channel in channels {
        at += postcard::to_slice(
            channel,
            out.get_mut(at..).ok_or(EncodeError::BufferTooSmall)?,
        )
        .map_err(|_| EncodeError::BufferTooSmall)?
        .len();
    }
    for p in params {
        let slot = out.get_mut(at..at + 4).ok_or(EncodeError::BufferTooSmall)?;
        slot.copy_from_slice(&p.to_le_bytes());
        at += 4;
    }
    finish_frame(out, at)
}

/// Writes a model file into a new `Vec`.
///
/// # Errors
/// As [`encode`], except that the buffer never is too small.
#[cfg(feature = "alloc")]
pub fn encode_to_vec(
    header: &Header<'_>,
    channels: &[Channel<'_>],
    params: &[f32],
) -> Result<alloc::vec::Vec<u8>, EncodeError> {
    check_before_encode(header, channels, params)?;
    let mut out = alloc::vec![0u8; PREFIX_LEN];
    let header_bytes = postcard::to_allocvec(header).map_err(|_| EncodeError::BufferTooSmall)?;
    out.extend_from_slice(&header_bytes);
    for channel in channels {
        let bytes = postcard::to_allocvec(channel).map_err(|_| EncodeError::BufferTooSmall)?;
        out.extend_from_slice(&bytes);
    }
    for p in params {
        out.extend_from_slice(&p.to_le_bytes());
    }
    let end = out.len();
    out.extend_from_slice(&[0; CRC_LEN]);
    let written = finish_frame(&mut out, end)?;
    out.truncate(written);
    Ok(out)
}

fn check_before_encode(
    header: &Header<'_>,
    channels: &[Channel<'_>],
    params: &[f32],
) -> Result<(), EncodeError> {
    validate_header(header).map_err(EncodeError::Invalid)?;
    let expected = usize::from(header.window.channels);
    if channels.len() != expected {
        return Err(EncodeError::ChannelCount {
            expected,
            found: channels.len(),
        });
    }
    for channel in channels {
        validate_channel(channel).map_err(EncodeError::Invalid)?;
    }
    if params.len() != header.param_count() {
        return Err(EncodeError::ParamCount {
            expected: header.param_count(),
            found: params.len(),
        });
    }
    if let Some(index) = params.iter().position(|w| !w.is_finite()) {
        return Err(EncodeError::Invalid(DecodeError::NonFiniteWeight { index }));
    }
    Ok(())
}

/// Fills in the prefix and appends the CRC for a payload that ends at `end`.
fn finish_frame(out: &mut [u8], end: usize) -> Result<usize, EncodeError> {
    let payload_len = end
        .checked_sub(PREFIX_LEN)
        .and_then(|len| u32::try_from(len).ok())
        .ok_or(EncodeError::BufferTooSmall)?;
    let prefix = out
        .first_chunk_mut::<PREFIX_LEN>()
        .ok_or(EncodeError::BufferTooSmall)?;
    let [m0, m1, m2, m3] = MAGIC;
    let [v0, v1] = FORMAT_VERSION.to_le_bytes();
    let [l0, l1, l2, l3] = payload_len.to_le_bytes();
    *prefix = [m0, m1, m2, m3, v0, v1, l0, l1, l2, l3];
    let crc = CRC32.checksum(out.get(..end).ok_or(EncodeError::BufferTooSmall)?);
    out.get_mut(end..end + CRC_LEN)
        .ok_or(EncodeError::BufferTooSmall)?
        .copy_from_slice(&crc.to_le_bytes());
    Ok(end + CRC_LEN)
}

/// The sizes of a header as the inference code takes them.
pub(crate) const fn dims_of(h: &Header<'_>) -> Dims {
    Dims::of(&h.window, &h.layers)
}

/// [`Header::param_count`], counted by walking [`nn::segments`], which loading links anyway,
/// instead of by the layout's second description in [`param_count`](crate::param_count) (a
/// few hundred bytes of a microcontroller's code). Both are the saturating sum of the same
/// terms, so they agree on every header (tested below).
pub(crate) fn param_total(h: &Header<'_>) -> usize {
    nn::param_total(h.arch(), dims_of(h))
}

fn check(ok: bool, field: &'static str) -> Result<(), DecodeError> {
    if ok {
        Ok(())
    } else {
        Err(DecodeError::InvalidField { field })
    }
}

/// `Err(InvalidField { field })` for the first `field => condition` that is false, in the
/// order written, or `Ok(())`. (The conditions evaluated at once into flags, with the names in
/// one table, was 260 bytes larger on a Cortex-M4F.)
macro_rules! first_invalid {
    ($($field:literal => $ok:expr,)*) => {{
        $(check($ok, $field)?;)*
        Ok(())
    }};
}

/// Not inlined: the header has four activations to check.
#[inline(never)]
fn valid_activation(a: Activation) -> bool {
    match a {
        Activation::LeakyRelu { slope } => (0.0..1.0).contains(&slope),
        Activation::SoftThreshold { lambda } => (0.0..f32::INFINITY).contains(&lambda),
        _ => true,
    }
}

fn validate_header(h: &Header<'_>) -> Result<(), DecodeError> {
    let c = usize::from(h.window.channels);
    let w = usize::from(h.window.length);
    let hidden = h.layers.hidden as usize;
    let latent = h.layers.latent as usize;
    let codebook = match h.variant {
        Variant::VqVae { codebook } => Some(usize::from(codebook)),
        _ => None,
    };
    let hier = match h.variant {
        Variant::Hierarchical {
            block,
            coarse_hidden,
            coarse_latent,
        } => Some((
            usize::from(block),
            usize::from(coarse_hidden),
            usize::from(coarse_latent),
        )),
        _ => None,
    };
    let method_ok = match h.threshold.method {
        ThresholdMethod::Fixed => true,
        ThresholdMethod::Quantile { q } => q > 0.0 && q < 1.0,
        ThresholdMethod::Sigma { k } => k.is_finite(),
        ThresholdMethod::Pot {
            risk,
            initial_quantile,
        } => risk > 0.0 && risk < 1.0 && initial_quantile > 0.0 && initial_quantile < 1.0,
    };
    // Comparisons are false for NaN, so a range with finite or open infinite bounds implies
    // `is_finite`.
    first_invalid! {
        "window.channels" => (1..=MAX_CHANNELS).contains(&c),
        "window.length" => (1..=MAX_WINDOW).contains(&w),
        "window.hop" => h.window.hop >= 1,
        "window.channels*window.length" => c * w <= MAX_WIDTH,
        "layers.hidden" => (1..=MAX_WIDTH).contains(&hidden),
        "layers.latent" => (1..=MAX_WIDTH).contains(&latent),
        "layers.encoder_hidden" => valid_activation(h.layers.encoder_hidden),
        "layers.code" => valid_activation(h.layers.code),
        "layers.decoder_hidden" => valid_activation(h.layers.decoder_hidden),
        "layers.output" => valid_activation(h.layers.output),
        "tied" => !(h.tied
            && matches!(
                h.variant,
                Variant::Vae | Variant::VqVae { .. } | Variant::Hierarchical { .. }
            )),
        "variant.codebook" => codebook.is_none_or(|k| (1..=MAX_CODEBOOK).contains(&k)),
        "variant.block" => hier.is_none_or(|(b, _, _)| b >= MIN_BLOCK && w.is_multiple_of(b)),
        "variant.coarse_hidden" => hier.is_none_or(|(_, ch, _)| (1..=MAX_WIDTH).contains(&ch)),
        "variant.coarse_latent" => hier.is_none_or(|(_, _, cl)| (1..=MAX_WIDTH).contains(&cl)),
        // A (saturated) parameter or byte count past the address space is refused, not
        // wrapped.
        "variant" => hier.is_none()
            || (param_total(h).checked_mul(4).is_some_and(|b| b < usize::MAX)
                && h.scratch_len() < usize::MAX),
        "scaling" => h.scoring.metric != ErrorMetric::Bce || h.scaling == Scaling::MinMax,
        "scoring.kl_weight" => (0.0..f32::INFINITY).contains(&h.scoring.kl_weight),
        "scoring.ewma" => h.scoring.ewma > 0.0 && h.scoring.ewma <= 1.0,
        "scoring.aggregate" => {
            matches!(h.scoring.aggregate, Aggregate::Mean | Aggregate::MaxChannel)
        },
        "threshold.value" => (0.0..f32::INFINITY).contains(&h.threshold.value),
        "threshold.method" => method_ok,
        "adaptation.rate" => (0.0..1.0).contains(&h.adaptation.rate),
        "alarm.on_after" => h.alarm.on_after >= 1,
        "alarm.off_after" => h.alarm.off_after >= 1,
    }
}

fn validate_channel(ch: &Channel<'_>) -> Result<(), DecodeError> {
    first_invalid! {
        "channel.offset" => ch.offset.is_finite(),
        "channel.scale" => {
            ch.scale.is_finite() && ch.scale > 0.0 && (1.0 / ch.scale).is_finite()
        },
        "channel.range" => !ch.min.is_nan() && !ch.max.is_nan() && ch.min <= ch.max,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::testing;

    fn any_variant() -> impl Strategy<Value = Variant> {
        let size = prop_oneof![0..5u16, any::<u16>()];
        prop_oneof![
            Just(Variant::Plain),
            Just(Variant::Vae),
            size.clone()
                .prop_map(|codebook| Variant::VqVae { codebook }),
            (size.clone(), size.clone(), size).prop_map(|(block, ch, cl)| {
                Variant::Hierarchical {
                    block,
                    coarse_hidden: ch,
                    coarse_latent: cl,
                }
            }),
        ]
    }

    proptest! {
        /// The loader's count and the public one agree on every header, valid or not, up to
        /// saturation (widths near `u32::MAX` overflow even a 64-bit count).
        #[test]
        fn param_total_is_param_count(
            variant in any_variant(),
            tied in any::<bool>(),
            c in prop_oneof![1..9u16, any::<u16>()],
            w in prop_oneof![1..9u16, any::<u16>()],
            hidden in prop_oneof![0..9u32, any::<u32>(), Just(u32::MAX)],
            latent in prop_oneof![0..9u32, any::<u32>()],
        ) {
            let mut h = testing::header(c, w, hidden, latent);
            h.variant = variant;
            h.tied = tied;
            prop_assert_eq!(param_total(&h), h.param_count());
        }
    }

    #[test]
    fn param_total_saturates_like_param_count() {
        let mut h = testing::header(u16::MAX, u16::MAX, u32::MAX, u32::MAX);
        assert_eq!(h.param_count(), usize::MAX);
        assert_eq!(param_total(&h), usize::MAX);
        h.variant = Variant::VqVae { codebook: u16::MAX };
        assert_eq!(param_total(&h), h.param_count());
        h.layers.hidden = 3;
        assert_eq!(param_total(&h), h.param_count());
        assert!(param_total(&h) > 0);
    }
}
