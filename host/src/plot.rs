//! PNG plots, for where a person would rather look than read: a stream with its anomaly score,
//! threshold, alarms and labelled anomalies ([`plot_scores`]), and training loss curves
//! ([`plot_losses`]).
//!
//! Text is drawn with DejaVu Sans embedded in the binary, so plotting needs no system font
//! libraries. Every plot is rendered to a temporary file in the target's directory and renamed
//! into place, so a failure never leaves a partial PNG behind.
//!
//! # Examples
//! ```no_run
//! use sensorae_host::plot::plot_losses;
//!
//! let losses = [(1, 0.9, Some(1.0)), (2, 0.4, Some(0.5)), (3, 0.2, Some(0.3))];
//! plot_losses("losses.png", &losses, "plain autoencoder")?;
//! # Ok::<(), sensorae_host::plot::PlotError>(())
//! ```

use core::{
    fmt,
    ops::Range,
    sync::atomic::{AtomicU64, Ordering},
};
use std::{
    fs, io,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use plotters::{
    chart::SeriesAnno,
    coord::{
        Shift,
        ranged1d::{DefaultFormatting, KeyPointHint, Ranged, ValueFormatter},
        types::RangedCoordf64,
    },
    prelude::*,
    style::{
        FontStyle, register_font,
        text_anchor::{HPos, Pos, VPos},
    },
};

/// Width of the score plot in pixels.
pub const SCORE_PLOT_WIDTH: u32 = 1600;
/// Size of the loss plot in pixels.
pub const LOSS_PLOT_SIZE: (u32, u32) = (1200, 700);

const FONT: &str = "sans-serif";
const FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");

const TITLE_HEIGHT: u32 = 56;
const SCORE_HEIGHT: u32 = 380;
/// Left margin holding channel names and the score axis, the same for every panel so their
/// x axes line up.
const LEFT_AREA: u32 = 230;

/// Tableau 10: distinguishable line colours.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(214, 39, 40),
];
const ALARM_SHADE: RGBAColor = RGBAColor(220, 30, 30, 0.3);
const LABEL_SHADE: RGBAColor = RGBAColor(90, 90, 90, 0.2);
const SCORE_COLOUR: RGBColor = RGBColor(20, 40, 120);
const THRESHOLD_COLOUR: RGBColor = RGBColor(230, 120, 0);

/// What went wrong while plotting, without the file: see [`PlotError`].
#[derive(Debug)]
#[non_exhaustive]
pub enum PlotErrorKind {
    /// There is nothing to plot.
    Empty,
    /// An input slice has the wrong length.
    Shape {
        /// Which input.
        what: &'static str,
        /// The length it should have.
        expected: usize,
        /// The length it has.
        actual: usize,
    },
    /// The embedded font could not be loaded.
    Font,
    /// Drawing or encoding the image failed.
    Draw(String),
    /// Moving the rendered image into place failed.
    Io(io::Error),
}

impl fmt::Display for PlotErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("nothing to plot"),
            Self::Shape {
                what,
                expected,
                actual,
            } => write!(f, "{what} has length {actual}, expected {expected}"),
            Self::Font => f.write_str("the embedded font could not be loaded"),
            Self::Draw(msg) => write!(f, "drawing failed: {msg}"),
            Self::Io(e) => write!(f, "{e}"),
        }
    }
}

/// An error writing a plot: the file it was for and what went wrong.
#[derive(Debug)]
pub struct PlotError {
    path: PathBuf,
    kind: PlotErrorKind,
}

impl PlotError {
    /// The plot file that could not be written.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What went wrong.
    #[must_use]
    pub fn kind(&self) -> &PlotErrorKind {
        &self.kind
    }
}

impl fmt::Display for PlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot write plot {}: {}",
            self.path.display(),
            self.kind
        )
    }
}

impl core::error::Error for PlotError {
    fn source(&self) -> Option<&(dyn core::error::Error + 'static)> {
        match &self.kind {
            PlotErrorKind::Io(e) => Some(e),
            _ => None,
        }
    }
}

