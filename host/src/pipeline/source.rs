//! Where samples come from: CSV replay, line-oriented input (stdin), iterators (and MQTT, in
//! `mqtt`).

use core::time::Duration;
use std::{
    collections::{HashMap, HashSet},
    fs::File,
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    sync::Arc,
    thread,
    time::Instant,
};

use crossbeam_channel::RecvTimeoutError;
use serde::Deserialize;

use super::{ErrorKind, PipelineError, router::Router};

/// Column names never taken as channels unless a model names them (compared ignoring case).
pub const NON_CHANNEL_COLUMNS: [&str; 8] = [
    "anomaly",
    "changepoint",
    "label",
    "datetime",
    "timestamp",
    "time",
    "seq",
    "stream",
];

/// A producer of samples, run on its own thread. It pushes samples into the [`Router`] until
/// its input ends or [`Router::stopping`] turns true, and returns; the pipeline flushes what is
/// left.
///
/// A source that knows its streams before it reads may also [`split`](Source::split) into one
/// part per worker; each worker then runs its part on its own thread and scores what it reads
/// without a queue in between, as a Kafka Streams thread processes the partitions it consumes.
pub trait Source: Send {
    /// A short description for errors and logs.
    fn describe(&self) -> String;

    /// Splits into `workers` parts, the `i`-th pushing only the streams that [`partition`]
    /// gives worker `i` (a part may have none), each part keeping its streams' order. `None`,
    /// the default, when the streams are only known while reading (long-format files, stdin,
    /// MQTT). A part that pushes another worker's stream stops the pipeline with an error.
    ///
    /// [`partition`]: super::partition
    fn split(&mut self, workers: usize) -> Option<Vec<Box<dyn Source>>> {
        let _ = workers;
        None
    }

    /// Reads input into the router.
    ///
    /// # Errors
    /// Input that cannot be read at all; single bad records are counted with
    /// [`Router::malformed`] instead.
    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError>;
}

/// Samples from an iterator of `(stream, values)` (tests, benchmarks, embedding).
pub struct IterSource {
    items: Box<dyn Iterator<Item = (String, Vec<f32>)> + Send>,
}

impl IterSource {
    /// Wraps an iterator.
    pub fn new<I>(items: I) -> Self
    where
        I: IntoIterator<Item = (String, Vec<f32>)>,
        I::IntoIter: Send + 'static,
    {
        IterSource {
            items: Box::new(items.into_iter()),
        }
    }
}

impl Source for IterSource {
    fn describe(&self) -> String {
        "iterator".into()
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        for (stream, values) in self.items.by_ref() {
            if router.stopping() {
                break;
            }
            router.push(&stream, values, None)?;
        }
        Ok(())
    }
}

/// Replays the pace of real time: one sample per stream per tick. A tick ends when a stream
/// comes round again; the batch is flushed and the source sleeps until the next tick.
#[derive(Debug)]
struct Pacer {
    period: Option<Duration>,
    next: Option<Instant>,
    seen: HashSet<String>,
}

impl Pacer {
    fn new(hz: Option<f64>) -> Self {
        let period = hz
            .filter(|h| h.is_finite() && *h > 0.0)
            .map(|h| Duration::from_secs_f64(1.0 / h));
        Pacer {
            period,
            next: None,
            seen: HashSet::new(),
        }
    }

    fn before(&mut self, stream: &str, router: &mut Router) -> Result<(), PipelineError> {
        let Some(period) = self.period else {
            return Ok(());
        };
        let next = *self.next.get_or_insert_with(|| Instant::now() + period);
        if self.seen.contains(stream) {
            router.flush()?;
            sleep_until(next, router);
            self.next = Some(next + period);
            self.seen.clear();
        }
        self.seen.insert(stream.to_owned());
        Ok(())
    }
}

/// Sleeps in short steps so that a stop request is seen quickly.
fn sleep_until(deadline: Instant, router: &Router) {
    loop {
        let now = Instant::now();
        if now >= deadline || router.stopping() {
            return;
        }
        thread::sleep((deadline - now).min(Duration::from_millis(20)));
    }
}

/// Most frequent of comma, semicolon and tab in a header line (comma if none).
fn detect_delimiter(header: &str) -> u8 {
    [b',', b';', b'\t']
        .into_iter()
        .max_by_key(|&d| (header.bytes().filter(|&b| b == d).count(), d == b','))
        .unwrap_or(b',')
}

