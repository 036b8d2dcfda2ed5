//! Header parsing with the bounds checks the verifier needs.
//!
//! Every accessor returns a pointer only after proving that the whole
//! header lies inside `[data, data_end)`; callers never index past it.
//!
//! Two skb properties are read from the context rather than the frame:
//! - an offloaded VLAN tag ([`vlan_tagged`]): the frame then looks untagged
//!   but belongs to a VLAN device; the walks decide what to do with it;
//! - GSO ([`parse_ipv4`]): a BIG TCP packet (larger than 64 KiB, built by a
//!   device with `gso_ipv4_max_size` above 65536) carries an IPv4 total
//!   length of 0, and its length is the skb's, as the kernel's `iph_totlen`
//!   takes it.

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
    /// The IPv4 total length (header and payload): the header's, or for a
    /// BIG TCP packet the skb's length without the Ethernet header.
    pub tot_len: usize,
}

/// What the parser found.
pub enum Parsed {
    Ipv4(Ipv4Packet),
    /// An ARP frame (not parsed further: see [`arp_sender`]).
    Arp,
    /// An IPv6 frame.
    Ipv6,
    /// Any other ethertype.
    Other,
}

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// Whether the skb carries an offloaded (hardware-accelerated) VLAN tag:
/// the tag is in `skb->vlan_tci`, not in the frame.
#[inline(always)]
pub fn vlan_tagged(ctx: &TcContext) -> bool {
    // SAFETY: reading a field of the context the kernel handed us.
    unsafe { (*ctx.skb.skb).vlan_present != 0 }
}

/// The ifindex the packet arrived on (`skb->skb_iif`): at TC ingress the
/// device the program is attached to.
#[inline(always)]
pub fn ingress_ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: reading a field of the context the kernel handed us.
    unsafe { (*ctx.skb.skb).ingress_ifindex }
}

/// The source MAC of the frame (any frame: the parser made the Ethernet
/// header readable).
#[inline(always)]
pub fn src_mac(ctx: &TcContext) -> Result<[u8; 6], Stat> {
    ctx.load::<[u8; 6]>(6).map_err(|_| Stat::DropTruncated)
}

