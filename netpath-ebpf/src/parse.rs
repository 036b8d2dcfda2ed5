//! Header parsing with the bounds checks the verifier needs.
//!
//! Every accessor returns a pointer only after proving that the whole
//! header lies inside `[data, data_end)`; callers never index past it.

use aya_ebpf::programs::TcContext;
use netpath_common::Stat;
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::stats::count;

/// The headers of an IPv4 packet, with the IPv4 header length honoured.
pub struct Ipv4Packet {
    pub eth: *mut EthHdr,
    pub ip: *mut Ipv4Hdr,
    /// IPv4 header length in bytes (IHL × 4, options included).
    pub ihl_bytes: usize,
}

/// What the parser found.
pub enum Parsed {
    Ipv4(Ipv4Packet),
    /// Not an IPv4 frame (ARP, IPv6, ...).
    NotIpv4,
}

/// A `*mut T` at `offset`, if `offset + size_of::<T>()` is inside the packet.
#[inline(always)]
fn ptr_at<T>(ctx: &TcContext, offset: usize) -> Option<*mut T> {
    let start = ctx.data();
    let end = ctx.data_end();
    // Verifier: proves [start + offset, start + offset + len) ⊂ [data, data_end).
    if start + offset + core::mem::size_of::<T>() > end {
        return None;
    }
    Some((start + offset) as *mut T)
}

/// Make the first `len` bytes of the packet directly accessible (they may sit
/// in a non-linear part of the skb); `false` when the packet is shorter.
#[inline(always)]
fn ensure_linear(ctx: &TcContext, len: usize) -> bool {
    if ctx.data() + len <= ctx.data_end() {
        return true;
    }
    ctx.skb.pull_data(len as u32).is_ok() && ctx.data() + len <= ctx.data_end()
}

/// Parse Ethernet and IPv4 headers. Counts and returns `Err` for frames
/// that must be dropped (truncated or malformed).
#[inline(always)]
pub fn parse_ipv4(ctx: &TcContext) -> Result<Parsed, ()> {
    let len = ctx.len();
    if !ensure_linear(ctx, EthHdr::LEN) {
        count(Stat::DropTruncated, len);
        return Err(());
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(())?;
    // SAFETY: `eth` was bounds-checked by `ptr_at`.
    if unsafe { (*eth).ether_type } != EtherType::Ipv4 as u16 {
        return Ok(Parsed::NotIpv4);
    }

    if !ensure_linear(ctx, EthHdr::LEN + Ipv4Hdr::LEN) {
        count(Stat::DropTruncated, len);
        return Err(());
    }
    // Pointers are re-derived after any pull_data: it invalidates old ones.
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        count(Stat::DropTruncated, len);
        return Err(());
    };
    // SAFETY: `ip` was bounds-checked by `ptr_at`.
    let (vihl, tot_len) = unsafe { ((*ip).vihl, u16::from_be_bytes((*ip).tot_len)) };
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN || usize::from(tot_len) < ihl_bytes {
        count(Stat::DropBadIpHeader, len);
        return Err(());
    }
    // The packet must hold what the header claims (ip_rcv drops it too);
    // a longer frame is fine (Ethernet padding).
    if (len as usize) < EthHdr::LEN + usize::from(tot_len) {
        count(Stat::DropTruncated, len);
        return Err(());
    }
    // The options, if any, must be inside the packet too.
    if ihl_bytes > Ipv4Hdr::LEN {
        count(Stat::Ipv4Options, len);
        if !ensure_linear(ctx, EthHdr::LEN + ihl_bytes) {
            count(Stat::DropTruncated, len);
            return Err(());
        }
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(())?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(())?;
    // SAFETY: bounds-checked above.
    let frags = u16::from_be_bytes(unsafe { (*ip).frags });
    // More-fragments set or a non-zero offset: this is a fragment.
    if frags & 0x3fff != 0 {
        count(Stat::Ipv4Fragment, len);
    }
    Ok(Parsed::Ipv4(Ipv4Packet { eth, ip, ihl_bytes }))
}