/// A cell as a value: empty and `NaN` are missing (NaN, a sensor fault); so is anything
/// unreadable.
fn parse_cell(cell: &str) -> f32 {
    cell.trim().parse::<f32>().unwrap_or(f32::NAN)
}

/// Picks the value columns of a stream: the model's channel names when the header has them all,
/// otherwise every column that is not the stream column or a known non-channel name and whose
/// first cell reads as a number (or is empty).
fn choose_columns(
    header: &[String],
    first: &[&str],
    model_channels: Option<&[Arc<str>]>,
    stream_column: Option<usize>,
) -> Vec<usize> {
    if let Some(names) = model_channels {
        let found: Option<Vec<usize>> = names
            .iter()
            .map(|n| header.iter().position(|h| h.trim() == &**n))
            .collect();
        if let Some(found) = found {
            return found;
        }
    }
    header
        .iter()
        .enumerate()
        .filter(|&(i, h)| {
            Some(i) != stream_column
                && !NON_CHANNEL_COLUMNS
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(h.trim()))
                && first.get(i).is_some_and(|c| {
                    let c = c.trim();
                    c.is_empty() || c.parse::<f32>().is_ok()
                })
        })
        .map(|(i, _)| i)
        .collect()
}

/// One CSV input being replayed.
struct CsvInput {
    what: String,
    reader: csv::Reader<Box<dyn Read + Send>>,
    header: Vec<String>,
    /// Fixed stream id (one file per stream), or the stream column.
    stream: Result<String, usize>,
    columns: HashMap<String, Vec<usize>>,
    record: csv::StringRecord,
}

impl CsvInput {
    fn open(path: &Path, stream: Result<String, &str>) -> Result<Self, PipelineError> {
        let what = path.display().to_string();
        let file = File::open(path).map_err(|e| PipelineError::io(&what, e))?;
        let mut buffered = BufReader::new(file);
        let mut first = String::new();
        buffered
            .read_line(&mut first)
            .map_err(|e| PipelineError::io(&what, e))?;
        let delimiter = detect_delimiter(&first);
        let chained: Box<dyn Read + Send> = Box::new(std::io::Cursor::new(first).chain(buffered));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(chained);
        let csv_err = |e: csv::Error| {
            PipelineError::new(ErrorKind::Csv {
                what: what.clone(),
                message: e.to_string(),
            })
        };
        let header: Vec<String> = reader
            .headers()
            .map_err(csv_err)?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
            .collect();
        let stream = match stream {
            Ok(id) => Ok(id),
            Err(column) => Err(header.iter().position(|h| h == column).ok_or_else(|| {
                PipelineError::new(ErrorKind::Csv {
                    what: what.clone(),
                    message: format!("no stream column `{column}` in the header"),
                })
            })?),
        };
        Ok(CsvInput {
            what,
            reader,
            header,
            stream,
            columns: HashMap::new(),
            record: csv::StringRecord::new(),
        })
    }

    /// Reads and pushes the next row; false at the end of the file.
    fn next(&mut self, router: &mut Router, pacer: &mut Pacer) -> Result<bool, PipelineError> {
        match self.reader.read_record(&mut self.record) {
            Ok(false) => return Ok(false),
            Ok(true) => {}
            Err(e) if e.is_io_error() => {
                return Err(PipelineError::new(ErrorKind::Csv {
                    what: self.what.clone(),
                    message: e.to_string(),
                }));
            }
            Err(_) => {
                router.malformed();
                return Ok(true);
            }
        }
        let cells: Vec<&str> = self.record.iter().collect();
        let stream = match &self.stream {
            Ok(id) => id.clone(),
            Err(col) => match cells.get(*col) {
                Some(id) if !id.trim().is_empty() => id.trim().to_owned(),
                _ => {
                    router.malformed();
                    return Ok(true);
                }
            },
        };
        if !self.columns.contains_key(&stream) {
            let cols = choose_columns(
                &self.header,
                &cells,
                router.channels_for(&stream),
                self.stream.as_ref().err().copied(),
            );
            self.columns.insert(stream.clone(), cols);
        }
        let values = self
            .columns
            .get(&stream)
            .map(|cols| {
                cols.iter()
                    .map(|&i| cells.get(i).map_or(f32::NAN, |c| parse_cell(c)))
                    .collect()
            })
            .unwrap_or_default();
        pacer.before(&stream, router)?;
        router.push(&stream, values, None)?;
        Ok(true)
    }
}

