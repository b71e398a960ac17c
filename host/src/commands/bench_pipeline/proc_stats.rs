//! What the process used, from Linux's `/proc` (`None` elsewhere).

use core::time::Duration;
use std::collections::BTreeMap;

/// Peak resident set size of this process (`VmHWM` on Linux).
pub(super) fn peak_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// CPU time (user and system) this process has used so far, from `/proc/self/stat` (Linux; in
/// clock ticks of 10 ms).
pub(super) fn cpu_time() -> Option<Duration> {
    stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User and system time from a `stat` line of `/proc`.
fn stat_cpu(stat: &str) -> Option<Duration> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// CPU time so far of each kind of thread of this process, by name without its number
/// (`pipeline-worker-1` reads `pipeline-worker`; Linux keeps 15 characters of a name), from
/// `/proc/self/task` (Linux). Threads that exit while it reads are skipped.
pub(super) fn thread_cpu() -> Option<BTreeMap<String, Duration>> {
    let mut by_kind = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat.get(open + 1..close).unwrap_or("");
        let kind = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '-');
        if let Some(t) = stat_cpu(&stat) {
            *by_kind.entry(kind.to_owned()).or_insert(Duration::ZERO) += t;
        }
    }
    Some(by_kind)
}

/// CPU microseconds per sample of each kind of pipeline thread between two [`thread_cpu`]
/// readings.
pub(super) fn per_thread_kind(
    before: Option<&BTreeMap<String, Duration>>,
    after: Option<&BTreeMap<String, Duration>>,
    samples: u64,
) -> Vec<(String, f64)> {
    let (Some(before), Some(after)) = (before, after) else {
        return Vec::new();
    };
    if samples == 0 {
        return Vec::new();
    }
    after
        .iter()
        .filter(|(kind, _)| kind.starts_with("pipeline-"))
        .map(|(kind, &t)| {
            let used = t.saturating_sub(before.get(kind).copied().unwrap_or(Duration::ZERO));
            (kind.clone(), used.as_secs_f64() * 1e6 / samples as f64)
        })
        .collect()
}

/// CPU microseconds per sample between two readings of [`cpu_time`].
pub(super) fn cpu_us_per_sample(
    before: Option<Duration>,
    after: Option<Duration>,
    samples: u64,
) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (samples > 0).then(|| used.as_secs_f64() * 1e6 / samples as f64)
}
