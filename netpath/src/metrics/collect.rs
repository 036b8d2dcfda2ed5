//! One scrape: what the pins say now (every counter summed over CPUs,
//! per-pod traffic, the fill of every table that can fill, SNAT port use
//! per egress address) and what the daemon measured (reconciles,
//! requests), written as Prometheus text.
//!
//! The connection table and the reverse NAT map are walked once per
//! scrape (bounded by their size, as `netpath conntrack list` walks them);
//! everything else is a handful of lookups.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    time::Instant,
};

use aya::maps::MapData;
use netpath_common::{Stat, ct_flags, maps, node_flags, pod_stats, proto};

use super::{
    DaemonMetrics, RECONCILE_BUCKETS, RequestResult,
    pods::{PodTraffic, pod_traffic},
    text::{Exposition, Kind},
};
use crate::{
    datapath::{MapsError, NodeMaps, PinDir},
    state::StateDir,
};

/// Fill of one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableFill {
    /// The stable name (`conntrack`, `nat`, ...), not the versioned pin.
    pub table: &'static str,
    pub entries: u64,
    pub max_entries: u64,
}

/// SNAT port use of one egress address and protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnatUse {
    pub address: Ipv4Addr,
    pub proto: &'static str,
    /// Distinct external ports (ICMP: echo ids) claimed on the address.
    pub ports: u64,
    /// The most ports claimed towards one destination (address, port): a
    /// destination runs out when this reaches the port range's size.
    pub busiest_destination: u64,
}

/// What the pins say at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub stats: Vec<(Stat, netpath_common::Counter)>,
    pub pods: Vec<PodTraffic>,
    pub tables: Vec<TableFill>,
    pub snat: Vec<SnatUse>,
    /// Ports in the NAT range.
    pub port_range: u64,
    /// `[node] pod_counters` as the datapath reads it.
    pub pod_counters_on: bool,
}

/// The table a pinned map is, and its stable label.
const TABLES: [(&str, &str); 7] = [
    ("conntrack", maps::CONNTRACK),
    ("nat", maps::REVNAT),
    ("endpoints", maps::ENDPOINTS),
    ("pod_stats", pod_stats::MAP),
    ("frontends", maps::FRONTENDS),
    ("backends", maps::BACKENDS),
    ("affinity", maps::AFFINITY),
];

/// Reads the snapshot of `instance` from its pins.
pub fn snapshot(instance: &str) -> Result<Snapshot, MapsError> {
    let pins = PinDir::for_instance(instance);
    let maps = NodeMaps::open_pinned(&pins)?;
    let pods = StateDir::for_instance(instance)
        .load()
        .map(|s| s.pods)
        .unwrap_or_default();
    let settings = maps.settings()?;
    let revnat = maps.revnat()?;
    let pod_traffic = pod_traffic(&maps, &pods)?;
    let mut entries: BTreeMap<&str, usize> = BTreeMap::new();
    entries.insert("conntrack", maps.conntrack()?.len());
    entries.insert("nat", revnat.len());
    entries.insert("endpoints", pod_traffic.len());
    entries.insert("pod_stats", maps.pod_counters()?.len());
    entries.insert("frontends", maps.lb().frontends()?.len());
    entries.insert("backends", maps.lb().backends()?.len());
    entries.insert("affinity", maps.lb().affinity()?.len());
    let tables = TABLES
        .iter()
        .map(|&(table, pin)| TableFill {
            table,
            entries: entries.get(table).copied().unwrap_or(0) as u64,
            max_entries: MapData::from_pin(pins.map(pin))
                .ok()
                .and_then(|m| m.info().ok())
                .map_or(0, |i| u64::from(i.max_entries())),
        })
        .collect();

    // SNAT claims: reply tuple remote → NAT address:port, no DNAT flag.
    let mut ports: BTreeMap<(Ipv4Addr, u8), BTreeSet<u16>> = BTreeMap::new();
    let mut per_dest: BTreeMap<(Ipv4Addr, u8, [u8; 4], u16), u64> = BTreeMap::new();
    for (key, rev) in &revnat {
        if rev.flags & ct_flags::DNAT != 0 {
            continue;
        }
        let addr = Ipv4Addr::from(key.daddr);
        ports
            .entry((addr, key.proto))
            .or_default()
            .insert(key.dport);
        *per_dest
            .entry((addr, key.proto, key.saddr, key.sport))
            .or_default() += 1;
    }
    let snat = ports
        .into_iter()
        .map(|((address, p), set)| SnatUse {
            address,
            proto: proto_name(p),
            ports: set.len() as u64,
            busiest_destination: per_dest
                .iter()
                .filter(|((a, pr, _, _), _)| *a == address && *pr == p)
                .map(|(_, n)| *n)
                .max()
                .unwrap_or(0),
        })
        .collect();
    Ok(Snapshot {
        stats: maps.stats()?,
        pods: pod_traffic,
        tables,
        snat,
        port_range: u64::from(settings.nat_port_max.saturating_sub(settings.nat_port_min)) + 1,
        pod_counters_on: settings.flags & node_flags::POD_COUNTERS != 0,
    })
}

