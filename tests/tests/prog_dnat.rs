//! `BPF_PROG_TEST_RUN` tests of destination NAT: port-forwards and
//! services through `np_from_uplink` and `np_from_pod`, their replies, the
//! Maglev pick (checked against what userspace predicts), ClientIP
//! affinity, refusals of frontends without backends, the hairpin, and ICMP
//! errors about DNAT connections. Every expected frame is built from
//! scratch (checksums computed by the test's builder), never copied from
//! the program's output.

use std::{collections::BTreeMap, net::Ipv4Addr};

use netpath::{
    conntrack::check_nat_invariants,
    datapath::{Datapath, lb_maps::frontend_key},
    lb::maglev::{self, Member},
};
use netpath_common::{
    Backend, BackendKey, CtEntry, CtKey, Frontend, RevNat, Stat, ct_flags, ct_state,
    frontend_flags, lb::maglev_slot,
};
use tests::{
    node::{self, GATEWAY, LAN, NODE, POD_A, POD_A_IFINDEX, POD_B, POD_B_IFINDEX, UPLINK_IFINDEX},
    packet::{
        self, IPPROTO_TCP, IPPROTO_UDP, Ipv4Builder, L4, SkbCtx, TC_ACT_REDIRECT, TC_ACT_SHOT,
        TCP_ACK, TCP_RST, TCP_SYN,
    },
};

/// A service VIP (routed to the node, no local address).
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Extra local pods for the load-balancing tests (backends C, D, E).
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 4);
const POD_D: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 5);
const POD_E: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 6);

/// The node of `tests::node` (pods A and B, the gateway, a default route
/// via the LAN host out of the uplink, masquerade of the pod CIDR) with
/// pods C, D and E too.
fn datapath() -> Datapath {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    for (addr, ifindex, last) in [(POD_C, 13, 4), (POD_D, 14, 5), (POD_E, 15, 6)] {
        dp.maps()
            .upsert_endpoint(addr, node::endpoint(ifindex, last))
            .unwrap();
    }
    dp
}

/// The veth ifindex and MAC-address byte of each local pod.
fn pod_of(addr: Ipv4Addr) -> (u32, u8) {
    match addr {
        POD_A => (POD_A_IFINDEX, 2),
        POD_B => (POD_B_IFINDEX, 3),
        POD_C => (13, 4),
        POD_D => (14, 5),
        POD_E => (15, 6),
        _ => panic!("{addr} is no pod"),
    }
}

/// The Maglev members of `backends` (index i + 1, named `addr:port`).
fn members(backends: &[(Ipv4Addr, u16)]) -> Vec<Member> {
    backends
        .iter()
        .zip(1..)
        .map(|((a, p), index)| Member {
            name: format!("{a}:{p}"),
            index,
        })
        .collect()
}

/// Declares frontend `addr:port/proto` (id `id`) with `backends`
/// (indices 1..) and their Maglev table; returns the table.
fn frontend(
    dp: &mut Datapath,
    (addr, port, proto): (Ipv4Addr, u16, u8),
    id: u32,
    flags: u8,
    backends: &[(Ipv4Addr, u16)],
) -> Vec<u32> {
    let lb = dp.maps().lb_mut();
    lb.set_frontend(
        frontend_key(addr, port, proto),
        Frontend {
            id,
            backends: u16::try_from(backends.len()).unwrap(),
            flags,
            _pad: 0,
            affinity_timeout_secs: 60,
            maglev_size: 0,
            maglev_gen: 0,
            _pad2: 0,
        },
    )
    .unwrap();
    for (i, (a, p)) in (1..).zip(backends) {
        lb.set_backend(
            BackendKey {
                frontend: id,
                index: i,
            },
            Backend {
                addr: a.octets(),
                port: *p,
                flags: 0,
                _pad: 0,
            },
        )
        .unwrap();
    }
    if backends.is_empty() {
        return Vec::new();
    }
    let table = maglev::table(&members(backends));
    lb.swap_maglev(&frontend_key(addr, port, proto), &table)
        .unwrap();
    table
}

/// The number of slots of a Maglev table.
fn size(table: &[u32]) -> u32 {
    u32::try_from(table.len()).unwrap()
}

/// Runs `b` through `np_from_pod` as its source pod sends it (its MAC, its
/// veth).
fn from_pod(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    let (ifindex, last) = pod_of(b.src);
    let mut b = b.clone();
    b.src_mac = node::endpoint(ifindex, last).pod_mac;
    packet::test_run_ctx(dp.from_pod_program(), &b.build(), SkbCtx::ingress(ifindex))
}

