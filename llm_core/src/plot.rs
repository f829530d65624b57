//! Line charts, heatmaps and bar charts as SVG (plotters' SVG backend: no
//! font library needed), shown inline in Jupyter and savable to a file.
//!
//! ```
//! use llm_core::plot::LineChart;
//!
//! let epochs = [0.0, 1.0, 2.0, 3.0];
//! let chart = LineChart::new("Training loss")
//!     .x_label("Epochs")
//!     .y_label("Loss")
//!     .line("train", &epochs, &[2.0, 1.2, 0.8, 0.6])
//!     .dashed("validation", &epochs, &[2.1, 1.5, 1.3, 1.3]);
//! let svg = chart.to_svg()?;
//! assert!(svg.contains("Training loss") && svg.contains("validation"));
//! // chart.save("output/loss.svg")?;   // in a notebook, the chart itself is the cell's output
//! # Ok::<(), llm_core::plot::PlotError>(())
//! ```
//!
//! [`loss_plot`] draws the book's loss plot: epochs on the bottom axis,
//! tokens seen on a top axis, training and validation curves.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;

/// Errors from drawing or saving a chart.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("plot {title:?}: {message}")]
    Draw { title: String, message: String },
    #[error("plot {title:?}: series {series:?} has {xs} x values but {ys} y values")]
    Length {
        title: String,
        series: String,
        xs: usize,
        ys: usize,
    },
    #[error(transparent)]
    Save(#[from] crate::files::FileError),
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// A solid line.
    Solid,
    /// A dashed line.
    Dashed,
    /// Markers only.
    Points,
    /// A solid line with markers.
    LinePoints,
}

/// One series of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub xs: Vec<f64>,
    pub ys: Vec<f64>,
    pub style: Style,
}

/// A secondary x axis drawn on top, linearly aligned with the bottom one:
/// bottom value `from.0` sits under top value `to.0`, `from.1` under `to.1`.
#[derive(Debug, Clone)]
pub struct TopAxis {
    pub label: String,
    pub from: (f64, f64),
    pub to: (f64, f64),
}

/// The palette (matplotlib's first colours, which readers of the book know).
pub const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A line chart with a title, labelled axes and a legend.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    pub size: (u32, u32),
    pub top_axis: Option<TopAxis>,
    pub x_range: Option<(f64, f64)>,
    pub y_range: Option<(f64, f64)>,
    /// Where the legend goes (default: upper right).
    pub legend_at: SeriesLabelPosition,
}

impl LineChart {
    /// An empty chart with this title (600×400 pixels).
    pub fn new(title: &str) -> Self {
        LineChart {
            title: title.to_string(),
            x_label: String::new(),
            y_label: String::new(),
            series: Vec::new(),
            size: (600, 400),
            top_axis: None,
            x_range: None,
            y_range: None,
            legend_at: SeriesLabelPosition::UpperRight,
        }
    }

    /// Put the legend elsewhere, e.g. `SeriesLabelPosition::LowerRight` for
    /// curves that rise (accuracy).
    pub fn legend_at(mut self, position: SeriesLabelPosition) -> Self {
        self.legend_at = position;
        self
    }

    /// Label of the bottom axis.
    pub fn x_label(mut self, label: &str) -> Self {
        self.x_label = label.to_string();
        self
    }

    /// Label of the left axis.
    pub fn y_label(mut self, label: &str) -> Self {
        self.y_label = label.to_string();
        self
    }

    /// Size in pixels.
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    /// Fix the bottom axis range (default: the data's).
    pub fn x_range(mut self, lo: f64, hi: f64) -> Self {
        self.x_range = Some((lo, hi));
        self
    }

    /// Fix the left axis range (default: the data's, with a margin).
    pub fn y_range(mut self, lo: f64, hi: f64) -> Self {
        self.y_range = Some((lo, hi));
        self
    }

    /// Add a series drawn in the given style.
    pub fn series(mut self, label: &str, xs: &[f64], ys: &[f64], style: Style) -> Self {
        self.series.push(Series {
            label: label.to_string(),
            xs: xs.to_vec(),
            ys: ys.to_vec(),
            style,
        });
        self
    }

    /// Add a solid line.
    pub fn line(self, label: &str, xs: &[f64], ys: &[f64]) -> Self {
        self.series(label, xs, ys, Style::Solid)
    }

