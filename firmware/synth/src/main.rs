//! `sensorae-synth C W H Z OUT [THRESHOLD]`: writes a deterministic dense autoencoder model with
//! SKAB's channel names and normalisation, tanh hidden layers, scaled pseudo-random weights.
//! Its scores mean nothing; it exists so the firmware can be sized and timed for any C, W, H, Z
//! before a trained model of that size exists. Not needed in your firmware.

use sensorae::{Activation, Aggregate, AlarmSpec, Channel, FaultPolicy, encode_to_vec};

/// SKAB's sensors with mean and standard deviation over the first 400 rows of `valve1/0.csv`
/// (the benchmark's protocol fits its scaler there).
const SKAB: [(&str, f32, f32); 8] = [
    ("Accelerometer1RMS", 0.026338, 0.000289051),
    ("Accelerometer2RMS", 0.0402472, 0.000759115),
    ("Current", 0.993951, 0.279554),
    ("Pressure", 0.0801253, 0.261622),
    ("Temperature", 79.076, 0.498047),
    ("Thermocouple", 26.0424, 0.0368948),
    ("Voltage", 231.864, 10.2512),
    ("Volume Flow RateRMS", 32.16, 0.397496),
];

/// Golden-ratio sequence in [-0.5, 0.5), as `sensorae::testing::param`.
fn param(i: usize) -> f32 {
    let x = (i as f32 + 1.0) * 0.618_034;
    (x - x.floor()) - 0.5
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [c, w, h, z, out, rest @ ..] = args.as_slice() else {
        return Err("usage: sensorae-synth C W H Z OUT [THRESHOLD]".into());
    };
    let (c, w): (u16, u16) = (c.parse()?, w.parse()?);
    let (h, z): (u32, u32) = (h.parse()?, z.parse()?);
    let threshold: f32 = rest.first().map_or(Ok(1.0), |t| t.parse())?;
    let channels: Vec<Channel<'_>> = SKAB
        .iter()
        .take(usize::from(c))
        .map(|&(name, offset, scale)| Channel {
            name,
            offset,
            scale,
            min: f32::NEG_INFINITY,
            max: f32::INFINITY,
        })
        .collect();
    if channels.len() != usize::from(c) {
        return Err(format!("at most {} channels", SKAB.len()).into());
    }
    // Start from the core's test header, so fields the format gains later get their defaults.
    let mut header = sensorae::testing::header(c, w, h, z);
    header.name = "synthetic (deterministic, untrained)";
    header.layers.encoder_hidden = Activation::Tanh;
    header.layers.decoder_hidden = Activation::Tanh;
    header.scoring.aggregate = Aggregate::MaxChannel;
    header.threshold.value = threshold;
    header.alarm = AlarmSpec {
        on_after: 3,
        off_after: 5,
    };
    header.faults = FaultPolicy { hold_max: 2 };
    // Dense layout: W1 b1 W2 b2 W3 b3 W4 b4; weights scaled by 2/sqrt(fan-in), biases small.
    let n = usize::from(c) * usize::from(w);
    let (h, z) = (h as usize, z as usize);
    let layers = [(h, n), (z, h), (h, z), (n, h)];
    let mut params = Vec::with_capacity(header.param_count());
    for (rows, cols) in layers {
        let gain = 2.0 / (cols as f32).sqrt();
        for _ in 0..rows * cols {
            params.push(param(params.len()) * gain);
        }
        for _ in 0..rows {
            params.push(param(params.len()) * 0.1);
        }
    }
    let bytes = encode_to_vec(&header, &channels, &params)?;
    std::fs::write(out, &bytes)?;
    eprintln!(
        "wrote {out}: C={c} W={w} H={h} Z={z}, {} params, {} bytes",
        params.len(),
        bytes.len()
    );
    Ok(())
}
