//! Line charts as inline SVG, drawn by the `plotters` crate's SVG backend, so the report
//! needs no JavaScript and opens offline.
//!
//! Conventions shared by every chart: colour names the quantity (p50, sent, lost, ...)
//! and the dash pattern names the run (the first run solid, the second dashed, the third
//! dotted), except in the percentile-distribution chart, where colour names the run and
//! the dash tells raw from corrected latency.

use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;

/// A chart could not be drawn.
#[derive(Debug, thiserror::Error)]
#[error("drawing the chart `{chart}`: {reason}")]
pub struct ChartError {
    /// The chart's title.
    pub chart: String,
    /// What plotters reported.
    pub reason: String,
}

/// Chart size in pixels (the page scales it down on narrow screens).
const SIZE: (u32, u32) = (1000, 380);

/// Colours of quantities, in the order series ask for them.
pub(crate) const BLUE_: RGBColor = RGBColor(31, 119, 180);
pub(crate) const GREEN_: RGBColor = RGBColor(44, 160, 44);
pub(crate) const ORANGE_: RGBColor = RGBColor(255, 127, 14);
pub(crate) const RED_: RGBColor = RGBColor(214, 39, 40);
pub(crate) const PURPLE_: RGBColor = RGBColor(148, 103, 189);
pub(crate) const BROWN_: RGBColor = RGBColor(140, 86, 75);

/// Colours of runs in the distribution chart.
pub(crate) const RUN_COLOURS: [RGBColor; 6] = [BLUE_, RED_, GREEN_, PURPLE_, ORANGE_, BROWN_];

/// One line of a chart.
pub(crate) struct Line {
    /// Legend text.
    pub(crate) label: String,
    /// Colour.
    pub(crate) colour: RGBColor,
    /// Dash pattern: 0 solid, 1 dashed, 2 dotted, then again.
    pub(crate) dash: usize,
    /// Points (x, y); for log axes, points not above zero are left out.
    pub(crate) points: Vec<(f64, f64)>,
}

/// How the x axis reads.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum XAxis {
    /// Seconds since the run's first second, linear.
    Seconds,
    /// Percentile as 1/(1-p), log scale, labelled in percent.
    Percentile,
}

/// A chart to draw.
pub(crate) struct Chart {
    /// Caption.
    pub(crate) title: String,
    /// X axis.
    pub(crate) x: XAxis,
    /// Y axis description.
    pub(crate) y_desc: String,
    /// Whether the y axis is logarithmic.
    pub(crate) y_log: bool,
    /// The lines.
    pub(crate) lines: Vec<Line>,
}

impl Chart {
    /// The chart as an SVG element.
    pub(crate) fn svg(&self) -> Result<String, ChartError> {
        let fail = |e: &dyn std::fmt::Display| ChartError {
            chart: self.title.clone(),
            reason: e.to_string(),
        };
        let points = || self.lines.iter().flat_map(|l| l.points.iter());
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let (mut x_lo, mut x_hi) = (f64::MAX, f64::MIN);
        let (mut y_lo, mut y_hi) = (f64::MAX, f64::MIN);
        for &(x, y) in points() {
            if self.x == XAxis::Percentile && !positive(x) || self.y_log && !positive(y) {
                continue;
            }
            x_lo = x_lo.min(x);
            x_hi = x_hi.max(x);
            y_lo = y_lo.min(y);
            y_hi = y_hi.max(y);
        }
        if x_lo > x_hi {
            (x_lo, x_hi, y_lo, y_hi) = (1.0, 10.0, 1.0, 10.0);
        }
        let mut out = String::new();
        match (self.x, self.y_log) {
            (XAxis::Seconds, false) => {
                let y_hi = if y_hi <= 0.0 { 1.0 } else { y_hi * 1.1 };
                self.draw(&mut out, x_lo..x_hi.max(x_lo + 1.0), 0.0..y_hi)
            }
            (XAxis::Seconds, true) => self.draw(
                &mut out,
                x_lo..x_hi.max(x_lo + 1.0),
                (y_lo * 0.8..y_hi * 1.25).log_scale(),
            ),
            (XAxis::Percentile, y_log) => {
                let decades = x_hi.log10().ceil().max(1.0);
                let x = (1.0..10f64.powf(decades)).log_scale();
                if y_log {
                    self.draw(&mut out, x, (y_lo * 0.8..y_hi * 1.25).log_scale())
                } else {
                    self.draw(&mut out, x, 0.0..(y_hi * 1.1).max(0.001))
                }
            }
        }
        .map_err(|e| fail(&e))?;
        Ok(out)
    }

