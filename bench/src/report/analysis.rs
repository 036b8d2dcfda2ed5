//! The page's "Reading the figures" section: the explanations the numbers
//! themselves support, computed from the run so they stay true when it is
//! run again.
//!
//! - **Against the limit**: the CPU cost of a 64-byte datagram on netpath
//!   minus the bare veth pair's, split into the program's own time (the
//!   BPF run-time statistics of the same run) and the rest (the second
//!   veth crossing a routed packet makes: a second `netif_rx` backlog pass
//!   and softirq, which the bare pair does not have).
//! - **Retransmits**: whether any packet was dropped (the CPUs' input
//!   backlogs, the namespaces' devices, the receiving sockets), and how
//!   many segments each duplicate SACK accounts for: spurious
//!   retransmissions of whole GSO packets that had arrived, reordered.
//! - **Behind the classic path**: every baseline figure where netpath's
//!   median is worse than the classic path's, and whether the rounds'
//!   spread says that is a difference at all.

use std::fmt::Write as _;

use super::{Results, Spread};
use crate::record::num;
use crate::{
    figures::{Better, Figure},
    topology::{Scenario, SetupKind},
};

fn median(
    r: &Results,
    scenario: Scenario,
    figure: Figure,
    metric: &str,
    kind: SetupKind,
) -> Option<f64> {
    r.row("baseline", scenario, figure, metric)?
        .setups
        .get(&kind)
        .map(|s| s.median)
}

/// Writes the section (nothing without baseline figures).
pub fn section(o: &mut String, r: &Results) {
    if r.summary.iter().all(|row| row.condition != "baseline") {
        return;
    }
    let _ = writeln!(o, "## Reading the figures\n");
    versus_limit(o, r);
    retransmits(o, r);
    behind_classic(o, r);
}

fn versus_limit(o: &mut String, r: &Results) {
    let _ = writeln!(o, "### Against the limit: where the nanoseconds go\n");
    let _ = writeln!(
        o,
        "The limit is one veth pair: a packet crosses one device pair and one softirq. \
         netpath's pod → LAN and LAN → pod packets cross two (the pod's veth, then the \
         uplink's), and its program runs on the way. From the 64-byte UDP figure (CPU time \
         per delivered packet, machine-wide) and the BPF statistics of the same run:\n"
    );
    let _ = writeln!(
        o,
        "| scenario | limit (ns) | netpath (ns) | difference (ns) | netpath's programs (ns per packet) | the rest: the second crossing and the redirect (ns) |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let mut within_noise = false;
    for sc in Scenario::ALL {
        let lim = median(r, sc, Figure::Udp64, "cpu_per_packet", SetupKind::Limit);
        let np = median(r, sc, Figure::Udp64, "cpu_per_packet", SetupKind::Netpath);
        let bpf = median(
            r,
            sc,
            Figure::BpfCost,
            "prog_ns_per_packet",
            SetupKind::Netpath,
        );
        let (Some(lim), Some(np)) = (lim, np) else {
            continue;
        };
        let diff = np - lim;
        let (bpf_s, rest_s) = match bpf {
            Some(b) => {
                within_noise |= diff - b < 0.0;
                (num(b), num(diff - b))
            }
            None => ("n/a".into(), "n/a".into()),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            sc.title(),
            num(lim),
            num(np),
            num(diff),
            bpf_s,
            rest_s
        );
    }
    if within_noise {
        let _ = writeln!(
            o,
            "\nThe CPU figures are machine-wide (load average at the start of this run: {}): a \
             negative \"rest\" means that difference is within what the rest of the machine \
             added to both columns.",
            r.machine.loadavg_at_start
        );
    }
    let _ = writeln!(
        o,
        "\nPod → LAN within 5 % of the limit is out of reach of any veth-based datapath: the \
         pod's packet must be handed from the pod's veth to the uplink's, and that hand-over \
         (`netif_rx` into a backlog, a softirq, the TC hook, `bpf_redirect_neigh`, the \
         uplink's transmit) is the \"rest\" column, present even if the program cost nothing. \
         LAN → pod avoids one of the two passes with `bpf_redirect_peer` (straight into the \
         pod's namespace from the uplink's ingress); pod → LAN has no such helper on veth. \
         Cilium's answer is netkit, whose pod-side transmit runs the program and redirects \
         to the uplink in the sender's own context; aya 0.14 (pinned: later versions need a \
         newer Rust than this machine has) cannot attach netkit programs, and the project \
         does not make hand-made bpf() calls, so netpath stays on veth for now. What is in \
         netpath's hands is the program column; the cost-growth section below times it per \
         path.\n"
    );
}

fn retransmits(o: &mut String, r: &Results) {
    let _ = writeln!(o, "### TCP retransmits\n");
    let _ = writeln!(
        o,
        "Per 1-stream run (baseline, median over the rounds): the retransmitted segments \
         iperf3 reports, the duplicate SACKs the sender got (each says a retransmitted \
         segment had arrived after all), and every place a packet could have been dropped.\n"
    );
    let _ = writeln!(
        o,
        "| scenario | setup | retransmits (segments) | DSACKs | segments per DSACK | receiver out-of-order | backlog drops | device drops | socket drops |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|---|---|---|");
    let mut drops_total = 0.0;
    let mut any = false;
    let mut per_dsack = Vec::new();
    for sc in Scenario::ALL {
        for kind in [SetupKind::Limit, SetupKind::Classic, SetupKind::Netpath] {
            let g = |m: &str| median(r, sc, Figure::Tcp1, m, kind);
            let (Some(rtx), Some(ds)) = (g("retransmits"), g("sender_dsacks")) else {
                continue;
            };
            any = true;
            let drops: Vec<Option<f64>> =
                ["backlog_drops", "device_drops", "receiver_socket_drops"]
                    .iter()
                    .map(|m| g(m))
                    .collect();
            drops_total += drops.iter().flatten().sum::<f64>();
            let per = if ds > 0.0 {
                per_dsack.push(rtx / ds);
                num(rtx / ds)
            } else {
                "—".into()
            };
            let cell = |v: Option<f64>| v.map_or("n/a".into(), num);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                sc.short(),
                kind.id(),
                num(rtx),
                num(ds),
                per,
                cell(g("receiver_out_of_order")),
                cell(drops[0]),
                cell(drops[1]),
                cell(drops[2]),
            );
        }
    }
    if !any {
        let _ = writeln!(
            o,
            "\n(No 1-stream TCP figures with the counters in this run.)\n"
        );
        return;
    }
    let typical = Spread::of(&per_dsack).map_or(0.0, |s| s.median);
    if drops_total == 0.0 {
        let _ = writeln!(
            o,
            "\nNo packet was dropped anywhere, on any setup: not at a CPU's input backlog, \
             not by a device, not by a receiving socket. Every retransmit is therefore \
             spurious, a segment sent again that had arrived: the receiver queued segments \
             out of order, the sender's loss detection (RACK) took the late ones for lost, and \
             the duplicate SACKs confirm it. Each DSACK accounts for some {} segments (the \
             column's median): with GSO the sender retransmits a whole 64 KB super-packet (44 MSS) at a time, so a \
             few dozen reordering events make a thousand \"retransmits\". The reordering most \
             likely comes from the veth hand-over: a veth transmit queues the packet on the backlog of the \
             CPU that sends it, and a TCP sender transmits from two CPUs (its own process, and \
             the softirq that processes the ACKs on the other CPU), so a flow's packets go \
             through two backlogs drained in parallel. The faster the path, the more packets \
             are in flight when it happens: the bare veth pair has the most. netpath's count \
             sits between the classic path's and the limit's, and like both it is made of \
             spurious retransmits, not losses: nothing is lost to fix; steering a flow's \
             transmits to one CPU (XPS/RPS) would remove the reordering for all three alike.\n",
            num(typical)
        );
    } else {
        let _ = writeln!(
            o,
            "\nSome packets were dropped in this run (see the drop columns): those \
             retransmits are losses, the rest spurious (DSACKs).\n"
        );
    }
}

