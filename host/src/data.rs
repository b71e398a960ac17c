//! CSV loading for the command line: recorded sensor data as a table of `f32` channels, with
//! optional labels and timestamps.
//!
//! # Format
//! - A header row is required. The delimiter is comma, semicolon or tab: given in
//!   [`CsvOptions::delimiter`], or detected as the most frequent of the three in the header line
//!   (outside quotes; comma when none occurs).
//! - Line endings may be LF, CRLF or CR, mixed within one file. Blank lines are skipped. A UTF-8
//!   byte order mark is ignored; any other non-UTF-8 byte is an error.
//! - Channels: [`CsvOptions::columns`] in the order given, or by default every numeric column
//!   except the label column, the time column and columns named (ignoring case) `anomaly`,
//!   `changepoint`, `label`, `datetime`, `timestamp` or `time`. A column is numeric when its first
//!   non-missing cell parses as a number.
//! - Missing values: an empty cell or `NaN` (any case) becomes [`f32::NAN`], which the detector
//!   reports as a sensor fault. Any other non-numeric cell in a channel is an error naming the
//!   file, the line, the column and the value.
//! - Labels ([`CsvOptions::label_column`]): `0`/`1`, `0.0`/`1.0` or `true`/`false`.
//! - Times ([`CsvOptions::time_column`]): kept as the file's strings.
//!
//! # Examples
//! ```
//! use sensorae_host::data::{CsvOptions, read_csv_from};
//!
//! let csv = "time;a;b;anomaly\n0;1.5;2;0\n1;;3;1\n";
//! let opts = CsvOptions { label_column: Some("anomaly".into()), ..CsvOptions::default() };
//! let table = read_csv_from(csv.as_bytes(), "example.csv", &opts)?;
//! assert_eq!(table.channels, ["a", "b"]);
//! assert_eq!(table.row(0), &[1.5, 2.0]);
//! assert!(table.row(1)[0].is_nan());
//! assert_eq!(table.labels.as_deref(), Some(&[0, 1][..]));
//! # Ok::<(), sensorae_host::data::DataError>(())
//! ```

use core::{
    fmt,
    ops::{Bound, RangeBounds},
};
use std::{
    io::Read,
    path::{Path, PathBuf},
};

/// Column names that are never channels by default (compared ignoring ASCII case).
pub const NON_CHANNEL_NAMES: [&str; 6] = [
    "anomaly",
    "changepoint",
    "label",
    "datetime",
    "timestamp",
    "time",
];

/// Longest cell value quoted in an error message, in characters.
const MAX_QUOTED_CHARS: usize = 40;

/// How to read a CSV file. `Default` detects the delimiter, takes every numeric column as a
/// channel and reads no labels or times.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvOptions {
    /// Field delimiter; `None` detects comma, semicolon or tab from the header line.
    pub delimiter: Option<u8>,
    /// Channel columns in the order wanted; `None` takes the default channels (see the module
    /// docs).
    pub columns: Option<Vec<String>>,
    /// Column holding 0/1 anomaly labels, if any.
    pub label_column: Option<String>,
    /// Column holding timestamps, kept as strings, if any.
    pub time_column: Option<String>,
}

impl CsvOptions {
    /// Options for the SKAB benchmark files: labels from `anomaly`, times from `datetime`, the
    /// eight sensors as channels (`changepoint` is left out by name).
    ///
    /// # Examples
    /// ```
    /// let opts = sensorae_host::data::CsvOptions::skab();
    /// assert_eq!(opts.label_column.as_deref(), Some("anomaly"));
    /// ```
    #[must_use]
    pub fn skab() -> Self {
        Self {
            delimiter: Some(b';'),
            columns: None,
            label_column: Some("anomaly".to_owned()),
            time_column: Some("datetime".to_owned()),
        }
    }
}

/// A loaded CSV file: `rows() x channels.len()` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    /// File it was read from (the name given to [`read_csv_from`]).
    pub path: PathBuf,
    /// Channel names, in the order of the values in a row.
    pub channels: Vec<String>,
    /// Values, row-major; missing values are `NaN`.
    pub values: Vec<f32>,
    /// One 0/1 label per row, when a label column was read.
    pub labels: Option<Vec<u8>>,
    /// One timestamp string per row, when a time column was read.
    pub times: Option<Vec<String>>,
    /// 1-based line of the file each row came from, for error messages.
    pub lines: Vec<u64>,
}

