//! `BPF_PROG_TEST_RUN` tests of the node as its pods' router (issue 8):
//! fragments following their first fragment through SNAT and reverse NAT,
//! ICMP time exceeded and fragmentation needed from the gateway, source
//! verification (anti-spoofing), BIG TCP. Every generated packet is checked
//! byte for byte against one built independently, and its checksums are
//! verified on their own.

use std::net::Ipv4Addr;

use netpath::datapath::Datapath;
use netpath_common::Stat;
use tests::{
    harness,
    packet::{
        self, Ipv4Builder, L4, SkbCtx, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TCP_ACK, icmp_echo,
        inet_checksum,
    },
};

use tests::node::*;

/// `b` as pod A (or B) sends it: from its MAC, on its veth.
fn from_pod(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    let (ifindex, mac) = if b.src == POD_B {
        (POD_B_IFINDEX, POD_B_MAC)
    } else {
        (POD_A_IFINDEX, POD_A_MAC)
    };
    let mut b = b.clone();
    b.src_mac = mac;
    from_pod_frame(dp, &b.build(), ifindex)
}

fn from_pod_frame(dp: &Datapath, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    packet::test_run_ctx(dp.from_pod_program(), frame, SkbCtx::ingress(ifindex))
}

fn from_uplink(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    packet::test_run(dp.from_uplink_program(), frame)
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

/// The ICMP error the gateway must send pod A: type `ty`, code `code`,
/// `rest` after the checksum, quoting `quote`; built independently of the
/// datapath, and its checksums verified on their own.
fn icmp_error_to_pod_a(ty: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
    let mut b = Ipv4Builder::icmp(GATEWAY, POD_A, L4::Icmp { ty, code, rest });
    b.tos = 0xc0;
    b.ttl = 64;
    b.id = 0;
    b.frags = 0;
    b.dst_mac = POD_A_MAC;
    b.src_mac = POD_A_GW_MAC;
    b.payload = quote.to_vec();
    let frame = b.build();
    assert!(packet::ipv4_header_checksum_ok(&frame));
    assert_eq!(inet_checksum(&frame[34..]), 0, "ICMP checksum");
    frame
}

/// The IPv4 header and first 8 payload bytes of an Ethernet frame.
fn quote_of(frame: &[u8]) -> Vec<u8> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    frame[14..14 + ihl + 8].to_vec()
}

/// Asserts `out` is a valid ICMP error from the gateway to pod A, equal to
/// `want`, with both checksums right by an independent computation.
fn assert_icmp_answer(out: &[u8], want: &[u8]) {
    assert_eq!(out, want, "the ICMP answer, byte for byte");
    assert_eq!(inet_checksum(&out[14..34]), 0, "IPv4 header checksum");
    assert_eq!(inet_checksum(&out[34..]), 0, "ICMP checksum");
}

// ---------------------------------------------------------------- fragments

/// A 3,000-byte UDP datagram split in two fragments at 1,480 bytes of IP
/// payload (a 1,500-byte MTU).
fn two_fragments(b: &Ipv4Builder) -> Vec<Vec<u8>> {
    packet::fragment(&b.build(), &[1480])
}

fn big_udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), id: u16) -> Ipv4Builder {
    let mut b = Ipv4Builder::udp(src, dst);
    b.payload = (0..3000u32).map(|i| (i * 7 + 3) as u8).collect();
    b.id = id;
    b.frags = 0;
    b
}

