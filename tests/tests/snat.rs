//! Routing, connection tracking and masquerade in real namespaces, with no
//! iptables and no `ip_forward`: the LAN host (and the router, and the far
//! host behind it) have no route to the pod CIDR, so a reply reaches a pod
//! only if the datapath translated the flow and translates the reply back.

use std::{
    collections::BTreeSet,
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::fs::MetadataExt,
    path::PathBuf,
    time::{Duration, Instant},
};

use netpath::{
    config::{MasqueradeConfig, PortRange, RouteConfig},
    conntrack, daemon,
    datapath::{Datapath, LoadOptions, PinDir},
    reconcile,
    state::StateDir,
    sys::{netns::Netns, sysctl},
};
use netpath_common::{CtEntry, CtKey, NodeSettings, RevNat, Stat, ct_state, progs, reply_key};
use tests::harness::{
    IcmpWatch, TestNode, block_on, default_ident, ip_snmp_counter, ping, ping_with_ident, pod,
    run_in_ns, tcp_connect, tcp_echo_server, tcp_echo_server_concurrent, tcp_exchange,
    tcp_roundtrip, udp_connected_roundtrip, udp_echo_server, udp_roundtrip,
};

/// The LAN host.
const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The node's address on the uplink: what the LAN sees as the source.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// The far host behind the router.
const FAR: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 2);
/// The node's address on its second uplink, towards the router.
const NODE1: Ipv4Addr = Ipv4Addr::new(192, 168, 60, 2);

/// `[[masquerade]]` with every default: the pod CIDR, out of the uplink,
/// behind its address.
fn masquerade() -> MasqueradeConfig {
    MasqueradeConfig {
        source: None,
        out: None,
        address: None,
    }
}

/// A lab node whose pods are masqueraded out of the uplink.
fn snat_node(tag: &str, pods: &[&str]) -> TestNode {
    let mut node = TestNode::new(tag, pods);
    node.config.masquerade.push(masquerade());
    node
}

fn stat(node: &TestNode, stat: Stat) -> u64 {
    node.maps().stat(stat).unwrap().packets
}

fn peer_ips(peers: &[SocketAddr]) -> BTreeSet<IpAddr> {
    peers.iter().map(SocketAddr::ip).collect()
}

/// Neither iptables nor nftables has a rule (or a table) in `ns`.
fn assert_no_netfilter_rules(ns: &str) {
    let iptables = run_in_ns(ns, "iptables-save", &[]);
    let rules: Vec<&str> = iptables
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(rules.is_empty(), "iptables-save in {ns}:\n{iptables}");
    let nft = run_in_ns(ns, "nft", &["list", "ruleset"]);
    assert!(nft.trim().is_empty(), "nft list ruleset in {ns}:\n{nft}");
}

/// The node's kernel forwards nothing: `ip_forward` is 0 (only np0 has
/// forwarding on, for `bpf_fib_lookup`).
fn assert_kernel_does_not_forward(node: &TestNode) {
    let ns = Netns::open(&node.lab.node_netns).unwrap();
    assert_eq!(sysctl::read_sysctl(&ns, "ipv4/ip_forward").unwrap(), "0");
    assert_eq!(
        sysctl::read_sysctl(&ns, "ipv4/conf/np0/forwarding").unwrap(),
        "1"
    );
    assert_eq!(
        sysctl::read_sysctl(&ns, "ipv4/conf/uplink0/forwarding").unwrap(),
        "0"
    );
}

#[test]
fn pods_reach_the_lan_host_through_snat_with_tcp_udp_and_ping() {
    let node = snat_node("snat", &["red", "blue"]);
    assert_no_netfilter_rules(&node.lab.node_netns);
    node.apply().expect("apply");
    assert_kernel_does_not_forward(&node);
    assert_no_netfilter_rules(&node.lab.node_netns);
    let node_ns = &node.lab.node_netns;
    let forwarded_before = ip_snmp_counter(node_ns, "ForwDatagrams");
    let (red, blue) = (node.pod_ns("red"), node.pod_ns("blue"));

    let watch = IcmpWatch::start(&node.lab.lan_netns);
    assert_eq!(ping(&red, LAN, 3), 3, "ping red -> LAN host");
    assert_eq!(ping(&blue, LAN, 3), 3, "ping blue -> LAN host");
    let sources: BTreeSet<Ipv4Addr> = watch.stop().into_iter().collect();
    assert_eq!(sources, BTreeSet::from([NODE]), "echo request sources");

    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 8080, 2);
    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    for pod in [&red, &blue] {
        let got = tcp_roundtrip(pod, LAN, 8080, payload.clone()).expect("TCP pod -> LAN");
        assert_eq!(got, payload);
    }
    let peers = server.join().unwrap();
    assert_eq!(peer_ips(&peers), BTreeSet::from([IpAddr::V4(NODE)]));

    let server = udp_echo_server(&node.lab.lan_netns, LAN, 5353, 2);
    for pod in [&red, &blue] {
        let got = udp_roundtrip(pod, LAN, 5353, b"over udp".to_vec()).expect("UDP pod -> LAN");
        assert_eq!(got, b"over udp");
    }
    let peers = server.join().unwrap();
    assert_eq!(peer_ips(&peers), BTreeSet::from([IpAddr::V4(NODE)]));

    assert!(stat(&node, Stat::SnatNew) >= 2 + 2 + 2, "snat_new");
    assert!(stat(&node, Stat::FwdRevNat) >= 6 + 4 + 2, "fwd_revnat");
    assert!(stat(&node, Stat::FwdRouted) >= 6 + 4 + 2, "fwd_routed");
    assert_eq!(
        ip_snmp_counter(node_ns, "ForwDatagrams"),
        forwarded_before,
        "the node's kernel forwarded pod traffic"
    );
    assert_no_netfilter_rules(node_ns);
    assert_no_netfilter_rules(&node.lab.lan_netns);
}