/// Replays CSV files: one file per stream (read round-robin, a row of each in turn, as if the
/// sensors were sampled together), or long-format files whose stream column names the stream
/// of each row. The delimiter (comma, semicolon or tab) is detected from the header.
///
/// Columns: the model's channel names when the header has them all, else every numeric column
/// except time, label and stream columns, in file order. Empty and unreadable cells become NaN,
/// which the detector reports as a sensor fault.
#[derive(Debug, Clone, Default)]
pub struct CsvReplay {
    files: Vec<(PathBuf, Result<String, String>)>,
    pace: Option<f64>,
}

impl CsvReplay {
    /// No files yet.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a file holding one stream.
    #[must_use]
    pub fn file(mut self, stream: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.files.push((path.into(), Ok(stream.into())));
        self
    }

    /// Adds a long-format file: `stream_column` names each row's stream.
    #[must_use]
    pub fn long(mut self, path: impl Into<PathBuf>, stream_column: impl Into<String>) -> Self {
        self.files.push((path.into(), Err(stream_column.into())));
        self
    }

    /// Replays in real time at `hz` samples per second per stream (`None`: as fast as the
    /// workers take them).
    #[must_use]
    pub fn pace(mut self, hz: Option<f64>) -> Self {
        self.pace = hz;
        self
    }
}

impl Source for CsvReplay {
    fn describe(&self) -> String {
        format!("csv replay of {} file(s)", self.files.len())
    }

