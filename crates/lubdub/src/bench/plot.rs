//! `lubdub bench plot`: hold and pump reports (`--json`) of one or more
//! servers drawn as one SVG with two panels side by side, server memory per
//! session and server CPU per heartbeat against the number of sessions, one
//! line per server and scenario. Grouping the reports into series (medians
//! of the runs that share a point) is kept apart from drawing and tested.
//!
//! plotters is built with its SVG backend only, as for `lubdub simulate`'s
//! plot: text is written as SVG `<text>` and drawn by the viewer.
//!
//! Size: one job (the SVG of hold and pump reports); a third is its tests.

use std::collections::BTreeMap;
use std::ops::Range;

use plotters::prelude::*;

use super::dialect::Dialect;
use super::fleet::LoadScenario;
use super::load_report::LoadReport;

const WIDTH: u32 = 1200;
const HEIGHT: u32 = 560;
const FONT: &str = "sans-serif";
const LUBDUB_COLOUR: RGBColor = RGBColor(31, 90, 180);
const MQTT_COLOUR: RGBColor = RGBColor(200, 60, 30);
/// Title of the left panel.
pub const MEMORY_TITLE: &str = "Server memory per session (hold)";
/// Title of the right panel.
pub const CPU_TITLE: &str = "Server CPU per heartbeat";

/// Why no plot was drawn.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// No hold or pump report carries the server's costs.
    #[error(
        "nothing to plot: no hold or pump report with the server's costs \
         (reports of runs given --server-pid)"
    )]
    NothingToPlot,
    /// plotters failed to lay the chart out.
    #[error("cannot draw the plot: {0}")]
    Draw(String),
}

/// Which figure of a report a panel shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Figure {
    /// Resident memory growth per session held, bytes; hold runs only,
    /// where the sessions are idle and memory is what they cost.
    MemoryPerSession,
    /// Server CPU time per acknowledged heartbeat, µs; hold and pump runs.
    CpuPerHeartbeat,
}

impl Figure {
    /// The figure in `report`, if its scenario counts for this figure and
    /// the server's costs were measured.
    fn of(self, report: &LoadReport) -> Option<f64> {
        let cost = report.server?;
        match (self, report.settings.scenario) {
            (Figure::MemoryPerSession, LoadScenario::Hold) => Some(cost.rss_per_session_bytes),
            (Figure::CpuPerHeartbeat, LoadScenario::Hold | LoadScenario::Pump) => {
                cost.cpu_us_per_heartbeat
            }
            _ => None,
        }
    }
}

/// What stays the same along one line as N grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Load {
    /// Every session heartbeats at this period, ms (hold: the load grows with N).
    Period(u64),
    /// The sessions together offer this many heartbeats a second (pump runs,
    /// whose period `bench/compare.sh` scales with N), rounded to 100/s.
    Rate(u64),
}

impl Load {
    fn of(report: &LoadReport) -> Self {
        let settings = &report.settings;
        match settings.scenario {
            LoadScenario::Pump => {
                let per_s = settings.sessions as f64 * 1000.0 / settings.period_ms.max(1) as f64;
                Load::Rate(((per_s / 100.0).round() * 100.0) as u64)
            }
            _ => Load::Period(settings.period_ms),
        }
    }
}

/// One line of a panel: one server under one scenario at one load.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The protocol spoken, which names the server.
    pub dialect: Dialect,
    /// hold or pump.
    pub scenario: LoadScenario,
    /// What the runs of the line share.
    pub load: Load,
    /// One point per number of sessions asked for, in increasing order.
    pub points: Vec<Point>,
}

/// The median of the runs that asked for the same number of sessions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Sessions asked for.
    pub sessions: usize,
    /// Median of the figure over the runs.
    pub median: f64,
    /// How many runs the median is of.
    pub runs: usize,
}

