//! ICMP errors (destination unreachable, fragmentation needed, time
//! exceeded, parameter problem) about a translated connection: the error
//! quotes the packet as it left the node (source = NAT address and port);
//! the pod must see it quote its own packet. The quoted header's source
//! address, port and checksums are rewritten, and every changed word is
//! folded into the ICMP checksum (ICMP has no pseudo-header, so the outer
//! address change does not touch it).
//!
//! Destination-translated connections ([`dnat_error`]) both ways: an
//! error from a backend toward the client shows the frontend as its
//! source and in its quote; an error toward the frontend about a
//! backend's reply reaches the backend, quoting its own packet.
//!
//! Only an error addressed to the connection's NAT address (the quoted
//! packet's source) is translated: one that names a connection but is
//! addressed elsewhere goes to the node's stack untouched. Everything read
//! or rewritten lies within the error's IP total length (the quoted IPv4
//! header and 8 bytes of its L4 header, and the quoted L4 checksum only
//! when the quote holds it), never in the Ethernet padding after it.

use aya_ebpf::programs::TcContext;
use netpath_common::{CtKey, RevNat, Stat, ct_flags};
use network_types::eth::EthHdr;

use crate::{
    csum, dnat,
    l3::{rewrite, word16, word32},
    maps::{CONNTRACK, REVNAT},
    parse::{
        Flow, ICMP_DEST_UNREACH, ICMP_ECHO, ICMP_PARAMETER_PROB, ICMP_TIME_EXCEEDED, IPPROTO_ICMP,
        IPPROTO_TCP, IPPROTO_UDP,
    },
    stats::count,
};

/// Whether `f` is an ICMP error netpath translates.
#[inline(always)]
pub fn is_error(f: &Flow) -> bool {
    f.proto == IPPROTO_ICMP
        && matches!(
            f.icmp_type,
            ICMP_DEST_UNREACH | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROB
        )
}

/// Reverse-translates an ICMP error about a translated connection. Returns
/// the pod's address, or `None` when the quoted packet is not ours.
#[inline(always)]
pub fn rev_snat_error(ctx: &TcContext, f: &Flow) -> Result<Option<[u8; 4]>, Stat> {
    let icmp_check = f.l4 + 2;
    // The end of the error's IP datagram: the quote ends there, whatever
    // the frame holds after it.
    let end = EthHdr::LEN + f.tot_len;
    // The quoted IPv4 header follows the 8-byte ICMP header.
    let inner = f.l4 + 8;
    if inner + 20 > end {
        return Ok(None);
    }
    let Ok(ip) = ctx.load::<[u8; 20]>(inner) else {
        return Ok(None);
    };
    let inner_ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[0] >> 4 != 4 || inner_ihl < 20 {
        return Ok(None);
    }
    let proto = ip[9];
    let (saddr, daddr) = (
        [ip[12], ip[13], ip[14], ip[15]],
        [ip[16], ip[17], ip[18], ip[19]],
    );
    // Addressed to the NAT address the quoted packet left from, or not
    // ours to translate.
    if f.daddr != saddr {
        return Ok(None);
    }
    let inner_l4 = inner + inner_ihl;
    // RFC 792: the quote holds at least 8 bytes of the L4 header.
    if inner_l4 + 8 > end {
        return Ok(None);
    }
    let Ok(l4) = ctx.load::<[u8; 8]>(inner_l4) else {
        return Ok(None);
    };
    let (rkey, port_off, old_port) = match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let sport = u16::from_be_bytes([l4[0], l4[1]]);
            let dport = u16::from_be_bytes([l4[2], l4[3]]);
            (
                CtKey {
                    saddr: daddr,
                    daddr: saddr,
                    sport: dport,
                    dport: sport,
                    proto,
                    _pad: [0; 3],
                },
                inner_l4,
                sport,
            )
        }
        IPPROTO_ICMP if l4[0] == ICMP_ECHO => {
            let id = u16::from_be_bytes([l4[4], l4[5]]);
            (
                CtKey {
                    saddr: daddr,
                    daddr: saddr,
                    sport: 0,
                    dport: id,
                    proto,
                    _pad: [0; 3],
                },
                inner_l4 + 4,
                id,
            )
        }
        _ => return Ok(None),
    };
    // SAFETY: the value is copied out at once.
    let Some(RevNat {
        addr: pod,
        port,
        flags,
        ..
    }) = (unsafe { REVNAT.get(&rkey) }).copied()
    else {
        return Ok(None);
    };
    if flags & ct_flags::DNAT != 0 {
        // A destination-translated connection's: [`dnat_error`] handles it.
        return Ok(None);
    }

    // Quoted L4 checksum, when the quote carries it: TCP's is at 16 (often
    // quoted, as Linux quotes up to 576 bytes), UDP's at 6 (0: none),
    // ICMP's at 2 (covers the identifier only, no pseudo-header).
    let l4_check_at = match proto {
        IPPROTO_TCP => inner_l4 + 16,
        IPPROTO_UDP => inner_l4 + 6,
        _ => inner_l4 + 2,
    };
    // Only when the quote (within the IP total length) holds it: a field
    // beyond is padding, neither rewritten nor folded into the ICMP sum.
    let quoted = l4_check_at + 2 <= end;
    if let (true, Ok(old)) = (quoted, ctx.load::<[u8; 2]>(l4_check_at)) {
        let old_c = u16::from_be_bytes(old);
        if !(proto == IPPROTO_UDP && old_c == 0) {
            let mut c = csum::replace16(old_c, old_port, port);
            if proto != IPPROTO_ICMP {
                let (o, n) = (saddr, pod);
                c = csum::replace16(
                    c,
                    u16::from_be_bytes([o[0], o[1]]),
                    u16::from_be_bytes([n[0], n[1]]),
                );
                c = csum::replace16(
                    c,
                    u16::from_be_bytes([o[2], o[3]]),
                    u16::from_be_bytes([n[2], n[3]]),
                );
            }
            rewrite(ctx.l4_csum_replace(icmp_check, word16(old_c), word16(c), 2))?;
            rewrite(ctx.store(l4_check_at, &c.to_be_bytes(), 0))?;
        }
    }
    // Quoted port (or echo identifier).
    rewrite(ctx.l4_csum_replace(icmp_check, word16(old_port), word16(port), 2))?;
    rewrite(ctx.store(port_off, &port.to_be_bytes(), 0))?;
    // Quoted source address and the quoted header's checksum.
    let old_ip_c = u16::from_be_bytes([ip[10], ip[11]]);
    let mut ip_c = csum::replace16(
        old_ip_c,
        u16::from_be_bytes([saddr[0], saddr[1]]),
        u16::from_be_bytes([pod[0], pod[1]]),
    );
    ip_c = csum::replace16(
        ip_c,
        u16::from_be_bytes([saddr[2], saddr[3]]),
        u16::from_be_bytes([pod[2], pod[3]]),
    );
    rewrite(ctx.l4_csum_replace(icmp_check, word16(old_ip_c), word16(ip_c), 2))?;
    rewrite(ctx.store(inner + 10, &ip_c.to_be_bytes(), 0))?;
    rewrite(ctx.l4_csum_replace(icmp_check, word32(saddr), word32(pod), 4))?;
    rewrite(ctx.store(inner + 12, &pod, 0))?;
    // The outer destination (the node's NAT address becomes the pod's) is
    // left to `rewrite_headers`: ICMP's checksum has no pseudo-header.
    count(Stat::IcmpErrorRevNat, ctx.len());
    // A node connection's error goes to the node's stack (np_to_uplink).
    if flags & ct_flags::NODE != 0 {
        return Ok(None);
    }
    Ok(Some(pod))
}

