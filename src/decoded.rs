//! Models decoded ahead of time. A build script reads and checks the model file on the host
//! and writes it out as a Rust constant (`ModelView::to_rust`, feature `alloc`); the device
//! then loads it with [`Engine::load_decoded`](crate::Engine::load_decoded) and links no file
//! reader (2.9 KB less core code at opt-level "s" on a Cortex-M4F, see `firmware/README.md`).

use crate::{
    detector::Config,
    error::{DecodeError, LoadError},
    model::Channel,
};

/// The parameters' in-memory layout on this target: each weight matrix in the dense kernel's
/// block order, whose widest block has 16 rows on 32-bit Arm and 32 elsewhere. The low byte is
/// that width, the high byte the layout's version. A [`Decoded`] laid out for another target or
/// by a crate with another layout is refused rather than scored wrongly.
pub const PARAM_LAYOUT: u16 = layout_id(crate::nn::WIDEST);

/// Version of the block layout, bumped when the kernel's order changes.
const LAYOUT_VERSION: u16 = 1;

const fn layout_id(widest: usize) -> u16 {
    LAYOUT_VERSION << 8 | widest as u16
}

/// CRC-32 (ISO-HDLC, as the model file), bitwise: checked once per load.
const CRC32: crc::Crc<u32, crc::NoTable> =
    crc::Crc::<u32, crc::NoTable>::new(&crc::CRC_32_ISO_HDLC);

/// A checked model file, decoded: what [`Engine::load`](crate::Engine::load) would read from it,
/// ready to copy. Written by `ModelView::to_rust` (feature `alloc`), so its values passed
/// every check of the file reader.
#[derive(Debug, Clone, Copy)]
pub struct Decoded<'a> {
    /// Everything of the header but the name.
    pub config: Config,
    /// The channels in order.
    pub channels: &'a [Channel<'a>],
    /// The parameters in the detector's layout ([`PARAM_LAYOUT`]), not the file's order.
    pub params: &'a [f32],
    /// [`Decoded::checksum`] of `params`.
    pub crc: u32,
    /// The [`PARAM_LAYOUT`] of the crate that wrote it.
    pub layout: u16,
}

