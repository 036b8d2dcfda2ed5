//! Refusals of connections to a frontend without backends (`dnat.rs`):
//! never a black hole. The packet itself becomes the answer, built in
//! place and sent back where it came from (into the pod it came from, or
//! out of the uplink it came in on), addresses and MACs swapped:
//!
//! - TCP: a RST as RFC 793 generates one for a closed port (and Linux's
//!   `tcp_v4_send_reset`): if the segment has ACK, the RST takes its
//!   sequence number from that acknowledgement (no ACK flag); otherwise
//!   sequence 0 with ACK set, acknowledging the segment's sequence number
//!   plus its length (SYN and FIN count one each). The frame is cut to the
//!   Ethernet, IPv4 (20 bytes) and TCP (20 bytes) headers; IPv4 with DF,
//!   TTL 64, id 0. A RST is never answered (the caller drops it).
//! - UDP: an ICMP port unreachable (type 3, code 3) from the frontend,
//!   quoting the datagram's IPv4 header and the first 8 bytes of its
//!   payload (RFC 792), as `icmp_reply` builds the router's errors (the
//!   quote keeps 20 bytes when a partial checksum forbids the cut).
//!
//! Counted `reply_no_backend`; a packet that may not be answered (a
//! fragment, a multicast or broadcast destination or source, an ICMP
//! error, IP options on a TCP segment) is `drop_no_backend`.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect, bpf_redirect_peer, bpf_skb_change_tail},
    programs::TcContext,
};
use netpath_common::Stat;
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    csum, dnat,
    icmp_reply::{self, MAX_QUOTE, NEW_HDRS, QUOTE_AT, QUOTE_L4, QUOTE_L4_PARTIAL},
    l3::rewrite,
    parse::{
        self, Flow, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
    },
    router,
    stats::count,
};

/// Length of a RST: Ethernet, IPv4 and TCP headers without options.
const RST_LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN + 20;
/// ICMP destination unreachable, code port unreachable.
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_PORT_UNREACH: u8 = 3;

/// Refuses the packet: `to_pod` sends the answer back into the pod it came
/// from (`np_from_pod`), otherwise out of the interface it came in on
/// (`np_from_uplink`). Returns the TC action, or -1 with the reason in
/// `stat`. A BPF subprogram called from the walk's entry point: its frame
/// does not stack on the walk's.
#[inline(never)]
pub fn send_subprog(ctx: &TcContext, to_pod: bool, stat: &mut Stat) -> i32 {
    match send(ctx, to_pod) {
        Ok(action) => action,
        Err(s) => {
            *stat = s;
            -1
        }
    }
}

#[inline(always)]
fn send(ctx: &TcContext, to_pod: bool) -> Result<i32, Stat> {
    let len = ctx.len();
    // The walk parsed (and counted) the packet already.
    let Some(f) = dnat::flow_of(ctx) else {
        return Err(Stat::DropNoBackend);
    };
    if !icmp_reply::may_answer(&f) || router::martian_source(f.saddr) {
        return Err(Stat::DropNoBackend);
    }
    match f.proto {
        IPPROTO_TCP => rst(ctx, &f)?,
        IPPROTO_UDP => port_unreachable(ctx, &f)?,
        _ => return Err(Stat::DropNoBackend),
    }
    let ifindex = parse::ingress_ifindex(ctx);
    // SAFETY: helper calls with plain integer arguments.
    let ret = unsafe {
        if to_pod {
            bpf_redirect_peer(ifindex, 0)
        } else {
            bpf_redirect(ifindex, 0)
        }
    };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    count(Stat::ReplyNoBackend, len);
    Ok(TC_ACT_REDIRECT as i32)
}

