//! Builders for test models.

use sensorae::{
    Activation, Aggregate, Channel, ErrorMetric, Header, Scaling, Variant, encode_to_vec, testing,
};

/// An owned model description that tests tweak before encoding.
#[derive(Clone)]
pub struct Spec {
    pub header: Header<'static>,
    pub channels: Vec<Channel<'static>>,
    pub params: Vec<f32>,
}

impl Spec {
    /// A dense tanh model with deterministic parameters.
    pub fn new(channels: u16, window: u16, hidden: u32, latent: u32) -> Spec {
        let header = testing::header(channels, window, hidden, latent);
        Spec::from_header(header)
    }

    pub fn from_header(header: Header<'static>) -> Spec {
        let channels = (0..usize::from(header.window.channels))
            .map(testing::channel)
            .collect();
        let params = (0..header.param_count()).map(testing::param).collect();
        Spec {
            header,
            channels,
            params,
        }
    }

    /// Resets the parameters after a change of sizes or architecture.
    pub fn refill(mut self) -> Spec {
        self.params = (0..self.header.param_count()).map(testing::param).collect();
        self.channels = (0..usize::from(self.header.window.channels))
            .map(testing::channel)
            .collect();
        self
    }

    pub fn variant(mut self, variant: Variant, tied: bool) -> Spec {
        self.header.variant = variant;
        self.header.tied = tied;
        self.refill()
    }

    pub fn activations(mut self, a: [Activation; 4]) -> Spec {
        self.header.layers.encoder_hidden = a[0];
        self.header.layers.code = a[1];
        self.header.layers.decoder_hidden = a[2];
        self.header.layers.output = a[3];
        self
    }

    pub fn metric(mut self, metric: ErrorMetric, aggregate: Aggregate) -> Spec {
        self.header.scoring.metric = metric;
        self.header.scoring.aggregate = aggregate;
        if metric == ErrorMetric::Bce {
            self.header.scaling = Scaling::MinMax;
        }
        self
    }

    /// All parameters zero: the reconstruction is `output(0)`, so the score is a function of
    /// the input alone.
    pub fn zeroed(mut self) -> Spec {
        self.params.iter_mut().for_each(|p| *p = 0.0);
        self
    }

    /// Identity normalisation and no range limits.
    pub fn identity_channels(mut self) -> Spec {
        for ch in &mut self.channels {
            ch.offset = 0.0;
            ch.scale = 1.0;
            ch.min = f32::NEG_INFINITY;
            ch.max = f32::INFINITY;
        }
        self
    }

    /// The model file. Its header and channels are also decoded by the core's own reader and
    /// by postcard, which must agree (`wire::same_model`), so every test model checks it.
    pub fn bytes(&self) -> Vec<u8> {
        let bytes =
            encode_to_vec(&self.header, &self.channels, &self.params).expect("valid test model");
        crate::wire::same_model(&bytes);
        bytes
    }
}

/// A deterministic multichannel signal: sines of different phases plus a small ramp.
pub fn signal(t: usize, channels: usize) -> Vec<f32> {
    (0..channels)
        .map(|c| ((t as f32) * 0.37 + c as f32).sin() * 2.0 + 0.01 * c as f32)
        .collect()
}
