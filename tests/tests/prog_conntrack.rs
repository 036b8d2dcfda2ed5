//! `BPF_PROG_TEST_RUN` tests of the connection tracking and NAT invariants
//! (see `netpath-ebpf/src/nat.rs`): netfilter's TCP/UDP states, the partner
//! checks of both directions (repair, refusal, stale entries), the tables
//! filled to the brim, claims racing across CPUs, and the node's own
//! connections translated by `np_to_uplink`. Every test ends by checking
//! the invariants over the dumped maps with `check_nat_invariants`.

use std::{net::Ipv4Addr, sync::Barrier};

use netpath::{
    conntrack::{check_nat_invariants, now_ns},
    datapath::{Datapath, LoadOptions},
};
use netpath_common::{
    CtEntry, CtKey, Endpoint, MasqRule, NodeSettings, RevNat, RouteNextHop, Stat, ct_flags,
    ct_state, reply_key,
};
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

fn settings(ports: u16) -> NodeSettings {
    NodeSettings {
        nat_port_min: PORT_MIN,
        nat_port_max: PORT_MIN + ports - 1,
        ..NodeSettings::DEFAULT
    }
}

/// Two pods, a default route via the LAN host on the uplink, masquerade of
/// the pod CIDR, NAT ports 40000..40000+`ports`, a connection table of
/// `table` entries.
fn datapath(ports: u16, table: u32) -> Datapath {
    let mut dp = Datapath::load(LoadOptions {
        conntrack_max: table,
        ..LoadOptions::default()
    })
    .expect("load the eBPF object");
    let maps = dp.maps();
    for (addr, ifindex, last) in [(POD_A, 11, 2), (POD_B, 12, 3)] {
        maps.upsert_endpoint(
            addr,
            Endpoint {
                ifindex,
                flags: 0,
                pod_mac: [0x02, 0xaa, 0, 0, 0, last],
                gw_mac: [0x02, 0x99, 0, 0, 0, last],
            },
        )
        .unwrap();
    }
    maps.set_settings(settings(ports)).unwrap();
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
    let (ifindex, last) = if b.src == POD_A { (11, 2) } else { (12, 3) };
    let mut sent = b.clone();
    sent.src_mac = [0x02, 0xaa, 0, 0, 0, last];
    packet::test_run_ctx(
        dp.from_pod_program(),
        &sent.build(),
        SkbCtx::ingress(ifindex),
    )
}

fn from_uplink(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    run(dp.from_uplink_program(), &b.build())
}

fn to_uplink(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    run(dp.to_uplink_program(), &b.build())
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

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

fn sport_of(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[34], frame[35]])
}

fn set_sport(l4: &mut L4, port: u16) {
    match l4 {
        L4::Tcp { sport, .. } | L4::Udp { sport, .. } => *sport = port,
        L4::Icmp { rest, .. } => rest[..2].copy_from_slice(&port.to_be_bytes()),
        L4::Raw => {}
    }
}

fn set_dport(l4: &mut L4, port: u16) {
    match l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => *dport = port,
        L4::Icmp { rest, .. } => rest[..2].copy_from_slice(&port.to_be_bytes()),
        L4::Raw => {}
    }
}

/// `b` as it leaves the uplink after SNAT: source `nat`, TTL − 1.
fn translated(b: &Ipv4Builder, nat: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut t = b.clone();
    t.src = nat.0;
    t.ttl -= 1;
    set_sport(&mut t.l4, nat.1);
    t.build()
}

/// `b` as it reaches pod A: destination `to`, TTL − 1, pod MACs.
fn delivered(b: &Ipv4Builder, to: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut t = b.clone();
    t.dst = to.0;
    t.ttl -= 1;
    t.dst_mac = POD_A_MAC;
    t.src_mac = POD_A_GW_MAC;
    set_dport(&mut t.l4, to.1);
    t.build()
}

fn entry(dp: &mut Datapath, key: &CtKey) -> CtEntry {
    dp.maps()
        .conntrack_entry(key)
        .unwrap()
        .unwrap_or_else(|| panic!("no entry for {key:?}"))
}

fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8) -> CtKey {
    CtKey {
        saddr: src.0.octets(),
        daddr: dst.0.octets(),
        sport: src.1,
        dport: dst.1,
        proto,
        _pad: [0; 3],
    }
}