impl Decoded<'_> {
    /// CRC-32 of parameters as little-endian bytes.
    #[must_use]
    pub fn checksum(params: &[f32]) -> u32 {
        let mut digest = CRC32.digest();
        for p in params {
            digest.update(&p.to_le_bytes());
        }
        digest.finalize()
    }

    /// The channel list's length against `config`, the layout and the checksum (the
    /// parameter list's length is checked where it is copied).
    pub(crate) fn check(&self, config: &Config) -> Result<(), LoadError> {
        crate::storage::same("channel list", config.dims().c, self.channels.len())?;
        if self.layout != PARAM_LAYOUT {
            return Err(DecodeError::UnsupportedVersion { found: self.layout }.into());
        }
        let computed = Self::checksum(self.params);
        if computed != self.crc {
            return Err(DecodeError::Checksum {
                stored: self.crc,
                computed,
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(feature = "alloc")]
pub use source::param_layout_for;

#[cfg(feature = "alloc")]
mod source {
    use alloc::{string::String, vec::Vec};
    use core::fmt::{self, Write};

    use super::Decoded;
    use crate::{
        codec::ModelView,
        detector::Config,
        model::{
            Activation, Adaptation, AlarmSpec, Channel, FaultPolicy, Layers, Scoring, Threshold,
            ThresholdMethod, TrainingSummary, Variant, WindowSpec,
        },
    };

    /// The [`PARAM_LAYOUT`](crate::PARAM_LAYOUT) of a target, by its `target_arch`
    /// (`CARGO_CFG_TARGET_ARCH` in a build script).
    #[must_use]
    pub fn param_layout_for(target_arch: &str) -> u16 {
        super::layout_id(crate::nn::widest_for(target_arch))
    }

    impl ModelView<'_> {
        /// The parameters in the layout a detector on `target_arch` keeps them in (as its
        /// [`Engine::load`](crate::Engine::load) stores them; see
        /// [`PARAM_LAYOUT`](crate::PARAM_LAYOUT)).
        #[must_use]
        pub fn layout_params(&self, target_arch: &str) -> Vec<f32> {
            let config = Config::from(self.header());
            let mut params = alloc::vec![0.0; config.param_total()];
            crate::nn::load_params_for(
                crate::nn::widest_for(target_arch),
                config.arch(),
                config.dims(),
                self.weight_bytes(),
                &mut params,
            );
            params
        }

        /// Rust source of one item, `pub static {item}: sensorae::Decoded<'static> = ...;`,
        /// holding this model decoded for a detector on `target_arch` (a build script passes
        /// `CARGO_CFG_TARGET_ARCH`), to `include!` and pass to
        /// [`Engine::load_decoded`](crate::Engine::load_decoded). Floats are written as their
        /// bits, so every value (infinite ranges too) is exact.
        #[must_use]
        pub fn to_rust(&self, item: &str, target_arch: &str) -> String {
            let mut out = String::new();
            // Writing to a `String` does not fail.
            let _ = self.write_rust(item, target_arch, &mut out);
            out
        }

        fn write_rust(&self, item: &str, target_arch: &str, out: &mut String) -> fmt::Result {
            let params = self.layout_params(target_arch);
            let h = self.header();
            writeln!(
                out,
                "/// The model {:?}, decoded by sensorae's build-time reader.",
                h.name
            )?;
            write!(
                out,
                "pub static {item}: sensorae::Decoded<'static> = sensorae::Decoded {{\n    config: "
            )?;
            Config::from(h).lit(out)?;
            out.push_str(",\n    channels: &[\n");
            for ch in self.channels() {
                out.push_str("        ");
                ch.lit(out)?;
                out.push_str(",\n");
            }
            out.push_str("    ],\n    params: &[");
            for (i, p) in params.iter().enumerate() {
                out.push_str(if i % 4 == 0 { "\n        " } else { " " });
                write!(out, "f32::from_bits({:#010x}),", p.to_bits())?;
            }
            writeln!(
                out,
                "\n    ],\n    crc: {:#010x},\n    layout: {:#06x},\n}};",
                Decoded::checksum(&params),
                param_layout_for(target_arch)
            )
        }
    }

    /// A value written as a Rust expression (crate paths spelled out).
    trait Lit {
        fn lit(&self, out: &mut String) -> fmt::Result;
    }

    impl Lit for f32 {
        fn lit(&self, out: &mut String) -> fmt::Result {
            // The value for readers; the bits for the compiler.
            write!(
                out,
                "f32::from_bits({:#010x}) /* {self:?} */",
                self.to_bits()
            )
        }
    }

    macro_rules! plain {
        ($($t:ty),*) => {$(
            impl Lit for $t {
                fn lit(&self, out: &mut String) -> fmt::Result {
                    write!(out, "{self}")
                }
            }
        )*};
    }
    plain!(bool, u16, u32, u64);

    impl Lit for &str {
        fn lit(&self, out: &mut String) -> fmt::Result {
            // `Debug` escapes as a Rust string literal does.
            write!(out, "{self:?}")
        }
    }

    /// `sensorae::Path { field: value, ... }` (a struct, or an enum variant with fields).
    macro_rules! record {
        ($out:expr, $path:expr, $($field:ident),*) => {{
            $out.push_str("sensorae::");
            $out.push_str($path);
            $out.push_str(" { ");
            $(
                $out.push_str(concat!(stringify!($field), ": "));
                $field.lit($out)?;
                $out.push_str(", ");
            )*
            $out.push('}');
            Ok(())
        }};
    }

    /// Structs destructured without `..`, so a new field fails to compile here until it is
    /// written out.
    macro_rules! struct_lit {
        ($t:ident { $($field:ident),* }) => {
            impl Lit for $t {
                fn lit(&self, out: &mut String) -> fmt::Result {
                    let $t { $($field),* } = self;
                    record!(out, stringify!($t), $($field),*)
                }
            }
        };
    }
    struct_lit!(WindowSpec {
        channels,
        length,
        hop
    });
    struct_lit!(Layers {
        hidden,
        latent,
        encoder_hidden,
        code,
        decoder_hidden,
        output
    });
    struct_lit!(Scoring {
        metric,
        aggregate,
        kl_weight,
        ewma
    });
    struct_lit!(Threshold {
        value,
        method,
        calibration_windows
    });
    struct_lit!(AlarmSpec {
        on_after,
        off_after
    });
    struct_lit!(FaultPolicy { hold_max });
    struct_lit!(Adaptation { rate, in_alarm });
    struct_lit!(TrainingSummary {
        epochs,
        train_loss,
        val_loss,
        rows,
        train_windows,
        val_windows,
        seed
    });
    struct_lit!(Config {
        variant,
        tied,
        window,
        layers,
        scaling,
        scoring,
        threshold,
        alarm,
        faults,
        adaptation,
        training
    });

    impl Lit for Channel<'_> {
        fn lit(&self, out: &mut String) -> fmt::Result {
            let Channel {
                name,
                offset,
                scale,
                min,
                max,
            } = self;
            record!(out, "Channel", name, offset, scale, min, max)
        }
    }

    /// Enums without fields: `sensorae::Type::Variant`, the variant's name from `Debug`.
    macro_rules! unit_enum {
        ($($t:ident),*) => {$(
            impl Lit for crate::model::$t {
                fn lit(&self, out: &mut String) -> fmt::Result {
                    write!(out, concat!("sensorae::", stringify!($t), "::{:?}"), self)
                }
            }
        )*};
    }
    unit_enum!(MaskAxis, ErrorMetric, Aggregate, Scaling, AlarmHold);

    impl Lit for Activation {
        fn lit(&self, out: &mut String) -> fmt::Result {
            match self {
                Activation::LeakyRelu { slope } => record!(out, "Activation::LeakyRelu", slope),
                Activation::SoftThreshold { lambda } => {
                    record!(out, "Activation::SoftThreshold", lambda)
                }
                Activation::Linear | Activation::Relu | Activation::Sigmoid | Activation::Tanh => {
                    write!(out, "sensorae::Activation::{self:?}")
                }
            }
        }
    }

    impl Lit for Variant {
        fn lit(&self, out: &mut String) -> fmt::Result {
            match self {
                Variant::VqVae { codebook } => record!(out, "Variant::VqVae", codebook),
                Variant::Masked { mask } => record!(out, "Variant::Masked", mask),
                Variant::Hierarchical {
                    block,
                    coarse_hidden,
                    coarse_latent,
                } => record!(
                    out,
                    "Variant::Hierarchical",
                    block,
                    coarse_hidden,
                    coarse_latent
                ),
                Variant::Plain
                | Variant::Sparse
                | Variant::Denoising
                | Variant::Contractive
                | Variant::Vae => write!(out, "sensorae::Variant::{self:?}"),
            }
        }
    }

    impl Lit for ThresholdMethod {
        fn lit(&self, out: &mut String) -> fmt::Result {
            match self {
                ThresholdMethod::Fixed => out.write_str("sensorae::ThresholdMethod::Fixed"),
                ThresholdMethod::Quantile { q } => record!(out, "ThresholdMethod::Quantile", q),
                ThresholdMethod::Sigma { k } => record!(out, "ThresholdMethod::Sigma", k),
                ThresholdMethod::Pot {
                    risk,
                    initial_quantile,
                } => record!(out, "ThresholdMethod::Pot", risk, initial_quantile),
            }
        }
    }
}
