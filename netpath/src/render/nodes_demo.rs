//! `netpath demo --nodes N`: what the multi-node demo built and what to
//! try.

use std::fmt::Write as _;

use crate::{
    config::cluster::ClusterMode,
    datapath::PinDir,
    demo::{
        http::HTTP_PORT,
        lab::UPLINK,
        nodes::{BRIDGE, CLUSTER_CIDR, NodesDemo, PODS},
    },
    reconcile::ApplyReport,
};

/// What the multi-node demo built (`reports` in node order) and the
/// commands to try, for the terminal.
pub fn demo_nodes(demo: &NodesDemo, reports: &[ApplyReport]) -> String {
    let mut s = String::new();
    let how = match demo.mode {
        ClusterMode::Direct => {
            "direct routing: pod packets go unchanged to the peer's node address"
        }
        ClusterMode::Vxlan => {
            "VXLAN overlay: pod packets are encapsulated to the peer's node address"
        }
    };
    let _ = writeln!(
        s,
        "netpath demo is up: {} nodes, {how}.\n",
        demo.nodes.len()
    );
    let _ = writeln!(
        s,
        "  LAN (the switch)  netns {}  {BRIDGE} {} (a Linux bridge; no route to any pod CIDR)",
        demo.lan_netns, demo.lan_addr
    );
    let _ = writeln!(s, "  cluster CIDR      {CLUSTER_CIDR}, mode {}", demo.mode);
    for (node, report) in demo.nodes.iter().zip(reports) {
        let _ = writeln!(
            s,
            "  node {:<12}  netns {}  {UPLINK} {}  pod CIDR {}  (instance {}, a daemon serves it)",
            node.instance(),
            node.netns,
            node.address(),
            node.config.node.pod_cidr,
            node.instance()
        );
        for pod in PODS {
            let addr = report
                .addresses
                .get(pod)
                .map(ToString::to_string)
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "      pod {pod:<5} netns {:<20} eth0 {addr}/32",
                node.pod_netns(pod)
            );
        }
    }
    let (Some(first), Some(second), Some(last)) = (
        demo.nodes.first().zip(reports.first()),
        demo.nodes.get(1).zip(reports.get(1)),
        demo.nodes.last().zip(reports.last()),
    ) else {
        return s;
    };
    let addr = |(node, report): (&crate::demo::nodes::DemoNode, &ApplyReport), pod: &str| {
        report.addresses.get(pod).map_or_else(
            || format!("<{pod} on {}>", node.instance()),
            ToString::to_string,
        )
    };
    let from = first.0.pod_netns("red");
    let exe =
        std::env::current_exe().map_or_else(|_| "netpath".into(), |p| p.display().to_string());
    let i1 = first.0.instance();
    let _ = writeln!(s, "\nTry (in another terminal, as root):\n");
    let _ = writeln!(
        s,
        "  ip netns exec {from} ping -c 3 {}   # red on {} -> red on {}",
        addr(second, "red"),
        i1,
        second.0.instance()
    );
    let _ = writeln!(
        s,
        "  ip netns exec {from} curl -s http://{}:{HTTP_PORT}/   # 'hello from blue@{}, you are {}:...': \
         no masquerade inside the cluster",
        addr(last, "blue"),
        last.0.instance(),
        addr(first, "red")
    );
    let _ = writeln!(
        s,
        "  ip netns exec {from} ping -c 3 {}   # pod -> the LAN, masqueraded to {}",
        demo.lan_addr.addr(),
        first.0.address().addr()
    );
    let _ = writeln!(
        s,
        "  ip netns exec {} ip route   # the LAN knows no pod CIDR",
        demo.lan_netns
    );
    let _ = writeln!(
        s,
        "  {exe} node list --instance {i1}   # the peers and their entries in peers_v1"
    );
    let _ = writeln!(
        s,
        "  {exe} stats --instance {i1}   # {}",
        match demo.mode {
            ClusterMode::Direct => "fwd_to_peer, fwd_from_peer",
            ClusterMode::Vxlan => "tunnel_encap, tunnel_decap",
        }
    );
    let _ = writeln!(
        s,
        "  {exe} monitor --instance {i1} --type trace   # redirects and new connections, live"
    );
    let (ln, lcidr) = (last.0.instance(), last.0.config.node.pod_cidr);
    let laddr = last.0.address().addr();
    let _ = writeln!(
        s,
        "  {exe} node del {ln} --instance {i1}   # the ping to {ln}'s pods stops; then:"
    );
    let _ = writeln!(
        s,
        "  {exe} node add {ln} --address {laddr} --pod-cidr {lcidr} --instance {i1}"
    );
    if demo.mode == ClusterMode::Vxlan {
        let _ = writeln!(
            s,
            "  ip netns exec {} ip -d link show np-vxlan   # external (collect-metadata), dstport 8472",
            first.0.netns
        );
    }
    let _ = writeln!(
        s,
        "  ip netns exec {0} iptables-save; ip netns exec {0} sysctl net.ipv4.ip_forward   # empty; 0",
        first.0.netns
    );
    let _ = writeln!(
        s,
        "  bpftool map dump pinned {}",
        PinDir::for_instance(i1)
            .map(netpath_common::peer::MAP)
            .display()
    );
    let _ = writeln!(s, "\nPress Ctrl-C to remove everything.");
    s
}
