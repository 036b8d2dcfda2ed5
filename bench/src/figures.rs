//! What is measured ([`Figure`]), and which figures each
//! [`Condition`] runs.
//!
//! A figure is one load with its metrics; a condition is the state the
//! datapaths are in while the figures run (nothing extra, many routes, many
//! idle conntrack entries). A new figure is a variant here plus its load in
//! [`crate::load`].

use std::{collections::BTreeMap, path::PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    load::{crr, flood, iperf, rr, udp},
    metrics::cpu::{BpfStats, ProgStats, prog_stats},
    topology::{Endpoints, Scenario, Setup, SetupKind},
};

/// Whether more or less of a metric is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One number a figure produces.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    pub id: &'static str,
    pub unit: &'static str,
    pub better: Better,
    /// Shown in the headline table and the chart.
    pub main: bool,
}

const fn m(id: &'static str, unit: &'static str, better: Better, main: bool) -> Metric {
    Metric {
        id,
        unit,
        better,
        main,
    }
}

use Better::{Higher, Lower};

const TCP: &[Metric] = &[
    m("throughput", "Gbit/s", Higher, true),
    m("retransmits", "segments", Lower, false),
    m("backlog_drops", "packets", Lower, false),
    m("receiver_out_of_order", "segments", Lower, false),
    m("receiver_socket_drops", "segments", Lower, false),
    m("sender_dsacks", "segments", Lower, false),
    m("sender_host_queue_rtx", "segments", Lower, false),
    m("sender_loss_probes", "segments", Lower, false),
    m("device_drops", "packets", Lower, false),
    m("cpu_busy", "cores", Lower, false),
];
const RR: &[Metric] = &[
    m("transactions", "1/s", Higher, true),
    m("p50", "µs", Lower, false),
    m("p99", "µs", Lower, false),
    m("cpu_per_transaction", "µs", Lower, false),
];
const CRR: &[Metric] = &[
    m("connections", "1/s", Higher, true),
    m("cpu_per_connection", "µs", Lower, false),
    m("failed_connections", "per run", Lower, false),
];
const UDP: &[Metric] = &[
    m("delivered", "kpps", Higher, true),
    m("loss", "%", Lower, false),
    m("sent", "kpps", Higher, false),
    m("cpu_per_packet", "ns", Lower, false),
];
const FLOOD: &[Metric] = &[
    m("dropped", "kpps", Higher, true),
    m("sent", "kpps", Higher, false),
    m("dropped_share", "%", Higher, false),
    m("cpu_per_drop", "ns", Lower, false),
];
const BPF: &[Metric] = &[
    m("prog_ns_per_run", "ns", Lower, true),
    m("prog_runs_per_packet", "runs", Lower, false),
    m("prog_ns_per_packet", "ns", Lower, false),
    m("delivered_with_stats", "kpps", Higher, false),
];

/// A load and its metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Figure {
    /// TCP throughput, one stream (iperf3).
    Tcp1,
    /// TCP throughput, four streams (iperf3 -P 4).
    Tcp4,
    /// Request/response, 1-byte messages.
    Rr1,
    /// Request/response, 1 KiB messages.
    Rr1k,
    /// New connections per second.
    Crr,
    /// 64-byte UDP datagrams, delivered rate and loss.
    Udp64,
    /// netpath's program run time per packet (BPF statistics on).
    BpfCost,
    /// Dropping a flood from a denied source: netpath's XDP prefilter
    /// against `iptables -t raw ... -j DROP`.
    Prefilter,
}

/// What a measurement needs besides its endpoints.
pub struct MeasureCtx<'a> {
    pub secs: f64,
    /// The setup's pinned BPF programs ([`Figure::BpfCost`]).
    pub progs: Vec<PathBuf>,
    /// The setup itself (its drop counter, [`Figure::Prefilter`]); `None`
    /// for loads that need none (the cross-node group's).
    pub setup: Option<&'a dyn Setup>,
}

pub type Values = BTreeMap<String, f64>;

