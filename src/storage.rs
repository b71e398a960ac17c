//! Where a detector keeps its parameters, window and scratch space: fixed-size arrays on the
//! device, `Vec`s on the host. The detector logic is written once over [`Storage`].

use nalgebra::{Const, Dim};

use crate::{detector::Config, error::ShapeError};

/// Per-channel normalisation, range and fault-bridging state.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelState {
    /// Subtracted before scaling.
    pub offset: f32,
    /// Multiplied by after subtracting (the reciprocal of the file's scale).
    pub inv_scale: f32,
    /// Smallest valid raw value.
    pub min: f32,
    /// Largest valid raw value.
    pub max: f32,
    /// Last valid normalised value, for bridging short faults.
    pub last: f32,
    /// `last` holds a value.
    pub has_last: bool,
    /// Consecutive faulty samples so far.
    pub faulty_run: u16,
    /// Tracked level, in normalised units, subtracted before windowing.
    pub baseline: f32,
    /// Channel-masked models: samples until the window holds no hidden (zeroed) value of
    /// this channel any more; while it is non-zero the channel is left out of the score.
    pub masked_left: u16,
    /// Explains the current alarm, so its baseline holds still ([`AlarmHold::Explaining`](crate::AlarmHold::Explaining)).
    pub explains: bool,
}

impl ChannelState {
    /// All zero: the state of a channel before a model is loaded (so an unloaded detector is
    /// all zero bytes and lives in `.bss`).
    pub const ZERO: Self = ChannelState {
        offset: 0.0,
        inv_scale: 0.0,
        min: 0.0,
        max: 0.0,
        last: 0.0,
        has_last: false,
        faulty_run: 0,
        baseline: 0.0,
        masked_left: 0,
        explains: false,
    };

    /// A channel that accepts every finite value unchanged.
    pub const IDENTITY: Self = ChannelState {
        offset: 0.0,
        inv_scale: 1.0,
        min: f32::NEG_INFINITY,
        max: f32::INFINITY,
        last: 0.0,
        has_last: false,
        faulty_run: 0,
        baseline: 0.0,
        masked_left: 0,
        explains: false,
    };
}

/// The buffers of a detector, borrowed all at once.
pub struct Buffers<'a> {
    /// Parameters in file order, except that each weight matrix is in the kernel's block layout
    /// (read-only while scoring; [`Storage::params_mut`] writes them).
    pub params: &'a [f32],
    /// Ring of the last W normalised samples, C values each (time-major).
    pub ring: &'a mut [f32],
    /// The reconstruction, then the entry errors (N).
    pub xhat: &'a mut [f32],
    /// Encoder hidden activations (H).
    pub h1: &'a mut [f32],
    /// Decoder hidden activations (H).
    pub h2: &'a mut [f32],
    /// Code, or the VAE's mean (Z).
    pub z: &'a mut [f32],
    /// The VAE's log-variance (Z).
    pub logvar: &'a mut [f32],
    /// Per-channel state (C).
    pub channels: &'a mut [ChannelState],
    /// Per-channel mean errors of the last scored window (C).
    pub errors: &'a mut [f32],
    /// Extra scratch of architectures that need it ([`scratch_len`](crate::scratch_len)).
    pub scratch: &'a mut [f32],
}

/// Storage a detector runs on.
pub trait Storage {
    /// Input width type.
    type N: Dim;
    /// Hidden width type.
    type H: Dim;
    /// Code width type.
    type Z: Dim;

    /// Makes room for a model's sizes (host) or checks they fit (device).
    ///
    /// # Errors
    /// [`ShapeError`] when a fixed size differs from the model's.
    fn prepare(&mut self, config: &Config) -> Result<(), ShapeError>;

    /// The sizes as nalgebra dimensions.
    fn dims(&self) -> (Self::N, Self::H, Self::Z);

    /// All buffers, mutably (the parameters read-only).
    fn buffers(&mut self) -> Buffers<'_>;

    /// The parameters, to write a model's weights into after [`prepare`](Storage::prepare).
    fn params_mut(&mut self) -> &mut [f32];

    /// Per-channel mean errors of the last scored window.
    fn errors(&self) -> &[f32];

    /// The ring of normalised samples.
    fn ring(&self) -> &[f32];

    /// Per-channel state.
    fn channel_states(&self) -> &[ChannelState];
}

/// Fixed-size storage: C channels, window W, input N = C * W, hidden H, code Z, P parameters
/// and S extra scratch values ([`scratch_len`](crate::scratch_len); 0, the default, for every
/// architecture but the hierarchical one). Its size is known at compile time and it never
/// allocates.
#[derive(Debug, Clone)]
pub struct Fixed<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize = 0,
> {
    params: [f32; P],
    ring: [f32; N],
    xhat: [f32; N],
    h1: [f32; H],
    h2: [f32; H],
    z: [f32; Z],
    logvar: [f32; Z],
    channels: [ChannelState; C],
    errors: [f32; C],
    scratch: [f32; S],
}

impl<
    const C: usize,
    const W: usize,
    const N: usize,
    const H: usize,
    const Z: usize,
    const P: usize,
    const S: usize,