    /// Add a dashed line.
    pub fn dashed(self, label: &str, xs: &[f64], ys: &[f64]) -> Self {
        self.series(label, xs, ys, Style::Dashed)
    }

    /// Add markers without a line.
    pub fn points(self, label: &str, xs: &[f64], ys: &[f64]) -> Self {
        self.series(label, xs, ys, Style::Points)
    }

    /// Add a top axis aligned linearly with the bottom one (e.g. tokens seen over epochs).
    pub fn top_axis(mut self, label: &str, bottom: (f64, f64), top: (f64, f64)) -> Self {
        self.top_axis = Some(TopAxis {
            label: label.to_string(),
            from: bottom,
            to: top,
        });
        self
    }

    fn draw_err<E: std::fmt::Debug>(&self) -> impl Fn(E) -> PlotError + '_ {
        move |e| PlotError::Draw {
            title: self.title.clone(),
            message: format!("{e:?}"),
        }
    }

    fn ranges(&self) -> ((f64, f64), (f64, f64)) {
        let all_x = self.series.iter().flat_map(|s| s.xs.iter().copied());
        let all_y = self.series.iter().flat_map(|s| s.ys.iter().copied());
        let (x0, x1) = self.x_range.unwrap_or_else(|| pad(min_max(all_x), 0.0));
        let (y0, y1) = self.y_range.unwrap_or_else(|| pad(min_max(all_y), 0.05));
        ((x0, x1), (y0, y1))
    }

    /// Render to an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        for s in &self.series {
            if s.xs.len() != s.ys.len() {
                return Err(PlotError::Length {
                    title: self.title.clone(),
                    series: s.label.clone(),
                    xs: s.xs.len(),
                    ys: s.ys.len(),
                });
            }
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, self.size).into_drawing_area();
            self.draw_on(&root)?;
            root.present().map_err(self.draw_err())?;
        }
        Ok(svg)
    }

    fn draw_on(&self, root: &DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), PlotError> {
        let err = self.draw_err();
        root.fill(&WHITE).map_err(&err)?;
        let ((x0, x1), (y0, y1)) = self.ranges();
        let mut builder = ChartBuilder::on(root);
        builder
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(65);
        if self.top_axis.is_some() {
            builder.top_x_label_area_size(45);
        }
        let chart = builder.build_cartesian_2d(x0..x1, y0..y1).map_err(&err)?;
        if let Some(top) = &self.top_axis {
            // map the bottom range onto the top axis' values
            let scale = |x: f64| {
                let (a, b) = top.from;
                let (c, d) = top.to;
                if (b - a).abs() < f64::EPSILON {
                    c
                } else {
                    c + (x - a) * (d - c) / (b - a)
                }
            };
            // the secondary coordinates take over the top label area, so set
            // them up before the primary mesh is drawn (else it labels both)
            let mut chart = chart.set_secondary_coord(scale(x0)..scale(x1), y0..y1);
            self.draw_mesh(&mut chart)?;
            chart
                .configure_secondary_axes()
                .x_desc(&top.label)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .x_label_formatter(&|v| format_tick(*v))
                .draw()
                .map_err(&err)?;
            self.draw_series(&mut chart)?;
        } else {
            let mut chart = chart;
            self.draw_mesh(&mut chart)?;
            self.draw_series(&mut chart)?;
        }
        Ok(())
    }

    fn draw_mesh<'a, DB>(
        &self,
        chart: &mut ChartContext<
            'a,
            DB,
            Cartesian2d<
                plotters::coord::types::RangedCoordf64,
                plotters::coord::types::RangedCoordf64,
            >,
        >,
    ) -> Result<(), PlotError>
    where
        DB: DrawingBackend + 'a,
    {
        let ((x0, x1), (y0, y1)) = self.ranges();
        let (x_max, y_max) = (x0.abs().max(x1.abs()), y0.abs().max(y1.abs()));
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .label_style(("sans-serif", 13))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(242, 242, 242))
            .x_label_formatter(&|v| format_tick_on_axis(*v, x_max))
            .y_label_formatter(&|v| format_tick_on_axis(*v, y_max))
            .draw()
            .map_err(self.draw_err())
    }

    fn draw_series<'a, DB, CT>(&self, chart: &mut ChartContext<'a, DB, CT>) -> Result<(), PlotError>
    where
        DB: DrawingBackend + 'a,
        CT: CoordTranslate<From = (f64, f64)>,
    {
        let err = self.draw_err();
        for (i, s) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let pts: Vec<(f64, f64)> = s.xs.iter().copied().zip(s.ys.iter().copied()).collect();
            let stroke = color.stroke_width(2);
            let legend_style = s.style;
            let anno = match s.style {
                Style::Solid | Style::LinePoints => chart
                    .draw_series(LineSeries::new(pts.clone(), stroke))
                    .map_err(&err)?,
                Style::Dashed => chart
                    .draw_series(DashedLineSeries::new(pts.clone(), 6, 4, stroke))
                    .map_err(&err)?,
                Style::Points => chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(&err)?,
            };
            anno.label(&s.label).legend(move |(x, y)| {
                let style = if legend_style == Style::Points {
                    color.filled()
                } else {
                    color.stroke_width(2)
                };
                PathElement::new(vec![(x, y), (x + 20, y)], style)
            });
            if s.style == Style::LinePoints {
                chart
                    .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(&err)?;
            }
        }
        if self.series.iter().any(|s| !s.label.is_empty()) {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 13))
                .background_style(WHITE.mix(0.85))
                .border_style(RGBColor(200, 200, 200))
                .position(self.legend_at.clone())
                .draw()
                .map_err(&err)?;
        }
        Ok(())
    }

    /// Save as an SVG file (written atomically; parent directories created).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        save_svg(self.to_svg()?, path)
    }

    /// Rich display in the evcxr Jupyter kernel: the chart, inline.
    pub fn evcxr_display(&self) {
        display_svg(self.to_svg());
    }
}