#[test]
fn a_fragmented_reply_on_the_uplink_reaches_the_pod_whole() {
    let mut dp = datapath(UPLINK_IFINDEX);
    // Pod B keeps 5353 towards the LAN host, so pod A's query is translated
    // to another port: the reply's port must be translated back too.
    from_pod(&dp, &Ipv4Builder::udp((POD_B, 5353), (LAN, 53)));
    let (verdict, query) = from_pod(&dp, &Ipv4Builder::udp((POD_A, 5353), (LAN, 53)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let port = u16::from_be_bytes([query[34], query[35]]);
    assert_ne!(port, 5353);

    let reply = big_udp((LAN, 53), (NODE, port), 0x7777);
    let frags = two_fragments(&reply);
    assert_eq!(frags.len(), 2);
    assert_eq!(frags[0].len(), 14 + 20 + 1480);

    // What pod A must receive: the reply to itself, fragmented the same way.
    let mut whole = reply.clone();
    whole.dst = POD_A;
    whole.ttl -= 1;
    whole.dst_mac = POD_A_MAC;
    whole.src_mac = POD_A_GW_MAC;
    whole.l4 = L4::Udp {
        sport: 53,
        dport: 5353,
        csum: true,
    };
    let want = two_fragments(&whole);

    let mut got = Vec::new();
    for (i, frag) in frags.iter().enumerate() {
        let (verdict, out) = from_uplink(&dp, frag);
        assert_eq!(verdict, TC_ACT_REDIRECT, "fragment {i}");
        assert_eq!(out, want[i], "fragment {i}, byte for byte");
        assert!(packet::ipv4_header_checksum_ok(&out), "fragment {i}");
        got.push(out);
    }
    // The UDP checksum (in the first fragment) is right for the datagram
    // put back together.
    let datagram = packet::reassemble(&got);
    assert_eq!(datagram.len(), 8 + 3000);
    assert_eq!(
        packet::l4_checksum(LAN, POD_A, packet::IPPROTO_UDP, &datagram),
        0
    );
    assert_eq!(packets(&mut dp, Stat::FragTracked), 1);
    assert_eq!(packets(&mut dp, Stat::FragFollowed), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 2);
}

#[test]
fn a_fragmented_datagram_from_a_pod_leaves_through_snat_whole() {
    let mut dp = datapath(UPLINK_IFINDEX);
    // Pod B keeps 5353 first: pod A's datagram gets another port.
    from_pod(&dp, &Ipv4Builder::udp((POD_B, 5353), (LAN, 9999)));
    let mut req = big_udp((POD_A, 5353), (LAN, 9999), 0x1111);
    req.src_mac = POD_A_MAC;
    let frags = two_fragments(&req);

    let (verdict, first) = from_pod_frame(&dp, &frags[0], POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let port = u16::from_be_bytes([first[34], first[35]]);
    assert!((40000..40010).contains(&port), "port {port}");
    let (verdict, second) = from_pod_frame(&dp, &frags[1], POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    let mut whole = req.clone();
    whole.src = NODE;
    whole.ttl -= 1;
    whole.l4 = L4::Udp {
        sport: port,
        dport: 9999,
        csum: true,
    };
    let want = two_fragments(&whole);
    assert_eq!(&first[14..], &want[0][14..], "first fragment");
    assert_eq!(&second[14..], &want[1][14..], "second fragment");
    let datagram = packet::reassemble(&[first, second]);
    assert_eq!(
        packet::l4_checksum(NODE, LAN, packet::IPPROTO_UDP, &datagram),
        0
    );
    assert_eq!(packets(&mut dp, Stat::FragTracked), 1);
    assert_eq!(packets(&mut dp, Stat::FragFollowed), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 3);
    assert_eq!(
        dp.maps().conntrack().unwrap().len(),
        2,
        "one per datagram flow"
    );
}

#[test]
fn a_later_fragment_ahead_of_its_first_is_dropped_from_a_pod_and_passed_on_the_uplink() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let mut req = big_udp((POD_A, 6000), (LAN, 53), 0x2222);
    req.src_mac = POD_A_MAC;
    let frags = two_fragments(&req);
    // Out of order: the later fragment first. netpath does not queue.
    let (verdict, _) = from_pod_frame(&dp, &frags[1], POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropFragNoFirst), 1);
    assert!(dp.maps().conntrack().unwrap().is_empty(), "no state made");

    // On the uplink, a later fragment nobody recorded is the node's own:
    // its stack reassembles or drops it.
    let reply = two_fragments(&big_udp((LAN, 53), (NODE, 6000), 0x3333));
    let (verdict, out) = from_uplink(&dp, &reply[1]);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, reply[1]);
    assert_eq!(packets(&mut dp, Stat::PassUplink), 1);
}

#[test]
fn a_later_fragment_follows_only_its_own_datagram() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let mut req = big_udp((POD_A, 6001), (LAN, 53), 0x4444);
    req.src_mac = POD_A_MAC;
    let frags = two_fragments(&req);
    assert_eq!(
        from_pod_frame(&dp, &frags[0], POD_A_IFINDEX).0,
        TC_ACT_REDIRECT
    );
    // The same id towards another destination, or with another protocol, is
    // another datagram.
    for (dst, proto) in [
        (Ipv4Addr::new(192, 168, 50, 9), packet::IPPROTO_UDP),
        (LAN, packet::IPPROTO_TCP),
    ] {
        let mut other = frags[1].clone();
        other[23] = proto;
        other[30..34].copy_from_slice(&dst.octets());
        other[24..26].copy_from_slice(&[0, 0]);
        let c = inet_checksum(&other[14..34]);
        other[24..26].copy_from_slice(&c.to_be_bytes());
        let (verdict, _) = from_pod_frame(&dp, &other, POD_A_IFINDEX);
        assert_eq!(verdict, TC_ACT_SHOT, "to {dst} proto {proto}");
    }
    assert_eq!(packets(&mut dp, Stat::DropFragNoFirst), 2);
    assert_eq!(
        from_pod_frame(&dp, &frags[1], POD_A_IFINDEX).0,
        TC_ACT_REDIRECT
    );
}