> Fixed<C, W, N, H, Z, P, S>
{
    /// Zeroed storage. Fails to compile unless `N == C * W` and every size is non-zero.
    #[must_use]
    pub const fn new() -> Self {
        const {
            assert!(N == C * W, "N must equal C * W");
            assert!(
                C > 0 && W > 0 && H > 0 && Z > 0 && P > 0,
                "sizes must be non-zero"
            );
        }
        Fixed {
            params: [0.0; P],
            ring: [0.0; N],
            xhat: [0.0; N],
            h1: [0.0; H],
            h2: [0.0; H],
            z: [0.0; Z],
            logvar: [0.0; Z],
            channels: [ChannelState::ZERO; C],
            errors: [0.0; C],
            scratch: [0.0; S],
        }
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
> Default for Fixed<C, W, N, H, Z, P, S>
{
    fn default() -> Self {
        Self::new()
    }
}

/// `Ok` when the sizes agree, else the mismatch named `what`.
pub(crate) fn same(what: &'static str, expected: usize, found: usize) -> Result<(), ShapeError> {
    if expected == found {
        Ok(())
    } else {
        Err(ShapeError::Mismatch {
            what,
            expected,
            found,
        })
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
> Storage for Fixed<C, W, N, H, Z, P, S>
{
    type N = Const<N>;
    type H = Const<H>;
    type Z = Const<Z>;

    fn prepare(&mut self, config: &Config) -> Result<(), ShapeError> {
        same("channels", C, usize::from(config.window.channels))?;
        same("window", W, usize::from(config.window.length))?;
        same("hidden", H, config.layers.hidden as usize)?;
        same("latent", Z, config.layers.latent as usize)?;
        same("parameters", P, config.param_total())?;
        same("scratch", S, config.scratch_len())
    }

    fn dims(&self) -> (Self::N, Self::H, Self::Z) {
        (Const, Const, Const)
    }

    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            params: &self.params,
            ring: &mut self.ring,
            xhat: &mut self.xhat,
            h1: &mut self.h1,
            h2: &mut self.h2,
            z: &mut self.z,
            logvar: &mut self.logvar,
            channels: &mut self.channels,
            errors: &mut self.errors,
            scratch: &mut self.scratch,
        }
    }

    fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    fn errors(&self) -> &[f32] {
        &self.errors
    }

    fn ring(&self) -> &[f32] {
        &self.ring
    }

    fn channel_states(&self) -> &[ChannelState] {
        &self.channels
    }
}

/// Heap storage sized from the model file, for hosts that score any model.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, Default)]
pub struct Heap {
    n: usize,
    h: usize,
    z: usize,
    /// Shared by clones: a detector cloned per stream (the streaming pipeline) keeps one copy
    /// of the weights, not one per stream; loading another model gives this one its own.
    params: alloc::sync::Arc<alloc::vec::Vec<f32>>,
    ring: alloc::vec::Vec<f32>,
    xhat: alloc::vec::Vec<f32>,
    h1: alloc::vec::Vec<f32>,
    h2: alloc::vec::Vec<f32>,
    z_buf: alloc::vec::Vec<f32>,
    logvar: alloc::vec::Vec<f32>,
    channels: alloc::vec::Vec<ChannelState>,
    errors: alloc::vec::Vec<f32>,
    scratch: alloc::vec::Vec<f32>,
}

#[cfg(feature = "alloc")]
impl Storage for Heap {
    type N = nalgebra::Dyn;
    type H = nalgebra::Dyn;
    type Z = nalgebra::Dyn;

    fn prepare(&mut self, config: &Config) -> Result<(), ShapeError> {
        let crate::nn::Dims { c, n, h, z } = config.dims();
        (self.n, self.h, self.z) = (n, h, z);
        let resize = |v: &mut alloc::vec::Vec<f32>, len: usize| {
            v.clear();
            v.resize(len, 0.0);
        };
        // A fresh allocation, so clones sharing the old weights keep them.
        self.params = alloc::sync::Arc::new(alloc::vec![0.0; config.param_total()]);
        resize(&mut self.ring, self.n);
        resize(&mut self.xhat, self.n);
        resize(&mut self.h1, self.h);
        resize(&mut self.h2, self.h);
        resize(&mut self.z_buf, self.z);
        resize(&mut self.logvar, self.z);
        resize(&mut self.errors, c);
        resize(&mut self.scratch, config.scratch_len());
        self.channels.clear();
        self.channels.resize(c, ChannelState::IDENTITY);
        Ok(())
    }

    fn dims(&self) -> (Self::N, Self::H, Self::Z) {
        (
            nalgebra::Dyn(self.n),
            nalgebra::Dyn(self.h),
            nalgebra::Dyn(self.z),
        )
    }

    fn buffers(&mut self) -> Buffers<'_> {
        Buffers {
            params: &self.params,
            ring: &mut self.ring,
            xhat: &mut self.xhat,
            h1: &mut self.h1,
            h2: &mut self.h2,
            z: &mut self.z_buf,
            logvar: &mut self.logvar,
            channels: &mut self.channels,
            errors: &mut self.errors,
            scratch: &mut self.scratch,
        }
    }

    fn params_mut(&mut self) -> &mut [f32] {
        // Unique right after `prepare`, so this never copies while loading.
        alloc::sync::Arc::make_mut(&mut self.params).as_mut_slice()
    }

    fn errors(&self) -> &[f32] {
        &self.errors
    }

    fn ring(&self) -> &[f32] {
        &self.ring
    }

    fn channel_states(&self) -> &[ChannelState] {
        &self.channels
    }
}