/// A heatmap of a matrix with labelled rows and columns, each cell annotated
/// with its value (e.g. attention weights: rows are queries, columns keys).
///
/// ```
/// use llm_core::plot::Heatmap;
/// let words = ["Your", "journey", "starts"];
/// let svg = Heatmap::new("Attention weights", &[vec![1.0, 0.0, 0.0], vec![0.4, 0.6, 0.0], vec![0.2, 0.3, 0.5]])
///     .row_labels(&words)
///     .col_labels(&words)
///     .to_svg()?;
/// assert!(svg.contains("journey"));
/// # Ok::<(), llm_core::plot::PlotError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Heatmap {
    pub title: String,
    pub values: Vec<Vec<f64>>,
    pub row_labels: Vec<String>,
    pub col_labels: Vec<String>,
    pub x_label: String,
    pub y_label: String,
    /// Print each cell's value in it.
    pub annotate: bool,
    /// Cell size in pixels.
    pub cell: u32,
}

impl Heatmap {
    /// A heatmap of `values` (rows of equal length).
    pub fn new(title: &str, values: &[Vec<f64>]) -> Self {
        Heatmap {
            title: title.to_string(),
            values: values.to_vec(),
            row_labels: Vec::new(),
            col_labels: Vec::new(),
            x_label: String::new(),
            y_label: String::new(),
            annotate: true,
            cell: 56,
        }
    }

    /// A heatmap of a 2-D tensor (converted to f64 on the CPU).
    pub fn from_tensor(title: &str, t: &tch::Tensor) -> Result<Self, PlotError> {
        let rows: Vec<Vec<f64>> = Vec::<Vec<f64>>::try_from(
            t.to_device(tch::Device::Cpu)
                .to_kind(tch::Kind::Double)
                .detach(),
        )
        .map_err(|e| PlotError::Draw {
            title: title.to_string(),
            message: format!("need a 2-D tensor, got shape {:?}: {e}", t.size()),
        })?;
        Ok(Self::new(title, &rows))
    }