// ---------------------------------------------------------------------- TTL

#[test]
fn an_expiring_ttl_towards_the_lan_is_answered_with_time_exceeded_and_leaves_no_state() {
    let mut dp = datapath(UPLINK_IFINDEX);
    // A traceroute probe: UDP to a high port with TTL 1.
    let mut probe = Ipv4Builder::udp((POD_A, 44321), (LAN, 33434));
    probe.ttl = 1;
    probe.src_mac = POD_A_MAC;
    probe.dst_mac = POD_A_GW_MAC;
    let frame = probe.build();
    let (verdict, out) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT, "back into the pod");
    let want = icmp_error_to_pod_a(11, 0, [0; 4], &quote_of(&frame));
    assert_icmp_answer(&out, &want);
    assert_eq!(out.len(), 14 + 20 + 8 + 20 + 8);
    assert!(dp.maps().conntrack().unwrap().is_empty(), "no conntrack");
    assert!(dp.maps().revnat().unwrap().is_empty(), "no NAT");
    assert_eq!(packets(&mut dp, Stat::ReplyTimeExceeded), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    assert_eq!(packets(&mut dp, Stat::DropTtlExceeded), 0);
}

#[test]
fn an_expiring_ttl_towards_a_local_pod_is_answered_too() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let mut ping = Ipv4Builder::icmp(POD_A, POD_B, icmp_echo(8, 0x99, 1));
    ping.ttl = 1;
    ping.src_mac = POD_A_MAC;
    let frame = ping.build();
    let (verdict, out) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_icmp_answer(&out, &icmp_error_to_pod_a(11, 0, [0; 4], &quote_of(&frame)));
    assert_eq!(packets(&mut dp, Stat::ReplyTimeExceeded), 1);
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 0);
}

