//! `BPF_PROG_TEST_RUN` tests of the fixes for what the fuzzer found
//! (issue 8, item 10; `tests/src/fuzz`), with exact verdicts, bytes and
//! checksums:
//! - a TCP/UDP/ICMP header cut short within the IP total length is refused
//!   by the parser (`drop_l4_truncated`) before NAT: no connection, no port;
//! - no L4 field is read or written beyond the IP total length (Ethernet
//!   padding), in the translated packet nor in an ICMP error's quote;
//! - an ICMP error from the uplink is translated only when addressed to the
//!   NAT address its quote names;
//! - martian destinations from pods are never routed or masqueraded, and
//!   packets from martian sources on the uplink are never delivered.

use std::net::Ipv4Addr;

use netpath::datapath::Datapath;
use netpath_common::{CtEntry, CtKey, RevNat, Stat, ct_state};
use tests::packet::{
    self, IPPROTO_UDP, Ipv4Builder, L4, SkbCtx, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TCP_ACK,
    TCP_SYN, icmp_echo, inet_checksum,
};

use tests::node::*;

/// The shared node with its default route and masquerade on the uplink.
fn datapath() -> Datapath {
    tests::node::datapath(UPLINK_IFINDEX)
}

/// A frame as pod A (or B) sends it, on its veth.
fn pod_frame(b: &Ipv4Builder) -> (Vec<u8>, u32) {
    let mut b = b.clone();
    let ifindex = if b.src == POD_B {
        b.src_mac = POD_B_MAC;
        POD_B_IFINDEX
    } else {
        b.src_mac = POD_A_MAC;
        POD_A_IFINDEX
    };
    (b.build(), ifindex)
}

fn run_pod(dp: &Datapath, frame: &[u8], ifindex: u32) -> (u32, Vec<u8>) {
    packet::test_run_ctx(dp.from_pod_program(), frame, SkbCtx::ingress(ifindex))
}

fn from_pod(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    let (frame, ifindex) = pod_frame(b);
    run_pod(dp, &frame, ifindex)
}

