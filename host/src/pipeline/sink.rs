//! Where records go: JSON lines, CSV, memory (and MQTT, in `mqtt`).

use core::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
    sync::{Arc, Mutex, PoisonError},
};

use super::{
    ErrorKind, PipelineError,
    worker::{AlarmEvent, Record},
};

/// A destination for records. Sinks run on the pipeline's sink thread, one batch at a time.
pub trait Sink: Send {
    /// Writes a batch of records.
    ///
    /// # Errors
    /// Any failure stops the pipeline (after the queues drain into nowhere) and is reported.
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError>;

    /// Flushes buffered output; called periodically and at the end.
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn flush(&mut self) -> Result<(), PipelineError> {
        Ok(())
    }

    /// Called once after the last record: waits for outstanding deliveries and closes.
    /// By default a [`flush`](Sink::flush).
    ///
    /// # Errors
    /// As [`Sink::write`].
    fn finish(&mut self) -> Result<(), PipelineError> {
        self.flush()
    }
}

/// One JSON object per line.
#[derive(Debug)]
pub struct JsonLines<W: Write + Send> {
    out: W,
    what: String,
}

impl JsonLines<BufWriter<io::Stdout>> {
    /// To standard output.
    #[must_use]
    pub fn stdout() -> Self {
        JsonLines::new(BufWriter::new(io::stdout()), "stdout")
    }
}

impl JsonLines<BufWriter<File>> {
    /// To a new file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, PipelineError> {
        let path = path.as_ref();
        let f = File::create(path).map_err(|e| PipelineError::io(path.display().to_string(), e))?;
        Ok(JsonLines::new(
            BufWriter::new(f),
            &path.display().to_string(),
        ))
    }
}

impl<W: Write + Send> JsonLines<W> {
    /// To any writer; `what` names it in errors.
    pub fn new(out: W, what: &str) -> Self {
        JsonLines {
            out,
            what: what.to_owned(),
        }
    }
}

impl<W: Write + Send> Sink for JsonLines<W> {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        for r in records {
            serde_json::to_writer(&mut self.out, r)
                .map_err(|e| PipelineError::io(&self.what, io::Error::other(e)))?;
            self.out
                .write_all(b"\n")
                .map_err(|e| PipelineError::io(&self.what, e))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PipelineError> {
        self.out
            .flush()
            .map_err(|e| PipelineError::io(&self.what, e))
    }
}

/// CSV with a header row; empty cells for absent values.
#[derive(Debug)]
pub struct CsvSink<W: Write + Send> {
    out: csv::Writer<W>,
    what: String,
}

impl CsvSink<File> {
    /// To a new file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be created.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, PipelineError> {
        let path = path.as_ref();
        let f = File::create(path).map_err(|e| PipelineError::io(path.display().to_string(), e))?;
        Ok(CsvSink::new(f, &path.display().to_string()))
    }
}

impl<W: Write + Send> CsvSink<W> {
    /// To any writer; `what` names it in errors.
    pub fn new(out: W, what: &str) -> Self {
        CsvSink {
            out: csv::Writer::from_writer(out),
            what: what.to_owned(),
        }
    }
}

impl<W: Write + Send> Sink for CsvSink<W> {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        for r in records {
            self.out.serialize(r).map_err(|e| {
                PipelineError::new(ErrorKind::Csv {
                    what: self.what.clone(),
                    message: e.to_string(),
                })
            })?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), PipelineError> {
        self.out
            .flush()
            .map_err(|e| PipelineError::io(&self.what, e))
    }
}

/// Keeps every record in memory (for tests and for embedding the pipeline in a program).
#[derive(Debug, Clone, Default)]
pub struct MemorySink {
    records: Arc<Mutex<Vec<Record>>>,
}

impl MemorySink {
    /// An empty sink; clone it before handing it to the builder to read the records later.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The records so far.
    #[must_use]
    pub fn records(&self) -> Vec<Record> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Sink for MemorySink {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        self.records
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(records);
        Ok(())
    }
}

/// Counts records and alarm onsets without formatting or keeping them: the cheapest sink, for
/// benchmarks and dry runs.
///
/// # Examples
/// ```
/// use sensorae_host::pipeline::{Builder, CountingSink, IterSource, ModelMap};
///
/// let mut models = ModelMap::new();
/// models.add_bytes("*", "tiny", &sensorae::testing::tiny_model_bytes())?;
/// let count = CountingSink::new();
/// Builder::new(models)
///     .source(IterSource::new((0..10).map(|t| ("s".to_owned(), vec![t as f32 * 0.1, 0.0]))))
///     .sink(count.clone())
///     .run()?;
/// assert_eq!(count.records(), 10);
/// # Ok::<(), sensorae_host::pipeline::PipelineError>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct CountingSink {
    records: Arc<AtomicU64>,
    onsets: Arc<AtomicU64>,
}

impl CountingSink {
    /// A sink at zero; clone it before handing it to the builder to read the counts later.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records written so far.
    #[must_use]
    pub fn records(&self) -> u64 {
        self.records.load(Relaxed)
    }

    /// Records that turned an alarm on.
    #[must_use]
    pub fn alarm_onsets(&self) -> u64 {
        self.onsets.load(Relaxed)
    }
}

impl Sink for CountingSink {
    fn write(&mut self, records: &[Record]) -> Result<(), PipelineError> {
        let onsets = records
            .iter()
            .filter(|r| r.event == Some(AlarmEvent::On))
            .count();
        self.records.fetch_add(records.len() as u64, Relaxed);
        self.onsets.fetch_add(onsets as u64, Relaxed);
        Ok(())
    }
}
