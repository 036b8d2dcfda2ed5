//! The page's "Across nodes" section: the cross-node group's table (the
//! four setups side by side per figure, netpath against the classic setup
//! of the same mode), the overlay's own cost, how each setup is wired, and
//! notes read off the numbers.

use std::fmt::Write as _;

use crate::record::{cell, ratio_cell};
use crate::{
    cross_node::{FIGURES, XnKind, XnResults},
    figures::{Better, Figure},
};

/// The metrics shown per figure: the main one, and the CPU cost where the
/// figure has one.
fn shown(figure: Figure) -> Vec<(&'static str, &'static str, Better)> {
    figure
        .metrics()
        .iter()
        .filter(|m| {
            m.main
                || matches!(
                    m.id,
                    "p99" | "cpu_per_transaction" | "cpu_per_connection" | "cpu_per_packet"
                )
        })
        .map(|m| (m.id, m.unit, m.better))
        .collect()
}

/// Writes the section.
pub fn section(o: &mut String, x: &XnResults) {
    let _ = writeln!(o, "## Across nodes\n");
    let _ = writeln!(
        o,
        "Pod on node 1 → pod on node 2. Two node namespaces on a LAN namespace whose Linux \
         bridge is the switch and which routes no pod CIDR (node `i` has 10.244.i.0/24 out \
         of 10.244.0.0/16), four ways, built side by side and measured interleaved (each \
         round runs each figure on the four setups in turn, the order rotating): the classic \
         routed cluster (the CNI `bridge` plugin's pods, `ip_forward`, a kernel route to the \
         peer's pod CIDR via its node address, as flannel's `host-gw`), the classic overlay \
         (flannel's `vxlan` backend: a kernel VXLAN device with the peer's neighbour and FDB \
         entries, pods at MTU 1450), and netpath in `[cluster] mode = \"direct\"` and \
         `\"vxlan\"`. The ratio compares netpath with the classic setup of the **same \
         mode**, per round (**median [min–max]**).\n"
    );
    let _ = writeln!(
        o,
        "`{}`, {} → {}, {} round{} × {} s per figure and setup.\n",
        x.command,
        x.started,
        x.finished,
        x.rounds,
        if x.rounds == 1 { "" } else { "s" },
        x.seconds_per_figure
    );
    let _ = writeln!(
        o,
        "| figure | metric | classic direct | netpath direct | netpath / classic | classic VXLAN | netpath VXLAN | netpath / classic |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|");
    for figure in FIGURES {
        for (metric, unit, better) in shown(figure) {
            let arrow = match better {
                Better::Higher => "↑",
                Better::Lower => "↓",
            };
            let s = |k: XnKind| cell(x.spread(k, figure, metric));
            let r = |k: XnKind| ratio_cell(x.ratio(k, k.classic_of(), figure, metric));
            let _ = writeln!(
                o,
                "| {} | {metric} ({unit}) {arrow} | {} | {} | {} | {} | {} | {} |",
                figure.title(),
                s(XnKind::ClassicDirect),
                s(XnKind::NetpathDirect),
                r(XnKind::NetpathDirect),
                s(XnKind::ClassicVxlan),
                s(XnKind::NetpathVxlan),
                r(XnKind::NetpathVxlan),
            );
        }
    }
    let _ = writeln!(o);
    let notes = observations(x);
    if !notes.is_empty() {
        let _ = writeln!(o, "What the numbers say:\n");
        for n in notes {
            let _ = writeln!(o, "* {n}");
        }
        let _ = writeln!(o);
    }
    let _ = writeln!(o, "<details><summary>How each setup is wired</summary>\n");
    for (kind, rec) in &x.setups {
        let _ = writeln!(o, "**{}**\n", kind.title());
        let _ = writeln!(o, "```text");
        for l in &rec.description {
            let _ = writeln!(o, "{l}");
        }
        let _ = writeln!(o, "```\n");
    }
    let _ = writeln!(o, "</details>\n");
    let missing: Vec<String> = XnKind::ALL
        .iter()
        .flat_map(|&k| {
            FIGURES
                .iter()
                .filter(move |&&f| x.spread(k, f, f.main_metric().id).is_none())
                .filter_map(move |&f| {
                    x.missing(k, f)
                        .map(|why| format!("{} {}: {why}", k.title(), f.title()))
                })
        })
        .collect();
    if !missing.is_empty() {
        let _ = writeln!(o, "No numbers:\n");
        for m in missing {
            let _ = writeln!(o, "* {m}");
        }
        let _ = writeln!(o);
    }
}

/// Notes read off the medians: netpath against classic per mode, and what
/// the overlay costs each datapath.
pub fn observations(x: &XnResults) -> Vec<String> {
    let mut notes = Vec::new();
    for np in [XnKind::NetpathDirect, XnKind::NetpathVxlan] {
        let parts: Vec<String> = FIGURES
            .iter()
            .filter_map(|&f| {
                let m = f.main_metric();
                let r = x.ratio(np, np.classic_of(), f, m.id)?;
                Some(format!("{} {:.2}×", f.short(), r.median))
            })
            .collect();
        if !parts.is_empty() {
            notes.push(format!(
                "{} against {}: {} (higher is better for every main metric).",
                np.title(),
                np.classic_of().title(),
                parts.join(", ")
            ));
        }
    }
    for (direct, vxlan, who) in [
        (
            XnKind::ClassicDirect,
            XnKind::ClassicVxlan,
            "the classic path",
        ),
        (XnKind::NetpathDirect, XnKind::NetpathVxlan, "netpath"),
    ] {
        let parts: Vec<String> = FIGURES
            .iter()
            .filter_map(|&f| {
                let m = f.main_metric();
                let r = x.ratio(vxlan, direct, f, m.id)?;
                Some(format!("{} {:.2}×", f.short(), r.median))
            })
            .collect();
        if !parts.is_empty() {
            notes.push(format!(
                "The overlay costs {who} (VXLAN / direct): {}.",
                parts.join(", ")
            ));
        }
    }
    notes
}
