//! The command line under bad input: corrupt and foreign model files, malformed and unreadable
//! CSVs, faulty sensor values, and `sensorae train` killed while it writes. Every failure is
//! one line on stderr naming the file (and line), exit code 1 or 2, nothing on stdout and no
//! output file; faulty rows are scored as faults, never dropped or invented.
//! (`cli.rs` covers the demo workflow, a missing model, a bad number, a CSV as model, usage
//! errors and the model-for-other-channels case; this file does not repeat them.)

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use sensorae::ModelView;

const SKAB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/data/skab/valve1/0.csv"
);
const TRAINED: &[u8] = include_bytes!("../../firmware/model.snae");

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

/// A failure: exit 1 or 2 (`code`), one `error: ` line on stderr containing every needle,
/// nothing on stdout, no panic.
fn assert_fails(o: &Output, code: i32, needles: &[&str], case: &str) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{case}: {err}");
    assert!(o.stdout.is_empty(), "{case}: partial output");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{case}: not one line: {err}"
    );
    assert!(err.starts_with("error: "), "{case}: {err}");
    assert!(!err.contains("panicked"), "{case}: {err}");
    for n in needles {
        assert!(err.contains(n), "{case}: `{n}` not in: {err}");
    }
}

fn no_outputs(dir: &Path, names: &[&str]) {
    for n in names {
        assert!(!dir.join(n).exists(), "{n} was written");
    }
    let tmp: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
}

/// What a corrupt model's message must say, by where the flipped bit lies.
fn flip_message(byte: usize) -> &'static str {
    match byte {
        0..=3 => "not a sensorae model file",
        4..=5 => "unsupported model format version",
        6..=9 => "", // truncated or trailing bytes, depending on the bit
        _ => "checksum mismatch",
    }
}

/// A sample of single-bit flips of the trained model (prefix, header, channels, weights, CRC)
/// and of truncations, through `inspect` and `score`.
#[test]
fn corrupt_models_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let len = TRAINED.len();
    let bits = [
        0,
        13,
        33,
        47,
        50,
        60,
        75,
        80,
        100,
        333,
        1_000,
        4_000,
        77_777,
        150_001,
        287_000,
        len * 8 - 33,
        len * 8 - 1,
    ];
    for (i, &bit) in bits.iter().enumerate() {
        let mut bytes = TRAINED.to_vec();
        bytes[bit / 8] ^= 1 << (bit % 8);
        let name = format!("flip{i}.snae");
        std::fs::write(dir.join(&name), &bytes).unwrap();
        let case = format!("bit {bit}");
        let o = sensorae(&["inspect", &name], dir);
        assert_fails(&o, 1, &[&name, flip_message(bit / 8)], &case);
        let o = sensorae(
            &["score", "--model", &name, "--data", SKAB, "--out", "o.csv"],
            dir,
        );
        assert_fails(&o, 1, &[&name, flip_message(bit / 8)], &case);
    }
    for cut in [0, 3, 9, 10, 14, 500, len / 2, len - 4, len - 1] {
        std::fs::write(dir.join("cut.snae"), &TRAINED[..cut]).unwrap();
        let o = sensorae(&["inspect", "cut.snae"], dir);
        assert_fails(&o, 1, &["cut.snae", "truncated"], &format!("cut {cut}"));
    }
    let mut longer = TRAINED.to_vec();
    longer.extend_from_slice(b"\n");
    std::fs::write(dir.join("long.snae"), &longer).unwrap();
    let o = sensorae(&["inspect", "long.snae"], dir);
    assert_fails(&o, 1, &["long.snae", "1 unexpected bytes"], "extension");
    no_outputs(dir, &["o.csv"]);
}