    /// Labels of the rows (top to bottom).
    pub fn row_labels<S: AsRef<str>>(mut self, labels: &[S]) -> Self {
        self.row_labels = labels.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Labels of the columns (left to right).
    pub fn col_labels<S: AsRef<str>>(mut self, labels: &[S]) -> Self {
        self.col_labels = labels.iter().map(|s| s.as_ref().to_string()).collect();
        self
    }

    /// Axis titles: columns (bottom) and rows (left).
    pub fn axis_labels(mut self, x: &str, y: &str) -> Self {
        self.x_label = x.to_string();
        self.y_label = y.to_string();
        self
    }

    /// Whether to print values in the cells.
    pub fn annotate(mut self, on: bool) -> Self {
        self.annotate = on;
        self
    }

    /// Render to an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        let err = |e: String| PlotError::Draw {
            title: self.title.clone(),
            message: e,
        };
        let n_rows = self.values.len();
        let n_cols = self.values.first().map_or(0, Vec::len);
        if let Some((i, r)) = self
            .values
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != n_cols)
        {
            return Err(err(format!(
                "row {i} has {} values, row 0 has {n_cols}",
                r.len()
            )));
        }
        let (lo, hi) = min_max(self.values.iter().flatten().copied());
        let label_w = 16
            + 8 * self
                .row_labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(2) as u32;
        let label_h = 16
            + 7 * self
                .col_labels
                .iter()
                .map(|l| l.chars().count())
                .max()
                .unwrap_or(2) as u32;
        let width = label_w + 30 + self.cell * n_cols as u32 + 20;
        let height = 50 + self.cell * n_rows as u32 + label_h + 30;
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
            root.fill(&WHITE).map_err(|e| err(format!("{e:?}")))?;
            let title_style = ("sans-serif", 18).into_font().color(&BLACK).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Top,
                ),
            );
            root.draw_text(&self.title, &title_style, (width as i32 / 2, 10))
                .map_err(|e| err(format!("{e:?}")))?;
            let x0 = (label_w + 30) as i32;
            let y0 = 50i32;
            let c = self.cell as i32;
            let small = ("sans-serif", 12).into_font();
            for (i, row) in self.values.iter().enumerate() {
                for (j, &v) in row.iter().enumerate() {
                    let t = if hi > lo && v.is_finite() {
                        (v - lo) / (hi - lo)
                    } else {
                        0.0
                    };
                    let color = viridis(t);
                    let (x, y) = (x0 + j as i32 * c, y0 + i as i32 * c);
                    root.draw(&Rectangle::new([(x, y), (x + c, y + c)], color.filled()))
                        .map_err(|e| err(format!("{e:?}")))?;
                    if self.annotate {
                        let text = if v.is_infinite() {
                            if v > 0.0 {
                                "inf".to_string()
                            } else {
                                "-inf".to_string()
                            }
                        } else {
                            format!("{v:.2}")
                        };
                        let ink = if t > 0.6 { BLACK } else { WHITE };
                        let style =
                            small
                                .clone()
                                .color(&ink)
                                .pos(plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Center,
                                    plotters::style::text_anchor::VPos::Center,
                                ));
                        root.draw_text(&text, &style, (x + c / 2, y + c / 2))
                            .map_err(|e| err(format!("{e:?}")))?;
                    }
                }
            }
            let label_font = ("sans-serif", 13).into_font();
            for (i, l) in self.row_labels.iter().enumerate().take(n_rows) {
                let style =
                    label_font
                        .clone()
                        .color(&BLACK)
                        .pos(plotters::style::text_anchor::Pos::new(
                            plotters::style::text_anchor::HPos::Right,
                            plotters::style::text_anchor::VPos::Center,
                        ));
                root.draw_text(l, &style, (x0 - 6, y0 + i as i32 * c + c / 2))
                    .map_err(|e| err(format!("{e:?}")))?;
            }
            let bottom = y0 + n_rows as i32 * c;
            for (j, l) in self.col_labels.iter().enumerate().take(n_cols) {
                let style = label_font
                    .clone()
                    .transform(FontTransform::Rotate270)
                    .color(&BLACK)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Right,
                        plotters::style::text_anchor::VPos::Center,
                    ));
                root.draw_text(l, &style, (x0 + j as i32 * c + c / 2, bottom + 6))
                    .map_err(|e| err(format!("{e:?}")))?;
            }
            if !self.x_label.is_empty() {
                let style = ("sans-serif", 14).into_font().color(&BLACK).pos(
                    plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Bottom,
                    ),
                );
                root.draw_text(
                    &self.x_label,
                    &style,
                    (x0 + c * n_cols as i32 / 2, height as i32 - 6),
                )
                .map_err(|e| err(format!("{e:?}")))?;
            }
            if !self.y_label.is_empty() {
                let style = ("sans-serif", 14)
                    .into_font()
                    .transform(FontTransform::Rotate270)
                    .color(&BLACK)
                    .pos(plotters::style::text_anchor::Pos::new(
                        plotters::style::text_anchor::HPos::Center,
                        plotters::style::text_anchor::VPos::Top,
                    ));
                root.draw_text(&self.y_label, &style, (6, y0 + c * n_rows as i32 / 2))
                    .map_err(|e| err(format!("{e:?}")))?;
            }
            root.present().map_err(|e| err(format!("{e:?}")))?;
        }
        Ok(svg)
    }

    /// Save as an SVG file (written atomically).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        save_svg(self.to_svg()?, path)
    }

    /// Rich display in the evcxr Jupyter kernel.
    pub fn evcxr_display(&self) {
        display_svg(self.to_svg());
    }
}

