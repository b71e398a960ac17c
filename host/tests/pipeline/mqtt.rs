//! MQTT against a real mosquitto broker on loopback, started by each test on a free port.

use core::time::Duration;
use std::{
    collections::{BTreeMap, HashSet},
    fs,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::Instant,
};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS, SubscribeFilter};
use sensorae_host::pipeline::{
    AlarmEvent, Builder, MemorySink, ModelMap, Record, Running,
    mqtt::{
        MqttEndpoint, MqttPublisher, MqttSink, MqttSource, sample_topic, shard_filters, shard_of,
    },
};

use crate::common::{by_stream, calibrated, reference, sample, within};

/// A mosquitto process with persistence in a temporary directory.
struct Broker {
    child: Child,
    port: u16,
    conf: PathBuf,
    dir: tempfile::TempDir,
}

fn mosquitto_binary() -> PathBuf {
    for candidate in [
        "mosquitto",
        "/usr/sbin/mosquitto",
        "/usr/local/sbin/mosquitto",
    ] {
        let found = Command::new(candidate)
            .arg("-h")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if found {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "the MQTT tests need the mosquitto broker binary, which was not found on PATH or in \
         /usr/sbin: install it with `apt-get install -y mosquitto mosquitto-clients`"
    );
}

impl Broker {
    fn start() -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Started as root, mosquitto drops to its own user, which must be able to write its
        // persistence file and log here.
        fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let conf = dir.path().join("mosquitto.conf");
        // Persistence keeps sessions and queued QoS 1 messages across a restart; the default
        // queue limit (1000 per client) would drop messages for a client that is away.
        fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n\
                 persistence_location {}/\nmax_queued_messages 0\nlog_dest file {}/broker.log\n",
                dir.path().display(),
                dir.path().display()
            ),
        )
        .unwrap();
        let child = Self::spawn(&conf, port);
        Broker {
            child,
            port,
            conf,
            dir,
        }
    }

    fn spawn(conf: &Path, port: u16) -> Child {
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "mosquitto did not listen on {port}"
            );
            thread::sleep(Duration::from_millis(20));
        }
        child
    }

    fn endpoint(&self) -> MqttEndpoint {
        MqttEndpoint {
            host: "127.0.0.1".into(),
            port: self.port,
        }
    }

    /// Stops the broker with SIGTERM (it saves its state) and starts it again on the same port.
    fn restart(&mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().unwrap();
        self.child = Self::spawn(&self.conf, self.port);
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `f` on every event of a client until it returns true or `secs` pass.
fn drive(conn: &mut rumqttc::Connection, secs: u64, mut f: impl FnMut(&Event) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(100)) {
            Ok(Ok(e)) => {
                if f(&e) {
                    return;
                }
            }
            Ok(Err(_)) => thread::sleep(Duration::from_millis(50)),
            Err(_) => {}
        }
    }
    panic!("no expected MQTT event within {secs} s");
}

/// Creates the persistent session of `client_id` with its subscriptions, so the broker queues
/// messages for it from now on, before the pipeline that uses that id connects.
fn presubscribe(broker: &Broker, client_id: &str, filters: &[String]) {
    let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker.port);
    opts.set_clean_session(false);
    let (client, mut conn) = Client::new(opts, 16);
    let filters: Vec<SubscribeFilter> = filters
        .iter()
        .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
        .collect();
    client.subscribe_many(filters).unwrap();
    drive(&mut conn, 10, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    });
    client.disconnect().unwrap();
    let _ = conn.recv_timeout(Duration::from_millis(200));
}

/// Collects the records published on `filter` by a pipeline's MQTT sink.
fn listen(
    broker: &Broker,
    filter: &str,
) -> (Arc<Mutex<Vec<Record>>>, thread::JoinHandle<()>, Client) {
    let mut opts = MqttOptions::new(format!("listener-{filter}"), "127.0.0.1", broker.port);
    opts.set_clean_session(false)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 16);
    client.subscribe(filter, QoS::AtLeastOnce).unwrap();
    drive(&mut conn, 10, |e| {
        matches!(e, Event::Incoming(Packet::SubAck(_)))
    });
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&got);
    let h = thread::spawn(move || {
        for e in conn.iter() {
            match e {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    sink.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&p.payload).unwrap());
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => break,
                Ok(_) => {}
                Err(_) => thread::sleep(Duration::from_millis(50)),
            }
        }
    });
    (got, h, client)
}

const C: usize = 4;

fn streams(k: usize) -> Vec<String> {
    (0..k).map(|s| format!("pump-{s}")).collect()
}