/// Files of other programs given as the model.
#[test]
fn foreign_files_as_models() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let zip = b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    std::fs::write(dir.join("plot.png"), png).unwrap();
    std::fs::write(dir.join("bundle.zip"), zip).unwrap();
    std::fs::write(dir.join("empty.snae"), b"").unwrap();
    for (name, needle) in [
        ("plot.png", "not a sensorae model file"),
        ("bundle.zip", "not a sensorae model file"),
        ("empty.snae", "truncated"),
    ] {
        let o = sensorae(
            &["score", "--model", name, "--data", SKAB, "--out", "o.csv"],
            dir,
        );
        assert_fails(&o, 1, &[name, needle], name);
        let o = sensorae(&["inspect", name], dir);
        assert_fails(&o, 1, &[name, needle], name);
    }
    // A directory where a model file should be.
    std::fs::create_dir(dir.join("folder.snae")).unwrap();
    let o = sensorae(&["inspect", "folder.snae"], dir);
    assert_fails(&o, 1, &["folder.snae", "cannot read"], "directory");
    no_outputs(dir, &["o.csv"]);
}

/// True when this process can read a file whose permissions are 000 (root can).
fn permissions_are_ignored(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    std::fs::write(&probe, "x").unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o000)).unwrap();
    let readable = std::fs::read(&probe).is_ok();
    std::fs::remove_file(&probe).unwrap();
    readable
}

/// Malformed and unreadable data files, through `score` (with the trained model) and `train`.
#[test]
fn malformed_csvs_get_one_line_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("m.snae"), TRAINED).unwrap();
    let skab = std::fs::read_to_string(SKAB).unwrap();
    let header = skab.lines().next().unwrap();
    let row = skab.lines().nth(1).unwrap();
    let mut huge = format!("{header}\n{row}\n");
    huge.push_str(&"7".repeat(10 * 1024 * 1024));
    huge.push('\n');
    let mut not_utf8 = format!("{header}\n{row}\n").into_bytes();
    not_utf8.extend_from_slice(b"2020-03-09 10:14:35;0.02\xff\xfe;0.04\n");
    let cases: Vec<(&str, Vec<u8>, Vec<String>)> = vec![
        (
            "ragged.csv",
            format!("{header}\n{row}\n1;2;3\n").into_bytes(),
            vec!["ragged.csv:3".into(), "expected 11 fields".into()],
        ),
        (
            "latin1.csv",
            not_utf8,
            vec!["latin1.csv:3".into(), "not UTF-8".into()],
        ),
        // A 10 MB number: a valid f32 parse would be inf; either way a clear line 3 message.
        ("huge.csv", huge.into_bytes(), vec!["huge.csv:3".into()]),
        (
            "empty.csv",
            vec![],
            vec!["empty.csv".into(), "empty file".into()],
        ),
        (
            "header.csv",
            format!("{header}\n").into_bytes(),
            vec!["header.csv".into(), "no data rows".into()],
        ),
    ];
    for (name, bytes, needles) in &cases {
        std::fs::write(dir.join(name), bytes).unwrap();
        let needles: Vec<&str> = needles.iter().map(String::as_str).collect();
        let o = sensorae(
            &[
                "score", "--model", "m.snae", "--data", name, "--out", "o.csv",
            ],
            dir,
        );
        assert_fails(&o, 1, &needles, name);
        let o = sensorae(
            &["train", "--data", name, "--out", "t.snae", "--epochs", "1"],
            dir,
        );
        assert_fails(&o, 1, &needles[..1], name);
    }
    // Missing, a directory, and unreadable (where permissions are enforced; tests here may
    // run as root, which reads anything).
    std::fs::create_dir(dir.join("dir.csv")).unwrap();
    let mut unreadable = vec![("missing.csv", "cannot read"), ("dir.csv", "cannot read")];
    if !permissions_are_ignored(dir) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(dir.join("locked.csv"), &skab).unwrap();
        let mode = std::fs::Permissions::from_mode(0o000);
        std::fs::set_permissions(dir.join("locked.csv"), mode).unwrap();
        unreadable.push(("locked.csv", "permission denied"));
    }
    for (name, needle) in unreadable {
        let o = sensorae(
            &[
                "score", "--model", "m.snae", "--data", name, "--out", "o.csv",
            ],
            dir,
        );
        assert_fails(&o, 1, &[name, needle], name);
    }
    // To standard output too: nothing is printed before the error.
    let o = sensorae(&["score", "--model", "m.snae", "--data", "ragged.csv"], dir);
    assert_fails(&o, 1, &["ragged.csv:3"], "stdout");
    no_outputs(dir, &["o.csv", "t.snae"]);
}

