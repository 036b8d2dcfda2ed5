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
//! 3. DNAT ([`crate::dnat`]): a backend pod's reply gets its frontend back
//!    as source (a hairpin's, the client as destination), a packet to a
//!    frontend (a service VIP or a node port-forward) its backend as
//!    destination (a hairpin's, the gateway as source); a frontend without
//!    backends is refused ([`crate::reject`]). It runs first, from the
//!    entry point, in its own subprogram (the stack), and checks step 2
//!    itself before it translates anything (a packet that fails it is left
//!    to the head, which drops it); the head does not verify a translated
//!    packet's source again (it may be the frontend or the gateway). The
//!    walk goes on with the translated packet, and counts `fwd_dnat` /
//!    `fwd_revdnat` as its verdict where it would have counted
//!    `fwd_local_pod` / `fwd_routed`.
//! 4. A local pod as destination: TTL ([`crate::router`]: time exceeded
//!    from the gateway when it expires), then delivery
//!    ([`crate::endpoint`]). Fragments need no state here.
//! 5. Otherwise the route ([`crate::fib`]): the node itself (or nobody
//!    knows) → the node's stack; unreachable → counted drop.
//! 6. Routed: TTL, then the egress MTU ([`crate::router`]: time exceeded or
//!    fragmentation needed from the gateway), both before any state.
//! 7. A masquerade rule for the source and egress device: SNAT
//!    ([`crate::nat`]). Every check that drops a packet (source, martian,
//!    TTL, MTU, and the parser's: a TCP/UDP/ICMP header shorter than its
//!    minimum within the IP total length is `drop_l4_truncated`) runs
//!    before it, so a dropped packet makes no connection and claims no NAT
//!    port; what can still fail after it is a rewrite helper or the
//!    fragment map insert, neither of which fails on a packet the parser
//!    accepted; a first fragment's translation is recorded and the
//!    later fragments of its datagram get the same source address
//!    ([`crate::frag`]).
//! 8. TTL − 1, addresses and MACs ([`crate::l3`]), redirect out of the
//!    egress device (`bpf_redirect` with the FIB's MACs, else
//!    `bpf_redirect_neigh`).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use netpath_common::{MasqKey, NodeSettings, Stat, frag_dir, peer::peer_flags};

use crate::{
    dnat, endpoint,
    fib::{self, NextHop},
    frag, icmp_reply,
    l3::{self, Headers},
    maps::{MASQ, SETTINGS},
    nat,
    parse::{self, Flow, Parsed},
    peer, reject,
    router::{self, Destination},
    source,
    stats::count,
    tunnel,
};

const AF_INET: u32 = 2;

/// Action codes of [`head_subprog`] that are not TC actions.
const HEAD_DROP: i32 = -100;
const HEAD_ROUTED: i32 = -101;
/// [`Routed::dnat`]: no DNAT, a packet translated toward its backend, a
/// reply translated back toward its client.
const ROUTED_PLAIN: u8 = 0;
const ROUTED_DNAT: u8 = 1;
const ROUTED_REVDNAT: u8 = 2;
/// [`Routed::peer`]: what the peer map said of the destination
/// ([`crate::peer`]): outside the cluster (masquerade rules apply), inside
/// it (never masqueraded), a peer's pod routed to its node (direct
/// routing), a peer's pod through the VXLAN device.
const PEER_OUTSIDE: u8 = 0;
const PEER_CLUSTER: u8 = 1;
const PEER_DIRECT: u8 = 2;
const PEER_VXLAN: u8 = 3;

/// What the first half of the walk decided for a routed packet, handed to
/// the second half through the per-CPU [`WALK`] slot. Plain fields (no
/// `Option`): the slot is a BPF map value described by BTF.
#[derive(Clone, Copy)]
pub struct Routed {
    pub f: Flow,
    pub egress: u32,
    /// The next hop for `bpf_redirect_neigh` (when `has_macs` is 0).
    pub neigh: [u8; 4],
    /// The FIB's MACs (source = the egress device's, destination = the
    /// next hop's), valid when `has_macs` is 1.
    pub smac: [u8; 6],
    pub dmac: [u8; 6],
    pub has_macs: u8,
    /// How DNAT translated the packet ([`ROUTED_PLAIN`], [`ROUTED_DNAT`],
    /// [`ROUTED_REVDNAT`]): the verdict the tail counts.
    pub dnat: u8,
    /// [`PEER_OUTSIDE`], [`PEER_CLUSTER`], [`PEER_DIRECT`] or
    /// [`PEER_VXLAN`] (then `neigh` is the tunnel's remote end).
    pub peer: u8,
    /// The VNI, with [`PEER_VXLAN`].
    pub vni: u32,
}

