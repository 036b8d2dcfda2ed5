//! Several nodes in real namespaces (`tests/src/cluster.rs`): three nodes
//! on one bridged LAN that routes no pod CIDR, static peers, direct routing
//! and the VXLAN overlay; pods on different nodes reach each other by ping,
//! TCP and UDP and see each other's real addresses; the overlay's MTU and
//! path MTU; removing a peer; and no iptables rule and `ip_forward` = 0 on
//! every node.

use std::process::Command;

use netpath::config::cluster::ClusterMode;
use netpath_common::{
    Stat,
    peer::{Peer, peer_flags},
};
use tests::{
    cluster::{Cluster, ClusterNode},
    harness::{
        self, in_ns, ping, run_in_ns, tcp_echo_server, tcp_roundtrip, udp_echo_server,
        udp_roundtrip,
    },
};

fn stat(node: &ClusterNode, stat: Stat) -> u64 {
    node.maps().stat(stat).unwrap().packets
}

/// Runs `program args` in `ns`; its stdout and stderr, whatever its exit
/// status.
fn output(ns: &str, program: &str, args: &[&str]) -> String {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out =
        in_ns(ns, move || Command::new(&program).args(&args).output()).expect("run the program");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// No iptables or nftables rule and `ip_forward` = 0 in the node's
/// namespace: the datapath needs neither.
fn assert_no_netfilter_no_forwarding(node: &ClusterNode) {
    let ns = &node.netns;
    let forward = in_ns(ns, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read ip_forward")
    });
    assert_eq!(forward.trim(), "0", "ip_forward on {}", node.instance());
    let rules = run_in_ns(ns, "iptables-save", &[]);
    assert!(
        !rules.lines().any(|l| l.starts_with("-A")),
        "iptables rules on {}: {rules}",
        node.instance()
    );
    let ruleset = run_in_ns(ns, "nft", &["list", "ruleset"]);
    assert!(
        !ruleset.contains("chain"),
        "nftables ruleset on {}: {ruleset}",
        node.instance()
    );
}

/// Ping, TCP and UDP from node 1's pod to the pods of nodes 2 and 3, each
/// server seeing the client pod's own address; and back from node 3.
fn pods_talk_across_nodes(c: &Cluster) {
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let a = n1.pod_addr("a");
    for (i, far) in [(2u16, n2), (3, n3)] {
        let dst = far.pod_addr("a");
        assert_eq!(ping(&n1.pod_ns("a"), dst, 3), 3, "ping node 1 -> node {i}");
        let port = 7000 + i;
        let server = tcp_echo_server(&far.pod_ns("a"), dst, port, 1);
        let reply = tcp_roundtrip(&n1.pod_ns("a"), dst, port, b"hello over tcp".to_vec())
            .expect("TCP across nodes");
        assert_eq!(reply, b"hello over tcp");
        let peers = server.join().unwrap();
        assert_eq!(
            peers[0].ip(),
            a,
            "the TCP server on node {i} sees the pod's own address"
        );
        let server = udp_echo_server(&far.pod_ns("a"), dst, port, 1);
        let reply = udp_roundtrip(&n1.pod_ns("a"), dst, port, b"hello over udp".to_vec())
            .expect("UDP across nodes");
        assert_eq!(reply, b"hello over udp");
        let peers = server.join().unwrap();
        assert_eq!(
            peers[0].ip(),
            a,
            "the UDP server on node {i} sees the pod's own address"
        );
    }
    assert_eq!(
        ping(&n3.pod_ns("a"), n2.pod_addr("a"), 2),
        2,
        "ping node 3 -> node 2"
    );
    for node in &c.nodes {
        assert_no_netfilter_no_forwarding(node);
    }
}

#[test]
fn direct_routing_three_nodes_pods_reach_each_other_with_their_own_addresses() {
    let c = Cluster::new("direct", 3, ClusterMode::Direct, &["a"]);
    c.apply_all();
    pods_talk_across_nodes(&c);
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    // 3 pings, a TCP connection and a datagram to each of two nodes.
    assert!(stat(n1, Stat::FwdToPeer) >= 10);
    assert!(stat(n2, Stat::FwdFromPeer) >= 3);
    assert_eq!(stat(n1, Stat::TunnelEncap), 0);
    // The peer map: the cluster, the node's own pod CIDR, two peers.
    let entries = n1.peer_map().entries().unwrap();
    assert_eq!(entries.len(), 4, "{entries:?}");
    let to_n2 = entries
        .iter()
        .find(|(net, _)| *net == n2.config.node.pod_cidr)
        .expect("node 2's entry");
    assert_eq!(
        to_n2.1,
        Peer {
            node_addr: n2.address().octets(),
            flags: peer_flags::NODE,
            ..Peer::default()
        }
    );
    // The LAN routes no pod CIDR.
    let routes = run_in_ns(&c.lan_netns, "ip", &["-4", "route"]);
    assert!(!routes.contains("10.244."), "LAN routes: {routes}");
    // Applying again changes nothing.
    let report = n1.apply().expect("apply again");
    assert!(
        !report.programs_loaded,
        "a second apply must be a no-op: {report:?}"
    );
}