#[test]
fn the_default_route_of_the_uplink_gateway_is_used_from_the_route_map() {
    let mut node = snat_node("gwroute", &["red"]);
    node.config.node.uplink.as_mut().unwrap().gateway = Some(LAN);
    node.apply().expect("apply");
    let routes = node.maps().routes().unwrap();
    let default = routes
        .iter()
        .find(|(n, _)| n.prefix_len() == 0)
        .expect("default route in routes_v1");
    assert_eq!(default.1.via, LAN.octets());
    // The uplink's own network stays directly connected.
    let connected = routes
        .iter()
        .find(|(n, _)| *n == "192.168.50.0/24".parse().unwrap())
        .expect("connected route of the uplink");
    assert_eq!(connected.1.via, [0; 4]);

    let before = stat(&node, Stat::RouteMapHit);
    assert_eq!(ping(&node.pod_ns("red"), LAN, 2), 2);
    assert!(stat(&node, Stat::RouteMapHit) >= before + 2);
}

#[test]
fn two_pods_on_the_same_source_port_get_distinct_nat_ports() {
    let node = snat_node("collide", &["red", "blue"]);
    node.apply().expect("apply");
    let server = tcp_echo_server_concurrent(&node.lab.lan_netns, LAN, 8081, 2);
    let changed_before = stat(&node, Stat::SnatPortChanged);
    let mut a = tcp_connect(&node.pod_ns("red"), LAN, 8081, Some(40001)).expect("red");
    let mut b = tcp_connect(&node.pod_ns("blue"), LAN, 8081, Some(40001)).expect("blue");
    assert_eq!(tcp_exchange(&mut a, b"from red").unwrap(), b"from red");
    assert_eq!(tcp_exchange(&mut b, b"from blue").unwrap(), b"from blue");
    drop((a, b));
    let peers = server.join().unwrap();
    assert_eq!(peer_ips(&peers), BTreeSet::from([IpAddr::V4(NODE)]));
    let ports: BTreeSet<u16> = peers.iter().map(SocketAddr::port).collect();
    assert_eq!(
        ports.len(),
        2,
        "both connections got one NAT port: {peers:?}"
    );
    assert!(
        ports.contains(&40001),
        "the first keeps its port: {peers:?}"
    );
    assert!(stat(&node, Stat::SnatPortChanged) > changed_before);
}

#[test]
fn conntrack_list_shows_open_flows_with_state_and_nat_mapping() {
    let node = snat_node("ctlist", &["red"]);
    node.apply().expect("apply");
    let red = node.pod_ns("red");
    let red_addr = node.pod_addr("red");
    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 8082, 1);
    let mut stream = tcp_connect(&red, LAN, 8082, None).expect("connect");
    assert_eq!(tcp_exchange(&mut stream, b"hold").unwrap(), b"hold");
    let local = stream.local_addr().unwrap();
    let udp_server = udp_echo_server(&node.lab.lan_netns, LAN, 5354, 1);
    udp_roundtrip(&red, LAN, 5354, b"u".to_vec()).expect("UDP");
    udp_server.join().unwrap();

    let conns = conntrack::list(&node.maps()).unwrap();
    let tcp = conns
        .iter()
        .find(|c| c.orig.proto == 6 && c.source().port() == local.port())
        .unwrap_or_else(|| panic!("no entry for {local}: {conns:?}"));
    assert_eq!(*tcp.source().ip(), red_addr);
    assert_eq!(tcp.destination().to_string(), format!("{LAN}:8082"));
    assert_eq!(*tcp.nat().ip(), NODE);
    assert_eq!(tcp.entry.state, ct_state::TCP_ESTABLISHED, "{tcp:?}");
    assert!(tcp.revnat.is_some(), "reverse entry of {tcp:?}");
    assert!(
        tcp.entry.packets_orig >= 3 && tcp.entry.packets_reply >= 2,
        "{tcp:?}"
    );
    assert!(!tcp.expired && tcp.expires_in > Duration::from_secs(3600));

    let udp = conns
        .iter()
        .find(|c| c.orig.proto == 17 && c.destination().port() == 5354)
        .unwrap_or_else(|| panic!("no UDP entry: {conns:?}"));
    assert_eq!(*udp.source().ip(), red_addr);
    assert_eq!(*udp.nat().ip(), NODE);
    assert_eq!(udp.entry.state, ct_state::UDP_REPLIED, "{udp:?}");

    let table = conntrack::format_table(&conns);
    let line = table
        .lines()
        .find(|l| l.contains(&format!("{red_addr}:{}", local.port())))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        line.starts_with("tcp") && line.contains("ESTABLISHED") && line.contains(&NODE.to_string()),
        "{table}"
    );
    assert!(!line.contains("no reverse entry"), "{table}");

    // Nothing is expired yet: GC keeps both.
    let report = conntrack::gc(&mut node.maps(), conntrack::now_ns()).unwrap();
    assert_eq!(report.removed, 0);
    assert_eq!(report.remaining, conns.len());
    drop(stream);
    server.join().unwrap();
}