impl Figure {
    /// Every figure, in report order.
    pub const ALL: [Figure; 8] = [
        Figure::Tcp1,
        Figure::Tcp4,
        Figure::Rr1,
        Figure::Rr1k,
        Figure::Crr,
        Figure::Udp64,
        Figure::BpfCost,
        Figure::Prefilter,
    ];
    /// The figures repeated under the scaling conditions.
    pub const SCALING: [Figure; 4] = [Figure::Tcp1, Figure::Rr1, Figure::Crr, Figure::Udp64];

    pub fn id(self) -> &'static str {
        match self {
            Figure::Tcp1 => "tcp_1_stream",
            Figure::Tcp4 => "tcp_4_streams",
            Figure::Rr1 => "rr_1b",
            Figure::Rr1k => "rr_1kib",
            Figure::Crr => "crr",
            Figure::Udp64 => "udp_64b",
            Figure::BpfCost => "bpf_cost",
            Figure::Prefilter => "prefilter_drop",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Figure::Tcp1 => "TCP throughput, 1 stream",
            Figure::Tcp4 => "TCP throughput, 4 streams",
            Figure::Rr1 => "request/response, 1 B",
            Figure::Rr1k => "request/response, 1 KiB",
            Figure::Crr => "new TCP connections",
            Figure::Udp64 => "UDP 64 B datagrams",
            Figure::BpfCost => "BPF program run time",
            Figure::Prefilter => "denied source flood (drop)",
        }
    }

    /// A short label for charts.
    pub fn short(self) -> &'static str {
        match self {
            Figure::Tcp1 => "TCP x1",
            Figure::Tcp4 => "TCP x4",
            Figure::Rr1 => "RR 1B",
            Figure::Rr1k => "RR 1KiB",
            Figure::Crr => "CRR",
            Figure::Udp64 => "UDP 64B",
            Figure::BpfCost => "BPF ns",
            Figure::Prefilter => "deny",
        }
    }

    pub fn metrics(self) -> &'static [Metric] {
        match self {
            Figure::Tcp1 | Figure::Tcp4 => TCP,
            Figure::Rr1 | Figure::Rr1k => RR,
            Figure::Crr => CRR,
            Figure::Udp64 => UDP,
            Figure::BpfCost => BPF,
            Figure::Prefilter => FLOOD,
        }
    }

    pub fn main_metric(self) -> Metric {
        self.metrics()[0]
    }

    /// Whether the figure means anything for a setup (`Err`: why not).
    pub fn applies_to(self, kind: SetupKind) -> Result<(), &'static str> {
        match (self, kind) {
            (Figure::BpfCost, SetupKind::Limit | SetupKind::Classic) => {
                Err("no BPF programs in this datapath")
            }
            (Figure::Prefilter, SetupKind::Limit) => Err("a bare veth pair filters nothing"),
            (Figure::Prefilter, SetupKind::Netpath) => Err(
                "the prefilter is part of the XDP program, which netpath's default \
                 configuration leaves off (see the netpath XDP column)",
            ),
            _ => Ok(()),
        }
    }

    /// Whether the figure is measured in a scenario: the flood of a denied
    /// source comes from the LAN host only.
    pub fn applies_in(self, scenario: Scenario) -> bool {
        self != Figure::Prefilter || scenario == Scenario::LanToPod
    }

    /// Runs the figure's load once.
    pub fn measure(self, ep: &Endpoints, ctx: &MeasureCtx<'_>) -> Result<Values> {
        let mut v = Values::new();
        let mut put = |k: &str, x: f64| {
            if x.is_finite() {
                v.insert(k.to_owned(), x);
            }
        };
        match self {
            Figure::Tcp1 | Figure::Tcp4 => {
                let streams = if self == Figure::Tcp1 { 1 } else { 4 };
                let r = iperf::run(ep, streams, ctx.secs)?;
                put("throughput", r.gbit_per_s);
                if let Some(x) = r.retransmits {
                    put("retransmits", x);
                }
                if let Some(e) = r.evidence {
                    put("backlog_drops", e.backlog_drops);
                    put("receiver_out_of_order", e.receiver_out_of_order);
                    put("receiver_socket_drops", e.receiver_socket_drops);
                    put("sender_dsacks", e.sender_dsacks);
                    put("sender_host_queue_rtx", e.sender_host_queue_rtx);
                    put("sender_loss_probes", e.sender_loss_probes);
                    put("device_drops", e.device_drops);
                }
                put("cpu_busy", r.cpu_cores);
            }
            Figure::Rr1 | Figure::Rr1k => {
                let size = if self == Figure::Rr1 { 1 } else { 1024 };
                let r = rr::run(ep, size, ctx.secs)?;
                put("transactions", r.tps);
                put("p50", r.p50_us);
                put("p99", r.p99_us);
                put("cpu_per_transaction", r.cpu_us_per_tx);
            }
            Figure::Crr => {
                let r = crr::run(ep, ctx.secs)?;
                put("connections", r.conn_per_s);
                put("cpu_per_connection", r.cpu_us_per_conn);
                put("failed_connections", r.errors as f64);
            }
            Figure::Udp64 => {
                let r = udp::run(ep, ctx.secs, || {})?;
                put("delivered", r.delivered_pps / 1e3);
                put("sent", r.sent_pps / 1e3);
                put("loss", r.loss * 100.0);
                put("cpu_per_packet", r.cpu_ns_per_pkt);
            }
            Figure::BpfCost => {
                anyhow::ensure!(!ctx.progs.is_empty(), "the setup pinned no BPF programs");
                let _stats = BpfStats::enable()?;
                let mut snaps: Vec<Result<ProgStats>> = Vec::new();
                let r = udp::run(ep, ctx.secs, || snaps.push(prog_stats(&ctx.progs)))?;
                let (Some(Ok(before)), Some(Ok(after))) = (snaps.first(), snaps.get(1)) else {
                    let err = snaps.into_iter().find_map(Result::err);
                    anyhow::bail!("reading program statistics failed: {err:?}");
                };
                let d = after.since(*before);
                anyhow::ensure!(
                    d.run_cnt > 0,
                    "the programs did not run (run_cnt unchanged)"
                );
                put("prog_ns_per_run", d.run_time_ns as f64 / d.run_cnt as f64);
                if r.received > 0 {
                    put("prog_runs_per_packet", d.run_cnt as f64 / r.received as f64);
                    put(
                        "prog_ns_per_packet",
                        d.run_time_ns as f64 / r.received as f64,
                    );
                }
                put("delivered_with_stats", r.delivered_pps / 1e3);
            }
            Figure::Prefilter => {
                let setup = ctx
                    .setup
                    .ok_or_else(|| anyhow::anyhow!("the prefilter figure needs its setup"))?;
                let r = flood::run(ep, ctx.secs, &|| setup.denied_drops())?;
                put("dropped", r.dropped_pps / 1e3);
                put("sent", r.sent_pps / 1e3);
                put("dropped_share", r.dropped_share * 100.0);
                put("cpu_per_drop", r.cpu_ns_per_drop);
            }
        }
        Ok(v)
    }
}

