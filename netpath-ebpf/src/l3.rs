//! L2/L3 rewrites through helpers (valid whatever the skb's layout, and
//! after other helpers have moved packet data): TTL, MACs, addresses.

use aya_ebpf::{
    bindings::{BPF_F_MARK_MANGLED_0, BPF_F_PSEUDO_HDR, TC_ACT_REDIRECT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use netpath_common::{Endpoint, Stat};

use crate::parse::{Flow, IPPROTO_TCP, IPPROTO_UDP, off};

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

/// Decrements the TTL (which shares a checksummed word with the protocol).
/// Drops when it would reach 0.
#[inline(always)]
pub fn decrement_ttl(ctx: &TcContext, f: &Flow) -> Result<(), Stat> {
    if f.ttl <= 1 {
        return Err(Stat::DropTtlExceeded);
    }
    let old = word16((u16::from(f.ttl) << 8) | u16::from(f.proto));
    let new = word16((u16::from(f.ttl - 1) << 8) | u16::from(f.proto));
    rewrite(ctx.l3_csum_replace(off::IP_CHECK, old, new, 2))?;
    rewrite(ctx.store(off::IP_TTL, &(f.ttl - 1), 0))
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

/// Replaces an address at `addr_off` (the IP source or destination) and
/// fixes the IP checksum and, for TCP/UDP, the pseudo-header part of the L4
/// checksum (`BPF_F_PSEUDO_HDR`: right with `CHECKSUM_PARTIAL` too).
#[inline(always)]
pub fn set_addr(
    ctx: &TcContext,
    f: &Flow,
    addr_off: usize,
    old: [u8; 4],
    new: [u8; 4],
) -> Result<(), Stat> {
    if old == new {
        return Ok(());
    }
    if !f.later_fragment {
        match f.proto {
            IPPROTO_TCP => rewrite(ctx.l4_csum_replace(
                l4_check_off(f.proto, f.l4),
                word32(old),
                word32(new),
                u64::from(BPF_F_PSEUDO_HDR) | 4,
            ))?,
            IPPROTO_UDP => rewrite(ctx.l4_csum_replace(
                l4_check_off(f.proto, f.l4),
                word32(old),
                word32(new),
                u64::from(BPF_F_PSEUDO_HDR | BPF_F_MARK_MANGLED_0) | 4,
            ))?,
            _ => {}
        }
    }
    rewrite(ctx.l3_csum_replace(off::IP_CHECK, word32(old), word32(new), 4))?;
    rewrite(ctx.store(addr_off, &new, 0))
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

/// Delivers a packet that was rewritten with helpers to a local pod:
/// TTL, MACs, then `bpf_redirect_peer` into the pod's `eth0`.
#[inline(always)]
pub fn deliver_to_pod(ctx: &TcContext, f: &Flow, ep: &Endpoint) -> Result<i32, Stat> {
    decrement_ttl(ctx, f)?;
    let mut macs = [0u8; 12];
    macs[..6].copy_from_slice(&ep.pod_mac);
    macs[6..].copy_from_slice(&ep.gw_mac);
    rewrite(ctx.store(0, &macs, 0))?;
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    Ok(TC_ACT_REDIRECT as i32)
}
