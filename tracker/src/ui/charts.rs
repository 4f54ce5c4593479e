//! Charts of the web UI, drawn on the server with plotters as SVG: metric curves (by step or time,
//! linear or log scale, smoothed), scatter plots and parallel coordinates.
//!
//! Long histories are downsampled with LTTB (largest triangle three buckets) to at most
//! [`MAX_POINTS_PER_SERIES`] points before drawing, so a million-point metric draws as fast as a
//! thousand-point one and still shows its peaks. Text uses a font list with Hangul coverage
//! first, so Korean metric and run names render in the browser.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontFamily;

/// Points drawn per series after downsampling: about two per horizontal pixel.
pub const MAX_POINTS_PER_SERIES: usize = 1600;

/// Fonts in the order the browser tries them: Hangul-capable ones first.
const FONT: &str = "Noto Sans CJK KR, Noto Sans KR, NanumGothic, Apple SD Gothic Neo, Malgun Gothic, sans-serif";

/// Colours of series, in order (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// The colour of the `i`-th series, as CSS.
pub fn css_color(i: usize) -> String {
    let RGBColor(r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02x}{g:02x}{b:02x}")
}

/// One named line.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    /// Log10 y axis; values at or below zero are left out.
    pub log_y: bool,
    /// Exponential smoothing weight in [0, 1) (TensorBoard's slider); 0 draws the raw values.
    pub smoothing: f64,
    pub series: Vec<Series>,
}

/// Downsamples `points` (sorted by x) to at most `threshold` points with LTTB, keeping the first
/// and last point and, in each bucket, the point that spans the largest triangle with its
/// neighbours: spikes survive, flat stretches thin out.
pub fn lttb(points: &[(f64, f64)], threshold: usize) -> Vec<(f64, f64)> {
    if threshold >= points.len() || threshold < 3 {
        return points.to_vec();
    }
    let mut out = Vec::with_capacity(threshold);
    let bucket = (points.len() - 2) as f64 / (threshold - 2) as f64;
    let mut a = 0;
    out.push(points[0]);
    for i in 0..threshold - 2 {
        let start = (i as f64 * bucket) as usize + 1;
        let end = (((i + 1) as f64 * bucket) as usize + 1).min(points.len() - 1);
        // The average of the next bucket is the third corner.
        let next_start = end;
        let next_end = (((i + 2) as f64 * bucket) as usize + 1).min(points.len());
        let next = &points[next_start..next_end.max(next_start + 1)];
        let (avg_x, avg_y) = next.iter().fold((0.0, 0.0), |(sx, sy), p| (sx + p.0, sy + p.1));
        let (avg_x, avg_y) = (avg_x / next.len() as f64, avg_y / next.len() as f64);
        let (ax, ay) = points[a];
        let mut best = start;
        let mut best_area = -1.0;
        for (j, &(x, y)) in points.iter().enumerate().take(end.max(start + 1)).skip(start) {
            let area = ((ax - avg_x) * (y - ay) - (ax - x) * (avg_y - ay)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        out.push(points[best]);
        a = best;
    }
    out.push(points[points.len() - 1]);
    out
}

/// Debiased exponential moving average, as TensorBoard smooths scalars.
pub fn smooth(points: &[(f64, f64)], weight: f64) -> Vec<(f64, f64)> {
    if weight <= 0.0 {
        return points.to_vec();
    }
    let mut last = 0.0;
    let mut debias = 1.0;
    points
        .iter()
        .map(|&(x, y)| {
            last = last * weight + (1.0 - weight) * y;
            debias *= weight;
            (x, last / (1.0 - debias))
        })
        .collect()
}

/// `(min, max)` of the values, widened when they are all equal so the axis has a span.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if !lo.is_finite() || !hi.is_finite() {
        return None;
    }
    if hi - lo < 1e-12 {
        let pad = if lo.abs() > 1e-12 { lo.abs() * 0.05 } else { 1.0 };
        return Some((lo - pad, hi + pad));
    }
    let pad = (hi - lo) * 0.04;
    Some((lo - pad, hi + pad))
}

/// An SVG with only a message, for charts with nothing to draw.
pub fn empty_svg(width: u32, height: u32, message: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" role=\"img\"><rect width=\"100%\" height=\"100%\" fill=\"white\"/>\
         <text x=\"50%\" y=\"50%\" text-anchor=\"middle\" font-family=\"{FONT}\" font-size=\"14\" fill=\"#666\">{}</text></svg>",
        escape(message)
    )
}