    fn draw<X, Y>(
        &self,
        out: &mut String,
        x: X,
        y: Y,
    ) -> Result<(), DrawingAreaErrorKind<std::io::Error>>
    where
        X: AsRangedCoord<Value = f64>,
        Y: AsRangedCoord<Value = f64>,
        X::CoordDescType: ValueFormatter<f64> + Ranged<ValueType = f64>,
        Y::CoordDescType: ValueFormatter<f64> + Ranged<ValueType = f64>,
    {
        let root = SVGBackend::with_string(out, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(&self.title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(x, y)?;
        let x_desc = match self.x {
            XAxis::Seconds => "seconds since the run's first second",
            XAxis::Percentile => "percentile",
        };
        let x_format = |v: &f64| match self.x {
            XAxis::Seconds => short_number(*v),
            XAxis::Percentile => percentile_label(*v),
        };
        let y_format = |v: &f64| short_number(*v);
        let x_labels = match self.x {
            // Whole seconds only: as many labels as seconds, up to 12.
            XAxis::Seconds => {
                let span = chart.x_range();
                ((span.end - span.start).round() as usize + 1).clamp(2, 12)
            }
            XAxis::Percentile => 10,
        };
        chart
            .configure_mesh()
            .x_labels(x_labels)
            .x_desc(x_desc)
            .y_desc(self.y_desc.as_str())
            .x_label_formatter(&x_format)
            .y_label_formatter(&y_format)
            .label_style(("sans-serif", 13))
            .draw()?;
        let y_log = self.y_log;
        let x_log = self.x == XAxis::Percentile;
        for line in &self.lines {
            let points: Vec<(f64, f64)> = line
                .points
                .iter()
                .copied()
                .filter(|&(x, y)| {
                    (!x_log || x > 0.0) && (!y_log || y > 0.0) && x.is_finite() && y.is_finite()
                })
                .collect();
            let style = line.colour.stroke_width(2);
            let colour = line.colour;
            let dash = line.dash % 3;
            let segments: [(i32, i32); 3] = match dash {
                0 => [(0, 8), (8, 16), (16, 24)],
                1 => [(0, 6), (9, 15), (18, 24)],
                _ => [(0, 3), (10, 13), (20, 23)],
            };
            let legend = move |(x, y): (i32, i32)| {
                let seg = |(a, b): (i32, i32)| {
                    PathElement::new(vec![(a, 0), (b, 0)], colour.stroke_width(2))
                };
                EmptyElement::at((x, y)) + seg(segments[0]) + seg(segments[1]) + seg(segments[2])
            };
            let anno = match dash {
                0 => chart.draw_series(LineSeries::new(points, style))?,
                1 => chart.draw_series(DashedLineSeries::new(points, 7, 4, style))?,
                _ => chart.draw_series(DashedLineSeries::new(points, 2, 3, style))?,
            };
            anno.label(line.label.clone()).legend(legend);
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .label_font(("sans-serif", 13))
            .draw()?;
        root.present()?;
        Ok(())
    }
}

/// `1/(1-p)` as a percentile label: 1 → "0%", 10 → "90%", 1000 → "99.9%".
pub(crate) fn percentile_label(x: f64) -> String {
    if x <= 1.0 {
        return "0%".into();
    }
    let p = 100.0 * (1.0 - 1.0 / x);
    let mut text = format!("{p:.6}");
    while text.ends_with('0') {
        text.pop();
    }
    if text.ends_with('.') {
        text.pop();
    }
    format!("{text}%")
}

/// A compact axis label: 1500 → "1500", 0.25 → "0.25", 2e-4 → "0.0002".
pub(crate) fn short_number(v: f64) -> String {
    let mut text = if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.4}")
    };
    if text.contains('.') {
        while text.ends_with('0') {
            text.pop();
        }
        if text.ends_with('.') {
            text.pop();
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_percent() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(2.0), "50%");
    }

    #[test]
    fn short_numbers_drop_trailing_zeroes() {
        assert_eq!(short_number(1500.0), "1500");
        assert_eq!(short_number(0.25), "0.25");
        assert_eq!(short_number(2.0), "2");
    }

    #[test]
    fn a_chart_renders_as_svg_with_its_legend() {
        let chart = Chart {
            title: "latency".into(),
            x: XAxis::Seconds,
            y_desc: "ms".into(),
            y_log: true,
            lines: vec![
                Line {
                    label: "p50".into(),
                    colour: BLUE_,
                    dash: 0,
                    points: vec![(0.0, 1.0), (1.0, 2.0), (2.0, 0.0)],
                },
                Line {
                    label: "p99 · b".into(),
                    colour: RED_,
                    dash: 1,
                    points: vec![(0.0, 3.0), (1.0, 4.0)],
                },
            ],
        };
        let svg = chart.svg().unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains("p99 · b"));
        assert!(svg.contains("<polyline") || svg.contains("<path"), "{svg}");
    }

    #[test]
    fn an_empty_chart_still_renders() {
        let chart = Chart {
            title: "nothing".into(),
            x: XAxis::Percentile,
            y_desc: "ms".into(),
            y_log: false,
            lines: Vec::new(),
        };
        assert!(chart.svg().unwrap().contains("nothing"));
    }
}