/// A model for other channels: the data has the columns, but fewer of them than the model
/// (a model trained on two channels scored on a file with one of them).
#[test]
fn a_model_for_other_channels_names_the_missing_column() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("m.snae"), TRAINED).unwrap();
    let skab = std::fs::read_to_string(SKAB).unwrap();
    let narrow: String = skab
        .lines()
        .take(50)
        .map(|l| l.split(';').take(3).collect::<Vec<_>>().join(";") + "\n")
        .collect();
    std::fs::write(dir.join("narrow.csv"), narrow).unwrap();
    let o = sensorae(&["score", "--model", "m.snae", "--data", "narrow.csv"], dir);
    assert_fails(&o, 1, &["narrow.csv", "no column `Current`"], "narrow");
}

/// Faulty sensor values in a CSV through `sensorae score`: one output line per input row, in
/// order, faults on exactly the faulty rows with their kind, scores finite. The model has
/// physical ranges (built here: `sensorae train` has no range flag), so out-of-range and
/// extreme values are faults too.
#[test]
fn faulty_values_are_scored_as_faults_row_for_row() {
    use sensorae_host::{
        data::{CsvOptions, read_csv},
        fit::{FitOptions, fit},
        train::TrainConfig,
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let table = read_csv(Path::new(SKAB), &CsvOptions::skab()).unwrap();
    let train_rows = table.slice_rows(..400);
    // Each channel's valid range: its training span, widened by 20 spans on both sides.
    let ranges: Vec<(f32, f32)> = (0..table.width())
        .map(|c| {
            let v = train_rows.channel(c);
            let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
            let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            (lo - 20.0 * (hi - lo), hi + 20.0 * (hi - lo))
        })
        .collect();
    let opts = FitOptions {
        train: TrainConfig {
            window: 8,
            hidden: 16,
            latent: 4,
            epochs: 3,
            ..TrainConfig::default()
        },
        threshold: sensorae_host::calibrate::Method::Sigma { k: 3.0 },
        ranges: Some(ranges.clone()),
        ..FitOptions::default()
    };
    let fitted = fit(&train_rows.values, &table.channels, &opts, &mut |_| {}).unwrap();
    std::fs::write(dir.join("ranged.snae"), &fitted.bytes).unwrap();

    // Faults by row: (row, channel, cell text, expected fault name).
    let faults: &[(usize, usize, &str, &str)] = &[
        (500, 0, "", "nan"),
        (501, 3, "NaN", "nan"),
        (600, 7, "inf", "inf"),
        (601, 2, "-inf", "inf"),
        (700, 6, "1e38", "above-range"),
        (701, 4, "-1e38", "below-range"),
        (702, 5, "3.5e38", "inf"), // beyond f32: parses as infinity
        (800, 1, &"9".repeat(60), "inf"),
    ];
    let text = std::fs::read_to_string(SKAB).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for &(row, channel, cell, _) in faults {
        let mut cells: Vec<&str> = lines[row + 1].split(';').collect();
        cells[channel + 1] = cell;
        lines[row + 1] = cells.join(";");
    }
    std::fs::write(dir.join("faulty.csv"), lines.join("\n") + "\n").unwrap();
    let o = sensorae(
        &["score", "--model", "ranged.snae", "--data", "faulty.csv"],
        dir,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8(o.stdout).unwrap();
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split(',').collect())
        .collect();
    assert_eq!(rows.len(), table.rows(), "one line per input row");
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r[0], i.to_string());
        let expected = faults.iter().find(|f| f.0 == i).map_or("", |f| f.3);
        assert_eq!(r[4], expected, "row {i}: {r:?}");
        if !r[1].is_empty() {
            let s: f32 = r[1].parse().unwrap();
            assert!(s.is_finite() && s >= 0.0, "row {i}: {r:?}");
        }
        // A faulty row is never scored.
        assert!(expected.is_empty() || r[1].is_empty(), "row {i}: {r:?}");
    }
}