#[test]
fn one_source_is_masqueraded_out_of_two_uplinks_each_with_its_address() {
    let mut node = TestNode::new("twoup", &["red"]);
    node.add_router();
    let routed = node.routed.clone().unwrap();
    node.config.node.uplink.as_mut().unwrap().gateway = Some(LAN);
    node.config.routes.push(RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some(routed.router_addr.addr()),
        dev: Some("uplink1".into()),
    });
    for out in ["uplink0", "uplink1"] {
        node.config.masquerade.push(MasqueradeConfig {
            source: None,
            out: Some(out.into()),
            address: None,
        });
    }
    node.apply().expect("apply");
    assert_eq!(node.maps().masq().unwrap().len(), 2);
    let red = node.pod_ns("red");

    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 9100, 1);
    let got = tcp_roundtrip(&red, LAN, 9100, b"via uplink0".to_vec());
    assert_eq!(got.expect("TCP red -> LAN host"), b"via uplink0");
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(NODE)])
    );
    let server = tcp_echo_server(&routed.far_netns, FAR, 9101, 1);
    let got = tcp_roundtrip(&red, FAR, 9101, b"via uplink1".to_vec());
    assert_eq!(got.expect("TCP red -> far host"), b"via uplink1");
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(NODE1)])
    );
    assert!(!node.apply().unwrap().changed(), "idempotent");
}

#[test]
fn a_declared_route_via_a_router_reaches_the_far_host() {
    let mut node = TestNode::new("routed", &["red", "blue"]);
    node.add_router();
    let routed = node.routed.clone().unwrap();
    node.config.routes.push(RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some(routed.router_addr.addr()),
        dev: Some("uplink1".into()),
    });
    node.config.masquerade.push(MasqueradeConfig {
        source: None,
        out: Some("uplink1".into()),
        address: None,
    });
    let report = node.apply().expect("apply");
    assert_eq!(report.uplinks_attached, vec!["uplink1"]);
    let pins = PinDir::for_instance(node.instance());
    assert!(pins.ingress_link("uplink1").exists());
    assert!(!pins.ingress_link("uplink0").exists());
    let masq = node.maps().masq().unwrap();
    assert_eq!(masq.len(), 1);
    assert_eq!(masq[0].1.nat_addr, NODE1.octets());

    let map_hits = stat(&node, Stat::RouteMapHit);
    let far_ns = routed.far_netns.clone();
    let watch = IcmpWatch::start(&far_ns);
    for pod in ["red", "blue"] {
        assert_eq!(ping(&node.pod_ns(pod), FAR, 2), 2, "ping {pod} -> far host");
    }
    assert_eq!(
        watch.stop().into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([NODE1])
    );
    let server = tcp_echo_server(&far_ns, FAR, 9000, 2);
    for pod in ["red", "blue"] {
        let got = tcp_roundtrip(&node.pod_ns(pod), FAR, 9000, b"far away".to_vec());
        assert_eq!(got.expect("TCP pod -> far host"), b"far away");
    }
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(NODE1)])
    );
    let server = udp_echo_server(&far_ns, FAR, 9001, 1);
    let got = udp_roundtrip(&node.pod_ns("red"), FAR, 9001, b"far udp".to_vec());
    assert_eq!(got.expect("UDP pod -> far host"), b"far udp");
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(NODE1)])
    );
    assert!(stat(&node, Stat::RouteMapHit) >= map_hits + 4 + 6);
    assert_no_netfilter_rules(&node.lab.node_netns);
    assert_no_netfilter_rules(&routed.router_netns);
}

#[test]
fn a_thousand_short_connections_succeed_and_are_collected_once_idle() {
    const N: usize = 1000;
    let mut node = snat_node("thousand", &["red"]);
    node.config.conntrack.tcp_fin_timeout = 1;
    node.config.conntrack.tcp_close_timeout = 1;
    node.config.conntrack.tcp_syn_timeout = 1;
    node.apply().expect("apply");
    let red = node.pod_ns("red");
    let new_before = stat(&node, Stat::SnatNew);
    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 8083, N);
    let failures: Vec<String> = tests::harness::in_ns(&red, move || {
        let mut failures = Vec::new();
        for i in 0..N {
            let res = std::net::TcpStream::connect_timeout(
                &SocketAddr::from((LAN, 8083)),
                Duration::from_secs(3),
            )
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                tcp_exchange(&mut s, format!("conn {i}").as_bytes())
            });
            if let Err(e) = res {
                failures.push(format!("connection {i}: {e}"));
            }
        }
        failures
    });
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), N);
    assert_eq!(peer_ips(&peers), BTreeSet::from([IpAddr::V4(NODE)]));
    assert!(stat(&node, Stat::SnatNew) >= new_before + N as u64);
    assert_no_netfilter_rules(&node.lab.node_netns);

    let tracked = node.maps().conntrack().unwrap().len();
    assert!(tracked > 0, "no connection was tracked");
    // Closed connections expire after a second; GC removes them and their
    // reverse entries.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut removed = 0;
    loop {
        let mut maps = node.maps();
        let r = conntrack::gc(&mut maps, conntrack::now_ns()).unwrap();
        removed += r.removed;
        if maps.conntrack().unwrap().is_empty() && maps.revnat().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "entries left after GC: {}",
            conntrack::format_table(&conntrack::list(&maps).unwrap())
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(removed >= tracked, "removed {removed} of {tracked}");
}

#[test]
fn an_icmp_port_unreachable_reaches_the_pod() {
    let node = snat_node("icmperr", &["red"]);
    node.apply().expect("apply");
    let before = stat(&node, Stat::IcmpErrorRevNat);
    // Nothing listens on UDP port 9 of the LAN host.
    let err = udp_connected_roundtrip(&node.pod_ns("red"), LAN, 9, b"anyone?".to_vec())
        .expect_err("nothing listens on port 9");
    assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{err}");
    assert!(stat(&node, Stat::IcmpErrorRevNat) > before);
}

