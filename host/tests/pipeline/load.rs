//! The load-figure command (`sensorae bench pipeline`) and the key-based push it uses.

use std::process::Command;

use sensorae_host::pipeline::{Builder, MemorySink, ModelMap, PipelineError, Router, Source};

use crate::common::{by_stream, calibrated, reference, sample, within};

/// A short run accounts for every sample: nothing dropped under blocking back-pressure, nothing
/// lost, one record per scored window, and both rates reported for each turn. No timing
/// thresholds: the machine running the tests may be loaded.
#[test]
fn bench_pipeline_accounts_for_every_sample() {
    for (mode, flags) in [("on-workers", &[][..]), ("routed", &["--routed"][..])] {
        let out = Command::new(env!("CARGO_BIN_EXE_sensorae"))
            .args(["bench", "pipeline", "--streams", "200", "--seconds", "1"])
            .args(["--turn", "0.5", "--json"])
            .args(flags)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        let int = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
        let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} in {v}"));
        assert_eq!(v["source_mode"], mode, "{v}");
        assert_eq!(int("dropped"), 0, "{v}");
        assert_eq!(int("lost"), 0, "{v}");
        assert_eq!(int("faulted"), 0, "{v}");
        assert!(num("samples_per_s") > 0.0, "{v}");
        assert!(num("raw_samples_per_s") > 0.0, "{v}");
        // Two turns each; the reported ratio is the median of the two turns' (the upper one).
        let turns: Vec<f64> = v["turn_ratios"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap())
            .collect();
        assert_eq!(turns.len(), 2, "{v}");
        assert_eq!(int("turns"), 2, "{v}");
        assert_eq!(num("ratio"), turns[0].max(turns[1]), "{v}");
        assert!(turns.iter().all(|r| *r > 0.0), "{v}");
        // The turns add up to the pipeline's time (each turn lasts at least its length).
        assert!(num("pipeline_s") >= 1.0, "{v}");
        assert_eq!(int("streams"), 200);
        assert_eq!(int("hop"), int("window"), "hop defaults to the window");
        // Every stream is past its first windows (the warm-up is two windows of each), and with
        // hop = window a stream scores one window per 16 samples (give or take its last, partial
        // window).
        let (samples, windows) = (int("samples"), int("windows"));
        assert!(samples >= 200 * 32, "{v}");
        assert!(windows.abs_diff(samples / 16) <= 200, "{v}");
        // `--emit scored` and no faults: one record per window.
        assert_eq!(int("records"), windows, "{v}");
    }
}

/// Pushes one stream three ways: by name with an owned vector, by name with a slice, and by
/// interned key.
struct Mixed {
    samples: Vec<Vec<f32>>,
}

impl Source for Mixed {
    fn describe(&self) -> String {
        "mixed".into()
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        let key = router.intern("pump-1");
        for (t, v) in self.samples.iter().enumerate() {
            match t % 3 {
                0 => router.push("pump-1", v.clone(), None)?,
                1 => router.push_slice("pump-1", v, None)?,
                _ => router.push_key(key, v, None)?,
            }
        }
        Ok(())
    }
}

/// Samples pushed by name and by key are one stream, scored in order like a direct detector;
/// samples of the wrong length are faults, not mixed into the next sample.
#[test]
fn keys_and_names_are_one_stream() {
    let bytes = calibrated(4, 8, 16, 4);
    let mut samples: Vec<Vec<f32>> = (0..300).map(|t| sample(1, t, 300, 4)).collect();
    samples[100] = vec![0.5; 3];
    samples[200] = vec![0.5; 5];
    let expected = reference(&bytes, &samples, false);
    let out = MemorySink::new();
    let sink = out.clone();
    let report = within(30, move || {
        let mut models = ModelMap::new();
        models.add_bytes("*", "test", &bytes).unwrap();
        Builder::new(models)
            .workers(3)
            .batch(7)
            .source(Mixed { samples })
            .sink(sink)
            .run()
    })
    .unwrap();
    assert!(report.metrics.balanced(), "{}", report.metrics);
    assert_eq!(report.metrics.samples_in, 300);
    let got = by_stream(&out.records());
    assert_eq!(got.len(), 1);
    assert_eq!(got["pump-1"], expected);
}
