//! Pods in real namespaces: traffic between pods is forwarded by the TC
//! program (not by the node's kernel), the node and the pods reach each
//! other, the reconciler is idempotent and cleans up after itself.

use std::{collections::BTreeSet, net::Ipv4Addr};

use netpath::{
    datapath::{NodeMaps, PinDir},
    reconcile,
    state::StateDir,
    sys::{netlink::Netlink, netns::Netns, sysctl},
};
use netpath_common::Stat;
use tests::harness::{
    self, TestNode, block_on, ip_snmp_counter, ping, pod, tcp_echo_server, tcp_roundtrip,
    udp_echo_server, udp_roundtrip,
};

fn stat(node: &TestNode, stat: Stat) -> u64 {
    NodeMaps::open_pinned(&PinDir::for_instance(node.instance()))
        .unwrap()
        .stat(stat)
        .unwrap()
        .packets
}

#[test]
fn pod_to_pod_ping_tcp_and_udp_are_forwarded_by_the_tc_program() {
    let node = TestNode::new("p2p", &["red", "blue"]);
    node.apply().expect("apply");
    let node_ns = Netns::open(&node.lab.node_netns).unwrap();
    // The node's kernel must not forward anything: switch it off.
    sysctl::write_sysctl(&node_ns, "ipv4/ip_forward", "0").unwrap();
    let forwarded_before = ip_snmp_counter(&node.lab.node_netns, "ForwDatagrams");
    let fwd_before = stat(&node, Stat::FwdLocalPod);

    let (red, blue) = (node.pod_ns("red"), node.pod_ns("blue"));
    let blue_addr = node.pod_addr("blue");
    let red_addr = node.pod_addr("red");
    assert_eq!(ping(&red, blue_addr, 3), 3, "ping red -> blue");
    assert_eq!(ping(&blue, red_addr, 3), 3, "ping blue -> red");

    let server = tcp_echo_server(&blue, blue_addr, 8080, 1);
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let got = tcp_roundtrip(&red, blue_addr, 8080, payload.clone()).expect("TCP red -> blue");
    assert_eq!(got, payload);
    server.join().unwrap();

    let server = udp_echo_server(&red, red_addr, 5353, 1);
    let got = udp_roundtrip(&blue, red_addr, 5353, b"hello red".to_vec()).expect("UDP blue -> red");
    assert_eq!(got, b"hello red");
    server.join().unwrap();

    let fwd = stat(&node, Stat::FwdLocalPod) - fwd_before;
    assert!(fwd >= 12 + 10, "np_from_pod forwarded only {fwd} packets");
    assert_eq!(
        ip_snmp_counter(&node.lab.node_netns, "ForwDatagrams"),
        forwarded_before,
        "the node's kernel forwarded pod traffic"
    );
}

#[test]
fn node_and_pods_reach_each_other() {
    let node = TestNode::new("host", &["red", "blue"]);
    node.apply().expect("apply");
    let node_ns = &node.lab.node_netns;
    let red = node.pod_ns("red");
    let red_addr = node.pod_addr("red");
    let gw = node.gateway();

    assert_eq!(ping(node_ns, red_addr, 2), 2, "node -> pod");
    assert_eq!(ping(&red, gw, 2), 2, "pod -> gateway");

    let server = tcp_echo_server(&red, red_addr, 7000, 1);
    let got = tcp_roundtrip(node_ns, red_addr, 7000, b"from the node".to_vec()).unwrap();
    assert_eq!(got, b"from the node");
    server.join().unwrap();

    let server = udp_echo_server(node_ns, gw, 7001, 1);
    let got = udp_roundtrip(&red, gw, 7001, b"to the node".to_vec()).unwrap();
    assert_eq!(got, b"to the node");
    server.join().unwrap();
    // With np0 configured as the FIB device, the FIB says "local" for the
    // node's addresses (pass_fib_local); pass_to_host is what is left.
    let to_node = stat(&node, Stat::PassToHost) + stat(&node, Stat::PassFibLocal);
    assert!(to_node >= 3, "only {to_node} packets passed to the node");
}

/// Everything of an instance that can be observed from outside.
#[derive(Debug, PartialEq)]
struct Snapshot {
    netns: BTreeSet<String>,
    links: Vec<(String, u32)>,
    endpoints: Vec<(Ipv4Addr, u32)>,
    pins: Vec<std::path::PathBuf>,
    leases: String,
}

fn snapshot(node: &TestNode) -> Snapshot {
    let netns = node.pod_namespaces().into_iter().collect();
    let node_ns = Netns::open(&node.lab.node_netns).unwrap();
    let links = block_on(async {
        let nl = Netlink::connect(&node_ns).await.unwrap();
        let mut v: Vec<_> = nl
            .links()
            .await
            .unwrap()
            .into_iter()
            .filter(|l| l.name.starts_with("np"))
            .map(|l| (l.name, l.index))
            .collect();
        v.sort();
        v
    });
    let pins = PinDir::for_instance(node.instance());
    let endpoints = match NodeMaps::open_pinned(&pins) {
        Ok(maps) => maps
            .endpoints()
            .unwrap()
            .into_iter()
            .map(|(a, e)| (a, e.ifindex))
            .collect(),
        Err(_) => Vec::new(),
    };
    let leases = std::fs::read_to_string(StateDir::for_instance(node.instance()).leases_file())
        .unwrap_or_default();
    Snapshot {
        netns,
        links,
        endpoints,
        pins: pins.list(),
        leases,
    }
}

