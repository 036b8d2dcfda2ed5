//! netpath-bench: `cargo xtask bench`.
//!
//! Builds the same topology three ways in its own network namespaces —
//! [`topology::limit`] (a bare veth pair), [`topology::classic`] (bridge +
//! `ip_forward` + iptables MASQUERADE) and [`topology::netpath`] — and
//! measures them interleaved in one run ([`runner`]): TCP throughput,
//! request/response rate and latency, connection rate, small-packet UDP
//! rate ([`load`]), under conditions that scale routes and idle conntrack
//! entries ([`figures`]), plus memory and CPU cost ([`metrics`]); and the
//! service-scale group ([`service_scale`]): 1 to 30,000 services in
//! kube-proxy's iptables and nftables modes and in netpath. The results are
//! written as JSON, a markdown page and PNG charts ([`report`]).
//!
//! Safety: everything happens inside namespaces named `npb-<pid>-*`
//! ([`ns`]); they are removed at the end, on errors, panics and Ctrl-C.

pub mod condition;
pub mod cross_node;
pub mod curves;
pub mod figures;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod ns;
pub mod record;
pub mod report;
pub mod runner;
pub mod service_scale;
pub mod topology;

use std::path::{Path, PathBuf};

use anyhow::Result;

pub use runner::{Options, run};

/// The files a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub json: PathBuf,
    /// The chart of the figures (baseline ratios), when there are figures.
    pub png: Option<PathBuf>,
    /// The service-scale chart, when the group ran.
    pub scale_png: Option<PathBuf>,
    /// The cost-growth chart, when the curves ran.
    pub curves_png: Option<PathBuf>,
    pub docs: Option<PathBuf>,
}

/// The service-scale chart next to `json`: `<id>-service-scale.png`.
pub fn scale_png_path(json: &Path) -> PathBuf {
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    json.with_file_name(format!("{stem}-service-scale.png"))
}

/// The cost-growth chart next to `json`: `<id>-curves.png`.
pub fn curves_png_path(json: &Path) -> PathBuf {
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    json.with_file_name(format!("{stem}-curves.png"))
}

/// Draws the cost-growth chart of `results` next to `json` (with the
/// service-scale latencies of `scale` beside it, when there are some).
fn curves_chart(
    results: &mut report::Results,
    scale: Option<&service_scale::ScaleResults>,
    json: &Path,
) -> Option<PathBuf> {
    let curves = results.curves.as_ref()?;
    let p = curves_png_path(json);
    match report::png::write_curves(curves, scale, &p) {
        Ok(()) => Some(p),
        Err(e) => {
            let n = format!("no cost-growth chart: {e:#}");
            eprintln!("bench: {n}");
            results.notes.push(n);
            None
        }
    }
}

/// Draws the charts of `results` next to `json`; a chart that cannot be
/// drawn is a note, not an error.
fn charts(results: &mut report::Results, json: &Path) -> (Option<PathBuf>, Option<PathBuf>) {
    let mut notes = Vec::new();
    let png = (!results.conditions.is_empty())
        .then(|| {
            let p = json.with_extension("png");
            report::png::write(results, &p)
                .map(|()| p)
                .map_err(|e| notes.push(format!("no chart: {e:#}")))
                .ok()
        })
        .flatten();
    let scale_png = results.service_scale.as_ref().and_then(|s| {
        let p = scale_png_path(json);
        report::png::write_scale(s, &p)
            .map(|()| p)
            .map_err(|e| notes.push(format!("no service-scale chart: {e:#}")))
            .ok()
    });
    for n in notes {
        eprintln!("bench: {n}");
        results.notes.push(n);
    }
    (png, scale_png)
}

