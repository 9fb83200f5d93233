//! The benchmark's charts, SVGs drawn with plotters: throughput against the number of clients,
//! ours and the reference; ours against a reference as ratios, target by target. Labels use the system's DejaVu Sans (Debian's
//! fonts-dejavu-core); without it the chart is skipped with a note, the tables are not.

use std::path::Path;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One line of the chart: a name and `(clients, ops/s)` points.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: Vec<(f64, f64)>,
}

/// Draws `series` into an SVG at `path`; the x axis is the number of clients (log scale).
pub fn throughput(path: &Path, title: &str, series: &[Series]) -> Result<(), String> {
    register_dejavu()?;
    let points = series.iter().flat_map(|s| &s.points);
    let max_x = points.clone().map(|p| p.0).fold(1.0, f64::max);
    let max_y = points.map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1.0..max_x * 1.3).log_scale(), 0.0..max_y)
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("concurrent clients")
        .y_desc("requests per second")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(|e| draw(&e))?;
    let colours = [
        RGBColor(200, 60, 40),
        RGBColor(40, 90, 180),
        RGBColor(60, 150, 60),
    ];
    for (line, colour) in series.iter().zip(colours.iter().cycle()) {
        let colour = *colour;
        chart
            .draw_series(LineSeries::new(
                line.points.iter().copied(),
                colour.stroke_width(2),
            ))
            .map_err(|e| draw(&e))?
            .label(line.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        chart
            .draw_series(
                line.points
                    .iter()
                    .map(|&p| Circle::new(p, 4, colour.filled())),
            )
            .map_err(|e| draw(&e))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// One bar of a ratio chart: what is compared, and ours divided by the reference's, turned so
/// that under 1 is better (a rate is divided the other way round).
pub struct Ratio<'a> {
    pub name: &'a str,
    pub ours_over_reference: f64,
}

/// Draws `ratios` as horizontal bars into an SVG at `path`, with the reference at 1: a bar
/// left of the line is a target met, right of it a target missed.
pub fn ratios(path: &Path, title: &str, reference: &str, ratios: &[Ratio]) -> Result<(), String> {
    register_dejavu()?;
    let max_x = ratios
        .iter()
        .map(|r| r.ours_over_reference)
        .fold(2.0, f64::max)
        * 1.1;
    let rows = ratios.len() as i32;
    let root = SVGBackend::new(path, (720, 80 + 44 * rows as u32)).into_drawing_area();
    let draw = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| draw(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(250)
        .build_cartesian_2d(0.0..max_x, (0..rows).into_segmented())
        .map_err(|e| draw(&e))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc(format!(
            "ours ÷ {reference} (under 1: better than {reference})"
        ))
        .y_label_formatter(&|segment| match segment {
            SegmentValue::CenterOf(n) => ratios
                .get((rows - 1 - n) as usize)
                .map(|r| r.name.to_string())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .x_label_formatter(&|x| format!("{x:.1} ×"))
        .draw()
        .map_err(|e| draw(&e))?;
    let met = RGBColor(60, 150, 60);
    let missed = RGBColor(200, 60, 40);
    chart
        .draw_series(ratios.iter().enumerate().map(|(n, r)| {
            let row = rows - 1 - n as i32;
            let colour = if r.ours_over_reference <= 1.0 {
                met
            } else {
                missed
            };
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (r.ours_over_reference, SegmentValue::Exact(row + 1)),
                ],
                colour.filled(),
            );
            bar.set_margin(8, 8, 0, 0);
            bar
        }))
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(ratios.iter().enumerate().map(|(n, r)| {
            let row = rows - 1 - n as i32;
            Text::new(
                format!("{:.2} ×", r.ours_over_reference),
                (
                    r.ours_over_reference + max_x * 0.01,
                    SegmentValue::CenterOf(row),
                ),
                ("sans-serif", 14),
            )
        }))
        .map_err(|e| draw(&e))?;
    chart
        .draw_series(std::iter::once(PathElement::new(
            [
                (1.0, SegmentValue::Exact(0)),
                (1.0, SegmentValue::Exact(rows)),
            ],
            BLACK.stroke_width(2),
        )))
        .map_err(|e| draw(&e))?;
    root.present().map_err(|e| draw(&e))
}

/// Registers the system's DejaVu Sans as plotters' sans-serif (once is enough; again is
/// harmless).
fn register_dejavu() -> Result<(), String> {
    let bytes = std::fs::read(FONT).map_err(|e| format!("{FONT}: {e}"))?;
    register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(bytes.into_boxed_slice()),
    )
    .map_err(|_| format!("{FONT}: not a font"))
}