/// Runs `b` through `np_from_uplink` as arriving on the uplink.
fn from_uplink(dp: &Datapath, b: &Ipv4Builder) -> (u32, Vec<u8>) {
    packet::test_run_ctx(
        dp.from_uplink_program(),
        &b.build(),
        SkbCtx::ingress(UPLINK_IFINDEX),
    )
}

fn packets(dp: &mut Datapath, stat: Stat) -> u64 {
    dp.maps().stat(stat).unwrap().packets
}

fn conntrack(dp: &mut Datapath) -> Vec<(CtKey, CtEntry)> {
    dp.maps().conntrack().unwrap()
}

/// No conntrack/NAT invariant is broken (DNAT entries included).
fn assert_invariants(dp: &mut Datapath) {
    let maps = dp.maps();
    let v = check_nat_invariants(
        &maps.conntrack().unwrap(),
        &maps.revnat().unwrap(),
        &maps.settings().unwrap(),
        netpath::conntrack::now_ns(),
    );
    assert!(v.is_empty(), "{v:?}");
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

fn set_ports(l4: &mut L4, src: Option<u16>, dst: Option<u16>) {
    if let L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport, .. } = l4 {
        if let Some(p) = src {
            *sport = p;
        }
        if let Some(p) = dst {
            *dport = p;
        }
    }
}

/// `b` with source `src` and destination `dst` (addresses and ports),
/// TTL − 1: what the program must send on, checksums from scratch.
fn rewritten(b: &Ipv4Builder, src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Ipv4Builder {
    let mut t = b.clone();
    t.src = src.0;
    t.dst = dst.0;
    t.ttl -= 1;
    set_ports(&mut t.l4, Some(src.1), Some(dst.1));
    t
}

/// `t` delivered into local pod `to` (its MAC, from its gateway MAC).
fn into_pod(mut t: Ipv4Builder, to: Ipv4Addr) -> Vec<u8> {
    let (ifindex, last) = pod_of(to);
    let ep = node::endpoint(ifindex, last);
    t.dst_mac = ep.pod_mac;
    t.src_mac = ep.gw_mac;
    t.build()
}

/// The destination address and port of an Ethernet + IPv4 + TCP/UDP frame.
fn dest_of(frame: &[u8]) -> (Ipv4Addr, u16) {
    (
        Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]),
        u16::from_be_bytes([frame[36], frame[37]]),
    )
}

#[test]
fn an_inbound_syn_to_a_port_forward_reaches_the_pod_and_its_syn_ack_goes_back() {
    let mut dp = datapath();
    frontend(
        &mut dp,
        (NODE, 8080, IPPROTO_TCP),
        1,
        frontend_flags::PORT_FORWARD,
        &[(POD_B, 80)],
    );
    let client = (LAN, 5555);
    let syn = tcp(client, (NODE, 8080), TCP_SYN, 1000, 0);
    let (verdict, out) = from_uplink(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let want = into_pod(rewritten(&syn, client, (POD_B, 80)), POD_B);
    assert_eq!(out, want, "daddr, dport, TTL, MACs, IP and TCP checksums");
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));

    let orig = key(client, (NODE, 8080), IPPROTO_TCP);
    let ct = conntrack(&mut dp);
    assert_eq!(ct.len(), 1);
    assert_eq!(ct[0].0, orig);
    assert_eq!((ct[0].1.nat_addr, ct[0].1.nat_port), (POD_B.octets(), 80));
    assert_eq!(
        ct[0].1.flags & (ct_flags::DNAT | ct_flags::HAIRPIN),
        ct_flags::DNAT
    );
    assert_eq!(ct[0].1.state, ct_state::TCP_SYN_SENT);
    let rev = dp.maps().revnat().unwrap();
    assert_eq!(rev.len(), 1);
    assert_eq!(rev[0].0, key((POD_B, 80), client, IPPROTO_TCP));
    let r: RevNat = rev[0].1;
    assert_eq!(
        (r.addr, r.port, r.flags),
        (NODE.octets(), 8080, ct_flags::DNAT)
    );

    // The pod's SYN-ACK: source back to the node's address and port 8080,
    // routed out of the uplink (MACs left to bpf_redirect_neigh).
    let syn_ack = tcp((POD_B, 80), client, TCP_SYN | TCP_ACK, 7000, 1001);
    let (verdict, out) = from_pod(&dp, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let want = rewritten(&syn_ack, (NODE, 8080), client).build();
    assert_eq!(&out[14..], &want[14..], "saddr, sport, TTL, checksums");
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_SYN_RECV);

    assert_eq!(packets(&mut dp, Stat::DnatNew), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRouted), 0);
    assert_invariants(&mut dp);
}