impl Table {
    /// Number of data rows.
    ///
    /// # Examples
    /// ```
    /// # use sensorae_host::data::{CsvOptions, read_csv_from};
    /// let t = read_csv_from("a\n1\n2\n".as_bytes(), "x.csv", &CsvOptions::default())?;
    /// assert_eq!(t.rows(), 2);
    /// # Ok::<(), sensorae_host::data::DataError>(())
    /// ```
    #[must_use]
    pub fn rows(&self) -> usize {
        self.lines.len()
    }

    /// Number of channels (values per row).
    #[must_use]
    pub fn width(&self) -> usize {
        self.channels.len()
    }

    /// Values of row `i`, one per channel.
    ///
    /// # Panics
    /// If `i >= self.rows()`, like slice indexing; [`Table::get_row`] does not panic.
    ///
    /// # Examples
    /// ```
    /// # use sensorae_host::data::{CsvOptions, read_csv_from};
    /// let t = read_csv_from("a,b\n1,2\n".as_bytes(), "x.csv", &CsvOptions::default())?;
    /// assert_eq!(t.row(0), &[1.0, 2.0]);
    /// # Ok::<(), sensorae_host::data::DataError>(())
    /// ```
    #[must_use]
    pub fn row(&self, i: usize) -> &[f32] {
        let w = self.width();
        &self.values[i * w..(i + 1) * w]
    }

    /// Values of row `i`, or `None` when `i` is out of range.
    #[must_use]
    pub fn get_row(&self, i: usize) -> Option<&[f32]> {
        if i >= self.rows() {
            return None;
        }
        let w = self.width();
        self.values.get(i * w..(i + 1) * w)
    }

    /// Position of the channel called `name`.
    #[must_use]
    pub fn channel_index(&self, name: &str) -> Option<usize> {
        self.channels.iter().position(|c| c == name)
    }

    /// All values of channel `c`, in row order.
    ///
    /// # Panics
    /// If `c >= self.width()`.
    #[must_use]
    pub fn channel(&self, c: usize) -> Vec<f32> {
        assert!(c < self.width(), "channel {c} out of range");
        self.values
            .chunks_exact(self.width())
            .map(|row| row[c])
            .collect()
    }

    /// A table of the rows in `range` (labels, times and lines follow), e.g. SKAB's first 400
    /// rows for training and the rest for testing.
    ///
    /// # Panics
    /// If the range is out of bounds or decreasing, like slice indexing.
    ///
    /// # Examples
    /// ```
    /// # use sensorae_host::data::{CsvOptions, read_csv_from};
    /// let t = read_csv_from("a\n1\n2\n3\n".as_bytes(), "x.csv", &CsvOptions::default())?;
    /// let test = t.slice_rows(1..);
    /// assert_eq!(test.values, [2.0, 3.0]);
    /// assert_eq!(test.lines, [3, 4]);
    /// # Ok::<(), sensorae_host::data::DataError>(())
    /// ```
    #[must_use]
    pub fn slice_rows(&self, range: impl RangeBounds<usize>) -> Table {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s + 1,
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&e) => e + 1,
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.rows(),
        };
        let w = self.width();
        Table {
            path: self.path.clone(),
            channels: self.channels.clone(),
            values: self.values[start * w..end * w].to_vec(),
            labels: self.labels.as_ref().map(|l| l[start..end].to_vec()),
            times: self.times.as_ref().map(|t| t[start..end].to_vec()),
            lines: self.lines[start..end].to_vec(),
        }
    }
}

/// What went wrong reading a CSV file; see [`DataError`] for where.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataErrorKind {
    /// The file could not be opened or read.
    Io(std::io::Error),
    /// A byte sequence is not UTF-8.
    NotUtf8,
    /// The file has no header row.
    Empty,
    /// The file has a header but no data rows.
    NoRows,
    /// A row has a different number of fields than the header.
    Ragged {
        /// Fields in the header.
        expected: usize,
        /// Fields in this row.
        found: usize,
    },
    /// A requested column is not in the header.
    UnknownColumn {
        /// Name asked for.
        name: String,
        /// Names in the header.
        available: Vec<String>,
    },
    /// A column name used as channel, label or time occurs more than once in the header.
    DuplicateColumn {
        /// The repeated name.
        name: String,
    },
    /// No channel columns: the selection is empty or no column is numeric.
    NoChannels {
        /// Names in the header.
        available: Vec<String>,
    },
    /// A channel cell is neither a number nor a missing value.
    NotNumber {
        /// Column name.
        column: String,
        /// The cell (truncated to a few dozen characters).
        value: String,
    },
    /// A label cell is not 0/1 or true/false.
    BadLabel {
        /// Column name.
        column: String,
        /// The cell (truncated).
        value: String,
    },
    /// The delimiter given is not a single ASCII byte usable by CSV.
    BadDelimiter {
        /// The byte given.
        delimiter: u8,
    },
    /// The CSV parser failed otherwise.
    Csv(String),
}