#[test]
fn the_time_exceeded_quote_keeps_ip_options_and_a_short_payload() {
    let dp = datapath(UPLINK_IFINDEX);
    // Record-route option (IHL 7) and a TCP segment: header + 8 bytes.
    let mut syn = Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_ACK);
    syn.options = vec![7, 7, 4, 0, 0, 0, 0];
    syn.ttl = 1;
    syn.src_mac = POD_A_MAC;
    let frame = syn.build();
    let (verdict, out) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_icmp_answer(&out, &icmp_error_to_pod_a(11, 0, [0; 4], &quote_of(&frame)));
    assert_eq!(out.len(), 14 + 28 + 28 + 8);

    // A payload shorter than 8 bytes (odd length) is quoted whole.
    let mut tiny = Ipv4Builder::new(POD_A, LAN);
    tiny.proto = 253; // experimental protocol, raw payload
    tiny.payload = vec![1, 2, 3, 4, 5];
    tiny.ttl = 1;
    tiny.src_mac = POD_A_MAC;
    let frame = tiny.build();
    let (verdict, out) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_icmp_answer(
        &out,
        &icmp_error_to_pod_a(11, 0, [0; 4], &frame[14..14 + 25]),
    );
}

#[test]
fn an_expiring_ttl_to_the_node_itself_is_delivered_and_errors_are_never_answered() {
    let mut dp = datapath(UPLINK_IFINDEX);
    // To the node: not forwarded, so the TTL does not matter.
    let mut to_node = Ipv4Builder::udp((POD_A, 5000), (NODE, 53));
    to_node.ttl = 1;
    let (verdict, _) = from_pod(&dp, &to_node);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(packets(&mut dp, Stat::PassFibLocal), 1);
    // An ICMP error (port unreachable) with TTL 1: no error about an error.
    let mut err = Ipv4Builder::icmp(
        POD_A,
        LAN,
        L4::Icmp {
            ty: 3,
            code: 3,
            rest: [0; 4],
        },
    );
    err.ttl = 1;
    let (verdict, _) = from_pod(&dp, &err);
    assert_eq!(verdict, TC_ACT_SHOT);
    // Nor about a later fragment.
    let mut later = Ipv4Builder::new(POD_A, LAN);
    later.frags = 0x0010;
    later.ttl = 1;
    let (verdict, _) = from_pod(&dp, &later);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropTtlExceeded), 2);
    assert_eq!(packets(&mut dp, Stat::ReplyTimeExceeded), 0);
}

// --------------------------------------------------------------------- PMTU

/// A namespace of its own with a veth of MTU 1400 (the egress the
/// MTU check looks at: `bpf_check_mtu` finds devices in the namespace the
/// test run happens in); removed when dropped.
struct MtuNs {
    name: String,
}

impl MtuNs {
    fn new() -> (Self, u32) {
        let name = harness::unique("mtu");
        let ip = |args: &[&str]| {
            let st = std::process::Command::new("ip")
                .args(args)
                .status()
                .expect("run ip");
            assert!(st.success(), "ip {args:?}");
        };
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&[
            "-n", &ns.name, "link", "add", "up0", "mtu", "1400", "type", "veth", "peer", "name",
            "up0p", "mtu", "1400",
        ]);
        let ifindex = harness::in_ns(&ns.name, || {
            nix::net::if_::if_nametoindex("up0").expect("up0")
        });
        (ns, ifindex)
    }
}

impl Drop for MtuNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn a_df_packet_larger_than_the_egress_mtu_gets_frag_needed_with_that_mtu() {
    let (ns, uplink) = MtuNs::new();
    harness::in_ns(&ns.name, || {
        let mut dp = datapath(uplink);
        // ping -M do -s 1472: 1500 bytes of IPv4 for a 1400-byte MTU.
        let mut ping = Ipv4Builder::icmp(POD_A, LAN, icmp_echo(8, 0x77, 1));
        ping.payload = vec![0x5a; 1472];
        ping.src_mac = POD_A_MAC;
        assert_eq!(ping.frags, 0x4000, "DF");
        let frame = ping.build();
        assert_eq!(frame.len(), 14 + 1500);
        let (verdict, out) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
        assert_eq!(verdict, TC_ACT_REDIRECT, "back into the pod");
        let mtu = 1400u16.to_be_bytes();
        let want = icmp_error_to_pod_a(3, 4, [0, 0, mtu[0], mtu[1]], &quote_of(&frame));
        assert_icmp_answer(&out, &want);
        assert!(dp.maps().conntrack().unwrap().is_empty(), "no state");
        assert_eq!(packets(&mut dp, Stat::ReplyFragNeeded), 1);

        // Exactly the MTU fits, and is translated and sent.
        let mut fits = ping.clone();
        fits.payload = vec![0x5a; 1400 - 28];
        let (verdict, out) = from_pod_frame(&dp, &fits.build(), POD_A_IFINDEX);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_eq!(&out[26..30], &NODE.octets(), "masqueraded");
        assert_eq!(packets(&mut dp, Stat::FwdRouted), 1);

        // Without DF: netpath does not fragment; a counted drop.
        let mut no_df = ping.clone();
        no_df.frags = 0;
        let (verdict, _) = from_pod_frame(&dp, &no_df.build(), POD_A_IFINDEX);
        assert_eq!(verdict, TC_ACT_SHOT);
        assert_eq!(packets(&mut dp, Stat::DropTooBigNoDf), 1);
        assert_eq!(packets(&mut dp, Stat::MtuUnchecked), 0);
    });
}

