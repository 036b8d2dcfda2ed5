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
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use netpath_common::{Endpoint, Stat};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    csum,
    l3::rewrite,
    parse::{Flow, ICMP_DEST_UNREACH, ICMP_PARAMETER_PROB, ICMP_TIME_EXCEEDED, IPPROTO_ICMP},
    stats::count,
};

/// Length of the new IPv4 and ICMP headers of an ICMP error the datapath
/// builds (here, and `reject.rs`'s port unreachable).
pub const NEW_HDRS: usize = Ipv4Hdr::LEN + 8;
/// Where the quote starts in such an error.
pub const QUOTE_AT: usize = EthHdr::LEN + NEW_HDRS;
/// Payload bytes quoted (RFC 792).
pub const QUOTE_L4: usize = 8;
/// Payload bytes quoted when the packet's L4 checksum is partial: enough to
/// hold the TCP (16..18) and UDP (6..8) checksum fields.
pub const QUOTE_L4_PARTIAL: usize = 20;
/// The longest quote: a 60-byte IPv4 header and [`QUOTE_L4_PARTIAL`].
pub const MAX_QUOTE: usize = 60 + QUOTE_L4_PARTIAL;

/// The one's-complement sum (unfolded) of the `qlen` quoted bytes at
/// [`QUOTE_AT`] of a built ICMP error, 16 bits at a time; an odd last byte
/// is summed as if followed by a zero byte.
#[inline(always)]
pub fn quote_sum(data: usize, end: usize, qlen: usize) -> Result<u32, Stat> {
    let mut sum = 0u32;
    let mut i = 0;
    // Verifier: a loop with a constant bound.
    while i < MAX_QUOTE / 2 {
        if 2 * i + 2 > qlen {
            break;
        }
        let at = data + QUOTE_AT + 2 * i;
        // Verifier: each quoted word lies within the packet.
        if at + 2 > end {
            return Err(Stat::DropRewriteFailed);
        }
        // SAFETY: bounds-checked just above.
        let w = unsafe { [*(at as *const u8), *((at + 1) as *const u8)] };
        sum += u32::from(u16::from_be_bytes(w));
        i += 1;
    }
    if qlen % 2 == 1 {
        // An odd last byte is summed as if followed by a zero byte.
        let at = data + QUOTE_AT + qlen - 1;
        // Verifier: the last quoted byte lies within the packet.
        if at + 1 > end {
            return Err(Stat::DropRewriteFailed);
        }
        // SAFETY: bounds-checked just above.
        sum += u32::from(unsafe { *(at as *const u8) }) << 8;
    }
    Ok(sum)
}
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

/// An ICMP error the gateway answers with.
#[derive(Clone, Copy)]
pub struct Answer {
    /// The source of the error: the pods' gateway address.
    pub gateway: [u8; 4],
    pub ty: u8,
    pub code: u8,
    /// The 4 bytes after the checksum (e.g. the next-hop MTU).
    pub rest: [u8; 4],
}

/// The action code a walk returns when it left an answer in the
/// [`ANSWER`] slot for [`send_pending`] (not a TC action).
pub const ANSWER_PENDING: i32 = -102;

/// An answer decided deep in the walk and sent from its entry point.
#[derive(Clone, Copy)]
pub struct Pending {
    pub f: Flow,
    pub src: Endpoint,
    pub answer: Answer,
    /// The verdict counted once the answer is on its way.
    pub verdict: Stat,
}

/// Leaves `answer` to `f` from pod `src` in this CPU's [`ANSWER`] slot and
/// returns [`ANSWER_PENDING`]: the walk's entry point then calls
/// [`send_pending`]. Building the answer needs its own stack frame, and
/// called from the walk's it would stack on top of it beyond the 512-byte
/// BPF stack.
#[inline(always)]
pub fn defer(f: &Flow, src: &Endpoint, answer: Answer, verdict: Stat) -> Result<i32, Stat> {
    let slot = ANSWER.get_ptr_mut(0).ok_or(Stat::DropRewriteFailed)?;
    // SAFETY: this CPU's slot; the program runs to completion on the CPU
    // (softirq), and `send_pending` reads it for the same packet.
    unsafe {
        *slot = Pending {
            f: *f,
            src: *src,
            answer,
            verdict,
        };
    }
    Ok(ANSWER_PENDING)
}