/// [`dnat_error`]'s direction: an error a backend sends toward a client
/// about the packet it received (the quote is client → backend).
pub const TOWARD_CLIENT: bool = true;
/// [`dnat_error`]'s direction: an error toward a frontend about a
/// backend's translated reply (the quote is frontend → client, as the
/// client or a router on the way got it).
pub const TOWARD_BACKEND: bool = false;

/// Translates an ICMP error about a destination-translated TCP/UDP
/// connection (`dnat.rs`), quoted header included, and returns the outer
/// destination the error goes to; `None` when it names no such
/// connection (or a hairpinned one: not translated).
///
/// - Toward the client: from backend B, quoting C:cp → B:bp; found by the
///   reverse entry at B:bp → C:cp. The quoted destination becomes F:fp and
///   the outer source F: the client sees the frontend answer.
/// - Toward the backend: to F, quoting F:fp → C:cp; found by the
///   connection at C:cp → F:fp. The quoted source becomes B:bp and the
///   outer destination B.
///
/// As [`rev_snat_error`]: only within the error's IP total length, every
/// changed quoted word folded into the ICMP checksum.
#[inline(always)]
pub fn dnat_error(ctx: &TcContext, f: &Flow, toward_client: bool) -> Result<Option<[u8; 4]>, Stat> {
    let end = EthHdr::LEN + f.tot_len;
    let inner = f.l4 + 8;
    if inner + 20 > end {
        return Ok(None);
    }
    let Ok(ip) = ctx.load::<[u8; 20]>(inner) else {
        return Ok(None);
    };
    let inner_ihl = usize::from(ip[0] & 0x0f) * 4;
    let proto = ip[9];
    if ip[0] >> 4 != 4 || inner_ihl < 20 || !(proto == IPPROTO_TCP || proto == IPPROTO_UDP) {
        return Ok(None);
    }
    let qs = [ip[12], ip[13], ip[14], ip[15]];
    let qd = [ip[16], ip[17], ip[18], ip[19]];
    let inner_l4 = inner + inner_ihl;
    if inner_l4 + 8 > end {
        return Ok(None);
    }
    let Ok(l4) = ctx.load::<[u8; 4]>(inner_l4) else {
        return Ok(None);
    };
    let (qsp, qdp) = (
        u16::from_be_bytes([l4[0], l4[1]]),
        u16::from_be_bytes([l4[2], l4[3]]),
    );
    // The quote's reversed tuple: the reverse entry's key toward the
    // client, the connection's original tuple toward the backend.
    let key = CtKey {
        saddr: qd,
        daddr: qs,
        sport: qdp,
        dport: qsp,
        proto,
        _pad: [0; 3],
    };
    let q = Quote {
        inner,
        ip_check: u16::from_be_bytes([ip[10], ip[11]]),
        l4_check_at: crate::l3::l4_check_off(proto, inner_l4),
        end,
        proto,
    };
    let dnat_only = |flags: u8| flags & (ct_flags::DNAT | ct_flags::HAIRPIN) == ct_flags::DNAT;
    if toward_client {
        if f.saddr != qd {
            return Ok(None);
        }
        // SAFETY: the value is copied out at once.
        let Some(rev) = (unsafe { REVNAT.get(&key) }).copied() else {
            return Ok(None);
        };
        if !dnat_only(rev.flags) {
            return Ok(None);
        }
        let new = (rev.addr, rev.port);
        rewrite_quote(
            ctx,
            f,
            &q,
            (inner + 16, qd, new.0),
            (inner_l4 + 2, qdp, new.1),
        )?;
        dnat::ip_addr(ctx, dnat::IP_SADDR, f.saddr, new.0)?;
        count(Stat::IcmpErrorDnat, ctx.len());
        Ok(Some(f.daddr))
    } else {
        if f.daddr != qs {
            return Ok(None);
        }
        // SAFETY: the value is copied out at once.
        let Some(e) = (unsafe { CONNTRACK.get(&key) }).copied() else {
            return Ok(None);
        };
        if !dnat_only(e.flags) {
            return Ok(None);
        }
        let new = (e.nat_addr, e.nat_port);
        rewrite_quote(ctx, f, &q, (inner + 12, qs, new.0), (inner_l4, qsp, new.1))?;
        dnat::ip_addr(ctx, dnat::IP_DADDR, f.daddr, new.0)?;
        count(Stat::IcmpErrorDnat, ctx.len());
        Ok(Some(new.0))
    }
}