/// Draws on a white SVG canvas; a drawing that fails becomes an SVG that says so.
fn draw_svg(width: u32, height: u32, draw: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), Box<dyn std::error::Error>>) -> String {
    let mut svg = String::new();
    let failed = {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        let drawn = root
            .fill(&WHITE)
            .map_err(Into::into)
            .and_then(|()| draw(&root))
            .and_then(|()| root.present().map_err(Into::into));
        drawn.err().map(|e| e.to_string())
    };
    match failed {
        Some(e) => empty_svg(width, height, &format!("cannot draw this chart: {e}")),
        None => svg,
    }
}

/// Escapes text for SVG and HTML.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

impl LineChart {
    /// Draws the chart as an SVG document of `width` x `height` pixels.
    pub fn svg(&self, width: u32, height: u32) -> String {
        let prepared: Vec<(String, Vec<(f64, f64)>)> = self
            .series
            .iter()
            .map(|s| {
                let mut pts: Vec<(f64, f64)> = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect();
                pts.sort_by(|a, b| a.0.total_cmp(&b.0));
                let pts = smooth(&pts, self.smoothing);
                let pts: Vec<(f64, f64)> = if self.log_y {
                    pts.into_iter().filter(|p| p.1 > 0.0).map(|(x, y)| (x, y.log10())).collect()
                } else {
                    pts
                };
                (s.name.clone(), lttb(&pts, MAX_POINTS_PER_SERIES))
            })
            .collect();
        let all = || prepared.iter().flat_map(|(_, p)| p.iter());
        let (Some(xs), Some(ys)) = (span(all().map(|p| p.0)), span(all().map(|p| p.1))) else {
            let why = if self.log_y {
                "no positive finite values to draw on a log scale"
            } else {
                "no finite values to draw"
            };
            return empty_svg(width, height, why);
        };
        let log_y = self.log_y;
        draw_svg(width, height, |root| {
            let mut chart = ChartBuilder::on(root)
                .caption(&self.title, (FontFamily::Name(FONT), 16))
                .margin(10)
                .x_label_area_size(36)
                .y_label_area_size(64)
                .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
            chart
                .configure_mesh()
                .x_desc(self.x_label.as_str())
                .y_desc(self.y_label.as_str())
                .label_style((FontFamily::Name(FONT), 12))
                .axis_desc_style((FontFamily::Name(FONT), 13))
                .y_label_formatter(&|v| if log_y { format!("{:.3}", 10f64.powf(*v)) } else { short(*v) })
                .x_label_formatter(&|v| short(*v))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()?;
            for (i, (name, points)) in prepared.iter().enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                chart
                    .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?
                    .label(name.as_str())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            }
            if prepared.len() > 1 {
                chart
                    .configure_series_labels()
                    .label_font((FontFamily::Name(FONT), 12))
                    .background_style(WHITE.mix(0.85))
                    .border_style(RGBColor(200, 200, 200))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()?;
            }
            Ok(())
        })
    }
}

/// A number in few characters: 12000 → 1.2e4, 0.00012 → 1.2e-4.
fn short(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}").trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// A scatter of `(x, y, label)` points: a param against the objective, one point per run.
pub fn scatter_svg(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, String)], width: u32, height: u32) -> String {
    let finite: Vec<&(f64, f64, String)> = points.iter().filter(|p| p.0.is_finite() && p.1.is_finite()).collect();
    let (Some(xs), Some(ys)) = (span(finite.iter().map(|p| p.0)), span(finite.iter().map(|p| p.1))) else {
        return empty_svg(width, height, "no runs with both values");
    };
    draw_svg(width, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FontFamily::Name(FONT), 15))
            .margin(10)
            .x_label_area_size(36)
            .y_label_area_size(64)
            .build_cartesian_2d(xs.0..xs.1, ys.0..ys.1)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FontFamily::Name(FONT), 12))
            .x_label_formatter(&|v| short(*v))
            .y_label_formatter(&|v| short(*v))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()?;
        chart.draw_series(
            finite
                .iter()
                .enumerate()
                .map(|(i, p)| Circle::new((p.0, p.1), 5, PALETTE[i % PALETTE.len()].filled())),
        )?;
        Ok(())
    })
}

