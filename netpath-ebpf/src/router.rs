//! The node as its pods' router: what Linux's `ip_forward` checks before it
//! forwards, in the same order — the TTL, then the egress MTU — answered
//! with ICMP errors from the gateway ([`crate::icmp_reply`]). Both run
//! before any connection or NAT state is made, so a packet that is not
//! forwarded leaves nothing behind.
//!
//! - TTL: a packet to forward (to another pod or out of the node) with
//!   TTL ≤ 1 gets a time exceeded (type 11, code 0): `traceroute` from a
//!   pod shows the gateway as its first hop. Packets to the node itself are
//!   not forwarded and not checked.
//! - MTU: `bpf_check_mtu` against the egress device (the routed path
//!   rewrites addresses and ports only, so the length it checks is the
//!   length that leaves). With `BPF_MTU_CHK_SEGS`, a GSO packet is checked
//!   by its segments (`skb_gso_validate_network_len`), as `ip_forward`
//!   does: a GSO packet fits when each segment does. A packet that does not
//!   fit, with DF set, gets a fragmentation needed (type 3, code 4) with
//!   the egress MTU in the next-hop MTU field (RFC 1191). Without DF, it is
//!   a counted drop (`drop_too_big_no_df`): netpath does not fragment, and
//!   neither would the redirect — `bpf_redirect` into a veth hands the
//!   packet to its peer, which drops what exceeds its MTU
//!   (`is_skb_forwardable`), and `bpf_redirect_neigh` transmits without
//!   `ip_fragment`. The pods' MTU derived from the uplink's keeps this
//!   path cold.
//!
//! - Martian addresses (RFC 1812 5.3.7, Linux's `ip_route_input` martian
//!   checks): a pod's packet to 0.0.0.0/8, 127.0.0.0/8 or 240.0.0.0/4 is
//!   a counted drop (`drop_martian`), before any lookup or state; one to
//!   the limited broadcast or a multicast group is link-local and goes to
//!   the node's stack (`pass_to_host`: the node answers what it serves or
//!   joined, and with forwarding off on the pods' veths its stack forwards
//!   neither). Neither is ever routed or masqueraded. Martian sources
//!   (0.0.0.0, anything not the pod's) never pass source verification
//!   (`crate::source`). On an uplink, a packet from a martian source is no
//!   reply to any connection: it goes to the node's stack untranslated
//!   (its own martian checks drop it), never to a pod.
//!
//! With no gateway address configured (`NodeSettings::gateway` 0.0.0.0),
//! and for packets no ICMP error may answer, both are counted drops
//! (`drop_ttl_exceeded`, `drop_too_big`).

use aya_ebpf::{
    bindings::{
        bpf_check_mtu_flags::BPF_MTU_CHK_SEGS,
        bpf_check_mtu_ret::{BPF_MTU_CHK_RET_FRAG_NEEDED, BPF_MTU_CHK_RET_SEGS_TOOBIG},
    },
    helpers::bpf_check_mtu,
    programs::TcContext,
};
use netpath_common::{Endpoint, NodeSettings, Stat};

use crate::{
    icmp_reply,
    parse::{Flow, ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED},
    stats::count,
};

/// What a pod's packet to `daddr` is, as a router sees the address.
pub enum Destination {
    /// Routable: a pod, the node or the route.
    Unicast,
    /// Limited broadcast or multicast: for the node's stack only.
    LinkLocal,
    /// 0.0.0.0/8, 127.0.0.0/8, 240.0.0.0/4 but 255.255.255.255: never
    /// forwarded.
    Martian,
}

/// Classifies a pod's destination address.
#[inline(always)]
pub fn destination(daddr: [u8; 4]) -> Destination {
    match daddr[0] {
        _ if daddr == [255; 4] => Destination::LinkLocal,
        224..=239 => Destination::LinkLocal,
        0 | 127 | 240..=255 => Destination::Martian,
        _ => Destination::Unicast,
    }
}

/// Whether `saddr` can be no reply's source (0.0.0.0/8, 127.0.0.0/8,
/// multicast, 240.0.0.0/4 and the limited broadcast).
#[inline(always)]
pub fn martian_source(saddr: [u8; 4]) -> bool {
    matches!(saddr[0], 0 | 127 | 224..=255)
}

/// ICMP destination unreachable code "fragmentation needed and DF set".
const ICMP_FRAG_NEEDED: u8 = 4;

/// Answers a packet whose TTL expired (`f.ttl <= 1`) with a time exceeded
/// from the gateway, or drops it.
#[inline(always)]
pub fn ttl_expired(f: &Flow, src: &Endpoint, settings: &NodeSettings) -> Result<i32, Stat> {
    if settings.gateway == [0; 4] || !icmp_reply::may_answer(f) {
        return Err(Stat::DropTtlExceeded);
    }
    let answer = icmp_reply::Answer {
        gateway: settings.gateway,
        ty: ICMP_TIME_EXCEEDED,
        code: 0,
        rest: [0; 4],
    };
    icmp_reply::defer(f, src, answer, Stat::ReplyTimeExceeded)
}

/// Checks `f` against the MTU of `egress`: `None` when it fits (or cannot
/// be checked), the verdict of the answer when a fragmentation needed was
/// sent, `Err` when it is dropped.
#[inline(always)]
pub fn check_mtu(
    ctx: &TcContext,
    f: &Flow,
    src: &Endpoint,
    settings: &NodeSettings,
    egress: u32,
) -> Result<Option<i32>, Stat> {
    let len = ctx.len();
    // In: 0 (check the skb's own length, required with BPF_MTU_CHK_SEGS);
    // out: the egress device's MTU.
    let mut mtu: u32 = 0;
    // SAFETY: `mtu` is a valid u32 on the stack; the other arguments are
    // integers and the context's skb.
    let ret = unsafe {
        bpf_check_mtu(
            ctx.skb.skb.cast(),
            egress,
            &raw mut mtu,
            0,
            u64::from(BPF_MTU_CHK_SEGS),
        )
    };
    if ret < 0 {
        // The egress device is gone (-ENODEV): the redirect fails anyway.
        count(Stat::MtuUnchecked, len);
        return Ok(None);
    }
    let ret = ret as u32;
    if ret != BPF_MTU_CHK_RET_FRAG_NEEDED && ret != BPF_MTU_CHK_RET_SEGS_TOOBIG {
        return Ok(None);
    }
    if !f.df {
        return Err(Stat::DropTooBigNoDf);
    }
    if settings.gateway == [0; 4] || !icmp_reply::may_answer(f) {
        return Err(Stat::DropTooBig);
    }
    // RFC 1191: unused (16 bits), next-hop MTU (16 bits).
    let m = (mtu.min(0xffff) as u16).to_be_bytes();
    let answer = icmp_reply::Answer {
        gateway: settings.gateway,
        ty: ICMP_DEST_UNREACH,
        code: ICMP_FRAG_NEEDED,
        rest: [0, 0, m[0], m[1]],
    };
    icmp_reply::defer(f, src, answer, Stat::ReplyFragNeeded).map(Some)
}
