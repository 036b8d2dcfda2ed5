//! `BPF_PROG_TEST_RUN` request/reply pairs of the masquerade path: a packet
//! from a pod through `np_from_pod` (route map → SNAT → redirect to the
//! uplink), its reply through `np_from_uplink` (reverse NAT → the pod),
//! with every byte and checksum checked. Request and reply share maps.

use std::net::Ipv4Addr;

use netpath::datapath::{Datapath, LoadOptions};
use netpath_common::{CtKey, Endpoint, MasqRule, NodeSettings, RouteNextHop, Stat, ct_state};
use tests::packet::{
    self, Ipv4Builder, L4, SkbCtx, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TCP_ACK, TCP_FIN,
    TCP_RST, TCP_SYN, icmp_echo, test_run as run,
};

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const UPLINK_IFINDEX: u32 = 20;
const POD_A_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];
const POD_A_GW_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
const PORT_MIN: u16 = 40000;

fn endpoint(ifindex: u32, last: u8) -> Endpoint {
    Endpoint {
        ifindex,
        flags: 0,
        pod_mac: [0x02, 0xaa, 0, 0, 0, last],
        gw_mac: [0x02, 0x99, 0, 0, 0, last],
    }
}

/// Two pods, a default route via the LAN host on the uplink, masquerade of
/// the pod CIDR out of the uplink, NAT ports 40000-40000+`ports`-1.
fn datapath(ports: u16, tweak: impl FnOnce(&mut NodeSettings)) -> Datapath {
    let mut dp = Datapath::load(LoadOptions::default()).expect("load the eBPF object");
    let maps = dp.maps();
    maps.upsert_endpoint(POD_A, endpoint(11, 2)).unwrap();
    maps.upsert_endpoint(POD_B, endpoint(12, 3)).unwrap();
    let mut settings = NodeSettings {
        nat_port_min: PORT_MIN,
        nat_port_max: PORT_MIN + ports - 1,
        ..NodeSettings::DEFAULT
    };
    tweak(&mut settings);
    maps.set_settings(settings).unwrap();
    maps.sync_routes(&[(
        "0.0.0.0/0".parse().unwrap(),
        RouteNextHop {
            ifindex: UPLINK_IFINDEX,
            via: LAN.octets(),
        },
    )])
    .unwrap();
    maps.sync_masq(&[(
        "10.200.0.0/24".parse().unwrap(),
        MasqRule {
            ifindex: UPLINK_IFINDEX,
            nat_addr: NODE.octets(),
        },
    )])
    .unwrap();
    dp
}

/// Runs `b` through `np_from_pod` as its source pod sends it: from the
/// pod's MAC, arriving on the pod's veth (source verification checks both).
fn from_pod(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    packet::test_run_ctx(
        dp.from_pod_program(),
        &as_sent(b),
        SkbCtx::ingress(ifindex_of(b.src)),
    )
}

/// The veth ifindex of pod A or B.
fn ifindex_of(pod: Ipv4Addr) -> u32 {
    if pod == POD_A { 11 } else { 12 }
}

/// `b` as its source pod sends it (from its own MAC).
fn as_sent(b: &Ipv4Builder) -> Vec<u8> {
    let last = if b.src == POD_A { 2 } else { 3 };
    let mut b = b.clone();
    b.src_mac = endpoint(ifindex_of(b.src), last).pod_mac;
    b.build()
}

fn from_uplink(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    run(dp.from_uplink_program(), &b.build())
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

/// `b` as it leaves the uplink: source `nat`, TTL decremented. (MACs are
/// left to `bpf_redirect_neigh`.)
fn translated(b: &Ipv4Builder, nat: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut t = b.clone();
    t.src = nat.0;
    t.ttl -= 1;
    set_sport(&mut t.l4, nat.1);
    t.build()
}

/// `b` as it reaches pod A: destination `to`, TTL decremented, pod MACs.
fn delivered(b: &Ipv4Builder, to: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut t = b.clone();
    t.dst = to.0;
    t.ttl -= 1;
    t.dst_mac = POD_A_MAC;
    t.src_mac = POD_A_GW_MAC;
    match &mut t.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = to.1,
        L4::Icmp { rest, .. } => rest[..2].copy_from_slice(&to.1.to_be_bytes()),
        L4::Raw => {}
    }
    t.build()
}