/// Parallel coordinates: one vertical axis per name, one polyline per run through its values
/// scaled to each axis's range (a missing value breaks the line there).
pub fn parallel_svg(axes: &[String], runs: &[(String, Vec<Option<f64>>)], width: u32, height: u32) -> String {
    if axes.len() < 2 || runs.is_empty() {
        return empty_svg(width, height, "parallel coordinates need two numeric columns and a run");
    }
    let ranges: Vec<Option<(f64, f64)>> = (0..axes.len())
        .map(|a| span(runs.iter().filter_map(|r| r.1.get(a).copied().flatten()).filter(|v| v.is_finite())))
        .collect();
    draw_svg(width, height, |root| {
        let n = axes.len() as f64;
        let mut chart = ChartBuilder::on(root)
            .margin(30)
            .margin_left(50)
            .margin_right(50)
            .build_cartesian_2d(-0.05..(n - 1.0 + 0.05), -0.08..1.08)?;
        for (a, name) in axes.iter().enumerate() {
            let x = a as f64;
            chart.draw_series(std::iter::once(PathElement::new(vec![(x, 0.0), (x, 1.0)], BLACK.stroke_width(1))))?;
            let label_style = TextStyle::from((FontFamily::Name(FONT), 12)).pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Bottom,
            ));
            chart.draw_series(std::iter::once(Text::new(name.clone(), (x, 1.07), label_style.clone())))?;
            if let Some((lo, hi)) = ranges[a] {
                chart.draw_series(std::iter::once(Text::new(short(hi), (x, 1.02), label_style.clone())))?;
                chart.draw_series(std::iter::once(Text::new(short(lo), (x, -0.06), label_style)))?;
            }
        }
        for (i, (_, values)) in runs.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let mut segment = Vec::new();
            for (a, v) in values.iter().enumerate() {
                match (v, ranges[a]) {
                    (Some(v), Some((lo, hi))) if v.is_finite() => segment.push((a as f64, (v - lo) / (hi - lo))),
                    _ => {
                        if segment.len() > 1 {
                            chart.draw_series(std::iter::once(PathElement::new(std::mem::take(&mut segment), color.stroke_width(2))))?;
                        }
                        segment.clear();
                    }
                }
            }
            if segment.len() > 1 {
                chart.draw_series(std::iter::once(PathElement::new(segment, color.stroke_width(2))))?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lttb_keeps_ends_and_spikes_and_the_count() {
        let mut points: Vec<(f64, f64)> = (0..100_000).map(|i| (i as f64, (i as f64 / 1000.0).sin())).collect();
        points[54_321].1 = 50.0;
        let down = lttb(&points, 500);
        assert_eq!(down.len(), 500);
        assert_eq!((down[0], down[499]), (points[0], points[99_999]));
        assert!(down.contains(&(54_321.0, 50.0)), "the spike survives");
        assert!(down.windows(2).all(|w| w[0].0 < w[1].0), "x stays sorted");
        assert_eq!(lttb(&points[..10], 500).len(), 10, "short series are kept whole");
    }

    #[test]
    fn smoothing_is_debiased() {
        let s = smooth(&[(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)], 0.9);
        assert!(s.iter().all(|p| (p.1 - 1.0).abs() < 1e-12), "{s:?}");
        assert_eq!(smooth(&[(0.0, 3.0)], 0.0), vec![(0.0, 3.0)]);
    }

    #[test]
    fn charts_draw_korean_labels_and_survive_odd_values() {
        let chart = LineChart {
            title: "평가 손실".into(),
            x_label: "step".into(),
            y_label: "eval_loss".into(),
            log_y: true,
            smoothing: 0.5,
            series: vec![Series {
                name: "실행 1".into(),
                points: vec![(1.0, 2.0), (2.0, f64::NAN), (3.0, 0.5), (4.0, -1.0)],
            }],
        };
        let svg = chart.svg(640, 360);
        assert!(
            svg.starts_with("<svg") && svg.contains("평가 손실") && svg.contains("Noto Sans CJK KR"),
            "{svg}"
        );
        let empty = LineChart {
            series: vec![Series {
                name: "x".into(),
                points: vec![(1.0, -2.0)],
            }],
            ..chart
        };
        assert!(empty.svg(640, 360).contains("no positive finite values"));
        assert!(scatter_svg("t", "lr", "loss", &[], 300, 200).contains("no runs"));
        let par = parallel_svg(
            &["lr".into(), "rank".into(), "손실".into()],
            &[("a".into(), vec![Some(0.1), Some(4.0), None])],
            600,
            300,
        );
        assert!(par.contains("손실"), "{par}");
    }
}