/// Turns TCP segment `f` into the RST that refuses it.
#[inline(always)]
fn rst(ctx: &TcContext, f: &Flow) -> Result<(), Stat> {
    if f.l4 != EthHdr::LEN + Ipv4Hdr::LEN {
        // IP options: not answered (no room is removed in place).
        return Err(Stat::DropNoBackend);
    }
    let macs: [u8; 12] = ctx.load(0).map_err(|_| Stat::DropTruncated)?;
    let hdr: [u8; 14] = ctx.load(f.l4).map_err(|_| Stat::DropTruncated)?;
    let flags = hdr[13];
    if flags & TCP_RST != 0 {
        return Err(Stat::DropNoBackend);
    }
    let seq = u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]);
    let ack = u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]);
    let doff = usize::from(hdr[12] >> 4) * 4;
    // Sequence space of the segment: payload, plus SYN and FIN.
    let mut seg_len = f.tot_len.saturating_sub(Ipv4Hdr::LEN + doff) as u32;
    if flags & TCP_SYN != 0 {
        seg_len += 1;
    }
    if flags & TCP_FIN != 0 {
        seg_len += 1;
    }
    let (r_seq, r_ack, r_flags) = if flags & TCP_ACK != 0 {
        (ack, 0, TCP_RST)
    } else {
        (0, seq.wrapping_add(seg_len), TCP_RST | TCP_ACK)
    };
    // SAFETY: helper call on the context's skb with integer arguments.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, RST_LEN as u32, 0) } != 0 {
        return Err(Stat::DropRewriteFailed);
    }
    if ctx.data() + RST_LEN > ctx.data_end() {
        rewrite(ctx.skb.pull_data(RST_LEN as u32))?;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // Verifier: the whole RST lies within the packet (change_tail and
    // pull_data invalidated every earlier packet pointer).
    if data + RST_LEN > end {
        return Err(Stat::DropRewriteFailed);
    }
    let (src, dst) = (f.daddr, f.saddr);
    let (sport, dport) = (f.dport.to_be_bytes(), f.sport.to_be_bytes());
    let (s, a) = (r_seq.to_be_bytes(), r_ack.to_be_bytes());
    let w = |b: &[u8; 4]| {
        u32::from(u16::from_be_bytes([b[0], b[1]])) + u32::from(u16::from_be_bytes([b[2], b[3]]))
    };
    // IPv4: 0x45, TOS 0, length 40, id 0, DF, TTL 64, TCP.
    let ip_sum = 0x4500 + 40 + 0x4000 + ((64 << 8) | u32::from(IPPROTO_TCP)) + w(&src) + w(&dst);
    let ip_check = (!csum::fold(ip_sum)).to_be_bytes();
    // TCP: pseudo-header (addresses, protocol, length 20), then the header
    // (data offset 5, window 0, urgent 0).
    let tcp_sum = w(&src)
        + w(&dst)
        + u32::from(IPPROTO_TCP)
        + 20
        + u32::from(f.dport)
        + u32::from(f.sport)
        + w(&s)
        + w(&a)
        + ((5 << 12) | u32::from(r_flags));
    let tcp_check = (!csum::fold(tcp_sum)).to_be_bytes();
    let bytes: [u8; RST_LEN] = [
        // Ethernet: back to the sender.
        macs[6],
        macs[7],
        macs[8],
        macs[9],
        macs[10],
        macs[11],
        macs[0],
        macs[1],
        macs[2],
        macs[3],
        macs[4],
        macs[5],
        0x08,
        0x00, // IPv4
        0x45,
        0,
        0,
        40,
        0,
        0,
        0x40,
        0,
        64,
        IPPROTO_TCP,
        ip_check[0],
        ip_check[1],
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3], // TCP
        sport[0],
        sport[1],
        dport[0],
        dport[1],
        s[0],
        s[1],
        s[2],
        s[3],
        a[0],
        a[1],
        a[2],
        a[3],
        5 << 4,
        r_flags,
        0,
        0,
        tcp_check[0],
        tcp_check[1],
        0,
        0,
    ];
    let p = data as *mut u8;
    let mut k = 0;
    // Verifier: a loop with a constant bound, every offset below RST_LEN.
    while k < RST_LEN {
        // SAFETY: [data, data + RST_LEN) was bounds-checked above.
        unsafe { *p.add(k) = bytes[k] };
        k += 1;
    }
    Ok(())
}

