//! The chart: per scenario, the baseline ratios netpath / classic and
//! netpath / limit of each figure's main metric (bars: median; whiskers:
//! min–max over the rounds; the dashed line is 1). Drawn with plotters'
//! bitmap backend; text uses a TTF read at run time (Debian's
//! `fonts-dejavu-core`, or `$NETPATH_BENCH_FONT`).

use std::{path::Path, sync::OnceLock};

use anyhow::{Context as _, Result, anyhow, bail};
use plotters::{
    prelude::*,
    style::{FontStyle, register_font},
};

use super::{Results, Spread};
use crate::record::num;
use crate::{figures::Figure, topology::Scenario};

/// Where Debian and friends put DejaVu Sans.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
];

/// The figures on the chart.
const FIGURES: [Figure; 6] = [
    Figure::Tcp1,
    Figure::Tcp4,
    Figure::Rr1,
    Figure::Rr1k,
    Figure::Crr,
    Figure::Udp64,
];

const VS_CLASSIC: RGBColor = RGBColor(31, 119, 180);
const VS_LIMIT: RGBColor = RGBColor(255, 127, 14);
const FONT: &str = "sans-serif";

/// Registers the TTF once; an error names the package to install.
fn ensure_font() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let candidates: Vec<String> = std::env::var("NETPATH_BENCH_FONT")
            .into_iter()
            .chain(FONT_PATHS.iter().map(ToString::to_string))
            .collect();
        let path = candidates
            .iter()
            .find(|p| Path::new(p).is_file())
            .ok_or_else(|| {
                format!(
                    "no TTF font found ({}); install Debian's fonts-dejavu-core or set \
                     NETPATH_BENCH_FONT to a .ttf file",
                    FONT_PATHS[0]
                )
            })?;
        let bytes = std::fs::read(path).map_err(|e| format!("read {path}: {e}"))?;
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        register_font(FONT, FontStyle::Normal, bytes)
            .map_err(|_| format!("{path} is not a usable TTF font"))
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// One bar group: a figure's two ratios.
struct Group {
    label: &'static str,
    vs_classic: Option<Spread>,
    vs_limit: Option<Spread>,
}

fn groups(r: &Results, scenario: Scenario) -> Vec<Group> {
    FIGURES
        .iter()
        .map(|&f| {
            let row = r.row("baseline", scenario, f, f.main_metric().id);
            Group {
                label: f.short(),
                vs_classic: row.and_then(|x| x.netpath_vs_classic),
                vs_limit: row.and_then(|x| x.netpath_vs_limit),
            }
        })
        .collect()
}

/// Draws the chart into `path` (PNG).
pub fn write(r: &Results, path: &Path) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    }
    draw(r, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    if !path.is_file() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}

/// Why netpath has no baseline numbers in a scenario.
fn netpath_missing(r: &Results, scenario: Scenario) -> Option<String> {
    r.summary
        .iter()
        .filter(|x| x.condition == "baseline" && x.scenario == scenario)
        .find_map(|x| x.missing.get(&crate::topology::SetupKind::Netpath).cloned())
        .map(|why| match why.split_once(" (") {
            // Keep the reason, drop the probe's details.
            Some((head, _)) => head.to_owned(),
            None => why,
        })
}

/// Splits text into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let last = lines.last_mut().expect("one line");
        if !last.is_empty() && last.chars().count() + 1 + word.chars().count() > width {
            lines.push(word.to_owned());
        } else {
            if !last.is_empty() {
                last.push(' ');
            }
            last.push_str(word);
        }
    }
    lines.truncate(4);
    lines
}