fn worse(row_better: Better, ratio: Spread) -> (bool, bool) {
    match row_better {
        Better::Higher => (ratio.median < 1.0, ratio.max < 1.0),
        Better::Lower => (ratio.median > 1.0, ratio.min > 1.0),
    }
}

fn behind_classic(o: &mut String, r: &Results) {
    let _ = writeln!(o, "### Where netpath is behind the classic path\n");
    let mut lines = Vec::new();
    for row in r
        .summary
        .iter()
        .filter(|row| row.condition == "baseline" && row.main)
    {
        let Some(ratio) = row.netpath_vs_classic else {
            continue;
        };
        let (median_worse, every_round) = worse(row.better, ratio);
        if !median_worse {
            continue;
        }
        let why = if !every_round {
            "within this run's spread: in some rounds netpath was ahead, so the rounds do not \
             tell the two apart"
                .to_owned()
        } else {
            match row.figure {
                Figure::Tcp1 | Figure::Tcp4 => {
                    "bulk TCP moves 64 KB GSO packets, so per-packet savings barely show, and \
                     the throughput of two namespaces sharing two cores moves with whatever \
                     else the machine does; see the retransmit analysis above for the loss \
                     side"
                        .to_owned()
                }
                _ => "not explained by this run's counters: see the figures' spread and the \
                      notes of the run"
                    .to_owned(),
            }
        };
        lines.push(format!(
            "- {}, {} ({}): netpath / classic {:.2} [{:.2}–{:.2}]: {why}.",
            row.scenario.title(),
            row.figure.title(),
            row.metric,
            ratio.median,
            ratio.min,
            ratio.max
        ));
    }
    if lines.is_empty() {
        let _ = writeln!(
            o,
            "Nowhere at baseline: on every figure's main number netpath's median is at least \
             the classic path's.\n"
        );
    } else {
        for l in lines {
            let _ = writeln!(o, "{l}");
        }
        let _ = writeln!(o);
    }
}
