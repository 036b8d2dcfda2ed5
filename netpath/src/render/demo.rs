//! `netpath demo`: what the demo built and what to try.

use std::fmt::Write as _;

use crate::{
    config::Config,
    datapath::PinDir,
    demo::lab::{Lab, UPLINK},
    reconcile::ApplyReport,
    resolve::DesiredNode,
};

/// What the demo built and what to try, for the terminal.
pub fn demo(lab: &Lab, config: &Config, report: &ApplyReport) -> String {
    let desired = DesiredNode::resolve(config);
    let pins = PinDir::for_instance(&config.node.name);
    let node = &lab.node_netns;
    let mut s = String::new();
    let _ = writeln!(s, "netpath demo is up.\n");
    let _ = writeln!(
        s,
        "  node namespace  {node}  (uplink {UPLINK} {}, gateway {} on np0)",
        lab.node_addr, desired.gateway
    );
    let _ = writeln!(
        s,
        "  LAN host        {}  (eth0 {})",
        lab.lan_netns, lab.lan_addr
    );
    for pod in &desired.pods {
        let addr = report.addresses.get(&pod.name).copied();
        let _ = writeln!(
            s,
            "  pod {:<10}  netns {:<20} {} {}/32  host side {}",
            pod.name,
            pod.netns.to_string(),
            pod.ifname,
            addr.map(|a| a.to_string()).unwrap_or_default(),
            pod.host_ifname,
        );
    }
    let _ = writeln!(s, "  pins            {}/", pins.root().display());
    let mut pods = desired.pods.iter();
    if let (Some(a), Some(b)) = (pods.next(), pods.next()) {
        let (a_ns, b_addr) = (&a.netns, report.addresses.get(&b.name));
        let b_addr = b_addr.map(ToString::to_string).unwrap_or_default();
        let _ = writeln!(s, "\nTry (in another terminal, as root):\n");
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {b_addr}          # pod -> pod, forwarded by np_from_pod"
        );
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {}          # pod -> node (gateway)",
            desired.gateway
        );
        let _ = writeln!(
            s,
            "  ip netns exec {node} ping -c 3 {b_addr}   # node -> pod"
        );
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {}        # pod -> LAN host, masqueraded by the datapath",
            lab.lan_addr.addr()
        );
        let lan = &lab.lan_netns;
        let node_addr = lab.node_addr.addr();
        for pf in &config.port_forwards {
            let _ = writeln!(
                s,
                "  ip netns exec {lan} curl -s http://{node_addr}:{}/   # LAN host -> port-forward -> {} (DNAT by np_from_uplink)",
                pf.port, pf.to
            );
        }
        for svc in &config.services {
            let backends: Vec<String> = svc.backends.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "  ip netns exec {lan} curl -s http://{}:{}/   # LAN host -> service {} ({}; Maglev picks per connection)",
                svc.vip,
                svc.port,
                svc.name,
                backends.join(", ")
            );
            let _ = writeln!(
                s,
                "  ip netns exec {a_ns} curl -s http://{}:{}/   # pod -> service (DNAT by np_from_pod; may be a hairpin)",
                svc.vip, svc.port
            );
            let _ = writeln!(
                s,
                "  ip netns exec {node} curl -s http://{}:{}/   # node -> service (socket LB at connect())",
                svc.vip, svc.port
            );
        }
        let exe =
            std::env::current_exe().map_or_else(|_| "netpath".into(), |p| p.display().to_string());
        let _ = writeln!(
            s,
            "  {exe} conntrack list --instance {}   # translated connections",
            config.node.name
        );
        let _ = writeln!(
            s,
            "  {exe} routes --instance {}   # route and masquerade maps",
            config.node.name
        );
        let _ = writeln!(
            s,
            "  {exe} stats --instance {}   # per-verdict counters",
            config.node.name
        );
        let _ = writeln!(s, "  {exe} endpoints --instance {}", config.node.name);
        let _ = writeln!(
            s,
            "  {exe} top --instance {}   # busiest pods and drop reasons, refreshed",
            config.node.name
        );
        if let Some(addr) = crate::config::metrics::listen_address(config.node.metrics.as_ref()) {
            let _ = writeln!(
                s,
                "  curl -s http://{addr}/metrics   # Prometheus metrics of the demo's daemon"
            );
        }
        let _ = writeln!(
            s,
            "  {exe} pod add web --instance {0}; {exe} pod list --instance {0}   # through the \
             daemon that runs the demo",
            config.node.name
        );
        if !config.services.is_empty() || !config.port_forwards.is_empty() {
            let _ = writeln!(
                s,
                "  {exe} service list --instance {0}; {exe} port-forward list --instance {0}",
                config.node.name
            );
        }
        for svc in &config.services {
            let _ = writeln!(
                s,
                "  {exe} service maglev {} --instance {}   # the backends' share of the Maglev table",
                svc.name, config.node.name
            );
        }
        let _ = writeln!(
            s,
            "  ip netns exec {node} iptables-save; ip netns exec {node} nft list ruleset   # empty"
        );
        let _ = writeln!(s, "  bpftool prog show name np_from_pod");
        let _ = writeln!(
            s,
            "  bpftool map dump pinned {}",
            pins.map(netpath_common::maps::ENDPOINTS).display()
        );
        let _ = writeln!(
            s,
            "  bpftool map dump pinned {}",
            pins.map(netpath_common::maps::STATS).display()
        );
        if let Some(pod) = desired.pods.first() {
            let _ = writeln!(
                s,
                "  bpftool link show pinned {}   # the tcx link on {}",
                pins.ingress_link(&pod.host_ifname).display(),
                pod.host_ifname
            );
        }
    }
    let _ = writeln!(
        s,
        "\nExpired connections are collected every {}s. Press Ctrl-C to remove everything.",
        desired.gc_interval.as_secs()
    );
    s
}
