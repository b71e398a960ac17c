//! Arbitrary bytes as a CSV file under four option sets. Never a panic; an accepted file is
//! whole rows (rows x channels = values, one label, time and line per row, labels 0/1, lines
//! increasing); a rejected one gets a one-line message naming the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sensorae_host::data::{CsvOptions, read_csv_from};

fuzz_target!(|data: &[u8]| {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    let opts = match which % 4 {
        0 => CsvOptions::default(),
        1 => CsvOptions::skab(),
        2 => CsvOptions {
            delimiter: Some(which / 4),
            ..CsvOptions::default()
        },
        _ => CsvOptions {
            columns: Some(vec!["a".into(), "b".into()]),
            label_column: Some("label".into()),
            time_column: Some("time".into()),
            ..CsvOptions::default()
        },
    };
    match read_csv_from(body, "fuzz.csv", &opts) {
        Ok(t) => {
            assert!(t.rows() > 0 && t.width() > 0);
            assert_eq!(t.rows() * t.width(), t.values.len());
            assert_eq!(t.lines.len(), t.rows());
            assert!(t.lines.windows(2).all(|w| w[0] < w[1]), "{:?}", t.lines);
            if let Some(labels) = &t.labels {
                assert_eq!(labels.len(), t.rows());
                assert!(labels.iter().all(|&l| l <= 1));
            }
            if let Some(times) = &t.times {
                assert_eq!(times.len(), t.rows());
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.starts_with("fuzz.csv"), "{msg:?}");
            assert!(!msg.contains('\n') && !msg.contains('\r'), "{msg:?}");
        }
    }
});
