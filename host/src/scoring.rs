//! Scoring a table of samples with a detector, row by row, exactly as a live stream would be.

use std::io::{self, Write};

use sensorae::{DynDetector, FaultKind};

use crate::{
    data::Table,
    error::{Error, Result},
    files::LoadedModel,
};

/// The detector's verdict for one row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowVerdict {
    /// The latest window score; `None` while warming up or on a sensor fault.
    pub score: Option<f32>,
    /// The alarm is on.
    pub alarm: bool,
    /// The row's sensor fault, if any.
    pub fault: Option<FaultKind>,
    /// Channel with the largest error in the latest window.
    pub top_channel: Option<u16>,
}

/// Pushes every row of `table` through `detector` in order. Causal: a row's verdict depends
/// only on the rows up to it.
#[must_use]
pub fn score_rows(detector: &mut DynDetector, table: &Table) -> Vec<RowVerdict> {
    (0..table.rows())
        .map(|i| {
            let v = detector.push(table.row(i));
            let score = v.score();
            RowVerdict {
                score: score.map(|s| s.value),
                alarm: v.is_alarm(),
                fault: v.fault().map(|f| f.kind),
                top_channel: score.and_then(|s| s.top[0]).map(|c| c.channel),
            }
        })
        .collect()
}

/// Reads `table` with the model's channels: checks that every model channel is there.
///
/// # Errors
/// [`Error::Mismatch`] naming the data file and the missing channels.
pub fn check_channels(model: &LoadedModel, table: &Table) -> Result<()> {
    let names = model.channel_names();
    if table.channels != names {
        return Err(Error::Mismatch {
            path: table.path.clone(),
            message: format!(
                "model {} expects channels [{}], the data has [{}]",
                model.path.display(),
                names.join(", "),
                table.channels.join(", ")
            ),
        });
    }
    Ok(())
}

/// Writes the score CSV: `row,score,threshold,alarm,fault,top_channel`, one line per row. The
/// score is printed as the shortest decimal that reads back to the same `f32`.
///
/// # Errors
/// I/O errors of `out`.
pub fn write_scores(
    out: &mut impl Write,
    verdicts: &[RowVerdict],
    threshold: f32,
    channels: &[String],
) -> io::Result<()> {
    // The csv crate quotes a field only when it must: channel names come from CSV headers and
    // may hold commas or quotes (the firmware quotes them the same way).
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["row", "score", "threshold", "alarm", "fault", "top_channel"])?;
    let threshold = threshold.to_string();
    for (i, v) in verdicts.iter().enumerate() {
        let score = v.score.map(|s| s.to_string()).unwrap_or_default();
        let fault = v.fault.map(FaultKind::name).unwrap_or_default();
        let top = v
            .top_channel
            .and_then(|c| channels.get(usize::from(c)))
            .map(String::as_str)
            .unwrap_or_default();
        let alarm = if v.alarm { "1" } else { "0" };
        w.write_record([&i.to_string(), &score, &threshold, alarm, fault, top])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_with_commas_and_quotes_are_quoted() {
        let verdicts = [RowVerdict {
            score: Some(0.5),
            alarm: true,
            fault: None,
            top_channel: Some(1),
        }];
        let channels = ["a".to_owned(), "flow, \"m3/h\"".to_owned()];
        let mut out = Vec::new();
        write_scores(&mut out, &verdicts, 0.25, &channels).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "row,score,threshold,alarm,fault,top_channel\n0,0.5,0.25,1,,\"flow, \"\"m3/h\"\"\"\n"
        );
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let row = r.records().next().unwrap().unwrap();
        assert_eq!(&row[5], "flow, \"m3/h\"");
    }
}