fn set_sport(l4: &mut L4, port: u16) {
    match l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
        L4::Icmp { rest, .. } => rest[..2].copy_from_slice(&port.to_be_bytes()),
        L4::Raw => {}
    }
}

fn conntrack(dp: &mut Datapath) -> Vec<(CtKey, netpath_common::CtEntry)> {
    dp.maps().conntrack().unwrap()
}

/// A TCP segment with explicit sequence and acknowledgement numbers.
fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8, seq: u32, ack: u32) -> Ipv4Builder {
    let mut b = Ipv4Builder::tcp(src, dst, flags);
    b.l4 = L4::Tcp {
        sport: src.1,
        dport: dst.1,
        flags,
        seq,
        ack,
    };
    b
}

// The SYN_RECV step (netfilter's states) and the sequence numbers below
// came with issue 8: a SYN-ACK must acknowledge the SYN, and ESTABLISHED
// follows the original side's ACK, as in netfilter.
#[test]
fn tcp_syn_is_masqueraded_and_its_syn_ack_translated_back() {
    let mut dp = datapath(10, |_| {});
    let syn = tcp((POD_A, 5555), (LAN, 80), TCP_SYN, 1000, 0);
    let (verdict, out) = from_pod(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let want = translated(&syn, (NODE, 5555));
    assert_eq!(
        &out[14..],
        &want[14..],
        "source address and port kept, checksums"
    );
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));
    let ct = conntrack(&mut dp);
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].1.state, ct_state::TCP_SYN_SENT);
    assert_eq!((ct[0].1.nat_addr, ct[0].1.nat_port), (NODE.octets(), 5555));

    let syn_ack = tcp((LAN, 80), (NODE, 5555), TCP_SYN | TCP_ACK, 5000, 1001);
    let (verdict, out) = from_uplink(&dp, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&syn_ack, (POD_A, 5555)), "whole frame");
    assert!(packet::l4_checksum_ok(&out));
    let ct = conntrack(&mut dp);
    assert_eq!(ct[0].1.state, ct_state::TCP_SYN_RECV);
    assert_eq!((ct[0].1.packets_orig, ct[0].1.packets_reply), (1, 1));
    let ack = tcp((POD_A, 5555), (LAN, 80), TCP_ACK, 1001, 5001);
    let (verdict, out) = from_pod(&dp, &ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&ack, (NODE, 5555))[14..]);
    let ct = conntrack(&mut dp);
    assert_eq!(ct[0].1.state, ct_state::TCP_ESTABLISHED);
    assert_eq!((ct[0].1.packets_orig, ct[0].1.packets_reply), (2, 1));
    assert_eq!(packets(&mut dp, Stat::SnatNew), 1);
    // The SYN and the final ACK.
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 2);
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 1);
}

#[test]
fn tcp_fin_and_rst_move_the_connection_state() {
    let mut dp = datapath(10, |_| {});
    let a = (POD_A, 6000);
    let (lan, nat) = ((LAN, 80), (NODE, 6000));
    from_pod(&dp, &tcp(a, lan, TCP_SYN, 100, 0));
    from_uplink(&dp, &tcp(lan, nat, TCP_SYN | TCP_ACK, 900, 101));
    from_pod(&dp, &tcp(a, lan, TCP_ACK, 101, 901));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_ESTABLISHED);
    from_pod(&dp, &tcp(a, lan, TCP_FIN | TCP_ACK, 101, 901));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_FIN_WAIT);
    // netfilter: the other side's FIN → LAST_ACK, the ACK of it → TIME_WAIT.
    from_uplink(&dp, &tcp(lan, nat, TCP_FIN | TCP_ACK, 901, 102));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_LAST_ACK);
    from_pod(&dp, &tcp(a, lan, TCP_ACK, 102, 902));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_TIME_WAIT);
    from_uplink(&dp, &tcp(lan, nat, TCP_RST, 902, 0));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_CLOSE);
}

