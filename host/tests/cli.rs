//! The `sensorae` binary end to end: outputs, one-line errors, exit codes, no partial files.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn sensorae(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sensorae"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sensorae")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs the demo once into `dir` and returns the paths of its data and model.
fn demo(dir: &Path) -> (PathBuf, PathBuf) {
    let o = sensorae(&["demo", "--out", "d"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("spike") && out.contains("dropout") && out.contains("false alarms"),
        "{out}"
    );
    for f in [
        "demo.csv",
        "demo.snae",
        "scores.csv",
        "scores.png",
        "loss.png",
    ] {
        assert!(dir.join("d").join(f).is_file(), "{f} missing");
    }
    (dir.join("d/demo.csv"), dir.join("d/demo.snae"))
}

/// Asserts a failure: the exit code and one line on stderr containing every `needle`.
fn assert_fails(o: &Output, code: i32, needles: &[&str]) {
    assert_eq!(o.status.code(), Some(code), "{}", stderr(o));
    let err = stderr(o);
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn demo_train_score_eval_inspect() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (csv, model) = demo(dir);
    let csv = csv.to_str().unwrap();

    let o = sensorae(
        &[
            "train",
            "--data",
            csv,
            "--train-rows",
            "3000",
            "--out",
            "m.snae",
            "--epochs",
            "5",
            "--label-column",
            "anomaly",
            "--plot",
            "loss.png",
            "--quiet",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(dir.join("m.snae").is_file() && dir.join("loss.png").is_file());

    let o = sensorae(&["inspect", "m.snae"], dir);
    let text = stdout(&o);
    assert!(
        text.contains("8 channels x window 16") && text.contains("CRC-32 verified"),
        "{text}"
    );
    // The fixed detector type a firmware build declares (default sizes H = 32, Z = 8), with
    // the core features it needs.
    let p = sensorae::param_count(sensorae::Arch::Dense, 128, 32, 8);
    assert!(
        text.contains(&format!(
            "Detector<8, 16, 128, 32, 8, {p}>, sensorae features: none"
        )),
        "{text}"
    );

    // The same model decoded as Rust source for firmware, laid out for Cortex-M by default.
    let o = sensorae(&["inspect", "m.snae", "--rust", "m.rs"], dir);
    assert!(o.status.success(), "{}", stderr(&o));
    let src = std::fs::read_to_string(dir.join("m.rs")).unwrap();
    let arm = format!("layout: {:#06x},", sensorae::param_layout_for("arm"));
    assert!(
        src.contains("pub static MODEL: sensorae::Decoded<'static>") && src.contains(&arm),
        "{}",
        &src[..src.len().min(600)]
    );
    assert_eq!(
        src.matches("f32::from_bits(").count() - src.matches("/*").count(),
        p
    );

    let o = sensorae(
        &[
            "score", "--model", "m.snae", "--data", csv, "--out", "s.csv",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let scores = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    let rows = std::fs::read_to_string(csv).unwrap().lines().count() - 1;
    assert_eq!(
        scores.lines().count(),
        rows + 1,
        "one line per row plus the header"
    );
    assert!(scores.starts_with("row,score,threshold,alarm,fault,top_channel\n0,,"));

    let o = sensorae(
        &[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--data",
            csv,
            "--json",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let f1 = report["f1"].as_f64().unwrap();
    assert!(f1 > 0.5 && f1 <= 1.0, "{report}");
    assert!(report["roc_auc"].as_f64().unwrap() > 0.8, "{report}");
}

#[test]
fn bad_inputs_get_one_line_errors_and_leave_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (csv, model) = demo(dir);
    let (csv, model) = (csv.to_str().unwrap(), model.to_str().unwrap());

    let o = sensorae(
        &[
            "score",
            "--model",
            "missing.snae",
            "--data",
            csv,
            "--out",
            "o.csv",
        ],
        dir,
    );
    assert_fails(&o, 1, &["missing.snae", "cannot read"]);

    std::fs::write(dir.join("bad.csv"), "vib_de_mm_s,b\n1,2\n3,oops\n").unwrap();
    let o = sensorae(&["train", "--data", "bad.csv", "--out", "o.snae"], dir);
    assert_fails(&o, 1, &["bad.csv:3", "column `b`", "oops"]);

    std::fs::write(dir.join("ragged.csv"), "a,b\n1,2\n3\n").unwrap();
    let o = sensorae(&["train", "--data", "ragged.csv", "--out", "o.snae"], dir);
    assert_fails(&o, 1, &["ragged.csv:3"]);

    let mut bytes = std::fs::read(model).unwrap();
    bytes[100] ^= 0x10;
    std::fs::write(dir.join("corrupt.snae"), &bytes).unwrap();
    let o = sensorae(
        &[
            "score",
            "--model",
            "corrupt.snae",
            "--data",
            csv,
            "--out",
            "o.csv",
        ],
        dir,
    );
    assert_fails(&o, 1, &["corrupt.snae", "checksum"]);
    let o = sensorae(&["inspect", "corrupt.snae", "--rust", "m.rs"], dir);
    assert_fails(&o, 1, &["corrupt.snae", "checksum"]);
    assert!(!dir.join("m.rs").exists());

    let o = sensorae(&["score", "--model", csv, "--data", csv], dir);
    assert_fails(&o, 1, &["not a sensorae model file"]);

    // A model for other channels: the data file lacks the model's columns.
    let o = sensorae(
        &[
            "score", "--model", model, "--data", "bad.csv", "--out", "o.csv",
        ],
        dir,
    );
    assert_fails(&o, 1, &["bad.csv", "no column `vib_nde_mm_s`"]);

    // Usage errors exit with 2.
    let o = sensorae(
        &[
            "train",
            "--data",
            csv,
            "--out",
            "o.snae",
            "--noise",
            "gaussian:0.1",
        ],
        dir,
    );
    assert_fails(&o, 2, &["--noise", "denoising"]);
    let o = sensorae(
        &[
            "train",
            "--data",
            csv,
            "--out",
            "o.snae",
            "--threshold",
            "median",
        ],
        dir,
    );
    assert_eq!(o.status.code(), Some(2));

    for f in ["o.csv", "o.snae"] {
        assert!(!dir.join(f).exists(), "{f} left behind");
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn too_little_data_for_calibration_says_how_much_is_needed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut csv = String::from("a,b\n");
    for i in 0..120 {
        csv.push_str(&format!(
            "{},{}\n",
            (i as f32 * 0.3).sin(),
            (i as f32 * 0.3).cos()
        ));
    }
    std::fs::write(dir.join("short.csv"), csv).unwrap();
    let o = sensorae(
        &[
            "train",
            "--data",
            "short.csv",
            "--out",
            "o.snae",
            "--epochs",
            "2",
            "--threshold",
            "quantile:0.99",
        ],
        dir,
    );
    assert_fails(&o, 1, &["calibration", "100"]);
    assert!(!dir.join("o.snae").exists());
}

#[test]
fn skab_bench_prints_both_alignments_and_the_baseline() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/skab");
    let tmp = tempfile::tempdir().unwrap();
    let o = sensorae(&["bench", "skab", "--data", data, "--json"], tmp.path());
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["variant"].as_str().unwrap().to_owned(),
                r["alignment"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            ("ae", "causal"),
            ("ae", "leaderboard"),
            ("no-model", "causal"),
            ("no-model", "leaderboard")
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    for r in &rows {
        let (f1, far, mar) = (
            r["f1"].as_f64().unwrap(),
            r["far"].as_f64().unwrap(),
            r["mar"].as_f64().unwrap(),
        );
        assert!(
            (0.0..=1.0).contains(&f1)
                && (0.0..=100.0).contains(&far)
                && (0.0..=100.0).contains(&mar),
            "{r}"
        );
    }
}

/// `--anomaly-free` runs the same protocol on pieces of the anomaly-free recording, where every
/// alarm is false; `--set` overrides a variant's knobs (here an alarm that needs more exceeding
/// windows than a piece has, so none can turn on).
#[test]
fn skab_bench_anomaly_free_pieces_and_overrides() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/skab");
    let tmp = tempfile::tempdir().unwrap();
    let far = |extra: &[&str]| -> Vec<f64> {
        let mut args = vec!["bench", "skab", "--data", data, "--anomaly-free", "--json"];
        args.extend(extra);
        let o = sensorae(&args, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| {
                let r: serde_json::Value = serde_json::from_str(l).unwrap();
                r["far"].as_f64().unwrap()
            })
            .collect()
    };
    let defaults = far(&[]);
    assert_eq!(defaults.len(), 4, "{defaults:?}");
    assert!(
        defaults.iter().all(|&f| f > 0.0 && f < 100.0),
        "{defaults:?}"
    );
    assert_eq!(far(&["--set", "--adapt-rate 0.05"]), defaults);
    // Rows: ae causal, ae leaderboard, no-model causal, no-model leaderboard. The leaderboard
    // alignment reads exceeding windows, not alarms, so its rows need not be 0 (they move too:
    // without alarms no baseline ever holds still).
    let never = far(&["--set", "--alarm-on 1000"]);
    assert_eq!([never[0], never[2]], [0.0, 0.0], "{never:?}");
    let o = sensorae(
        &["bench", "skab", "--data", data, "--set", "--no-such-flag 1"],
        tmp.path(),
    );
    assert_fails(&o, 2, &["--no-such-flag"]);
}

/// `--inject` puts one labelled anomaly into each anomaly-free piece: the rows carry F1 and
/// misses as for the labelled files, the same on every run, and an alarm that cannot turn on
/// misses every injected row; it needs `--anomaly-free`.
#[test]
fn skab_bench_injected_anomalies() {
    let data = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/skab");
    let tmp = tempfile::tempdir().unwrap();
    let rows = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec![
            "bench",
            "skab",
            "--data",
            data,
            "--anomaly-free",
            "--inject",
            "--json",
        ];
        args.extend(extra);
        let o = sensorae(&args, tmp.path());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let first = rows(&[]);
    assert_eq!(first.len(), 4, "{first:?}");
    let ae = &first[0];
    assert_eq!(
        (ae["variant"].as_str(), ae["alignment"].as_str()),
        (Some("ae"), Some("causal"))
    );
    let (f1, mar) = (ae["f1"].as_f64().unwrap(), ae["mar"].as_f64().unwrap());
    assert!(f1 > 0.0 && f1 <= 1.0 && mar < 100.0, "{ae}");
    assert_eq!(rows(&[]), first);
    let never = rows(&["--set", "--alarm-on 1000"]);
    for r in [&never[0], &never[2]] {
        assert_eq!(
            (r["f1"].as_f64(), r["mar"].as_f64()),
            (Some(0.0), Some(100.0)),
            "{r}"
        );
    }
    let files = rows(&["--per-file"]);
    let kinds: Vec<&str> = files
        .iter()
        .filter_map(|r| r["file"].as_str())
        .filter_map(|f| f.rsplit(':').next())
        .collect();
    assert_eq!(
        kinds,
        ["level-shift", "ramp", "noise-burst", "stuck-at"].repeat(2)
    );
    // Clap's own usage error (several lines), so not `assert_fails`.
    let o = sensorae(&["bench", "skab", "--data", data, "--inject"], tmp.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--anomaly-free"), "{}", stderr(&o));
}

/// Issue 9's variants and losses through the command line: a VQ-VAE with a soft-threshold code
/// and the combined loss, a channel-masked autoencoder with the SSIM loss, and a VQ knob on
/// another variant refused as a usage error.
#[test]
fn vqvae_masked_and_structural_losses_train_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut csv = String::from("a,b,c\n");
    for t in 0..900 {
        let x = t as f32 * 0.07;
        csv.push_str(&format!(
            "{},{},{}\n",
            x.sin(),
            x.cos(),
            (2.0 * x).sin() + 0.5 * x.cos()
        ));
    }
    std::fs::write(dir.join("w.csv"), csv).unwrap();
    let common = [
        "train", "--data", "w.csv", "--epochs", "3", "--quiet", "--window", "8",
    ];
    let run = |extra: &[&str]| {
        let mut args = common.to_vec();
        args.extend_from_slice(extra);
        sensorae(&args, dir)
    };
    let o = run(&[
        "--out",
        "vq.snae",
        "--variant",
        "vqvae",
        "--codebook",
        "8",
        "--commitment",
        "0.5",
        "--distance-weight",
        "0.1",
        "--loss",
        "combined:0.8",
        "--soft-threshold",
        "0.01",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&sensorae(&["inspect", "vq.snae"], dir));
    assert!(
        text.contains("vqvae") && text.contains("0.1 x squared code distance"),
        "{text}"
    );
    assert!(text.contains("sensorae features: vqvae\n"), "{text}");
    let o = run(&[
        "--out",
        "m.snae",
        "--variant",
        "masked",
        "--mask",
        "channel",
        "--mask-ratio",
        "0.4",
        "--loss",
        "ssim",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&sensorae(&["inspect", "m.snae"], dir));
    assert!(text.contains("masked"), "{text}");
    let o = run(&["--out", "x.snae", "--codebook", "8"]);
    assert_fails(&o, 2, &["--codebook", "vqvae"]);
    let o = run(&["--out", "x.snae", "--loss", "combined:1.5"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// The hierarchical variant through the command line: train with its sizes and per-scale
/// weights, score a file, inspect the scales and gains; its knobs on another variant, a block
/// that does not divide the window and the BCE loss are usage or setting errors.
#[test]
fn hierarchical_trains_scores_and_inspects_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut csv = String::from("a,b\n");
    for t in 0..900 {
        let x = t as f32 * 0.05;
        csv.push_str(&format!(
            "{},{}\n",
            x.sin() + 0.2 * (7.0 * x).sin(),
            x.cos()
        ));
    }
    std::fs::write(dir.join("w.csv"), csv).unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec![
            "train", "--data", "w.csv", "--epochs", "3", "--quiet", "--window", "8",
        ];
        args.extend_from_slice(extra);
        sensorae(&args, dir)
    };
    let o = train(&[
        "--out",
        "h.snae",
        "--variant",
        "hierarchical",
        "--block",
        "4",
        "--coarse-hidden",
        "6",
        "--coarse-latent",
        "2",
        "--coarse-weight",
        "1",
        "--fine-weight",
        "0.5",
        "--fine-gain-penalty",
        "0.01",
        "--loss",
        "combined:0.7:mae",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&sensorae(&["inspect", "h.snae"], dir));
    assert!(
        text.contains("hierarchical")
            && text.contains("blocks of 4 steps = 4 -> 6 -> 2 -> 6 -> 4")
            && text.contains("gains coarse"),
        "{text}"
    );
    let o = sensorae(
        &[
            "score", "--model", "h.snae", "--data", "w.csv", "--out", "s.csv",
        ],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let scores = std::fs::read_to_string(dir.join("s.csv")).unwrap();
    // The first full window (row 7) has a finite score.
    let row7 = scores.lines().nth(8).unwrap();
    let score: f32 = row7.split(',').nth(1).unwrap().parse().unwrap();
    assert!(score.is_finite() && score >= 0.0, "{row7}");
    let o = train(&["--out", "x.snae", "--fine-weight", "0"]);
    assert_fails(&o, 2, &["--fine-weight", "hierarchical"]);
    let o = train(&["--out", "x.snae", "--variant", "vae", "--block", "2"]);
    assert_fails(&o, 2, &["--block", "hierarchical"]);
    let o = train(&[
        "--out",
        "x.snae",
        "--variant",
        "hierarchical",
        "--block",
        "3",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("block"),
        "{}",
        stderr(&o)
    );
    let o = train(&[
        "--out",
        "x.snae",
        "--variant",
        "hierarchical",
        "--loss",
        "bce",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("signed"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.join("x.snae").exists());
}

/// `sensorae stream` over per-file CSV replay gives each stream exactly what `sensorae score`
/// gives its file, both with each worker reading its own streams' files (the default) and with
/// the files read on a source thread feeding queues (`--routed`).
#[test]
fn stream_replay_matches_score_on_workers_and_routed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (csv, model) = demo(dir);
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let rows: Vec<&str> = lines.collect();
    // Five streams, each a different stretch of the demo recording.
    let mut expected = std::collections::BTreeMap::new();
    let mut csv_args = Vec::new();
    for s in 0..5 {
        let path = dir.join(format!("s{s}.csv"));
        let part = &rows[s * 1500..s * 1500 + 1200];
        std::fs::write(&path, format!("{header}\n{}\n", part.join("\n"))).unwrap();
        let o = sensorae(
            &[
                "score",
                "--model",
                model.to_str().unwrap(),
                "--data",
                path.to_str().unwrap(),
            ],
            dir,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        let scores: Vec<(u64, Option<f32>, bool)> = stdout(&o)
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[1].parse().ok(), f[3] == "1")
            })
            .collect();
        assert_eq!(scores.len(), 1200);
        expected.insert(format!("s{s}"), scores);
        csv_args.push(format!("s{s}={}", path.display()));
    }
    assert!(
        expected.values().flatten().any(|r| r.2),
        "some stretch should raise an alarm"
    );
    for routed in [false, true] {
        let mut args = vec![
            "stream",
            "--model",
            model.to_str().unwrap(),
            "--metrics-every",
            "0",
        ];
        for a in &csv_args {
            args.extend(["--csv", a]);
        }
        if routed {
            args.push("--routed");
        }
        let o = sensorae(&args, dir);
        assert!(o.status.success(), "{}", stderr(&o));
        let mut got = std::collections::BTreeMap::<String, Vec<(u64, Option<f32>, bool)>>::new();
        for line in stdout(&o).lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            got.entry(v["stream"].as_str().unwrap().to_owned())
                .or_default()
                .push((
                    v["index"].as_u64().unwrap(),
                    v["score"].as_f64().map(|x| x as f32),
                    v["status"] == "anomalous",
                ));
        }
        assert_eq!(got, expected, "routed: {routed}");
    }
}