#[test]
fn the_nodes_own_traffic_still_works() {
    let node = snat_node("nodeown", &["red"]);
    node.apply().expect("apply");
    let node_ns = &node.lab.node_netns;
    // Pod flows first, so that np_from_uplink has translations to look up.
    assert_eq!(ping(&node.pod_ns("red"), LAN, 1), 1);
    let pass_before = stat(&node, Stat::PassUplink);
    // Another echo identifier than the pod's: the pod's flow holds its
    // identifier on the node's address (see the report on NAT clashes).
    let ident = default_ident().wrapping_add(1);
    assert_eq!(
        ping_with_ident(node_ns, LAN, 3, ident),
        3,
        "node -> LAN host"
    );
    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 8084, 1);
    let got = tcp_roundtrip(node_ns, LAN, 8084, b"from the node".to_vec()).expect("node TCP");
    assert_eq!(got, b"from the node");
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(NODE)])
    );
    // The LAN host reaches the node too.
    assert_eq!(ping(&node.lab.lan_netns, NODE, 2), 2, "LAN host -> node");
    assert!(stat(&node, Stat::PassUplink) >= pass_before + 3 + 2);
}

#[test]
fn an_address_of_the_pod_cidr_that_no_pod_holds_never_leaves_the_node() {
    let mut node = snat_node("podcidr", &["red"]);
    node.config.node.uplink.as_mut().unwrap().gateway = Some(LAN);
    node.apply().expect("apply");
    let routes = node.maps().routes().unwrap();
    let cidr = node.config.node.pod_cidr;
    assert!(
        routes.iter().any(|(n, h)| *n == cidr && h.ifindex == 0),
        "{cidr} -> the node: {routes:?}"
    );
    let before = stat(&node, Stat::FwdRouted);
    let unused = "10.200.0.250".parse().unwrap();
    assert_eq!(ping(&node.pod_ns("red"), unused, 1), 0);
    assert_eq!(stat(&node, Stat::FwdRouted), before, "sent out of the node");
}

#[test]
fn a_pod_never_takes_the_port_of_the_nodes_own_connection() {
    let node = snat_node("nodeport", &["red"]);
    node.apply().expect("apply");
    let server = tcp_echo_server_concurrent(&node.lab.lan_netns, LAN, 9200, 2);
    // The node's own connection from port 45678 to LAN:9200...
    let mut own = tcp_connect(&node.lab.node_netns, LAN, 9200, Some(45678)).expect("node -> LAN");
    // ...and a pod connection from the same port to the same peer.
    let mut pods = tcp_connect(&node.pod_ns("red"), LAN, 9200, Some(45678)).expect("pod -> LAN");
    assert_eq!(tcp_exchange(&mut pods, b"pod").unwrap(), b"pod");
    assert_eq!(tcp_exchange(&mut own, b"node").unwrap(), b"node");
    drop((own, pods));
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.ip() == IpAddr::V4(NODE)));
    assert!(
        peers.iter().any(|p| p.port() == 45678) && peers.iter().any(|p| p.port() != 45678),
        "the pod got another port: {peers:?}"
    );
    assert!(stat(&node, Stat::SnatPortChanged) >= 1);
}

#[test]
fn a_node_connection_after_a_pods_on_the_same_port_keeps_its_replies() {
    let node = snat_node("nodeafter", &["red"]);
    node.apply().expect("apply");
    let server = tcp_echo_server_concurrent(&node.lab.lan_netns, LAN, 9201, 2);
    // The pod's connection first: it keeps 45679 on the node's address...
    let mut pods = tcp_connect(&node.pod_ns("red"), LAN, 9201, Some(45679)).expect("pod -> LAN");
    assert_eq!(tcp_exchange(&mut pods, b"pod").unwrap(), b"pod");
    // ...then the node's own connection from the same port to the same
    // peer: np_to_uplink moves it to a free port, and its replies reach
    // the node, not the pod.
    let mut own = tcp_connect(&node.lab.node_netns, LAN, 9201, Some(45679)).expect("node -> LAN");
    assert_eq!(tcp_exchange(&mut own, b"node").unwrap(), b"node");
    assert_eq!(tcp_exchange(&mut pods, b"pod again").unwrap(), b"pod again");
    drop((own, pods));
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), 2);
    assert!(peers.iter().all(|p| p.ip() == IpAddr::V4(NODE)));
    assert!(
        peers.iter().any(|p| p.port() == 45679) && peers.iter().any(|p| p.port() != 45679),
        "the node's connection was moved: {peers:?}"
    );
    assert!(stat(&node, Stat::NodeNatNew) >= 1);
    let maps = node.maps();
    let broken = conntrack::check_nat_invariants(
        &maps.conntrack().unwrap(),
        &maps.revnat().unwrap(),
        &maps.settings().unwrap(),
        conntrack::now_ns(),
    );
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn pods_reach_the_nodes_own_addresses() {
    // With a default route in the route map, which covers them.
    let mut node = snat_node("podnode", &["red"]);
    node.config.node.uplink.as_mut().unwrap().gateway = Some(LAN);
    node.apply().expect("apply");
    let routes = node.maps().routes().unwrap();
    for local in [NODE, node.gateway()] {
        let host = format!("{local}/32");
        let hop = routes
            .iter()
            .find(|(n, _)| n.to_string() == host)
            .map(|(_, h)| *h);
        assert_eq!(
            hop.map(|h| h.ifindex),
            Some(0),
            "{local}/32 -> the node: {routes:?}"
        );
    }
    let red = node.pod_ns("red");
    assert_eq!(ping(&red, NODE, 2), 2, "pod -> node's uplink address");
    assert_eq!(ping(&red, node.gateway(), 2), 2, "pod -> gateway");
    let server = tcp_echo_server(&node.lab.node_netns, NODE, 8085, 1);
    let got = tcp_roundtrip(&red, NODE, 8085, b"to the node".to_vec()).expect("pod -> node TCP");
    assert_eq!(got, b"to the node");
    // The node sees the pod itself, not a translated address.
    let peers = server.join().unwrap();
    assert_eq!(
        peer_ips(&peers),
        BTreeSet::from([IpAddr::V4(node.pod_addr("red"))])
    );
}