#[test]
fn udp_is_masqueraded_and_its_reply_translated_back() {
    let mut dp = datapath(10, |_| {});
    let req = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    let (verdict, out) = from_pod(&dp, &req);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&req, (NODE, 5353))[14..]);
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::UDP_UNREPLIED);

    let reply = Ipv4Builder::udp((LAN, 53), (NODE, 5353));
    let (verdict, out) = from_uplink(&dp, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&reply, (POD_A, 5353)));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::UDP_REPLIED);
}

#[test]
fn udp_without_checksum_keeps_none() {
    let dp = datapath(10, |_| {});
    let mut req = Ipv4Builder::udp((POD_A, 7000), (LAN, 53));
    req.l4 = L4::Udp {
        sport: 7000,
        dport: 53,
        csum: false,
    };
    let (verdict, out) = from_pod(&dp, &req);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&req, (NODE, 7000))[14..]);
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
}

#[test]
fn icmp_echo_is_masqueraded_by_identifier_and_the_reply_translated_back() {
    let mut dp = datapath(10, |_| {});
    let ping = Ipv4Builder::icmp(POD_A, LAN, icmp_echo(8, 0x4242, 1));
    let (verdict, out) = from_pod(&dp, &ping);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&ping, (NODE, 0x4242))[14..]);
    assert!(packet::l4_checksum_ok(&out));

    let pong = Ipv4Builder::icmp(LAN, NODE, icmp_echo(0, 0x4242, 1));
    let (verdict, out) = from_uplink(&dp, &pong);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&pong, (POD_A, 0x4242)));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::ICMP);
}

#[test]
fn a_port_collision_picks_another_port_and_replies_find_their_pod() {
    let mut dp = datapath(10, |_| {});
    // Pod B takes 5555 towards LAN:80 first.
    let b = Ipv4Builder::tcp((POD_B, 5555), (LAN, 80), TCP_SYN);
    let (_, out_b) = from_pod(&dp, &b);
    assert_eq!(&out_b[14..], &translated(&b, (NODE, 5555))[14..]);
    // Pod A with the same source port and destination must get another.
    let a = Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_SYN);
    let (verdict, out_a) = from_pod(&dp, &a);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let port = u16::from_be_bytes([out_a[34], out_a[35]]);
    assert!((PORT_MIN..PORT_MIN + 10).contains(&port), "port {port}");
    assert_eq!(&out_a[14..], &translated(&a, (NODE, port))[14..]);
    assert_eq!(packets(&mut dp, Stat::SnatPortChanged), 1);

    let reply = Ipv4Builder::tcp((LAN, 80), (NODE, port), TCP_SYN | TCP_ACK);
    let (verdict, out) = from_uplink(&dp, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&reply, (POD_A, 5555)));
    // The same connection again keeps its port.
    let again = Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_ACK);
    let (_, out) = from_pod(&dp, &again);
    assert_eq!(u16::from_be_bytes([out[34], out[35]]), port);
}

#[test]
fn an_exhausted_port_range_drops_with_its_own_counter() {
    let mut dp = datapath(1, |_| {});
    // 40000 (the whole range) is taken by a connection that kept it...
    from_pod(&dp, &Ipv4Builder::udp((POD_A, PORT_MIN), (LAN, 53)));
    // ...5555 by another...
    from_pod(&dp, &Ipv4Builder::udp((POD_A, 5555), (LAN, 53)));
    // ...so pod B's 5555 has nowhere to go.
    let (verdict, _) = from_pod(&dp, &Ipv4Builder::udp((POD_B, 5555), (LAN, 53)));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropSnatNoPort), 1);
    assert_eq!(conntrack(&mut dp).len(), 2, "never mistranslated");
    assert_eq!(dp.maps().revnat().unwrap().len(), 2);
}

#[test]
fn a_reply_that_matches_nothing_is_passed_to_the_node_untouched() {
    let mut dp = datapath(10, |_| {});
    for b in [
        Ipv4Builder::tcp((LAN, 80), (NODE, 22), TCP_SYN),
        Ipv4Builder::udp((LAN, 53), (NODE, 5353)),
        Ipv4Builder::icmp(LAN, NODE, icmp_echo(0, 7, 1)),
        Ipv4Builder::icmp(LAN, NODE, icmp_echo(8, 7, 1)),
    ] {
        let frame = b.build();
        let (verdict, out) = run(dp.from_uplink_program(), &frame);
        assert_eq!(verdict, TC_ACT_OK);
        assert_eq!(out, frame);
    }
    assert_eq!(packets(&mut dp, Stat::PassUplink), 4);
}

