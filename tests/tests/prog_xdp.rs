//! `BPF_PROG_TEST_RUN` of `np_xdp_uplink`: the prefilter, the fast path of
//! established flows (every byte and checksum of the translated frame
//! checked against one built from scratch), and what it leaves to TC.
//! Connections are made by the TC programs, as in `prog_snat`, or written
//! by hand (DNAT) with the maps' own types.

use std::net::Ipv4Addr;

use aya::programs::{TestRun as _, TestRunOptions, Xdp};
use netpath::{conntrack::now_ns, datapath::Datapath};
use netpath_common::{
    CtEntry, CtKey, DenyRule, RevNat, Stat, TcpDir, ct_flags, ct_state, dnat_reply_key,
};
use tests::{
    node::{self, LAN, NODE, POD_A, POD_A_GW_MAC, POD_A_IFINDEX, POD_A_MAC, POD_B, UPLINK_IFINDEX},
    packet::{self, Ipv4Builder, L4, SkbCtx, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN},
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const XDP_REDIRECT: u32 = 4;

/// Runs `frame` through `np_xdp_uplink`: the verdict and the frame as the
/// program left it.
fn xdp(prog: &Xdp, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

fn run(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    xdp(dp.xdp_uplink_program(), &b.build())
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

/// A TCP segment with explicit sequence and acknowledgement numbers and a
/// payload.
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

/// `b` from pod A through `np_from_pod` (as pod A sends it).
fn from_pod(dp: &Datapath, b: &Ipv4Builder) -> u32 {
    let mut b = b.clone();
    b.src_mac = POD_A_MAC;
    packet::test_run_ctx(
        dp.from_pod_program(),
        &b.build(),
        SkbCtx::ingress(POD_A_IFINDEX),
    )
    .0
}

/// `b` as it must reach a pod: destination `to`, TTL − 1, the pod's MACs
/// (`macs`: destination, source), checksums recomputed from scratch.
fn delivered(b: &Ipv4Builder, to: (Ipv4Addr, u16), macs: ([u8; 6], [u8; 6])) -> Vec<u8> {
    let mut t = b.clone();
    t.dst = to.0;
    t.ttl -= 1;
    (t.dst_mac, t.src_mac) = macs;
    match &mut t.l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = to.1,
        _ => unreachable!(),
    }
    t.build()
}

/// Pod A's TCP connection 5555 → LAN:80, masqueraded (the SYN, SYN-ACK
/// and ACK through the TC programs): ESTABLISHED. The LAN's next sequence
/// number is 5001, pod A's 1001.
fn established(dp: &Datapath) {
    let (a, lan, nat) = ((POD_A, 5555), (LAN, 80), (NODE, 5555));
    assert_eq!(
        from_pod(dp, &tcp(a, lan, TCP_SYN, 1000, 0)),
        packet::TC_ACT_REDIRECT
    );
    let syn_ack = tcp(lan, nat, TCP_SYN | TCP_ACK, 5000, 1001);
    // The SYN-ACK is a state change: XDP leaves it to TC.
    assert_eq!(run(dp, &syn_ack), (XDP_PASS, syn_ack.build()));
    packet::test_run(dp.from_uplink_program(), &syn_ack.build());
    from_pod(dp, &tcp(a, lan, TCP_ACK, 1001, 5001));
}

/// A data segment of the LAN server on the established connection.
fn data_reply() -> Ipv4Builder {
    let mut b = tcp((LAN, 80), (NODE, 5555), TCP_ACK | TCP_PSH, 5001, 1001);
    b.payload = b"hello from the LAN server".to_vec();
    b
}

fn conn(dp: &mut Datapath) -> CtEntry {
    let ct = dp.maps().conntrack().unwrap();
    assert_eq!(ct.len(), 1);
    ct[0].1
}

#[test]
fn a_denied_source_is_dropped_by_the_prefilter_and_counted() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    dp.maps()
        .lb_mut()
        .sync_prefilter(&[("192.168.50.0/28".parse().unwrap(), DenyRule { id: 1 })])
        .unwrap();
    let denied = Ipv4Builder::udp((LAN, 53), (NODE, 5353));
    assert_eq!(run(&dp, &denied).0, XDP_DROP);
    // Any protocol, even what the fast path never takes.
    let ping = Ipv4Builder::icmp(LAN, NODE, packet::icmp_echo(8, 1, 1));
    assert_eq!(run(&dp, &ping).0, XDP_DROP);
    assert_eq!(packets(&mut dp, Stat::DropXdpPrefilter), 2);

    let allowed = Ipv4Builder::udp((Ipv4Addr::new(192, 168, 50, 20), 53), (NODE, 5353));
    assert_eq!(run(&dp, &allowed), (XDP_PASS, allowed.build()));
    assert_eq!(packets(&mut dp, Stat::DropXdpPrefilter), 2);
    assert_eq!(packets(&mut dp, Stat::XdpPass), 1);
}

#[test]
fn an_established_masqueraded_tcp_reply_is_translated_and_redirected() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    established(&dp);
    let before = conn(&mut dp);
    assert_eq!(before.state, ct_state::TCP_ESTABLISHED);

    let reply = data_reply();
    let (verdict, out) = run(&dp, &reply);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(
        out,
        delivered(&reply, (POD_A, 5555), (POD_A_MAC, POD_A_GW_MAC)),
        "whole frame: addresses, port, TTL, MACs, both checksums"
    );
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));
    assert_eq!(packets(&mut dp, Stat::XdpFwdRevSnat), 1);
    assert_eq!(
        packets(&mut dp, Stat::FwdRevNat),
        1,
        "only the SYN-ACK, by TC"
    );

    // The connection is updated as TC would: reply counter, the reply
    // side's sequence space (the RST window check needs it).
    let after = conn(&mut dp);
    assert_eq!(after.packets_reply, before.packets_reply + 1);
    assert_eq!(after.packets_orig, before.packets_orig);
    assert_eq!(after.state, ct_state::TCP_ESTABLISHED);
    assert_eq!(after.tcp[1].end, 5001 + 25);
    assert!(after.last_seen_ns >= before.last_seen_ns);
}