/// The figures measured under `condition`: all of them at baseline, the
/// scaling ones under load.
pub fn for_condition(condition: Condition) -> &'static [Figure] {
    match condition {
        Condition::Baseline => &Figure::ALL,
        _ => &Figure::SCALING,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique() {
        let mut ids: Vec<_> = Figure::ALL.iter().map(|f| f.id()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), Figure::ALL.len());
        for f in Figure::ALL {
            assert!(f.main_metric().main, "{f:?}");
        }
    }

    #[test]
    fn applicability() {
        assert!(Figure::BpfCost.applies_to(SetupKind::Netpath).is_ok());
        assert!(Figure::BpfCost.applies_to(SetupKind::Classic).is_err());
        assert!(Figure::BpfCost.applies_to(SetupKind::Limit).is_err());
        assert!(Figure::Tcp1.applies_to(SetupKind::Limit).is_ok());
        assert!(Figure::Prefilter.applies_to(SetupKind::Classic).is_ok());
        assert!(Figure::Prefilter.applies_to(SetupKind::Netpath).is_err());
        assert!(Figure::Prefilter.applies_to(SetupKind::NetpathXdp).is_ok());
        assert!(Figure::Prefilter.applies_in(Scenario::LanToPod));
        assert!(!Figure::Prefilter.applies_in(Scenario::PodToPod));
        assert!(Figure::Udp64.applies_in(Scenario::PodToPod));
    }
}