#[test]
fn an_icmp_port_unreachable_about_a_translated_flow_reaches_the_pod_translated_back() {
    let mut dp = datapath(10, |_| {});
    // B keeps 5353, so A's flow is translated to another port: the quoted
    // port must be translated back too.
    from_pod(&dp, &Ipv4Builder::udp((POD_B, 5353), (LAN, 9999)));
    let a = Ipv4Builder::udp((POD_A, 5353), (LAN, 9999));
    let (_, left) = from_pod(&dp, &a);
    let port = u16::from_be_bytes([left[34], left[35]]);
    assert_ne!(port, 5353);

    // The LAN host quotes the packet as it arrived: IP header + 8 bytes.
    let mut quote = left[14..14 + 28].to_vec();
    let mut err = Ipv4Builder::icmp(
        LAN,
        NODE,
        L4::Icmp {
            ty: 3,
            code: 3,
            rest: [0; 4],
        },
    );
    err.payload = quote.clone();
    let (verdict, out) = from_uplink(&dp, &err);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // What pod A must see: the error to itself, quoting its own packet.
    let mut own = a.clone();
    own.ttl -= 1;
    quote.copy_from_slice(&own.build()[14..14 + 28]);
    let mut want = err.clone();
    want.dst = POD_A;
    want.ttl -= 1;
    want.dst_mac = POD_A_MAC;
    want.src_mac = POD_A_GW_MAC;
    want.payload = quote;
    assert_eq!(
        out,
        want.build(),
        "outer header, ICMP checksum, quoted header and ports"
    );
    assert_eq!(packets(&mut dp, Stat::IcmpErrorRevNat), 1);
}

// Issue 8: fragments that need NAT were all dropped; a first fragment is now
// translated (its later fragments follow it: tests/tests/prog_router.rs),
// and only a later fragment whose first was never seen is dropped.
#[test]
fn a_first_fragment_is_masqueraded_and_a_later_one_without_it_dropped() {
    let mut dp = datapath(10, |_| {});
    let mut b = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    b.frags = 0x2000; // first fragment, more follow
    let (verdict, out) = from_pod(&dp, &b);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&b, (NODE, 5353))[14..]);
    assert_eq!(conntrack(&mut dp).len(), 1);
    assert_eq!(packets(&mut dp, Stat::FragTracked), 1);

    let mut later = Ipv4Builder::new(POD_A, LAN);
    later.id = 0x4321; // another datagram, whose first fragment never came
    later.frags = 0x0001;
    let (verdict, _) = from_pod(&dp, &later);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropFragNoFirst), 1);
    assert_eq!(packets(&mut dp, Stat::DropNatFragment), 0);
    assert_eq!(
        conntrack(&mut dp).len(),
        1,
        "no state for the later fragment"
    );
}

#[test]
fn traffic_without_a_masquerade_rule_for_its_egress_is_routed_untranslated() {
    let mut dp = datapath(10, |_| {});
    dp.maps()
        .sync_masq(&[(
            "10.200.0.0/24".parse().unwrap(),
            MasqRule {
                ifindex: 99,
                nat_addr: NODE.octets(),
            },
        )])
        .unwrap();
    let b = Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_SYN);
    let (verdict, out) = from_pod(&dp, &b);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&b, (POD_A, 5555))[14..]);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 1);
    assert!(conntrack(&mut dp).is_empty());
}

#[test]
fn a_local_route_hands_the_packet_to_the_node() {
    let mut dp = datapath(10, |_| {});
    dp.maps()
        .sync_routes(&[(
            "192.168.50.2/32".parse().unwrap(),
            RouteNextHop {
                ifindex: 0,
                via: [0; 4],
            },
        )])
        .unwrap();
    let b = Ipv4Builder::tcp((POD_A, 5555), (NODE, 22), TCP_SYN);
    let frame = as_sent(&b);
    let (verdict, out) = from_pod(&dp, &b);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, frame);
    assert_eq!(packets(&mut dp, Stat::PassFibLocal), 1);
}