/// A stream and its scores, for [`plot_scores`].
#[derive(Debug, Clone, Copy)]
pub struct ScorePlot<'a> {
    /// Channel names, one panel each.
    pub channels: &'a [String],
    /// Samples, rows x channels, row-major; NaN and infinities are drawn as gaps.
    pub values: &'a [f32],
    /// Per row: the anomaly score, or `None` where there is none (window filling, fault).
    pub scores: &'a [Option<f32>],
    /// The alarm threshold, drawn as a horizontal line.
    pub threshold: f32,
    /// Per row: whether the alarm was on (shaded red).
    pub alarms: &'a [bool],
    /// Per row: 1 inside a labelled anomaly (shaded grey), if labels are known.
    pub labels: Option<&'a [u8]>,
    /// The plot's title.
    pub title: &'a str,
}

/// Plots a stream as one small panel per channel (each normalised to its own range) above a
/// score panel with the threshold, shading alarm spans red and labelled anomalies grey. The
/// score axis is logarithmic when positive scores span more than two decades. The image is
/// [`SCORE_PLOT_WIDTH`] pixels wide.
///
/// # Errors
/// [`PlotErrorKind::Empty`] without rows or channels, [`PlotErrorKind::Shape`] when the
/// slices disagree on the number of rows, and drawing or I/O errors; each names the file.
///
/// # Examples
/// ```no_run
/// use sensorae_host::plot::{ScorePlot, plot_scores};
///
/// let channels = vec!["current".to_owned(), "flow".to_owned()];
/// let values = [1.0, 2.0, 1.5, f32::NAN, 1.2, 2.2];
/// let plot = ScorePlot {
///     channels: &channels,
///     values: &values,
///     scores: &[None, Some(0.2), Some(0.9)],
///     threshold: 0.5,
///     alarms: &[false, false, true],
///     labels: None,
///     title: "pump 7",
/// };
/// plot_scores("scores.png", &plot)?;
/// # Ok::<(), sensorae_host::plot::PlotError>(())
/// ```
pub fn plot_scores(path: impl AsRef<Path>, plot: &ScorePlot<'_>) -> Result<(), PlotError> {
    let path = path.as_ref();
    let fail = |kind| PlotError {
        path: path.to_owned(),
        kind,
    };
    let c = plot.channels.len();
    if c == 0 || plot.values.is_empty() {
        return Err(fail(PlotErrorKind::Empty));
    }
    let rows = plot.values.len() / c;
    if rows * c != plot.values.len() {
        return Err(fail(PlotErrorKind::Shape {
            what: "values",
            expected: (rows + 1) * c,
            actual: plot.values.len(),
        }));
    }
    let lengths = [
        ("scores", plot.scores.len()),
        ("alarms", plot.alarms.len()),
        ("labels", plot.labels.map_or(rows, <[u8]>::len)),
    ];
    for (what, actual) in lengths {
        if actual != rows {
            return Err(fail(PlotErrorKind::Shape {
                what,
                expected: rows,
                actual,
            }));
        }
    }
    // Many channels get flatter panels, so the image stays a sensible height.
    let panel = (720 / c as u32).clamp(48, 110);
    let size = (
        SCORE_PLOT_WIDTH,
        TITLE_HEIGHT + panel * c as u32 + SCORE_HEIGHT,
    );
    render_atomically(path, size, |root| draw_scores(root, plot, rows, panel)).map_err(fail)
}

/// Plots training and validation loss per epoch, `(epoch, train loss, validation loss)`, on a
/// logarithmic axis when every loss is positive. The image is [`LOSS_PLOT_SIZE`].
///
/// # Errors
/// [`PlotErrorKind::Empty`] without a finite loss, and drawing or I/O errors; each names the
/// file.
///
/// # Examples
/// ```no_run
/// use sensorae_host::plot::plot_losses;
///
/// plot_losses("losses.png", &[(1, 0.5, None), (2, 0.25, None)], "training")?;
/// # Ok::<(), sensorae_host::plot::PlotError>(())
/// ```
pub fn plot_losses(
    path: impl AsRef<Path>,
    losses: &[(usize, f32, Option<f32>)],
    title: &str,
) -> Result<(), PlotError> {
    let path = path.as_ref();
    let fail = |kind| PlotError {
        path: path.to_owned(),
        kind,
    };
    let finite: Vec<f64> = losses
        .iter()
        .flat_map(|&(_, t, v)| [Some(t), v])
        .flatten()
        .filter(|x| x.is_finite())
        .map(f64::from)
        .collect();
    let (Some(lo), Some(hi)) = (
        finite.iter().copied().reduce(f64::min),
        finite.iter().copied().reduce(f64::max),
    ) else {
        return Err(fail(PlotErrorKind::Empty));
    };
    let first = losses.iter().map(|l| l.0).min().unwrap_or(0) as f64;
    let last = losses.iter().map(|l| l.0).max().unwrap_or(0) as f64;
    let x = if last > first {
        first..last
    } else {
        first - 1.0..last + 1.0
    };
    render_atomically(path, LOSS_PLOT_SIZE, |root| {
        let root = titled(root, title)?;
        if lo > 0.0 {
            let y = LogAxis {
                lo: lo / 1.3,
                hi: hi * 1.3,
            };
            draw_losses(&root, x, y, losses)
        } else {
            let pad = ((hi - lo) * 0.05).max(1e-6);
            let y: RangedCoordf64 = (lo - pad..hi + pad).into();
            draw_losses(&root, x, y, losses)
        }
    })
    .map_err(fail)
}