/// An error reading a CSV file, with the file and, where it applies, the 1-based line.
///
/// `Display` is one line: `data.csv:12: column `Pressure`: expected a number, found `abc``.
#[derive(Debug)]
pub struct DataError {
    path: PathBuf,
    line: Option<u64>,
    kind: DataErrorKind,
}

impl DataError {
    fn new(path: &Path, line: Option<u64>, kind: DataErrorKind) -> Self {
        Self {
            path: path.to_path_buf(),
            line,
            kind,
        }
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &DataErrorKind {
        &self.kind
    }

    /// The file (or the name given to [`read_csv_from`]).
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The 1-based line the error is on, when it is about one line.
    #[must_use]
    pub fn line(&self) -> Option<u64> {
        self.line
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        f.write_str(": ")?;
        match &self.kind {
            DataErrorKind::Io(e) => write!(f, "cannot read: {}", io_message(e)),
            DataErrorKind::NotUtf8 => f.write_str("not UTF-8 text: expected a UTF-8 CSV file"),
            DataErrorKind::Empty => f.write_str("empty file: expected a header row"),
            DataErrorKind::NoRows => f.write_str("no data rows after the header"),
            DataErrorKind::Ragged { expected, found } => write!(
                f,
                "expected {expected} fields as in the header, found {found}"
            ),
            DataErrorKind::UnknownColumn { name, available } => write!(
                f,
                "no column `{}`; available columns: {}",
                quote(name),
                list(available)
            ),
            DataErrorKind::DuplicateColumn { name } => write!(
                f,
                "column `{}` appears more than once in the header",
                quote(name)
            ),
            DataErrorKind::NoChannels { available } => write!(
                f,
                "no numeric channel columns; available columns: {}",
                list(available)
            ),
            DataErrorKind::NotNumber { column, value } => write!(
                f,
                "column `{}`: expected a number (or an empty cell or NaN for a missing value), \
                 found `{}`",
                quote(column),
                quote(value)
            ),
            DataErrorKind::BadLabel { column, value } => write!(
                f,
                "column `{}`: expected a label 0 or 1 (or true/false), found `{}`",
                quote(column),
                quote(value)
            ),
            DataErrorKind::BadDelimiter { delimiter } => write!(
                f,
                "delimiter {:?} is not usable: expected an ASCII character other than a quote or \
                 line break",
                char::from(*delimiter)
            ),
            DataErrorKind::Csv(msg) => write!(f, "malformed CSV: {msg}"),
        }
    }
}

impl core::error::Error for DataError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.kind {
            DataErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// `io::Error`'s message without the trailing ` (os error N)`, which only repeats the kind.
fn io_message(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.rfind(" (os error ") {
        Some(i) if s.ends_with(')') => s[..i].to_owned(),
        _ => s,
    }
}

/// A value shortened and made printable on one line, for quoting in a message.
fn quote(value: &str) -> String {
    let mut out = String::new();
    for (i, c) in value.chars().enumerate() {
        if i == MAX_QUOTED_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn list(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{}`", quote(n))).collect();
    quoted.join(", ")
}

/// Reads a CSV file.
///
/// # Errors
/// A [`DataError`] naming the file and line: the file cannot be read, is not UTF-8, is empty or
/// has no data rows, a row is ragged, a requested column is missing, or a channel or label cell
/// is invalid.
///
/// # Examples
/// ```
/// use sensorae_host::data::{CsvOptions, read_csv};
///
/// let err = read_csv("no/such/file.csv".as_ref(), &CsvOptions::default()).unwrap_err();
/// assert!(err.to_string().starts_with("no/such/file.csv: cannot read: "));
/// ```
pub fn read_csv(path: &Path, opts: &CsvOptions) -> Result<Table, DataError> {
    let bytes =
        std::fs::read(path).map_err(|e| DataError::new(path, None, DataErrorKind::Io(e)))?;
    parse(bytes, path, opts)
}

/// Reads CSV from any reader (stdin, a buffer in a test); `name` stands for the file in
/// messages and in [`Table::path`].
///
/// # Errors
/// As [`read_csv`].
pub fn read_csv_from<R: Read>(
    mut reader: R,
    name: &str,
    opts: &CsvOptions,
) -> Result<Table, DataError> {
    let path = Path::new(name);
    let mut bytes = Vec::new();
    reader
        .read_to_end(&mut bytes)
        .map_err(|e| DataError::new(path, None, DataErrorKind::Io(e)))?;
    parse(bytes, path, opts)
}

/// Line breaks in `bytes`: LF, CRLF or a lone CR.
fn line_breaks(bytes: &[u8]) -> u64 {
    let lf = bytes.iter().filter(|&&b| b == b'\n').count();
    let lone_cr = bytes
        .iter()
        .enumerate()
        .filter(|&(i, &b)| b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
        .count();
    (lf + lone_cr) as u64
}

/// 1-based line numbers from byte offsets, counted forward once. The parser's own line count
/// is off after blank lines: a record's position is where the blank lines before it begin.
#[derive(Default)]
struct LineCounter {
    byte: usize,
    newlines: u64,
}

impl LineCounter {
    /// Line of the record starting at `byte` or after the blank lines that start there.
    fn line_at(&mut self, text: &[u8], byte: u64) -> u64 {
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(text.len());
        while text.get(start) == Some(&b'\n') {
            start += 1;
        }
        let from = self.byte.min(start);
        self.newlines += text[from..start].iter().filter(|&&b| b == b'\n').count() as u64;
        self.byte = start;
        self.newlines + 1
    }
}

/// Where each needed column sits in the header.
struct Layout {
    channels: Vec<usize>,
    label: Option<usize>,
    time: Option<usize>,
}

fn parse(bytes: Vec<u8>, path: &Path, opts: &CsvOptions) -> Result<Table, DataError> {
    let err = |line: Option<u64>, kind| DataError::new(path, line, kind);

    let mut text = String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let line = 1 + line_breaks(&e.as_bytes()[..bad]);
        err(Some(line), DataErrorKind::NotUtf8)
    })?;
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        text = rest.to_owned();
    }
    // The parser counts lines by '\n' only; make CR and CRLF endings plain LF so line numbers
    // stay right in files with mixed endings.
    if text.contains('\r') {
        text = text.replace("\r\n", "\n").replace('\r', "\n");
    }

    let delimiter = match opts.delimiter {
        Some(d) if d.is_ascii() && !matches!(d, b'"' | b'\n' | b'\r') => d,
        Some(d) => return Err(err(None, DataErrorKind::BadDelimiter { delimiter: d })),
        None => detect_delimiter(&text),
    };

    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let csv_err = |e: csv::Error| {
        let line = e.position().map(csv::Position::line);
        err(line, DataErrorKind::Csv(e.to_string()))
    };

    let header_record = reader.headers().map_err(csv_err)?.clone();
    let mut lines_seen = LineCounter::default();
    let header_byte = header_record.position().map_or(0, csv::Position::byte);
    let header_line = lines_seen.line_at(text.as_bytes(), header_byte);
    let header: Vec<String> = header_record.iter().map(|h| h.trim().to_owned()).collect();
    if header.is_empty() || (header.len() == 1 && header[0].is_empty()) {
        return Err(err(None, DataErrorKind::Empty));
    }

    let mut records = Vec::new();
    for record in reader.records() {
        let record = record.map_err(csv_err)?;
        let byte = record.position().map_or(0, csv::Position::byte);
        let line = lines_seen.line_at(text.as_bytes(), byte);
        if record.len() != header.len() {
            return Err(err(
                Some(line),
                DataErrorKind::Ragged {
                    expected: header.len(),
                    found: record.len(),
                },
            ));
        }
        records.push((line, record));
    }
    if records.is_empty() {
        return Err(err(Some(header_line), DataErrorKind::NoRows));
    }

    let layout = layout(&header, &records, opts).map_err(|k| err(Some(header_line), k))?;

    let rows = records.len();
    let mut values = Vec::with_capacity(rows * layout.channels.len());
    let mut labels = layout.label.map(|_| Vec::with_capacity(rows));
    let mut times = layout.time.map(|_| Vec::with_capacity(rows));
    let mut lines = Vec::with_capacity(rows);
    for (line, record) in &records {
        let cell = |c: usize| record.get(c).unwrap_or("");
        for &c in &layout.channels {
            let v = parse_value(cell(c)).ok_or_else(|| {
                err(
                    Some(*line),
                    DataErrorKind::NotNumber {
                        column: header[c].clone(),
                        value: cell(c).to_owned(),
                    },
                )
            })?;
            values.push(v);
        }
        if let (Some(c), Some(labels)) = (layout.label, labels.as_mut()) {
            let l = parse_label(cell(c)).ok_or_else(|| {
                err(
                    Some(*line),
                    DataErrorKind::BadLabel {
                        column: header[c].clone(),
                        value: cell(c).to_owned(),
                    },
                )
            })?;
            labels.push(l);
        }
        if let (Some(c), Some(times)) = (layout.time, times.as_mut()) {
            times.push(cell(c).to_owned());
        }
        lines.push(*line);
    }

    Ok(Table {
        path: path.to_path_buf(),
        channels: layout.channels.iter().map(|&c| header[c].clone()).collect(),
        values,
        labels,
        times,
        lines,
    })
}

fn layout(
    header: &[String],
    records: &[(u64, csv::StringRecord)],
    opts: &CsvOptions,
) -> Result<Layout, DataErrorKind> {
    let find = |name: &str| -> Result<usize, DataErrorKind> {
        let mut hits = header.iter().enumerate().filter(|(_, h)| *h == name);
        match (hits.next(), hits.next()) {
            (Some((i, _)), None) => Ok(i),
            (Some(_), Some(_)) => Err(DataErrorKind::DuplicateColumn {
                name: name.to_owned(),
            }),
            (None, _) => Err(DataErrorKind::UnknownColumn {
                name: name.to_owned(),
                available: header.to_vec(),
            }),
        }
    };
    let label = opts.label_column.as_deref().map(find).transpose()?;
    let time = opts.time_column.as_deref().map(find).transpose()?;

    let channels = match &opts.columns {
        Some(names) => names
            .iter()
            .map(|n| find(n))
            .collect::<Result<Vec<_>, _>>()?,
        None => {
            let mut chosen = Vec::new();
            for (i, name) in header.iter().enumerate() {
                let excluded = Some(i) == label
                    || Some(i) == time
                    || NON_CHANNEL_NAMES
                        .iter()
                        .any(|n| n.eq_ignore_ascii_case(name));
                if !excluded && is_numeric_column(records, i) {
                    // Checks the name is not repeated, so channels are unambiguous.
                    find(name)?;
                    chosen.push(i);
                }
            }
            chosen
        }
    };
    if channels.is_empty() {
        return Err(DataErrorKind::NoChannels {
            available: header.to_vec(),
        });
    }
    Ok(Layout {
        channels,
        label,
        time,
    })
}

/// Numeric when the first non-missing cell parses as a number.
fn is_numeric_column(records: &[(u64, csv::StringRecord)], c: usize) -> bool {
    records
        .iter()
        .filter_map(|(_, r)| r.get(c))
        .map(str::trim)
        .find(|cell| !is_missing(cell))
        .is_some_and(|cell| cell.parse::<f32>().is_ok())
}

fn is_missing(cell: &str) -> bool {
    cell.is_empty() || cell.eq_ignore_ascii_case("nan")
}

/// A channel value: a number, or `NaN` for a missing one; `None` when the cell is neither.
fn parse_value(cell: &str) -> Option<f32> {
    let cell = cell.trim();
    if is_missing(cell) {
        Some(f32::NAN)
    } else {
        cell.parse().ok()
    }
}

fn parse_label(cell: &str) -> Option<u8> {
    let cell = cell.trim();
    if cell.eq_ignore_ascii_case("true") {
        return Some(1);
    }
    if cell.eq_ignore_ascii_case("false") {
        return Some(0);
    }
    // Accepts `0`, `1.0`, `1e0`; a parse of "nan"/"inf" falls through to `None`.
    match cell.parse::<f64>() {
        Ok(0.0) => Some(0),
        Ok(1.0) => Some(1),
        _ => None,
    }
}

/// The most frequent of comma, semicolon and tab in the header line, outside quotes; comma when
/// none occurs (a one-column file).
fn detect_delimiter(text: &str) -> u8 {
    let header = text
        .split('\n')
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let mut counts = [(b',', 0usize), (b';', 0), (b'\t', 0)];
    let mut quoted = false;
    for b in header.bytes() {
        if b == b'"' {
            quoted = !quoted;
        } else if !quoted {
            for (d, n) in &mut counts {
                if *d == b {
                    *n += 1;
                }
            }
        }
    }
    // First of the maxima, so ties prefer comma, then semicolon.
    let mut best = counts[0];
    for c in &counts[1..] {
        if c.1 > best.1 {
            best = *c;
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKAB: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/data/skab");

    fn skab(file: &str) -> PathBuf {
        Path::new(SKAB).join(file)
    }

    fn read(text: &str, opts: &CsvOptions) -> Result<Table, DataError> {
        read_csv_from(text.as_bytes(), "t.csv", opts)
    }

    fn read_err(text: &str, opts: &CsvOptions) -> String {
        match read(text, opts) {
            Ok(t) => panic!("expected an error, got {t:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn with_columns(cols: &[&str]) -> CsvOptions {
        CsvOptions {
            columns: Some(cols.iter().map(|c| (*c).to_owned()).collect()),
            ..CsvOptions::default()
        }
    }

    const SENSORS: [&str; 8] = [
        "Accelerometer1RMS",
        "Accelerometer2RMS",
        "Current",
        "Pressure",
        "Temperature",
        "Thermocouple",
        "Voltage",
        "Volume Flow RateRMS",
    ];

    #[test]
    fn skab_valve_file_with_defaults() {
        // Defaults alone: detects ';', finds the 8 sensors, leaves out datetime (not numeric),
        // anomaly and changepoint (by name).
        let t = read_csv(&skab("valve1/0.csv"), &CsvOptions::default()).unwrap();
        assert_eq!(t.channels, SENSORS);
        assert_eq!(t.labels, None);
        assert_eq!(t.rows(), t.lines.len());
        assert_eq!(t.values.len(), t.rows() * 8);
        assert_eq!(t.lines[0], 2);
        // First data row of valve1/0.csv.
        let expected = [
            0.0265878, 0.0401113, 1.3302, 0.054711, 79.3366, 26.0199, 233.062, 32.0,
        ];
        assert_eq!(t.row(0), expected);
        assert!(t.values.iter().all(|v| v.is_finite()));
    }

    #[test]
    fn skab_valve_file_with_labels_and_times() {
        let t = read_csv(&skab("valve1/0.csv"), &CsvOptions::skab()).unwrap();
        assert_eq!(t.channels, SENSORS);
        let labels = t.labels.as_ref().unwrap();
        assert_eq!(labels.len(), t.rows());
        assert!(labels.contains(&0) && labels.contains(&1));
        let times = t.times.as_ref().unwrap();
        assert_eq!(times[0], "2020-03-09 10:14:33");
        // Lines are consecutive: no blank lines in SKAB, and CRLF counts as one line.
        assert_eq!(*t.lines.last().unwrap(), t.rows() as u64 + 1);
    }

    #[test]
    fn skab_lf_file_and_anomaly_free_file() {
        // other/1.csv uses LF, anomaly-free.csv CRLF and has no label columns.
        let lf = read_csv(&skab("other/1.csv"), &CsvOptions::skab()).unwrap();
        assert_eq!(lf.channels, SENSORS);
        let free = read_csv(
            &skab("anomaly-free/anomaly-free.csv"),
            &CsvOptions::default(),
        )
        .unwrap();
        assert_eq!(free.channels, SENSORS);
        assert_eq!(free.rows(), 9405);
    }

    #[test]
    fn mixed_line_endings_keep_line_numbers() {
        let text = "a,b\r\n1,2\n3,4\r\n\r\n5,6\r7,8\n";
        let t = read(text, &CsvOptions::default()).unwrap();
        assert_eq!(t.values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]);
        assert_eq!(t.lines, [2, 3, 5, 6]);
        let bad = "a,b\r\n1,2\n3,4\r\n\r\n5,x\n";
        assert_eq!(
            read_err(bad, &CsvOptions::default()),
            "t.csv:5: column `b`: expected a number (or an empty cell or NaN for a missing \
             value), found `x`"
        );
    }

    #[test]
    fn delimiters_detected_or_given() {
        for (text, d) in [
            ("a,b\n1,2\n", b','),
            ("a;b\n1;2\n", b';'),
            ("a\tb\n1\t2\n", b'\t'),
            ("\"x,y\";b\n1;2\n", b';'),
        ] {
            assert_eq!(detect_delimiter(text), d, "{text:?}");
            let t = read(text, &CsvOptions::default()).unwrap();
            assert_eq!(t.values, [1.0, 2.0], "{text:?}");
        }
        // Given: semicolons inside a tab-separated file stay in the name.
        let opts = CsvOptions {
            delimiter: Some(b'\t'),
            ..CsvOptions::default()
        };
        let t = read("a;x\tb\n1\t2\n", &opts).unwrap();
        assert_eq!(t.channels, ["a;x", "b"]);
        let opts = CsvOptions {
            delimiter: Some(b'"'),
            ..CsvOptions::default()
        };
        assert!(read_err("a\n1\n", &opts).starts_with("t.csv: delimiter '\"' is not usable"));
    }

    #[test]
    fn column_selection_keeps_the_given_order() {
        let text = "a,b,c\n1,2,3\n4,5,6\n";
        let t = read(text, &with_columns(&["c", "a"])).unwrap();
        assert_eq!(t.channels, ["c", "a"]);
        assert_eq!(t.values, [3.0, 1.0, 6.0, 4.0]);
        assert_eq!(
            read_err(text, &with_columns(&["a", "Pressure"])),
            "t.csv:1: no column `Pressure`; available columns: `a`, `b`, `c`"
        );
        assert_eq!(
            read_err(text, &with_columns(&[])),
            "t.csv:1: no numeric channel columns; available columns: `a`, `b`, `c`"
        );
    }

    #[test]
    fn default_channels_skip_named_and_non_numeric_columns() {
        let text = "Time,x,Label,name,empty,y,ChangePoint,z\n\
                    t0,1,0,pump,,NaN,0,\n\
                    t1,2,1,pump,,3,0,4\n";
        let t = read(text, &CsvOptions::default()).unwrap();
        // `y` and `z` are numeric by their first non-missing cell; `empty` has none.
        assert_eq!(t.channels, ["x", "y", "z"]);
        assert!(t.row(0)[1].is_nan() && t.row(0)[2].is_nan());
        assert_eq!(t.row(1), [2.0, 3.0, 4.0]);
        // A label or time column with any other name is left out once named as such.
        let opts = CsvOptions {
            label_column: Some("x".into()),
            time_column: Some("z".into()),
            ..CsvOptions::default()
        };
        let t = read(text.replace("t1,2", "t1,0").as_str(), &opts).unwrap();
        assert_eq!(t.channels, ["y"]);
        assert_eq!(t.labels, Some(vec![1, 0]));
        assert_eq!(t.times, Some(vec![String::new(), "4".to_owned()]));
    }

    #[test]
    fn missing_values_are_nan() {
        let t = read("a,b\n,nan\nNaN, 2 \n-1.5e2,inf\n", &CsvOptions::default()).unwrap();
        assert_eq!(t.channels, ["a", "b"]);
        assert!(t.row(0).iter().all(|v| v.is_nan()));
        assert!(t.row(1)[0].is_nan());
        assert_eq!(t.row(1)[1], 2.0);
        // Infinity parses; the detector reports it as a fault like NaN.
        assert_eq!(t.row(2), [-150.0, f32::INFINITY]);
    }

    #[test]
    fn bad_cells_name_file_line_column_and_value() {
        let text = "a;Pressure\n1;2\n3;abc\n";
        assert_eq!(
            read_err(text, &CsvOptions::default()),
            "t.csv:3: column `Pressure`: expected a number (or an empty cell or NaN for a missing \
             value), found `abc`"
        );
        let long = format!("a\n1\n{}\n", "x".repeat(100));
        let msg = read_err(&long, &CsvOptions::default());
        assert!(
            msg.ends_with(&format!("found `{}…`", "x".repeat(40))),
            "{msg}"
        );
        let newline_in_quotes = "a\n1\n\"x\ny\"\n";
        let msg = read_err(newline_in_quotes, &CsvOptions::default());
        assert_eq!(msg.lines().count(), 1, "{msg}");
        assert!(msg.starts_with("t.csv:3: column `a`"), "{msg}");
    }

    #[test]
    fn labels_accept_forms_of_zero_and_one() {
        let opts = CsvOptions {
            label_column: Some("y".into()),
            ..CsvOptions::default()
        };
        let t = read("x,y\n1,0\n2,1\n3,0.0\n4,1.0\n5,true\n6,FALSE\n", &opts).unwrap();
        assert_eq!(t.labels, Some(vec![0, 1, 0, 1, 1, 0]));
        assert_eq!(t.channels, ["x"]);
        assert_eq!(
            read_err("x,y\n1,0\n2,2\n", &opts),
            "t.csv:3: column `y`: expected a label 0 or 1 (or true/false), found `2`"
        );
        assert_eq!(
            read_err("x,y\n1,\n", &opts),
            "t.csv:2: column `y`: expected a label 0 or 1 (or true/false), found ``"
        );
        let opts = CsvOptions {
            label_column: Some("anomaly".into()),
            ..CsvOptions::default()
        };
        assert_eq!(
            read_err("x,y\n1,0\n", &opts),
            "t.csv:1: no column `anomaly`; available columns: `x`, `y`"
        );
    }

    #[test]
    fn ragged_rows_name_the_line() {
        assert_eq!(
            read_err("a,b\n1,2\n3\n", &CsvOptions::default()),
            "t.csv:3: expected 2 fields as in the header, found 1"
        );
        assert_eq!(
            read_err("a,b\n1,2,3\n", &CsvOptions::default()),
            "t.csv:2: expected 2 fields as in the header, found 3"
        );
    }

    #[test]
    fn empty_header_only_and_non_utf8() {
        assert_eq!(
            read_err("", &CsvOptions::default()),
            "t.csv: empty file: expected a header row"
        );
        assert_eq!(
            read_err("\n\n", &CsvOptions::default()),
            "t.csv: empty file: expected a header row"
        );
        assert_eq!(
            read_err("a,b\r\n", &CsvOptions::default()),
            "t.csv:1: no data rows after the header"
        );
        let bytes = b"a,b\r\n1,2\r3,\xff\n";
        let e = read_csv_from(&bytes[..], "t.csv", &CsvOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:3: not UTF-8 text: expected a UTF-8 CSV file"
        );
        assert_eq!(e.line(), Some(3));
        assert!(matches!(e.kind(), DataErrorKind::NotUtf8));
        // A byte order mark is not part of the first name.
        let t = read("\u{feff}a\n1\n", &CsvOptions::default()).unwrap();
        assert_eq!(t.channels, ["a"]);
        // Blank lines before the header count.
        assert_eq!(
            read_err("\n\na,b\n", &CsvOptions::default()),
            "t.csv:3: no data rows after the header"
        );
    }

    #[test]
    fn duplicate_and_missing_channels() {
        assert_eq!(
            read_err("a,a\n1,2\n", &CsvOptions::default()),
            "t.csv:1: column `a` appears more than once in the header"
        );
        assert_eq!(
            read_err("time,name\nx,y\n", &CsvOptions::default()),
            "t.csv:1: no numeric channel columns; available columns: `time`, `name`"
        );
    }

    #[test]
    fn missing_file_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("absent.csv");
        let e = read_csv(&path, &CsvOptions::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: cannot read: No such file or directory", path.display())
        );
    }

    #[test]
    fn slicing_rows_keeps_labels_times_and_lines() {
        let opts = CsvOptions {
            label_column: Some("l".into()),
            time_column: Some("t".into()),
            ..CsvOptions::default()
        };
        let t = read("t,x,l\na,1,0\nb,2,1\nc,3,0\n", &opts).unwrap();
        let s = t.slice_rows(1..=2);
        assert_eq!(s.values, [2.0, 3.0]);
        assert_eq!(s.labels, Some(vec![1, 0]));
        assert_eq!(s.times, Some(vec!["b".to_owned(), "c".to_owned()]));
        assert_eq!(s.lines, [3, 4]);
        assert_eq!(t.get_row(3), None);
        assert_eq!(t.get_row(2), Some(&[3.0][..]));
        assert_eq!(t.channel(0), [1.0, 2.0, 3.0]);
        assert_eq!(t.channel_index("x"), Some(0));
    }
}
