//! Line charts as SVG: one or more panels, two to a row, a line per series
//! with a marker at every point (a series measured at a single scale is then
//! still visible), services on a logarithmic x axis since the scales measured
//! span orders of magnitude.
//!
//! Text is written as SVG `<text>` and laid out with plotters' own size
//! estimate (no font feature enabled): nothing is read from the system's fonts.

use std::ops::Range;

use anyhow::Context as _;
use plotters::{
    coord::{Shift, ranged1d::AsRangedCoord, ranged1d::ValueFormatter},
    prelude::*,
};

/// One line: its legend and its (x, y) points.
#[derive(Clone, Debug)]
pub(super) struct Series {
    pub(super) name: String,
    pub(super) points: Vec<(f64, f64)>,
}

/// One set of axes.
#[derive(Clone, Debug)]
pub(super) struct Panel {
    pub(super) title: String,
    pub(super) series: Vec<Series>,
}

/// How the y axis is scaled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum YScale {
    /// From 0: rates, where the distance to zero means something.
    Linear,
    /// Figures that differ by orders of magnitude between series.
    Log,
}

/// A figure of one or more panels sharing their axis labels.
#[derive(Clone, Debug)]
pub(super) struct Chart {
    pub(super) x_label: String,
    pub(super) y_label: String,
    pub(super) y_scale: YScale,
    pub(super) panels: Vec<Panel>,
}

/// Distinguishable colours, assigned by series name across the panels of a
/// chart, so that a mode keeps its colour from one panel to the next.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

const PANEL_SIZE: (u32, u32) = (640, 440);
/// Panels per row: wider figures get scaled down past legibility.
const COLUMNS: usize = 2;

impl Chart {
    /// The chart with its empty series and panels left out, or `None` if no
    /// point is left: no plot is better than empty axes.
    pub(super) fn non_empty(mut self) -> Option<Self> {
        for panel in &mut self.panels {
            panel.series.retain(|s| !s.points.is_empty());
        }
        self.panels.retain(|p| !p.series.is_empty());
        (!self.panels.is_empty()).then_some(self)
    }

    /// The chart as an SVG document.
    pub(super) fn svg(&self) -> anyhow::Result<String> {
        let mut names: Vec<&str> = Vec::new();
        for series in self.panels.iter().flat_map(|p| &p.series) {
            if !names.contains(&series.name.as_str()) {
                names.push(&series.name);
            }
        }
        let colour = |name: &str| {
            let i = names.iter().position(|n| *n == name).unwrap_or_default();
            COLOURS[i % COLOURS.len()]
        };
        let columns = self.panels.len().min(COLUMNS);
        let rows = self.panels.len().div_ceil(COLUMNS);
        let size = (
            PANEL_SIZE.0 * u32::try_from(columns).context("panels")?,
            PANEL_SIZE.1 * u32::try_from(rows).context("panels")?,
        );
        let mut text = String::new();
        {
            let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
            root.fill(&WHITE)?;
            let areas = root.split_evenly((rows, columns));
            for (area, panel) in areas.iter().zip(&self.panels) {
                let x = log_range(
                    panel.series.iter().flat_map(|s| &s.points).map(|p| p.0),
                    0.0,
                );
                let ys = panel.series.iter().flat_map(|s| &s.points).map(|p| p.1);
                let headroom = legend_share(panel.series.len());
                match self.y_scale {
                    YScale::Linear => {
                        let top = ys.fold(0.0, f64::max);
                        let top = if top > 0.0 {
                            top * 1.05 / (1.0 - headroom)
                        } else {
                            1.0
                        };
                        self.draw_panel(area, panel, x, 0.0..top, &colour)?;
                    }
                    YScale::Log => {
                        self.draw_panel(area, panel, x, log_range(ys, headroom), &colour)?;
                    }
                }
            }
            root.present()?;
        }
        Ok(text)
    }

    fn draw_panel<Y>(
        &self,
        area: &DrawingArea<SVGBackend<'_>, Shift>,
        panel: &Panel,
        x: LogCoord<f64>,
        y: Y,
        colour: &dyn Fn(&str) -> RGBColor,
    ) -> anyhow::Result<()>
    where
        Y: AsRangedCoord<Value = f64>,
        Y::CoordDescType: ValueFormatter<f64>,
    {
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)?;
        chart
            .configure_mesh()
            // A log axis's light lines crowd into grey bands below each decade.
            .light_line_style(TRANSPARENT)
            .x_labels(6)
            .y_labels(8)
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| short(*v))
            .draw()?;
        for series in &panel.series {
            let c = colour(&series.name);
            chart
                .draw_series(
                    LineSeries::new(series.points.iter().copied(), c.stroke_width(2)).point_size(4),
                )?
                .label(series.name.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    }
}

/// The share of a panel's height its legend takes (the top of the y range is
/// left free for it, so that it hides no point).
fn legend_share(series: usize) -> f64 {
    const PLOT_HEIGHT: f64 = 330.0;
    const ENTRY: f64 = 16.0;
    ((series as f64 * ENTRY + 24.0) / PLOT_HEIGHT).min(0.6)
}

/// A log range around positive `values`, padded so that points do not sit on
/// the frame (and a single value still gets a range), the top `headroom`
/// share of it left free.
fn log_range(values: impl Iterator<Item = f64>, headroom: f64) -> LogCoord<f64> {
    let (lo, hi) = values
        .filter(|v| *v > 0.0)
        .fold((f64::INFINITY, 0.0_f64), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let range: Range<f64> = if hi > 0.0 {
        let (lo, hi) = (lo / 1.5, hi * 1.5);
        lo..lo * (hi / lo).powf(1.0 / (1.0 - headroom))
    } else {
        0.1..10.0
    };
    range.log_scale().into()
}

/// A tick label without needless decimals.
fn short(v: f64) -> String {
    let text = if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    };
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        text
    }
}
