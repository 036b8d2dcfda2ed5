//! The page's "Cost growth" section: netpath's program time per packet
//! against routes, services and connection-table entries (a table per
//! dimension and the chart), with notes read off the numbers: whether the
//! cost stays flat, and why where it does not.

use std::{fmt::Write as _, path::Path};

use super::{Spread, files::Files};
use crate::record::num;
use crate::{
    condition::thousands,
    curves::{Curve, CurveResults, Dimension},
    service_scale::{ScaleResults, nodes::Mode},
};

/// `median [p25–p75]`.
fn cell(s: Spread) -> String {
    if num(s.p25) == num(s.p75) {
        num(s.median)
    } else {
        format!("{} [{}–{}]", num(s.median), num(s.p25), num(s.p75))
    }
}

/// Last point's median over the first's, and the two N.
fn growth(c: &Curve, f: impl Fn(&crate::curves::CurvePoint) -> Spread) -> Option<(f64, u64, u64)> {
    let (first, last) = (c.points.first()?, c.points.last()?);
    let (a, b) = (f(first).median, f(last).median);
    (a > 0.0 && c.points.len() > 1).then(|| (b / a, first.n, last.n))
}

/// Why a dimension's cost may grow, when it does.
fn why(d: Dimension) -> &'static str {
    match d {
        Dimension::Routes => {
            "the route map is an LPM trie: a lookup walks up to 32 nodes, and with more \
             prefixes more of those nodes are out of the CPU's caches"
        }
        Dimension::Services => {
            "the frontend and backend lookups are hashes and the Maglev table one array \
             element: only cache misses on bigger maps can move them"
        }
        Dimension::Conntrack => {
            "the connection table is a hash: the lookup stays one bucket, but a bigger table \
             spreads over more memory than the caches hold, so the entry is more often a \
             cache miss; a new connection also inserts into both the connection and the \
             reverse-NAT tables"
        }
    }
}

/// A note on one figure of a curve.
fn note(o: &mut String, c: &Curve, what: &str, f: impl Fn(&crate::curves::CurvePoint) -> Spread) {
    let Some((g, n0, n1)) = growth(c, f) else {
        return;
    };
    let verdict = if (0.8..=1.25).contains(&g) {
        "flat".to_owned()
    } else if g < 0.8 {
        "lower at the end: the first point ran on a busier moment of the shared cores, not a \
         cheaper lookup"
            .to_owned()
    } else {
        format!("grows: {}", why(c.dimension))
    };
    let _ = writeln!(
        o,
        "- {}, {what}: {g:.2} × from {} to {}, {verdict}.",
        c.dimension.title(),
        thousands(n0),
        thousands(n1),
    );
}