#[test]
fn applying_the_same_config_twice_changes_nothing() {
    let node = TestNode::new("idem", &["red", "blue"]);
    let first = node.apply().unwrap();
    assert_eq!(first.created, vec!["red", "blue"]);
    let before = snapshot(&node);
    let second = node.apply().unwrap();
    assert!(!second.changed(), "second apply changed {second:?}");
    assert_eq!(second.unchanged, vec!["red", "blue"]);
    assert_eq!(snapshot(&node), before);
}

#[test]
fn a_change_touches_only_the_pods_that_changed() {
    let mut node = TestNode::new("delta", &["red", "blue"]);
    node.apply().unwrap();
    let before = snapshot(&node);
    let red_link = before.links.iter().find(|(n, _)| n == "np-red").cloned();

    node.config.pods.push(pod("green"));
    node.config.pods.retain(|p| p.name != "blue");
    let report = node.apply().unwrap();
    assert_eq!(report.created, vec!["green"]);
    assert_eq!(report.deleted, vec!["blue"]);
    assert_eq!(report.unchanged, vec!["red"]);
    let after = snapshot(&node);
    assert_eq!(
        after.links.iter().find(|(n, _)| n == "np-red").cloned(),
        red_link,
        "red's veth was not touched"
    );
    assert!(!after.links.iter().any(|(n, _)| n == "np-blue"));
    // blue's address is free again and red still reaches green.
    assert_eq!(ping(&node.pod_ns("red"), node.pod_addr("green"), 1), 1);

    // A new fixed address for red recreates red alone.
    node.config.pods[0].address = Some("10.200.0.200".parse().unwrap());
    let report = node.apply().unwrap();
    assert_eq!(report.recreated, vec!["red"]);
    assert_eq!(report.unchanged, vec!["green"]);
    assert_eq!(
        node.pod_addr("red"),
        "10.200.0.200".parse::<Ipv4Addr>().unwrap()
    );
    assert_eq!(ping(&node.pod_ns("green"), node.pod_addr("red"), 1), 1);
}

#[test]
fn twenty_pods_created_and_deleted_leave_nothing_behind() {
    let names: Vec<String> = (0..20).map(|i| format!("pod{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut node = TestNode::new("twenty", &refs);
    let report = node.apply().unwrap();
    assert_eq!(report.created.len(), 20);
    let snap = snapshot(&node);
    assert_eq!(snap.netns.len(), 20);
    assert_eq!(snap.endpoints.len(), 20);
    let addrs: BTreeSet<_> = snap.endpoints.iter().map(|(a, _)| *a).collect();
    assert_eq!(addrs.len(), 20, "no address handed out twice");
    assert_eq!(ping(&node.pod_ns("pod0"), node.pod_addr("pod19"), 1), 1);

    node.config.pods.clear();
    let report = node.apply().unwrap();
    assert_eq!(report.deleted.len(), 20);
    let snap = snapshot(&node);
    assert!(snap.netns.is_empty(), "namespaces left: {:?}", snap.netns);
    assert_eq!(
        snap.links
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>(),
        vec!["np0", "np0-peer"],
        "only the gateway veth pair stays"
    );
    assert!(snap.endpoints.is_empty());
    // The node's own links stay (the socket hooks, the uplink's XDP);
    // no pod's does.
    assert!(
        !snap.pins.iter().any(|p| {
            let p = p.to_string_lossy();
            p.contains("links/") && !p.contains("links/sock_") && !p.contains("links/uplink0")
        }),
        "pod link pins left: {:?}",
        snap.pins
    );
    assert!(!snap.leases.contains("pod"), "leases left: {}", snap.leases);

    // destroy removes the rest: pins, state, gateway device.
    block_on(reconcile::destroy(node.instance())).unwrap();
    assert!(!PinDir::for_instance(node.instance()).exists());
    assert!(!StateDir::for_instance(node.instance()).root().exists());
    assert!(snapshot(&node).links.is_empty());
}

#[test]
fn programs_and_maps_are_pinned_and_decoded_by_bpftool() {
    let node = TestNode::new("bpftool", &["red"]);
    node.apply().unwrap();
    let pins = PinDir::for_instance(node.instance());
    let dump = std::process::Command::new("bpftool")
        .args(["map", "dump", "pinned"])
        .arg(pins.map(netpath_common::maps::ENDPOINTS))
        .output()
        .expect("bpftool (installed by cargo xtask test)");
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let text = String::from_utf8_lossy(&dump.stdout);
    for field in ["\"addr\"", "\"ifindex\"", "\"pod_mac\"", "\"gw_mac\""] {
        assert!(text.contains(field), "bpftool dump lacks {field}: {text}");
    }
    let prog = std::process::Command::new("bpftool")
        .args(["prog", "show", "pinned"])
        .arg(pins.prog(netpath_common::progs::FROM_POD))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&prog.stdout).contains("np_from_pod"));
    let link = pins.ingress_link("np-red");
    assert!(link.exists(), "link pin {}", link.display());
}

#[test]
fn a_truncated_frame_from_a_pod_is_dropped_and_counted() {
    let node = TestNode::new("trunc", &["red", "blue"]);
    node.apply().unwrap();
    let before = stat(&node, Stat::DropTruncated);
    // An IPv4 ethertype with only 10 bytes of IPv4 header behind it.
    let frame =
        tests::packet::Ipv4Builder::new(node.pod_addr("red"), node.pod_addr("blue")).build();
    harness::send_raw_frame(&node.pod_ns("red"), "eth0", frame[..24].to_vec());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while stat(&node, Stat::DropTruncated) == before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(stat(&node, Stat::DropTruncated), before + 1);
}