fn draw_losses<DB, Y>(
    root: &DrawingArea<DB, Shift>,
    x: Range<f64>,
    y: Y,
    losses: &[(usize, f32, Option<f32>)],
) -> Result<(), PlotErrorKind>
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(root)
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(90)
        .build_cartesian_2d(x, y)
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_desc("epoch")
        .y_desc("loss")
        .x_label_formatter(&|v| {
            // Epochs are whole numbers: leave fractional ticks unlabelled.
            if v.fract() == 0.0 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .light_line_style(BLACK.mix(0.04))
        .bold_line_style(BLACK.mix(0.12))
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .y_label_formatter(&|v| format_value(*v))
        .draw()
        .map_err(|e| draw_err(&e))?;
    let train = losses
        .iter()
        .map(|&(e, t, _)| (e as f64, t))
        .collect::<Vec<_>>();
    let val = losses
        .iter()
        .map(|&(e, _, v)| (e as f64, v.unwrap_or(f32::NAN)))
        .collect::<Vec<_>>();
    for (points, name, colour) in [
        (train, "training", COLOURS[0]),
        (val, "validation", COLOURS[1]),
    ] {
        if points.iter().all(|p| !p.1.is_finite()) {
            continue;
        }
        let style = colour.stroke_width(2);
        let mut anno = None;
        for run in finite_runs(&points) {
            anno = Some(
                chart
                    .draw_series(LineSeries::new(run, style))
                    .map_err(|e| draw_err(&e))?,
            );
        }
        if let Some(anno) = anno {
            anno.label(name).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], colour.stroke_width(3))
            });
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 18))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| draw_err(&e))
}

fn draw_scores<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    plot: &ScorePlot<'_>,
    rows: usize,
    panel: u32,
) -> Result<(), PlotErrorKind> {
    let c = plot.channels.len();
    let root = titled(root, plot.title)?;
    let (channel_area, score_area) = root.split_vertically(panel * c as u32);
    let x = -0.5..rows as f64 - 0.5;
    let alarm_spans = runs(plot.alarms.iter().copied());
    let label_spans = plot
        .labels
        .map(|l| runs(l.iter().map(|&v| v != 0)))
        .unwrap_or_default();

    for (ch, area) in channel_area.split_evenly((c, 1)).iter().enumerate() {
        let name = plot.channels.get(ch).map_or("", String::as_str);
        let column: Vec<f32> = plot.values.iter().skip(ch).step_by(c).copied().collect();
        draw_channel(
            area,
            x.clone(),
            name,
            &column,
            COLOURS[ch % COLOURS.len()],
            &alarm_spans,
            &label_spans,
        )?;
    }

    let positive: Vec<f64> = plot
        .scores
        .iter()
        .flatten()
        .chain([&plot.threshold])
        .filter(|s| s.is_finite() && **s > 0.0)
        .map(|&s| f64::from(s))
        .collect();
    let lo = positive.iter().copied().reduce(f64::min);
    let hi = positive.iter().copied().reduce(f64::max);
    match (lo, hi) {
        (Some(lo), Some(hi)) if hi / lo > 100.0 => {
            let y = LogAxis {
                lo: lo / 1.5,
                hi: hi * 1.5,
            };
            draw_score_panel(
                &score_area,
                x,
                y,
                lo / 1.5,
                plot,
                &alarm_spans,
                &label_spans,
            )
        }
        _ => {
            let finite = plot
                .scores
                .iter()
                .flatten()
                .chain([&plot.threshold])
                .filter(|s| s.is_finite())
                .map(|&s| f64::from(s));
            let (lo, hi) = finite.fold((0.0f64, 0.0f64), |(a, b), s| (a.min(s), b.max(s)));
            let pad = ((hi - lo) * 0.08).max(1e-6);
            let y: RangedCoordf64 = (lo.min(0.0)..hi + pad).into();
            draw_score_panel(
                &score_area,
                x,
                y,
                f64::NEG_INFINITY,
                plot,
                &alarm_spans,
                &label_spans,
            )
        }
    }
}