/// The invariants hold over both maps right now.
fn assert_invariants(dp: &mut Datapath, ports: u16) {
    let ct = dp.maps().conntrack().unwrap();
    let rev = dp.maps().revnat().unwrap();
    let broken = check_nat_invariants(&ct, &rev, &settings(ports), now_ns());
    assert!(
        broken.is_empty(),
        "{}",
        broken
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// A full handshake of pod A's `sport` to LAN:80; the pod's ISN is 100,
/// the server's 900. Returns the NAT port.
fn handshake(dp: &Datapath, sport: u16) -> u16 {
    let (_, out) = from_pod(dp, &tcp((POD_A, sport), (LAN, 80), TCP_SYN, 100, 0));
    let port = sport_of(&out);
    let (v, _) = from_uplink(
        dp,
        &tcp((LAN, 80), (NODE, port), TCP_SYN | TCP_ACK, 900, 101),
    );
    assert_eq!(v, TC_ACT_REDIRECT);
    from_pod(dp, &tcp((POD_A, sport), (LAN, 80), TCP_ACK, 101, 901));
    port
}

#[test]
fn a_syn_ack_that_does_not_acknowledge_the_syn_leaves_syn_sent() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 7000), (LAN, 80), 6);
    from_pod(&dp, &tcp((POD_A, 7000), (LAN, 80), TCP_SYN, 100, 0));
    // Translated and delivered (netfilter forwards it too), state unchanged.
    let bad = tcp((LAN, 80), (NODE, 7000), TCP_SYN | TCP_ACK, 900, 555);
    let (v, out) = from_uplink(&dp, &bad);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&bad, (POD_A, 7000)));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_SYN_SENT);
    // A plain ACK from the reply side does not establish it either.
    from_uplink(&dp, &tcp((LAN, 80), (NODE, 7000), TCP_ACK, 900, 101));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_SYN_SENT);
    from_uplink(
        &dp,
        &tcp((LAN, 80), (NODE, 7000), TCP_SYN | TCP_ACK, 900, 101),
    );
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_SYN_RECV);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_rst_closes_only_in_window() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 7001), (LAN, 80), 6);
    let port = handshake(&dp, 7001);
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_ESTABLISHED);
    // The server's next sequence number is 901; the pod advertised a
    // window of 65535 (the builder's). Far outside: forwarded, ignored.
    let blind = tcp((LAN, 80), (NODE, port), TCP_RST, 901 + 200_000, 0);
    let (v, out) = from_uplink(&dp, &blind);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&blind, (POD_A, 7001)));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_ESTABLISHED);
    assert_eq!(packets(&mut dp, Stat::CtRstOutOfWindow), 1);
    // In window: closes.
    from_uplink(&dp, &tcp((LAN, 80), (NODE, port), TCP_RST, 901, 0));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_CLOSE);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_rst_in_syn_sent_must_acknowledge_the_syn() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 7002), (LAN, 80), 6);
    from_pod(&dp, &tcp((POD_A, 7002), (LAN, 80), TCP_SYN, 100, 0));
    from_uplink(
        &dp,
        &tcp((LAN, 80), (NODE, 7002), TCP_RST | TCP_ACK, 0, 4242),
    );
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_SYN_SENT);
    // "Connection refused", acknowledging the SYN.
    from_uplink(
        &dp,
        &tcp((LAN, 80), (NODE, 7002), TCP_RST | TCP_ACK, 0, 101),
    );
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_CLOSE);
}