impl Series {
    /// The legend's text, e.g. `Mosquitto (mqtt), hold: a heartbeat every 2.4 s`
    /// or `lubdub, pump: 20,000 heartbeats/s`.
    pub fn label(&self) -> String {
        let server = match self.dialect {
            Dialect::Lubdub => "lubdub",
            Dialect::Mqtt => "Mosquitto (mqtt)",
        };
        let scenario = match self.scenario {
            LoadScenario::Hold => "hold",
            LoadScenario::Pump => "pump",
            LoadScenario::Stall => "stall",
        };
        let load = match self.load {
            Load::Period(ms) if ms % 1000 == 0 || ms > 1000 => {
                format!("a heartbeat every {} s", ms as f64 / 1000.0)
            }
            Load::Period(ms) => format!("a heartbeat every {ms} ms"),
            Load::Rate(per_s) => format!("{} heartbeats/s", thousands(per_s)),
        };
        format!("{server}, {scenario}: {load}")
    }
}

/// Groups `reports` into one series per server, scenario and load, with
/// the median of `figure` at each number of sessions. Reports that do not
/// carry the figure (stall runs, runs without `--server-pid`) are left out.
/// Series come lubdub first, then hold before pump, then by load.
pub fn series(reports: &[LoadReport], figure: Figure) -> Vec<Series> {
    // Ordered maps give the series and their points in the order drawn
    // (Dialect and LoadScenario order as declared).
    let mut runs: BTreeMap<(Dialect, LoadScenario, Load), BTreeMap<usize, Vec<f64>>> =
        BTreeMap::new();
    for report in reports {
        let Some(value) = figure.of(report) else {
            continue;
        };
        let settings = &report.settings;
        runs.entry((settings.dialect, settings.scenario, Load::of(report)))
            .or_default()
            .entry(settings.sessions)
            .or_default()
            .push(value);
    }
    runs.into_iter()
        .map(|((dialect, scenario, load), by_sessions)| Series {
            dialect,
            scenario,
            load,
            points: by_sessions
                .into_iter()
                .map(|(sessions, values)| Point {
                    sessions,
                    runs: values.len(),
                    median: median(values),
                })
                .collect(),
        })
        .collect()
}

/// The middle value, or the mean of the two middle ones; `values` is not empty.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

/// The plot of `reports` as an SVG document: memory per session (hold runs)
/// on the left, CPU per heartbeat (hold and pump runs) on the right, both
/// against the number of sessions on a log scale.
///
/// # Errors
/// [`PlotError::NothingToPlot`] when no report carries the server's costs;
/// [`PlotError::Draw`] if plotters fails to lay the chart out.
pub fn svg(reports: &[LoadReport]) -> Result<String, PlotError> {
    let memory = series(reports, Figure::MemoryPerSession);
    let cpu = series(reports, Figure::CpuPerHeartbeat);
    if memory.is_empty() && cpu.is_empty() {
        return Err(PlotError::NothingToPlot);
    }
    let mut out = String::new();
    draw(&mut out, &memory, &cpu).map_err(|error| PlotError::Draw(error.to_string()))?;
    Ok(out)
}