#[test]
fn conntrack_gc_removes_expired_entries_and_orphans_and_nothing_else() {
    let mut dp = Datapath::load(LoadOptions::default()).expect("load (root, BTF)");
    let maps = dp.maps();
    maps.set_settings(NodeSettings::DEFAULT).unwrap();
    let now = conntrack::now_ns();
    assert!(now > 60_000_000_000, "the monotonic clock starts at boot");
    let s = |secs: u64| now - secs * 1_000_000_000;
    let key = |pod: u8, sport: u16, dport: u16, proto: u8| CtKey {
        saddr: [10, 200, 0, pod],
        daddr: [192, 168, 50, 1],
        sport,
        dport,
        proto,
        _pad: [0; 3],
    };
    let entry = |state: u8, last_seen: u64, nat_port: u16| CtEntry {
        nat_addr: NODE.octets(),
        nat_port,
        state,
        flags: 0,
        created_ns: last_seen,
        last_seen_ns: last_seen,
        packets_orig: 1,
        packets_reply: 1,
        tcp: Default::default(),
    };
    // Claimed a minute ago: past the grace period of a claim whose
    // connection is being created.
    let rev = |k: &CtKey| RevNat {
        addr: k.saddr,
        port: k.sport,
        flags: 0,
        _pad: 0,
        created_ns: s(60),
    };
    let mut add = |k: CtKey, e: CtEntry, with_rev: bool| {
        maps.insert_conntrack(k, e).unwrap();
        if with_rev {
            maps.insert_revnat(reply_key(&k, e.nat_addr, e.nat_port), rev(&k))
                .unwrap();
        }
        reply_key(&k, e.nat_addr, e.nat_port)
    };
    // Live: established 10 s ago; ICMP 5 s ago.
    let a = key(2, 41000, 80, 6);
    let a_reply = add(a, entry(ct_state::TCP_ESTABLISHED, s(10), 41000), true);
    let g = key(3, 777, 0, 1);
    let g_reply = add(g, entry(ct_state::ICMP, s(5), 777), true);
    // Expired: closed 20 s ago (timeout 10 s), with its reverse entry;
    // unreplied UDP 31 s ago (timeout 30 s), without one.
    let b = key(2, 41001, 80, 6);
    let b_reply = add(b, entry(ct_state::TCP_CLOSE, s(20), 41001), true);
    let c = key(2, 5000, 53, 17);
    add(c, entry(ct_state::UDP_UNREPLIED, s(31), 5000), false);
    // Live, but its reverse entry is missing; and a stale reverse entry
    // that leads to it under another NAT port (an old mapping).
    let f = key(4, 42000, 443, 6);
    let f_reply = add(f, entry(ct_state::TCP_ESTABLISHED, s(1), 42000), false);
    let stale = reply_key(&f, NODE.octets(), 42001);
    maps.insert_revnat(stale, rev(&f)).unwrap();
    // An orphan: no connection at all.
    let orphan = reply_key(&key(5, 43000, 22, 6), NODE.octets(), 43000);
    maps.insert_revnat(orphan, rev(&key(5, 43000, 22, 6)))
        .unwrap();

    let listed = conntrack::list_at(maps, now).unwrap();
    assert_eq!(listed.len(), 5);
    let find = |k: &CtKey| listed.iter().find(|c| c.orig == *k).unwrap();
    assert!(find(&a).revnat.is_some() && !find(&a).expired);
    assert!(find(&b).expired && find(&c).expired);
    assert!(find(&f).revnat.is_none(), "the stale entry is not f's");

    let report = conntrack::gc(maps, now).unwrap();
    assert_eq!(
        report,
        conntrack::GcReport {
            removed: 2,
            orphans: 2,
            repaired: 1,
            remaining: 3
        }
    );
    let left: BTreeSet<String> = maps
        .conntrack()
        .unwrap()
        .iter()
        .map(|(k, _)| format!("{k:?}"))
        .collect();
    let want: BTreeSet<String> = [a, f, g].iter().map(|k| format!("{k:?}")).collect();
    assert_eq!(left, want);
    let revs: BTreeSet<String> = maps
        .revnat()
        .unwrap()
        .iter()
        .map(|(k, _)| format!("{k:?}"))
        .collect();
    // Issue 8: a live connection without its reverse entry is a broken
    // invariant (I1), not a state to keep: GC re-inserts it (it was
    // asserted missing here before).
    let want: BTreeSet<String> = [a_reply, g_reply, f_reply]
        .iter()
        .map(|k| format!("{k:?}"))
        .collect();
    assert_eq!(
        revs, want,
        "b's {b_reply:?}, the stale and the orphan entries are gone; f's is back"
    );
    let (ct, rv) = (maps.conntrack().unwrap(), maps.revnat().unwrap());
    let broken = conntrack::check_nat_invariants(&ct, &rv, &NodeSettings::DEFAULT, now);
    assert!(broken.is_empty(), "{broken:?}");
    // A second pass finds nothing more.
    let again = conntrack::gc(maps, now).unwrap();
    assert_eq!(
        (
            again.removed,
            again.orphans,
            again.repaired,
            again.remaining
        ),
        (0, 0, 0, 3)
    );
}

