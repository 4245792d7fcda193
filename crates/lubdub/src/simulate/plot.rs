//! The trade-off plot: mean detection time against false positives, one
//! point per policy, as an SVG document.
//!
//! plotters is built with its SVG backend only: without the `ttf` feature it
//! writes text as SVG `<text>` elements and estimates their size itself, so
//! it needs no system font, and the viewer draws the letters.

use plotters::prelude::*;

use super::report::{zero_upper_bound_per_1000, Report};
use super::SimulateError;

const WIDTH: u32 = 960;
const HEIGHT: u32 = 620;
const PHI_COLOUR: RGBColor = RGBColor(31, 90, 180);
const COUNTER_COLOUR: RGBColor = RGBColor(200, 60, 30);
const FONT: &str = "sans-serif";

/// One point of the plot.
struct Point {
    x: f64,
    y: f64,
    label: String,
    zero: bool,
}

/// The plot of `report` as an SVG document: x is the mean detection time, y
/// the false positives per 1,000 session-hours on a log scale. Policies
/// without a false positive are drawn as hollow markers on a floor line
/// below every measured rate, and the legend says so.
///
/// # Errors
/// [`SimulateError::Plot`] if plotters fails to lay the chart out.
pub fn svg(report: &Report) -> Result<String, SimulateError> {
    let hours = report.parameters.session_hours;
    let rates = report
        .results
        .iter()
        .map(|r| r.false_positives_per_1000_session_hours);
    let lowest = rates
        .clone()
        .filter(|&rate| rate > 0.0)
        .fold(zero_upper_bound_per_1000(hours), f64::min);
    let highest = rates.fold(lowest, f64::max);
    // One step of the log scale below anything measured.
    let floor = lowest / 4.0;
    let points = |policy: &str| -> Vec<Point> {
        report
            .results
            .iter()
            .filter(|r| r.policy == policy)
            .map(|r| {
                let rate = r.false_positives_per_1000_session_hours;
                Point {
                    x: r.mean_detection_ms,
                    y: if rate > 0.0 { rate } else { floor },
                    label: format!("{}", r.parameter),
                    zero: rate == 0.0,
                }
            })
            .collect()
    };
    let phi = points("phi");
    let counter = points("counter");
    let xs = || report.results.iter().map(|r| r.mean_detection_ms);
    let x_min = xs().fold(f64::INFINITY, f64::min);
    let x_max = xs().fold(0.0, f64::max);
    let x_pad = ((x_max - x_min) * 0.06).max(50.0);

    let mut svg = String::new();
    draw(
        &mut svg,
        report,
        (x_min - x_pad)..(x_max + x_pad),
        (floor / 2.0)..(highest * 3.0),
        floor,
        &phi,
        &counter,
    )
    .map_err(|error| SimulateError::Plot(error.to_string()))?;
    Ok(svg)
}

fn draw(
    out: &mut String,
    report: &Report,
    x_range: std::ops::Range<f64>,
    y_range: std::ops::Range<f64>,
    floor: f64,
    phi: &[Point],
    counter: &[Point],
) -> Result<(), Box<dyn std::error::Error>> {
    let p = &report.parameters;
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let caption = format!(
        "{} sessions × {} s, interval {} ms, seed {}; phi: min σ {} ms, pause {} ms, ceiling {} × interval",
        p.sessions,
        p.duration_s,
        p.interval_ms,
        p.seed,
        p.phi_min_std_dev_ms,
        p.phi_acceptable_pause_ms,
        p.phi_max_missed
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 15))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range.clone(), y_range.log_scale())?;
    chart
        .configure_mesh()
        .x_desc("mean detection time after a crash (ms)")
        .y_desc("false positives per 1,000 session-hours (log)")
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .y_label_formatter(&|y| format!("{y}"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .draw()?;

    chart
        .draw_series(LineSeries::new(
            [(x_range.start, floor), (x_range.end, floor)],
            ShapeStyle::from(&BLACK.mix(0.35)).stroke_width(1),
        ))?
        .label("floor: no false positive seen (hollow markers)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.35)));

    chart
        .draw_series(LineSeries::new(
            phi.iter().map(|point| (point.x, point.y)),
            PHI_COLOUR.stroke_width(2),
        ))?
        .label("phi accrual (label: threshold)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], PHI_COLOUR.stroke_width(2)));
    chart
        .draw_series(LineSeries::new(
            counter.iter().map(|point| (point.x, point.y)),
            COUNTER_COLOUR.mix(0.5).stroke_width(1),
        ))?
        .label("counter (label: max_missed)")
        .legend(|(x, y)| {
            PathElement::new(vec![(x, y), (x + 20, y)], COUNTER_COLOUR.stroke_width(2))
        });

    // Phi as circles with labels alternating above and below (neighbours
    // crowd together); the counter as squares on top, labelled to the right,
    // so that a counter point under a phi point stays visible.
    chart.draw_series(phi.iter().map(|point| {
        let style = if point.zero {
            PHI_COLOUR.stroke_width(2)
        } else {
            PHI_COLOUR.filled()
        };
        Circle::new((point.x, point.y), 4, style)
    }))?;
    chart.draw_series(phi.iter().enumerate().map(|(i, point)| {
        let offset = if i % 2 == 0 { (-4, -20) } else { (-4, 8) };
        EmptyElement::at((point.x, point.y))
            + Text::new(
                point.label.clone(),
                offset,
                (FONT, 12).into_font().color(&PHI_COLOUR),
            )
    }))?;
    chart.draw_series(counter.iter().map(|point| {
        let style = if point.zero {
            COUNTER_COLOUR.stroke_width(2)
        } else {
            COUNTER_COLOUR.filled()
        };
        EmptyElement::at((point.x, point.y))
            + Rectangle::new([(-5, -5), (5, 5)], style)
            + Text::new(
                point.label.clone(),
                (9, -6),
                (FONT, 13).into_font().color(&COUNTER_COLOUR),
            )
    }))?;

    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    root.present()?;
    Ok(())
}