#[test]
fn a_full_close_walks_netfilters_states_and_a_new_syn_reopens_time_wait() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 7003), (LAN, 80), 6);
    let port = handshake(&dp, 7003);
    let (pod, lan, nat) = ((POD_A, 7003), (LAN, 80), (NODE, port));
    from_pod(&dp, &tcp(pod, lan, TCP_FIN | TCP_ACK, 101, 901));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_FIN_WAIT);
    // The server acknowledges the FIN and may still send.
    from_uplink(&dp, &tcp(lan, nat, TCP_ACK, 901, 102));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_CLOSE_WAIT);
    from_uplink(&dp, &tcp(lan, nat, TCP_FIN | TCP_ACK, 901, 102));
    assert_eq!(entry(&mut dp, &k).state, ct_state::TCP_LAST_ACK);
    from_pod(&dp, &tcp(pod, lan, TCP_ACK, 102, 902));
    let e = entry(&mut dp, &k);
    assert_eq!(e.state, ct_state::TCP_TIME_WAIT);
    let s = NodeSettings::DEFAULT;
    assert_eq!(s.ct_timeout_of(&e), 120);
    // A new SYN on the same tuple: a fresh connection, same mapping.
    let syn = tcp(pod, lan, TCP_SYN, 5000, 0);
    let (v, out) = from_pod(&dp, &syn);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&syn, (NODE, port))[14..]);
    let e = entry(&mut dp, &k);
    assert_eq!(e.state, ct_state::TCP_SYN_SENT);
    assert_eq!((e.packets_orig, e.packets_reply), (1, 0));
    assert_eq!(e.tcp[0].end, 5001);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_mid_stream_pickup_gets_the_unacknowledged_timeout_until_answered() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 7004), (LAN, 80), 6);
    let data = tcp((POD_A, 7004), (LAN, 80), TCP_ACK, 3000, 8000);
    let (v, out) = from_pod(&dp, &data);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&data, (NODE, 7004))[14..]);
    let e = entry(&mut dp, &k);
    assert_eq!(e.state, ct_state::TCP_ESTABLISHED);
    assert_ne!(e.flags & ct_flags::PICKUP, 0);
    let s = NodeSettings::DEFAULT;
    assert_eq!(s.ct_timeout_of(&e), 300, "not 5 days");
    from_uplink(&dp, &tcp((LAN, 80), (NODE, 7004), TCP_ACK, 8000, 3000));
    assert_eq!(s.ct_timeout_of(&entry(&mut dp, &k)), 432_000);
}

#[test]
fn a_packet_that_opens_nothing_is_dropped_as_invalid() {
    let mut dp = datapath(10, 1024);
    for flags in [TCP_RST, TCP_SYN | TCP_ACK, TCP_FIN, 0] {
        let (v, _) = from_pod(&dp, &tcp((POD_A, 7005), (LAN, 80), flags, 1, 1));
        assert_eq!(v, TC_ACT_SHOT, "flags {flags:#x}");
    }
    assert_eq!(packets(&mut dp, Stat::DropCtInvalid), 4);
    assert!(dp.maps().conntrack().unwrap().is_empty());
    assert!(dp.maps().revnat().unwrap().is_empty(), "nothing claimed");
}

#[test]
fn udp_becomes_a_stream_only_with_replies_over_two_seconds() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 5353), (LAN, 53), 17);
    let q = Ipv4Builder::udp((POD_A, 5353), (LAN, 53));
    let r = Ipv4Builder::udp((LAN, 53), (NODE, 5353));
    from_pod(&dp, &q);
    from_pod(&dp, &q);
    assert_eq!(entry(&mut dp, &k).state, ct_state::UDP_UNREPLIED);
    from_uplink(&dp, &r);
    assert_eq!(entry(&mut dp, &k).state, ct_state::UDP_REPLIED);
    assert_eq!(NodeSettings::DEFAULT.ct_timeout_of(&entry(&mut dp, &k)), 30);
    // Age the connection by 3 s: the next packet makes it a stream.
    let mut e = entry(&mut dp, &k);
    e.created_ns -= 3_000_000_000;
    dp.maps().insert_conntrack(k, e).unwrap();
    from_pod(&dp, &q);
    let e = entry(&mut dp, &k);
    assert_eq!(e.state, ct_state::UDP_STREAM);
    assert_eq!(NodeSettings::DEFAULT.ct_timeout_of(&e), 120);
    assert_invariants(&mut dp, 10);
}

#[test]
fn an_unreplied_old_udp_flow_is_not_a_stream() {
    let mut dp = datapath(10, 1024);
    let k = key((POD_A, 5354), (LAN, 53), 17);
    let q = Ipv4Builder::udp((POD_A, 5354), (LAN, 53));
    from_pod(&dp, &q);
    let mut e = entry(&mut dp, &k);
    e.created_ns -= 3_000_000_000;
    dp.maps().insert_conntrack(k, e).unwrap();
    from_pod(&dp, &q);
    assert_eq!(entry(&mut dp, &k).state, ct_state::UDP_UNREPLIED);
}