#[test]
fn an_expired_connection_is_replaced_by_a_new_one() {
    let mut dp = datapath(10, |s| s.udp_timeout = 0);
    let b = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    from_pod(&dp, &b);
    std::thread::sleep(std::time::Duration::from_millis(5));
    let (verdict, out) = from_pod(&dp, &b);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&b, (NODE, 5353))[14..]);
    assert_eq!(packets(&mut dp, Stat::SnatNew), 2);
    assert_eq!(conntrack(&mut dp).len(), 1);
    assert_eq!(dp.maps().revnat().unwrap().len(), 1);
}

#[test]
fn the_ttl_of_routed_packets_is_checked() {
    let mut dp = datapath(10, |_| {});
    let mut b = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    b.ttl = 1;
    let (verdict, _) = from_pod(&dp, &b);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropTtlExceeded), 1);
}

/// A host behind a router, with a route back to the pod CIDR through the
/// node (no masquerade on its way).
const FAR: Ipv4Addr = Ipv4Addr::new(192, 168, 70, 2);
/// The node's interface towards that router.
const ROUTER_IFINDEX: u32 = 21;

/// `b` through `np_from_uplink`, arriving on interface `ifindex`.
fn from_uplink_on(dp: &Datapath, b: &Ipv4Builder, ifindex: u32) -> (u32, Vec<u8>) {
    packet::test_run_ctx(
        dp.from_uplink_program(),
        &b.build(),
        SkbCtx::ingress(ifindex),
    )
}

#[test]
fn an_untranslated_packet_over_a_route_without_masquerade_is_routed_to_the_pod() {
    let mut dp = datapath(10, |_| {});
    let router = RouteNextHop {
        ifindex: ROUTER_IFINDEX,
        via: [192, 168, 60, 1],
    };
    dp.maps()
        .sync_routes(&[
            (
                "0.0.0.0/0".parse().unwrap(),
                RouteNextHop {
                    ifindex: UPLINK_IFINDEX,
                    via: LAN.octets(),
                },
            ),
            ("192.168.70.0/24".parse().unwrap(), router),
        ])
        .unwrap();
    let udp = Ipv4Builder::udp((FAR, 5000), (POD_A, 7000));
    let echo = Ipv4Builder::icmp(FAR, POD_A, icmp_echo(0, 9, 1));
    for (b, dport_or_id) in [(&udp, 7000), (&echo, 9)] {
        let (verdict, out) = from_uplink_on(&dp, b, ROUTER_IFINDEX);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        // TTL − 1 (IP checksum updated), the pod's MACs, nothing else.
        assert_eq!(out, delivered(b, (POD_A, dport_or_id)));
    }
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 2);
    assert!(
        conntrack(&mut dp).is_empty(),
        "no state for a routed packet"
    );

    // An expiring TTL is a counted drop, as for any forwarded packet.
    let mut last_hop = udp.clone();
    last_hop.ttl = 1;
    assert_eq!(
        from_uplink_on(&dp, &last_hop, ROUTER_IFINDEX).0,
        TC_ACT_SHOT
    );
    assert_eq!(packets(&mut dp, Stat::DropTtlExceeded), 1);

    // To the node's stack, untouched: an address no pod holds; the same
    // packet on another interface than the route's (reverse path); a
    // source the pods reach behind a masquerade rule (only translated
    // replies reach a pod there).
    let nobody = Ipv4Builder::udp((FAR, 5000), (Ipv4Addr::new(10, 200, 0, 9), 7000));
    let from_lan = Ipv4Builder::udp((LAN, 5000), (POD_A, 7000));
    for (b, ifindex) in [
        (&nobody, ROUTER_IFINDEX),
        (&udp, UPLINK_IFINDEX),
        (&from_lan, UPLINK_IFINDEX),
    ] {
        let frame = b.build();
        assert_eq!(from_uplink_on(&dp, b, ifindex), (TC_ACT_OK, frame));
    }
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 2);
}
