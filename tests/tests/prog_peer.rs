//! `BPF_PROG_TEST_RUN` tests of the several-node paths: `np_from_pod`'s
//! direct-routing and VXLAN decisions (verdict, exact bytes, counters, no
//! masquerade inside the cluster CIDR), `np_from_uplink` delivering a peer
//! pod's packet, and `np_from_tunnel` refusing a frame without tunnel
//! metadata. (The tunnel key itself is not visible to a test run: the
//! three-node test in `cluster.rs` checks it end to end, the receiver
//! accepting only a tunnel whose outer source is the peer's address.)

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netpath::datapath::{Datapath, LoadOptions, peers::PeerMap};
use netpath_common::{
    Endpoint, MasqRule, RouteNextHop, Stat,
    peer::{Peer, peer_flags},
};
use tests::packet::{self, Ipv4Builder, SkbCtx, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 2);
const POD_A_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const POD_A_GW_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
const POD_A_IFINDEX: u32 = 4241;
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 7);
const PEER_NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 12);
const UPLINK_IFINDEX: u32 = 90_001;
const VXLAN_IFINDEX: u32 = 90_002;

/// A node with pod A, a masquerade rule for the pod CIDR out of the uplink
/// (which must not apply inside the cluster), a route to the peer's
/// address on the uplink, and the peer map: cluster 10.244.0.0/16, own
/// 10.244.1.0/24, peer 10.244.2.0/24 at 192.168.50.12 (`vxlan`: through
/// the VXLAN device, VNI 7).
fn node(vxlan: bool) -> (Datapath, PeerMap) {
    let mut dp = Datapath::load(LoadOptions::default()).expect("load the eBPF object");
    let maps = dp.maps();
    maps.upsert_endpoint(
        POD_A,
        Endpoint {
            ifindex: POD_A_IFINDEX,
            flags: 0,
            pod_mac: POD_A_MAC,
            gw_mac: POD_A_GW_MAC,
        },
    )
    .unwrap();
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    maps.sync_masq(&[(
        net("10.244.1.0/24"),
        MasqRule {
            ifindex: UPLINK_IFINDEX,
            nat_addr: [192, 168, 50, 11],
        },
    )])
    .unwrap();
    maps.sync_routes(&[(
        net("192.168.50.12/32"),
        RouteNextHop {
            ifindex: UPLINK_IFINDEX,
            via: [0; 4],
        },
    )])
    .unwrap();
    let mut peers = dp.take_peer_map().unwrap();
    let remote = if vxlan {
        Peer {
            node_addr: PEER_NODE.octets(),
            tunnel_ifindex: VXLAN_IFINDEX,
            vni: 7,
            flags: peer_flags::NODE | peer_flags::VXLAN,
        }
    } else {
        Peer {
            node_addr: PEER_NODE.octets(),
            flags: peer_flags::NODE,
            ..Peer::default()
        }
    };
    peers
        .sync(&[
            (net("10.244.0.0/16"), Peer::default()),
            (
                net("10.244.1.0/24"),
                Peer {
                    flags: peer_flags::LOCAL,
                    ..Peer::default()
                },
            ),
            (net("10.244.2.0/24"), remote),
        ])
        .unwrap();
    (dp, peers)
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

fn from_pod(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    packet::test_run_ctx(dp.from_pod_program(), frame, SkbCtx::ingress(POD_A_IFINDEX))
}

#[test]
fn direct_routing_sends_a_remote_pods_packet_unchanged_but_its_ttl_to_the_peer() {
    let (mut dp, _peers) = node(false);
    let b = Ipv4Builder::udp((POD_A, 40000), (REMOTE_POD, 53));
    let frame = b.build();
    let (verdict, out) = from_pod(&dp, &frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // Not masqueraded (the rule matches the source and the egress): the
    // same packet with TTL 63 and its checksum, the pod's MACs kept (the
    // kernel's neighbour code writes them for bpf_redirect_neigh).
    let expected = Ipv4Builder { ttl: 63, ..b }.build();
    assert_eq!(out, expected);
    assert!(packet::l4_checksum_ok(&out));
    assert_eq!(packets(&mut dp, Stat::FwdToPeer), 1);
    assert_eq!(packets(&mut dp, Stat::RouteNeighResolve), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    assert_eq!(
        dp.maps().conntrack().unwrap().len(),
        0,
        "no connection state"
    );
}

#[test]
fn vxlan_encapsulates_a_remote_pods_packet_into_the_tunnel_device() {
    let (mut dp, _peers) = node(true);
    let b = Ipv4Builder::udp((POD_A, 40000), (REMOTE_POD, 53));
    let frame = b.build();
    let (verdict, out) = from_pod(&dp, &frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // The inner frame: TTL − 1 only; the device adds the outer headers.
    let expected = Ipv4Builder { ttl: 63, ..b }.build();
    assert_eq!(out, expected);
    assert_eq!(packets(&mut dp, Stat::TunnelEncap), 1);
    assert_eq!(packets(&mut dp, Stat::FwdToPeer), 0);
    assert_eq!(packets(&mut dp, Stat::DropTunnelEncap), 0);
}

#[test]
fn own_pod_cidr_without_a_pod_goes_to_the_host() {
    let (mut dp, _peers) = node(false);
    let frame = Ipv4Builder::udp((POD_A, 40000), (Ipv4Addr::new(10, 244, 1, 99), 53)).build();
    let (verdict, out) = from_pod(&dp, &frame);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame);
    assert_eq!(packets(&mut dp, Stat::PassToHost), 1);
}

#[test]
fn uplink_delivers_a_peer_pods_packet_and_passes_anyone_elses() {
    let (mut dp, _peers) = node(false);
    let b = Ipv4Builder::udp((REMOTE_POD, 5353), (POD_A, 53));
    let (verdict, out) = packet::test_run_ctx(
        dp.from_uplink_program(),
        &b.build(),
        SkbCtx::ingress(UPLINK_IFINDEX),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let expected = Ipv4Builder {
        ttl: 63,
        dst_mac: POD_A_MAC,
        src_mac: POD_A_GW_MAC,
        ..b
    }
    .build();
    assert_eq!(out, expected);
    assert_eq!(packets(&mut dp, Stat::FwdFromPeer), 1);
    // A source outside every peer's pod CIDR is the node's.
    let other = Ipv4Builder::udp((Ipv4Addr::new(192, 168, 50, 1), 5353), (POD_A, 53)).build();
    let (verdict, out) = packet::test_run_ctx(
        dp.from_uplink_program(),
        &other,
        SkbCtx::ingress(UPLINK_IFINDEX),
    );
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, other);
    assert_eq!(packets(&mut dp, Stat::FwdFromPeer), 1);
}

#[test]
fn tunnel_program_drops_a_frame_without_tunnel_metadata() {
    let (mut dp, _peers) = node(true);
    let frame = Ipv4Builder::udp((REMOTE_POD, 5353), (POD_A, 53)).build();
    let (verdict, _) = packet::test_run_ctx(
        dp.from_tunnel_program(),
        &frame,
        SkbCtx::ingress(VXLAN_IFINDEX),
    );
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropTunnelDecap), 1);
}