#[test]
fn a_missing_reverse_entry_is_repaired_by_the_next_packet() {
    let mut dp = datapath(10, 1024);
    let port = handshake(&dp, 7100);
    let k = key((POD_A, 7100), (LAN, 80), 6);
    let reply = reply_key(&k, NODE.octets(), port);
    dp.maps().remove_revnat(&reply).unwrap();
    let more = tcp((POD_A, 7100), (LAN, 80), TCP_ACK, 101, 901);
    let (v, out) = from_pod(&dp, &more);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(
        &out[14..],
        &translated(&more, (NODE, port))[14..],
        "same port"
    );
    assert_eq!(packets(&mut dp, Stat::NatRepairReverse), 1);
    let rev = dp
        .maps()
        .revnat_entry(&reply)
        .unwrap()
        .expect("re-inserted");
    assert!(rev.leads_back(&k));
    // The reply finds the pod again.
    let r = tcp((LAN, 80), (NODE, port), TCP_ACK, 901, 101);
    let (v, out) = from_uplink(&dp, &r);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&r, (POD_A, 7100)));
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_tuple_taken_by_another_flow_is_never_shared() {
    let mut dp = datapath(10, 1024);
    let port = handshake(&dp, 7200);
    let a = key((POD_A, 7200), (LAN, 80), 6);
    let reply = reply_key(&a, NODE.octets(), port);
    // Pod B's flow now owns A's external tuple (as if A's claim had been
    // lost and B had taken it).
    let b = key((POD_B, 7200), (LAN, 80), 6);
    let mut eb = entry(&mut dp, &a);
    eb.nat_port = port;
    dp.maps().insert_conntrack(b, eb).unwrap();
    dp.maps()
        .insert_revnat(
            reply,
            RevNat {
                addr: POD_B.octets(),
                port: 7200,
                flags: 0,
                _pad: 0,
                created_ns: now_ns(),
            },
        )
        .unwrap();
    // A's next packet must not go out on B's tuple.
    let (v, out) = from_pod(&dp, &tcp((POD_A, 7200), (LAN, 80), TCP_ACK, 101, 901));
    assert_eq!(v, TC_ACT_REDIRECT);
    let new = sport_of(&out);
    assert_ne!(new, port);
    assert!((PORT_MIN..PORT_MIN + 10).contains(&new), "{new}");
    assert_eq!(packets(&mut dp, Stat::NatConflict), 1);
    assert_eq!(entry(&mut dp, &a).nat_port, new);
    assert!(
        dp.maps()
            .revnat_entry(&reply)
            .unwrap()
            .is_some_and(|r| r.addr == POD_B.octets()),
        "B's claim is untouched"
    );
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_reply_recreates_an_evicted_connection_with_the_same_mapping() {
    let mut dp = datapath(10, 1024);
    // B keeps 7300, so A's flow gets a random port: only its reverse entry
    // remembers which.
    from_pod(&dp, &tcp((POD_B, 7300), (LAN, 80), TCP_SYN, 1, 0));
    let (_, out) = from_pod(&dp, &tcp((POD_A, 7300), (LAN, 80), TCP_SYN, 100, 0));
    let port = sport_of(&out);
    assert_ne!(port, 7300);
    let a = key((POD_A, 7300), (LAN, 80), 6);
    dp.maps().remove_conntrack(&a).unwrap();
    let r = tcp((LAN, 80), (NODE, port), TCP_SYN | TCP_ACK, 900, 101);
    let (v, out) = from_uplink(&dp, &r);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&r, (POD_A, 7300)));
    assert_eq!(packets(&mut dp, Stat::NatRepairForward), 1);
    let e = entry(&mut dp, &a);
    assert_eq!((e.nat_addr, e.nat_port), (NODE.octets(), port));
    // The pod's next packet keeps that port.
    let (_, out) = from_pod(&dp, &tcp((POD_A, 7300), (LAN, 80), TCP_ACK, 101, 901));
    assert_eq!(sport_of(&out), port);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_connection_whose_entry_was_evicted_readopts_its_own_port() {
    let mut dp = datapath(10, 1024);
    let q = Ipv4Builder::udp((POD_A, 6100), (LAN, 53));
    from_pod(&dp, &q);
    let a = key((POD_A, 6100), (LAN, 53), 17);
    dp.maps().remove_conntrack(&a).unwrap();
    let (_, out) = from_pod(&dp, &q);
    assert_eq!(&out[14..], &translated(&q, (NODE, 6100))[14..]);
    assert_eq!(dp.maps().revnat().unwrap().len(), 1);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_stale_reverse_entry_is_deleted_and_its_reply_goes_to_the_node() {
    let mut dp = datapath(10, 1024);
    let q = Ipv4Builder::udp((POD_A, 6200), (LAN, 53));
    from_pod(&dp, &q);
    let a = key((POD_A, 6200), (LAN, 53), 17);
    // An old claim of A on another port.
    let stale = reply_key(&a, NODE.octets(), 40005);
    dp.maps()
        .insert_revnat(
            stale,
            RevNat {
                addr: POD_A.octets(),
                port: 6200,
                flags: 0,
                _pad: 0,
                created_ns: 0,
            },
        )
        .unwrap();
    let r = Ipv4Builder::udp((LAN, 53), (NODE, 40005));
    let frame = r.build();
    let (v, out) = run(dp.from_uplink_program(), &frame);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out, frame, "untouched");
    assert_eq!(packets(&mut dp, Stat::NatStaleReverse), 1);
    assert!(dp.maps().revnat_entry(&stale).unwrap().is_none());
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_fresh_claim_without_its_connection_is_not_taken_but_an_old_one_is() {
    let mut dp = datapath(1, 1024);
    // A claim of 40000 by a connection of pod B being created right now.
    let b = key((POD_B, 6300), (LAN, 53), 17);
    let t = reply_key(&b, NODE.octets(), PORT_MIN);
    let claim = |created_ns| RevNat {
        addr: POD_B.octets(),
        port: 6300,
        flags: 0,
        _pad: 0,
        created_ns,
    };
    dp.maps().insert_revnat(t, claim(now_ns())).unwrap();
    // Pod B's 6301 keeps its port; pod A's 6301 then needs the range's
    // only port, 40000, which the fresh claim holds.
    from_pod(&dp, &Ipv4Builder::udp((POD_B, 6301), (LAN, 53)));
    let (v, _) = from_pod(&dp, &Ipv4Builder::udp((POD_A, 6301), (LAN, 53)));
    assert_eq!(v, TC_ACT_SHOT, "40000 is being created: not taken");
    assert_eq!(packets(&mut dp, Stat::DropSnatNoPort), 1);
    // The same claim, older than the grace period, with no connection: dead.
    dp.maps()
        .insert_revnat(t, claim(now_ns() - 10_000_000_000))
        .unwrap();
    let q = Ipv4Builder::udp((POD_A, 6301), (LAN, 53));
    let (v, out) = from_pod(&dp, &q);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(&out[14..], &translated(&q, (NODE, PORT_MIN))[14..]);
    assert!(
        dp.maps()
            .revnat_entry(&t)
            .unwrap()
            .is_some_and(|r| r.addr == POD_A.octets())
    );
    assert_invariants(&mut dp, 1);
}

#[test]
fn full_tables_evict_connections_drop_when_no_claim_fits_and_keep_the_invariants() {
    // 1024 connections; the reverse map holds 1536.
    let mut dp = datapath(10_000, 1024);
    let mut sent = 0u32;
    let mut dropped = 0u32;
    for i in 0..2000u16 {
        let q = Ipv4Builder::udp((POD_A, 10_000 + i), (LAN, 53));
        let (v, out) = from_pod(&dp, &q);
        match v {
            TC_ACT_REDIRECT => {
                sent += 1;
                assert!(packet::l4_checksum_ok(&out));
            }
            TC_ACT_SHOT => {
                dropped += 1;
            }
            v => panic!("verdict {v}"),
        }
        if i % 250 == 0 {
            assert_invariants(&mut dp, 10_000);
        }
    }
    assert_invariants(&mut dp, 10_000);
    let ct = dp.maps().conntrack().unwrap().len();
    let rev = dp.maps().revnat().unwrap().len();
    assert!(ct <= 1024, "{ct}");
    assert_eq!(rev, 1536, "the reverse map is full");
    assert_eq!(sent, 1536, "one claim per translated connection");
    assert_eq!(dropped, 2000 - 1536);
    assert_eq!(packets(&mut dp, Stat::DropNatTableFull), u64::from(dropped));
    // A reply to a connection the LRU evicted re-creates it.
    let evicted = (0..2000u16)
        .map(|i| key((POD_A, 10_000 + i), (LAN, 53), 17))
        .find(|k| {
            dp.maps().conntrack_entry(k).unwrap().is_none()
                && dp
                    .maps()
                    .revnat_entry(&reply_key(k, NODE.octets(), k.sport))
                    .unwrap()
                    .is_some()
        })
        .expect("an evicted connection with its claim");
    let r = Ipv4Builder::udp((LAN, 53), (NODE, evicted.sport));
    let (v, out) = from_uplink(&dp, &r);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&r, (POD_A, evicted.sport)));
    assert!(dp.maps().conntrack_entry(&evicted).unwrap().is_some());
    assert_invariants(&mut dp, 10_000);
}