/// A horizontal bar chart: one labelled bar per item, its value written at
/// the bar's end (e.g. tokens/s of each rung of the speed ladder). Bars are
/// drawn top to bottom in the order given; `highlight` bars take the second
/// colour (e.g. the reference runs).
///
/// ```
/// use llm_core::plot::BarChart;
/// let svg = BarChart::new("Training speed")
///     .value_label("tokens/s")
///     .bar("book code", 122.0)
///     .bar("+ bf16", 368.0)
///     .to_svg()?;
/// assert!(svg.contains("+ bf16") && svg.contains("368"));
/// # Ok::<(), llm_core::plot::PlotError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BarChart {
    title: String,
    value_label: String,
    bars: Vec<(String, f64, bool)>,
    size: (u32, u32),
    decimals: usize,
}

impl BarChart {
    /// An empty chart titled `title`.
    pub fn new(title: &str) -> Self {
        BarChart {
            title: title.to_string(),
            value_label: String::new(),
            bars: Vec::new(),
            size: (760, 0),
            decimals: 0,
        }
    }

    /// The label of the value axis.
    pub fn value_label(mut self, label: &str) -> Self {
        self.value_label = label.to_string();
        self
    }

    /// Add a bar.
    pub fn bar(mut self, label: &str, value: f64) -> Self {
        self.bars.push((label.to_string(), value, false));
        self
    }

    /// Add a bar in the highlight colour.
    pub fn highlighted_bar(mut self, label: &str, value: f64) -> Self {
        self.bars.push((label.to_string(), value, true));
        self
    }

    /// Decimals of the values written at the bars' ends (default 0).
    pub fn decimals(mut self, decimals: usize) -> Self {
        self.decimals = decimals;
        self
    }

    /// Width and height in pixels (height 0: from the number of bars).
    pub fn size(mut self, width: u32, height: u32) -> Self {
        self.size = (width, height);
        self
    }

    fn draw_err<E: std::fmt::Debug>(&self) -> impl Fn(E) -> PlotError + '_ {
        move |e| PlotError::Draw {
            title: self.title.clone(),
            message: format!("{e:?}"),
        }
    }

    /// Render to an SVG document.
    pub fn to_svg(&self) -> Result<String, PlotError> {
        if let Some((label, v, _)) = self.bars.iter().find(|(_, v, _)| !v.is_finite()) {
            return Err(PlotError::Draw {
                title: self.title.clone(),
                message: format!("bar {label:?} has the value {v}; bars need finite values"),
            });
        }
        let n = self.bars.len().max(1);
        let height = if self.size.1 > 0 {
            self.size.1
        } else {
            90 + 34 * n as u32
        };
        let longest = self
            .bars
            .iter()
            .map(|(l, _, _)| l.chars().count())
            .max()
            .unwrap_or(0);
        let max = self.bars.iter().map(|(_, v, _)| *v).fold(0.0f64, f64::max);
        let x_max = if max > 0.0 { max * 1.18 } else { 1.0 };
        let err = self.draw_err();
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (self.size.0, height)).into_drawing_area();
            root.fill(&WHITE).map_err(&err)?;
            let labels: Vec<String> = self.bars.iter().map(|(l, _, _)| l.clone()).collect();
            let mut chart = ChartBuilder::on(&root)
                .caption(&self.title, ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size((longest as u32 * 7 + 16).min(self.size.0 / 2))
                .build_cartesian_2d(0.0..x_max, -0.5..(n as f64 - 0.5))
                .map_err(&err)?;
            chart
                .configure_mesh()
                .disable_y_mesh()
                .x_desc(&self.value_label)
                .label_style(("sans-serif", 13))
                .axis_desc_style(("sans-serif", 15))
                .light_line_style(RGBColor(242, 242, 242))
                .y_labels(n)
                .y_label_formatter(&|y| {
                    // bar i is drawn at n - 1 - i (the first bar on top)
                    let i = n as f64 - 1.0 - y.round();
                    if (y - y.round()).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                        labels[i as usize].clone()
                    } else {
                        String::new()
                    }
                })
                .x_label_formatter(&|v| format_tick(*v))
                .draw()
                .map_err(&err)?;
            for (i, (_, v, hl)) in self.bars.iter().enumerate() {
                let y = (n - 1 - i) as f64;
                let color = if *hl { PALETTE[1] } else { PALETTE[0] };
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(0.0, y - 0.35), (*v, y + 0.35)],
                        color.filled(),
                    )))
                    .map_err(&err)?;
                let text = format!("{:.*}", self.decimals, v);
                chart
                    .draw_series(std::iter::once(Text::new(
                        text,
                        (*v + x_max * 0.01, y + 0.15),
                        ("sans-serif", 13),
                    )))
                    .map_err(&err)?;
            }
            root.present().map_err(&err)?;
        }
        Ok(svg)
    }

    /// Save as an SVG file (written atomically; parent directories created).
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), PlotError> {
        save_svg(self.to_svg()?, path)
    }

    /// Rich display in the evcxr Jupyter kernel: the chart, inline.
    pub fn evcxr_display(&self) {
        display_svg(self.to_svg());
    }
}