/// What an apply leaves in the datapath and its pins.
#[derive(Debug, PartialEq)]
struct DatapathSnapshot {
    routes: Vec<String>,
    masq: Vec<String>,
    settings: String,
    pins: Vec<PathBuf>,
    /// Inodes of the program pins: a reload replaces them.
    prog_inodes: Vec<u64>,
    state: String,
}

fn datapath_snapshot(node: &TestNode) -> DatapathSnapshot {
    let maps = node.maps();
    let mut routes: Vec<String> = maps
        .routes()
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    routes.sort();
    let mut masq: Vec<String> = maps
        .masq()
        .unwrap()
        .iter()
        .map(|r| format!("{r:?}"))
        .collect();
    masq.sort();
    let pins = PinDir::for_instance(node.instance());
    let prog_inodes = [progs::FROM_POD, progs::FROM_UPLINK]
        .iter()
        .map(|p| std::fs::metadata(pins.prog(p)).unwrap().ino())
        .collect();
    DatapathSnapshot {
        routes,
        masq,
        settings: format!("{:?}", maps.settings().unwrap()),
        pins: pins.list(),
        prog_inodes,
        state: std::fs::read_to_string(StateDir::for_instance(node.instance()).state_file())
            .unwrap(),
    }
}

#[test]
fn a_second_apply_with_routes_and_masquerade_changes_nothing() {
    let mut node = snat_node("idemsnat", &["red"]);
    node.add_router();
    node.config.node.uplink.as_mut().unwrap().gateway = Some(LAN);
    node.config.routes.push(RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some("192.168.60.1".parse().unwrap()),
        dev: Some("uplink1".into()),
    });
    node.config.nat.port_range = PortRange {
        min: 20000,
        max: 29999,
    };
    node.config.conntrack.udp_timeout = 7;
    let first = node.apply().expect("first apply");
    assert!(first.programs_loaded);
    // uplink0 for masquerade and its default route, uplink1 for its route.
    assert_eq!(first.uplinks_attached, vec!["uplink0", "uplink1"]);
    let before = datapath_snapshot(&node);
    let settings = node.maps().settings().unwrap();
    assert_eq!(
        (settings.nat_port_min, settings.nat_port_max),
        (20000, 29999)
    );
    assert_eq!(settings.udp_timeout, 7);
    assert_ne!(settings.fib_ifindex, 0);

    let second = node.apply().expect("second apply");
    assert!(!second.changed(), "second apply changed {second:?}");
    assert!(!second.programs_loaded);
    assert!(second.uplinks_attached.is_empty());
    assert_eq!(datapath_snapshot(&node), before);
    // Traffic still flows.
    assert_eq!(ping(&node.pod_ns("red"), LAN, 1), 1);

    // A changed route is applied, and only it changes in the maps.
    node.config.routes[0].dst = "192.168.71.0/24".parse().unwrap();
    let third = node.apply().expect("apply with a changed route");
    assert!(third.changed());
    let after = datapath_snapshot(&node);
    assert!(
        after.routes.iter().any(|r| r.contains("192.168.71.0/24")),
        "{after:?}"
    );
    assert!(
        !after.routes.iter().any(|r| r.contains("192.168.70.0/24")),
        "{after:?}"
    );
    assert_eq!(after.masq, before.masq);

    // Without masquerade rules np_from_uplink stays where routes lead
    // (replies to the pods' own addresses come back there), and leaves an
    // interface nothing uses any more.
    node.config.masquerade.clear();
    let fourth = node.apply().expect("apply without masquerade");
    assert!(fourth.uplinks_detached.is_empty(), "{fourth:?}");
    assert!(node.maps().masq().unwrap().is_empty());
    assert_eq!(
        reconcile::uplinks(node.instance()).unwrap(),
        BTreeSet::from(["uplink0".to_owned(), "uplink1".to_owned()])
    );
    node.config.routes.clear();
    let fifth = node.apply().expect("apply without the route via uplink1");
    assert_eq!(fifth.uplinks_detached, vec!["uplink1"]);
    node.config.node.uplink.as_mut().unwrap().gateway = None;
    let sixth = node.apply().expect("apply without routes");
    assert_eq!(sixth.uplinks_detached, vec!["uplink0"]);
    assert!(
        !PinDir::for_instance(node.instance())
            .ingress_link("uplink0")
            .exists()
    );
    assert!(reconcile::uplinks(node.instance()).unwrap().is_empty());
}

#[test]
fn a_failure_after_the_maps_are_written_restores_them() {
    let mut node = snat_node("ctrollback", &["red"]);
    node.apply().expect("apply");
    let before = datapath_snapshot(&node);
    let settings = node.maps().settings().unwrap();

    node.add_router();
    node.config.routes.push(RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some("192.168.60.1".parse().unwrap()),
        dev: Some("uplink1".into()),
    });
    node.config.masquerade[0].out = Some("uplink1".into());
    node.config.nat.port_range = PortRange {
        min: 50000,
        max: 50999,
    };
    let failpoint = format!("configure-datapath:{}", node.instance());
    // SAFETY: the value names this test's instance, so concurrent tests
    // that read the variable are unaffected.
    unsafe { std::env::set_var("NETPATH_FAILPOINT", &failpoint) };
    let err = node.apply().expect_err("failpoint");
    // SAFETY: as for set_var above.
    unsafe { std::env::remove_var("NETPATH_FAILPOINT") };
    assert!(err.to_string().contains("rolled back"), "{err}");

    let after = datapath_snapshot(&node);
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.masq, before.masq);
    assert_eq!(node.maps().settings().unwrap(), settings);
    let pins = PinDir::for_instance(node.instance());
    assert!(
        !pins.ingress_link("uplink1").exists(),
        "new uplink link left"
    );
    assert!(
        pins.ingress_link("uplink0").exists(),
        "old uplink link gone"
    );
    assert_eq!(ping(&node.pod_ns("red"), LAN, 1), 1, "traffic still flows");

    // The next apply goes through.
    let report = node.apply().expect("apply after the failure");
    assert_eq!(report.uplinks_attached, vec!["uplink1"]);
    assert_eq!(report.uplinks_detached, vec!["uplink0"]);
}