#[test]
fn an_ip_header_with_options_is_translated_too() {
    let dp = node::datapath(UPLINK_IFINDEX);
    established(&dp);
    let mut reply = data_reply();
    reply.options = vec![1, 1, 1, 0]; // NOPs, end of options
    let (verdict, out) = run(&dp, &reply);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(
        out,
        delivered(&reply, (POD_A, 5555), (POD_A_MAC, POD_A_GW_MAC))
    );
}

#[test]
fn state_changes_fragments_and_unknown_flows_pass_to_tc_untouched() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    established(&dp);
    let before = conn(&mut dp);
    let (lan, nat) = ((LAN, 80), (NODE, 5555));
    let mut fragment = data_reply();
    fragment.frags = 0x2000; // first fragment, more follow
    let mut expiring = data_reply();
    expiring.ttl = 1;
    for b in [
        tcp(lan, nat, TCP_SYN, 7000, 0),
        tcp(lan, nat, TCP_FIN | TCP_ACK, 5001, 1001),
        tcp(lan, nat, TCP_RST, 5001, 0),
        tcp(lan, nat, TCP_SYN | TCP_ACK, 5000, 1001),
        // No ACK: nothing an established peer sends.
        tcp(lan, nat, TCP_PSH, 5001, 0),
        fragment,
        expiring,
        // Unknown flows: another port, another peer, the node's own.
        tcp(lan, (NODE, 5556), TCP_ACK, 5001, 1001),
        tcp(
            (Ipv4Addr::new(192, 168, 50, 9), 80),
            nat,
            TCP_ACK,
            5001,
            1001,
        ),
        Ipv4Builder::udp((LAN, 53), (NODE, 5353)),
        Ipv4Builder::icmp(LAN, NODE, packet::icmp_echo(0, 5555, 1)),
    ] {
        let frame = b.build();
        assert_eq!(run(&dp, &b), (XDP_PASS, frame), "{b:?}");
    }
    assert_eq!(packets(&mut dp, Stat::XdpPass), 12, "with the SYN-ACK");
    assert_eq!(packets(&mut dp, Stat::XdpFwdRevSnat), 0);
    assert_eq!(conn(&mut dp), before, "XDP changed no state");
}

#[test]
fn a_connection_not_yet_established_is_left_to_tc() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    from_pod(&dp, &tcp((POD_A, 5555), (LAN, 80), TCP_SYN, 1000, 0));
    packet::test_run(
        dp.from_uplink_program(),
        &tcp((LAN, 80), (NODE, 5555), TCP_SYN | TCP_ACK, 5000, 1001).build(),
    );
    assert_eq!(conn(&mut dp).state, ct_state::TCP_SYN_RECV);
    // An ACK here could move the state machine: TC's.
    let b = data_reply();
    assert_eq!(run(&dp, &b), (XDP_PASS, b.build()));
}