#[test]
fn an_inbound_udp_datagram_to_a_port_forward_reaches_the_pod_and_its_reply_goes_back() {
    let mut dp = datapath();
    frontend(
        &mut dp,
        (NODE, 5353, IPPROTO_UDP),
        1,
        frontend_flags::PORT_FORWARD,
        &[(POD_B, 53)],
    );
    let client = (LAN, 40000);
    let req = Ipv4Builder::udp(client, (NODE, 5353));
    let (verdict, out) = from_uplink(&dp, &req);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&req, client, (POD_B, 53)), POD_B));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::UDP_UNREPLIED);

    let reply = Ipv4Builder::udp((POD_B, 53), client);
    let (verdict, out) = from_pod(&dp, &reply);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let want = rewritten(&reply, (NODE, 5353), client).build();
    assert_eq!(&out[14..], &want[14..]);
    assert!(packet::l4_checksum_ok(&out));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::UDP_REPLIED);
    assert_eq!(packets(&mut dp, Stat::DnatNew), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
    assert_invariants(&mut dp);
}

#[test]
fn a_pod_reaches_a_service_backed_by_another_local_pod_and_gets_the_reply_from_the_vip() {
    let mut dp = datapath();
    frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &[(POD_B, 8080)]);
    let client = (POD_A, 41000);
    let syn = tcp(client, (VIP, 80), TCP_SYN, 1000, 0);
    let (verdict, out) = from_pod(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&syn, client, (POD_B, 8080)), POD_B));

    let syn_ack = tcp((POD_B, 8080), client, TCP_SYN | TCP_ACK, 5000, 1001);
    let (verdict, out) = from_pod(&dp, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&syn_ack, (VIP, 80), client), POD_A));

    let ack = tcp(client, (VIP, 80), TCP_ACK, 1001, 5001);
    let (verdict, out) = from_pod(&dp, &ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&ack, client, (POD_B, 8080)), POD_B));
    assert_eq!(conntrack(&mut dp)[0].1.state, ct_state::TCP_ESTABLISHED);
    assert_eq!(packets(&mut dp, Stat::DnatNew), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 2);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdLocalPod), 0);
    assert_invariants(&mut dp);
}

const LB_BACKENDS: [(Ipv4Addr, u16); 3] = [(POD_C, 80), (POD_D, 80), (POD_E, 80)];
const TUPLES: u16 = 10_000;

/// The backend the program gives each of [`TUPLES`] SYNs from pod A to
/// VIP:80 (source ports 20000..), on a fresh datapath whose frontend has
/// `backends` and Maglev `table`, checked against userspace's prediction.
fn picks(backends: &[Option<(Ipv4Addr, u16)>], table: &[u32]) -> Vec<Ipv4Addr> {
    let mut dp = datapath();
    let present: Vec<(Ipv4Addr, u16)> = backends.iter().flatten().copied().collect();
    let lb = dp.maps().lb_mut();
    lb.set_frontend(
        frontend_key(VIP, 80, IPPROTO_TCP),
        Frontend {
            id: 9,
            backends: u16::try_from(present.len()).unwrap(),
            flags: 0,
            _pad: 0,
            affinity_timeout_secs: 0,
            maglev_size: 0,
            maglev_gen: 0,
            _pad2: 0,
        },
    )
    .unwrap();
    for (index, b) in (1..).zip(backends) {
        if let Some((a, p)) = b {
            lb.set_backend(
                BackendKey { frontend: 9, index },
                Backend {
                    addr: a.octets(),
                    port: *p,
                    flags: 0,
                    _pad: 0,
                },
            )
            .unwrap();
        }
    }
    lb.swap_maglev(&frontend_key(VIP, 80, IPPROTO_TCP), table)
        .unwrap();
    let mut out = Vec::new();
    for sport in 20_000..20_000 + TUPLES {
        let syn = Ipv4Builder::tcp((POD_A, sport), (VIP, 80), TCP_SYN);
        let (verdict, frame) = from_pod(&dp, &syn);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let got = dest_of(&frame);
        let slot = maglev_slot(&key((POD_A, sport), (VIP, 80), IPPROTO_TCP), size(table));
        let index = table[slot as usize];
        let predicted = backends[index as usize - 1].expect("the table names a backend");
        assert_eq!(
            got, predicted,
            "sport {sport}: the program's pick is userspace's"
        );
        out.push(got.0);
    }
    // The same tuple again, with its connection in place: the same backend.
    for sport in 20_000..20_010 {
        let ack = Ipv4Builder::tcp((POD_A, sport), (VIP, 80), TCP_ACK);
        let (_, frame) = from_pod(&dp, &ack);
        assert_eq!(dest_of(&frame).0, out[usize::from(sport - 20_000)]);
    }
    assert_eq!(packets(&mut dp, Stat::DnatNew), u64::from(TUPLES));
    out
}

