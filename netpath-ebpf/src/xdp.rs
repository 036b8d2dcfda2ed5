//! XDP on an uplink (`np_xdp_uplink`): the prefilter, and a fast path for
//! established inbound flows to local pods; and the pass-through program a
//! pod's `eth0` needs to receive redirected frames (`np_xdp_pod`).
//!
//! # The walk of `np_xdp_uplink`
//!
//! 1. IPv4 from a source in the deny list (`prefilter_v1`, longest prefix
//!    match): `XDP_DROP`, counted `drop_xdp_prefilter`, before any skb is
//!    built.
//! 2. The fast path, for an unfragmented TCP segment without SYN, FIN or
//!    RST (with ACK) of an `ESTABLISHED` connection, or a UDP datagram, that
//!    is either
//!    - a reply of a masqueraded connection (a `revnat_v2` hit that is no
//!      DNAT and no node connection, whose connection entry leads back to
//!      it): the destination becomes the pod's address and port; or
//!    - a packet of a destination-translated connection from its client
//!      (a `conntrack_v2` hit by the original tuple client → frontend with
//!      `ct_flags::DNAT`, whose reverse entry leads back to it): the
//!      destination becomes the backend,
//!
//!    and whose new destination is a local pod (`endpoints_v1`): TTL − 1,
//!    the destination address and port, the IPv4 and L4 checksums (RFC 1624
//!    arithmetic: XDP has no checksum helpers that know an skb), the pod's
//!    MACs, the connection updated by the same state machine as TC
//!    ([`conntrack::update`]: counters, sequence tracking, `last_seen` at
//!    most once a second), then `bpf_redirect` to the pod's host-side veth,
//!    counted `xdp_fwd_revsnat` / `xdp_fwd_dnat`.
//! 3. Anything else passes to the TC program (`np_from_uplink`) untouched,
//!    counted `xdp_pass`: first packets, TCP state changes (SYN, FIN, RST,
//!    and every segment of a connection not in `ESTABLISHED`, whose ACKs can
//!    move it), fragments, ICMP, the node's own connections, missing or
//!    expired entries (TC repairs or replaces them), expiring TTLs, unknown
//!    flows. The state machine and every repair so stay in one place.
//!
//! # Checksums: `CHECKSUM_PARTIAL` frames (investigated on veth, 6.18)
//!
//! A frame sent by a Linux stack through a device with TX checksum offload
//! (a veth peer has it on by default) carries `CHECKSUM_PARTIAL`: its TCP/UDP
//! checksum field holds only the folded pseudo-header sum (`~csum_tcpudp_
//! magic(saddr, daddr, len, proto, 0)`), to be completed by whoever
//! transmits it on a wire. veth runs a native XDP program on such an skb
//! (`veth_xdp_rcv_skb`; attaching XDP only turns GSO off on the peer, not
//! checksum offload), and XDP cannot see `ip_summed`. Redirected, the frame
//! becomes an `xdp_frame` and the pod's veth builds a new skb from it with
//! `CHECKSUM_NONE`: the pod verifies the checksum in software, and an
//! incrementally updated partial sum is wrong for it (the pod drops the
//! segment; a partial field also needs the non-complemented update). So
//! the fast path recognises the partial form, a checksum field equal to the
//! folded pseudo-header sum of the packet, and leaves such packets to TC
//! (whose `bpf_l4_csum_replace` knows `CHECKSUM_PARTIAL`). A complete
//! checksum equals that value once in 65536 packets: those take TC's path
//! too, which is only slower. Frames from a real NIC, or from a veth peer
//! with TX checksum offload off (`ethtool -K <peer> tx off`), carry complete
//! checksums and take the fast path; `tests/tests/xdp.rs` shows both.
//! The fast path never verifies a checksum: the incremental update keeps a
//! corrupt one corrupt, and the pod's stack drops it.
//!
//! In generic (skb) mode the skb itself is redirected and keeps its
//! `ip_summed`; partial frames are passed as above, and
//! `CHECKSUM_UNNECESSARY`/`NONE` stay right after the update. A NIC's
//! `CHECKSUM_COMPLETE` value goes stale with the rewrite (the receiver falls
//! back to verifying in software): native mode is the one to use on real
//! NICs, generic mode is the fallback for drivers without XDP.
//!
//! # Measured (veth uplink, 6.18, 2 vCPUs; 400 MB LAN → pod over TCP)
//!
//! | LAN peer TX checksum offload | off (TC only) | generic  | native   |
//! |------------------------------|---------------|----------|----------|
//! | on (veth's default: GSO)     | 1180-1530 MB/s| 815-880  | 230-335  |
//! | off (complete checksums)     | 490-560 MB/s  | 485      | 300-370  |
//!
//! On a veth uplink the fast path is no gain: native XDP on a veth turns
//! GSO off on its peer (every segment is a packet, ~290k instead of ~7k)
//! and moves each frame through the peer's NAPI and an `xdp_frame`, which
//! costs more than TC's translation of an skb; generic XDP keeps GSO but
//! loses GRO. With offload on no segment takes the fast path at all
//! (partial checksums). The prefilter's early drop is what XDP buys there;
//! the fast path is for real NICs (not measured here). A veth uplink is
//! better served by `xdp = "off"` (or `"generic"` for the prefilter).
//!
//! # Limits
//!
//! - Redirect errors after the program returned (the pod's veth peer
//!   without an XDP program, a frame larger than the pod's MTU) are not
//!   seen by the program: they show in `xdp:xdp_redirect_err` and in the
//!   veth's `xdp_xmit_err` statistics. `np_xdp_pod` on every pod's `eth0`
//!   (NAPI on the peer) is what makes the redirect deliver; pods get the
//!   uplink's MTU.
//! - The program is not multi-buffer aware: veth refuses it on a device
//!   whose MTU needs more than one page per frame (jumbo frames).
//! - A VLAN tag stripped by the NIC (`rx-vlan-offload`) is invisible to
//!   XDP; only tuples of tracked connections to a node address take the
//!   fast path, the same tuple on another VLAN would too.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
    btf_maps::lpm_trie::Key,
    helpers::bpf_redirect,
    programs::XdpContext,
};
use netpath_common::{
    CtEntry, CtKey, NodeSettings, RouteKey, Stat, ct_flags, ct_state, dnat_reply_key, original_of,
    reply_key,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack::{self, Segment},
    csum, endpoint,
    maps::{CONNTRACK, PREFILTER, REVNAT, SETTINGS},
    parse::{Flow, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
    router,
    stats::count,
};

/// What the fast path made of a packet.
enum Verdict {
    /// Not for the fast path: TC handles it.
    Pass,
    /// Translated and redirected to its pod, counted under this stat.
    Redirect(Stat),
    /// `bpf_redirect` refused the pod's interface (the packet is left
    /// untouched for TC).
    RedirectFailed,
}

/// The walk of `np_xdp_uplink` (see the module documentation).
#[inline(always)]
pub fn try_xdp_uplink(ctx: &XdpContext) -> u32 {
    let (start, end) = (ctx.data(), ctx.data_end());
    let len = (end - start) as u32;
    // Verifier: proves the Ethernet and fixed IPv4 headers are inside the
    // frame.
    if start + EthHdr::LEN + Ipv4Hdr::LEN > end {
        count(Stat::XdpPass, len);
        return XDP_PASS;
    }
    let eth = start as *const EthHdr;
    let ip = (start + EthHdr::LEN) as *const Ipv4Hdr;
    // SAFETY: both headers were bounds-checked just above.
    let (ether_type, saddr) = unsafe { ((*eth).ether_type, (*ip).src_addr) };
    if ether_type != EtherType::Ipv4 as u16 {
        count(Stat::XdpPass, len);
        return XDP_PASS;
    }
    if PREFILTER
        .get(&Key::new(32, RouteKey { addr: saddr }))
        .is_some()
    {
        count(Stat::DropXdpPrefilter, len);
        crate::events::xdp_drop(ctx, Stat::DropXdpPrefilter);
        return XDP_DROP;
    }
    match fast_path(ctx) {
        Verdict::Redirect(stat) => {
            count(stat, len);
            XDP_REDIRECT
        }
        Verdict::RedirectFailed => {
            count(Stat::XdpRedirectFailed, len);
            XDP_PASS
        }
        Verdict::Pass => {
            count(Stat::XdpPass, len);
            XDP_PASS
        }
    }
}

/// The headers and fields the fast path reads, after its checks.
struct Packet {
    eth: *mut EthHdr,
    ip: *mut Ipv4Hdr,
    /// The L4 header: the TCP header (20 bytes) or the UDP header (8)
    /// lies inside the frame.
    l4: usize,
    flow: Flow,
    seg: Segment,
    check: u16,
}

/// Parses and checks a fast path candidate (`None`: not one).
#[inline(always)]
fn candidate(ctx: &XdpContext) -> Option<Packet> {
    let (start, end) = (ctx.data(), ctx.data_end());
    // Verifier: the Ethernet and fixed IPv4 headers are inside the frame.
    if start + EthHdr::LEN + Ipv4Hdr::LEN > end {
        return None;
    }
    let eth = start as *mut EthHdr;
    let ip = (start + EthHdr::LEN) as *mut Ipv4Hdr;
    // SAFETY: bounds-checked just above.
    let (vihl, tot_len, frags, ttl, proto, saddr, daddr) = unsafe {
        (
            (*ip).vihl,
            usize::from(u16::from_be_bytes((*ip).tot_len)),
            u16::from_be_bytes((*ip).frags),
            (*ip).ttl,
            (*ip).proto,
            (*ip).src_addr,
            (*ip).dst_addr,
        )
    };
    let ihl = usize::from(vihl & 0x0f) * 4;
    // A fragment has no L4 header to match on (or its datagram's first
    // fragment needs recording): TC. An expiring TTL is TC's to drop.
    if vihl >> 4 != 4 || ihl < Ipv4Hdr::LEN || frags & 0x3fff != 0 || ttl <= 1 {
        return None;
    }
    if router::martian_source(saddr) {
        return None;
    }
    let l4_min = match proto {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ => return None,
    };
    let l4 = start + EthHdr::LEN + ihl;
    let mut seg = Segment::default();
    let (sport, dport, check) = if proto == IPPROTO_TCP {
        // Verifier: `ihl` is at most 60 (a 4-bit field × 4), so `l4` is a
        // bounded offset; this proves the 20-byte TCP header is inside the
        // frame.
        if l4 + 20 > end {
            return None;
        }
        // SAFETY: bounds-checked just above.
        let h = unsafe { *(l4 as *const [u8; 20]) };
        let flags = h[13];
        if flags & (TCP_SYN | TCP_FIN | TCP_RST) != 0 || flags & TCP_ACK == 0 {
            return None;
        }
        let doff = u32::from(h[12] >> 4) * 4;
        seg = Segment {
            flags,
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            win: u16::from_be_bytes([h[14], h[15]]),
            len: ((tot_len - ihl) as u32).saturating_sub(doff),
        };
        (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            u16::from_be_bytes([h[16], h[17]]),
        )
    } else {
        // Verifier: as above, for the 8-byte UDP header.
        if l4 + 8 > end {
            return None;
        }
        // SAFETY: bounds-checked just above.
        let h = unsafe { *(l4 as *const [u8; 8]) };
        (
            u16::from_be_bytes([h[0], h[1]]),
            u16::from_be_bytes([h[2], h[3]]),
            u16::from_be_bytes([h[6], h[7]]),
        )
    };
    // The packet holds what its header claims, and the L4 header lies
    // within the IP total length (no field read from Ethernet padding).
    // (Checked after the header bounds: LLVM would otherwise derive those
    // from this and drop them, and the verifier needs them.)
    if tot_len < ihl + l4_min || start + EthHdr::LEN + tot_len > end {
        return None;
    }
    // A partial checksum (see the module documentation) goes to TC. A UDP
    // checksum of 0 is "none", never partial.
    let l4_len = (tot_len - ihl) as u32;
    if !(proto == IPPROTO_UDP && check == 0)
        && check == pseudo_header_sum(saddr, daddr, proto, l4_len)
    {
        return None;
    }
    Some(Packet {
        eth,
        ip,
        l4,
        flow: Flow {
            saddr,
            daddr,
            proto,
            l4: EthHdr::LEN + ihl,
            sport,
            dport,
            tcp_flags: seg.flags,
            icmp_type: 0,
            fragment: false,
            later_fragment: false,
            id: 0,
            ttl,
            df: frags & 0x4000 != 0,
            tot_len,
        },
        seg,
        check,
    })
}

/// The folded (not complemented) TCP/UDP pseudo-header sum: what a
/// `CHECKSUM_PARTIAL` packet's checksum field holds.
#[inline(always)]
fn pseudo_header_sum(saddr: [u8; 4], daddr: [u8; 4], proto: u8, l4_len: u32) -> u16 {
    let words = |a: [u8; 4]| {
        u32::from(u16::from_be_bytes([a[0], a[1]])) + u32::from(u16::from_be_bytes([a[2], a[3]]))
    };
    csum::fold(words(saddr) + words(daddr) + u32::from(proto) + l4_len)
}

/// The translation a candidate gets: its connection, the new destination
/// and the direction.
struct Translation {
    ct: *mut CtEntry,
    to: ([u8; 4], u16),
    reply: bool,
    stat: Stat,
}

/// Finds the connection of `f` as the fast path takes it (see the module
/// documentation), with the pairing of its two entries checked as TC
/// checks it; `None` leaves the packet to TC.
#[inline(always)]
fn translation(f: &Flow) -> Option<Translation> {
    let key = CtKey {
        saddr: f.saddr,
        daddr: f.daddr,
        sport: f.sport,
        dport: f.dport,
        proto: f.proto,
        _pad: [0; 3],
    };
    // SAFETY: the value is copied out at once.
    if let Some(rev) = unsafe { REVNAT.get(&key) }.copied() {
        // A masqueraded connection's reply. The node's own connections go
        // to its stack, and a DNAT reverse entry here would be a remote
        // backend's reply (not a local pod's: TC's).
        if rev.flags & (ct_flags::NODE | ct_flags::DNAT) != 0 {
            return None;
        }
        let orig = original_of(&key, &rev);
        let ct = CONNTRACK.get_ptr_mut(&orig)?;
        // SAFETY: fields copied out of the map value.
        let (nat_addr, nat_port, flags) = unsafe { ((*ct).nat_addr, (*ct).nat_port, (*ct).flags) };
        if reply_key(&orig, nat_addr, nat_port) != key
            || flags & (ct_flags::NODE | ct_flags::DNAT) != 0
        {
            // Stale reverse entry: TC removes it.
            return None;
        }
        return Some(Translation {
            ct,
            to: (rev.addr, rev.port),
            reply: true,
            stat: Stat::XdpFwdRevSnat,
        });
    }
    // A client's packet to a frontend, by its original tuple.
    let ct = CONNTRACK.get_ptr_mut(&key)?;
    // SAFETY: fields copied out of the map value.
    let (nat_addr, nat_port, flags) = unsafe { ((*ct).nat_addr, (*ct).nat_port, (*ct).flags) };
    if flags & (ct_flags::DNAT | ct_flags::HAIRPIN | ct_flags::NODE) != ct_flags::DNAT {
        return None;
    }
    // I1 from the original side: the reverse entry must exist and lead
    // back here; TC repairs it otherwise.
    let rkey = dnat_reply_key(&key, nat_addr, nat_port, None);
    // SAFETY: the value is copied out at once.
    match unsafe { REVNAT.get(&rkey) }.copied() {
        Some(r) if r.flags & ct_flags::DNAT != 0 && r.leads_back(&key) => {}
        _ => return None,
    }
    Some(Translation {
        ct,
        to: (nat_addr, nat_port),
        reply: false,
        stat: Stat::XdpFwdDnat,
    })
}

/// Parses, looks up, rewrites and redirects (see the module
/// documentation).
#[inline(always)]
fn fast_path(ctx: &XdpContext) -> Verdict {
    let Some(pkt) = candidate(ctx) else {
        return Verdict::Pass;
    };
    let f = &pkt.flow;
    let Some(t) = translation(f) else {
        return Verdict::Pass;
    };
    let settings = SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT);
    let now = conntrack::now();
    // SAFETY: fields copied out of the map value.
    let (expired, state) = unsafe { (settings.ct_expired(&*t.ct, now), (*t.ct).state) };
    if expired || (f.proto == IPPROTO_TCP && state != ct_state::TCP_ESTABLISHED) {
        return Verdict::Pass;
    }
    let Some(ep) = endpoint::lookup(t.to.0) else {
        return Verdict::Pass;
    };
    // The redirect is requested before anything is written: it only fails
    // on arguments, and a refusal leaves the packet as it came for TC.
    // SAFETY: helper call with plain integer arguments.
    if unsafe { bpf_redirect(ep.ifindex, 0) } != i64::from(XDP_REDIRECT) {
        return Verdict::RedirectFailed;
    }
    if !rewrite(ctx, &pkt, t.to, &ep) {
        return Verdict::Pass;
    }
    // SAFETY: in-place update of a map value, as TC's paths do (see
    // `conntrack.rs` on lock-free updates).
    unsafe { conntrack::update(&mut *t.ct, f, &pkt.seg, t.reply, now) };
    crate::pod_stats::rx(ep.ifindex, (ctx.data_end() - ctx.data()) as u32);
    Verdict::Redirect(t.stat)
}