    /// By stream, when every file holds one stream (none is long-format).
    fn split(&mut self, workers: usize) -> Option<Vec<Box<dyn Source>>> {
        let groups = super::by_worker(self.files.iter().cloned(), workers, |(_, stream)| {
            stream.as_deref().ok()
        })?;
        Some(
            groups
                .into_iter()
                .map(|files| {
                    let mut part = CsvReplay::new().pace(self.pace);
                    part.files = files;
                    Box::new(part) as Box<dyn Source>
                })
                .collect(),
        )
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        let mut inputs = self
            .files
            .iter()
            .map(|(path, stream)| {
                CsvInput::open(
                    path,
                    match stream {
                        Ok(id) => Ok(id.clone()),
                        Err(column) => Err(column.as_str()),
                    },
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut pacer = Pacer::new(self.pace);
        while !inputs.is_empty() && !router.stopping() {
            let mut i = 0;
            while let Some(input) = inputs.get_mut(i) {
                if input.next(router, &mut pacer)? {
                    i += 1;
                } else {
                    inputs.remove(i);
                }
            }
        }
        Ok(())
    }
}

/// How each line of a [`LinesSource`] is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineFormat {
    /// `{"stream":"pump-1","values":[1.0,null,2.5],"seq":7}`; `stream` defaults to `stdin`,
    /// `seq` is optional, `null` is a missing value.
    Json,
    /// A header line, then rows; `stream_column` names each row's stream (rows without the
    /// column are stream `stdin`). No quoted fields.
    Csv {
        /// Column with the stream id.
        stream_column: String,
    },
}

/// A sample as a JSON line or MQTT message.
#[derive(Debug, Deserialize)]
pub(crate) struct JsonSample {
    pub(crate) stream: Option<String>,
    pub(crate) values: Vec<Option<f32>>,
    pub(crate) seq: Option<u64>,
}

/// Line-oriented input, typically standard input. A helper thread reads lines and hands them
/// over in chunks (whatever is available without blocking, up to 1024 lines), so the source
/// stays responsive to a stop request while the input is idle, and a batch is flushed whenever
/// the input pauses.
pub struct LinesSource {
    input: Option<Box<dyn Read + Send>>,
    format: LineFormat,
    name: String,
}

impl LinesSource {
    /// Reads standard input.
    #[must_use]
    pub fn stdin(format: LineFormat) -> Self {
        LinesSource::new(std::io::stdin(), format, "stdin")
    }

    /// Reads any reader (buffered here); `name` labels it in errors.
    pub fn new(input: impl Read + Send + 'static, format: LineFormat, name: &str) -> Self {
        LinesSource {
            input: Some(Box::new(input)),
            format,
            name: name.to_owned(),
        }
    }
}

/// Reads lines and sends them in chunks; ends at EOF, on a read error or when nobody listens.
fn read_chunks(
    input: Box<dyn Read + Send>,
    tx: &crossbeam_channel::Sender<Result<Vec<String>, std::io::Error>>,
) {
    let mut input = BufReader::with_capacity(1 << 16, input);
    let mut chunk = Vec::new();
    loop {
        let mut line = String::new();
        match input.read_line(&mut line) {
            Ok(0) => break,
            Ok(_) => chunk.push(line),
            Err(e) => {
                let _ = tx.send(Err(e));
                return;
            }
        }
        // An empty buffer means the next read may block: hand over what we have first.
        if (chunk.len() >= 1024 || input.buffer().is_empty())
            && tx.send(Ok(core::mem::take(&mut chunk))).is_err()
        {
            return;
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(Ok(chunk));
    }
}

impl Source for LinesSource {
    fn describe(&self) -> String {
        format!("{} ({:?})", self.name, self.format)
    }

    fn run(&mut self, router: &mut Router) -> Result<(), PipelineError> {
        let Some(input) = self.input.take() else {
            return Ok(());
        };
        let (tx, rx) = crossbeam_channel::bounded(4);
        // Not joined: if the input never ends (an idle terminal), the thread is left blocked in
        // its read when the pipeline stops, holding nothing but its end of this channel.
        let spawned = thread::Builder::new()
            .name(format!("{}-reader", self.name))
            .spawn(move || read_chunks(input, &tx));
        spawned.map_err(|e| PipelineError::io("spawn reader thread", e))?;
        let mut csv: Option<(u8, Vec<String>, Option<usize>)> = None;
        let mut columns: HashMap<String, Vec<usize>> = HashMap::new();
        loop {
            if router.stopping() {
                return Ok(());
            }
            let chunk = match rx.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => return Err(PipelineError::io(&self.name, e)),
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Disconnected) => return Ok(()),
            };
            for line in &chunk {
                let line = line.trim_end_matches(['\n', '\r']);
                if line.trim().is_empty() {
                    continue;
                }
                match &self.format {
                    LineFormat::Json => match serde_json::from_str::<JsonSample>(line) {
                        Ok(s) => {
                            let values = s.values.iter().map(|v| v.unwrap_or(f32::NAN)).collect();
                            let stream = s.stream.as_deref().unwrap_or("stdin");
                            router.push(stream, values, s.seq)?;
                        }
                        Err(_) => router.malformed(),
                    },
                    LineFormat::Csv { stream_column } => {
                        let Some((delim, header, scol)) = &csv else {
                            let delim = detect_delimiter(line);
                            let header: Vec<String> = line
                                .split(char::from(delim))
                                .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
                                .collect();
                            let scol = header.iter().position(|h| h == stream_column);
                            csv = Some((delim, header, scol));
                            continue;
                        };
                        let cells: Vec<&str> = line.split(char::from(*delim)).collect();
                        let stream = match scol {
                            Some(c) => match cells.get(*c) {
                                Some(id) if !id.trim().is_empty() => id.trim(),
                                _ => {
                                    router.malformed();
                                    continue;
                                }
                            },
                            None => "stdin",
                        };
                        if !columns.contains_key(stream) {
                            let cols =
                                choose_columns(header, &cells, router.channels_for(stream), *scol);
                            columns.insert(stream.to_owned(), cols);
                        }
                        let values = columns
                            .get(stream)
                            .map(|cols| {
                                cols.iter()
                                    .map(|&i| cells.get(i).map_or(f32::NAN, |c| parse_cell(c)))
                                    .collect()
                            })
                            .unwrap_or_default();
                        router.push(stream, values, None)?;
                    }
                }
            }
            router.flush()?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delimiters_and_cells() {
        assert_eq!(detect_delimiter("a;b;c"), b';');
        assert_eq!(detect_delimiter("a,b"), b',');
        assert_eq!(detect_delimiter("a\tb\tc"), b'\t');
        assert_eq!(detect_delimiter("abc"), b',');
        assert!(parse_cell("").is_nan());
        assert!(parse_cell("NaN").is_nan());
        assert!(parse_cell("x").is_nan());
        assert_eq!(parse_cell(" 2.5 "), 2.5);
    }

    #[test]
    fn columns_by_model_names_else_numeric() {
        let header: Vec<String> = ["datetime", "id", "b", "a", "note", "anomaly"]
            .map(String::from)
            .to_vec();
        let row = ["2020-01-01 00:00:00", "p1", "1", "2", "hello", "0"];
        let model: Vec<Arc<str>> = vec!["a".into(), "b".into()];
        assert_eq!(choose_columns(&header, &row, Some(&model), Some(1)), [3, 2]);
        let other: Vec<Arc<str>> = vec!["zz".into()];
        assert_eq!(choose_columns(&header, &row, Some(&other), Some(1)), [2, 3]);
        assert_eq!(choose_columns(&header, &row, None, None), [2, 3]);
    }
}