/// Write a rendered chart to `path` atomically (parent directories created).
fn save_svg(svg: String, path: impl AsRef<Path>) -> Result<(), PlotError> {
    crate::files::write_bytes(path, svg.as_bytes())?;
    Ok(())
}

/// Show a rendered chart inline in evcxr, or say why it could not be drawn.
fn display_svg(svg: Result<String, PlotError>) {
    match svg {
        Ok(svg) => crate::display::emit("image/svg+xml", &svg),
        Err(e) => eprintln!("{e}"),
    }
}

/// The viridis colour map at `t` in [0, 1] (a few stops, linearly interpolated).
pub fn viridis(t: f64) -> RGBColor {
    const STOPS: [(f64, f64, f64); 5] = [
        (68.0, 1.0, 84.0),
        (59.0, 82.0, 139.0),
        (33.0, 145.0, 140.0),
        (94.0, 201.0, 98.0),
        (253.0, 231.0, 37.0),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let pos = t * (STOPS.len() - 1) as f64;
    let i = (pos.floor() as usize).min(STOPS.len() - 2);
    let f = pos - i as f64;
    let (a, b) = (STOPS[i], STOPS[i + 1]);
    let lerp = |x: f64, y: f64| (x + (y - x) * f).round() as u8;
    RGBColor(lerp(a.0, b.0), lerp(a.1, b.1), lerp(a.2, b.2))
}

/// The book's loss plot: training and validation loss over epochs (bottom
/// axis), with the number of tokens seen on a top axis.
///
/// `epochs_seen`, `tokens_seen`, `train_losses` and `val_losses` are the
/// evaluation points of a training run (all the same length).
pub fn loss_plot(
    epochs_seen: &[f64],
    tokens_seen: &[f64],
    train_losses: &[f64],
    val_losses: &[f64],
) -> LineChart {
    let mut chart = LineChart::new("Training and validation loss")
        .x_label("Epochs")
        .y_label("Loss")
        .line("Training loss", epochs_seen, train_losses)
        .dashed("Validation loss", epochs_seen, val_losses);
    if let (Some(&e0), Some(&e1), Some(&t0), Some(&t1)) = (
        epochs_seen.first(),
        epochs_seen.last(),
        tokens_seen.first(),
        tokens_seen.last(),
    ) {
        chart = chart.top_axis("Tokens seen", (e0, e1), (t0, t1));
    }
    chart
}

fn min_max(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for v in values.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if lo > hi {
        (0.0, 1.0)
    } else {
        (lo, hi)
    }
}

fn pad((lo, hi): (f64, f64), frac: f64) -> (f64, f64) {
    let span = hi - lo;
    if span <= f64::EPSILON * lo.abs().max(1.0) {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo - frac * span, hi + frac * span)
    }
}