/// The sender hardware and protocol addresses of an Ethernet/IPv4 ARP
/// frame; `Err` when the frame is not one.
#[inline(always)]
pub fn arp_sender(ctx: &TcContext) -> Result<([u8; 6], [u8; 4]), Stat> {
    // htype(2) ptype(2) hlen(1) plen(1) op(2) sha(6) spa(4) tha(6) tpa(4).
    let arp: [u8; 28] = ctx.load(EthHdr::LEN).map_err(|_| Stat::DropTruncated)?;
    if arp[..6] != [0, 1, 0x08, 0, 6, 4] {
        return Err(Stat::DropSpoofedArp);
    }
    let sha = [arp[8], arp[9], arp[10], arp[11], arp[12], arp[13]];
    let spa = [arp[14], arp[15], arp[16], arp[17]];
    Ok((sha, spa))
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

/// Parse Ethernet and IPv4 headers. Frames that must be dropped
/// (truncated or malformed) give `Err(reason)`.
#[inline(always)]
pub fn parse_ipv4(ctx: &TcContext) -> Result<Parsed, Stat> {
    let len = ctx.len();
    if !ensure_linear(ctx, EthHdr::LEN) {
        return Err(Stat::DropTruncated);
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Stat::DropTruncated)?;
    // SAFETY: `eth` was bounds-checked by `ptr_at`.
    let ether_type = unsafe { (*eth).ether_type };
    if ether_type != EtherType::Ipv4 as u16 {
        return Ok(match u16::from_be(ether_type) {
            ETH_P_ARP => Parsed::Arp,
            ETH_P_IPV6 => Parsed::Ipv6,
            _ => Parsed::Other,
        });
    }

    if !ensure_linear(ctx, EthHdr::LEN + Ipv4Hdr::LEN) {
        return Err(Stat::DropTruncated);
    }
    // Pointers are re-derived after any pull_data: it invalidates old ones.
    let Some(ip) = ptr_at::<Ipv4Hdr>(ctx, EthHdr::LEN) else {
        return Err(Stat::DropTruncated);
    };
    // SAFETY: `ip` was bounds-checked by `ptr_at`.
    let (vihl, tot_len, proto) =
        unsafe { ((*ip).vihl, u16::from_be_bytes((*ip).tot_len), (*ip).proto) };
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    let mut tot_len = usize::from(tot_len);
    // BIG TCP: a TCP GSO packet may carry total length 0 (`iph_totlen`).
    // SAFETY: reading a field of the context the kernel handed us.
    if tot_len == 0 && proto == IPPROTO_TCP && unsafe { (*ctx.skb.skb).gso_size } != 0 {
        count(Stat::Ipv4BigTcp, len);
        tot_len = (len as usize).saturating_sub(EthHdr::LEN);
    }
    if vihl >> 4 != 4 || ihl_bytes < Ipv4Hdr::LEN || tot_len < ihl_bytes {
        return Err(Stat::DropBadIpHeader);
    }
    // The packet must hold what the header claims (ip_rcv drops it too);
    // a longer frame is fine (Ethernet padding).
    if (len as usize) < EthHdr::LEN + tot_len {
        return Err(Stat::DropTruncated);
    }
    // The options, if any, must be inside the packet too.
    if ihl_bytes > Ipv4Hdr::LEN {
        count(Stat::Ipv4Options, len);
        if !ensure_linear(ctx, EthHdr::LEN + ihl_bytes) {
            return Err(Stat::DropTruncated);
        }
    }
    let eth: *mut EthHdr = ptr_at(ctx, 0).ok_or(Stat::DropTruncated)?;
    let ip: *mut Ipv4Hdr = ptr_at(ctx, EthHdr::LEN).ok_or(Stat::DropTruncated)?;
    // SAFETY: bounds-checked above.
    let frags = u16::from_be_bytes(unsafe { (*ip).frags });
    // More-fragments set or a non-zero offset: this is a fragment.
    if frags & 0x3fff != 0 {
        count(Stat::Ipv4Fragment, len);
    }
    Ok(Parsed::Ipv4(Ipv4Packet {
        eth,
        ip,
        ihl_bytes,
        tot_len,
    }))
}

/// IP protocol numbers netpath translates.
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// ICMP types.
pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACH: u8 = 3;
pub const ICMP_ECHO: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROB: u8 = 12;

/// TCP flag bits (byte 13 of the header).
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The addresses, protocol and L4 fields of an IPv4 packet, read with
/// `bpf_skb_load_bytes` (no packet pointers survive the rewrites that
/// follow, so nothing here points into the packet).
#[derive(Clone, Copy)]
pub struct Flow {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub proto: u8,
    /// Offset of the L4 header (14 + IHL × 4).
    pub l4: usize,
    /// TCP/UDP ports, host order; for ICMP echo the identifier in `sport`.
    pub sport: u16,
    pub dport: u16,
    pub tcp_flags: u8,
    pub icmp_type: u8,
    /// Not the first fragment, or more fragments follow.
    pub fragment: bool,
    /// A non-first fragment: it has no L4 header.
    pub later_fragment: bool,
    /// IP identification (host order), TTL and don't-fragment bit.
    pub id: u16,
    pub ttl: u8,
    pub df: bool,
    /// IPv4 total length ([`Ipv4Packet::tot_len`]).
    pub tot_len: usize,
}

/// Minimum L4 header lengths: TCP without options (its checksum is at
/// 16..18), UDP, and ICMP (type, code, checksum and 4 more bytes: the echo
/// identifier, the next-hop MTU).
const TCP_MIN: usize = 20;
const UDP_MIN: usize = 8;
const ICMP_MIN: usize = 8;

/// Reads the flow of a parsed IPv4 packet. L4 fields are read for TCP, UDP
/// and ICMP unless this is a later fragment. Their minimum header must lie
/// within the IP total length (`drop_l4_truncated` otherwise), so that no
/// walk reads or writes an L4 field in the Ethernet padding after it, and
/// a packet whose header cannot be translated is refused here, before any
/// connection or NAT port is made for it.
#[inline(always)]
pub fn flow(ctx: &TcContext, pkt: &Ipv4Packet) -> Result<Flow, Stat> {
    // SAFETY: `pkt.ip` was bounds-checked by `parse_ipv4` and no helper has
    // moved packet data since.
    let (saddr, daddr, proto, frags, id, ttl) = unsafe {
        let ip = pkt.ip;
        (
            (*ip).src_addr,
            (*ip).dst_addr,
            (*ip).proto,
            u16::from_be_bytes((*ip).frags),
            u16::from_be_bytes((*ip).id),
            (*ip).ttl,
        )
    };
    let l4 = EthHdr::LEN + pkt.ihl_bytes;
    let mut f = Flow {
        saddr,
        daddr,
        proto,
        l4,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        fragment: frags & 0x3fff != 0,
        later_fragment: frags & 0x1fff != 0,
        id,
        ttl,
        df: frags & 0x4000 != 0,
        tot_len: pkt.tot_len,
    };
    if f.later_fragment {
        return Ok(f);
    }
    let truncated = |_| Stat::DropTruncated;
    let min = match proto {
        IPPROTO_TCP => TCP_MIN,
        IPPROTO_UDP => UDP_MIN,
        IPPROTO_ICMP => ICMP_MIN,
        _ => 0,
    };
    // The parser proved the packet holds 14 + tot_len bytes, so the loads
    // below (at most `min` bytes from l4) stay inside the frame too.
    if l4 + min > EthHdr::LEN + pkt.tot_len {
        return Err(Stat::DropL4Truncated);
    }
    match proto {
        IPPROTO_TCP => {
            // Ports (0..4) and flags (13).
            let hdr: [u8; 14] = ctx.load(l4).map_err(truncated)?;
            f.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            f.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
            f.tcp_flags = hdr[13];
        }
        IPPROTO_UDP => {
            let hdr: [u8; 4] = ctx.load(l4).map_err(truncated)?;
            f.sport = u16::from_be_bytes([hdr[0], hdr[1]]);
            f.dport = u16::from_be_bytes([hdr[2], hdr[3]]);
        }
        IPPROTO_ICMP => {
            // Type, code, checksum, identifier.
            let hdr: [u8; 6] = ctx.load(l4).map_err(truncated)?;
            f.icmp_type = hdr[0];
            f.sport = u16::from_be_bytes([hdr[4], hdr[5]]);
        }
        _ => {}
    }
    Ok(f)
}