/// Turns UDP datagram `f` into an ICMP port unreachable from its
/// destination (the frontend) back to its source.
#[inline(always)]
fn port_unreachable(ctx: &TcContext, f: &Flow) -> Result<(), Stat> {
    let macs: [u8; 12] = ctx.load(0).map_err(|_| Stat::DropTruncated)?;
    let ihl = f.l4 - EthHdr::LEN;
    // The parser guarantees tot_len >= ihl and that the skb holds tot_len.
    let payload = f.tot_len.saturating_sub(ihl);
    let mut qlen = ihl + payload.min(QUOTE_L4);
    // SAFETY: helper call on the context's skb with integer arguments.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (EthHdr::LEN + qlen) as u32, 0) } != 0 {
        // A partial L4 checksum lies beyond the cut: keep it in the quote.
        qlen = ihl + payload.min(QUOTE_L4_PARTIAL);
        // SAFETY: as above.
        if unsafe { bpf_skb_change_tail(ctx.skb.skb, (EthHdr::LEN + qlen) as u32, 0) } != 0 {
            return Err(Stat::DropRewriteFailed);
        }
    }
    // Verifier (and sanity): the quote is at most a 60-byte header and
    // QUOTE_L4_PARTIAL bytes.
    if qlen > MAX_QUOTE {
        return Err(Stat::DropBadIpHeader);
    }
    rewrite(ctx.skb.adjust_room(NEW_HDRS as i32, BPF_ADJ_ROOM_MAC, 0))?;
    if ctx.data() + QUOTE_AT + qlen > ctx.data_end() {
        rewrite(ctx.skb.pull_data((QUOTE_AT + qlen) as u32))?;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // Verifier: the new Ethernet, IPv4 and ICMP headers lie within the
    // packet (adjust_room invalidated every earlier packet pointer).
    if data + QUOTE_AT > end {
        return Err(Stat::DropRewriteFailed);
    }
    // ICMP checksum: type and code (the rest is zero), then the quote.
    let mut sum: u32 = u32::from(u16::from_be_bytes([ICMP_DEST_UNREACH, ICMP_PORT_UNREACH]));
    sum += icmp_reply::quote_sum(data, end, qlen)?;
    let icmp_check = (!csum::fold(sum)).to_be_bytes();
    let total = (NEW_HDRS + qlen) as u16;
    let (src, dst) = (f.daddr, f.saddr);
    let w = |b: &[u8; 4]| {
        u32::from(u16::from_be_bytes([b[0], b[1]])) + u32::from(u16::from_be_bytes([b[2], b[3]]))
    };
    // IPv4: 0x45, DSCP CS6 (0xc0, as Linux's ICMP errors), id 0, no
    // fragment bits, TTL 64, ICMP, frontend → client.
    let ip_sum =
        0x45c0 + u32::from(total) + ((64 << 8) | u32::from(IPPROTO_ICMP)) + w(&src) + w(&dst);
    let ip_check = (!csum::fold(ip_sum)).to_be_bytes();
    let tl = total.to_be_bytes();
    let bytes: [u8; QUOTE_AT] = [
        macs[6],
        macs[7],
        macs[8],
        macs[9],
        macs[10],
        macs[11],
        macs[0],
        macs[1],
        macs[2],
        macs[3],
        macs[4],
        macs[5],
        0x08,
        0x00, // IPv4
        0x45,
        0xc0,
        tl[0],
        tl[1],
        0,
        0,
        0,
        0,
        64,
        IPPROTO_ICMP,
        ip_check[0],
        ip_check[1],
        src[0],
        src[1],
        src[2],
        src[3],
        dst[0],
        dst[1],
        dst[2],
        dst[3], // ICMP
        ICMP_DEST_UNREACH,
        ICMP_PORT_UNREACH,
        icmp_check[0],
        icmp_check[1],
        0,
        0,
        0,
        0,
    ];
    let p = data as *mut u8;
    let mut k = 0;
    // Verifier: a loop with a constant bound, every offset below QUOTE_AT.
    while k < QUOTE_AT {
        // SAFETY: [data, data + QUOTE_AT) was bounds-checked above.
        unsafe { *p.add(k) = bytes[k] };
        k += 1;
    }
    Ok(())
}