type DrawResult = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(r: &Results, path: &Path) -> DrawResult {
    let root = BitMapBackend::new(path, (2000, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "netpath / classic and netpath / limit, main figure of each load (baseline; {} round{}; Linux {}, {} cores)",
        r.params.rounds,
        if r.params.rounds == 1 { "" } else { "s" },
        r.machine.kernel,
        r.machine.cores
    );
    let root = root.titled(&title, (FONT, 22))?;
    let (body, footer) = root.split_vertically(600);
    footer.draw(&Text::new(
        "bars: median of the per-round ratios; whiskers: min–max; above 1: netpath higher \
         (better for every figure shown); n/a: no numbers (see docs/benchmarks.md)",
        (20, 2),
        (FONT, 14),
    ))?;
    let panels = body.split_evenly((1, Scenario::ALL.len()));
    let ymax = Scenario::ALL
        .iter()
        .flat_map(|&sc| groups(r, sc))
        .flat_map(|g| [g.vs_classic, g.vs_limit])
        .flatten()
        .map(|s| s.max)
        .fold(1.2f64, f64::max)
        * 1.3;
    for (panel, sc) in panels.iter().zip(Scenario::ALL) {
        let gs = groups(r, sc);
        let n = gs.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(sc.title(), (FONT, 20))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)?;
        let labels: Vec<&str> = gs.iter().map(|g| g.label).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
                    labels[i as usize].to_owned()
                } else {
                    String::new()
                }
            })
            .y_desc("ratio")
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()?;
        chart.draw_series(DashedLineSeries::new(
            [(-0.5, 1.0), (n as f64 - 0.5, 1.0)],
            6,
            4,
            BLACK.stroke_width(1),
        ))?;
        for (series, color, offset, name) in [
            (0usize, VS_CLASSIC, -0.38, "netpath / classic"),
            (1usize, VS_LIMIT, 0.02, "netpath / limit"),
        ] {
            let width = 0.36;
            let spreads: Vec<(usize, Option<Spread>)> = gs
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    (
                        i,
                        if series == 0 {
                            g.vs_classic
                        } else {
                            g.vs_limit
                        },
                    )
                })
                .collect();
            let bars = spreads.iter().filter_map(|(i, s)| {
                let s = (*s)?;
                let x0 = *i as f64 + offset;
                Some(Rectangle::new(
                    [(x0, 0.0), (x0 + width, s.median)],
                    color.filled(),
                ))
            });
            chart.draw_series(bars)?.label(name).legend(move |(x, y)| {
                Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
            });
            for (i, s) in &spreads {
                let xc = *i as f64 + offset + width / 2.0;
                match s {
                    Some(s) => {
                        if s.max > s.min {
                            chart.draw_series(std::iter::once(PathElement::new(
                                vec![(xc, s.min), (xc, s.max)],
                                BLACK.stroke_width(1),
                            )))?;
                            for y in [s.min, s.max] {
                                chart.draw_series(std::iter::once(PathElement::new(
                                    vec![(xc - 0.05, y), (xc + 0.05, y)],
                                    BLACK.stroke_width(1),
                                )))?;
                            }
                        }
                        chart.draw_series(std::iter::once(Text::new(
                            format!("{:.2}", s.median),
                            (xc - 0.13, s.max + ymax * 0.035),
                            (FONT, 13),
                        )))?;
                    }
                    None => {
                        chart.draw_series(std::iter::once(Text::new(
                            "n/a",
                            (xc - 0.1, ymax * 0.04),
                            (FONT, 13).into_font().color(&color),
                        )))?;
                    }
                }
            }
        }
        if gs
            .iter()
            .all(|g| g.vs_classic.is_none() && g.vs_limit.is_none())
        {
            let why = netpath_missing(r, sc).unwrap_or_else(|| "no numbers".into());
            for (k, line) in wrap(&format!("netpath: {why}"), 60).iter().enumerate() {
                chart.draw_series(std::iter::once(Text::new(
                    line.clone(),
                    (-0.3, ymax * (0.62 - 0.05 * k as f64)),
                    (FONT, 16),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// The service-scale chart: new connections per second to the last
/// service, and its first-packet latency p99, against the number of
/// services (log scales), one line per node.
pub fn write_scale(s: &crate::service_scale::ScaleResults, path: &Path) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    }
    draw_scale(s, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    if !path.is_file() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}

fn draw_scale(s: &crate::service_scale::ScaleResults, path: &Path) -> DrawResult {
    use crate::service_scale::nodes::Mode;
    let root = BitMapBackend::new(path, (1600, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "Service scale: the LAN host to the last of N services ({} round{}; median, whiskers min–max)",
            s.rounds,
            if s.rounds == 1 { "" } else { "s" }
        ),
        (FONT, 22),
    )?;
    let panels = root.split_evenly((1, 2));
    let xmax = s
        .points
        .iter()
        .map(|p| p.services)
        .max()
        .unwrap_or(1)
        .max(10) as f64
        * 1.5;
    let colors = |m: Mode| match m {
        Mode::Iptables => RGBColor(214, 39, 40),
        Mode::Nftables => RGBColor(255, 127, 14),
        Mode::Netpath => VS_CLASSIC,
    };
    for (panel, (metric, title, ylabel)) in panels.iter().zip([
        ("connections", "new connections per second", "connections/s"),
        ("connect_p99", "first-packet latency p99 (connect())", "µs"),
    ]) {
        let spreads: Vec<(Mode, Vec<(f64, Spread)>)> = Mode::ALL
            .iter()
            .map(|&m| {
                (
                    m,
                    s.points
                        .iter()
                        .filter_map(|p| Some((p.services as f64, p.spread(m, metric)?)))
                        .collect(),
                )
            })
            .collect();
        let all: Vec<f64> = spreads
            .iter()
            .flat_map(|(_, v)| v.iter().flat_map(|(_, sp)| [sp.min, sp.max]))
            .filter(|v| *v > 0.0)
            .collect();
        let ymin = all.iter().copied().fold(f64::INFINITY, f64::min);
        let ymax = all.iter().copied().fold(0.0, f64::max);
        let (ymin, ymax) = if all.is_empty() {
            (1.0, 10.0)
        } else {
            (ymin / 1.5, ymax * 1.5)
        };
        if metric == "connections" {
            // Linear: rates side by side.
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FONT, 20))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d((0.7f64..xmax).log_scale(), 0f64..ymax / 1.5 * 1.15)?;
            scale_series(&mut chart, &spreads, colors, ylabel)?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerLeft)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        } else {
            let mut chart = ChartBuilder::on(panel)
                .caption(title, (FONT, 20))
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d((0.7f64..xmax).log_scale(), (ymin..ymax).log_scale())?;
            scale_series(&mut chart, &spreads, colors, ylabel)?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// The mesh and one line (median, whiskers min–max) per node.
fn scale_series<'a, Y>(
    chart: &mut ChartContext<
        'a,
        BitMapBackend<'a>,
        Cartesian2d<plotters::coord::combinators::LogCoord<f64>, Y>,
    >,
    spreads: &[(crate::service_scale::nodes::Mode, Vec<(f64, Spread)>)],
    colors: impl Fn(crate::service_scale::nodes::Mode) -> RGBColor,
    ylabel: &str,
) -> DrawResult
where
    Y: Ranged<ValueType = f64> + plotters::coord::ranged1d::ValueFormatter<f64>,
{
    chart
        .configure_mesh()
        .x_desc("services")
        .y_desc(ylabel)
        .x_label_formatter(&|x| crate::condition::thousands(x.round() as u64))
        .y_label_formatter(&|y| num(*y))
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (mode, points) in spreads {
        let color = colors(*mode);
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|(x, sp)| (*x, sp.median)),
                color.stroke_width(3),
            ))?
            .label(mode.title())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
            });
        chart.draw_series(
            points
                .iter()
                .map(|(x, sp)| Circle::new((*x, sp.median), 5, color.filled())),
        )?;
        for (x, sp) in points {
            if sp.max > sp.min {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*x, sp.min), (*x, sp.max)],
                    color.stroke_width(1),
                )))?;
            }
        }
    }
    Ok(())
}