fn from_uplink(dp: &Datapath, frame: &[u8]) -> (u32, Vec<u8>) {
    packet::test_run(dp.from_uplink_program(), frame)
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

fn no_state(dp: &mut Datapath) {
    assert!(dp.maps().conntrack().unwrap().is_empty(), "no connection");
    assert!(
        dp.maps().revnat().unwrap().is_empty(),
        "no NAT port claimed"
    );
}

/// Sets the IPv4 total length of `frame` to `tot_len` (the frame keeps its
/// bytes: what lies after is Ethernet padding) and fixes the header
/// checksum.
fn set_tot_len(frame: &mut [u8], tot_len: u16) {
    frame[16..18].copy_from_slice(&tot_len.to_be_bytes());
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = inet_checksum(&frame[14..34]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

// ------------------------------------------------- finding 3: truncated L4

#[test]
fn an_l4_header_cut_short_by_the_total_length_is_refused_before_nat() {
    let mut dp = datapath();
    // (packet, the L4 bytes the total length leaves): a TCP SYN cut 14 and
    // 19 bytes into its header, a UDP header cut at 4, an ICMP echo at 6.
    let cases = [
        (Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_SYN), 14),
        (Ipv4Builder::tcp((POD_A, 5556), (LAN, 80), TCP_SYN), 19),
        (Ipv4Builder::udp((POD_A, 5353), (LAN, 53)), 4),
        (Ipv4Builder::icmp(POD_A, LAN, icmp_echo(8, 0x77, 1)), 6),
    ];
    for (b, l4) in &cases {
        let (mut frame, ifindex) = pod_frame(b);
        // The frame keeps the whole header: only the total length cuts it.
        set_tot_len(&mut frame, 20 + l4);
        let (verdict, out) = run_pod(&dp, &frame, ifindex);
        assert_eq!(verdict, TC_ACT_SHOT, "proto {} cut at {l4}", b.proto);
        assert_eq!(out, frame, "dropped untouched");
    }
    // The frame itself ending inside the header (total length matching).
    let (frame, ifindex) = pod_frame(&Ipv4Builder::tcp((POD_A, 5557), (LAN, 80), TCP_SYN));
    let mut cut = frame[..14 + 20 + 14].to_vec();
    set_tot_len(&mut cut, 34);
    cut.resize(64, 0);
    assert_eq!(run_pod(&dp, &cut, ifindex).0, TC_ACT_SHOT);

    assert_eq!(packets(&mut dp, Stat::DropL4Truncated), 5);
    assert_eq!(packets(&mut dp, Stat::DropRewriteFailed), 0);
    assert_eq!(packets(&mut dp, Stat::SnatNew), 0);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    no_state(&mut dp);

    // The same header whole is translated (the test can fail).
    let (verdict, _) = from_pod(&dp, &cases[0].0);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(dp.maps().conntrack().unwrap().len(), 1);
}

#[test]
fn a_truncated_reply_on_the_uplink_is_dropped_without_touching_its_connection() {
    let mut dp = datapath();
    let (verdict, _) = from_pod(&dp, &Ipv4Builder::udp((POD_A, 5353), (LAN, 53)));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let before = dp.maps().conntrack().unwrap();
    let mut reply = Ipv4Builder::udp((LAN, 53), (NODE, 5353)).build();
    set_tot_len(&mut reply, 20 + 6);
    let (verdict, out) = from_uplink(&dp, &reply);
    assert_eq!((verdict, out), (TC_ACT_SHOT, reply));
    assert_eq!(packets(&mut dp, Stat::DropL4Truncated), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 0);
    assert_eq!(
        dp.maps().conntrack().unwrap(),
        before,
        "connection untouched"
    );
}

// ----------------------------------------- finding 4: the Ethernet padding

#[test]
fn a_translated_packet_keeps_its_ethernet_padding_and_a_right_checksum() {
    let mut dp = datapath();
    for b in [
        Ipv4Builder::tcp((POD_A, 5555), (LAN, 80), TCP_ACK),
        Ipv4Builder::udp((POD_A, 5353), (LAN, 53)),
    ] {
        let (mut frame, ifindex) = pod_frame(&b);
        // 12 bytes of padding after the datagram (a short frame padded to
        // the Ethernet minimum looks the same).
        let padding = [0xee; 12];
        frame.extend_from_slice(&padding);
        let (verdict, out) = run_pod(&dp, &frame, ifindex);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let mut left = b.clone();
        left.src = NODE;
        left.ttl -= 1;
        left.src_mac = POD_A_MAC;
        let mut want = left.build();
        want.extend_from_slice(&padding);
        assert_eq!(
            out, want,
            "proto {}: translated, padding untouched",
            b.proto
        );
        let end = out.len() - padding.len();
        assert!(packet::l4_checksum_ok(&out[..end]), "L4 checksum");
    }
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 2);
}

/// Pod A's TCP flow to LAN:443, translated to another port (pod B holds
/// 7000 first); returns pod A's packet and the frame that left.
fn translated_tcp_flow(dp: &Datapath) -> (Ipv4Builder, Vec<u8>) {
    let (verdict, _) = from_pod(dp, &Ipv4Builder::tcp((POD_B, 7000), (LAN, 443), TCP_ACK));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let a = Ipv4Builder::tcp((POD_A, 7000), (LAN, 443), TCP_ACK);
    let (verdict, left) = from_pod(dp, &a);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_ne!(u16::from_be_bytes([left[34], left[35]]), 7000);
    (a, left)
}

/// An ICMP fragmentation needed (MTU 1280) from the LAN host to `dst`,
/// quoting `quote`.
fn frag_needed(dst: Ipv4Addr, quote: &[u8]) -> Ipv4Builder {
    let mut err = Ipv4Builder::icmp(
        LAN,
        dst,
        L4::Icmp {
            ty: 3,
            code: 4,
            rest: [0, 0, 0x05, 0x00],
        },
    );
    err.payload = quote.to_vec();
    err
}

#[test]
fn an_icmp_error_quote_is_translated_within_its_total_length_only() {
    let mut dp = datapath();
    let (a, left) = translated_tcp_flow(&dp);
    // Pod A's packet as it left, translated back: what the pod must see
    // quoted (its own source and port, the TTL it left with).
    let mut own = a.clone();
    own.ttl -= 1;
    let own = own.build();

    // 1. The quote holds the IPv4 header and 8 bytes of TCP; the frame
    //    carries 20 bytes of padding after it, where the quoted TCP
    //    checksum would be: it is neither read nor rewritten.
    let err = frag_needed(NODE, &left[14..14 + 28]);
    let mut frame = err.build();
    let padding: Vec<u8> = (0..20).map(|i| 0xa0 + i).collect();
    frame.extend_from_slice(&padding);
    let (verdict, out) = from_uplink(&dp, &frame);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut want = err.clone();
    want.dst = POD_A;
    want.ttl -= 1;
    want.dst_mac = POD_A_MAC;
    want.src_mac = POD_A_GW_MAC;
    want.payload = own[14..14 + 28].to_vec();
    let mut want = want.build();
    want.extend_from_slice(&padding);
    assert_eq!(out, want, "quote translated, padding untouched");
    let end = out.len() - padding.len();
    assert_eq!(inet_checksum(&out[34..end]), 0, "ICMP checksum");

    // 2. A quote holding the whole TCP header: its checksum is translated
    //    back to the one the pod sent, and the ICMP checksum stays right.
    let err = frag_needed(NODE, &left[14..14 + 40]);
    let (verdict, out) = from_uplink(&dp, &err.build());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        &out[42..82],
        &own[14..54],
        "the pod's own header, checksum too"
    );
    assert_eq!(inet_checksum(&out[34..]), 0, "ICMP checksum");

    // 3. A quote whose L4 header ends beyond the total length (4 bytes of
    //    TCP quoted, the rest padding): not translated, to the node's stack.
    let err = frag_needed(NODE, &left[14..14 + 24]);
    let mut frame = err.build();
    frame.extend_from_slice(&left[14 + 24..14 + 28]);
    let (verdict, out) = from_uplink(&dp, &frame);
    assert_eq!((verdict, out), (TC_ACT_OK, frame));
    assert_eq!(packets(&mut dp, Stat::IcmpErrorRevNat), 2);
}