fn draw_channel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    x: Range<f64>,
    name: &str,
    column: &[f32],
    colour: RGBColor,
    alarm_spans: &[Range<usize>],
    label_spans: &[Range<usize>],
) -> Result<(), PlotErrorKind> {
    let finite = column.iter().copied().filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    let scale = if hi > lo { hi - lo } else { 1.0 };
    let min_rows = min_span_rows(&x, area);
    let mut chart = ChartBuilder::on(area)
        .margin_top(3)
        .margin_bottom(3)
        .margin_right(20)
        .y_label_area_size(LEFT_AREA)
        .build_cartesian_2d(x, -0.08f64..1.08)
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_labels(20)
        .y_labels(0)
        .x_label_formatter(&|_| String::new())
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.06))
        .axis_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| draw_err(&e))?;
    shade(
        &mut chart,
        label_spans,
        LABEL_SHADE,
        (-0.08, 1.08),
        min_rows,
    )?;
    shade(
        &mut chart,
        alarm_spans,
        ALARM_SHADE,
        (-0.08, 1.08),
        min_rows,
    )?;
    let points: Vec<(f64, f32)> = column
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as f64, (v - lo) / scale))
        .collect();
    for run in finite_runs(&points) {
        chart
            .draw_series(LineSeries::new(run, colour.stroke_width(1)))
            .map_err(|e| draw_err(&e))?;
    }
    // The channel's name and real range, in the left margin.
    let (_, h) = area.dim_in_pixel();
    let range = if lo <= hi {
        format!(
            "{} .. {}",
            format_value(f64::from(lo)),
            format_value(f64::from(hi))
        )
    } else {
        "no finite values".to_owned()
    };
    let mid = (h / 2) as i32;
    area.draw_text(name, &(FONT, 17).into_text_style(area), (12, mid - 18))
        .map_err(|e| draw_err(&e))?;
    area.draw_text(
        &range,
        &(FONT, 14).into_font().color(&BLACK.mix(0.6)),
        (12, mid + 2),
    )
    .map_err(|e| draw_err(&e))?;
    Ok(())
}

