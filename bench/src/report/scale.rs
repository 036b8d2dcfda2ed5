//! The page's "Service scale" section: a table per figure (service counts
//! × nodes, and the ratios netpath / iptables and netpath / nftables),
//! what each node held, the chart, and notes read off the numbers (whether
//! the ratio grows with N, whether netpath's own cost stays flat, and why
//! not where it does not).

use std::{fmt::Write as _, path::Path};

use super::{Spread, files::Files};
use crate::record::{cell, num, ratio_cell};
use crate::{
    condition::thousands,
    figures::Better,
    service_scale::{METRICS, ScaleResults, nodes::Mode},
};

/// A ratio of medians, for the notes.
fn times(a: Option<Spread>, b: Option<Spread>) -> Option<f64> {
    let (a, b) = (a?.median, b?.median);
    (b != 0.0).then(|| a / b)
}

/// Writes the section.
pub fn section(o: &mut String, s: &ScaleResults, files: &Files, link: &dyn Fn(&Path) -> String) {
    let counts: Vec<String> = s
        .points
        .iter()
        .map(|p| thousands(p.services as u64))
        .collect();
    let _ = writeln!(o, "## Service scale\n");
    let _ = writeln!(
        o,
        "N ClusterIP services of two endpoints each (pods `red` and `blue`, port 80), held by \
         kube-proxy's iptables mode, kube-proxy's nftables mode and netpath: three nodes built \
         side by side for each N (the lab's node and LAN host, the two pods; the kube-proxy \
         nodes wired as the classic setup, with kube-proxy's `nat` rules and nothing else; \
         netpath in its default configuration, XDP off). The N services go in in one go: \
         one `iptables-restore --noflush`, one `nft -f`, one `netpath::reconcile::apply`. The \
         client is the LAN host, as in the LAN → pod figures: it routes the service range \
         (10.96.0.0/15) through the node and connects to the **last** service's VIP — the worst \
         case for iptables, whose `KUBE-SERVICES` chain is tried rule by rule for the first \
         packet of every connection. Each round runs every load on the three nodes in turn, \
         the order rotating; median [min–max] over the rounds. The install, the change and \
         the memory are measured once per N.\n"
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| command | `{}` |", s.command);
    let _ = writeln!(o, "| date | {} → {} |", s.started, s.finished);
    let _ = writeln!(
        o,
        "| parameters | {} services; {} round{} × {} s per load and node |",
        counts.join(" / "),
        s.rounds,
        if s.rounds == 1 { "" } else { "s" },
        s.seconds_per_figure
    );
    let _ = writeln!(o, "| tools | {} |", s.tools);
    if let Some(json) = &files.scale_json {
        let _ = writeln!(o, "| raw samples | [{}]({}) |", link(json), link(json));
    }
    let _ = writeln!(o);
    if let Some(png) = &files.scale_png {
        let _ = writeln!(
            o,
            "![new connections per second and first-packet latency p99 against the number of \
             services]({})\n",
            link(png)
        );
    }
    for m in METRICS {
        let arrow = match m.better {
            Better::Higher => "↑",
            Better::Lower => "↓",
        };
        let _ = writeln!(o, "### {} ({}) {arrow}\n", m.title, m.unit);
        let _ = writeln!(
            o,
            "| services | {} | {} | {} | netpath / iptables | netpath / nftables |\n|---|---|---|---|---|---|",
            Mode::Iptables.title(),
            Mode::Nftables.title(),
            Mode::Netpath.title()
        );
        for p in &s.points {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                thousands(p.services as u64),
                cell(p.spread(Mode::Iptables, m.id)),
                cell(p.spread(Mode::Nftables, m.id)),
                cell(p.spread(Mode::Netpath, m.id)),
                ratio_cell(p.ratio(Mode::Netpath, Mode::Iptables, m.id)),
                ratio_cell(p.ratio(Mode::Netpath, Mode::Nftables, m.id)),
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "### What each node held\n");
    let _ = writeln!(
        o,
        "| services | {} | {} | {} | netpath's maps (`bytes_memlock`) |\n|---|---|---|---|---|",
        Mode::Iptables.title(),
        Mode::Nftables.title(),
        Mode::Netpath.title()
    );
    for p in &s.points {
        let objects = |mode: Mode| {
            p.nodes
                .get(&mode)
                .and_then(|r| r.objects.clone())
                .unwrap_or_else(|| "n/a".into())
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} |",
            thousands(p.services as u64),
            objects(Mode::Iptables),
            objects(Mode::Nftables),
            objects(Mode::Netpath),
            p.spread(Mode::Netpath, "memlock")
                .map_or_else(|| "—".to_owned(), |m| format!("{} MB", num(m.median))),
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "### How\n");
    let _ = writeln!(
        o,
        "- **new connections** and **first-packet latency**: the connection-rate load of the \
           figures above (connect, send 1 byte, read 1 byte, the server closes, the client \
           closes; one connection at a time, client and servers on one CPU) to the last \
           service's VIP, port 80; each `connect()` is timed: it returns when the SYN-ACK \
           is back, so it is the first packet's way through the node (the rule walk, the \
           map lookups, the DNAT) and the answer's. The backends are both pods, each \
           answering on ports 80 and 81.\n\
         - **request/response**: one connection to the same VIP, 1-byte messages back and \
           forth as fast as they go. Established packets never see the service rules \
           (conntrack, or netpath's connection table, translate them): a control, which \
           should not move with N.\n\
         - **install**: the wall time of one `iptables-restore --noflush` (kube-proxy's \
           input: every `nat` chain declared, the jumps from PREROUTING, OUTPUT and \
           POSTROUTING), one `nft -f` (kube-proxy's `table ip kube-proxy`), one \
           `netpath::reconcile::apply` of the parsed configuration (validation, the plan \
           against the pinned maps, the map writes), with N services, on a node that had \
           none.\n\
         - **change**: the middle service's second endpoint moves from `blue:80` to \
           `blue:81` (a backend swapped). iptables: kube-proxy's iptables mode rewrites \
           every chain (one `iptables-restore --noflush` of them all, the old endpoint's \
           chain deleted with `-X`); nftables: kube-proxy's partial sync, one transaction on \
           that service's chains; netpath: an apply of the configuration with that \
           service's backends changed (it writes only that service's entries).\n\
         - **kernel memory**: `/proc/meminfo` (`SUnreclaim` + `VmallocUsed` + `Percpu`) \
           after the install minus before: what the rules or maps took in the kernel. It is \
           machine-wide, so whatever else ran meanwhile counts too (small against tens of \
           MB, not against a few kB: the small counts are noise). netpath's maps' own \
           `bytes_memlock` (frontends, backends, the Maglev chunks) is in the table above.\n"
    );

    let notes = observations(s);
    if !notes.is_empty() || !s.notes.is_empty() {
        let _ = writeln!(o, "### Notes\n");
        for n in notes.iter().chain(&s.notes) {
            let _ = writeln!(o, "- {n}");
        }
        let _ = writeln!(o);
    }
    let mut missing = Vec::new();
    for p in &s.points {
        for mode in Mode::ALL {
            for m in ["connections", "change"] {
                if p.spread(mode, m).is_none()
                    && let Some(why) = p.missing(mode, m)
                {
                    missing.push(format!(
                        "{} services, {}: {why}",
                        thousands(p.services as u64),
                        mode.title()
                    ));
                }
            }
        }
    }
    missing.dedup();
    if !missing.is_empty() {
        let _ = writeln!(o, "Without numbers, and why:\n");
        for m in missing {
            let _ = writeln!(o, "- {m}");
        }
        let _ = writeln!(o);
    }
}

/// What the numbers say about the two expectations — the ratio netpath /
/// iptables grows with N, netpath's own cost stays flat — and, where they
/// do not hold, the likely reason; and what else stands out (netpath's
/// fixed cost of an apply, memory deltas that are noise).
pub fn observations(s: &ScaleResults) -> Vec<String> {
    let mut out = Vec::new();
    let (Some(first), Some(last)) = (s.points.first(), s.points.last()) else {
        return out;
    };
    if first.services == last.services {
        return out;
    }
    let (n0, n1) = (services(first.services), services(last.services));
    let counts = s
        .points
        .iter()
        .map(|p| thousands(p.services as u64))
        .collect::<Vec<_>>()
        .join(" / ");
    for (metric, what, higher) in [
        ("connections", "connection rate", true),
        ("connect_p99", "first-packet latency p99", false),
    ] {
        let r0 = first
            .ratio(Mode::Netpath, Mode::Iptables, metric)
            .map(|s| s.median);
        let r1 = last
            .ratio(Mode::Netpath, Mode::Iptables, metric)
            .map(|s| s.median);
        if let (Some(r0), Some(r1)) = (r0, r1) {
            let grows = if higher { r1 > r0 } else { r1 < r0 };
            if grows {
                out.push(format!(
                    "netpath / iptables, {what}: {r0:.2} at {n0}, {r1:.2} at {n1}: \
                     netpath's advantage grows with the number of services, as iptables \
                     walks `KUBE-SERVICES` rule by rule for each new connection while \
                     netpath does one lookup per map."
                ));
            } else {
                out.push(format!(
                    "netpath / iptables, {what}: {r0:.2} at {n0}, {r1:.2} at {n1}: \
                     the ratio does not grow here. The first packet's rule walk is a small \
                     part of a whole connection (handshake, exchange and teardown on one CPU) \
                     until the chain is long; at these counts it stays within the rounds' \
                     spread (see the min–max)."
                ));
            }
        }
        out.extend(flatness(s, metric, what, higher, &counts));
    }
    // The control: established connections see no service rule.
    let rr: Vec<String> = Mode::ALL
        .iter()
        .filter_map(|&m| {
            let f = times(
                last.spread(m, "transactions"),
                first.spread(m, "transactions"),
            )?;
            Some(format!("{} {f:.2} ×", m.title()))
        })
        .collect();
    if !rr.is_empty() {
        out.push(format!(
            "Request/response on an established connection, from {n0} to {n1}: {} \
             (established packets skip the service rules: a change here is the machine's, \
             alike for every node, not the rules'; netpath / iptables stays {}).",
            rr.join(", "),
            s.points
                .iter()
                .filter_map(|p| p.ratio(Mode::Netpath, Mode::Iptables, "transactions"))
                .map(|r| format!("{:.2}", r.median))
                .collect::<Vec<_>>()
                .join(" / ")
        ));
    }
    // netpath's fixed cost per apply.
    let slower: Vec<String> = s
        .points
        .iter()
        .filter_map(|p| {
            let np = p.spread(Mode::Netpath, "change")?.median;
            let ipt = p.spread(Mode::Iptables, "change")?.median;
            (np > ipt).then(|| {
                format!(
                    "{} ({} s against {} s)",
                    services(p.services),
                    num(np),
                    num(ipt)
                )
            })
        })
        .collect();
    if !slower.is_empty() {
        out.push(format!(
            "netpath changes a service more slowly than iptables at {}: an apply re-plans \
             the whole node (pods, links, routes, the maps read back) and writes its state \
             file, a fixed cost of some 0.05–0.1 s that dominates while there are few rules \
             to rewrite; the service's own map writes are a few syscalls.",
            slower.join(", ")
        ));
    }
    let negative: Vec<String> = s
        .points
        .iter()
        .flat_map(|p| {
            Mode::ALL.iter().filter_map(move |&m| {
                let v = p.spread(m, "kernel_memory")?.median;
                (v < 0.0).then(|| format!("{}, {}", thousands(p.services as u64), m.title()))
            })
        })
        .collect();
    if !negative.is_empty() {
        out.push(format!(
            "Kernel memory deltas below zero ({}) are other processes freeing memory during \
             the install (the meter is machine-wide): they, and deltas of a few MB, are noise; \
             the 30,000-service figures are tens of MB above it.",
            negative.join("; ")
        ));
    }
    out
}

/// Whether netpath's own `metric` stays flat across the points; when it
/// does not, whether every node moved alike (the machine, not netpath).
fn flatness(
    s: &ScaleResults,
    metric: &str,
    what: &str,
    higher: bool,
    counts: &str,
) -> Option<String> {
    let values: Vec<f64> = s
        .points
        .iter()
        .map(|p| p.spread(Mode::Netpath, metric).map(|x| x.median))
        .collect::<Option<_>>()?;
    let (first, last) = (s.points.first()?, s.points.last()?);
    let shown = values
        .iter()
        .map(|v| num(*v))
        .collect::<Vec<_>>()
        .join(" / ");
    let f = last_over_first(&values)?;
    let head = format!("netpath's own {what} at {counts} services: {shown}");
    if (0.9..=1.1).contains(&f) {
        return Some(format!(
            "{head}: flat ({f:.2} × from the first to the last; one hash lookup for the \
             frontend, one for its table, one for the backend, whatever N)."
        ));
    }
    // The other map-based node moved alike: the machine's load, not netpath.
    let alike = times(
        last.ratio(Mode::Netpath, Mode::Nftables, metric),
        first.ratio(Mode::Netpath, Mode::Nftables, metric),
    )
    .filter(|r| (0.85..=1.15).contains(r));
    let tail = (values.len() >= 3)
        .then(|| last_over_first(&values[1..]))
        .flatten();
    let better = if higher { f > 1.0 } else { f < 1.0 };
    Some(match (alike, tail) {
        (Some(r), Some(t)) if (0.9..=1.1).contains(&t) => format!(
            "{head}: flat from the second point on ({t:.2} ×); the first differs ({f:.2} × to \
             the last) for every node alike (netpath / nftables moved {r:.2} ×): the machine \
             was busier or quieter during that point (two shared cores; the points are \
             minutes apart), not netpath's lookups, which do not depend on N."
        ),
        (None, Some(t)) if (0.9..=1.1).contains(&t) => format!(
            "{head}: flat from the second point on ({t:.2} ×); the first point differs ({f:.2} \
             × to the last), beyond what nftables' did: its spread (see the min–max) says the \
             machine was busy then (two shared cores; the points are minutes apart)."
        ),
        (Some(r), _) => format!(
            "{head}: {f:.2} × from the first to the last, and nftables (also one map lookup) \
             moved alike (netpath / nftables {r:.2} ×): the machine's load changed between the \
             points (two shared cores), not netpath's cost."
        ),
        (None, _) if better => format!(
            "{head}: {f:.2} × from the first to the last, better with more services, which no \
             lookup explains: the machine's load changed between the points."
        ),
        (None, _) => format!(
            "{head}: {f:.2} × from the first to the last: not flat. The lookups do not depend \
             on N but their memory does: tens of thousands of frontends, backends and Maglev \
             tables no longer stay in the CPU caches between connections."
        ),
    })
}

/// `1 service`, `30,000 services`.
fn services(n: usize) -> String {
    if n == 1 {
        "1 service".to_owned()
    } else {
        format!("{} services", thousands(n as u64))
    }
}

fn last_over_first(v: &[f64]) -> Option<f64> {
    let (a, b) = (*v.first()?, *v.last()?);
    (a != 0.0).then(|| b / a)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::service_scale::{ScaleFigure, ScalePoint, ScaleRecord, ScaleSample};

    fn record(conns: &[f64], p99: f64, install: f64) -> ScaleRecord {
        ScaleRecord {
            install_seconds: Some(install),
            change_seconds: Some(install / 2.0),
            kernel_memory_bytes: Some(2_000_000),
            objects: Some("things".into()),
            samples: conns
                .iter()
                .enumerate()
                .map(|(round, c)| ScaleSample {
                    round,
                    figure: ScaleFigure::Connections,
                    values: [
                        ("connections".to_owned(), *c),
                        ("connect_p99".to_owned(), p99),
                    ]
                    .into(),
                    error: None,
                })
                .collect(),
            ..ScaleRecord::default()
        }
    }

    fn results() -> ScaleResults {
        let point = |n, ipt: &[f64], np: &[f64], ipt_p99| ScalePoint {
            services: n,
            nodes: BTreeMap::from([
                (Mode::Iptables, record(ipt, ipt_p99, 1.0)),
                (Mode::Nftables, record(np, 50.0, 0.5)),
                (Mode::Netpath, record(np, 40.0, 0.1)),
            ]),
        };
        ScaleResults {
            id: "x".into(),
            started: "a".into(),
            finished: "b".into(),
            command: "cargo xtask bench -- --only service-scale".into(),
            rounds: 2,
            seconds_per_figure: 2.0,
            tools: "iptables; nft".into(),
            nodes: BTreeMap::new(),
            points: vec![
                point(1, &[10_000.0, 10_000.0], &[10_000.0, 11_000.0], 40.0),
                point(30_000, &[1000.0, 2000.0], &[10_000.0, 10_000.0], 4000.0),
            ],
            notes: vec!["a note of the run".into()],
        }
    }

    #[test]
    fn the_section_has_a_table_per_figure_with_the_ratios() {
        let mut o = String::new();
        section(&mut o, &results(), &Files::default(), &|p| {
            p.display().to_string()
        });
        assert!(o.contains("## Service scale"), "{o}");
        assert!(
            o.contains("### new connections to the last service (1/s) ↑"),
            "{o}"
        );
        // Per-round ratios: 10,000 / 1,000 and 10,000 / 2,000.
        assert!(
            o.contains(
                "| 30,000 | 1500 [1000–2000] | 10,000 | 10,000 | **7.50** [5.00–10.00] | **1.00** |"
            ),
            "{o}"
        );
        assert!(o.contains("| 1 | 10,000 | 10,500 [10,000–11,000] |"), "{o}");
        assert!(o.contains("- a note of the run"), "{o}");
        assert!(o.contains("### What each node held"), "{o}");
    }

    #[test]
    fn the_notes_say_whether_the_ratio_grows_and_netpath_stays_flat() {
        let notes = observations(&results());
        assert!(
            notes[0].contains("1.05 at 1 service, 7.50 at 30,000 services")
                && notes[0].contains("advantage grows"),
            "{notes:?}"
        );
        assert!(
            notes[1].contains("0.95 ×") && notes[1].contains("flat"),
            "{notes:?}"
        );
        // Latency: 40 / 40 at 1, 40 / 4000 at 30,000: the ratio falls, as it should.
        assert!(notes[2].contains("advantage grows"), "{notes:?}");
    }
}