// --------------------------------- finding 5: ICMP errors and their address

#[test]
fn an_icmp_error_is_delivered_only_when_addressed_to_the_nat_address() {
    let mut dp = datapath();
    let (_, left) = translated_tcp_flow(&dp);
    // The quote names pod A's connection, but the error is addressed to
    // another host of the LAN (or to a pod directly).
    for dst in [Ipv4Addr::new(192, 168, 50, 99), POD_A] {
        let frame = frag_needed(dst, &left[14..14 + 28]).build();
        let (verdict, out) = from_uplink(&dp, &frame);
        assert_eq!((verdict, out), (TC_ACT_OK, frame), "to {dst}");
    }
    assert_eq!(packets(&mut dp, Stat::PassUplink), 2);
    assert_eq!(packets(&mut dp, Stat::IcmpErrorRevNat), 0);
    // Addressed to the NAT address, it is delivered (the test can fail).
    let (verdict, _) = from_uplink(&dp, &frag_needed(NODE, &left[14..14 + 28]).build());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(packets(&mut dp, Stat::IcmpErrorRevNat), 1);
}

// ---------------------------------------------------- finding 6: martians

#[test]
fn martian_destinations_from_a_pod_are_never_routed_or_masqueraded() {
    let mut dp = datapath();
    let drop = [
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(0, 1, 2, 3),
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(127, 9, 9, 9),
        Ipv4Addr::new(240, 0, 0, 1),
        Ipv4Addr::new(255, 255, 255, 254),
    ];
    for dst in drop {
        for b in [
            Ipv4Builder::udp((POD_A, 5353), (dst, 53)),
            Ipv4Builder::tcp((POD_A, 5555), (dst, 80), TCP_SYN),
        ] {
            let (verdict, out) = from_pod(&dp, &b);
            assert_eq!(verdict, TC_ACT_SHOT, "to {dst}");
            assert_eq!(out, pod_frame(&b).0);
        }
    }
    // With TTL 1: still a martian, no time exceeded.
    let mut ttl1 = Ipv4Builder::udp((POD_A, 5353), (Ipv4Addr::LOCALHOST, 53));
    ttl1.ttl = 1;
    assert_eq!(from_pod(&dp, &ttl1).0, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropMartian), 13);

    // Limited broadcast and multicast: link-local, to the node's stack,
    // untouched.
    for dst in [
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(224, 0, 0, 251),
        Ipv4Addr::new(239, 255, 255, 250),
    ] {
        let b = Ipv4Builder::udp((POD_A, 5353), (dst, 5353));
        let (verdict, out) = from_pod(&dp, &b);
        assert_eq!((verdict, out), (TC_ACT_OK, pod_frame(&b).0), "to {dst}");
    }
    assert_eq!(packets(&mut dp, Stat::PassToHost), 3);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    assert_eq!(packets(&mut dp, Stat::ReplyTimeExceeded), 0);
    no_state(&mut dp);
}