fn draw_score_panel<DB, Y>(
    area: &DrawingArea<DB, Shift>,
    x: Range<f64>,
    y: Y,
    floor: f64,
    plot: &ScorePlot<'_>,
    alarm_spans: &[Range<usize>],
    label_spans: &[Range<usize>],
) -> Result<(), PlotErrorKind>
where
    DB: DrawingBackend,
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let y_range = y.range();
    let (x0, x1) = (x.start, x.end);
    let min_rows = min_span_rows(&x, area);
    let mut chart = ChartBuilder::on(area)
        .margin_top(8)
        .margin_bottom(10)
        .margin_right(20)
        .x_label_area_size(60)
        .y_label_area_size(LEFT_AREA)
        .build_cartesian_2d(x, y)
        .map_err(|e| draw_err(&e))?;
    chart
        .configure_mesh()
        .x_labels(20)
        .y_labels(8)
        .x_desc("row")
        .y_desc("score")
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format_value(*v))
        .light_line_style(WHITE)
        .bold_line_style(BLACK.mix(0.08))
        .draw()
        .map_err(|e| draw_err(&e))?;
    let bounds = (y_range.start, y_range.end);
    shade(&mut chart, label_spans, LABEL_SHADE, bounds, min_rows)?;
    if plot.labels.is_some() {
        chart
            .draw_series(core::iter::empty::<Rectangle<(f64, f64)>>())
            .map_err(|e| draw_err(&e))?
            .label("labelled anomaly")
            .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 24, y + 7)], LABEL_SHADE.filled()));
    }
    shade(&mut chart, alarm_spans, ALARM_SHADE, bounds, min_rows)?
        .label("alarm")
        .legend(|(x, y)| Rectangle::new([(x, y - 7), (x + 24, y + 7)], ALARM_SHADE.filled()));

    // Scores at or below a log axis' floor are pinned to it rather than dropped: a gap means
    // "no score", not "tiny score".
    let points: Vec<(f64, f32)> = plot
        .scores
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let v = s.filter(|v| v.is_finite()).map_or(f32::NAN, |v| {
                if f64::from(v) < floor {
                    floor as f32
                } else {
                    v
                }
            });
            (i as f64, v)
        })
        .collect();
    let mut anno = None;
    for run in finite_runs(&points) {
        anno = Some(
            chart
                .draw_series(LineSeries::new(run, SCORE_COLOUR.stroke_width(1)))
                .map_err(|e| draw_err(&e))?,
        );
    }
    if let Some(anno) = anno {
        anno.label("score")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 24, y)], SCORE_COLOUR.stroke_width(3)));
    }
    let t = f64::from(plot.threshold);
    if t.is_finite() && t > floor {
        chart
            .draw_series(LineSeries::new(
                [(x0, t), (x1, t)],
                THRESHOLD_COLOUR.stroke_width(2),
            ))
            .map_err(|e| draw_err(&e))?
            .label(format!("threshold {}", format_value(t)))
            .legend(|(x, y)| {
                PathElement::new([(x, y), (x + 24, y)], THRESHOLD_COLOUR.stroke_width(3))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.4))
        .draw()
        .map_err(|e| draw_err(&e))
}

/// Shades row spans across the full height, returning the series for a legend entry.
fn shade<'a, 'b, DB, Y>(
    chart: &'b mut ChartContext<'a, DB, Cartesian2d<RangedCoordf64, Y>>,
    spans: &[Range<usize>],
    colour: RGBAColor,
    (bottom, top): (f64, f64),
    min_rows: f64,
) -> Result<&'b mut SeriesAnno<'a, DB>, PlotErrorKind>
where
    DB: DrawingBackend + 'a,
    Y: Ranged<ValueType = f64>,
{
    chart
        .draw_series(spans.iter().map(|s| {
            // Widen short spans around their centre so a one-row alarm stays visible.
            let (mut left, mut right) = (s.start as f64 - 0.5, s.end as f64 - 0.5);
            let widen = (min_rows - (right - left)).max(0.0) / 2.0;
            left -= widen;
            right += widen;
            Rectangle::new([(left, top), (right, bottom)], colour.filled())
        }))
        .map_err(|e| draw_err(&e))
}

/// Rows covering about 3 pixels of a panel's plotting width.
fn min_span_rows<DB: DrawingBackend>(x: &Range<f64>, area: &DrawingArea<DB, Shift>) -> f64 {
    let (w, _) = area.dim_in_pixel();
    let plot_px = f64::from(w.saturating_sub(LEFT_AREA + 20).max(1));
    3.0 * (x.end - x.start) / plot_px
}

/// Draws the title centred in a band at the top and returns the area below it.
fn titled<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
) -> Result<DrawingArea<DB, Shift>, PlotErrorKind> {
    let (band, rest) = root.split_vertically(TITLE_HEIGHT);
    let (w, _) = band.dim_in_pixel();
    let style = (FONT, 28)
        .into_font()
        .color(&BLACK)
        .pos(Pos::new(HPos::Center, VPos::Center));
    band.draw_text(title, &style, ((w / 2) as i32, (TITLE_HEIGHT / 2) as i32))
        .map_err(|e| draw_err(&e))?;
    Ok(rest)
}

/// A logarithmic axis with ticks at 1-2-5 (or 1-3, or 1) times powers of ten, which read
/// better than plotters' own log ticks (1..9 per decade, none below the first full decade).
#[derive(Debug, Clone)]
struct LogAxis {
    lo: f64,
    hi: f64,
}