/// Tick labels for large counts: 1200 → "1.2k", 3500000 → "3.5M".
pub fn format_tick(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// A tick label on an axis whose largest value (in magnitude) is
/// `axis_max`: [`format_tick`], except on axes of small numbers (below 0.01,
/// such as learning rates), where three decimals would print 0 for every
/// tick: there `4e-4`, `1.5e-4`.
pub fn format_tick_on_axis(v: f64, axis_max: f64) -> String {
    if axis_max == 0.0 || axis_max >= 0.01 {
        return format_tick(v);
    }
    if v.abs() < axis_max * 1e-6 {
        return "0".to_string(); // float noise at the origin
    }
    let s = format!("{v:.2e}");
    let (mantissa, exponent) = s.split_once('e').unwrap_or((&s, "0"));
    let mantissa = mantissa.trim_end_matches('0').trim_end_matches('.');
    format!("{mantissa}e{exponent}")
}

/// Up to three decimals, without trailing zeros: 10.0 → "10", 0.880 → "0.88".
fn trim(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".to_string()
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_of_small_numbers_never_round_to_zero() {
        let _rng = crate::rng_lock();
        let ticks: Vec<String> = [0.0, 1e-20, 1e-4, 1.5e-4, 4e-4, 5e-4]
            .map(|v| format_tick_on_axis(v, 5e-4))
            .to_vec();
        assert_eq!(ticks, ["0", "0", "1e-4", "1.5e-4", "4e-4", "5e-4"]);
        assert_eq!(format_tick_on_axis(0.88, 10.0), "0.88");
        assert_eq!(format_tick_on_axis(2500.0, 3000.0), "2.5k");
    }

    #[test]
    fn svg_has_title_axes_legend_and_lines() {
        let _rng = crate::rng_lock();
        let svg = LineChart::new("Loss <demo>")
            .x_label("Epochs")
            .y_label("Loss")
            .line("train", &[0.0, 1.0, 2.0], &[3.0, 2.0, 1.0])
            .dashed("val", &[0.0, 1.0, 2.0], &[3.5, 2.5, 2.0])
            .to_svg()
            .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for text in ["Loss &lt;demo&gt;", "Epochs", "Loss", "train", "val"] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "missing {text}"
            );
        }
        assert!(svg.contains("<polyline"), "no line drawn");
        assert!(
            svg.contains("stroke-dasharray")
                || svg.matches("<polyline").count() > 3
                || svg.contains("<line")
        );
    }

    #[test]
    fn loss_plot_has_tokens_seen_axis() {
        let _rng = crate::rng_lock();
        let svg = loss_plot(
            &[0.0, 5.0, 10.0],
            &[0.0, 23040.0, 46080.0],
            &[9.0, 3.0, 0.5],
            &[9.1, 6.0, 6.5],
        )
        .to_svg()
        .unwrap();
        for text in [
            "Tokens seen",
            "Epochs",
            "Training loss",
            "Validation loss",
            "20k",
        ] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "missing {text}"
            );
        }
        assert_eq!(
            svg.matches(">\nEpochs\n</text>").count(),
            1,
            "epochs labelled once"
        );
    }

    #[test]
    fn mismatched_series_is_an_error_naming_it() {
        let _rng = crate::rng_lock();
        let err = LineChart::new("t")
            .line("s1", &[1.0, 2.0], &[1.0])
            .to_svg()
            .unwrap_err();
        assert!(err.to_string().contains("s1") && err.to_string().contains("2 x values"));
    }

    #[test]
    fn save_writes_the_file() {
        let _rng = crate::rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("out/plot.svg");
        LineChart::new("t")
            .line("a", &[0.0, 1.0], &[0.0, 1.0])
            .save(&p)
            .unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().contains("<svg"));
    }

    #[test]
    fn heatmap_labels_values_and_shape_errors() {
        let _rng = crate::rng_lock();
        let svg = Heatmap::new("w", &[vec![0.5, 0.25], vec![f64::NEG_INFINITY, 1.0]])
            .row_labels(&["q1", "q2"])
            .col_labels(&["k1", "k2"])
            .to_svg()
            .unwrap();
        for text in ["q1", "k2", "0.25", "-inf"] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "missing {text}"
            );
        }
        let err = Heatmap::new("bad", &[vec![1.0], vec![1.0, 2.0]])
            .to_svg()
            .unwrap_err();
        assert!(err.to_string().contains("row 1 has 2 values"), "{err}");
    }

    #[test]
    fn ticks() {
        let _rng = crate::rng_lock();
        assert_eq!(format_tick(1200.0), "1.2k");
        assert_eq!(format_tick(3_000_000.0), "3M");
        assert_eq!(format_tick(0.5), "0.5");
        assert_eq!(format_tick(10.0), "10");
        assert_eq!(format_tick(0.88), "0.88");
        assert_eq!(format_tick(-0.0001), "0");
    }
}