#[test]
fn a_reply_from_a_martian_source_is_never_delivered() {
    let mut dp = datapath();
    // A connection towards each peer, as a stale table (or an older
    // datapath) could hold it: pod A 5353 → peer:53 as NODE:40000.
    let peers = [
        Ipv4Addr::new(127, 0, 0, 1),
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(224, 0, 0, 1),
        Ipv4Addr::BROADCAST,
        Ipv4Addr::new(240, 1, 2, 3),
        LAN,
    ];
    let now = netpath::conntrack::now_ns();
    for peer in peers {
        let orig = CtKey {
            saddr: POD_A.octets(),
            daddr: peer.octets(),
            sport: 5353,
            dport: 53,
            proto: IPPROTO_UDP,
            _pad: [0; 3],
        };
        let entry = CtEntry {
            nat_addr: NODE.octets(),
            nat_port: 40000,
            state: ct_state::UDP_UNREPLIED,
            flags: 0,
            // Live: made now (a connection idle past its timeout would be
            // stale, and its reverse entry not followed).
            created_ns: now,
            last_seen_ns: now,
            packets_orig: 1,
            packets_reply: 0,
            tcp: Default::default(),
        };
        let maps = dp.maps();
        maps.insert_conntrack(orig, entry).unwrap();
        maps.insert_revnat(
            netpath_common::reply_key(&orig, NODE.octets(), 40000),
            RevNat {
                addr: POD_A.octets(),
                port: 5353,
                flags: 0,
                _pad: 0,
                created_ns: now,
            },
        )
        .unwrap();
    }
    for peer in &peers[..5] {
        let reply = Ipv4Builder::udp((*peer, 53), (NODE, 40000)).build();
        let (verdict, out) = from_uplink(&dp, &reply);
        assert_eq!((verdict, out), (TC_ACT_OK, reply), "from {peer}");
    }
    assert_eq!(packets(&mut dp, Stat::PassUplink), 5);
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 0);
    // From the LAN host, the same reply is delivered (the test can fail).
    let (verdict, out) = from_uplink(&dp, &Ipv4Builder::udp((LAN, 53), (NODE, 40000)).build());
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(&out[30..34], &POD_A.octets());
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 1);
}
