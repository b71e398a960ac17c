//! A hand-written reader of postcard's wire format for [`Header`] and [`Channel`], the model
//! file's only postcard-encoded parts.
//!
//! Serde's derived visitors and postcard's generic deserializer were about 2.8 KB of a
//! Cortex-M4F's flash at opt-level "s" (a `SeqAccess::next_element` per struct, enum visitors,
//! `&str` deserialisation); this reader is a few hundred bytes. It accepts and rejects exactly
//! what `postcard::take_from_bytes` 1.x does, with the same values and the same remaining
//! bytes; the `Deserialize` derives stay as the reference that tests (`tests/wire.rs`)
//! and the `wire` fuzz target compare it with. The rules (postcard 1.1
//! `src/de/deserializer.rs`):
//! - `u16`/`u32`/`u64`/`usize`: LEB128 varint of at most `ceil(bits / 7)` bytes; the last of
//!   those may hold only the `bits % 7` remaining bits; overlong encodings (`0x80 0x00` for 0)
//!   are accepted;
//! - `f32`: 4 bytes little-endian, any bit pattern;
//! - `bool`: one byte, 0 or 1;
//! - enum: variant index as a `u32` varint (an index past the last variant is an error), then
//!   the variant's fields;
//! - `&str`: `usize` varint length, then that many bytes of valid UTF-8;
//! - struct: its fields in declaration order, nothing else.

use crate::model::{
    Activation, Adaptation, Aggregate, AlarmHold, AlarmSpec, Channel, ErrorMetric, FaultPolicy,
    Header, Layers, MaskAxis, Scaling, Scoring, Threshold, ThresholdMethod, TrainingSummary,
    Variant, WindowSpec,
};

/// Decodes a [`Header`] from the front of `bytes`; returns it and the bytes after it, or
/// `None` where `postcard::take_from_bytes::<Header>` fails.
pub(crate) fn take_header(bytes: &[u8]) -> Option<(Header<'_>, &[u8])> {
    let mut r = Reader {
        rest: bytes,
        ok: true,
    };
    let header = r.header();
    r.ok.then_some((header, r.rest))
}

/// Decodes a [`Channel`] from the front of `bytes`; returns it and the bytes after it, or
/// `None` where `postcard::take_from_bytes::<Channel>` fails.
pub(crate) fn take_channel(bytes: &[u8]) -> Option<(Channel<'_>, &[u8])> {
    let mut r = Reader {
        rest: bytes,
        ok: true,
    };
    let channel = r.channel();
    r.ok.then_some((channel, r.rest))
}