#[test]
fn frag_needed_from_the_lan_about_a_translated_flow_reaches_the_pod() {
    let mut dp = datapath(UPLINK_IFINDEX);
    from_pod(&dp, &Ipv4Builder::tcp((POD_B, 7000), (LAN, 443), TCP_ACK));
    let a = Ipv4Builder::tcp((POD_A, 7000), (LAN, 443), TCP_ACK);
    let (_, left) = from_pod(&dp, &a);
    let port = u16::from_be_bytes([left[34], left[35]]);
    assert_ne!(port, 7000);
    // A router behind the LAN host: fragmentation needed, MTU 1280.
    let mtu = 1280u16.to_be_bytes();
    let mut err = Ipv4Builder::icmp(
        LAN,
        NODE,
        L4::Icmp {
            ty: 3,
            code: 4,
            rest: [0, 0, mtu[0], mtu[1]],
        },
    );
    err.payload = left[14..14 + 28].to_vec();
    let (verdict, out) = from_uplink(&dp, &err.build());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut own = a.clone();
    own.ttl -= 1;
    let mut want = err.clone();
    want.dst = POD_A;
    want.ttl -= 1;
    want.dst_mac = POD_A_MAC;
    want.src_mac = POD_A_GW_MAC;
    want.payload = own.build()[14..14 + 28].to_vec();
    assert_eq!(out, want.build(), "MTU kept, quote translated back");
    assert_eq!(inet_checksum(&out[34..]), 0);
    assert_eq!(packets(&mut dp, Stat::IcmpErrorRevNat), 1);
}

// ------------------------------------------------------------ anti-spoofing

#[test]
fn a_spoofed_source_address_is_dropped_on_every_path() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let spoofed = Ipv4Addr::new(192, 168, 50, 77);
    // To a local pod, to the LAN (SNAT), to the node: from an address that
    // is nobody's, and from pod B's address on pod A's veth.
    for src in [spoofed, POD_B] {
        for dst in [POD_B, LAN, NODE] {
            let mut b = Ipv4Builder::udp((src, 5353), (dst, 53));
            b.src_mac = POD_A_MAC;
            let (verdict, _) = from_pod_frame(&dp, &b.build(), POD_A_IFINDEX);
            assert_eq!(verdict, TC_ACT_SHOT, "{src} → {dst}");
        }
    }
    assert_eq!(packets(&mut dp, Stat::DropSpoofedIp), 6);
    assert!(dp.maps().conntrack().unwrap().is_empty());
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 0);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    assert_eq!(packets(&mut dp, Stat::PassFibLocal), 0);
}