/// Where a quoted header is, for [`rewrite_quote`].
struct Quote {
    /// Offset of the quoted IPv4 header.
    inner: usize,
    /// Its checksum as quoted.
    ip_check: u16,
    /// Offset of the quoted L4 checksum (maybe beyond the quote).
    l4_check_at: usize,
    /// The end of the error's IP datagram.
    end: usize,
    proto: u8,
}

/// Rewrites one quoted address (`(offset, old, new)`) and its port, the
/// quoted IPv4 and L4 checksums, and folds every change into the ICMP
/// checksum (no pseudo-header: the outer addresses are not in it).
#[inline(always)]
fn rewrite_quote(
    ctx: &TcContext,
    f: &Flow,
    q: &Quote,
    addr: (usize, [u8; 4], [u8; 4]),
    port: (usize, u16, u16),
) -> Result<(), Stat> {
    let icmp_check = f.l4 + 2;
    let (addr_at, o, n) = addr;
    let (port_at, old_port, new_port) = port;
    let quoted = q.l4_check_at + 2 <= q.end;
    if let (true, Ok(old)) = (quoted, ctx.load::<[u8; 2]>(q.l4_check_at)) {
        let old_c = u16::from_be_bytes(old);
        if !(q.proto == IPPROTO_UDP && old_c == 0) {
            let mut c = csum::replace16(old_c, old_port, new_port);
            c = csum::replace16(
                c,
                u16::from_be_bytes([o[0], o[1]]),
                u16::from_be_bytes([n[0], n[1]]),
            );
            c = csum::replace16(
                c,
                u16::from_be_bytes([o[2], o[3]]),
                u16::from_be_bytes([n[2], n[3]]),
            );
            rewrite(ctx.l4_csum_replace(icmp_check, word16(old_c), word16(c), 2))?;
            rewrite(ctx.store(q.l4_check_at, &c.to_be_bytes(), 0))?;
        }
    }
    rewrite(ctx.l4_csum_replace(icmp_check, word16(old_port), word16(new_port), 2))?;
    rewrite(ctx.store(port_at, &new_port.to_be_bytes(), 0))?;
    let mut ip_c = csum::replace16(
        q.ip_check,
        u16::from_be_bytes([o[0], o[1]]),
        u16::from_be_bytes([n[0], n[1]]),
    );
    ip_c = csum::replace16(
        ip_c,
        u16::from_be_bytes([o[2], o[3]]),
        u16::from_be_bytes([n[2], n[3]]),
    );
    rewrite(ctx.l4_csum_replace(icmp_check, word16(q.ip_check), word16(ip_c), 2))?;
    rewrite(ctx.store(q.inner + 10, &ip_c.to_be_bytes(), 0))?;
    rewrite(ctx.l4_csum_replace(icmp_check, word32(o), word32(n), 4))?;
    rewrite(ctx.store(addr_at, &n, 0))
}