#[test]
fn a_service_spreads_tuples_over_its_backends_by_maglev_and_a_removal_moves_no_other_flow() {
    let ms = members(&LB_BACKENDS);
    let table = maglev::table(&ms);
    let all: Vec<_> = LB_BACKENDS.iter().copied().map(Some).collect();
    let first = picks(&all, &table);
    let mut share = BTreeMap::<Ipv4Addr, usize>::new();
    for a in &first {
        *share.entry(*a).or_default() += 1;
    }
    let fair = f64::from(TUPLES) / 3.0;
    assert_eq!(share.len(), 3, "{share:?}");
    for (a, n) in &share {
        let n = *n as f64;
        assert!(
            (n - fair).abs() <= fair * 0.10,
            "{a} got {n} of {TUPLES} (fair {fair:.0}): {share:?}"
        );
    }
    // The same tuples on another (fresh) node: the same backends.
    assert_eq!(picks(&all, &table), first, "same tuple, same backend");

    // Backend D (index 2) goes: the flows of C and E stay where they are.
    let remaining: Vec<Member> = ms.iter().filter(|m| m.index != 2).cloned().collect();
    let after = maglev::table_after(&table, &remaining);
    let second = picks(&[all[0], None, all[2]], &after);
    let mut moved = 0;
    for (before, now) in first.iter().zip(&second) {
        assert_ne!(*now, POD_D);
        if *before == POD_D {
            moved += 1;
        } else {
            assert_eq!(before, now, "a flow of a surviving backend moved");
        }
    }
    assert_eq!(moved, share[&POD_D]);
}

#[test]
fn tables_of_every_size_pick_the_slot_userspace_predicts_even_across_a_swap() {
    // One frontend whose table is swapped for tables of other sizes (a
    // new generation of chunks each time): each SYN goes where slot
    // `hash % size` of the table in place says, up to the largest (131,071
    // slots, 512 chunks). Two backends, so every slot matters.
    let mut dp = datapath();
    let backends = [LB_BACKENDS[0], LB_BACKENDS[1]];
    frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 5, 0, &backends);
    let mut sport = 40_000;
    for size in netpath_common::lb::MAGLEV_SIZES {
        let ms = members(&backends);
        let table = maglev::table_of_size(&ms, size);
        dp.maps()
            .lb_mut()
            .swap_maglev(&frontend_key(VIP, 80, IPPROTO_TCP), &table)
            .unwrap();
        let mut seen = [0_u32; 2];
        for _ in 0..40 {
            let syn = Ipv4Builder::tcp((POD_A, sport), (VIP, 80), TCP_SYN);
            let (verdict, out) = from_pod(&dp, &syn);
            assert_eq!(verdict, TC_ACT_REDIRECT, "size {size}");
            let slot = maglev_slot(&key((POD_A, sport), (VIP, 80), IPPROTO_TCP), size);
            let index = table[slot as usize];
            assert_eq!(
                dest_of(&out),
                backends[index as usize - 1],
                "size {size}, sport {sport}, slot {slot}"
            );
            seen[index as usize - 1] += 1;
            sport += 1;
        }
        assert!(seen.iter().all(|&n| n > 0), "size {size}: {seen:?}");
    }
    assert_eq!(packets(&mut dp, Stat::DnatNew), 40 * 10);
    assert_invariants(&mut dp);
}

#[test]
fn client_ip_affinity_sends_a_clients_new_connections_to_its_last_backend() {
    let mut dp = datapath();
    let table = frontend(
        &mut dp,
        (VIP, 80, IPPROTO_TCP),
        3,
        frontend_flags::AFFINITY,
        &LB_BACKENDS,
    );
    let maglev_pick = |sport: u16| {
        let slot = maglev_slot(&key((POD_A, sport), (VIP, 80), IPPROTO_TCP), size(&table));
        LB_BACKENDS[table[slot as usize] as usize - 1]
    };
    // Two source ports Maglev alone would send to different backends.
    let first = 30_000;
    let second = (first + 1..first + 100)
        .find(|p| maglev_pick(*p) != maglev_pick(first))
        .unwrap();
    let (_, out) = from_pod(&dp, &Ipv4Builder::tcp((POD_A, first), (VIP, 80), TCP_SYN));
    assert_eq!(dest_of(&out), maglev_pick(first));
    let (verdict, out) = from_pod(&dp, &Ipv4Builder::tcp((POD_A, second), (VIP, 80), TCP_SYN));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(dest_of(&out), maglev_pick(first), "the client's backend");
    assert_eq!(packets(&mut dp, Stat::LbAffinityHit), 1);
    assert_eq!(packets(&mut dp, Stat::DnatNew), 2);
    let aff = dp.maps().lb().affinity().unwrap();
    assert_eq!(aff.len(), 1);
    assert_eq!(aff[0].0.client, POD_A.octets());
    assert_invariants(&mut dp);
}

