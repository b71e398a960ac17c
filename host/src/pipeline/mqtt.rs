//! MQTT: a subscribing source, a publishing sink, and the shard scheme that lets several
//! processes share the sensors without splitting a stream.
//!
//! # Topics and shards
//! Samples are published to `<prefix>/<shard>/<stream>` with `shard = fnv1a(stream) %
//! shard_count` ([`shard_of`]; FNV-1a 64 over the UTF-8 bytes of the id, easy to reproduce in any
//! publisher). A process owning shards `0-3` of 8 subscribes to `<prefix>/0/+` .. `<prefix>/3/+`,
//! so every sample of a stream reaches the one process that holds its window.
//!
//! MQTT 5 shared subscriptions (`$share/group/...`) are **not** a substitute: the broker spreads
//! messages over the group's members one message at a time, so one sensor's samples would be
//! split across processes and no process would see a whole window.
//!
//! # Delivery
//! Sources subscribe at QoS 1 with a fixed client id and `clean_session = false`, so the broker
//! keeps the subscription and queues messages while the pipeline is disconnected; publishers
//! should do the same (rumqttc drops its unacknowledged messages when the broker answers
//! `session_present = false`, which a broker without persistence does after a restart). Configure
//! the broker with `persistence true` and `max_queued_messages 0` (mosquitto's default queue of
//! 1000 per client drops the rest while the client is away). QoS 1 is at least once: a message
//! may be redelivered after a reconnect; give samples a per-stream `seq` and the workers drop
//! repeats (counted as `duplicates`) and count skipped numbers (`gaps`).
//! Messages are acknowledged when received, before they are scored: a crash of the process loses
//! what it had received and not yet scored.

use core::{
    fmt,
    str::FromStr,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
    time::Duration,
};
use std::{
    collections::HashSet,
    sync::{Arc, Mutex, PoisonError},
    thread::{self, JoinHandle},
    time::Instant,
};

use rumqttc::{Client, Event, MqttOptions, Outgoing, Packet, QoS, SubscribeFilter};

use super::{
    PipelineError,
    router::{Router, fnv1a},
    sink::Sink,
    source::{JsonSample, Source},
    worker::{AlarmEvent, Record},
};

