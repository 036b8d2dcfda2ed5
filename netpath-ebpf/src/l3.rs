//! Header rewrites: the L4 checksum through helpers (which know about
//! `CHECKSUM_PARTIAL`), the Ethernet and IPv4 headers in place.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use netpath_common::{Endpoint, Stat};

use network_types::{eth::EthHdr, ip::Ipv4Hdr};

use crate::{
    csum,
    parse::{Flow, IPPROTO_TCP, IPPROTO_UDP},
};

/// A 4-byte field as `*_csum_replace` wants it: the raw network-order word.
#[inline(always)]
pub fn word32(b: [u8; 4]) -> u64 {
    u64::from(u32::from_ne_bytes(b))
}

/// A 2-byte field (host-order value) as `*_csum_replace` wants it.
#[inline(always)]
pub fn word16(v: u16) -> u64 {
    u64::from(u16::from_ne_bytes(v.to_be_bytes()))
}

/// A failed rewrite helper drops the packet.
#[inline(always)]
pub fn rewrite<T>(r: Result<T, i64>) -> Result<T, Stat> {
    r.map_err(|_| Stat::DropRewriteFailed)
}

/// Offset of the L4 checksum of `proto` in a header at `l4`.
#[inline(always)]
pub fn l4_check_off(proto: u8, l4: usize) -> usize {
    match proto {
        IPPROTO_TCP => l4 + 16,
        IPPROTO_UDP => l4 + 6,
        _ => l4 + 2,
    }
}

/// Folds an address change into the TCP/UDP checksum's pseudo-header part
/// (`BPF_F_PSEUDO_HDR`: right with `CHECKSUM_PARTIAL` too, where the field
/// holds the pseudo-header sum only). The IPv4 header itself is rewritten by
/// [`rewrite_headers`].
#[inline(always)]
pub fn l4_addr(ctx: &TcContext, f: &Flow, old: [u8; 4], new: [u8; 4]) -> Result<(), Stat> {
    if old == new || f.later_fragment {
        return Ok(());
    }
    let flags = match f.proto {
        IPPROTO_TCP => BPF_F_PSEUDO_HDR,
        IPPROTO_UDP => BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0,
        // ICMP's checksum has no pseudo-header.
        _ => return Ok(()),
    };
    rewrite(ctx.l4_csum_replace(
        l4_check_off(f.proto, f.l4),
        word32(old),
        word32(new),
        u64::from(flags) | 4,
    ))
}

/// Replaces the L4 "port" at `port_off` (a TCP/UDP port, or the ICMP echo
/// identifier) and fixes the L4 checksum.
#[inline(always)]
pub fn set_port(
    ctx: &TcContext,
    f: &Flow,
    port_off: usize,
    old: u16,
    new: u16,
) -> Result<(), Stat> {
    if old == new {
        return Ok(());
    }
    let flags = match f.proto {
        IPPROTO_UDP => u64::from(BPF_F_MARK_MANGLED_0) | 2,
        _ => 2,
    };
    rewrite(ctx.l4_csum_replace(l4_check_off(f.proto, f.l4), word16(old), word16(new), flags))?;
    rewrite(ctx.store(port_off, &new.to_be_bytes(), 0))
}

/// What [`rewrite_headers`] changes besides the TTL.
#[derive(Clone, Copy, Default)]
pub struct Headers {
    pub saddr: Option<[u8; 4]>,
    pub daddr: Option<[u8; 4]>,
    /// Destination and source MAC.
    pub macs: Option<([u8; 6], [u8; 6])>,
}

/// Rewrites the Ethernet and IPv4 headers in place: TTL − 1 (dropping the
/// packet when it would reach 0), the addresses and MACs in `h`, and the IP
/// checksum by RFC 1624 over every changed word. The IPv4 checksum is always
/// complete in the packet (never `CHECKSUM_PARTIAL`), so direct writes are
/// right here; it saves the helper calls the L4 checksum needs.
#[inline(always)]
pub fn rewrite_headers(ctx: &TcContext, h: &Headers) -> Result<(), Stat> {
    const LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN;
    // Pointers are derived afresh: helpers that ran before invalidated any.
    if ctx.data() + LEN > ctx.data_end() {
        rewrite(ctx.skb.pull_data(LEN as u32))?;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // Verifier: proves [data, data + LEN) is inside the packet.
    if data + LEN > end {
        return Err(Stat::DropTruncated);
    }
    let eth = data as *mut EthHdr;
    let ip = (data + EthHdr::LEN) as *mut Ipv4Hdr;
    // SAFETY: both headers are inside the packet (checked just above), and
    // direct writes are allowed in TC (the verifier un-clones the skb).
    unsafe {
        let ttl = (*ip).ttl;
        if ttl <= 1 {
            return Err(Stat::DropTtlExceeded);
        }
        let proto = u16::from((*ip).proto);
        let mut check = u16::from_be_bytes((*ip).check);
        // TTL shares a 16-bit word with the protocol byte.
        check = csum::replace16(
            check,
            (u16::from(ttl) << 8) | proto,
            (u16::from(ttl - 1) << 8) | proto,
        );
        (*ip).ttl = ttl - 1;
        if let Some(new) = h.saddr {
            check = replace_addr(check, (*ip).src_addr, new);
            (*ip).src_addr = new;
        }
        if let Some(new) = h.daddr {
            check = replace_addr(check, (*ip).dst_addr, new);
            (*ip).dst_addr = new;
        }
        (*ip).check = check.to_be_bytes();
        if let Some((dst, src)) = h.macs {
            (*eth).dst_addr = dst;
            (*eth).src_addr = src;
        }
    }
    Ok(())
}

/// The checksum after an address (two 16-bit words) changes.
#[inline(always)]
fn replace_addr(check: u16, old: [u8; 4], new: [u8; 4]) -> u16 {
    let check = csum::replace16(
        check,
        u16::from_be_bytes([old[0], old[1]]),
        u16::from_be_bytes([new[0], new[1]]),
    );
    csum::replace16(
        check,
        u16::from_be_bytes([old[2], old[3]]),
        u16::from_be_bytes([new[2], new[3]]),
    )
}

/// Delivers a translated packet to local pod `ep`: headers rewritten (TTL,
/// the destination address when `daddr` is set, the pod's MACs), then
/// `bpf_redirect_peer` into the pod's `eth0`.
#[inline(always)]
pub fn deliver_to_pod(ctx: &TcContext, ep: &Endpoint, daddr: Option<[u8; 4]>) -> Result<i32, Stat> {
    rewrite_headers(
        ctx,
        &Headers {
            saddr: None,
            daddr,
            macs: Some((ep.pod_mac, ep.gw_mac)),
        },
    )?;
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    crate::pod_stats::rx(ep.ifindex, ctx.len());
    crate::events::trace_redirect(ctx, Stat::FwdLocalPod, ep.ifindex);
    Ok(TC_ACT_REDIRECT as i32)
}