#[test]
fn vxlan_overlay_three_nodes_pods_reach_each_other_and_path_mtu_works() {
    let c = Cluster::new("vxlan", 3, ClusterMode::Vxlan, &["a"]);
    c.apply_all();
    pods_talk_across_nodes(&c);
    let (n1, n2) = (&c.nodes[0], &c.nodes[1]);
    // 3 pings, a TCP connection and a datagram to each of two nodes.
    assert!(stat(n1, Stat::TunnelEncap) >= 10);
    assert!(stat(n2, Stat::TunnelDecap) >= 3);
    assert_eq!(stat(n1, Stat::FwdToPeer), 0);
    assert_eq!(stat(n2, Stat::DropTunnelDecap), 0);
    // The overlay's MTU: the uplink's 1500 minus 50, on the device and the
    // pods.
    let mtu = |ns: &str, dev: &str| {
        let line = run_in_ns(ns, "ip", &["-o", "link", "show", "dev", dev]);
        let mut words = line.split_whitespace();
        words.find(|w| *w == "mtu");
        words.next().unwrap_or_default().to_owned()
    };
    assert_eq!(mtu(&n1.netns, "np-vxlan"), "1450");
    assert_eq!(mtu(&n1.pod_ns("a"), "eth0"), "1450");
    let details = run_in_ns(&n1.netns, "ip", &["-d", "link", "show", "np-vxlan"]);
    assert!(
        details.contains("external") && details.contains("dstport 8472"),
        "{details}"
    );
    // A DF ping of the pods' MTU (1450 = 20 + 8 + 1422) passes.
    let dst = n2.pod_addr("a").to_string();
    let pod = n1.pod_ns("a");
    let out = output(
        &pod,
        "ping",
        &["-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1422", &dst],
    );
    assert!(out.contains(" 0% packet loss"), "ping -M do -s 1422: {out}");
    // One byte more, from a pod whose own MTU would allow it: the gateway
    // answers fragmentation needed with the tunnel's MTU.
    let host_side = n1.config.pods[0]
        .host_ifname
        .clone()
        .unwrap_or_else(|| format!("np-{}", n1.config.pods[0].name));
    run_in_ns(&n1.netns, "ip", &["link", "set", &host_side, "mtu", "1500"]);
    run_in_ns(&pod, "ip", &["link", "set", "eth0", "mtu", "1500"]);
    let before = stat(n1, Stat::ReplyFragNeeded);
    let out = output(
        &pod,
        "ping",
        &["-n", "-c", "1", "-W", "2", "-M", "do", "-s", "1423", &dst],
    );
    let gw = n1.config.gateway().to_string();
    assert!(
        out.contains(&format!("From {gw}")) && out.contains("mtu = 1450"),
        "ping -M do -s 1423: {out}"
    );
    assert_eq!(stat(n1, Stat::ReplyFragNeeded), before + 1);
}

#[test]
fn removing_a_peer_withdraws_its_entry_and_nothing_else() {
    let mut c = Cluster::new("unpeer", 3, ClusterMode::Direct, &["a"]);
    c.apply_all();
    let n3_cidr = c.nodes[2].config.node.pod_cidr;
    let n3_pod = c.nodes[2].pod_addr("a");
    let n2_pod = c.nodes[1].pod_addr("a");
    let before = c.nodes[0].peer_map().entries().unwrap();
    let routes_before = c.nodes[0].maps().routes().unwrap();
    let masq_before = c.nodes[0].maps().masq().unwrap();
    assert_eq!(ping(&c.nodes[0].pod_ns("a"), n3_pod, 1), 1);

    let n3_name = c.nodes[2].instance().to_owned();
    c.nodes[0].config.peers.retain(|p| p.name != n3_name);
    let report = c.nodes[0].apply().expect("apply without node 3");
    assert!(report.created.is_empty() && report.deleted.is_empty() && report.recreated.is_empty());
    let after = c.nodes[0].peer_map().entries().unwrap();
    let expected: Vec<_> = before
        .iter()
        .filter(|(net, _)| *net != n3_cidr)
        .copied()
        .collect();
    assert_eq!(after, expected, "only node 3's entry is gone");
    assert_eq!(c.nodes[0].maps().routes().unwrap(), routes_before);
    assert_eq!(c.nodes[0].maps().masq().unwrap(), masq_before);
    // Node 2 is still reached; node 3's pods are now just in the cluster
    // (routed as usual: nobody routes them, so no reply).
    assert_eq!(ping(&c.nodes[0].pod_ns("a"), n2_pod, 2), 2);
    assert_eq!(ping(&c.nodes[0].pod_ns("a"), n3_pod, 1), 0);
    harness::block_on(async {});
}