#[test]
fn a_partial_checksum_is_left_to_tc() {
    let dp = node::datapath(UPLINK_IFINDEX);
    established(&dp);
    // What a sender with TX checksum offload hands over: the folded
    // pseudo-header sum in place of the checksum.
    let mut frame = data_reply().build();
    let len = (frame.len() - 14 - 20) as u32;
    let mut sum: u32 = [LAN.octets(), NODE.octets()]
        .iter()
        .flat_map(|a| {
            [
                u16::from_be_bytes([a[0], a[1]]),
                u16::from_be_bytes([a[2], a[3]]),
            ]
        })
        .map(u32::from)
        .sum::<u32>()
        + 6
        + len;
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    frame[14 + 20 + 16..14 + 20 + 18].copy_from_slice(&(sum as u16).to_be_bytes());
    assert_eq!(
        xdp(dp.xdp_uplink_program(), &frame),
        (XDP_PASS, frame.clone())
    );
}

#[test]
fn udp_replies_are_translated_and_a_missing_checksum_stays_missing() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    let req = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    from_pod(&dp, &req);
    let reply = Ipv4Builder::udp((LAN, 53), (NODE, 5353));
    let (verdict, out) = run(&dp, &reply);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(
        out,
        delivered(&reply, (POD_A, 5353), (POD_A_MAC, POD_A_GW_MAC))
    );
    assert_eq!(conn(&mut dp).state, ct_state::UDP_REPLIED);

    let mut bare = reply.clone();
    bare.l4 = L4::Udp {
        sport: 53,
        dport: 5353,
        csum: false,
    };
    let (verdict, out) = run(&dp, &bare);
    assert_eq!(verdict, XDP_REDIRECT);
    assert_eq!(
        out,
        delivered(&bare, (POD_A, 5353), (POD_A_MAC, POD_A_GW_MAC))
    );
    assert_eq!(&out[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
    assert_eq!(packets(&mut dp, Stat::XdpFwdRevSnat), 2);
}

#[test]
fn an_established_dnat_flow_is_translated_to_its_backend() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    // A LAN client's connection to a port-forward NODE:8080 → pod B:80,
    // as the DNAT path records it: one entry by the original tuple, the
    // reverse entry at the backend's reply tuple.
    let orig = CtKey {
        saddr: LAN.octets(),
        daddr: NODE.octets(),
        sport: 40_000,
        dport: 8080,
        proto: 6,
        _pad: [0; 3],
    };
    let now = now_ns();
    let entry = CtEntry {
        nat_addr: POD_B.octets(),
        nat_port: 80,
        state: ct_state::TCP_ESTABLISHED,
        flags: ct_flags::DNAT | ct_flags::SEEN_ORIG | ct_flags::SEEN_REPLY,
        created_ns: now,
        last_seen_ns: now,
        packets_orig: 2,
        packets_reply: 1,
        tcp: [
            TcpDir {
                end: 101,
                max_win: 65535,
            },
            TcpDir {
                end: 901,
                max_win: 65535,
            },
        ],
    };
    let maps = dp.maps();
    maps.insert_revnat(
        dnat_reply_key(&orig, POD_B.octets(), 80, None),
        RevNat {
            addr: NODE.octets(),
            port: 8080,
            flags: ct_flags::DNAT,
            _pad: 0,
            created_ns: now,
        },
    )
    .unwrap();
    maps.insert_conntrack(orig, entry).unwrap();

    let mut b = tcp((LAN, 40_000), (NODE, 8080), TCP_ACK | TCP_PSH, 101, 901);
    b.payload = b"GET / HTTP/1.0\r\n\r\n".to_vec();
    let (verdict, out) = run(&dp, &b);
    assert_eq!(verdict, XDP_REDIRECT);
    let pod_b = node::endpoint(node::POD_B_IFINDEX, 3);
    assert_eq!(
        out,
        delivered(&b, (POD_B, 80), (pod_b.pod_mac, pod_b.gw_mac))
    );
    assert_eq!(packets(&mut dp, Stat::XdpFwdDnat), 1);
    let e = dp.maps().conntrack_entry(&orig).unwrap().unwrap();
    assert_eq!(e.packets_orig, 3);
    assert_eq!(e.tcp[0].end, 101 + 18);

    // Without its reverse entry the connection is TC's to repair.
    dp.maps()
        .remove_revnat(&dnat_reply_key(&orig, POD_B.octets(), 80, None))
        .unwrap();
    assert_eq!(run(&dp, &b), (XDP_PASS, b.build()));
}