impl Ranged for LogAxis {
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let (a, b) = (self.lo.log10(), self.hi.log10());
        // Non-positive values have no logarithm: put them just below the axis.
        let v = if *value > 0.0 { value.log10() } else { a - 1.0 };
        let t = ((v - a) / (b - a)).clamp(-1.0, 2.0);
        limit.0 + (t * f64::from(limit.1 - limit.0)).round() as i32
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        let max = hint.max_num_points().max(2);
        let (first, last) = (
            self.lo.log10().floor() as i32,
            self.hi.log10().ceil() as i32,
        );
        let ticks = |mantissas: &[f64], every: i32| -> Vec<f64> {
            (first..=last)
                .filter(|e| e.rem_euclid(every) == 0)
                .flat_map(|e| {
                    // Dividing by a power of ten keeps 0.3 exact where 3 * 0.1 is not.
                    let scale = move |m: f64| {
                        if e < 0 {
                            m / 10f64.powi(-e)
                        } else {
                            m * 10f64.powi(e)
                        }
                    };
                    mantissas.iter().map(move |&m| scale(m))
                })
                .filter(|v| (self.lo..=self.hi).contains(v))
                .collect()
        };
        for mantissas in [&[1.0, 2.0, 5.0][..], &[1.0, 3.0], &[1.0]] {
            let t = ticks(mantissas, 1);
            if t.len() <= max {
                return t;
            }
        }
        let every = (last - first) / max as i32 + 1;
        ticks(&[1.0], every)
    }

    fn range(&self) -> Range<f64> {
        self.lo..self.hi
    }
}

/// Maximal runs of `true`.
fn runs(flags: impl Iterator<Item = bool>) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut start = None;
    let mut len = 0;
    for (i, f) in flags.enumerate() {
        match (f, start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                out.push(s..i);
                start = None;
            }
            _ => {}
        }
        len = i + 1;
    }
    if let Some(s) = start {
        out.push(s..len);
    }
    out
}

/// Maximal runs of finite points, so NaN gaps stay gaps instead of being bridged by a line.
fn finite_runs(points: &[(f64, f32)]) -> Vec<Vec<(f64, f64)>> {
    runs(points.iter().map(|p| p.1.is_finite()))
        .into_iter()
        .map(|r| {
            let mut run: Vec<(f64, f64)> = points
                .get(r)
                .unwrap_or_default()
                .iter()
                .map(|&(x, y)| (x, f64::from(y)))
                .collect();
            // A lone point has no segment: give it a short one so it stays visible.
            if let [(x, y)] = run[..] {
                run.push((x + 0.5, y));
            }
            run
        })
        .collect()
}

/// A compact label: three significant digits without trailing zeros, scientific for very
/// large or small magnitudes.
fn format_value(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    let trim = |t: String| {
        if t.contains('.') {
            t.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            t
        }
    };
    if !(1e-3..1e5).contains(&a) {
        let t = format!("{v:.2e}");
        let (m, e) = t.split_once('e').unwrap_or((&t, "0"));
        format!("{}e{e}", trim(m.to_owned()))
    } else {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        trim(format!("{v:.decimals$}"))
    }
}

fn draw_err(e: &dyn fmt::Display) -> PlotErrorKind {
    PlotErrorKind::Draw(e.to_string())
}

/// Registers the embedded font once per process.
fn ensure_font() -> Result<(), PlotErrorKind> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| register_font(FONT, FontStyle::Normal, FONT_BYTES).is_ok());
    if ok { Ok(()) } else { Err(PlotErrorKind::Font) }
}

/// Renders into a temporary PNG next to `path`, then renames it into place; on any failure the
/// temporary file is removed.
fn render_atomically(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotErrorKind>,
) -> Result<(), PlotErrorKind> {
    ensure_font()?;
    let tmp = temp_path(path);
    let rendered = render(&tmp, size, draw);
    // The backend is dropped by now, so it cannot write the temporary file again.
    let result = rendered.and_then(|()| fs::rename(&tmp, path).map_err(PlotErrorKind::Io));
    if result.is_err() {
        let _ = fs::remove_file(&tmp); // may never have been created
    }
    result
}

fn render(
    tmp: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), PlotErrorKind>,
) -> Result<(), PlotErrorKind> {
    let root = BitMapBackend::new(tmp, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| draw_err(&e))?;
    draw(&root)?;
    root.present().map_err(|e| draw_err(&e))
}