/// The instance built nothing: no pod namespace, no pins, no state.
fn assert_untouched(node: &TestNode) {
    node.assert_nothing_built();
    assert!(
        !PinDir::for_instance(node.instance()).exists(),
        "pins exist"
    );
}

/// A rejection: the message names everything in `mentions`, and the apply
/// failed before it changed anything (no rollback was needed).
fn assert_rejected(msg: &str, mentions: &[&str]) {
    for m in mentions {
        assert!(msg.contains(m), "{msg:?} does not mention {m:?}");
    }
    assert!(
        !msg.contains("rolled back"),
        "rejected only after changes: {msg}"
    );
}

/// `break_it` makes the config bad: a fresh apply fails with a message
/// that mentions every string in `mentions` and builds nothing; after a good
/// apply, the bad one fails the same way and changes nothing.
fn rejected(tag: &str, break_it: impl Fn(&mut TestNode), mentions: &[&str]) {
    let mut node = snat_node(tag, &["red"]);
    let good = node.config.clone();
    break_it(&mut node);
    let err = node.apply().expect_err("bad config must be rejected");
    assert_rejected(&err.to_string(), mentions);
    assert_untouched(&node);

    let bad = std::mem::replace(&mut node.config, good);
    node.apply().expect("good apply");
    let before = datapath_snapshot(&node);
    node.config = bad;
    let err = node.apply().expect_err("bad config after a good one");
    assert_rejected(&err.to_string(), mentions);
    assert_eq!(datapath_snapshot(&node), before);
    assert_eq!(ping(&node.pod_ns("red"), LAN, 1), 1, "traffic still flows");
}

#[test]
fn a_route_via_an_address_off_the_devs_network_is_rejected() {
    rejected(
        "badvia",
        |node| {
            node.config.routes.push(RouteConfig {
                dst: "192.168.2.0/24".parse().unwrap(),
                via: Some("192.168.99.1".parse().unwrap()),
                dev: Some("uplink0".into()),
            });
        },
        &[
            "192.168.2.0/24",
            "via 192.168.99.1",
            "uplink0",
            "192.168.50.0/24",
        ],
    );
}

#[test]
fn a_route_over_a_missing_interface_is_rejected() {
    rejected(
        "baddev",
        |node| {
            node.config.routes.push(RouteConfig {
                dst: "192.168.2.0/24".parse().unwrap(),
                via: None,
                dev: Some("nosuchdev0".into()),
            });
        },
        &["route to 192.168.2.0/24", "nosuchdev0", "does not exist"],
    );
}

#[test]
fn a_masquerade_out_that_does_not_exist_is_rejected() {
    rejected(
        "badout",
        |node| node.config.masquerade[0].out = Some("nosuchif0".into()),
        &[
            "masquerade rule for 10.200.0.0/24",
            "nosuchif0",
            "does not exist",
        ],
    );
}

#[test]
fn a_port_range_with_min_above_max_is_rejected() {
    rejected(
        "badports",
        |node| {
            node.config.nat.port_range = PortRange {
                min: 40000,
                max: 30000,
            }
        },
        &["nat.port_range 40000-30000", "MIN is above MAX"],
    );
}