fn proto_name(p: u8) -> &'static str {
    match p {
        proto::TCP => "tcp",
        proto::UDP => "udp",
        proto::ICMP => "icmp",
        _ => "other",
    }
}

/// How a counter of the stats map is exported.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    /// A verdict: what became of a packet.
    Verdict,
    /// A drop and its reason.
    Drop,
    /// A notable event or property (a new translation, a repair, ...).
    Event,
}

/// The kind of `stat` (by its name: `drop_*`, the verdict prefixes).
pub fn stat_kind(stat: Stat) -> StatKind {
    let name = stat.name();
    if stat.is_drop() {
        StatKind::Drop
    } else if ["fwd_", "pass_", "reply_", "xdp_fwd_"]
        .iter()
        .any(|p| name.starts_with(p))
        || matches!(name, "xdp_pass" | "xdp_redirect_failed" | "node_pass")
    {
        StatKind::Verdict
    } else {
        StatKind::Event
    }
}

#[expect(
    clippy::cast_precision_loss,
    reason = "counters are exported as floats"
)]
fn f(v: u64) -> f64 {
    v as f64
}

/// The text of one scrape of `instance` (with the daemon's own figures
/// when `daemon` is given).
pub fn render(instance: &str, daemon: Option<&DaemonMetrics>) -> String {
    let started = Instant::now();
    let mut e = Exposition::default();
    let snap = snapshot(instance);
    if let Err(err) = &snap {
        log::warn!("metrics: cannot read the pins of instance {instance}: {err}");
    }
    e.single(
        "netpath_datapath_up",
        Kind::Gauge,
        "1 when the datapath's pinned maps could be read for this scrape, 0 when not (then \
         no datapath series follow).",
        if snap.is_ok() { 1.0 } else { 0.0 },
    );
    if let Ok(s) = &snap {
        write_datapath(&mut e, s);
    }
    monitor_losses(&mut e, instance);
    if let Some(d) = daemon {
        write_daemon(&mut e, d);
    }
    e.single(
        "netpath_scrape_duration_seconds",
        Kind::Gauge,
        "How long reading the pins for this scrape took.",
        started.elapsed().as_secs_f64(),
    );
    e.finish()
}

/// A field of a pod's traffic.
type Field = fn(&super::pods::Traffic) -> u64;