#[test]
fn a_spoofed_source_mac_is_dropped_on_every_path() {
    let mut dp = datapath(UPLINK_IFINDEX);
    for dst in [POD_B, LAN, NODE] {
        for mac in [POD_B_MAC, [0x02, 0x66, 0, 0, 0, 0x66]] {
            let mut b = Ipv4Builder::udp((POD_A, 5353), (dst, 53));
            b.src_mac = mac;
            let (verdict, _) = from_pod_frame(&dp, &b.build(), POD_A_IFINDEX);
            assert_eq!(verdict, TC_ACT_SHOT, "→ {dst} from {mac:x?}");
        }
    }
    assert_eq!(packets(&mut dp, Stat::DropSpoofedMac), 6);
    assert_eq!(packets(&mut dp, Stat::DropSpoofedIp), 0);
    assert!(dp.maps().conntrack().unwrap().is_empty());
    // The same packets from pod A's own MAC pass.
    let (verdict, _) = from_pod(&dp, &Ipv4Builder::udp((POD_A, 5353), (POD_B, 53)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
}

#[test]
fn spoofed_arp_and_ipv6_and_other_ethertypes_are_dropped_and_counted() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let own = packet::arp_request(POD_A_MAC, POD_A, GATEWAY);
    let (verdict, out) = from_pod_frame(&dp, &own, POD_A_IFINDEX);
    assert_eq!((verdict, out), (TC_ACT_OK, own.clone()), "pod A's own ARP");
    // Another pod's sender address, a foreign sender MAC, probing with
    // 0.0.0.0, and the right ARP on the wrong veth.
    let mut foreign_sha = own.clone();
    foreign_sha[22..28].copy_from_slice(&POD_B_MAC);
    for (frame, ifindex) in [
        (
            packet::arp_request(POD_A_MAC, POD_B, GATEWAY),
            POD_A_IFINDEX,
        ),
        (foreign_sha, POD_A_IFINDEX),
        (
            packet::arp_request(POD_A_MAC, Ipv4Addr::UNSPECIFIED, GATEWAY),
            POD_A_IFINDEX,
        ),
        (own.clone(), POD_B_IFINDEX),
    ] {
        let (verdict, _) = from_pod_frame(&dp, &frame, ifindex);
        assert_eq!(verdict, TC_ACT_SHOT);
    }
    assert_eq!(packets(&mut dp, Stat::DropSpoofedArp), 4);

    let mut v6 = packet::ethernet([0x33, 0x33, 0, 0, 0, 1], POD_A_MAC, 0x86dd);
    v6.extend_from_slice(&[0x60; 40]);
    assert_eq!(from_pod_frame(&dp, &v6, POD_A_IFINDEX).0, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropPodIpv6), 1);
    let mut lldp = packet::ethernet([0x01, 0x80, 0xc2, 0, 0, 0x0e], POD_A_MAC, 0x88cc);
    lldp.extend_from_slice(&[0; 46]);
    assert_eq!(from_pod_frame(&dp, &lldp, POD_A_IFINDEX).0, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropPodEthertype), 1);
}

// ------------------------------------------------------------------ BIG TCP

#[test]
fn a_big_tcp_packet_takes_its_length_from_the_skb() {
    let mut dp = datapath(UPLINK_IFINDEX);
    let mut seg = Ipv4Builder::tcp((POD_A, 5555), (POD_B, 80), TCP_ACK);
    seg.payload = vec![0x42; 1000];
    seg.src_mac = POD_A_MAC;
    let mut frame = seg.build();
    // BIG TCP writes total length 0 in GSO packets over 64 KiB; the test run
    // cannot carry 64 KiB, but the rule is the same (`iph_totlen`).
    frame[16..18].copy_from_slice(&[0, 0]);
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = inet_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
    let gso = SkbCtx {
        ingress_ifindex: POD_A_IFINDEX,
        gso_size: 500,
        gso_segs: 2,
    };
    let (verdict, out) = packet::test_run_ctx(dp.from_pod_program(), &frame, gso);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out[22], 63, "forwarded, TTL decremented");
    assert!(packet::ipv4_header_checksum_ok(&out));
    assert_eq!(packets(&mut dp, Stat::Ipv4BigTcp), 1);
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 1);
    // Without GSO, total length 0 is a malformed header.
    let (verdict, _) = from_pod_frame(&dp, &frame, POD_A_IFINDEX);
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropBadIpHeader), 1);
}
