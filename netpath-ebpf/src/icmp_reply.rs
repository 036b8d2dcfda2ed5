//! ICMP errors the node sends to a pod as its router: time exceeded and
//! fragmentation needed, from the pods' gateway address
//! (`NodeSettings::gateway`), quoting the offending packet.
//!
//! The offending skb itself becomes the answer, so nothing is allocated:
//! 1. `bpf_skb_change_tail` trims it to the Ethernet header, the original
//!    IPv4 header (options included) and the first 8 bytes of its payload
//!    (RFC 792; fewer when the payload is shorter). When the pod handed the
//!    packet over with a partial L4 checksum (`CHECKSUM_PARTIAL`), the kernel
//!    refuses to cut before that checksum field, and the quote keeps the
//!    first [`QUOTE_L4_PARTIAL`] bytes of the payload instead (RFC 1812
//!    allows more; Linux quotes up to 576 bytes). The quoted L4 checksum is
//!    then the partial one the pod's stack wrote, as Linux quotes it too.
//! 2. `bpf_skb_adjust_room(BPF_ADJ_ROOM_MAC)` opens 28 bytes between the
//!    Ethernet header and the quote: the new IPv4 and ICMP headers.
//! 3. The headers are written in one store: Ethernet back to the pod (its
//!    MAC, from the gateway's), IPv4 from the gateway to the pod (TOS 0xc0
//!    as Linux's ICMP errors, id 0, no DF, TTL 64), ICMP with its checksum
//!    summed over the header and the quote.
//! 4. `bpf_redirect_peer` into the pod's `eth0`.
//!
//! No error is sent about an ICMP error, a later fragment, or a packet to a
//! multicast or broadcast address (RFC 1122 3.2.2, RFC 1812 4.3.2.7): the
//! caller drops and counts those.

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{bpf_redirect_peer, bpf_skb_change_tail},
    programs::TcContext,
};
use netpath_common::{Endpoint, Stat};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    csum,
    l3::rewrite,
    parse::{Flow, ICMP_DEST_UNREACH, ICMP_PARAMETER_PROB, ICMP_TIME_EXCEEDED, IPPROTO_ICMP},
};

/// Length of the new IPv4 and ICMP headers.
const NEW_HDRS: usize = Ipv4Hdr::LEN + 8;
/// Where the quote starts in the answer.
const QUOTE_AT: usize = EthHdr::LEN + NEW_HDRS;
/// Payload bytes quoted (RFC 792).
const QUOTE_L4: usize = 8;
/// Payload bytes quoted when the packet's L4 checksum is partial: enough to
/// hold the TCP (16..18) and UDP (6..8) checksum fields.
const QUOTE_L4_PARTIAL: usize = 20;
/// The longest quote: a 60-byte IPv4 header and [`QUOTE_L4_PARTIAL`].
const MAX_QUOTE: usize = 60 + QUOTE_L4_PARTIAL;
/// ICMP source quench and redirect (deprecated, but still errors).
const ICMP_SOURCE_QUENCH: u8 = 4;
const ICMP_REDIRECT: u8 = 5;

/// Whether the node may answer `f` with an ICMP error.
#[inline(always)]
pub fn may_answer(f: &Flow) -> bool {
    if f.later_fragment {
        return false;
    }
    // Multicast (224/4) and limited broadcast destinations.
    if f.daddr[0] >= 224 {
        return false;
    }
    !(f.proto == IPPROTO_ICMP
        && matches!(
            f.icmp_type,
            ICMP_DEST_UNREACH
                | ICMP_SOURCE_QUENCH
                | ICMP_REDIRECT
                | ICMP_TIME_EXCEEDED
                | ICMP_PARAMETER_PROB
        ))
}

/// Turns the packet `f` from pod `src` into the ICMP error
/// (`ty`, `code`, `rest`: the 4 bytes after the checksum) from `gateway`
/// to the pod, and redirects it back into the pod.
#[inline(always)]
pub fn send_to_pod(
    ctx: &TcContext,
    f: &Flow,
    src: &Endpoint,
    gateway: [u8; 4],
    ty: u8,
    code: u8,
    rest: [u8; 4],
) -> Result<i32, Stat> {
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

    // ICMP checksum: the header words, then the quote, 16 bits at a time.
    let mut sum: u32 = u32::from(u16::from_be_bytes([ty, code]))
        + u32::from(u16::from_be_bytes([rest[0], rest[1]]))
        + u32::from(u16::from_be_bytes([rest[2], rest[3]]));
    let mut i = 0;
    // Verifier: a loop with a constant bound.
    while i < MAX_QUOTE / 2 {
        if 2 * i + 2 > qlen {
            break;
        }
        let w: [u8; 2] = rewrite(ctx.load(QUOTE_AT + 2 * i))?;
        sum += u32::from(u16::from_be_bytes(w));
        i += 1;
    }
    if qlen % 2 == 1 {
        // An odd last byte is summed as if followed by a zero byte.
        let b: [u8; 1] = rewrite(ctx.load(QUOTE_AT + qlen - 1))?;
        sum += u32::from(b[0]) << 8;
    }
    let icmp_check = !csum::fold(sum);

    let total = (NEW_HDRS + qlen) as u16;
    let g = gateway;
    let d = f.saddr;
    let mut ip: [u8; 20] = [
        0x45,
        0xc0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0,
        0,
        64,
        IPPROTO_ICMP,
        0,
        0,
        g[0],
        g[1],
        g[2],
        g[3],
        d[0],
        d[1],
        d[2],
        d[3],
    ];
    let mut ip_sum: u32 = 0;
    let mut j = 0;
    while j < 10 {
        ip_sum += u32::from(u16::from_be_bytes([ip[2 * j], ip[2 * j + 1]]));
        j += 1;
    }
    let ip_check = !csum::fold(ip_sum);
    ip[10] = (ip_check >> 8) as u8;
    ip[11] = ip_check as u8;

    let (m, s) = (src.pod_mac, src.gw_mac);
    let ic = icmp_check.to_be_bytes();
    let hdr: [u8; QUOTE_AT] = [
        m[0], m[1], m[2], m[3], m[4], m[5], s[0], s[1], s[2], s[3], s[4], s[5], 0x08, 0x00, //
        ip[0], ip[1], ip[2], ip[3], ip[4], ip[5], ip[6], ip[7], ip[8], ip[9], //
        ip[10], ip[11], ip[12], ip[13], ip[14], ip[15], ip[16], ip[17], ip[18], ip[19], //
        ty, code, ic[0], ic[1], rest[0], rest[1], rest[2], rest[3],
    ];
    rewrite(ctx.store(0, &hdr, 0))?;
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(src.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    Ok(TC_ACT_REDIRECT as i32)
}