/// Writes the section.
pub fn section(
    o: &mut String,
    c: &CurveResults,
    scale: Option<&ScaleResults>,
    datapath_ns: Option<f64>,
    files: &Files,
    link: &dyn Fn(&Path) -> String,
) {
    let _ = writeln!(o, "## Cost growth\n");
    let _ = writeln!(
        o,
        "The time netpath's pod program (`np_from_pod`) spends on one packet as the state it \
         looks things up in grows. Each point loads a private copy of the datapath (attached \
         nowhere), fills its maps to N and runs the program on a crafted packet with \
         `BPF_PROG_TEST_RUN`, one run per call ({} calls per figure and point; the kernel \
         times the program alone, so this is the program's cost, not the stack's). One run \
         per call rather than the kernel's `repeat`: a repeated run sees the packet the last \
         run translated. Every verdict is checked (a redirect, the path the curve is about). \
         **established**: the same connection's packet again; **new connection**: a fresh \
         source port per run (the lookups, the two table inserts, the NAT port, the \
         service's pick).\n",
        thousands(c.runs as u64)
    );
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| date | {} → {} |", c.started, c.finished);
    if let Some(f) = c.floor_ns {
        let _ = writeln!(
            o,
            "| the timing's floor | {} ns per run: a program that returns at once \
             (`np_to_uplink` on a forwarded packet), in every figure below |",
            cell(f)
        );
    }
    if let Some(j) = &files.curves_json {
        let name = j
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let _ = writeln!(o, "| raw samples | [{name}]({}) |", link(j));
    }
    let _ = writeln!(o);
    if let Some(p) = &files.curves_png {
        let _ = writeln!(o, "![cost growth]({})\n", link(p));
    }
    for curve in &c.curves {
        let d = curve.dimension;
        let _ = writeln!(o, "### against {}\n", d.title());
        let _ = writeln!(o, "Packet: {}.\n", d.packet());
        let _ = writeln!(
            o,
            "| N | established (ns per packet) ↓ | new connection (ns per packet) ↓ | filling the maps (s) |"
        );
        let _ = writeln!(o, "|---|---|---|---|");
        for p in &curve.points {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                thousands(p.n),
                cell(p.established_ns),
                cell(p.new_ns),
                num(p.fill_secs)
            );
        }
        let _ = writeln!(o);
    }
    if !c.overheads.is_empty() {
        let _ = writeln!(o, "### What observability costs\n");
        let _ = writeln!(
            o,
            "The established SNAT packet with each feature off and on, in alternating \
             blocks of runs (so that drift hits both alike); ns per packet, median \
             [p25–p75]. The budget is 2 % of the datapath. The program's time is only part \
             of what a packet costs the node: the last column sets the difference against \
             the whole CPU time of a pod → LAN 64-byte datagram on netpath ({}).\n",
            datapath_ns.map_or("not measured in the run shown".to_owned(), |n| format!(
                "{} ns in the figures above",
                num(n)
            ))
        );
        let _ = writeln!(
            o,
            "| feature | off (ns) | on (ns) | on / off, program time | difference / the datapath's CPU per packet |"
        );
        let _ = writeln!(o, "|---|---|---|---|---|");
        for ov in &c.overheads {
            let share = datapath_ns.map_or("—".to_owned(), |n| {
                format!("{:.2} %", (ov.on_ns.median - ov.off_ns.median) / n * 100.0)
            });
            let _ = writeln!(
                o,
                "| {} | {} | {} | **{:.3}** | **{share}** |",
                ov.what,
                cell(ov.off_ns),
                cell(ov.on_ns),
                ov.ratio()
            );
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "### The classic path beside it\n");
    let _ = writeln!(
        o,
        "The classic path has no per-packet program to time this way. Its route lookup (the \
         kernel FIB's LC-trie) and nf_conntrack's hash do not grow with N either, which the \
         routes and conntrack conditions of the figures above show end to end. Its service \
         rules do: kube-proxy's `KUBE-SERVICES` chain is walked rule by rule for every new \
         connection. The chart's fourth panel draws that curve from the service-scale group \
         (first-packet latency p50 to the last service, end to end through the node)."
    );
    if let Some(s) = scale {
        let first = s.points.first();
        let last = s.points.last();
        if let (Some(a), Some(b)) = (first, last)
            && a.services != b.services
        {
            for m in Mode::ALL {
                if let (Some(x), Some(y)) = (a.spread(m, "connect_p50"), b.spread(m, "connect_p50"))
                {
                    let _ = writeln!(
                        o,
                        "- {}: {} µs at {} service{}, {} µs at {} ({:.2} ×).",
                        m.title(),
                        num(x.median),
                        thousands(a.services as u64),
                        if a.services == 1 { "" } else { "s" },
                        num(y.median),
                        thousands(b.services as u64),
                        y.median / x.median
                    );
                }
            }
        }
    }
    let _ = writeln!(o, "\n### Notes\n");
    for curve in &c.curves {
        note(o, curve, "established", |p| p.established_ns);
        note(o, curve, "new connection", |p| p.new_ns);
    }
    for n in &c.notes {
        let _ = writeln!(o, "- {n}");
    }
    let _ = writeln!(o);
}
