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
//! 4. No SNAT reply: DNAT ([`crate::dnat`], its own subprogram): a packet
//!    to a frontend (a node port-forward, or a service VIP the LAN routes
//!    through the node) goes to its backend, a local pod (as in 3, counted
//!    `fwd_dnat`; a backend elsewhere is `drop_dnat_remote_backend`), and
//!    ICMP errors toward a frontend about a backend's reply reach the
//!    backend; a frontend without backends is refused back out of the
//!    uplink ([`crate::reject`]).
//! 5. Untranslated, to a local pod's own address, from a source the pod
//!    reaches over a declared route without masquerade that leaves through
//!    the interface the packet came in on ([`routed_back`]): delivered as
//!    in 3, counted `fwd_local_pod`. Anything else: the node's stack.

use aya_ebpf::{bindings::TC_ACT_OK, btf_maps::lpm_trie::Key, programs::TcContext};
use netpath_common::{MasqKey, RouteKey, Stat, frag_dir};
use network_types::eth::EthHdr;

use crate::{
    dnat, endpoint, frag, icmp, l3,
    maps::{MASQ, ROUTES},
    nat,
    parse::{self, ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Parsed},
    peer, reject, router,
    stats::count,
};

/// [`snat_subprog`]'s code for a packet no SNAT reply matched (its flow is
/// stashed for DNAT: `dnat::stash_flow`), and for a drop.
const UNTRANSLATED: i32 = -100;
const WALK_DROP: i32 = -101;
/// [`snat_subprog`]'s code for a TCP/UDP reply translated back to its pod
/// (the pod in `dnat::target`, the translated flow stashed): it may be a
/// service backend's reply to that pod, translated back by DNAT next.
const REVERSED: i32 = -102;

/// The walk, in two BPF subprograms run one after the other: steps 1-3
/// ([`snat_subprog`]) and DNAT ([`dnat::from_uplink_subprog`]); each has
/// its own stack frame, which together would not fit the 512-byte BPF
/// stack.
#[inline(always)]
pub fn try_from_uplink(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    let mut stat = Stat::DropRewriteFailed;
    match snat_subprog(ctx, &mut stat) {
        WALK_DROP => return Err(stat),
        UNTRANSLATED => {}
        REVERSED => {
            // A backend off the node answering a pod's connection to a
            // service reaches the node masqueraded: its source becomes the
            // frontend again.
            let verdict = match dnat::reverse_subprog(ctx, &mut stat) {
                dnat::DROP => return Err(stat),
                dnat::REVERSE => Stat::FwdRevDnat,
                _ => Stat::FwdRevNat,
            };
            let pod = dnat::target()?;
            let Some(ep) = endpoint::lookup(pod) else {
                return Err(Stat::DropRevNatNoPod);
            };
            let ret = l3::deliver_to_pod(ctx, &ep, Some(pod))?;
            count(verdict, len);
            return Ok(ret);
        }
        action => return Ok(action),
    }
    match dnat::from_uplink_subprog(ctx, &mut stat) {
        dnat::DROP => return Err(stat),
        dnat::REJECT => {
            return match reject::send_subprog(ctx, false, &mut stat) {
                -1 => Err(stat),
                action => Ok(action),
            };
        }
        dnat::FORWARD => {
            let ep = endpoint::lookup(dnat::target()?).ok_or(Stat::DropDnatRemoteBackend)?;
            // The destination is rewritten already; TTL and MACs.
            let ret = l3::deliver_to_pod(ctx, &ep, None)?;
            count(Stat::FwdDnat, len);
            return Ok(ret);
        }
        _ => {}
    }
    // No translation: a packet routed to a pod's own address over a
    // declared route without masquerade (whose far side routes the pod
    // CIDR back through the node) goes to the pod as a router forwards
    // it, its later fragments with it (they carry the same destination).
    // Anything else is the node's: behind a masquerade rule only
    // translated replies reach a pod. (The packet is untouched: its
    // addresses are read from it.)
    let addrs: [u8; 8] = ctx
        .load(EthHdr::LEN + 12)
        .map_err(|_| Stat::DropTruncated)?;
    let saddr = [addrs[0], addrs[1], addrs[2], addrs[3]];
    let daddr = [addrs[4], addrs[5], addrs[6], addrs[7]];
    // Several nodes, direct routing: a peer's pod to a local pod
    // (crate::peer; the flow is stashed for DNAT already).
    if let Some(res) = peer::deliver_from_peer(ctx, saddr, daddr, None) {
        return res;
    }
    if routed_back(ctx, saddr, daddr)
        && let Some(ep) = endpoint::lookup(daddr)
    {
        let ret = l3::deliver_to_pod(ctx, &ep, None)?;
        count(Stat::FwdLocalPod, len);
        return Ok(ret);
    }
    count(Stat::PassUplink, len);
    Ok(TC_ACT_OK as i32)
}

#[inline(never)]
fn snat_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    match snat_walk(ctx) {
        Ok(action) => action,
        Err(s) => {
            *stat = s;
            WALK_DROP
        }
    }
}

/// Steps 1 to 3: the TC action, or [`UNTRANSLATED`].
#[inline(always)]
fn snat_walk(ctx: &TcContext) -> Result<i32, Stat> {
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
        dnat::stash_flow(&f)?;
        return Ok(UNTRANSLATED);
    };
    if !f.later_fragment && (f.proto == IPPROTO_TCP || f.proto == IPPROTO_UDP) {
        // The flow as translated so far (the destination address is
        // written on delivery; the port is in the packet already).
        let port: [u8; 2] = ctx.load(f.l4 + 2).map_err(|_| Stat::DropTruncated)?;
        let mut to_pod = f;
        to_pod.daddr = pod;
        to_pod.dport = u16::from_be_bytes(port);
        dnat::stash_flow(&to_pod)?;
        dnat::set_target(pod)?;
        return Ok(REVERSED);
    }
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
