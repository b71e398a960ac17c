//! Sources, sinks, back-pressure, shutdown and failures without a broker.

use core::time::Duration;
use std::{
    fs,
    io::{Cursor, Write},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    thread,
};

use sensorae_host::pipeline::{
    Backpressure, Builder, CsvReplay, Emit, ErrorKind, IterSource, JsonLines, LineFormat,
    LinesSource, MemorySink, ModelMap, PipelineError, Record, RecordStatus, Router, Sink, Source,
    partition,
};

use crate::common::{by_stream, calibrated, normal, reference, sample, within};

const C: usize = 4;
const LEN: usize = 600;
const STREAMS: usize = 6;

fn models(bytes: &[u8]) -> ModelMap {
    let mut m = ModelMap::new();
    m.add_bytes("*", "test", bytes).unwrap();
    m
}

fn streams() -> Vec<Vec<Vec<f32>>> {
    (0..STREAMS)
        .map(|s| (0..LEN).map(|t| sample(s, t, LEN, C)).collect())
        .collect()
}

fn csv_line(v: &[f32]) -> String {
    v.iter()
        .map(|x| {
            if x.is_nan() {
                String::new()
            } else {
                x.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(";")
}

/// Per-file and long-format CSV replay both give, per stream, exactly the verdicts of one
/// detector fed that stream directly, and account for every sample.
#[test]
fn csv_replay_matches_a_direct_detector() {
    let bytes = calibrated(C as u16, 8, 16, 4);
    let data = streams();
    let dir = tempfile::tempdir().unwrap();
    let mut replay = CsvReplay::new();
    let mut long = String::from("time;pump;d;c;b;a;anomaly\n");
    for (s, rows) in data.iter().enumerate() {
        let path = dir.path().join(format!("p{s}.csv"));
        let mut f = fs::File::create(&path).unwrap();
        // Columns in another order than the model's, plus a time and a label column.
        writeln!(f, "datetime;d;c;b;a;anomaly").unwrap();
        for (t, v) in rows.iter().enumerate() {
            let rev: Vec<f32> = v.iter().rev().copied().collect();
            writeln!(f, "2020-01-01 00:00:{t};{};0", csv_line(&rev)).unwrap();
        }
        replay = replay.file(format!("pump-{s}"), &path);
    }
    for t in 0..LEN {
        for (s, rows) in data.iter().enumerate() {
            let rev: Vec<f32> = rows[t].iter().rev().copied().collect();
            long.push_str(&format!("{t};pump-{s};{};0\n", csv_line(&rev)));
        }
    }
    let long_path = dir.path().join("long.csv");
    fs::write(&long_path, long).unwrap();
    let expected: Vec<_> = data
        .iter()
        .map(|rows| reference(&bytes, rows, false))
        .collect();
    assert!(
        expected.iter().flatten().any(|k| k.4.is_some()),
        "the data should raise alarms"
    );
    // Per-file replay splits by stream and runs a part on each worker (no queues), unless told
    // not to; long-format files cannot split and always go through the queues.
    for (source, on_workers, queued) in [
        (replay.clone(), true, false),
        (replay, false, true),
        (CsvReplay::new().long(&long_path, "pump"), true, true),
    ] {
        let out = MemorySink::new();
        let report = within(60, {
            let (models, out) = (models(&bytes), out.clone());
            move || {
                Builder::new(models)
                    .workers(3)
                    .batch(16)
                    .sources_on_workers(on_workers)
                    .source(source)
                    .sink(out)
                    .run()
            }
        })
        .unwrap();
        let m = &report.metrics;
        assert_eq!(m.queue_depths.len(), if queued { 3 } else { 0 }, "{m}");
        assert_eq!(m.samples_in, (STREAMS * LEN) as u64, "{m}");
        assert!(m.balanced(), "{m}");
        assert!(m.faulted > 0 && m.alarms > 0 && m.dropped == 0, "{m}");
        let got = by_stream(&out.records());
        for (s, exp) in expected.iter().enumerate() {
            assert_eq!(got[&format!("pump-{s}")], *exp, "stream {s}");
        }
    }
}

/// JSON lines and CSV on a line source (stdin): bad lines are counted, not fatal; `null` is a
/// missing value reported as a fault; sequence numbers drop repeats and count gaps.
#[test]
fn line_sources() {
    let bytes = calibrated(2, 4, 4, 2);
    let mut json = String::new();
    for t in 0..50u64 {
        json.push_str(&format!(
            "{{\"stream\":\"s{}\",\"values\":[{},0.5],\"seq\":{}}}\n",
            t % 2,
            (t as f32 * 0.3).sin(),
            t / 2
        ));
    }
    json.push_str("not json\n\n{\"stream\":\"s0\",\"values\":[null,1],\"seq\":25}\n");
    json.push_str("{\"stream\":\"s0\",\"values\":[1,1],\"seq\":3}\n"); // a repeat
    json.push_str("{\"stream\":\"s1\",\"values\":[1,1],\"seq\":30}\n"); // 5 skipped
    let out = MemorySink::new();
    let r = Builder::new(models(&bytes))
        .source(LinesSource::new(
            Cursor::new(json),
            LineFormat::Json,
            "json",
        ))
        .sink(out.clone())
        .run()
        .unwrap();
    let m = &r.metrics;
    assert_eq!(
        (m.samples_in, m.malformed, m.duplicates, m.gaps),
        (53, 1, 1, 5),
        "{m}"
    );
    assert_eq!(m.faulted, 1, "{m}");
    assert!(m.balanced(), "{m}");
    assert_eq!(out.records().len(), 52);

    let csv = "id,x,a,b\np,1,0.1,0.2\nq,1,0.3,0.4\np,1,0.5,0.6\nq,1,,0.8\n,1,2,3\n";
    let out = MemorySink::new();
    let r = Builder::new(models(&bytes))
        .source(LinesSource::new(
            Cursor::new(csv),
            LineFormat::Csv {
                stream_column: "id".into(),
            },
            "csv",
        ))
        .sink(out.clone())
        .run()
        .unwrap();
    let m = &r.metrics;
    assert_eq!((m.samples_in, m.malformed, m.faulted), (4, 1, 1), "{m}");
    // Model channels `a` and `b` are picked by name; `x` is ignored.
    let recs = out.records();
    assert_eq!(recs.iter().filter(|r| &*r.stream == "q").count(), 2);
    assert_eq!(
        recs.iter()
            .find(|r| r.status == RecordStatus::Fault)
            .unwrap()
            .fault_channel
            .as_deref(),
        Some("a")
    );
}

/// Streams pick their model by pattern; a stream without one is counted, not scored.
#[test]
fn model_groups_and_unmatched_streams() {
    let small = calibrated(2, 4, 4, 2);
    let wide = calibrated(4, 8, 8, 2);
    let mut m = ModelMap::new();
    m.add_bytes("valve-*", "small", &small).unwrap();
    m.add_bytes("pump-*", "wide", &wide).unwrap();
    let items = (0..40).flat_map(|t| {
        [
            ("valve-1".to_owned(), sample(0, t, 40, 2)),
            ("pump-1".to_owned(), sample(0, t, 40, 4)),
            ("fan-1".to_owned(), sample(0, t, 40, 4)),
        ]
    });
    let out = MemorySink::new();
    let r = Builder::new(m)
        .source(IterSource::new(items.collect::<Vec<_>>()))
        .sink(out.clone())
        .run()
        .unwrap();
    assert_eq!(r.metrics.unmatched, 40);
    assert_eq!(r.unmatched_streams, ["fan-1"]);
    assert!(r.metrics.balanced());
    let recs = by_stream(&out.records());
    assert_eq!(
        recs["valve-1"]
            .iter()
            .filter(|k| k.2 == RecordStatus::Warming)
            .count(),
        3
    );
    assert_eq!(
        recs["pump-1"]
            .iter()
            .filter(|k| k.2 == RecordStatus::Warming)
            .count(),
        7
    );
    assert!(!recs.contains_key("fan-1"));
}

/// A sink that sleeps, so the workers and then the sources back up.
#[derive(Clone, Default)]
struct SlowSink(MemorySink);

impl Sink for SlowSink {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        thread::sleep(Duration::from_micros(300));
        self.0.write(records)
    }
}

fn flood(n: usize) -> Vec<(String, Vec<f32>)> {
    (0..n)
        .map(|t| (format!("s{}", t % 8), sample(0, t / 8, n, 2)))
        .collect()
}

/// Drop-oldest under overload: samples are dropped, every one is counted, the rest scored.
/// Blocking under the same overload loses nothing.
#[test]
fn backpressure_policies() {
    let bytes = calibrated(2, 4, 4, 2);
    let n = 40_000;
    let out = SlowSink::default();
    let r = within(60, {
        let (m, out) = (models(&bytes), out.clone());
        move || {
            Builder::new(m)
                .workers(1)
                .batch(8)
                .queue(16)
                .backpressure(Backpressure::DropOldest)
                .source(IterSource::new(flood(n)))
                .sink(out)
                .run()
        }
    })
    .unwrap();
    let m = &r.metrics;
    assert_eq!(m.samples_in, n as u64);
    assert!(m.dropped > 0, "{m}");
    assert!(m.balanced(), "{m}");
    assert_eq!(out.0.records().len() as u64, n as u64 - m.dropped);

    let out = SlowSink::default();
    let r = within(60, {
        let (m, out) = (models(&bytes), out.clone());
        move || {
            Builder::new(m)
                .workers(1)
                .batch(8)
                .queue(16)
                .source(IterSource::new(flood(n / 4)))
                .sink(out)
                .run()
        }
    })
    .unwrap();
    assert_eq!(r.metrics.dropped, 0);
    assert!(r.metrics.balanced());
    assert_eq!(out.0.records().len(), n / 4);
}

/// The stop flag ends an endless source; everything that entered is accounted for.
#[test]
fn stop_drains_every_queue() {
    let bytes = calibrated(2, 4, 4, 2);
    let endless = (0..usize::MAX).map(|t| (format!("s{}", t % 5), normal(0, t, 2)));
    let reports = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&reports);
    let out = MemorySink::new();
    let running = Builder::new(models(&bytes))
        .source(IterSource::new(endless))
        .sink(out.clone())
        .emit(Emit::Scored)
        .metrics_every(Duration::from_millis(50), move |_| {
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .start()
        .unwrap();
    thread::sleep(Duration::from_millis(400));
    assert!(running.metrics().samples_in > 0);
    running.stop();
    let r = within(30, move || running.wait()).unwrap();
    let m = &r.metrics;
    assert!(m.balanced(), "{m}");
    assert_eq!(m.warming, 5 * 3);
    assert!(reports.load(Ordering::SeqCst) >= 3);
    // Emit::Scored: fresh scores and faults, no warming records.
    assert_eq!(out.records().len() as u64, m.scored + m.faulted, "{m}");
}

struct FailingSink {
    after: usize,
    panic: bool,
}

impl Sink for FailingSink {
    fn write(&mut self, _: &[Record]) -> Result<(), PipelineError> {
        if self.after == 0 {
            if self.panic {
                panic!("sink exploded");
            }
            return Err(PipelineError::config("disk full"));
        }
        self.after -= 1;
        Ok(())
    }
}

/// A failing or panicking sink stops the pipeline with its error, without hanging, even with
/// an endless source and full queues.
#[test]
fn sink_failure_stops_cleanly() {
    let bytes = calibrated(2, 4, 4, 2);
    for panic in [false, true] {
        let endless = (0..usize::MAX).map(|t| (format!("s{}", t % 5), sample(0, t, 1000, 2)));
        let err = within(30, {
            let m = models(&bytes);
            move || {
                Builder::new(m)
                    .queue(64)
                    .batch(8)
                    .source(IterSource::new(endless))
                    .sink(FailingSink { after: 20, panic })
                    .run()
            }
        })
        .unwrap_err();
        assert!(matches!(err.kind(), ErrorKind::Sink(_)), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(if panic { "sink exploded" } else { "disk full" }),
            "{text}"
        );
    }
}

/// JSON lines written to a file parse back into the records.
#[test]
fn json_lines_round_trip() {
    let bytes = calibrated(2, 4, 4, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let mem = MemorySink::new();
    Builder::new(models(&bytes))
        .source(IterSource::new(flood(200)))
        .sink(JsonLines::create(&path).unwrap())
        .sink(mem.clone())
        .run()
        .unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let parsed: Vec<Record> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(by_stream(&parsed), by_stream(&mem.records()));
    assert_eq!(parsed.len(), 200);
}

/// Paced replay runs in real time (one sample per stream per tick), and then the time from
/// ingestion to verdict is the scoring time, not queueing.
#[test]
fn paced_replay_keeps_latency_low() {
    let bytes = calibrated(C as u16, 8, 16, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut replay = CsvReplay::new().pace(Some(200.0));
    for s in 0..4 {
        let path = dir.path().join(format!("p{s}.csv"));
        let mut text = String::from("a,b,c,d\n");
        for t in 0..100 {
            let v = sample(s, t, 100, C);
            text.push_str(&format!("{},{},{},{}\n", v[0], v[1], v[2], v[3]).replace("NaN", ""));
        }
        fs::write(&path, text).unwrap();
        replay = replay.file(format!("p{s}"), path);
    }
    let started = std::time::Instant::now();
    let r = within(30, move || {
        Builder::new(models(&bytes))
            .source(replay)
            .sink(MemorySink::new())
            .run()
    })
    .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let m = &r.metrics;
    eprintln!("paced: {m} in {secs:.2} s");
    assert_eq!(m.samples_in, 400);
    assert!(m.balanced(), "{m}");
    // 100 ticks at 200 Hz.
    assert!((0.45..5.0).contains(&secs), "{secs}");
    assert!(m.latency_p99 < Duration::from_millis(50), "{m}");
}

/// A source whose parts push every stream, whatever worker owns it: a wrong
/// [`Source::split`].
struct Misrouting;

impl Source for Misrouting {
    fn describe(&self) -> String {
        "misrouting".into()
    }

    fn split(&mut self, workers: usize) -> Option<Vec<Box<dyn Source>>> {
        Some(
            (0..workers)
                .map(|_| Box::new(Misrouting) as Box<dyn Source>)
                .collect(),
        )
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        for t in 0..1000 {
            for s in 0..8 {
                router.push_slice(&format!("pump-{s}"), &normal(s, t, C), None)?;
            }
        }
        Ok(())
    }
}

/// A part that pushes another worker's stream would split that stream's window over two
/// workers: the pipeline stops with an error naming the stream, and does not hang.
#[test]
fn a_part_pushing_another_workers_stream_stops_the_pipeline() {
    let bytes = calibrated(C as u16, 8, 16, 4);
    let err = within(30, move || {
        Builder::new(models(&bytes))
            .workers(2)
            .source(Misrouting)
            .sink(MemorySink::new())
            .run()
    })
    .unwrap_err();
    match err.kind() {
        ErrorKind::Worker { worker, message } => {
            let stream = message.split('`').nth(1).unwrap();
            assert_eq!(
                message,
                &format!(
                    "a source part pushed stream `{stream}`, which belongs to worker {}",
                    partition(stream, 2)
                )
            );
            assert_ne!(partition(stream, 2), *worker);
        }
        other => panic!("{other:?}"),
    }
}

/// A part that cannot read its file fails the pipeline as a source error under the source's
/// name and the file's, as the whole source on its own thread would.
#[test]
fn a_part_that_cannot_read_fails_as_its_source() {
    let bytes = calibrated(C as u16, 8, 16, 4);
    let dir = tempfile::tempdir().unwrap();
    let mut replay = CsvReplay::new();
    for s in 0..6 {
        let path = dir.path().join(format!("p{s}.csv"));
        let mut text = String::from("a,b,c,d\n");
        for t in 0..50 {
            let v = normal(s, t, C);
            text.push_str(&format!("{},{},{},{}\n", v[0], v[1], v[2], v[3]));
        }
        if s != 3 {
            fs::write(&path, text).unwrap();
        }
        replay = replay.file(format!("p{s}"), path);
    }
    let out = MemorySink::new();
    let sink = out.clone();
    let err = within(30, move || {
        Builder::new(models(&bytes))
            .workers(2)
            .source(replay)
            .sink(sink)
            .run()
    })
    .unwrap_err();
    match err.kind() {
        ErrorKind::Source {
            source_name,
            message,
        } => {
            assert_eq!(source_name, "csv replay of 6 file(s)");
            assert!(message.contains("p3.csv"), "{message}");
        }
        other => panic!("{other:?}"),
    }
}