/// The RST a closed port answers `seg` with (RFC 793), as the program must
/// build it: addresses, ports and MACs swapped, window 0, checksums.
fn rst_for(seg: &Ipv4Builder, sent_from_mac: [u8; 6], seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let L4::Tcp { sport, dport, .. } = seg.l4 else {
        panic!("not TCP")
    };
    let mut r = tcp((seg.dst, dport), (seg.src, sport), flags, seq, ack);
    r.dst_mac = sent_from_mac;
    r.src_mac = seg.dst_mac;
    r.ttl = 64;
    r.id = 0;
    r.frags = 0x4000;
    let mut frame = r.build();
    // Window 0, and the TCP checksum recomputed for it.
    frame[48..50].copy_from_slice(&[0, 0]);
    frame[50..52].copy_from_slice(&[0, 0]);
    let c = packet::l4_checksum(seg.dst, seg.src, IPPROTO_TCP, &frame[34..54]);
    frame[50..52].copy_from_slice(&c.to_be_bytes());
    frame
}

#[test]
fn a_frontend_without_backends_refuses_with_a_tcp_rst_or_an_icmp_port_unreachable() {
    let mut dp = datapath();
    frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &[]);
    frontend(&mut dp, (VIP, 53, IPPROTO_UDP), 2, 0, &[]);
    let a_mac = node::endpoint(POD_A_IFINDEX, 2).pod_mac;

    // A SYN: sequence 0, ACK of its sequence + 1.
    let syn = tcp((POD_A, 5555), (VIP, 80), TCP_SYN, 1000, 0);
    let (verdict, out) = from_pod(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "back into the pod");
    assert_eq!(out, rst_for(&syn, a_mac, 0, 1001, TCP_RST | TCP_ACK));
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));

    // A segment with ACK and 8 bytes: the RST takes its sequence number from
    // the acknowledgement, no ACK flag.
    let mut data = tcp((POD_A, 5556), (VIP, 80), TCP_ACK, 2000, 77_777);
    data.payload = b"12345678".to_vec();
    let (verdict, out) = from_pod(&dp, &data);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, rst_for(&data, a_mac, 77_777, 0, TCP_RST));

    // UDP: ICMP port unreachable from the VIP quoting the IP header and 8
    // bytes of the datagram.
    let dgram = Ipv4Builder::udp((POD_A, 5353), (VIP, 53));
    let (verdict, out) = from_pod(&dp, &dgram);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let mut sent = dgram.clone();
    sent.src_mac = a_mac;
    let quote = sent.build()[14..14 + 28].to_vec();
    let mut want = Ipv4Builder::icmp(
        VIP,
        POD_A,
        L4::Icmp {
            ty: 3,
            code: 3,
            rest: [0; 4],
        },
    );
    want.payload = quote;
    want.tos = 0xc0;
    want.id = 0;
    want.frags = 0;
    want.dst_mac = a_mac;
    want.src_mac = dgram.dst_mac;
    assert_eq!(out, want.build());
    assert!(packet::ipv4_header_checksum_ok(&out) && packet::l4_checksum_ok(&out));

    // A RST is never answered.
    let (verdict, _) = from_pod(&dp, &tcp((POD_A, 5557), (VIP, 80), TCP_RST, 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT);

    // From the LAN: the RST leaves by the uplink it came in on.
    frontend(
        &mut dp,
        (NODE, 8080, IPPROTO_TCP),
        3,
        frontend_flags::PORT_FORWARD,
        &[],
    );
    let syn = tcp((LAN, 6000), (NODE, 8080), TCP_SYN, 42, 0);
    let (verdict, out) = from_uplink(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, rst_for(&syn, syn.src_mac, 0, 43, TCP_RST | TCP_ACK));

    assert_eq!(packets(&mut dp, Stat::ReplyNoBackend), 4);
    assert_eq!(packets(&mut dp, Stat::DropNoBackend), 1);
    assert!(conntrack(&mut dp).is_empty(), "a refusal makes no state");
    assert!(dp.maps().revnat().unwrap().is_empty());
}