fn write_datapath(e: &mut Exposition, s: &Snapshot) {
    for (kind, packets, bytes, label, what) in [
        (
            StatKind::Verdict,
            "netpath_verdict_packets_total",
            Some("netpath_verdict_bytes_total"),
            "verdict",
            "what the datapath did with them (forwarded, passed to the node, answered)",
        ),
        (
            StatKind::Drop,
            "netpath_drop_packets_total",
            Some("netpath_drop_bytes_total"),
            "reason",
            "dropped by the datapath, by reason",
        ),
        (
            StatKind::Event,
            "netpath_datapath_events_total",
            None,
            "event",
            "notable events (new translations, repairs, route sources)",
        ),
    ] {
        let rows: Vec<_> = s
            .stats
            .iter()
            .filter(|(st, _)| stat_kind(*st) == kind)
            .collect();
        e.family(packets, Kind::Counter, &format!("Packets {what}."));
        for (st, c) in &rows {
            e.sample(packets, &[(label, st.name())], f(c.packets));
        }
        if let Some(bytes) = bytes {
            e.family(
                bytes,
                Kind::Counter,
                &format!("Bytes of the packets {what}."),
            );
            for (st, c) in &rows {
                e.sample(bytes, &[(label, st.name())], f(c.bytes));
            }
        }
    }

    e.single(
        "netpath_pod_counters_enabled",
        Kind::Gauge,
        "1 when the datapath counts per pod ([node] pod_counters).",
        if s.pod_counters_on { 1.0 } else { 0.0 },
    );
    let fields: [(&str, &str, Field); 5] = [
        (
            "netpath_pod_rx_packets_total",
            "Frames the datapath delivered into the pod.",
            |t| t.rx_packets,
        ),
        (
            "netpath_pod_rx_bytes_total",
            "Bytes of the frames the datapath delivered into the pod.",
            |t| t.rx_bytes,
        ),
        (
            "netpath_pod_tx_packets_total",
            "Frames the pod sent into the datapath.",
            |t| t.tx_packets,
        ),
        (
            "netpath_pod_tx_bytes_total",
            "Bytes of the frames the pod sent into the datapath.",
            |t| t.tx_bytes,
        ),
        (
            "netpath_pod_tx_dropped_total",
            "Frames the pod sent that the datapath dropped.",
            |t| t.tx_dropped,
        ),
    ];
    for (name, help, get) in fields {
        e.family(name, Kind::Counter, help);
        for p in &s.pods {
            if let Some(t) = &p.traffic {
                let addr = p.address.to_string();
                e.sample(name, &[("pod", &p.name), ("address", &addr)], f(get(t)));
            }
        }
    }

    e.family(
        "netpath_map_entries",
        Kind::Gauge,
        "Entries in a datapath table (conntrack, nat, endpoints, pod_stats, frontends, \
         backends, affinity).",
    );
    for t in &s.tables {
        e.sample("netpath_map_entries", &[("map", t.table)], f(t.entries));
    }
    e.family(
        "netpath_map_max_entries",
        Kind::Gauge,
        "Capacity of a datapath table.",
    );
    for t in &s.tables {
        e.sample(
            "netpath_map_max_entries",
            &[("map", t.table)],
            f(t.max_entries),
        );
    }
    e.family(
        "netpath_map_fill_ratio",
        Kind::Gauge,
        "Entries over capacity of a datapath table (map pressure; conntrack evicts its least \
         recently used entry when full, nat refuses new connections).",
    );
    for t in &s.tables {
        let ratio = if t.max_entries == 0 {
            0.0
        } else {
            f(t.entries) / f(t.max_entries)
        };
        e.sample("netpath_map_fill_ratio", &[("map", t.table)], ratio);
    }
    e.family(
        "netpath_table_insert_failures_total",
        Kind::Counter,
        "Inserts the datapath could not make: nat (the reverse NAT table was full; the \
         packet was dropped), frags (a fragment's translation could not be recorded).",
    );
    let stat = |st: Stat| {
        s.stats
            .iter()
            .find(|(x, _)| *x == st)
            .map_or(0, |(_, c)| c.packets)
    };
    e.sample(
        "netpath_table_insert_failures_total",
        &[("table", "nat")],
        f(stat(Stat::DropNatTableFull)),
    );
    e.sample(
        "netpath_table_insert_failures_total",
        &[("table", "frags")],
        f(stat(Stat::DropFragTrackFailed)),
    );

    e.single(
        "netpath_snat_port_range_size",
        Kind::Gauge,
        "Ports in the NAT port range ([nat] port_range).",
        f(s.port_range),
    );
    e.family(
        "netpath_snat_ports_in_use",
        Kind::Gauge,
        "Distinct external ports (ICMP: echo ids) claimed on an egress address.",
    );
    for u in &s.snat {
        let addr = u.address.to_string();
        e.sample(
            "netpath_snat_ports_in_use",
            &[("address", &addr), ("proto", u.proto)],
            f(u.ports),
        );
    }
    e.family(
        "netpath_snat_busiest_destination_ports",
        Kind::Gauge,
        "The most ports an egress address has claimed towards one destination address and \
         port; new connections to it fail (drop_snat_no_port) when this reaches \
         netpath_snat_port_range_size.",
    );
    for u in &s.snat {
        let addr = u.address.to_string();
        e.sample(
            "netpath_snat_busiest_destination_ports",
            &[("address", &addr), ("proto", u.proto)],
            f(u.busiest_destination),
        );
    }
}