/// Publishes `n` samples of every stream, time-major, with per-stream sequence numbers;
/// `pause` every 8 messages.
fn publish_all(
    publisher: &MqttPublisher,
    names: &[String],
    n: usize,
    shard_count: u32,
    pause: Duration,
) {
    let mut i = 0;
    for t in 0..n {
        for (s, name) in names.iter().enumerate() {
            let v = sample(s, t, n, C);
            let payload = serde_json::json!({ "values": v, "seq": t });
            publisher
                .publish(
                    &sample_topic("sensors", name, shard_count),
                    payload.to_string().into_bytes(),
                )
                .unwrap();
            i += 1;
            if !pause.is_zero() && i % 8 == 0 {
                thread::sleep(pause);
            }
        }
    }
}

/// Waits until a pipeline has taken `unique` samples that are not repeats, then stops it.
fn finish(running: Running, unique: u64, secs: u64) -> sensorae_host::pipeline::Report {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let m = running.metrics();
        if m.samples_in - m.duplicates >= unique {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {m} of {unique} after {secs} s"
        );
        thread::sleep(Duration::from_millis(20));
    }
    running.stop();
    within(30, move || running.wait()).unwrap()
}

fn expected(model: &[u8], names: &[String], n: usize) -> BTreeMap<String, Vec<crate::common::Key>> {
    names
        .iter()
        .enumerate()
        .map(|(s, name)| {
            let rows: Vec<Vec<f32>> = (0..n).map(|t| sample(s, t, n, C)).collect();
            (name.clone(), reference(model, &rows, true))
        })
        .collect()
}

/// K sensors publish N samples each through the broker: every sample is scored once, with the
/// verdicts of a direct detector, and every alarm change the pipeline publishes arrives.
#[test]
fn every_sample_scored_and_every_alarm_arrives() {
    let broker = Broker::start();
    let model = calibrated(C as u16, 8, 16, 4);
    let (k, n, shards) = (6, 400, 4);
    let names = streams(k);
    let all: Vec<u32> = (0..shards).collect();
    presubscribe(&broker, "scorer", &shard_filters("sensors", &all));
    let (alarms, listener, listen_client) = listen(&broker, "out/alarm/#");
    let mut models = ModelMap::new();
    models.add_bytes("pump-*", "test", &model).unwrap();
    let mem = MemorySink::new();
    let running = Builder::new(models)
        .source(MqttSource::new(broker.endpoint(), "scorer").shards("sensors", &all))
        .sink(mem.clone())
        .sink(MqttSink::new(&broker.endpoint(), "scorer-out", "out").unwrap())
        .start()
        .unwrap();
    let publisher = MqttPublisher::connect(&broker.endpoint(), "gateway").unwrap();
    publish_all(&publisher, &names, n, shards, Duration::ZERO);
    let stats = publisher.close(Duration::from_secs(30)).unwrap();
    assert_eq!(stats.published, (k * n) as u64);
    let report = finish(running, (k * n) as u64, 60);
    let m = &report.metrics;
    eprintln!("mqtt: {m}");
    assert_eq!(m.samples_in, (k * n) as u64, "{m}");
    assert_eq!((m.duplicates, m.gaps, m.malformed), (0, 0, 0), "{m}");
    assert!(m.balanced(), "{m}");
    let exp = expected(&model, &names, n);
    assert_eq!(by_stream(&mem.records()), exp);
    let expected_events: usize = exp.values().flatten().filter(|k| k.4.is_some()).count();
    assert!(expected_events >= 6, "{expected_events}");
    // The sink waited for the broker's acknowledgements; give the listener a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    while alarms.lock().unwrap().len() < expected_events && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(20));
    }
    let got = alarms.lock().unwrap().clone();
    listen_client.disconnect().unwrap();
    let _ = listener.join();
    assert_eq!(got.len(), expected_events);
    let on = got
        .iter()
        .filter(|r| r.event == Some(AlarmEvent::On))
        .count() as u64;
    assert_eq!(on, m.alarms);
    let mut got_keys = by_stream(&got);
    for (name, keys) in &exp {
        let events: Vec<_> = keys.iter().filter(|k| k.4.is_some()).cloned().collect();
        assert_eq!(got_keys.remove(name).unwrap_or_default(), events, "{name}");
    }
}