/// Arguments of a `sensorae train` run that writes a model to `out`.
fn train_args(data: &str, out: &str) -> Vec<String> {
    let args = [
        "train", "--data", data, "--out", out, "--epochs", "20", "--window", "32", "--hidden",
        "128", "--quiet",
    ];
    args.map(str::to_owned).to_vec()
}

/// `sensorae train` killed with SIGKILL at moments spread over its run, including while it
/// writes: the `--out` path is always absent, the previous model, or a complete new one;
/// never a partial file. A SIGKILL leaves the temporary `.NAME.tmp-PID` behind (nothing can
/// remove it); it is never at the `--out` path.
#[test]
fn killing_train_never_leaves_a_partial_model() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let full = std::time::Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_sensorae"))
        .args(train_args(SKAB, "ref.snae"))
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let run_time = full.elapsed();
    let reference = std::fs::read(dir.join("ref.snae")).unwrap();
    assert!(ModelView::from_bytes(&reference).is_ok());

    // Kill moments: fractions of a full run (about 0.5 s, a 270 KB model), dense near its end
    // where the write happens.
    let fractions = [
        0.3, 0.8, 0.9, 0.94, 0.96, 0.97, 0.98, 0.99, 1.0, 1.01, 1.02, 1.05,
    ];
    let mut outcomes = Vec::new();
    for (i, f) in fractions.iter().enumerate() {
        let out: PathBuf = dir.join(format!("m{i}.snae"));
        // Every other run replaces an older valid model, which must survive intact.
        let previous = (i % 2 == 1).then(|| TRAINED.to_vec());
        if let Some(p) = &previous {
            std::fs::write(&out, p).unwrap();
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_sensorae"))
            .args(train_args(SKAB, out.to_str().unwrap()))
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(run_time.mul_f64(*f));
        let _ = child.kill(); // SIGKILL on Unix
        let status = child.wait().unwrap();
        let outcome = match std::fs::read(&out) {
            Err(_) => {
                assert!(previous.is_none(), "kill {i}: the old model was removed");
                "absent"
            }
            Ok(bytes) if Some(&bytes) == previous.as_ref() => "old model",
            Ok(bytes) => {
                let view = ModelView::from_bytes(&bytes);
                assert!(
                    view.is_ok(),
                    "kill {i}: partial model ({} bytes)",
                    bytes.len()
                );
                // Training is deterministic: the same weights as the full run (the name in
                // the header follows the file name).
                let same = view
                    .unwrap()
                    .weights()
                    .eq(ModelView::from_bytes(&reference).unwrap().weights());
                assert!(same, "kill {i}: other weights");
                "new model"
            }
        };
        outcomes.push((status.success(), outcome));
    }
    // Whatever temporary files remain are beside, never at, the `--out` paths.
    for e in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".snae") {
            assert!(ModelView::from_bytes(&std::fs::read(e.path()).unwrap()).is_ok());
        } else {
            assert!(
                name.starts_with('.') && name.contains(".snae.tmp-"),
                "{name}"
            );
        }
    }
    // Some kills land before the write.
    assert!(outcomes.iter().any(|o| o.1 != "new model"), "{outcomes:?}");
    eprintln!("full run {run_time:?}; (exit ok, --out after the kill): {outcomes:?}");
}