#[test]
fn two_cpus_creating_flows_on_one_port_end_with_one_mapping_each() {
    const FLOWS: u16 = 200;
    let mut dp = datapath(1000, 4096);
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let barrier = Barrier::new(2);
    let dp_ref = &dp;
    // Both threads send the same SYNs of pod A and of pod B, which all
    // want the same original port per flow index: each flow is created by
    // two CPUs at once and competes with the other pod's flow for its
    // port.
    let outs: Vec<Vec<(u16, u16, u16)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let barrier = &barrier;
                s.spawn(move || {
                    pin_to_cpu(t % cpus);
                    barrier.wait();
                    let mut seen = Vec::new();
                    for i in 0..FLOWS {
                        for (pod, tag) in [(POD_A, 0u16), (POD_B, 1)] {
                            let (v, out) =
                                from_pod(dp_ref, &tcp((pod, 20_000 + i), (LAN, 80), TCP_SYN, 1, 0));
                            assert_eq!(v, TC_ACT_REDIRECT);
                            seen.push((tag, i, sport_of(&out)));
                        }
                    }
                    seen
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every packet of a flow left with its connection's mapping.
    for (tag, i, port) in outs.iter().flatten() {
        let pod = if *tag == 0 { POD_A } else { POD_B };
        let k = key((pod, 20_000 + i), (LAN, 80), 6);
        assert_eq!(entry(&mut dp, &k).nat_port, *port, "{k:?}");
    }
    assert_eq!(dp.maps().conntrack().unwrap().len(), 2 * usize::from(FLOWS));
    assert_eq!(
        dp.maps().revnat().unwrap().len(),
        2 * usize::from(FLOWS),
        "no claim leaked by a lost race"
    );
    assert_invariants(&mut dp, 1000);
}

fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; sched_setaffinity(0, ...) pins
    // the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[test]
fn a_node_connection_after_a_pods_on_the_same_tuple_is_moved_to_a_free_port() {
    let mut dp = datapath(10, 1024);
    // The pod's connection keeps 45678 towards LAN:9200.
    let pod_syn = tcp((POD_A, 45678), (LAN, 9200), TCP_SYN, 100, 0);
    let (_, out) = from_pod(&dp, &pod_syn);
    assert_eq!(sport_of(&out), 45678);
    // Then the node connects from 45678 to the same peer.
    let node_syn = tcp((NODE, 45678), (LAN, 9200), TCP_SYN, 7000, 0);
    let (v, out) = to_uplink(&dp, &node_syn);
    assert_eq!(v, TC_ACT_OK);
    let moved = sport_of(&out);
    assert!((PORT_MIN..PORT_MIN + 10).contains(&moved), "{moved}");
    let mut want = node_syn.clone();
    set_sport(&mut want.l4, moved);
    assert_eq!(
        out,
        want.build(),
        "only the port changes, checksum included"
    );
    assert!(packet::l4_checksum_ok(&out));
    let nk = key((NODE, 45678), (LAN, 9200), 6);
    let ne = entry(&mut dp, &nk);
    assert_ne!(ne.flags & ct_flags::NODE, 0);
    assert_eq!(packets(&mut dp, Stat::NodeNatNew), 1);
    // The node's reply comes back to the node's port, for the stack.
    let reply = tcp((LAN, 9200), (NODE, moved), TCP_SYN | TCP_ACK, 3000, 7001);
    let (v, out) = from_uplink(&dp, &reply);
    assert_eq!(v, TC_ACT_OK);
    let mut want = reply.clone();
    set_dport(&mut want.l4, 45678);
    assert_eq!(out, want.build());
    // The pod's reply still reaches the pod.
    let preply = tcp((LAN, 9200), (NODE, 45678), TCP_SYN | TCP_ACK, 5000, 101);
    let (v, out) = from_uplink(&dp, &preply);
    assert_eq!(v, TC_ACT_REDIRECT);
    assert_eq!(out, delivered(&preply, (POD_A, 45678)));
    // The node's next packet keeps its mapping.
    let (_, out) = to_uplink(&dp, &tcp((NODE, 45678), (LAN, 9200), TCP_ACK, 7001, 3001));
    assert_eq!(sport_of(&out), moved);
    assert_invariants(&mut dp, 10);
}

#[test]
fn a_node_connection_without_collision_is_left_alone() {
    let mut dp = datapath(10, 1024);
    let b = tcp((NODE, 33333), (LAN, 22), TCP_SYN, 1, 0);
    let frame = b.build();
    let (v, out) = run(dp.to_uplink_program(), &frame);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out, frame);
    assert!(dp.maps().conntrack().unwrap().is_empty());
    assert_eq!(packets(&mut dp, Stat::NodePass), 1);
}

#[test]
fn a_node_ping_holds_its_identifier_against_a_pods() {
    let mut dp = datapath(10, 1024);
    let ping = Ipv4Builder::icmp(NODE, LAN, icmp_echo(8, 0x4242, 1));
    let frame = ping.build();
    let (v, out) = run(dp.to_uplink_program(), &frame);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out, frame, "its own identifier");
    // The pod's ping with the same identifier gets another one.
    let (v, out) = from_pod(&dp, &Ipv4Builder::icmp(POD_A, LAN, icmp_echo(8, 0x4242, 1)));
    assert_eq!(v, TC_ACT_REDIRECT);
    let id = u16::from_be_bytes([out[38], out[39]]);
    assert_ne!(id, 0x4242);
    // The node's echo reply goes to the node, untouched.
    let pong = Ipv4Builder::icmp(LAN, NODE, icmp_echo(0, 0x4242, 1)).build();
    let (v, out) = run(dp.from_uplink_program(), &pong);
    assert_eq!(v, TC_ACT_OK);
    assert_eq!(out, pong);
    assert_invariants(&mut dp, 10);
}

