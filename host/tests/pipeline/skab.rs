//! Real data: every labelled SKAB file replayed as its own stream through the reference-size
//! model (8 channels, window 16, hidden 32, code 8).

use std::{fs, path::PathBuf, time::Instant};

use sensorae::{Channel, encode_to_vec, testing};
use sensorae_host::pipeline::{Builder, CsvReplay, MemorySink, ModelMap};

use crate::common::{by_stream, reference, within};

const SKAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/skab");
const COLUMNS: [&str; 8] = [
    "Accelerometer1RMS",
    "Accelerometer2RMS",
    "Current",
    "Pressure",
    "Temperature",
    "Thermocouple",
    "Voltage",
    "Volume Flow RateRMS",
];

/// The 8 sensor columns of a SKAB file, in `COLUMNS` order.
fn read(path: &PathBuf) -> Vec<Vec<f32>> {
    let mut r = csv::ReaderBuilder::new()
        .delimiter(b';')
        .from_path(path)
        .unwrap();
    let header = r.headers().unwrap().clone();
    let idx: Vec<usize> = COLUMNS
        .iter()
        .map(|c| header.iter().position(|h| h.trim() == *c).unwrap())
        .collect();
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            idx.iter()
                .map(|&i| rec[i].trim().parse().unwrap())
                .collect()
        })
        .collect()
}

/// A model with the reference sizes, scaled to the anomaly-free recording.
fn skab_model() -> Vec<u8> {
    let normal = read(&PathBuf::from(format!(
        "{SKAB}/anomaly-free/anomaly-free.csv"
    )));
    let n = normal.len() as f32;
    let chans: Vec<Channel<'static>> = (0..8)
        .map(|c| {
            let mean = normal.iter().map(|r| r[c]).sum::<f32>() / n;
            let var = normal.iter().map(|r| (r[c] - mean).powi(2)).sum::<f32>() / n;
            Channel {
                name: COLUMNS[c],
                offset: mean,
                scale: var.sqrt().max(1e-6),
                min: f32::NEG_INFINITY,
                max: f32::INFINITY,
            }
        })
        .collect();
    let mut header = testing::header(8, 16, 32, 8);
    header.threshold.value = 2.0;
    let params: Vec<f32> = (0..header.param_count())
        .map(|i| testing::param(i) * 0.3)
        .collect();
    encode_to_vec(&header, &chans, &params).unwrap()
}

#[test]
fn skab_files_as_streams_match_direct_scoring() {
    let model = skab_model();
    let mut files = Vec::new();
    for group in ["valve1", "valve2", "other"] {
        let mut names: Vec<PathBuf> = fs::read_dir(format!("{SKAB}/{group}"))
            .unwrap_or_else(|e| panic!("SKAB data not found at {SKAB}: {e}"))
            .map(|e| e.unwrap().path())
            .collect();
        names.sort();
        for p in names {
            let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
            files.push((format!("{group}-{stem}"), p));
        }
    }
    assert_eq!(files.len(), 34);
    let mut replay = CsvReplay::new();
    for (stream, path) in &files {
        replay = replay.file(stream.clone(), path);
    }
    let mut models = ModelMap::new();
    models.add_bytes("*", "skab", &model).unwrap();
    let out = MemorySink::new();
    let started = Instant::now();
    let report = within(120, {
        let out = out.clone();
        move || {
            Builder::new(models)
                .workers(2)
                .source(replay)
                .sink(out)
                .run()
        }
    })
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let m = &report.metrics;
    eprintln!(
        "skab: {m}; {:.0} samples/s end to end",
        m.samples_in as f64 / secs
    );
    assert!(m.balanced(), "{m}");
    let got = by_stream(&out.records());
    let mut total = 0;
    for (stream, path) in &files {
        let rows = read(path);
        total += rows.len();
        assert_eq!(got[stream], reference(&model, &rows, false), "{stream}");
    }
    assert_eq!(m.samples_in, total as u64);
    assert!(m.alarms > 0 && m.scored > 0, "{m}");
}