/// Writes the new destination `to` into the packet: TTL − 1, the address
/// and the IPv4 checksum; the port and the L4 checksum (a UDP checksum of
/// 0, "none", stays 0; a computed 0 is sent as `0xffff`); the pod's MACs.
/// `false` (nothing written) only if the verifier's bounds re-check fails,
/// which `candidate` already proved cannot happen.
#[inline(always)]
fn rewrite(
    ctx: &XdpContext,
    pkt: &Packet,
    to: ([u8; 4], u16),
    ep: &netpath_common::Endpoint,
) -> bool {
    let f = &pkt.flow;
    let end = ctx.data_end();
    let (old, new) = (f.daddr, to.0);
    let hi = |a: [u8; 4]| u16::from_be_bytes([a[0], a[1]]);
    let lo = |a: [u8; 4]| u16::from_be_bytes([a[2], a[3]]);
    // SAFETY: `candidate` bounds-checked the headers behind these pointers,
    // and no helper that moves packet data has run since.
    unsafe {
        let mut l4 = pkt.check;
        if !(f.proto == IPPROTO_UDP && l4 == 0) {
            l4 = csum::replace16(l4, hi(old), hi(new));
            l4 = csum::replace16(l4, lo(old), lo(new));
            l4 = csum::replace16(l4, f.dport, to.1);
            if l4 == 0 && f.proto == IPPROTO_UDP {
                l4 = 0xffff;
            }
        }
        let (c, port) = (l4.to_be_bytes(), to.1.to_be_bytes());
        if f.proto == IPPROTO_TCP {
            // Verifier: repeats `candidate`'s proof of the TCP header.
            if pkt.l4 + 20 > end {
                return false;
            }
            let h = pkt.l4 as *mut [u8; 20];
            (*h)[2] = port[0];
            (*h)[3] = port[1];
            (*h)[16] = c[0];
            (*h)[17] = c[1];
        } else {
            // Verifier: repeats `candidate`'s proof of the UDP header.
            if pkt.l4 + 8 > end {
                return false;
            }
            let h = pkt.l4 as *mut [u8; 8];
            (*h)[2] = port[0];
            (*h)[3] = port[1];
            (*h)[6] = c[0];
            (*h)[7] = c[1];
        }
        let ip = pkt.ip;
        let proto = u16::from(f.proto);
        let mut check = u16::from_be_bytes((*ip).check);
        // TTL shares a 16-bit word with the protocol byte.
        check = csum::replace16(
            check,
            (u16::from(f.ttl) << 8) | proto,
            (u16::from(f.ttl - 1) << 8) | proto,
        );
        check = csum::replace16(check, hi(old), hi(new));
        check = csum::replace16(check, lo(old), lo(new));
        (*ip).ttl = f.ttl - 1;
        (*ip).dst_addr = new;
        (*ip).check = check.to_be_bytes();

        (*pkt.eth).dst_addr = ep.pod_mac;
        (*pkt.eth).src_addr = ep.gw_mac;
    }
    true
}
