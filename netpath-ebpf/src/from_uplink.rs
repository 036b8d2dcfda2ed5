//! The walk of `np_from_uplink`, TC ingress on an uplink: replies to
//! translated connections (and ICMP errors about them) go back to their
//! pods; everything else is the node's own traffic and passes to its stack.
//!
//! 1. A frame with an offloaded VLAN tag belongs to a VLAN device of the
//!    node, not to the uplink's network: handed to the stack untouched
//!    (`pass_uplink_vlan`). Anything but IPv4 passes too.
//! 2. A packet from a martian source ([`crate::router::martian_source`])
//!    is no reply: it passes to the stack untranslated (`pass_uplink`).
//!    Reverse NAT ([`crate::nat::rev_snat`]) of TCP, UDP and ICMP echo
//!    replies, or of the packet an ICMP error quotes
//!    ([`crate::icmp::rev_snat_error`]: port unreachable, fragmentation
//!    needed with its MTU, time exceeded). A translated first fragment's
//!    pod is recorded, and the later fragments of its datagram follow it
//!    ([`crate::frag`]); a later fragment without a record is the node's
//!    (its stack reassembles or drops it).
//! 3. The pod: TTL − 1 (an expired one is a counted drop), MACs,
//!    `bpf_redirect_peer` ([`crate::l3::deliver_to_pod`]).
//! 4. Untranslated, to a local pod's own address, from a source the pod
//!    reaches over a declared route without masquerade that leaves through
//!    the interface the packet came in on ([`routed_back`]): delivered as
//!    in 3, counted `fwd_local_pod`. Anything else: the node's stack.

use aya_ebpf::{bindings::TC_ACT_OK, btf_maps::lpm_trie::Key, programs::TcContext};
use netpath_common::{MasqKey, RouteKey, Stat, frag_dir};

use crate::{
    endpoint, frag, icmp, l3,
    maps::{MASQ, ROUTES},
    nat,
    parse::{self, ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Parsed},
    router,
    stats::count,
};

#[inline(always)]
pub fn try_from_uplink(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    if parse::vlan_tagged(ctx) {
        count(Stat::PassUplinkVlan, len);
        return Ok(TC_ACT_OK as i32);
    }
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Arp | Parsed::Ipv6 | Parsed::Other => {
            count(Stat::PassUplink, len);
            return Ok(TC_ACT_OK as i32);
        }
    };
    let f = parse::flow(ctx, &pkt)?;
    if router::martian_source(f.saddr) {
        count(Stat::PassUplink, len);
        return Ok(TC_ACT_OK as i32);
    }
    let pod = if f.later_fragment {
        let pod = frag::follow(&f, frag_dir::FROM_UPLINK);
        if pod.is_some() {
            count(Stat::FragFollowed, len);
        }
        pod
    } else {
        let pod = match f.proto {
            IPPROTO_TCP | IPPROTO_UDP => nat::rev_snat(ctx, &f)?,
            IPPROTO_ICMP if f.icmp_type == ICMP_ECHO_REPLY => nat::rev_snat(ctx, &f)?,
            IPPROTO_ICMP if icmp::is_error(&f) => icmp::rev_snat_error(ctx, &f)?,
            _ => None,
        };
        if let Some(pod) = pod
            && frag::is_first(&f)
        {
            frag::record(&f, frag_dir::FROM_UPLINK, pod, len)?;
        }
        pod
    };
    let Some(pod) = pod else {
        // No translation: a packet routed to a pod's own address over a
        // declared route without masquerade (whose far side routes the pod
        // CIDR back through the node) goes to the pod as a router forwards
        // it, its later fragments with it (they carry the same
        // destination). Anything else is the node's: behind a masquerade
        // rule only translated replies reach a pod.
        if routed_back(ctx, f.saddr, f.daddr)
            && let Some(ep) = endpoint::lookup(f.daddr)
        {
            let ret = l3::deliver_to_pod(ctx, &ep, None)?;
            count(Stat::FwdLocalPod, len);
            return Ok(ret);
        }
        count(Stat::PassUplink, len);
        return Ok(TC_ACT_OK as i32);
    };
    let Some(ep) = endpoint::lookup(pod) else {
        return Err(Stat::DropRevNatNoPod);
    };
    let ret = l3::deliver_to_pod(ctx, &ep, Some(pod))?;
    count(Stat::FwdRevNat, len);
    Ok(ret)
}

/// Whether an untranslated packet from `saddr` to pod address `pod` is
/// routed traffic of that pod: the route map sends the pod's packets to
/// `saddr` out of the interface this one came in on (a reverse-path check,
/// as `rp_filter` does), and no masquerade rule translates the pod there
/// (behind one, a reply is always translated; an untranslated packet is
/// none, and must not reach the pod).
#[inline(always)]
fn routed_back(ctx: &TcContext, saddr: [u8; 4], pod: [u8; 4]) -> bool {
    let Some(route) = ROUTES.get(&Key::new(32, RouteKey { addr: saddr })).copied() else {
        return false;
    };
    if route.ifindex == 0 || route.ifindex != parse::ingress_ifindex(ctx) {
        return false;
    }
    let key = Key::new(MasqKey::IFINDEX_BITS + 32, MasqKey::new(route.ifindex, pod));
    MASQ.get(&key).is_none()
}
