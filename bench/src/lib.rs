//! netpath-bench: `cargo xtask bench`.
//!
//! Builds the same topology three ways in its own network namespaces —
//! [`topology::limit`] (a bare veth pair), [`topology::classic`] (bridge +
//! `ip_forward` + iptables MASQUERADE) and [`topology::netpath`] — and
//! measures them interleaved in one run ([`runner`]): TCP throughput,
//! request/response rate and latency, connection rate, small-packet UDP
//! rate ([`load`]), under conditions that scale routes and idle conntrack
//! entries ([`figures`]), plus memory and CPU cost ([`metrics`]). The
//! results are written as JSON, a markdown page and a PNG chart
//! ([`report`]).
//!
//! Safety: everything happens inside namespaces named `npb-<pid>-*`
//! ([`ns`]); they are removed at the end, on errors, panics and Ctrl-C.

pub mod condition;
pub mod figures;
pub mod load;
pub mod machine;
pub mod metrics;
pub mod ns;
pub mod report;
pub mod runner;
pub mod topology;

use std::path::PathBuf;

use anyhow::Result;

pub use runner::{Options, run};

/// The files a run wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub json: PathBuf,
    pub png: Option<PathBuf>,
    pub docs: Option<PathBuf>,
}

/// Renders an earlier run again: its chart (next to the JSON) and, if
/// asked, the page, with the current summary and report code. Measures
/// nothing; the JSON stays as it is.
pub fn render(json: &std::path::Path, docs: Option<&std::path::Path>) -> Result<Written> {
    let mut results = report::Results::load(json)?;
    results.summarize();
    let png_path = json.with_extension("png");
    let png = match report::png::write(&results, &png_path) {
        Ok(()) => Some(png_path),
        Err(e) => {
            eprintln!("bench: no chart: {e:#}");
            None
        }
    };
    if let Some(page) = docs {
        report::markdown::write(&results, page, json, png.as_deref())?;
    }
    Ok(Written {
        json: json.to_owned(),
        png,
        docs: docs.map(PathBuf::from),
    })
}

/// Runs the benchmark and writes its JSON, chart and (if asked) page.
pub fn run_and_write(opts: &Options) -> Result<(report::Results, Written)> {
    let mut results = run(opts)?;
    let png_path = opts.results_dir.join(format!("{}.png", results.id));
    let png = match report::png::write(&results, &png_path) {
        Ok(()) => Some(png_path),
        Err(e) => {
            let note = format!("no chart: {e:#}");
            eprintln!("bench: {note}");
            results.notes.push(note);
            None
        }
    };
    let json = report::json::write(&results, &opts.results_dir)?;
    let docs = match &opts.docs {
        Some(page) => {
            report::markdown::write(&results, page, &json, png.as_deref())?;
            Some(page.clone())
        }
        None => None,
    };
    Ok((results, Written { json, png, docs }))
}
