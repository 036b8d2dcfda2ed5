//! The walk of `np_from_pod`, TC ingress on a pod's host-side veth: every
//! frame a pod sends.
//!
//! 1. Not ours to carry: an offloaded VLAN tag (`drop_pod_vlan`), IPv6
//!    (`drop_pod_ipv6`), any ethertype but IPv4 and ARP
//!    (`drop_pod_ethertype`). Headers are parsed ([`crate::parse`]:
//!    truncated or malformed ones are counted drops).
//! 2. Source verification ([`crate::source`]): the source address must be
//!    the pod's behind this veth, the source MAC its MAC; ARP is verified
//!    the same way and then handed to the node's stack. Then the
//!    destination as a router sees it ([`crate::router::destination`]): a
//!    martian one is a counted drop (`drop_martian`), the limited broadcast
//!    and multicast go to the node's stack; neither is routed or
//!    masqueraded.
//! 3. A local pod as destination: TTL ([`crate::router`]: time exceeded
//!    from the gateway when it expires), then delivery
//!    ([`crate::endpoint`]). Fragments need no state here.
//! 4. Otherwise the route ([`crate::fib`]): the node itself (or nobody
//!    knows) → the node's stack; unreachable → counted drop.
//! 5. Routed: TTL, then the egress MTU ([`crate::router`]: time exceeded or
//!    fragmentation needed from the gateway), both before any state.
//! 6. A masquerade rule for the source and egress device: SNAT
//!    ([`crate::nat`]). Every check that drops a packet (source, martian,
//!    TTL, MTU, and the parser's: a TCP/UDP/ICMP header shorter than its
//!    minimum within the IP total length is `drop_l4_truncated`) runs
//!    before it, so a dropped packet makes no connection and claims no NAT
//!    port; what can still fail after it is a rewrite helper or the
//!    fragment map insert, neither of which fails on a packet the parser
//!    accepted; a first fragment's translation is recorded and the
//!    later fragments of its datagram get the same source address
//!    ([`crate::frag`]).
//! 7. TTL − 1, addresses and MACs ([`crate::l3`]), redirect out of the
//!    egress device (`bpf_redirect` with the FIB's MACs, else
//!    `bpf_redirect_neigh`).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use netpath_common::{MasqKey, NodeSettings, Stat, frag_dir};

use crate::{
    endpoint,
    fib::{self, NextHop},
    frag,
    l3::{self, Headers},
    maps::{MASQ, SETTINGS},
    nat,
    parse::{self, Parsed},
    router::{self, Destination},
    source,
    stats::count,
};

const AF_INET: u32 = 2;

#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    if parse::vlan_tagged(ctx) {
        return Err(Stat::DropPodVlan);
    }
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Arp => {
            source::verify_arp(ctx)?;
            count(Stat::PassNotIpv4, len);
            return Ok(TC_ACT_OK as i32);
        }
        Parsed::Ipv6 => return Err(Stat::DropPodIpv6),
        Parsed::Other => return Err(Stat::DropPodEthertype),
    };
    // SAFETY: bounds-checked by the parser; no helper has moved packet data.
    let (saddr, dst, ttl, smac) = unsafe {
        (
            (*pkt.ip).src_addr,
            (*pkt.ip).dst_addr,
            (*pkt.ip).ttl,
            (*pkt.eth).src_addr,
        )
    };
    let src = source::verify_ipv4(ctx, saddr, smac)?;
    match router::destination(dst) {
        Destination::Unicast => {}
        Destination::LinkLocal => {
            count(Stat::PassToHost, len);
            return Ok(TC_ACT_OK as i32);
        }
        Destination::Martian => return Err(Stat::DropMartian),
    }

    if let Some(ep) = endpoint::lookup(dst) {
        if ttl <= 1 {
            let f = parse::flow(ctx, &pkt)?;
            return router::ttl_expired(ctx, &f, &src, &settings());
        }
        return endpoint::deliver(ctx, &pkt, &ep);
    }

    let f = parse::flow(ctx, &pkt)?;
    let settings = settings();
    let hop = fib::lookup(ctx, &f, &settings);
    let (egress, neigh, macs) = match hop {
        NextHop::Local => {
            count(Stat::PassFibLocal, len);
            return Ok(TC_ACT_OK as i32);
        }
        NextHop::Host => {
            count(Stat::PassToHost, len);
            return Ok(TC_ACT_OK as i32);
        }
        NextHop::Unreachable => return Err(Stat::DropFibUnreachable),
        NextHop::Neigh { ifindex, via } => (ifindex, Some(via), None),
        NextHop::Direct {
            ifindex,
            smac,
            dmac,
        } => (ifindex, None, Some((smac, dmac))),
    };

    // As ip_forward: TTL, then MTU, before any state is made.
    if f.ttl <= 1 {
        return router::ttl_expired(ctx, &f, &src, &settings);
    }
    if let Some(answered) = router::check_mtu(ctx, &f, &src, &settings, egress)? {
        return Ok(answered);
    }

    // A masquerade rule for this egress interface and source?
    let key = Key::new(MasqKey::IFINDEX_BITS + 32, MasqKey::new(egress, f.saddr));
    let mut headers = Headers {
        macs: macs.map(|(smac, dmac)| (dmac, smac)),
        ..Headers::default()
    };
    if let Some(rule) = MASQ.get(&key).copied() {
        let nat_addr = if f.later_fragment {
            let addr = frag::follow(&f, frag_dir::FROM_POD).ok_or(Stat::DropFragNoFirst)?;
            count(Stat::FragFollowed, len);
            addr
        } else {
            let addr = nat::snat(ctx, &f, &rule, &settings)?;
            if frag::is_first(&f) {
                frag::record(&f, frag_dir::FROM_POD, addr, len)?;
            }
            addr
        };
        headers.saddr = Some(nat_addr);
    }
    l3::rewrite_headers(ctx, &headers)?;

    let ret = if macs.is_some() {
        // SAFETY: helper call with plain integer arguments.
        unsafe { bpf_redirect(egress, 0) }
    } else {
        count(Stat::RouteNeighResolve, len);
        let mut nh = bpf_redir_neigh {
            nh_family: AF_INET,
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                ipv4_nh: u32::from_ne_bytes(neigh.unwrap_or(f.daddr)),
            },
        };
        // SAFETY: `nh` is a valid bpf_redir_neigh on the stack and its size
        // is passed.
        unsafe {
            bpf_redirect_neigh(
                egress,
                &raw mut nh,
                core::mem::size_of::<bpf_redir_neigh>() as i32,
                0,
            )
        }
    };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    count(Stat::FwdRouted, len);
    Ok(TC_ACT_REDIRECT as i32)
}

/// The node settings (slot 0), or the defaults before userspace wrote them.
#[inline(always)]
fn settings() -> NodeSettings {
    SETTINGS.get(0).copied().unwrap_or(NodeSettings::DEFAULT)
}