/// The cost-growth chart: program time per packet against routes,
/// services and connection-table entries (established and first packet;
/// points: median, whiskers: the middle half of the runs), and beside the
/// services curve the service-scale group's first-packet latency, where
/// kube-proxy's rules have a curve.
pub fn write_curves(
    c: &crate::curves::CurveResults,
    scale: Option<&crate::service_scale::ScaleResults>,
    path: &Path,
) -> Result<()> {
    ensure_font()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    }
    draw_curves(c, scale, path).map_err(|e| anyhow!("drawing {}: {e}", path.display()))?;
    if !path.is_file() {
        bail!("{} was not written", path.display());
    }
    Ok(())
}

/// A curve's label, colour and points (N, ns per packet).
type CurveSeries = (&'static str, RGBColor, Vec<(f64, Spread)>);

fn draw_curves(
    c: &crate::curves::CurveResults,
    scale: Option<&crate::service_scale::ScaleResults>,
    path: &Path,
) -> DrawResult {
    use crate::curves::Dimension;
    let root = BitMapBackend::new(path, (1600, 1100)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "Cost growth: np_from_pod's time per packet (BPF_PROG_TEST_RUN, {} runs per point; median, whiskers p25–p75)",
            c.runs
        ),
        (FONT, 22),
    )?;
    let panels = root.split_evenly((2, 2));
    for (panel, d) in panels.iter().zip(Dimension::ALL) {
        let Some(curve) = c.curve(d) else { continue };
        let series: [CurveSeries; 2] = [
            (
                "established connection",
                VS_CLASSIC,
                curve
                    .points
                    .iter()
                    .map(|p| (p.n as f64, p.established_ns))
                    .collect(),
            ),
            (
                "new connection (first packet)",
                VS_LIMIT,
                curve
                    .points
                    .iter()
                    .map(|p| (p.n as f64, p.new_ns))
                    .collect(),
            ),
        ];
        let xmax = curve.points.iter().map(|p| p.n).max().unwrap_or(1).max(10) as f64 * 1.5;
        let ymax = series
            .iter()
            .flat_map(|(_, _, v)| v.iter().map(|(_, s)| s.p75.max(s.median)))
            .fold(0.0, f64::max)
            .max(100.0)
            * 1.25;
        let mut chart = ChartBuilder::on(panel)
            .caption(format!("against {}", d.title()), (FONT, 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(70)
            .build_cartesian_2d((0.7f64..xmax).log_scale(), 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_desc(d.title())
            .y_desc("ns per packet")
            .x_label_formatter(&|x| crate::condition::thousands(x.round() as u64))
            .y_label_formatter(&|y| num(*y))
            .label_style((FONT, 15))
            .axis_desc_style((FONT, 15))
            .draw()?;
        for (label, color, points) in series {
            chart
                .draw_series(LineSeries::new(
                    points.iter().map(|(x, s)| (*x, s.median)),
                    color.stroke_width(3),
                ))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(3))
                });
            chart.draw_series(
                points
                    .iter()
                    .map(|(x, s)| Circle::new((*x, s.median), 5, color.filled())),
            )?;
            for (x, s) in &points {
                chart.draw_series(std::iter::once(PathElement::new(
                    vec![(*x, s.p25), (*x, s.p75)],
                    color.stroke_width(1),
                )))?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 15))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
    }
    // Beside the services curve: the classic path's curve, end to end.
    let panel = &panels[3];
    match scale {
        Some(s) if !s.points.is_empty() => {
            use crate::service_scale::nodes::Mode;
            let spreads: Vec<(Mode, Vec<(f64, Spread)>)> = Mode::ALL
                .iter()
                .map(|&m| {
                    (
                        m,
                        s.points
                            .iter()
                            .filter_map(|p| Some((p.services as f64, p.spread(m, "connect_p50")?)))
                            .collect(),
                    )
                })
                .collect();
            let all: Vec<f64> = spreads
                .iter()
                .flat_map(|(_, v)| v.iter().flat_map(|(_, sp)| [sp.min, sp.max]))
                .filter(|v| *v > 0.0)
                .collect();
            let ymin = all.iter().copied().fold(f64::INFINITY, f64::min) / 1.5;
            let ymax = all.iter().copied().fold(0.0, f64::max) * 1.5;
            let (ymin, ymax) = if all.is_empty() {
                (1.0, 10.0)
            } else {
                (ymin, ymax)
            };
            let xmax = s
                .points
                .iter()
                .map(|p| p.services)
                .max()
                .unwrap_or(1)
                .max(10) as f64
                * 1.5;
            let mut chart = ChartBuilder::on(panel)
                .caption(
                    "beside it, end to end: first-packet latency p50 (service scale)",
                    (FONT, 20),
                )
                .margin(16)
                .x_label_area_size(44)
                .y_label_area_size(70)
                .build_cartesian_2d((0.7f64..xmax).log_scale(), (ymin..ymax).log_scale())?;
            let colors = |m: Mode| match m {
                Mode::Iptables => RGBColor(214, 39, 40),
                Mode::Nftables => RGBColor(255, 127, 14),
                Mode::Netpath => VS_CLASSIC,
            };
            scale_series(&mut chart, &spreads, colors, "µs")?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .label_font((FONT, 15))
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()?;
        }
        _ => {
            panel.draw(&Text::new(
                "no service-scale run to draw beside the curves",
                (40, 40),
                (FONT, 18),
            ))?;
        }
    }
    root.present()?;
    Ok(())
}
