//! The report's charts: numbers in, one SVG document out, drawn by `plotters` with its SVG
//! backend. Three shapes cover the page: horizontal bars (one series, a label on each bar),
//! grouped vertical bars (several series per category) and lines over days. Invariant: every
//! chart has labelled axes, a legend and a data label on each bar or a marker on each point, and
//! its `<svg>` scales to the width of its container (a `viewBox`, width 100%, no fixed height).

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Why a chart could not be drawn.
#[derive(Debug, thiserror::Error)]
pub enum ChartError {
    #[error("cannot draw the chart {title:?}: {reason}")]
    Draw { title: String, reason: String },
}

/// The colours of the first, second and third series.
pub const PALETTE: [RGBColor; 3] = [
    RGBColor(37, 99, 235),
    RGBColor(234, 88, 12),
    RGBColor(22, 163, 74),
];

/// A series: its name in the legend and one value per category (or per day).
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

/// What every chart states: the accessible title and the two axis descriptions (with units).
pub struct Axes<'a> {
    pub title: &'a str,
    pub x: &'a str,
    pub y: &'a str,
}

const FONT: &str = "sans-serif";
/// The colour of the grid lines.
const GRID: RGBColor = RGBColor(229, 231, 235);
const WIDTH: u32 = 720;

/// A number as an axis tick: 1 200 -> "1.2k", 2 500 000 -> "2.5M".
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{}M", trim(v / 1e6))
    } else if a >= 1e3 {
        format!("{}k", trim(v / 1e3))
    } else {
        trim(v)
    }
}

/// A number with at most one decimal, without a trailing ".0".
fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_string).unwrap_or(s)
}

/// The top of a value axis: a little above the largest value, never zero.
fn top(max: f64) -> f64 {
    if max > 0.0 { max * 1.18 } else { 1.0 }
}

/// Draws with `draw` on an SVG of `height` pixels and returns the document, made responsive.
fn svg(
    axes: &Axes,
    height: u32,
    draw: impl FnOnce(&DrawingArea<SVGBackend, Shift>) -> Result<(), String>,
) -> Result<String, ChartError> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| e.to_string())
            .and_then(|_| draw(&root))
            .and_then(|_| root.present().map_err(|e| e.to_string()))
            .map_err(|reason| ChartError::Draw {
                title: axes.title.to_string(),
                reason,
            })?;
    }
    let fixed = format!("width=\"{WIDTH}\" height=\"{height}\"");
    let title = attribute_escape(axes.title);
    let responsive = format!("width=\"100%\" role=\"img\" aria-label=\"{title}\"");
    Ok(out.replacen(&fixed, &responsive, 1))
}

/// Escapes text for an XML attribute.
fn attribute_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Horizontal bars, one per category, each labelled with `labels[i]` (a count, a share).
pub fn hbars(
    axes: &Axes,
    categories: &[String],
    series: &Series,
    labels: &[String],
) -> Result<String, ChartError> {
    let n = categories.len();
    let max = series.values.iter().copied().fold(0.0, f64::max);
    // One band per category from the top, and an empty one at the bottom for the legend.
    let height = 150 + 48 * (n + 1) as u32;
    svg(axes, height, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(250)
            .build_cartesian_2d(0.0..top(max) * 1.35, -1.0..n as f64)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels((n + 1) * 2 + 1)
            .y_label_formatter(&|y| label_at(categories, n as f64 - y - 0.5))
            .x_label_formatter(&|x| short(*x))
            .x_desc(axes.x)
            .y_desc(axes.y)
            .label_style((FONT, 24))
            .axis_desc_style((FONT, 24))
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .draw()
            .map_err(|e| e.to_string())?;
        let colour = PALETTE[0];
        let row = |i: usize| n as f64 - i as f64;
        chart
            .draw_series(series.values.iter().enumerate().map(|(i, v)| {
                Rectangle::new([(0.0, row(i) - 0.8), (*v, row(i) - 0.2)], colour.filled())
            }))
            .map_err(|e| e.to_string())?
            .label(series.name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled()));
        chart
            .draw_series(
                series
                    .values
                    .iter()
                    .zip(labels)
                    .enumerate()
                    .map(|(i, (v, l))| {
                        Text::new(
                            l.clone(),
                            (*v, row(i) - 0.5),
                            (FONT, 22)
                                .into_font()
                                .color(&BLACK)
                                .pos(Pos::new(HPos::Left, VPos::Center)),
                        )
                    }),
            )
            .map_err(|e| e.to_string())?;
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    })
}

/// The category whose band holds `at` (bands are one unit wide, from 0), or nothing between.
fn label_at(categories: &[String], at: f64) -> String {
    if at < 0.0 || (at - at.round()).abs() > 0.01 {
        return String::new();
    }
    categories
        .get(at.round() as usize)
        .cloned()
        .unwrap_or_default()
}

