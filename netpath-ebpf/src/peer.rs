//! Several nodes: where a pod address outside this node lives, from the
//! peer map `peers_v1` (its invariants P1-P5 are written beside its types,
//! in `netpath_common::peer`).
//!
//! - **Out** (`np_from_pod`, after no local pod took the packet): a
//!   destination in a peer's pod CIDR goes to that node, unchanged (no
//!   masquerade): straight out of the uplink to the node's address
//!   (direct routing: the next hop comes from a FIB lookup of the node's
//!   address, so the peer needs no route to pod CIDRs anywhere) or into
//!   the VXLAN device with the node's address as the tunnel key
//!   ([`crate::tunnel`]). A destination in the cluster CIDR that no peer
//!   owns is routed as usual but never masqueraded; one in the node's own
//!   pod CIDR that no pod holds goes to the node's stack.
//! - **In** (`np_from_uplink` for direct routing, `np_from_tunnel` for the
//!   overlay): a packet whose source is in a peer's pod CIDR and whose
//!   destination is a local pod is delivered with `bpf_redirect_peer`
//!   ([`deliver_from_peer`]); a reply of a pod's connection to a service
//!   whose backend is a remote pod gets its frontend back as source first.

use aya_ebpf::{btf_maps::LpmTrie, btf_maps::lpm_trie::Key, macros::btf_map, programs::TcContext};
use netpath_common::{
    Stat,
    peer::{MAX, Peer, PeerKey, peer_flags},
};

use crate::{dnat, endpoint, l3, stats::count};

/// The peer map: pod CIDR (longest prefix) → where its pods live.
#[btf_map(name = "peers_v1")]
pub static PEERS: LpmTrie<PeerKey, Peer, { MAX as usize }> = LpmTrie::new();

/// What the peer map says of a destination.
#[derive(Clone, Copy)]
pub enum Where {
    /// Not in the cluster (or no cluster): the node's routing and
    /// masquerade rules decide, as before.
    Outside,
    /// In the cluster, no peer owns it: routed as usual, never
    /// masqueraded.
    Cluster,
    /// In the node's own pod CIDR, no local pod: the node's stack.
    Local,
    /// A peer node's pod (the map's value: a reference, not a copy, to
    /// keep the walk's stack frame small).
    Node(&'static Peer),
}

/// The entry for `addr` (longest prefix).
#[inline(always)]
pub fn lookup(addr: [u8; 4]) -> Where {
    match PEERS.get(&Key::new(32, PeerKey { addr })) {
        None => Where::Outside,
        Some(p) if p.flags & peer_flags::LOCAL != 0 => Where::Local,
        Some(p) if p.is_node() => Where::Node(p),
        Some(_) => Where::Cluster,
    }
}

/// Whether `saddr` is a remote pod's address (inside a peer's pod CIDR)
/// and, when `node` is given (the tunnel's outer source), that peer's.
#[inline(always)]
pub fn from_peer(saddr: [u8; 4], node: Option<[u8; 4]>) -> bool {
    match lookup(saddr) {
        Where::Node(p) => node.is_none_or(|n| n == p.node_addr),
        _ => false,
    }
}

/// Delivers a packet from a peer's pod to local pod `daddr` (`node`: see
/// [`from_peer`]), counting `fwd_from_peer`; `None` when the source is no
/// peer's pod or no local pod has `daddr` (the caller decides).
/// The packet's flow must be stashed for DNAT (`dnat::stash_flow`): a
/// reply of a local pod's connection to a service whose backend is that
/// remote pod gets its frontend back as source (`fwd_revdnat`).
#[inline(always)]
pub fn deliver_from_peer(
    ctx: &TcContext,
    saddr: [u8; 4],
    daddr: [u8; 4],
    node: Option<[u8; 4]>,
) -> Option<Result<i32, Stat>> {
    if !from_peer(saddr, node) {
        return None;
    }
    let ep = endpoint::lookup(daddr)?;
    let len = ctx.len();
    let mut stat = Stat::DropRewriteFailed;
    let verdict = match dnat::reverse_subprog(ctx, &mut stat) {
        dnat::DROP => return Some(Err(stat)),
        dnat::REVERSE => Stat::FwdRevDnat,
        _ => Stat::FwdFromPeer,
    };
    Some(l3::deliver_to_pod(ctx, &ep, None).map(|ret| {
        count(verdict, len);
        ret
    }))
}