#[test]
fn a_pod_reaching_a_service_that_selects_itself_is_hairpinned_through_the_gateway() {
    let mut dp = datapath();
    frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &[(POD_A, 8080)]);
    let client = (POD_A, 42000);
    let syn = tcp(client, (VIP, 80), TCP_SYN, 1000, 0);
    let (verdict, out) = from_pod(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        out,
        into_pod(rewritten(&syn, (GATEWAY, 42000), (POD_A, 8080)), POD_A),
        "source the gateway (client port kept), destination the pod itself"
    );
    let ct = conntrack(&mut dp);
    assert_eq!(ct[0].1.flags & ct_flags::HAIRPIN, ct_flags::HAIRPIN);
    let rev = dp.maps().revnat().unwrap();
    assert_eq!(rev[0].0, key((POD_A, 8080), (GATEWAY, 42000), IPPROTO_TCP));

    // The pod answers the gateway; it gets the answer from the VIP.
    let syn_ack = tcp(
        (POD_A, 8080),
        (GATEWAY, 42000),
        TCP_SYN | TCP_ACK,
        9000,
        1001,
    );
    let (verdict, out) = from_pod(&dp, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&syn_ack, (VIP, 80), client), POD_A));
    assert_eq!(packets(&mut dp, Stat::DnatHairpin), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
    assert_invariants(&mut dp);
}

