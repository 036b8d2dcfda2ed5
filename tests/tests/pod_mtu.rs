//! Pods get the MTU of the node's uplink: a pod's packet that fits the
//! pod fits the uplink, so a DF packet of the pod's full MTU reaches the
//! LAN host; a changed uplink MTU is applied to the pods on the next apply.

use std::net::Ipv4Addr;

use netpath::{
    config::MasqueradeConfig,
    demo::lab::UPLINK,
    sys::{netlink::Netlink, netns::Netns},
};
use tests::harness::{TestNode, block_on, run_in_ns};

const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);

/// The MTU of `ifname` in namespace `ns`, read with netlink.
fn mtu(ns: &str, ifname: &str) -> u32 {
    block_on(async {
        let nl = Netlink::connect(&Netns::open(ns).unwrap()).await.unwrap();
        nl.link_by_name(ifname)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no {ifname} in {ns}"))
            .mtu
    })
}

/// Sets the MTU of both ends of the lab's uplink.
fn set_uplink_mtu(node: &TestNode, mtu: u32) {
    let mtu = mtu.to_string();
    run_in_ns(
        &node.lab.node_netns,
        "ip",
        &["link", "set", "dev", UPLINK, "mtu", &mtu],
    );
    run_in_ns(
        &node.lab.lan_netns,
        "ip",
        &["link", "set", "dev", "eth0", "mtu", &mtu],
    );
}

#[test]
fn pods_take_the_uplinks_mtu_and_a_full_size_df_ping_passes() {
    let mut node = TestNode::new("podmtu", &["red"]);
    node.config.masquerade.push(MasqueradeConfig {
        source: None,
        out: None,
        address: None,
    });
    set_uplink_mtu(&node, 1400);
    node.apply().expect("apply");
    let red = node.pod_ns("red");
    assert_eq!(mtu(&red, "eth0"), 1400, "the pod's eth0");
    assert_eq!(mtu(&node.lab.node_netns, "np-red"), 1400, "the host side");

    // 1372 bytes of data + 8 (ICMP) + 20 (IP) = 1400: the largest packet
    // the pod sends without fragmenting, and it fits the uplink.
    let out = run_in_ns(
        &red,
        "ping",
        &[
            "-M",
            "do",
            "-s",
            "1372",
            "-c",
            "2",
            "-W",
            "2",
            "-q",
            &LAN.to_string(),
        ],
    );
    assert!(out.contains("2 received"), "{out}");

    // A lower uplink MTU reaches the pods on the next apply.
    set_uplink_mtu(&node, 1300);
    let report = node.apply().expect("apply after the uplink's MTU changed");
    assert_eq!(report.recreated, vec!["red"]);
    assert_eq!(mtu(&red, "eth0"), 1300);
    assert_eq!(mtu(&node.lab.node_netns, "np-red"), 1300);
    let out = run_in_ns(
        &red,
        "ping",
        &[
            "-M",
            "do",
            "-s",
            "1272",
            "-c",
            "2",
            "-W",
            "2",
            "-q",
            &LAN.to_string(),
        ],
    );
    assert!(out.contains("2 received"), "{out}");
    // Unchanged, a further apply keeps the pod.
    assert!(node.apply().unwrap().recreated.is_empty());
}