/// The walk, in two BPF subprograms run one after the other: [`head`]
/// (parse, verify, route, TTL/MTU) and [`tail`] (masquerade, rewrite,
/// redirect). Each has its own stack frame, so the NAT path's calls
/// (`nat::snat` and its port tries) stack on the tail's small frame, not
/// on the head's: together they must fit the 512-byte BPF stack.
#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<i32, Stat> {
    let mut stat = Stat::DropRewriteFailed;
    // DNAT first, in its own subprogram (it verifies the source itself:
    // the translated packet may carry the frontend or the gateway as its
    // source, which the head then does not verify again).
    match dnat::from_pod_subprog(ctx, &mut stat) {
        dnat::DROP => return Err(stat),
        dnat::REJECT => {
            return match reject::send_subprog(ctx, true, &mut stat) {
                -1 => Err(stat),
                action => Ok(action),
            };
        }
        _ => {}
    }
    match head_subprog(ctx, &mut stat) {
        HEAD_DROP => Err(stat),
        icmp_reply::ANSWER_PENDING => match icmp_reply::send_pending(ctx, &mut stat) {
            -1 => Err(stat),
            action => Ok(action),
        },
        HEAD_ROUTED => match tail_subprog(ctx, &mut stat) {
            HEAD_DROP => Err(stat),
            action => Ok(action),
        },
        action => Ok(action),
    }
}

#[inline(never)]
fn head_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    match head(ctx) {
        Ok(Some(action)) => action,
        Ok(None) => HEAD_ROUTED,
        Err(s) => {
            *stat = s;
            HEAD_DROP
        }
    }
}

#[inline(never)]
fn tail_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    match tail(ctx) {
        Ok(action) => action,
        Err(s) => {
            *stat = s;
            HEAD_DROP
        }
    }
}