#[test]
fn an_icmp_port_unreachable_from_a_backend_reaches_the_client_translated_back() {
    let mut dp = datapath();
    frontend(
        &mut dp,
        (NODE, 5353, IPPROTO_UDP),
        1,
        frontend_flags::PORT_FORWARD,
        &[(POD_B, 53)],
    );
    let client = (LAN, 40001);
    let dgram = Ipv4Builder::udp(client, (NODE, 5353));
    let (_, delivered) = from_uplink(&dp, &dgram);

    // Pod B quotes the datagram as it got it: IP header + 8 bytes.
    let mut err = Ipv4Builder::icmp(
        POD_B,
        LAN,
        L4::Icmp {
            ty: 3,
            code: 3,
            rest: [0; 4],
        },
    );
    err.payload = delivered[14..14 + 28].to_vec();
    let (verdict, out) = from_pod(&dp, &err);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // The client must see the node's address answer about its own
    // datagram (as it reached the node: TTL − 1).
    let mut own = dgram.clone();
    own.ttl -= 1;
    let mut want = err.clone();
    want.src = NODE;
    want.ttl -= 1;
    want.payload = own.build()[14..14 + 28].to_vec();
    assert_eq!(
        &out[14..],
        &want.build()[14..],
        "outer source, quoted destination and port, both checksums"
    );
    assert!(packet::l4_checksum_ok(&out));
    assert_eq!(packets(&mut dp, Stat::IcmpErrorDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
}

#[test]
fn a_mid_stream_tcp_packet_without_an_entry_goes_to_the_backend_its_syn_would_get() {
    let tuple = ((POD_A, 33_333), (VIP, 80));
    let with_syn = {
        let mut dp = datapath();
        frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &LB_BACKENDS);
        let (_, out) = from_pod(&dp, &Ipv4Builder::tcp(tuple.0, tuple.1, TCP_SYN));
        dest_of(&out)
    };
    let mut dp = datapath();
    let table = frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &LB_BACKENDS);
    let ack = Ipv4Builder::tcp(tuple.0, tuple.1, TCP_ACK);
    let (verdict, out) = from_pod(&dp, &ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let slot = maglev_slot(&key(tuple.0, tuple.1, IPPROTO_TCP), size(&table));
    let predicted = LB_BACKENDS[table[slot as usize] as usize - 1];
    assert_eq!(dest_of(&out), predicted);
    assert_eq!(dest_of(&out), with_syn);
    assert_eq!(
        out,
        into_pod(rewritten(&ack, tuple.0, predicted), predicted.0)
    );
    let ct = conntrack(&mut dp);
    assert_eq!(ct[0].1.flags & ct_flags::PICKUP, ct_flags::PICKUP);
    assert_eq!(ct[0].1.state, ct_state::TCP_ESTABLISHED);
    assert_invariants(&mut dp);
}

#[test]
fn a_port_forward_to_a_backend_off_the_node_is_dropped_from_the_uplink() {
    let mut dp = datapath();
    let remote = Ipv4Addr::new(192, 168, 50, 77);
    frontend(
        &mut dp,
        (NODE, 8081, IPPROTO_TCP),
        1,
        frontend_flags::PORT_FORWARD,
        &[(remote, 80)],
    );
    let (verdict, _) = from_uplink(&dp, &tcp((LAN, 7000), (NODE, 8081), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropDnatRemoteBackend), 1);
    assert!(conntrack(&mut dp).is_empty());
    assert!(dp.maps().revnat().unwrap().is_empty());
}

#[test]
fn an_icmp_error_about_a_backends_reply_reaches_the_backend_translated() {
    let mut dp = datapath();
    frontend(
        &mut dp,
        (NODE, 5353, IPPROTO_UDP),
        1,
        frontend_flags::PORT_FORWARD,
        &[(POD_B, 53)],
    );
    let client = (LAN, 40002);
    from_uplink(&dp, &Ipv4Builder::udp(client, (NODE, 5353)));
    let reply = Ipv4Builder::udp((POD_B, 53), client);
    let (_, left) = from_pod(&dp, &reply);

    // The LAN host refuses the reply, quoting it as it arrived.
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
    let (verdict, out) = from_uplink(&dp, &err);
    assert_eq!(verdict, TC_ACT_REDIRECT);

    // Pod B must see the error about its own datagram (TTL − 1 on the way).
    let mut own = reply.clone();
    own.ttl -= 1;
    let mut want = err.clone();
    want.dst = POD_B;
    want.ttl -= 1;
    want.payload = own.build()[14..14 + 28].to_vec();
    assert_eq!(out, into_pod(want, POD_B));
    assert_eq!(packets(&mut dp, Stat::IcmpErrorDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 2);
}

#[test]
fn a_service_backend_on_the_lan_is_reached_masqueraded_and_answers_as_the_vip() {
    let mut dp = datapath();
    frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 1, 0, &[(LAN, 80)]);
    let client = (POD_A, 41000);
    let syn = tcp(client, (VIP, 80), TCP_SYN, 1000, 0);
    let (verdict, out) = from_pod(&dp, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let want = rewritten(&syn, (NODE, 41000), (LAN, 80)).build();
    assert_eq!(&out[14..], &want[14..], "DNAT to the backend, then SNAT");

    let syn_ack = tcp((LAN, 80), (NODE, 41000), TCP_SYN | TCP_ACK, 5000, 1001);
    let (verdict, out) = from_uplink(&dp, &syn_ack);
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(out, into_pod(rewritten(&syn_ack, (VIP, 80), client), POD_A));
    assert_eq!(
        conntrack(&mut dp).len(),
        2,
        "the DNAT and the SNAT connection"
    );
    assert_eq!(packets(&mut dp, Stat::DnatNew), 1);
    assert_eq!(packets(&mut dp, Stat::SnatNew), 1);
    assert_eq!(packets(&mut dp, Stat::FwdDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevDnat), 1);
    assert_eq!(packets(&mut dp, Stat::FwdRevNat), 0);
    assert_invariants(&mut dp);
}

#[test]
fn two_frontends_leading_one_client_port_to_one_backend_never_share_its_reply_tuple() {
    let mut dp = datapath();
    for (port, id) in [(8080, 1), (8081, 2)] {
        frontend(
            &mut dp,
            (NODE, port, IPPROTO_TCP),
            id,
            frontend_flags::PORT_FORWARD,
            &[(POD_B, 80)],
        );
    }
    let (verdict, _) = from_uplink(&dp, &tcp((LAN, 5000), (NODE, 8080), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    // The same client port to the other frontend: B's reply tuple
    // (B:80 → LAN:5000) belongs to the first connection.
    let (verdict, _) = from_uplink(&dp, &tcp((LAN, 5000), (NODE, 8081), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropDnatTupleTaken), 1);
    assert_eq!(conntrack(&mut dp).len(), 1);
    assert_eq!(dp.maps().revnat().unwrap()[0].1.port, 8080);
    assert_invariants(&mut dp);
}

#[test]
fn a_frontend_whose_maglev_table_is_missing_drops_without_state() {
    let mut dp = datapath();
    dp.maps()
        .lb_mut()
        .set_frontend(
            frontend_key(VIP, 80, IPPROTO_TCP),
            Frontend {
                id: 4,
                backends: 1,
                flags: 0,
                _pad: 0,
                affinity_timeout_secs: 0,
                maglev_size: 0,
                maglev_gen: 0,
                _pad2: 0,
            },
        )
        .unwrap();
    let (verdict, _) = from_pod(&dp, &tcp((POD_A, 5000), (VIP, 80), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropLbBackendMissing), 1);
    assert!(conntrack(&mut dp).is_empty());
    assert!(dp.maps().revnat().unwrap().is_empty());
}

#[test]
fn a_pick_whose_table_generation_was_deleted_under_its_frontend_is_a_counted_drop() {
    // The frontend names generation 1 (its size and generation), and that
    // generation's chunks are deleted while it still does: the state a
    // pick sees when it raced a swap and the frontend, read again, names
    // the same missing table (L4: one retry, then the drop).
    let mut dp = datapath();
    let backends = [LB_BACKENDS[0], LB_BACKENDS[1]];
    let table = frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 4, 0, &backends);
    let fe = dp
        .maps()
        .lb()
        .frontend(&frontend_key(VIP, 80, IPPROTO_TCP))
        .unwrap()
        .unwrap();
    assert_eq!((fe.maglev_size, fe.maglev_gen), (size(&table), 1));
    dp.maps()
        .lb_mut()
        .remove_maglev(4, fe.maglev_gen, fe.maglev_size)
        .unwrap();
    let (verdict, _) = from_pod(&dp, &tcp((POD_A, 5000), (VIP, 80), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_SHOT);
    assert_eq!(packets(&mut dp, Stat::DropLbBackendMissing), 1);
    assert!(conntrack(&mut dp).is_empty(), "a drop leaves no state");
    assert!(dp.maps().revnat().unwrap().is_empty());
    // The next generation, once the frontend names it: the SYN goes through
    // to the backend its slot names.
    dp.maps()
        .lb_mut()
        .swap_maglev(&frontend_key(VIP, 80, IPPROTO_TCP), &table)
        .unwrap();
    let (verdict, out) = from_pod(&dp, &tcp((POD_A, 5000), (VIP, 80), TCP_SYN, 1, 0));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    let slot = maglev_slot(&key((POD_A, 5000), (VIP, 80), IPPROTO_TCP), size(&table));
    assert_eq!(dest_of(&out), backends[table[slot as usize] as usize - 1]);
    assert_eq!(packets(&mut dp, Stat::DropLbBackendMissing), 1);
}

#[test]
fn a_table_swap_keeps_every_established_connection_and_new_ones_follow_the_new_table() {
    // 2,000 connections over two backends; a third backend joins (a new
    // table of another size, as the next generation); every connection's
    // next packet still goes where its SYN went, even where the new table's
    // slot names another backend, and new connections follow the new table.
    const N: u16 = 2_000;
    let mut dp = datapath();
    let two = [LB_BACKENDS[0], LB_BACKENDS[1]];
    let old = frontend(&mut dp, (VIP, 80, IPPROTO_TCP), 6, 0, &two);
    let mut first = Vec::new();
    for sport in 30_000..30_000 + N {
        let (verdict, out) = from_pod(&dp, &tcp((POD_A, sport), (VIP, 80), TCP_SYN, 1, 0));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        first.push(dest_of(&out));
    }
    let fk = frontend_key(VIP, 80, IPPROTO_TCP);
    let lb = dp.maps().lb_mut();
    lb.set_backend(
        BackendKey {
            frontend: 6,
            index: 3,
        },
        Backend {
            addr: LB_BACKENDS[2].0.octets(),
            port: LB_BACKENDS[2].1,
            flags: 0,
            _pad: 0,
        },
    )
    .unwrap();
    let new = maglev::table_after(&old, &members(&LB_BACKENDS));
    assert_ne!(new.len(), old.len(), "three backends bring a larger table");
    lb.swap_maglev(&fk, &new).unwrap();
    let fe = lb.frontend(&fk).unwrap().unwrap();
    assert_eq!((fe.maglev_size, fe.maglev_gen), (size(&new), 2));
    let keys = lb.maglev_keys().unwrap();
    assert!(
        keys.iter().all(|k| k.generation == 2),
        "the old generation is deleted: {keys:?}"
    );
    let mut elsewhere = 0;
    for (sport, was) in (30_000..30_000 + N).zip(&first) {
        let k = key((POD_A, sport), (VIP, 80), IPPROTO_TCP);
        let now = LB_BACKENDS[new[maglev_slot(&k, size(&new)) as usize] as usize - 1];
        if now != *was {
            elsewhere += 1;
        }
        let (verdict, out) = from_pod(&dp, &tcp((POD_A, sport), (VIP, 80), TCP_ACK, 2, 1));
        assert_eq!(verdict, TC_ACT_REDIRECT, "sport {sport}");
        assert_eq!(
            dest_of(&out),
            *was,
            "sport {sport}: an established flow moved"
        );
    }
    assert!(
        elsewhere > usize::from(N) / 10,
        "the new table sends {elsewhere} of these tuples elsewhere: the test shows conntrack keeps them"
    );
    assert_eq!(packets(&mut dp, Stat::DnatNew), u64::from(N));
    // New connections: the new table's pick.
    for sport in 50_000..50_200 {
        let (verdict, out) = from_pod(&dp, &tcp((POD_A, sport), (VIP, 80), TCP_SYN, 1, 0));
        assert_eq!(verdict, TC_ACT_REDIRECT);
        let k = key((POD_A, sport), (VIP, 80), IPPROTO_TCP);
        let want = LB_BACKENDS[new[maglev_slot(&k, size(&new)) as usize] as usize - 1];
        assert_eq!(dest_of(&out), want, "sport {sport}");
    }
    assert_eq!(packets(&mut dp, Stat::DropLbBackendMissing), 0);
    assert_invariants(&mut dp);
}