/// Vertical bars: for each category one bar per series side by side, each with its value.
pub fn grouped_bars(
    axes: &Axes,
    categories: &[String],
    series: &[Series],
    format: &dyn Fn(f64) -> String,
) -> Result<String, ChartError> {
    let n = categories.len();
    let k = series.len().max(1);
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    svg(axes, 440, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(96)
            .build_cartesian_2d(0.0..n as f64, 0.0..top(max) * 1.25)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n * 2 + 1)
            .x_label_formatter(&|x| label_at(categories, x - 0.5))
            .y_label_formatter(&|y| short(*y))
            .x_desc(axes.x)
            .y_desc(axes.y)
            .label_style((FONT, 24))
            .axis_desc_style((FONT, 24))
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .draw()
            .map_err(|e| e.to_string())?;
        let width = 0.8 / k as f64;
        for (j, s) in series.iter().enumerate() {
            let colour = PALETTE[j % PALETTE.len()];
            let left = |i: usize| i as f64 + 0.1 + j as f64 * width;
            chart
                .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                    Rectangle::new(
                        [(left(i), 0.0), (left(i) + width * 0.92, *v)],
                        colour.filled(),
                    )
                }))
                .map_err(|e| e.to_string())?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 14, y + 5)], colour.filled())
                });
            chart
                .draw_series(s.values.iter().enumerate().map(|(i, v)| {
                    Text::new(
                        format(*v),
                        (left(i) + width * 0.46, *v),
                        (FONT, 21)
                            .into_font()
                            .color(&BLACK)
                            .pos(Pos::new(HPos::Center, VPos::Bottom)),
                    )
                }))
                .map_err(|e| e.to_string())?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// Lines over days: `days` names the x positions (YYYY-MM-DD), each series gives a value per
/// day; each point carries a marker, so a single day still shows.
pub fn lines(axes: &Axes, days: &[String], series: &[Series]) -> Result<String, ChartError> {
    let n = days.len();
    let max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    svg(axes, 440, |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(70)
            .y_label_area_size(96)
            .build_cartesian_2d(-0.5..(n as f64 - 0.5).max(0.5), 0.0..top(max) * 1.25)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_labels(n.min(8))
            .x_label_formatter(&|x| {
                let day = label_at(days, *x);
                day.get(5..).map(str::to_string).unwrap_or(day)
            })
            .y_label_formatter(&|y| short(*y))
            .x_desc(axes.x)
            .y_desc(axes.y)
            .label_style((FONT, 24))
            .axis_desc_style((FONT, 24))
            .light_line_style(TRANSPARENT)
            .bold_line_style(GRID)
            .draw()
            .map_err(|e| e.to_string())?;
        for (j, s) in series.iter().enumerate() {
            let colour = PALETTE[j % PALETTE.len()];
            let points: Vec<(f64, f64)> = s
                .values
                .iter()
                .enumerate()
                .map(|(i, v)| (i as f64, *v))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], colour.stroke_width(3))
                });
            chart
                .draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 2, colour.filled())),
                )
                .map_err(|e| e.to_string())?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperRight)
    })
}

/// The legend at `position`, over a translucent white box.
fn legend<'a, 'b: 'a>(
    chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    position: SeriesLabelPosition,
) -> Result<(), String> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .label_font((FONT, 22))
        .draw()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axes() -> Axes<'static> {
        Axes {
            title: "How many & which",
            x: "day",
            y: "contacts",
        }
    }

    fn series(name: &str, values: &[f64]) -> Series {
        Series {
            name: name.into(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn short_numbers_keep_one_decimal() {
        let check = |v: f64, expected: &str| assert_eq!(short(v), expected, "{v}");
        check(0.0, "0");
        check(12.5, "12.5");
        check(1200.0, "1.2k");
        check(563_500.0, "563.5k");
        check(2_500_000.0, "2.5M");
    }

    #[test]
    fn a_chart_scales_to_its_container_and_names_itself() {
        let svg = hbars(
            &axes(),
            &["a".into(), "b".into()],
            &series("leads", &[3.0, 1.0]),
            &["3".into(), "1".into()],
        )
        .unwrap();
        assert!(
            svg.starts_with("<svg width=\"100%\" role=\"img\" aria-label=\"How many &amp; which\" viewBox=\"0 0 720 "),
            "{}",
            &svg[..200]
        );
        assert!(
            !svg.contains("height=\"13"),
            "no fixed height is left on the svg"
        );
    }

    #[test]
    fn bars_carry_their_labels_axes_and_legend() {
        let svg = grouped_bars(
            &axes(),
            &["google".into(), "meta".into()],
            &[
                series("first touch", &[7.0, 2.0]),
                series("last touch", &[5.0, 4.0]),
            ],
            &|v| format!("{v}"),
        )
        .unwrap();
        for text in [
            "google",
            "meta",
            "first touch",
            "last touch",
            "day",
            "contacts",
        ] {
            assert!(
                svg.contains(&format!(">\n{text}\n</text>")),
                "{text} missing"
            );
        }
        for label in ["7", "2", "5", "4"] {
            assert!(
                svg.contains(&format!(">\n{label}\n</text>")),
                "data label {label} missing"
            );
        }
        // Four bars, two legend swatches, the background.
        let filled = svg.matches("<rect").count();
        assert!(filled >= 7, "{filled} rectangles");
    }

    #[test]
    fn lines_mark_every_point_even_a_single_day() {
        let svg = lines(
            &axes(),
            &["2026-03-01".into()],
            &[series("new leads", &[4.0]), series("calls booked", &[1.0])],
        )
        .unwrap();
        assert_eq!(svg.matches("<circle").count(), 2, "one marker per point");
        assert!(
            svg.contains(">\n03-01\n</text>"),
            "days are labelled month-day"
        );
        assert!(svg.contains(">\nnew leads\n</text>") && svg.contains(">\ncalls booked\n</text>"));
    }

    #[test]
    fn labels_fall_on_band_centres_only() {
        let c = ["x".to_string(), "y".to_string()];
        assert_eq!(label_at(&c, 0.0), "x");
        assert_eq!(label_at(&c, 1.0), "y");
        assert_eq!(label_at(&c, 0.5), "");
        assert_eq!(label_at(&c, 2.0), "");
        assert_eq!(label_at(&c, -1.0), "");
    }
}