/// A temporary name next to `path` ending in `.png`, since the encoder picks the format from
/// the extension; unique per process and call.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = path
        .file_name()
        .map_or_else(|| "plot".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.tmp-{}-{n}.png", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::{DemoConfig, generate};

    const PNG_SIGNATURE: [u8; 8] = [0x89, b'P', b'N', b'G', b'\r', b'\n', 0x1a, b'\n'];

    /// Width and height from a PNG's IHDR chunk.
    fn png_size(bytes: &[u8]) -> (u32, u32) {
        assert_eq!(bytes[..8], PNG_SIGNATURE);
        assert_eq!(&bytes[12..16], b"IHDR");
        let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        (be(&bytes[16..20]), be(&bytes[20..24]))
    }

    fn entries(dir: &Path) -> Vec<String> {
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }

    /// A fake score for demo data: deviation of each row from the row before, large where
    /// the data jumps; `None` where a sample is missing.
    fn fake_scores(values: &[f32], c: usize) -> Vec<Option<f32>> {
        let rows: Vec<&[f32]> = values.chunks(c).collect();
        (0..rows.len())
            .map(|i| {
                if i < 8 || rows[i].iter().any(|v| !v.is_finite()) {
                    return None;
                }
                let d: f32 = (0..c)
                    .map(|ch| {
                        let mean = (i - 8..i).map(|j| rows[j][ch]).sum::<f32>() / 8.0;
                        let sd = (i - 8..i)
                            .map(|j| (rows[j][ch] - mean).powi(2))
                            .sum::<f32>()
                            .sqrt()
                            + 1e-3;
                        ((rows[i][ch] - mean) / sd).powi(2)
                    })
                    .sum();
                Some(0.01 * d / c as f32)
            })
            .collect()
    }

    #[test]
    fn score_plot_of_demo_data_is_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scores.png");
        let d = generate(&DemoConfig::default());
        let c = d.channels.len();
        let scores = fake_scores(&d.values, c);
        let threshold = 0.2;
        let alarms: Vec<bool> = scores
            .iter()
            .map(|s| s.is_some_and(|s| s > threshold))
            .collect();
        let plot = ScorePlot {
            channels: &d.channels,
            values: &d.values,
            scores: &scores,
            threshold,
            alarms: &alarms,
            labels: Some(&d.labels),
            title: "demo pump: fake score",
        };
        plot_scores(&path, &plot).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(
            png_size(&bytes),
            (SCORE_PLOT_WIDTH, TITLE_HEIGHT + 90 * 8 + SCORE_HEIGHT)
        );
        assert_eq!(entries(dir.path()), ["scores.png"]);
        if let Ok(keep) = std::env::var("SENSORAE_KEEP_PLOTS") {
            fs::copy(&path, Path::new(&keep).join("demo-scores.png")).unwrap();
        }
    }

    #[test]
    fn linear_score_axis_and_no_labels_also_render() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("small.png");
        let channels = vec!["a".to_owned(), "b".to_owned()];
        let values = [1.0, 2.0, 1.5, f32::NAN, 1.2, 2.2, f32::INFINITY, 2.0];
        let plot = ScorePlot {
            channels: &channels,
            values: &values,
            scores: &[None, Some(0.2), Some(0.9), Some(0.4)],
            threshold: 0.5,
            alarms: &[false, false, true, false],
            labels: None,
            title: "tiny",
        };
        plot_scores(&path, &plot).unwrap();
        let bytes = fs::read(&path).unwrap();
        assert_eq!(
            png_size(&bytes),
            (SCORE_PLOT_WIDTH, TITLE_HEIGHT + 110 * 2 + SCORE_HEIGHT)
        );
    }

    #[test]
    fn loss_plot_is_a_png_of_the_expected_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("losses.png");
        let losses: Vec<(usize, f32, Option<f32>)> = (1..=40)
            .map(|e| {
                let t = 1.0 / e as f32;
                (e, t, (e % 10 != 0).then_some(t * 1.2 + 0.01))
            })
            .collect();
        plot_losses(&path, &losses, "plain autoencoder").unwrap();
        assert_eq!(png_size(&fs::read(&path).unwrap()), LOSS_PLOT_SIZE);
        // Zero or negative losses fall back to a linear axis; one epoch still plots.
        plot_losses(&path, &[(1, 0.0, None)], "one epoch").unwrap();
        assert_eq!(png_size(&fs::read(&path).unwrap()), LOSS_PLOT_SIZE);
        assert_eq!(entries(dir.path()), ["losses.png"]);
        if let Ok(keep) = std::env::var("SENSORAE_KEEP_PLOTS") {
            plot_losses(
                Path::new(&keep).join("losses.png"),
                &losses,
                "plain autoencoder",
            )
            .unwrap();
        }
    }

    #[test]
    fn unwritable_path_names_the_file_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no-such-dir").join("losses.png");
        let err = plot_losses(&missing, &[(1, 0.5, None)], "x").unwrap_err();
        assert_eq!(err.path(), missing);
        assert!(matches!(err.kind(), PlotErrorKind::Draw(_)), "{err:?}");
        assert!(err.to_string().contains("losses.png"), "{err}");
        assert!(!missing.exists());

        // A directory in the way of the final name: rendering works, the rename fails.
        let blocked = dir.path().join("blocked.png");
        fs::create_dir(&blocked).unwrap();
        fs::write(blocked.join("keep"), b"x").unwrap();
        let err = plot_losses(&blocked, &[(1, 0.5, None)], "x").unwrap_err();
        assert!(matches!(err.kind(), PlotErrorKind::Io(_)), "{err:?}");
        assert!(err.to_string().contains("blocked.png"), "{err}");
        assert_eq!(entries(dir.path()), ["blocked.png"]);
    }

    #[test]
    fn bad_shapes_and_empty_input_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.png");
        let channels = vec!["a".to_owned(), "b".to_owned()];
        let values = [1.0, 2.0, 3.0, 4.0];
        let mut plot = ScorePlot {
            channels: &channels,
            values: &values,
            scores: &[None],
            threshold: 1.0,
            alarms: &[false, false],
            labels: None,
            title: "bad",
        };
        let err = plot_scores(&path, &plot).unwrap_err();
        assert!(matches!(
            err.kind(),
            PlotErrorKind::Shape {
                what: "scores",
                expected: 2,
                actual: 1
            }
        ));
        plot.values = &values[..3];
        assert!(matches!(
            plot_scores(&path, &plot).unwrap_err().kind(),
            PlotErrorKind::Shape { what: "values", .. }
        ));
        plot.values = &[];
        assert!(matches!(
            plot_scores(&path, &plot).unwrap_err().kind(),
            PlotErrorKind::Empty
        ));
        assert!(matches!(
            plot_losses(&path, &[(1, f32::NAN, None)], "x")
                .unwrap_err()
                .kind(),
            PlotErrorKind::Empty
        ));
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn labels_are_compact() {
        let cases = [
            (0.0, "0"),
            (1000.0, "1000"),
            (0.1, "0.1"),
            (0.2, "0.2"),
            (3.61, "3.61"),
            (0.96934, "0.969"),
            (402.4, "402"),
            (1e-4, "1e-4"),
            (2.5e6, "2.5e6"),
            (-0.05, "-0.05"),
        ];
        for (v, text) in cases {
            assert_eq!(format_value(v), text);
        }
    }

    #[test]
    fn log_axis_ticks_are_round_and_inside() {
        let axis = LogAxis { lo: 0.015, hi: 1.3 };
        assert_eq!(axis.key_points(10), [0.02, 0.05, 0.1, 0.2, 0.5, 1.0]);
        assert_eq!(axis.key_points(4), [0.03, 0.1, 0.3, 1.0]);
        assert_eq!(axis.key_points(3), [0.1, 1.0]);
        let wide = LogAxis { lo: 1e-9, hi: 1e9 };
        let ticks = wide.key_points(5);
        assert!(!ticks.is_empty() && ticks.len() <= 5, "{ticks:?}");
        assert!(axis.map(&0.015, (0, 100)) == 0 && axis.map(&1.3, (0, 100)) == 100);
        assert!(axis.map(&0.0, (0, 100)) < 0);
    }

    #[test]
    fn runs_find_maximal_spans() {
        let flags = [true, true, false, true, false, false, true];
        assert_eq!(runs(flags.into_iter()), [0..2, 3..4, 6..7]);
        assert!(runs(core::iter::empty()).is_empty());
    }
}