/// Renders earlier runs again: their charts (next to their JSON) and, if
/// asked, the page, with the current summary and report code. Several
/// results are merged in order ([`report::Results::merge`]). Measures
/// nothing; the JSON files stay as they are.
pub fn render(jsons: &[&Path], docs: Option<&Path>) -> Result<Written> {
    let mut merged: Option<report::Results> = None;
    let mut files = report::markdown::Files::default();
    let mut last = None;
    for &json in jsons {
        let mut r = report::Results::load(json)?;
        r.summarize();
        let (png, scale_png) = charts(&mut r, json);
        if !r.conditions.is_empty() {
            files.json = Some(json.to_owned());
            files.png.clone_from(&png);
        }
        if r.service_scale.is_some() {
            files.scale_json = Some(json.to_owned());
            files.scale_png.clone_from(&scale_png);
        }
        if r.curves.is_some() {
            files.curves_json = Some(json.to_owned());
        }
        last = Some((json.to_owned(), png, scale_png));
        merged = Some(match merged {
            None => r,
            Some(m) => m.merge(r),
        });
    }
    let (Some(mut results), Some((json, png, scale_png))) = (merged, last) else {
        anyhow::bail!("no results file to render");
    };
    results.summarize();
    let curves_png = match files.curves_json.clone() {
        Some(cj) => {
            let scale = results.service_scale.clone();
            curves_chart(&mut results, scale.as_ref(), &cj)
        }
        None => None,
    };
    files.curves_png.clone_from(&curves_png);
    if let Some(page) = docs {
        report::markdown::write(&results, page, &files)?;
    }
    Ok(Written {
        json,
        png,
        scale_png,
        curves_png,
        docs: docs.map(PathBuf::from),
    })
}

/// The newest results file in `dir` (other than `except`) for which
/// `wanted` holds.
fn newest(
    dir: &Path,
    except: &Path,
    wanted: impl Fn(&report::Results) -> bool,
) -> Option<(PathBuf, report::Results)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json") && p != except)
        .collect();
    files.sort();
    files.into_iter().rev().find_map(|p| {
        report::Results::load(&p)
            .ok()
            .filter(&wanted)
            .map(|r| (p, r))
    })
}

/// Runs the benchmark and writes its JSON, charts and (if asked) page. A
/// run of some groups only (`--only`) writes the page with the other
/// groups from the newest results file in the results directory that has
/// them (the page says which run each part comes from).
pub fn run_and_write(opts: &Options) -> Result<(report::Results, Written)> {
    let mut results = run(opts)?;
    let json = opts.results_dir.join(format!("{}.json", results.id));
    let (png, scale_png) = charts(&mut results, &json);
    // The services curve has the service-scale latencies beside it: this
    // run's, or the newest run's that has them.
    let scale_beside = results.service_scale.clone().or_else(|| {
        newest(&opts.results_dir, &json, |r| r.service_scale.is_some())
            .and_then(|(_, r)| r.service_scale)
    });
    let curves_png = curves_chart(&mut results, scale_beside.as_ref(), &json);
    let json = report::json::write(&results, &opts.results_dir)?;
    let docs = match &opts.docs {
        Some(page) => {
            let mut files = report::markdown::Files {
                json: (!results.conditions.is_empty()).then(|| json.clone()),
                png: png.clone(),
                scale_json: results.service_scale.is_some().then(|| json.clone()),
                scale_png: scale_png.clone(),
                curves_json: results.curves.is_some().then(|| json.clone()),
                curves_png: curves_png.clone(),
            };
            let mut shown = results.clone();
            if shown.conditions.is_empty()
                && let Some((base_json, base)) =
                    newest(&opts.results_dir, &json, |r| !r.conditions.is_empty())
            {
                files.png = Some(base_json.with_extension("png")).filter(|p| p.is_file());
                files.json = Some(base_json);
                shown = base.merge(shown);
            }
            if shown.service_scale.is_none()
                && let Some((scale_json, scale)) =
                    newest(&opts.results_dir, &json, |r| r.service_scale.is_some())
            {
                files.scale_png = Some(scale_png_path(&scale_json)).filter(|p| p.is_file());
                files.scale_json = Some(scale_json);
                shown = shown.merge(report::Results {
                    conditions: Vec::new(),
                    curves: None,
                    cross_node: None,
                    ..scale
                });
            }
            if shown.curves.is_none()
                && let Some((curves_json, curves)) =
                    newest(&opts.results_dir, &json, |r| r.curves.is_some())
            {
                files.curves_png = Some(curves_png_path(&curves_json)).filter(|p| p.is_file());
                files.curves_json = Some(curves_json);
                shown = shown.merge(report::Results {
                    conditions: Vec::new(),
                    service_scale: None,
                    cross_node: None,
                    ..curves
                });
            }
            if shown.cross_node.is_none()
                && let Some((_, xn)) = newest(&opts.results_dir, &json, |r| r.cross_node.is_some())
            {
                shown.cross_node = xn.cross_node;
            }
            shown.summarize();
            report::markdown::write(&shown, page, &files)?;
            Some(page.clone())
        }
        None => None,
    };
    Ok((
        results,
        Written {
            json,
            png,
            scale_png,
            curves_png,
            docs,
        },
    ))
}