/// A broker address, `HOST:PORT` (port 1883 when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for MqttEndpoint {
    type Err = PipelineError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse()
                    .map_err(|_| PipelineError::config(format!("bad port in `{s}`")))?,
            ),
            None => (s, 1883),
        };
        if host.is_empty() {
            return Err(PipelineError::config(format!("no host in `{s}`")));
        }
        Ok(MqttEndpoint {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for MqttEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// The shard of a stream: FNV-1a 64 of its id modulo `shard_count`.
///
/// # Examples
/// ```
/// use sensorae_host::pipeline::mqtt::{sample_topic, shard_of};
/// let s = shard_of("pump-1", 8);
/// assert!(s < 8);
/// assert_eq!(sample_topic("sensors", "pump-1", 8), format!("sensors/{s}/pump-1"));
/// ```
#[must_use]
pub fn shard_of(stream: &str, shard_count: u32) -> u32 {
    (fnv1a(stream.as_bytes()) % u64::from(shard_count.max(1))) as u32
}

/// The topic a stream's samples are published to: `<prefix>/<shard>/<stream>`.
#[must_use]
pub fn sample_topic(prefix: &str, stream: &str, shard_count: u32) -> String {
    format!("{prefix}/{}/{stream}", shard_of(stream, shard_count))
}

/// Parses a shard list such as `0-3`, `5` or `0-1,6-7`, each below `shard_count`.
///
/// # Errors
/// [`ErrorKind::Config`](super::ErrorKind::Config) for a malformed list or a shard out of
/// range.
pub fn parse_shards(list: &str, shard_count: u32) -> Result<Vec<u32>, PipelineError> {
    let bad = || PipelineError::config(format!("bad shard list `{list}` (of {shard_count})"));
    let mut out = Vec::new();
    for part in list.split(',').map(str::trim) {
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (a.trim().parse::<u32>(), b.trim().parse::<u32>()),
            None => (part.parse::<u32>(), part.parse::<u32>()),
        };
        let (Ok(lo), Ok(hi)) = (lo, hi) else {
            return Err(bad());
        };
        if lo > hi || hi >= shard_count {
            return Err(bad());
        }
        out.extend(lo..=hi);
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Topic filters for the shards a process owns: `<prefix>/<shard>/+`.
#[must_use]
pub fn shard_filters(prefix: &str, shards: &[u32]) -> Vec<String> {
    shards.iter().map(|s| format!("{prefix}/{s}/+")).collect()
}

/// Replaces characters MQTT forbids in a topic level.
fn topic_level(s: &str) -> String {
    s.replace(['/', '+', '#'], "_")
}

/// Sleeps up to `d` in short steps, returning early when `stop` says so.
fn nap(d: Duration, stop: impl Fn() -> bool) {
    let end = Instant::now() + d;
    while !stop() {
        let now = Instant::now();
        if now >= end {
            return;
        }
        thread::sleep((end - now).min(Duration::from_millis(20)));
    }
}

/// Subscribes to topics and turns each message into a sample: a JSON object as on stdin
/// (`{"values":[...],"seq":7}`); the stream is the message's `stream` field or else the topic's
/// last level. Reconnects after a broker failure; see the module docs for delivery guarantees.
#[derive(Debug, Clone)]
pub struct MqttSource {
    endpoint: MqttEndpoint,
    client_id: String,
    filters: Vec<String>,
    persistent: bool,
    linger: Duration,
    give_up_after: Duration,
}

impl MqttSource {
    /// A source with a client id (which must be unique among the broker's clients and stable
    /// across restarts, for the broker to keep its session).
    #[must_use]
    pub fn new(endpoint: MqttEndpoint, client_id: &str) -> Self {
        MqttSource {
            endpoint,
            client_id: client_id.to_owned(),
            filters: Vec::new(),
            persistent: true,
            linger: Duration::from_millis(5),
            give_up_after: Duration::from_secs(60),
        }
    }

    /// Subscribes to a topic filter (may be repeated).
    #[must_use]
    pub fn topic(mut self, filter: &str) -> Self {
        self.filters.push(filter.to_owned());
        self
    }

    /// Subscribes to the owned shards under `prefix`.
    #[must_use]
    pub fn shards(mut self, prefix: &str, shards: &[u32]) -> Self {
        self.filters.extend(shard_filters(prefix, shards));
        self
    }

    /// Keep a broker session (default true: `clean_session = false`).
    #[must_use]
    pub fn persistent(mut self, yes: bool) -> Self {
        self.persistent = yes;
        self
    }

    /// Longest time a received sample waits in a partial batch (default 5 ms).
    #[must_use]
    pub fn linger(mut self, d: Duration) -> Self {
        self.linger = d;
        self
    }

    /// Fail when the broker cannot be reached for this long (default 60 s).
    #[must_use]
    pub fn give_up_after(mut self, d: Duration) -> Self {
        self.give_up_after = d;
        self
    }
}

impl Source for MqttSource {
    fn describe(&self) -> String {
        format!("mqtt {} {:?}", self.endpoint, self.filters)
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        if self.filters.is_empty() {
            return Err(PipelineError::config("mqtt source without topics"));
        }
        if self.client_id.is_empty() {
            return Err(PipelineError::config("mqtt source without a client id"));
        }
        let broker = self.endpoint.to_string();
        let mut opts = MqttOptions::new(&self.client_id, &self.endpoint.host, self.endpoint.port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(!self.persistent)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 64);
        let filters: Vec<SubscribeFilter> = self
            .filters
            .iter()
            .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
            .collect();
        let mut down_since: Option<Instant> = Some(Instant::now());
        let mut connected_once = false;
        let mut last_flush = Instant::now();
        let result = loop {
            if router.stopping() {
                break Ok(());
            }
            match conn.recv_timeout(self.linger) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    match serde_json::from_slice::<JsonSample>(&p.payload) {
                        Ok(s) => {
                            let values = s.values.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                            let stream = s.stream.unwrap_or_else(|| {
                                p.topic.rsplit('/').next().unwrap_or("").to_owned()
                            });
                            router.push(&stream, values, s.seq)?;
                        }
                        Err(_) => router.malformed(),
                    }
                }
                Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => {
                    down_since = None;
                    if connected_once {
                        router.reconnected();
                    }
                    connected_once = true;
                    // A new session has no subscriptions; a resumed one keeps them.
                    if !ack.session_present {
                        client
                            .try_subscribe_many(filters.clone())
                            .map_err(|e| PipelineError::mqtt(&broker, format!("subscribe: {e}")))?;
                    }
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.give_up_after {
                        break Err(PipelineError::mqtt(&broker, e.to_string()));
                    }
                    router.flush()?;
                    nap(Duration::from_millis(100), || router.stopping());
                }
                Err(rumqttc::RecvTimeoutError::Timeout) => {}
                Err(rumqttc::RecvTimeoutError::Disconnected) => break Ok(()),
            }
            if last_flush.elapsed() >= self.linger {
                router.flush()?;
                last_flush = Instant::now();
            }
        };
        // Leave cleanly so a persistent session keeps only what we have not received.
        let _ = client.try_disconnect();
        let deadline = Instant::now() + Duration::from_millis(500);
        while Instant::now() < deadline {
            match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(_)) => {}
            }
        }
        result
    }
}