/// The broker restarts (SIGTERM, then started again on the same port) while samples flow.
/// With persistence, QoS 1 and persistent sessions on both sides nothing is lost: every
/// sequence number of every stream is scored exactly once, redeliveries are counted as
/// duplicates and dropped.
#[test]
fn broker_restart_loses_nothing() {
    let mut broker = Broker::start();
    let model = calibrated(C as u16, 8, 16, 4);
    let (k, n, shards) = (6, 500, 4);
    let names = streams(k);
    let all: Vec<u32> = (0..shards).collect();
    presubscribe(&broker, "scorer", &shard_filters("sensors", &all));
    let mut models = ModelMap::new();
    models.add_bytes("*", "test", &model).unwrap();
    let mem = MemorySink::new();
    let running = Builder::new(models)
        .source(MqttSource::new(broker.endpoint(), "scorer").shards("sensors", &all))
        .sink(mem.clone())
        .start()
        .unwrap();
    let endpoint = broker.endpoint();
    let pub_names = names.clone();
    let publishing = thread::spawn(move || {
        let publisher = MqttPublisher::connect(&endpoint, "gateway").unwrap();
        publish_all(&publisher, &pub_names, n, shards, Duration::from_millis(2));
        publisher.close(Duration::from_secs(60))
    });
    thread::sleep(Duration::from_millis(700));
    let before = running.metrics().samples_in;
    broker.restart();
    let stats = publishing.join().unwrap().unwrap_or_else(|e| {
        panic!(
            "{e}; now {}\nbroker log:\n{}",
            running.metrics(),
            broker.log()
        )
    });
    assert!(
        before > 0 && before < (k * n) as u64,
        "the restart should fall in the middle of the stream ({before})"
    );
    let report = finish(running, (k * n) as u64, 60);
    let m = &report.metrics;
    eprintln!(
        "restart after {before} samples: {m}; publisher {stats:?}\nbroker log:\n{}",
        broker.log()
    );
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(m.reconnects >= 1, "{m}");
    assert_eq!(m.gaps, 0, "{m}");
    assert_eq!(m.samples_in - m.duplicates, (k * n) as u64, "{m}");
    assert!(m.balanced(), "{m}");
    let got = by_stream(&mem.records());
    for (name, keys) in expected(&model, &names, n) {
        let seqs: HashSet<Option<u64>> = got[&name].iter().map(|k| k.1).collect();
        assert_eq!(seqs.len(), n, "{name}");
        assert_eq!(got[&name], keys, "{name}");
    }
}

/// Two `sensorae stream` processes own shards 0-3 and 4-7 of 8 on one broker, and a third
/// owns all 8; each writes JSON lines and exits when input stops. Each stream lands in exactly
/// one of the two, and their union equals the single process's output and a direct scoring.
#[test]
fn two_processes_share_the_shards() {
    let broker = Broker::start();
    let model = calibrated(C as u16, 8, 16, 4);
    let dir = tempfile::tempdir().unwrap();
    let model_path = dir.path().join("pump.snae");
    fs::write(&model_path, &model).unwrap();
    let (k, n, shards) = (16, 200, 8u32);
    let names = streams(k);
    let port = broker.port.to_string();
    let mut runs = Vec::new();
    for (id, list) in [("proc-a", "0-3"), ("proc-b", "4-7"), ("single", "0-7")] {
        let owned: Vec<u32> = sensorae_host::pipeline::mqtt::parse_shards(list, shards).unwrap();
        presubscribe(&broker, id, &shard_filters("sensors", &owned));
        let out = dir.path().join(format!("{id}.jsonl"));
        let child = Command::new(env!("CARGO_BIN_EXE_sensorae"))
            .args(["stream", "--model"])
            .arg(format!("pump-*={}", model_path.display()))
            .args(["--mqtt", &format!("127.0.0.1:{port}")])
            .args(["--shards", list, "--shard-count", "8", "--client-id", id])
            .arg("--out-json")
            .arg(&out)
            .args(["--metrics-every", "0", "--idle-exit", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let want = names
            .iter()
            .filter(|s| owned.contains(&shard_of(s, shards)))
            .count()
            * n;
        runs.push((child, want, out));
    }
    assert_eq!(runs[0].1 + runs[1].1, k * n);
    assert!(runs[0].1 > 0 && runs[1].1 > 0);
    let publisher = MqttPublisher::connect(&broker.endpoint(), "gateway").unwrap();
    publish_all(&publisher, &names, n, shards, Duration::ZERO);
    publisher.close(Duration::from_secs(30)).unwrap();
    let mut outputs = Vec::new();
    for (child, want, out) in runs {
        let o = within(60, move || child.wait_with_output()).unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(o.status.success(), "{err}");
        assert!(err.contains(&format!("in={want} ")), "{err}");
        assert!(!err.contains("unaccounted"), "{err}");
        let text = fs::read_to_string(out).unwrap();
        let recs: Vec<Record> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(recs.len(), want);
        outputs.push(by_stream(&recs));
    }
    let (a, b, single) = (&outputs[0], &outputs[1], &outputs[2]);
    assert!(a.keys().all(|s| !b.contains_key(s)), "a stream was split");
    let mut union = a.clone();
    union.extend(b.clone());
    assert_eq!(union.len(), k);
    assert_eq!(&union, single);
    assert_eq!(union, expected(&model, &names, n));
}