fn draw(
    out: &mut String,
    memory: &[Series],
    cpu: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::with_string(out, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((1, 2));
    panel(
        &panels[0],
        MEMORY_TITLE,
        "resident memory growth per session held (bytes)",
        memory,
    )?;
    panel(
        &panels[1],
        CPU_TITLE,
        "server CPU time per acknowledged heartbeat (µs)",
        cpu,
    )?;
    root.present()?;
    Ok(())
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    title: &str,
    y_description: &str,
    series: &[Series],
) -> Result<(), Box<dyn std::error::Error>> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let (x_range, y_range) = ranges(
        points().map(|p| p.sessions as f64),
        points().map(|p| p.median),
    );
    // Ticks at the sizes measured only: a log axis's own ticks crowd
    // together between 5,000 and 10,000.
    let mut sizes: Vec<f64> = points().map(|p| p.sessions as f64).collect();
    sizes.sort_by(f64::total_cmp);
    sizes.dedup();
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 17))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(64)
        .build_cartesian_2d(x_range.log_scale().with_key_points(sizes), y_range)?;
    chart
        .configure_mesh()
        .x_desc("sessions (log scale)")
        .y_desc(y_description)
        .axis_desc_style((FONT, 14))
        .label_style((FONT, 12))
        .x_label_formatter(&|x| thousands(x.round() as u64))
        .y_label_formatter(&|y| tick(*y))
        .light_line_style(WHITE)
        .draw()?;
    if series.is_empty() {
        return Ok(());
    }
    for line in series {
        let colour = match line.dialect {
            Dialect::Lubdub => LUBDUB_COLOUR,
            Dialect::Mqtt => MQTT_COLOUR,
        };
        let stroke = colour.stroke_width(2);
        let xy: Vec<(f64, f64)> = line
            .points
            .iter()
            .map(|p| (p.sessions as f64, p.median))
            .collect();
        // The colour says which server, the stroke which load: hold solid
        // with circles, pump dashed with squares.
        match line.scenario {
            LoadScenario::Pump => {
                chart.draw_series(DashedLineSeries::new(xy.iter().copied(), 8, 5, stroke))?;
                chart
                    .draw_series(xy.iter().map(|&point| {
                        EmptyElement::at(point)
                            + Rectangle::new([(-4, -4), (4, 4)], colour.filled())
                    }))?
                    .label(line.label())
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (6, 0)], stroke)
                            + PathElement::new(vec![(14, 0), (20, 0)], stroke)
                            + Rectangle::new([(7, -3), (13, 3)], colour.filled())
                    });
            }
            LoadScenario::Hold | LoadScenario::Stall => {
                chart.draw_series(LineSeries::new(xy.iter().copied(), stroke))?;
                chart
                    .draw_series(
                        xy.iter()
                            .map(|&point| Circle::new(point, 4, colour.filled())),
                    )?
                    .label(line.label())
                    .legend(move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (20, 0)], stroke)
                            + Circle::new((10, 0), 3, colour.filled())
                    });
            }
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// `19000` as `19,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// A y tick: at most three decimals, none that are zero (a tick step of
/// 0.1 would otherwise show as `0.30000000000000004`).
fn tick(y: f64) -> String {
    let text = format!("{y:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// Axis ranges around the points: x a factor of 1.3 either side on the log
/// scale, y from zero (or below, for a shrinking memory) with room above
/// for the legend.
fn ranges(
    xs: impl Iterator<Item = f64> + Clone,
    ys: impl Iterator<Item = f64> + Clone,
) -> (Range<f64>, Range<f64>) {
    let x_min = xs.clone().fold(f64::INFINITY, f64::min);
    let x_max = xs.fold(0.0, f64::max);
    let x_range = if x_min.is_finite() && x_min > 0.0 {
        (x_min / 1.3)..(x_max * 1.3)
    } else {
        100.0..100_000.0
    };
    let y_min = ys.clone().fold(0.0, f64::min);
    let y_max = ys.fold(0.0, f64::max);
    let y_max = if y_max > 0.0 { y_max * 1.4 } else { 1.0 };
    (x_range, (y_min * 1.1)..y_max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::load_report::{LoadSettings, ServerCost};

    /// A report with only what the plot reads filled in.
    fn report(
        dialect: Dialect,
        scenario: LoadScenario,
        sessions: usize,
        bytes_per_session: f64,
        us_per_heartbeat: f64,
    ) -> LoadReport {
        LoadReport {
            settings: LoadSettings {
                scenario,
                dialect,
                server: "127.0.0.1:1883".to_owned(),
                sessions,
                period_ms: if scenario == LoadScenario::Hold {
                    2400
                } else {
                    100
                },
                acks: true,
                warmup_s: 1.0,
                workers: 1,
                sources: vec!["127.0.0.2".to_owned()],
                server_pid: Some(1),
            },
            established: sessions,
            handshake_failed: 0,
            handshake_errors: vec![],
            connect_s: 1.0,
            window_s: 5.0,
            stopped_s: None,
            heartbeats_sent: 1000,
            heartbeats_acked: 1000,
            acked_per_s: 200.0,
            round_trip: None,
            sessions_ended: 0,
            endings: vec![],
            sessions_open: sessions,
            server: Some(ServerCost {
                rss_before_kib: 1000.0,
                rss_after_kib: 2000.0,
                rss_per_session_bytes: bytes_per_session,
                cpu_s: 0.1,
                cpu_percent_of_core: 2.0,
                cpu_us_per_heartbeat: Some(us_per_heartbeat),
            }),
        }
    }

    #[test]
    fn runs_at_the_same_point_are_reduced_to_their_median() {
        use Dialect::{Lubdub, Mqtt};
        use LoadScenario::{Hold, Pump, Stall};
        let reports = [
            report(Mqtt, Hold, 1000, 9000.0, 30.0),
            report(Lubdub, Hold, 5000, 500.0, 12.0),
            report(Lubdub, Hold, 1000, 700.0, 10.0),
            report(Lubdub, Hold, 1000, 600.0, 20.0),
            report(Lubdub, Hold, 1000, 900.0, 11.0),
            report(Lubdub, Pump, 1000, 650.0, 4.0),
            report(Lubdub, Pump, 1000, 750.0, 6.0),
            report(Lubdub, Stall, 1000, 1.0, 1.0),
        ];

        let lines = |series: &[Series]| -> Vec<(Dialect, LoadScenario)> {
            series.iter().map(|s| (s.dialect, s.scenario)).collect()
        };
        let points = |series: &Series| -> Vec<(usize, f64, usize)> {
            let point = |p: &Point| (p.sessions, p.median, p.runs);
            series.points.iter().map(point).collect()
        };

        // Pump and stall runs say nothing about memory per idle session.
        let memory = series(&reports, Figure::MemoryPerSession);
        assert_eq!(lines(&memory), vec![(Lubdub, Hold), (Mqtt, Hold)]);
        assert_eq!(points(&memory[0]), vec![(1000, 700.0, 3), (5000, 500.0, 1)]);
        assert_eq!(points(&memory[1]), vec![(1000, 9000.0, 1)]);

        let cpu = series(&reports, Figure::CpuPerHeartbeat);
        assert_eq!(
            lines(&cpu),
            vec![(Lubdub, Hold), (Lubdub, Pump), (Mqtt, Hold)]
        );
        assert_eq!(points(&cpu[0]), vec![(1000, 11.0, 3), (5000, 12.0, 1)]);
        // An even number of runs: the mean of the middle two.
        assert_eq!(points(&cpu[1]), vec![(1000, 5.0, 2)]);
        assert_eq!(points(&cpu[2]), vec![(1000, 30.0, 1)]);
        assert_eq!(cpu[1].label(), "lubdub, pump: 10,000 heartbeats/s");
        assert_eq!(
            cpu[2].label(),
            "Mosquitto (mqtt), hold: a heartbeat every 2.4 s"
        );
    }

    #[test]
    fn pump_runs_offering_the_same_rate_form_one_line() {
        let mut small = report(Dialect::Lubdub, LoadScenario::Pump, 1000, 400.0, 5.0);
        small.settings.period_ms = 50;
        let mut large = report(Dialect::Lubdub, LoadScenario::Pump, 19_000, 350.0, 7.0);
        large.settings.period_ms = 950;
        let cpu = series(&[small, large], Figure::CpuPerHeartbeat);
        assert_eq!(cpu.len(), 1, "{cpu:?}");
        assert_eq!(cpu[0].load, Load::Rate(20_000));
        assert_eq!(cpu[0].points.len(), 2);
    }

    #[test]
    fn axis_labels_are_short() {
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(19_000), "19,000");
        assert_eq!(thousands(1_000_000), "1,000,000");
        assert_eq!(tick(0.1 + 0.2), "0.3");
        assert_eq!(tick(2000.0), "2000");
        assert_eq!(tick(0.0), "0");
    }

    #[test]
    fn runs_without_the_servers_costs_are_left_out() {
        let mut unmeasured = report(Dialect::Lubdub, LoadScenario::Hold, 1000, 1.0, 1.0);
        unmeasured.server = None;
        assert!(series(&[unmeasured.clone()], Figure::CpuPerHeartbeat).is_empty());
        assert!(matches!(svg(&[unmeasured]), Err(PlotError::NothingToPlot)));
    }

    #[test]
    fn the_svg_has_both_panels_and_a_line_per_server() {
        let reports = [
            report(Dialect::Lubdub, LoadScenario::Hold, 1000, 700.0, 10.0),
            report(Dialect::Mqtt, LoadScenario::Hold, 1000, 9000.0, 30.0),
        ];
        let svg = svg(&reports).expect("the plot draws");
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.contains(MEMORY_TITLE));
        assert!(svg.contains(CPU_TITLE));
        assert!(svg.contains("lubdub, hold: a heartbeat every 2.4 s"));
        assert!(svg.contains("Mosquitto (mqtt), hold: a heartbeat every 2.4 s"));
        // In each panel, one marker per server and one in its legend entry.
        assert_eq!(svg.matches("<circle").count(), 2 * (2 + 2));
    }
}