/// Delivery counts of a [`MqttPublisher`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PublishStats {
    /// Messages handed to the client.
    pub published: u64,
    /// Acknowledgements received (a message resent after a reconnect may be acknowledged twice).
    pub acked: u64,
    /// Connection failures the client recovered from.
    pub reconnects: u64,
}

#[derive(Debug, Default)]
struct PubState {
    published: AtomicU64,
    acked: AtomicU64,
    reconnects: AtomicU64,
    connected: AtomicBool,
    stop: AtomicBool,
    outstanding: Mutex<HashSet<u16>>,
    last_error: Mutex<Option<(Instant, String)>>,
}

/// A QoS 1 publisher with its own network thread, which reconnects after failures and resends
/// unacknowledged messages (persistent session, `clean_session = false`).
pub struct MqttPublisher {
    client: Client,
    driver: Option<JoinHandle<()>>,
    state: Arc<PubState>,
    broker: String,
}

impl fmt::Debug for MqttPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttPublisher")
            .field("broker", &self.broker)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl MqttPublisher {
    /// Starts a client; the connection is made in the background.
    ///
    /// # Errors
    /// [`ErrorKind::Config`](super::ErrorKind::Config) for an empty client id, `Io` when the
    /// thread cannot start.
    pub fn connect(endpoint: &MqttEndpoint, client_id: &str) -> Result<Self, PipelineError> {
        if client_id.is_empty() {
            return Err(PipelineError::config("mqtt publisher without a client id"));
        }
        let mut opts = MqttOptions::new(client_id, &endpoint.host, endpoint.port);
        opts.set_keep_alive(Duration::from_secs(5))
            .set_clean_session(false)
            .set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = Client::new(opts, 1024);
        let state = Arc::new(PubState::default());
        let st = Arc::clone(&state);
        let driver = thread::Builder::new()
            .name("mqtt-publisher".into())
            .spawn(move || {
                let mut stop_seen: Option<Instant> = None;
                loop {
                    if st.stop.load(Ordering::SeqCst) {
                        let t = *stop_seen.get_or_insert_with(Instant::now);
                        if t.elapsed() > Duration::from_secs(1) {
                            break;
                        }
                    }
                    match conn.recv_timeout(Duration::from_millis(50)) {
                        Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                            st.connected.store(true, Ordering::SeqCst);
                        }
                        Ok(Ok(Event::Incoming(Packet::PubAck(a)))) => {
                            st.acked.fetch_add(1, Ordering::SeqCst);
                            st.outstanding
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .remove(&a.pkid);
                        }
                        Ok(Ok(Event::Outgoing(Outgoing::Publish(pkid)))) => {
                            st.outstanding
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .insert(pkid);
                        }
                        Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) => break,
                        Ok(Ok(_)) | Err(rumqttc::RecvTimeoutError::Timeout) => {}
                        Ok(Err(e)) => {
                            if st.connected.swap(false, Ordering::SeqCst) {
                                st.reconnects.fetch_add(1, Ordering::SeqCst);
                            }
                            *st.last_error.lock().unwrap_or_else(PoisonError::into_inner) =
                                Some((Instant::now(), e.to_string()));
                            nap(Duration::from_millis(100), || {
                                st.stop.load(Ordering::SeqCst)
                            });
                        }
                        Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                    }
                }
            })
            .map_err(|e| PipelineError::io("spawn mqtt publisher", e))?;
        Ok(MqttPublisher {
            client,
            driver: Some(driver),
            state,
            broker: endpoint.to_string(),
        })
    }

    /// Queues a QoS 1 message; blocks while the client's queue is full.
    ///
    /// # Errors
    /// [`ErrorKind::Mqtt`](super::ErrorKind::Mqtt) for an invalid topic or a stopped client.
    pub fn publish(&self, topic: &str, payload: Vec<u8>) -> Result<(), PipelineError> {
        self.client
            .publish(topic, QoS::AtLeastOnce, false, payload)
            .map_err(|e| PipelineError::mqtt(&self.broker, format!("publish to {topic}: {e}")))?;
        self.state.published.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    /// Counts so far.
    #[must_use]
    pub fn stats(&self) -> PublishStats {
        PublishStats {
            published: self.state.published.load(Ordering::SeqCst),
            acked: self.state.acked.load(Ordering::SeqCst),
            reconnects: self.state.reconnects.load(Ordering::SeqCst),
        }
    }

    /// Waits until every message is acknowledged (and no acknowledgement is outstanding).
    ///
    /// # Errors
    /// [`ErrorKind::Mqtt`](super::ErrorKind::Mqtt) with the counts and the last connection
    /// error after `timeout`.
    pub fn wait_acked(&self, timeout: Duration) -> Result<PublishStats, PipelineError> {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.stats();
            let idle = self
                .state
                .outstanding
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .is_empty();
            let quiet = self
                .state
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .is_none_or(|(t, _)| t.elapsed() > Duration::from_millis(300));
            if s.acked >= s.published && idle && quiet {
                return Ok(s);
            }
            if Instant::now() >= deadline {
                let last = self
                    .state
                    .last_error
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .as_ref()
                    .map(|(_, e)| e.clone())
                    .unwrap_or_default();
                return Err(PipelineError::mqtt(
                    &self.broker,
                    format!(
                        "{} of {} messages acknowledged after {timeout:?} {last}",
                        s.acked, s.published
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for acknowledgements, disconnects and stops the network thread.
    ///
    /// # Errors
    /// As [`MqttPublisher::wait_acked`].
    pub fn close(mut self, timeout: Duration) -> Result<PublishStats, PipelineError> {
        let waited = self.wait_acked(timeout);
        self.shutdown();
        waited
    }

    fn shutdown(&mut self) {
        let _ = self.client.try_disconnect();
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(d) = self.driver.take() {
            let _ = d.join();
        }
    }
}

impl Drop for MqttPublisher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Publishes records as JSON: every record to `<prefix>/verdict/<stream>`, and alarm changes
/// also to `<prefix>/alarm/<stream>`, at QoS 1. At the end it waits (up to 30 s) for the broker
/// to acknowledge everything.
#[derive(Debug)]
pub struct MqttSink {
    publisher: Option<MqttPublisher>,
    prefix: String,
}

impl MqttSink {
    /// Connects a publisher.
    ///
    /// # Errors
    /// As [`MqttPublisher::connect`].
    pub fn new(
        endpoint: &MqttEndpoint,
        client_id: &str,
        prefix: &str,
    ) -> Result<Self, PipelineError> {
        Ok(MqttSink {
            publisher: Some(MqttPublisher::connect(endpoint, client_id)?),
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }
}

impl Sink for MqttSink {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        let Some(p) = &self.publisher else {
            return Err(PipelineError::config("mqtt sink used after finish"));
        };
        for r in records {
            let payload = serde_json::to_vec(r)
                .map_err(|e| PipelineError::io("mqtt payload", std::io::Error::other(e)))?;
            let level = topic_level(&r.stream);
            if matches!(r.event, Some(AlarmEvent::On | AlarmEvent::Off)) {
                p.publish(&format!("{}/alarm/{level}", self.prefix), payload.clone())?;
            }
            p.publish(&format!("{}/verdict/{level}", self.prefix), payload)?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), PipelineError> {
        match self.publisher.take() {
            Some(p) => p.close(Duration::from_secs(30)).map(|_| ()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_shards() {
        let e: MqttEndpoint = "127.0.0.1:1884".parse().unwrap();
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 1884));
        assert_eq!("localhost".parse::<MqttEndpoint>().unwrap().port, 1883);
        assert!(":1".parse::<MqttEndpoint>().is_err());
        assert!("h:x".parse::<MqttEndpoint>().is_err());
        assert_eq!(parse_shards("0-3", 8).unwrap(), [0, 1, 2, 3]);
        assert_eq!(parse_shards("6-7,1,1", 8).unwrap(), [1, 6, 7]);
        assert!(parse_shards("0-8", 8).is_err());
        assert!(parse_shards("3-1", 8).is_err());
        assert!(parse_shards("x", 8).is_err());
        assert_eq!(shard_filters("s", &[0, 2]), ["s/0/+", "s/2/+"]);
        assert_eq!(topic_level("a/b+#"), "a_b__");
        let counts = (0..800).fold([0u32; 8], |mut c, i| {
            c[shard_of(&format!("pump-{i}"), 8) as usize] += 1;
            c
        });
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
    }
}