/// `netpath monitor`'s lost events (`events_lost_v1`, summed over CPUs),
/// by why: over the kernel's rate limit, or no room in the ring buffer.
/// Nothing when the instance's pins have no monitor maps (a datapath
/// loaded by an older version).
fn monitor_losses(e: &mut Exposition, instance: &str) {
    let pins = PinDir::for_instance(instance);
    let Ok(Some(lost)) = crate::datapath::events::pinned_lost(&pins) else {
        return;
    };
    let name = "netpath_monitor_lost_events_total";
    e.family(
        name,
        Kind::Counter,
        "Events of `netpath monitor` lost in the kernel: over the rate limit, or the ring buffer full.",
    );
    e.sample(name, &[("reason", "rate_limit")], f(lost.rate_limited));
    e.sample(name, &[("reason", "ring_full")], f(lost.ring_full));
}

fn write_daemon(e: &mut Exposition, d: &DaemonMetrics) {
    let name = "netpath_reconcile_duration_seconds";
    e.family(
        name,
        Kind::Histogram,
        "How long the daemon's reconciles (applies of the desired state) took.",
    );
    let (buckets, sum, count) = d.reconcile_histogram();
    for (i, n) in buckets.iter().enumerate() {
        let le = RECONCILE_BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_owned(), |b| super::text::format_value(*b));
        e.sample(&format!("{name}_bucket"), &[("le", &le)], f(*n));
    }
    e.sample(&format!("{name}_sum"), &[], sum);
    e.sample(&format!("{name}_count"), &[], f(count));
    e.single(
        "netpath_reconcile_errors_total",
        Kind::Counter,
        "Reconciles that failed (and were rolled back).",
        f(d.reconcile_errors()),
    );
    e.family(
        "netpath_apply_requests_total",
        Kind::Counter,
        "Requests to change the desired state (API, CNI, SIGHUP), by result.",
    );
    for r in RequestResult::ALL {
        e.sample(
            "netpath_apply_requests_total",
            &[("result", r.label())],
            f(d.requests(r)),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_stat_has_one_kind_and_verdicts_are_verdicts() {
        assert!(stat_kind(Stat::FwdLocalPod) == StatKind::Verdict);
        assert!(stat_kind(Stat::XdpPass) == StatKind::Verdict);
        assert!(stat_kind(Stat::DropSnatNoPort) == StatKind::Drop);
        assert!(stat_kind(Stat::SnatNew) == StatKind::Event);
    }

    #[test]
    fn daemon_figures_render_as_a_histogram() {
        let d = DaemonMetrics::default();
        d.reconciled(std::time::Duration::from_millis(20), true);
        let mut e = Exposition::default();
        write_daemon(&mut e, &d);
        let text = e.finish();
        assert!(text.contains("netpath_reconcile_duration_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("netpath_reconcile_duration_seconds_bucket{le=\"0.05\"} 1\n"));
        assert!(text.contains("netpath_reconcile_duration_seconds_bucket{le=\"+Inf\"} 1\n"));
        assert!(text.contains("netpath_reconcile_duration_seconds_count 1\n"));
        assert!(text.contains("netpath_apply_requests_total{result=\"failed\"} 0\n"));
    }
}