/// Sends the answer [`defer`] left in the slot, counts its verdict, and
/// returns the TC action; -1 with the drop reason in `stat` on failure.
/// A BPF subprogram of its own, called from the walk's entry point.
#[inline(never)]
pub fn send_pending(ctx: &TcContext, stat: &mut Stat) -> i32 {
    let len = ctx.len();
    let Some(slot) = ANSWER.get_ptr(0) else {
        *stat = Stat::DropRewriteFailed;
        return -1;
    };
    // SAFETY: written by `defer` on this CPU for this packet.
    let p = unsafe { &*slot };
    match send_to_pod(ctx, &p.f, &p.src, &p.answer) {
        Ok(action) => {
            count(p.verdict, len);
            action
        }
        Err(s) => {
            *stat = s;
            -1
        }
    }
}

/// Turns the packet `f` from pod `src` into the ICMP error `answer` from
/// the gateway to the pod, and redirects it back into the pod.
#[inline(always)]
fn send_to_pod(ctx: &TcContext, f: &Flow, src: &Endpoint, answer: &Answer) -> Result<i32, Stat> {
    let (ty, code, rest, g) = (answer.ty, answer.code, &answer.rest, &answer.gateway);
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

    // The answer is read and written in place (direct packet access), with
    // no header buffer on the stack: this runs as a subprogram below the
    // walk's frame, and the two must fit the 512-byte BPF stack together.
    let (data, end) = (ctx.data(), ctx.data_end());
    // Verifier: the new Ethernet, IPv4 and ICMP headers lie within the
    // packet (adjust_room invalidated every earlier packet pointer).
    if data + QUOTE_AT > end {
        return Err(Stat::DropRewriteFailed);
    }

    // ICMP checksum: the header words, then the quote, 16 bits at a time.
    let mut sum: u32 = u32::from(u16::from_be_bytes([ty, code]))
        + u32::from(u16::from_be_bytes([rest[0], rest[1]]))
        + u32::from(u16::from_be_bytes([rest[2], rest[3]]));
    sum += quote_sum(data, end, qlen)?;
    let icmp_check = !csum::fold(sum);

    // IPv4: version/IHL 0x45, DSCP CS6 (0xc0, as Linux sends ICMP errors),
    // id 0, no fragment bits, TTL 64, ICMP, gateway -> pod.
    let total = (NEW_HDRS + qlen) as u16;
    let d = &f.saddr;
    let ip_sum = 0x45c0
        + u32::from(total)
        + ((64 << 8) | u32::from(IPPROTO_ICMP))
        + u32::from(u16::from_be_bytes([g[0], g[1]]))
        + u32::from(u16::from_be_bytes([g[2], g[3]]))
        + u32::from(u16::from_be_bytes([d[0], d[1]]))
        + u32::from(u16::from_be_bytes([d[2], d[3]]));
    let ip_check = (!csum::fold(ip_sum)).to_be_bytes();
    let tl = total.to_be_bytes();
    let ic = icmp_check.to_be_bytes();
    let (m, s) = (&src.pod_mac, &src.gw_mac);
    let p = data as *mut u8;
    // SAFETY: every offset written is below QUOTE_AT, which was
    // bounds-checked against the packet's end above.
    unsafe {
        let mut k = 0;
        while k < 6 {
            *p.add(k) = m[k];
            *p.add(6 + k) = s[k];
            k += 1;
        }
        *p.add(12) = 0x08;
        *p.add(13) = 0x00;
        let ip = p.add(EthHdr::LEN);
        *ip = 0x45;
        *ip.add(1) = 0xc0;
        *ip.add(2) = tl[0];
        *ip.add(3) = tl[1];
        *ip.add(4) = 0;
        *ip.add(5) = 0;
        *ip.add(6) = 0;
        *ip.add(7) = 0;
        *ip.add(8) = 64;
        *ip.add(9) = IPPROTO_ICMP;
        *ip.add(10) = ip_check[0];
        *ip.add(11) = ip_check[1];
        k = 0;
        while k < 4 {
            *ip.add(12 + k) = g[k];
            *ip.add(16 + k) = d[k];
            k += 1;
        }
        let icmp = ip.add(Ipv4Hdr::LEN);
        *icmp = ty;
        *icmp.add(1) = code;
        *icmp.add(2) = ic[0];
        *icmp.add(3) = ic[1];
        k = 0;
        while k < 4 {
            *icmp.add(4 + k) = rest[k];
            k += 1;
        }
    }
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(src.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    crate::pod_stats::rx(src.ifindex, ctx.len());
    Ok(TC_ACT_REDIRECT as i32)
}

/// An ICMP answer (time exceeded, fragmentation needed) decided by the
/// walk and sent from `np_from_pod`'s entry (`icmp_reply::defer`): one slot
/// per CPU, not pinned.
#[btf_map(name = "answer_scratch")]
pub static ANSWER: PerCpuArray<Pending, 1> = PerCpuArray::new();