#[test]
fn an_icmp_error_about_a_moved_node_connection_goes_to_the_node_translated_back() {
    let mut dp = datapath(10, 1024);
    from_pod(&dp, &Ipv4Builder::udp((POD_A, 5300), (LAN, 9)));
    let node_q = Ipv4Builder::udp((NODE, 5300), (LAN, 9));
    let (_, left) = to_uplink(&dp, &node_q);
    let moved = sport_of(&left);
    assert_ne!(moved, 5300);
    let mut err = Ipv4Builder::icmp(
        LAN,
        NODE,
        L4::Icmp {
            ty: 3,
            code: 3,
            rest: [0; 4],
        },
    );
    err.payload = left[14..14 + 28].to_vec();
    let (v, out) = from_uplink(&dp, &err);
    assert_eq!(v, TC_ACT_OK);
    let mut want = err.clone();
    want.payload = node_q.build()[14..14 + 28].to_vec();
    assert_eq!(
        out,
        want.build(),
        "the quote is the node's own packet again"
    );
    assert_invariants(&mut dp, 10);
}

#[test]
fn gc_leaves_a_claim_being_created_and_collects_an_old_orphan() {
    let mut dp = datapath(10, 1024);
    let now = now_ns();
    let fresh_key = key((POD_A, 8000), (LAN, 53), 17);
    let old_key = key((POD_A, 8001), (LAN, 53), 17);
    let claim = |k: &CtKey, created_ns| RevNat {
        addr: k.saddr,
        port: k.sport,
        flags: 0,
        _pad: 0,
        created_ns,
    };
    let fresh = reply_key(&fresh_key, NODE.octets(), 8000);
    let old = reply_key(&old_key, NODE.octets(), 8001);
    dp.maps()
        .insert_revnat(fresh, claim(&fresh_key, now))
        .unwrap();
    dp.maps()
        .insert_revnat(old, claim(&old_key, now - 10_000_000_000))
        .unwrap();
    // A live connection too, which GC must keep with its claim.
    let q = Ipv4Builder::udp((POD_A, 8002), (LAN, 53));
    from_pod(&dp, &q);
    let report = netpath::conntrack::gc(dp.maps(), now_ns()).unwrap();
    assert_eq!(
        (
            report.removed,
            report.orphans,
            report.repaired,
            report.remaining
        ),
        (0, 1, 0, 1)
    );
    assert!(dp.maps().revnat_entry(&fresh).unwrap().is_some());
    assert!(dp.maps().revnat_entry(&old).unwrap().is_none());
    assert_eq!(dp.maps().revnat().unwrap().len(), 2);
    assert_invariants(&mut dp, 10);
}