#[test]
fn the_daemon_collects_expired_connections_and_reapplies_on_reload() {
    let mut node = snat_node("daemon", &["red"]);
    node.config.conntrack.udp_timeout = 1;
    node.config.conntrack.udp_stream_timeout = 1;
    node.config.conntrack.icmp_timeout = 1;
    node.config.conntrack.gc_interval = 1;
    let dir = std::env::temp_dir().join(format!("netpath-{}", node.instance()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("node.toml");
    std::fs::write(&path, node.config.to_toml_string()).unwrap();

    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let daemon_path = path.clone();
    let daemon = std::thread::spawn(move || block_on(daemon::run(&daemon_path, rx)));
    let wait_for = |what: &str, cond: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for("the first apply", &|| {
        reconcile::pods(node.instance()).is_ok_and(|p| p.contains_key("red"))
            && PinDir::for_instance(node.instance())
                .ingress_link("uplink0")
                .exists()
    });

    let server = udp_echo_server(&node.lab.lan_netns, LAN, 5355, 1);
    udp_roundtrip(&node.pod_ns("red"), LAN, 5355, b"x".to_vec()).expect("UDP through SNAT");
    server.join().unwrap();
    assert!(!node.maps().conntrack().unwrap().is_empty());
    wait_for("the daemon's GC", &|| {
        let maps = node.maps();
        maps.conntrack().unwrap().is_empty() && maps.revnat().unwrap().is_empty()
    });

    // SIGHUP: re-read the file and apply it.
    node.config.pods.push(pod("blue"));
    std::fs::write(&path, node.config.to_toml_string()).unwrap();
    tx.blocking_send(daemon::Event::Reload).unwrap();
    wait_for("blue after the reload", &|| {
        reconcile::pods(node.instance()).is_ok_and(|p| p.contains_key("blue"))
    });
    assert_eq!(ping(&node.pod_ns("blue"), LAN, 1), 1);

    // A bad file on reload is logged; the daemon keeps running.
    std::fs::write(&path, "not a config").unwrap();
    tx.blocking_send(daemon::Event::Reload).unwrap();
    tx.blocking_send(daemon::Event::Stop).unwrap();
    daemon.join().unwrap().expect("daemon ends cleanly");
    // The datapath stays after the daemon stops.
    assert!(
        PinDir::for_instance(node.instance())
            .ingress_link("np-red")
            .exists()
    );
    assert_eq!(
        ping(&node.pod_ns("red"), LAN, 1),
        1,
        "traffic flows without the daemon"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The connections and reverse NAT entries of `addr` (as original source,
/// or as where a reply leads back to).
fn entries_of(node: &TestNode, addr: Ipv4Addr) -> (Vec<CtKey>, Vec<(CtKey, RevNat)>) {
    let maps = node.maps();
    let conns = maps
        .conntrack()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k.saddr == addr.octets())
        .map(|(k, _)| k)
        .collect();
    let revs = maps
        .revnat()
        .unwrap()
        .into_iter()
        .filter(|(_, r)| r.addr == addr.octets())
        .collect();
    (conns, revs)
}

#[test]
fn a_deleted_pods_connections_are_purged_and_its_address_starts_clean() {
    let mut node = snat_node("purge", &["red", "blue"]);
    node.apply().expect("apply");
    let red = node.pod_ns("red");
    let red_addr = node.pod_addr("red");
    let blue_addr = node.pod_addr("blue");

    // Live flows of red: a TCP connection held open, a replied UDP flow,
    // and one of blue's, which must survive red's deletion.
    let server = tcp_echo_server(&node.lab.lan_netns, LAN, 8093, 1);
    let mut stream = tcp_connect(&red, LAN, 8093, None).expect("connect");
    assert_eq!(tcp_exchange(&mut stream, b"hold").unwrap(), b"hold");
    let udp_server = udp_echo_server(&node.lab.lan_netns, LAN, 5393, 2);
    udp_roundtrip(&red, LAN, 5393, b"u".to_vec()).expect("UDP from red");
    udp_roundtrip(&node.pod_ns("blue"), LAN, 5393, b"b".to_vec()).expect("UDP from blue");
    udp_server.join().unwrap();
    let (conns, revs) = entries_of(&node, red_addr);
    assert!(
        conns.len() >= 2 && revs.len() >= 2,
        "red's flows are tracked: {conns:?} {revs:?}"
    );
    let (blue_conns, blue_revs) = entries_of(&node, blue_addr);
    assert!(!blue_conns.is_empty() && !blue_revs.is_empty());

    // Red is deleted (an apply without it) while its connection is open.
    node.config.pods.retain(|p| p.name != "red");
    node.apply().expect("apply without red");
    let (conns, revs) = entries_of(&node, red_addr);
    assert!(
        conns.is_empty() && revs.is_empty(),
        "a deleted pod's entries are purged: {conns:?} {revs:?}"
    );
    assert_eq!(
        entries_of(&node, blue_addr),
        (blue_conns, blue_revs),
        "another pod's entries are untouched"
    );
    drop(stream);
    let _ = server.join();

    // A new pod given red's address inherits nothing: before its first
    // packet no connection of its address is listed.
    let mut green = pod("green");
    green.address = Some(red_addr);
    node.config.pods.push(green);
    node.apply().expect("apply with green at red's address");
    assert_eq!(node.pod_addr("green"), red_addr);
    let listed: Vec<_> = conntrack::list(&node.maps())
        .unwrap()
        .into_iter()
        .filter(|c| *c.source().ip() == red_addr)
        .collect();
    assert!(listed.is_empty(), "green inherits {listed:?}");
    let (conns, revs) = entries_of(&node, red_addr);
    assert!(conns.is_empty() && revs.is_empty(), "{conns:?} {revs:?}");
    // And it works from its first packet.
    assert_eq!(ping(&node.pod_ns("green"), LAN, 2), 2);
}

#[test]
fn a_route_without_masquerade_gets_its_replies_back_to_the_pods_own_address() {
    let mut node = TestNode::new("nomasq", &["red"]);
    node.add_router();
    let routed = node.routed.clone().unwrap();
    node.config.routes.push(RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some(routed.router_addr.addr()),
        dev: Some("uplink1".into()),
    });
    let report = node.apply().expect("apply");
    assert!(node.maps().masq().unwrap().is_empty());
    assert_eq!(
        report.uplinks_attached,
        vec!["uplink1"],
        "np_from_uplink goes where a route leads"
    );
    // The far side routes the pod CIDR back through the node.
    run_in_ns(
        &routed.router_netns,
        "ip",
        &["route", "add", "10.200.0.0/24", "via", &NODE1.to_string()],
    );
    let red = node.pod_ns("red");
    let red_addr = node.pod_addr("red");
    let delivered = stat(&node, Stat::FwdLocalPod);

    let watch = IcmpWatch::start(&routed.far_netns);
    assert_eq!(ping(&red, FAR, 3), 3, "ping red -> far host, routed");
    assert_eq!(
        watch.stop().into_iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([red_addr]),
        "the far host sees the pod's own address"
    );
    let server = udp_echo_server(&routed.far_netns, FAR, 9011, 1);
    let got = udp_roundtrip(&red, FAR, 9011, b"routed".to_vec());
    assert_eq!(got.expect("UDP pod -> far host"), b"routed");
    assert_eq!(
        peer_ips(&server.join().unwrap()),
        BTreeSet::from([IpAddr::V4(red_addr)])
    );
    // The replies came through the datapath, not the node's stack, and
    // left no connection state behind.
    assert!(stat(&node, Stat::FwdLocalPod) >= delivered + 4);
    assert!(conntrack::list(&node.maps()).unwrap().is_empty());
    assert_kernel_does_not_forward(&node);
}
