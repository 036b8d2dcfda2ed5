//! `netpath-bench`: what `cargo xtask bench` runs (as root).

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;
use netpath_bench::{
    Options, figures::Figure, ns, report::markdown::num, run_and_write, runner::Group,
    topology::SetupKind,
};

#[derive(Parser)]
#[command(
    name = "netpath-bench",
    about = "netpath against a bare veth pair and the classic bridge + iptables datapath, \
             in the bench's own network namespaces",
    long_about = None
)]
struct Cli {
    /// Every figure for about half a second, one round, small scale (1,000
    /// conntrack entries, 1 and 100 services); results in a temporary
    /// directory, no markdown.
    #[arg(long)]
    smoke: bool,
    /// Only these groups: baseline, routes, conntrack, prefilter,
    /// service-scale, curves, cross-node (comma-separated; default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_group)]
    only: Option<Vec<Group>>,
    /// Service counts of the service-scale group, e.g. `1,1000,10000,30000`.
    #[arg(long, value_delimiter = ',')]
    services: Option<Vec<usize>>,
    /// Timed `BPF_PROG_TEST_RUN` calls per figure and point of the
    /// cost-growth curves.
    #[arg(long)]
    curve_runs: Option<usize>,
    /// Rounds (each runs every figure on every setup; the service-scale
    /// group's too).
    #[arg(long)]
    rounds: Option<usize>,
    /// Seconds per figure and setup (iperf3 rounds to whole seconds; the
    /// service-scale group's too).
    #[arg(long)]
    secs: Option<f64>,
    /// Routes of the routing condition (0 skips it).
    #[arg(long)]
    routes: Option<usize>,
    /// Idle conntrack entries of the conntrack conditions, comma-separated,
    /// e.g. `1000,100000`; `none` skips them.
    #[arg(long, value_parser = parse_counts)]
    conntrack: Option<Counts>,
    /// Only these setups: limit, classic, netpath, netpath_xdp
    /// (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_setup)]
    setups: Option<Vec<SetupKind>>,
    /// Only these figures: tcp_1_stream, tcp_4_streams, rr_1b, rr_1kib, crr,
    /// udp_64b, bpf_cost (comma-separated).
    #[arg(long, value_delimiter = ',', value_parser = parse_figure)]
    figures: Option<Vec<Figure>>,
    /// Where to write <timestamp>.json and <timestamp>.png.
    #[arg(long)]
    results_dir: Option<PathBuf>,
    /// The markdown page to write.
    #[arg(long, conflicts_with = "no_docs")]
    docs: Option<PathBuf>,
    /// Do not write the markdown page.
    #[arg(long)]
    no_docs: bool,
    /// Measure nothing: render the charts and the page again from results
    /// files of earlier runs (after changing the report code). Several
    /// (comma-separated or repeated) are merged in order: a later file's
    /// groups replace an earlier one's (a full run, then a later
    /// `--only service-scale` run).
    #[arg(long, value_name = "JSON", value_delimiter = ',')]
    render: Option<Vec<PathBuf>>,
}

#[derive(Clone, Debug)]
struct Counts(Vec<u64>);

