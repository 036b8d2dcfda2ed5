//! Every table and report the CLI prints, rendered from plain data into
//! text (the caller prints it): the last stage of the flow, and the one
//! place to change how netpath talks to a terminal. Each function returns
//! whole lines, each ending in a newline.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netpath_common::{Counter, Endpoint, MasqRule, NodeSettings, RouteNextHop, Stat, mac::Mac};

use crate::{
    conntrack::{self, Connection, GcReport},
    reconcile::ApplyReport,
    resolve::DesiredNode,
};

mod demo;
mod lb;
mod node;
mod nodes_demo;

pub use demo::demo;
pub use lb::{maglev, port_forwards, services, services_json};
pub use node::{conntrack_json, masquerade_list, pod_list, pretty, route_list, stats_json, status};
pub use nodes_demo::demo_nodes;

/// `netpath apply`: what changed, then one line per pod.
pub fn apply_report(instance: &str, report: &ApplyReport) -> String {
    let mut s = String::new();
    if !report.changed() {
        let _ = writeln!(s, "instance {instance}: nothing to change");
    }
    for ifname in &report.uplinks_attached {
        let _ = writeln!(s, "np_from_uplink attached to {ifname}");
    }
    for ifname in &report.uplinks_detached {
        let _ = writeln!(s, "np_from_uplink detached from {ifname}");
    }
    for line in report.frontends.iter().chain(&report.dns) {
        let _ = writeln!(s, "{line}");
    }
    for (what, pods) in [
        ("created", &report.created),
        ("recreated", &report.recreated),
        ("deleted", &report.deleted),
        ("unchanged", &report.unchanged),
    ] {
        for pod in pods {
            let addr = report
                .addresses
                .get(pod)
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = writeln!(s, "pod {pod:<16} {what:<10} {addr}");
        }
    }
    s
}

/// `netpath validate`: a one-line summary of a valid configuration.
pub fn validation(desired: &DesiredNode) -> String {
    format!(
        "{}: valid ({} pods, pod CIDR {}, {} routes, {} masquerade rules, {} port-forwards, {} \
         services)\n",
        desired.instance,
        desired.pods.len(),
        desired.pod_cidr,
        desired.routes.len(),
        desired.masquerade.len(),
        desired.port_forwards.len(),
        desired.services.len()
    )
}

/// `netpath destroy`.
pub fn destroyed(instance: &str, removed: &[String]) -> String {
    format!(
        "instance {instance}: removed {} pods and all pins\n",
        removed.len()
    )
}

/// `netpath stats`: every counter, then the sum of the drops.
pub fn stats(stats: &[(Stat, Counter)]) -> String {
    let mut s = format!("{:<24} {:>12} {:>14}\n", "COUNTER", "PACKETS", "BYTES");
    for (stat, c) in stats {
        let _ = writeln!(s, "{:<24} {:>12} {:>14}", stat.name(), c.packets, c.bytes);
    }
    let dropped: u64 = stats
        .iter()
        .filter(|(stat, _)| stat.is_drop())
        .map(|(_, c)| c.packets)
        .sum();
    let _ = writeln!(s, "{:<24} {:>12}", "(all drops)", dropped);
    s
}

/// `netpath endpoints`: the endpoint map.
pub fn endpoints(endpoints: &BTreeMap<Ipv4Addr, Endpoint>) -> String {
    let mut s = format!(
        "{:<16} {:>8} {:<18} GW MAC\n",
        "ADDRESS", "IFINDEX", "POD MAC"
    );
    for (addr, ep) in endpoints {
        let _ = writeln!(
            s,
            "{:<16} {:>8} {:<18} {}",
            addr.to_string(),
            ep.ifindex,
            Mac(ep.pod_mac).to_string(),
            Mac(ep.gw_mac)
        );
    }
    s
}

/// What `netpath routes` shows: the route and masquerade maps and the
/// settings, with interface names by ifindex where known.
pub struct RouteMaps {
    pub routes: Vec<(Ipv4Net, RouteNextHop)>,
    pub masq: Vec<(Ipv4Net, MasqRule)>,
    pub settings: NodeSettings,
    /// Interface names by ifindex in the node namespace.
    pub names: BTreeMap<u32, String>,
}

/// `netpath routes`.
pub fn routes(maps: &RouteMaps) -> String {
    let dev = |i: u32| {
        maps.names
            .get(&i)
            .cloned()
            .unwrap_or_else(|| format!("ifindex {i}"))
    };
    let mut routes = maps.routes.clone();
    routes.sort_by_key(|(n, _)| (std::cmp::Reverse(n.prefix_len()), *n));
    let mut s = String::from("routes (routes_v1; anything else: the node's FIB)\n");
    let _ = writeln!(s, "  {:<20} {:<16} DEV", "DST", "VIA");
    for (dst, hop) in routes {
        let via = Ipv4Addr::from(hop.via);
        let (via, dev) = if hop.ifindex == 0 {
            ("(local)".to_owned(), "the node's stack".to_owned())
        } else if via.is_unspecified() {
            ("(connected)".to_owned(), dev(hop.ifindex))
        } else {
            (via.to_string(), dev(hop.ifindex))
        };
        let _ = writeln!(s, "  {:<20} {:<16} {dev}", dst.to_string(), via);
    }
    s.push_str("masquerade (masq_v1)\n");
    let _ = writeln!(s, "  {:<20} {:<16} NAT ADDRESS", "SOURCE", "OUT");
    for (source, rule) in &maps.masq {
        let _ = writeln!(
            s,
            "  {:<20} {:<16} {}",
            source.to_string(),
            dev(rule.ifindex),
            Ipv4Addr::from(rule.nat_addr)
        );
    }
    let st = &maps.settings;
    let _ = writeln!(
        s,
        "settings: NAT ports {}-{}, fib lookups as {}, timeouts tcp syn/est/fin/close \
         {}/{}/{}/{}s, udp {}/{}s (stream), icmp {}s",
        st.nat_port_min,
        st.nat_port_max,
        dev(st.fib_ifindex),
        st.tcp_syn_timeout,
        st.tcp_established_timeout,
        st.tcp_fin_timeout,
        st.tcp_close_timeout,
        st.udp_timeout,
        st.udp_stream_timeout,
        st.icmp_timeout
    );
    s
}

/// `netpath conntrack list`: one line per connection, like `conntrack -L`
/// (see [`conntrack::format_table`]).
pub fn conntrack(conns: &[Connection]) -> String {
    let mut s = conntrack::format_table(conns);
    s.push('\n');
    s
}

/// `netpath conntrack gc`.
pub fn gc(r: &GcReport) -> String {
    format!(
        "removed {} expired connections and {} orphaned reverse entries; {} remain\n",
        r.removed, r.orphans, r.remaining
    )
}

#[cfg(test)]
mod tests;