/// Steps 1 to 5: `Some(action)` when the walk ends here, `None` when the
/// packet is routed out (its [`Routed`] is in the [`WALK`] slot).
#[inline(always)]
fn head(ctx: &TcContext) -> Result<Option<i32>, Stat> {
    let len = ctx.len();
    if parse::vlan_tagged(ctx) {
        return Err(Stat::DropPodVlan);
    }
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Arp => {
            source::verify_arp(ctx)?;
            count(Stat::PassNotIpv4, len);
            return Ok(Some(TC_ACT_OK as i32));
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
    let src = if dnat::code() == dnat::NONE {
        source::verify_ipv4(ctx, saddr, smac)?
    } else {
        // Verified by the DNAT subprogram before it translated.
        dnat::source()?
    };
    match router::destination(dst) {
        Destination::Unicast => {}
        Destination::LinkLocal => {
            count(Stat::PassToHost, len);
            return Ok(Some(TC_ACT_OK as i32));
        }
        Destination::Martian => return Err(Stat::DropMartian),
    }

    if let Some(ep) = endpoint::lookup(dst) {
        if ttl <= 1 {
            let f = parse::flow(ctx, &pkt)?;
            return router::ttl_expired(&f, &src, settings()).map(Some);
        }
        let dnat = routed_dnat();
        if dnat == ROUTED_PLAIN {
            return endpoint::deliver(ctx, &pkt, &ep).map(Some);
        }
        let ret = l3::deliver_to_pod(ctx, &ep, None)?;
        count(dnat_verdict(dnat), len);
        return Ok(Some(ret));
    }

    let f = parse::flow(ctx, &pkt)?;
    let settings = settings();
    // Several nodes: a peer's pod goes to its node (crate::peer). Plain
    // scalars and one next hop: the head's stack frame is tight.
    let (peer, to, vni, tunnel) = match peer::lookup(f.daddr) {
        peer::Where::Local => {
            count(Stat::PassToHost, len);
            return Ok(Some(TC_ACT_OK as i32));
        }
        peer::Where::Node(p) if p.flags & peer_flags::VXLAN != 0 => {
            (PEER_VXLAN, p.node_addr, p.vni, p.tunnel_ifindex)
        }
        peer::Where::Node(p) => (PEER_DIRECT, p.node_addr, 0, 0),
        peer::Where::Cluster => (PEER_CLUSTER, f.daddr, 0, 0),
        peer::Where::Outside => (PEER_OUTSIDE, f.daddr, 0, 0),
    };
    let hop = if peer == PEER_VXLAN {
        NextHop::Neigh {
            ifindex: tunnel,
            via: to,
        }
    } else {
        fib::lookup_to(ctx, &f, to, settings)
    };
    let (egress, neigh, macs) = match hop {
        NextHop::Local => {
            count(Stat::PassFibLocal, len);
            return Ok(Some(TC_ACT_OK as i32));
        }
        NextHop::Host => {
            count(Stat::PassToHost, len);
            return Ok(Some(TC_ACT_OK as i32));
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
        return router::ttl_expired(&f, &src, settings).map(Some);
    }
    if let Some(answered) = router::check_mtu(ctx, &f, &src, settings, egress)? {
        return Ok(Some(answered));
    }

    let slot = WALK.get_ptr_mut(0).ok_or(Stat::DropRewriteFailed)?;
    let (smac, dmac) = macs.unwrap_or(([0; 6], [0; 6]));
    // SAFETY: the slot is this CPU's; the walk runs to completion on it
    // (softirq), so nothing else uses it until the tail has read it.
    unsafe {
        // Field by field: no temporary `Routed` on the head's tight stack.
        (*slot).f = f;
        (*slot).egress = egress;
        (*slot).neigh = neigh.unwrap_or(f.daddr);
        (*slot).smac = smac;
        (*slot).dmac = dmac;
        (*slot).has_macs = u8::from(macs.is_some());
        (*slot).dnat = routed_dnat();
        (*slot).peer = peer;
        (*slot).vni = vni;
    }
    Ok(None)
}

/// Steps 6 and 7 for the packet [`head`] routed.
#[inline(always)]
fn tail(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    let slot = WALK.get_ptr(0).ok_or(Stat::DropRewriteFailed)?;
    // SAFETY: written by `head` on this CPU for this packet (see there).
    let r = unsafe { &*slot };
    let f = &r.f;
    let egress = r.egress;
    let macs = (r.has_macs != 0).then_some((r.smac, r.dmac));
    let settings = settings();
    // A masquerade rule for this egress interface and source?
    let key = Key::new(MasqKey::IFINDEX_BITS + 32, MasqKey::new(egress, f.saddr));
    let mut headers = Headers {
        macs: macs.map(|(smac, dmac)| (dmac, smac)),
        ..Headers::default()
    };
    // Pod → pod traffic inside the cluster is never masqueraded.
    let rule = if r.peer == PEER_OUTSIDE {
        MASQ.get(&key).copied()
    } else {
        None
    };
    if let Some(rule) = rule {
        let nat_addr = if f.later_fragment {
            let addr = frag::follow(&f, frag_dir::FROM_POD).ok_or(Stat::DropFragNoFirst)?;
            count(Stat::FragFollowed, len);
            addr
        } else {
            let addr = nat::snat(ctx, &f, &rule, settings)?;
            if frag::is_first(&f) {
                frag::record(&f, frag_dir::FROM_POD, addr, len)?;
            }
            addr
        };
        headers.saddr = Some(nat_addr);
    }
    l3::rewrite_headers(ctx, &headers)?;

    if r.peer == PEER_VXLAN {
        let ret = tunnel::encap_redirect(ctx, r.neigh, r.vni, egress)?;
        if r.dnat != ROUTED_PLAIN {
            count(dnat_verdict(r.dnat), len);
        }
        return Ok(ret);
    }
    let ret = if macs.is_some() {
        // SAFETY: helper call with plain integer arguments.
        unsafe { bpf_redirect(egress, 0) }
    } else {
        count(Stat::RouteNeighResolve, len);
        let mut nh = bpf_redir_neigh {
            nh_family: AF_INET,
            __bindgen_anon_1: bpf_redir_neigh__bindgen_ty_1 {
                ipv4_nh: u32::from_ne_bytes(r.neigh),
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
    if r.peer == PEER_DIRECT && r.dnat == ROUTED_PLAIN {
        count(Stat::FwdToPeer, len);
    } else {
        count(dnat_verdict(r.dnat), len);
    }
    Ok(TC_ACT_REDIRECT as i32)
}

/// What DNAT did to this packet, as [`Routed::dnat`] says it.
#[inline(always)]
fn routed_dnat() -> u8 {
    match dnat::code() {
        dnat::FORWARD => ROUTED_DNAT,
        dnat::REVERSE => ROUTED_REVDNAT,
        _ => ROUTED_PLAIN,
    }
}

/// The verdict of a forwarded packet, by what DNAT did to it.
#[inline(always)]
fn dnat_verdict(dnat: u8) -> Stat {
    match dnat {
        ROUTED_DNAT => Stat::FwdDnat,
        ROUTED_REVDNAT => Stat::FwdRevDnat,
        _ => Stat::FwdRouted,
    }
}

/// The node settings (slot 0), or the defaults before userspace wrote them.
/// A reference, not a copy: the walk's stack frame is tight (see
/// [`icmp_reply::defer`]).
#[inline(always)]
fn settings() -> &'static NodeSettings {
    SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT)
}

/// The hand-over between the two halves of `np_from_pod`'s walk
/// (`from_pod::Routed`): one slot per CPU, written by the head and read by
/// the tail of the same packet. Not pinned (it holds no state between
/// packets).
#[btf_map(name = "walk_scratch")]
pub static WALK: PerCpuArray<Routed, 1> = PerCpuArray::new();