fn parse_counts(s: &str) -> Result<Counts, String> {
    if s.is_empty() || s == "none" {
        return Ok(Counts(Vec::new()));
    }
    s.split(',')
        .map(|n| {
            n.trim()
                .replace('_', "")
                .parse::<u64>()
                .map_err(|e| format!("{n:?}: {e}"))
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Counts)
}

fn parse_setup(s: &str) -> Result<SetupKind, String> {
    SetupKind::ALL
        .into_iter()
        .find(|k| k.id() == s)
        .ok_or_else(|| format!("unknown setup {s:?} (limit, classic, netpath, netpath_xdp)"))
}

fn parse_group(s: &str) -> Result<Group, String> {
    Group::ALL.into_iter().find(|g| g.id() == s).ok_or_else(|| {
        let all: Vec<&str> = Group::ALL.iter().map(|g| g.id()).collect();
        format!("unknown group {s:?} ({})", all.join(", "))
    })
}

fn parse_figure(s: &str) -> Result<Figure, String> {
    Figure::ALL
        .into_iter()
        .find(|f| f.id() == s)
        .ok_or_else(|| {
            let all: Vec<&str> = Figure::ALL.iter().map(|f| f.id()).collect();
            format!("unknown figure {s:?} ({})", all.join(", "))
        })
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Some(json) = &cli.render {
        let json: Vec<&std::path::Path> = json.iter().map(PathBuf::as_path).collect();
        let docs = if cli.no_docs {
            None
        } else {
            cli.docs.clone().or_else(|| Options::full().docs)
        };
        return match netpath_bench::render(&json, docs.as_deref()) {
            Ok(w) => {
                for p in w
                    .png
                    .iter()
                    .chain(w.scale_png.iter())
                    .chain(w.curves_png.iter())
                    .chain(w.docs.iter())
                {
                    println!("netpath-bench: wrote {}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("netpath-bench: error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "netpath-bench: needs root (network namespaces, iptables inside them, BPF); \
             run it through `cargo xtask bench`, which uses sudo -E"
        );
        return ExitCode::from(2);
    }
    let mut opts = if cli.smoke {
        Options::smoke()
    } else {
        Options::full()
    };
    if let Some(v) = cli.rounds {
        opts.rounds = v;
        opts.scale_rounds = v;
    }
    if let Some(v) = cli.secs {
        opts.secs = v;
        opts.scale_secs = v;
    }
    if let Some(v) = cli.routes {
        opts.routes = v;
    }
    if let Some(v) = cli.conntrack {
        opts.conntrack = v.0.into_iter().filter(|n| *n > 0).collect();
    }
    if let Some(v) = cli.setups {
        opts.setups = v;
    }
    if let Some(v) = cli.only {
        opts.groups = v;
    }
    if let Some(v) = cli.curve_runs {
        opts.curves.runs = v.max(1);
    }
    if let Some(v) = cli.services {
        opts.services = v.into_iter().filter(|n| *n > 0).collect();
    }
    opts.figures = cli.figures;
    if let Some(v) = cli.results_dir {
        opts.results_dir = v;
    }
    if let Some(v) = cli.docs {
        opts.docs = Some(v);
    }
    if cli.no_docs {
        opts.docs = None;
    }
    opts.command = std::env::var("NETPATH_BENCH_COMMAND").unwrap_or_else(|_| {
        std::env::args()
            .enumerate()
            .map(|(i, a)| {
                if i == 0 {
                    "netpath-bench".to_owned()
                } else {
                    a
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    });

    ns::install_signal_handlers();
    println!(
        "netpath-bench: {} round(s) × {} s per figure; conditions: {}",
        opts.rounds,
        opts.secs,
        opts.conditions()
            .iter()
            .map(|c| c.title())
            .collect::<Vec<_>>()
            .join(", ")
    );
    match run_and_write(&opts) {
        Ok((results, written)) => {
            println!("\nnetpath-bench: baseline, netpath / classic (median of rounds):");
            for row in results
                .summary
                .iter()
                .filter(|r| r.condition == "baseline" && r.main)
            {
                let ratio = |s: Option<&netpath_bench::report::Spread>| {
                    s.map_or("n/a".to_owned(), |s| format!("{:.2}", s.median))
                };
                println!(
                    "  {:<11} {:<14} {:<12} netpath {:>10} {:<7}  /classic {:>5}  /limit {:>5}",
                    row.scenario.id(),
                    row.figure.id(),
                    row.metric,
                    row.setups
                        .get(&SetupKind::Netpath)
                        .map_or("n/a".into(), |s| num(s.median)),
                    row.unit,
                    ratio(row.netpath_vs_classic.as_ref()),
                    ratio(row.netpath_vs_limit.as_ref()),
                );
            }
            if let Some(scale) = &results.service_scale {
                println!("\nnetpath-bench: service scale, median of rounds:");
                for p in &scale.points {
                    for mode in netpath_bench::service_scale::nodes::Mode::ALL {
                        let get = |m: &str| {
                            p.spread(mode, m)
                                .map_or("n/a".to_owned(), |s| num(s.median))
                        };
                        println!(
                            "  {:>6} services {:<9} {:>8} conn/s  connect p99 {:>7} µs  install {:>8} s  change {:>8} s",
                            p.services,
                            mode.id(),
                            get("connections"),
                            get("connect_p99"),
                            get("install"),
                            get("change"),
                        );
                    }
                }
            }
            if let Some(x) = &results.cross_node {
                println!("\nnetpath-bench: cross-node pod → pod, median of rounds:");
                for figure in netpath_bench::cross_node::FIGURES {
                    let m = figure.main_metric();
                    let cells: Vec<String> = netpath_bench::cross_node::XnKind::ALL
                        .iter()
                        .map(|&k| {
                            format!(
                                "{} {}",
                                k.id(),
                                x.spread(k, figure, m.id)
                                    .map_or("n/a".into(), |s| num(s.median))
                            )
                        })
                        .collect();
                    println!(
                        "  {:<14} {:<12} {} ({})",
                        figure.id(),
                        m.id,
                        cells.join("  "),
                        m.unit
                    );
                }
            }
            println!("netpath-bench: wrote {}", written.json.display());
            for p in written
                .png
                .iter()
                .chain(written.scale_png.iter())
                .chain(written.curves_png.iter())
            {
                println!("netpath-bench: wrote {}", p.display());
            }
            if let Some(p) = &written.docs {
                println!("netpath-bench: wrote {}", p.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if ns::stopped() {
                eprintln!("netpath-bench: interrupted; everything it built is removed");
                ExitCode::from(130)
            } else {
                eprintln!("netpath-bench: error: {e:#}");
                ExitCode::FAILURE
            }
        }
    }
}