/// The bytes not read yet, and whether everything so far was valid.
///
/// A read that fails clears `ok` and returns a placeholder (0, `false`, `""`, the first
/// variant), and decoding goes on to the end of the structure, whose value is then dropped:
/// one test at the end instead of a branch after each of the header's ~50 fields, which was
/// most of the decoder's code on a microcontroller. The values read after a failure do not
/// matter, and every read stays in bounds, so the outcome is postcard's.
struct Reader<'a> {
    rest: &'a [u8],
    ok: bool,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> u8 {
        if let Some((&b, rest)) = self.rest.split_first() {
            self.rest = rest;
            b
        } else {
            self.ok = false;
            0
        }
    }

    /// An unsigned varint of a `bits`-bit type, as postcard reads it (see the module docs).
    /// One function for every width: code size over speed (a header has a few dozen).
    #[inline(never)]
    fn varint(&mut self, bits: u32) -> u64 {
        let max_bytes = bits.div_ceil(7);
        let last_max = (1u8 << (bits % 7)) - 1;
        let mut out = 0u64;
        for i in 0..max_bytes {
            let b = self.byte();
            out |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                if i + 1 == max_bytes && b > last_max {
                    self.ok = false;
                }
                return out;
            }
        }
        // A continuation bit on the last byte the type allows.
        self.ok = false;
        out
    }

    // The `as` casts below cannot truncate a valid value: `varint(bits)` is below `2^bits`
    // unless it failed, and then the value is dropped.
    fn u16(&mut self) -> u16 {
        self.varint(16) as u16
    }

    fn u32(&mut self) -> u32 {
        self.varint(32) as u32
    }

    fn u64(&mut self) -> u64 {
        self.varint(64)
    }

    /// An enum's variant index, failing at `count` or more (serde's derived visitor rejects
    /// those).
    #[inline(never)]
    fn tag(&mut self, count: u32) -> u32 {
        let t = self.u32();
        if t < count {
            t
        } else {
            self.ok = false;
            0
        }
    }

    #[inline(never)]
    fn f32(&mut self) -> f32 {
        if let Some((b, rest)) = self.rest.split_first_chunk::<4>() {
            self.rest = rest;
            f32::from_le_bytes(*b)
        } else {
            self.ok = false;
            0.0
        }
    }

    fn bool(&mut self) -> bool {
        match self.byte() {
            0 => false,
            1 => true,
            _ => {
                self.ok = false;
                false
            }
        }
    }

    #[inline(never)]
    fn str(&mut self) -> &'a str {
        let len = self.varint(usize::BITS) as usize;
        if let Some((s, rest)) = self.rest.split_at_checked(len)
            && let Ok(s) = core::str::from_utf8(s)
        {
            self.rest = rest;
            s
        } else {
            self.ok = false;
            ""
        }
    }

    fn activation(&mut self) -> Activation {
        // Variant indices in declaration order (serde's derive numbers them so).
        match self.tag(6) {
            0 => Activation::Linear,
            1 => Activation::Relu,
            2 => Activation::LeakyRelu { slope: self.f32() },
            3 => Activation::Sigmoid,
            4 => Activation::Tanh,
            _ => Activation::SoftThreshold { lambda: self.f32() },
        }
    }

    fn variant(&mut self) -> Variant {
        match self.tag(8) {
            0 => Variant::Plain,
            1 => Variant::Sparse,
            2 => Variant::Denoising,
            3 => Variant::Contractive,
            4 => Variant::Vae,
            5 => Variant::VqVae {
                codebook: self.u16(),
            },
            6 => Variant::Masked {
                mask: match self.tag(2) {
                    0 => MaskAxis::Time,
                    _ => MaskAxis::Channel,
                },
            },
            _ => Variant::Hierarchical {
                block: self.u16(),
                coarse_hidden: self.u16(),
                coarse_latent: self.u16(),
            },
        }
    }

    fn threshold_method(&mut self) -> ThresholdMethod {
        match self.tag(4) {
            0 => ThresholdMethod::Fixed,
            1 => ThresholdMethod::Quantile { q: self.f32() },
            2 => ThresholdMethod::Sigma { k: self.f32() },
            _ => ThresholdMethod::Pot {
                risk: self.f32(),
                initial_quantile: self.f32(),
            },
        }
    }

    /// Struct expressions evaluate their fields in the order written, which is the order of
    /// the fields on the wire.
    fn header(&mut self) -> Header<'a> {
        Header {
            name: self.str(),
            variant: self.variant(),
            tied: self.bool(),
            window: WindowSpec {
                channels: self.u16(),
                length: self.u16(),
                hop: self.u16(),
            },
            layers: Layers {
                hidden: self.u32(),
                latent: self.u32(),
                encoder_hidden: self.activation(),
                code: self.activation(),
                decoder_hidden: self.activation(),
                output: self.activation(),
            },
            scaling: match self.tag(2) {
                0 => Scaling::Standard,
                _ => Scaling::MinMax,
            },
            scoring: Scoring {
                metric: match self.tag(3) {
                    0 => ErrorMetric::Mse,
                    1 => ErrorMetric::Mae,
                    _ => ErrorMetric::Bce,
                },
                aggregate: match self.tag(2) {
                    0 => Aggregate::Mean,
                    _ => Aggregate::MaxChannel,
                },
                kl_weight: self.f32(),
                ewma: self.f32(),
            },
            threshold: Threshold {
                value: self.f32(),
                method: self.threshold_method(),
                calibration_windows: self.u32(),
            },
            alarm: AlarmSpec {
                on_after: self.u16(),
                off_after: self.u16(),
            },
            faults: FaultPolicy {
                hold_max: self.u16(),
            },
            adaptation: Adaptation {
                rate: self.f32(),
                in_alarm: match self.tag(3) {
                    0 => AlarmHold::Follow,
                    1 => AlarmHold::All,
                    _ => AlarmHold::Explaining,
                },
            },
            training: TrainingSummary {
                epochs: self.u32(),
                train_loss: self.f32(),
                val_loss: self.f32(),
                rows: self.u64(),
                train_windows: self.u32(),
                val_windows: self.u32(),
                seed: self.u64(),
            },
        }
    }

    fn channel(&mut self) -> Channel<'a> {
        Channel {
            name: self.str(),
            offset: self.f32(),
            scale: self.f32(),
            min: self.f32(),
            max: self.f32(),
        }
    }
}
