//! The VXLAN overlay: one kernel VXLAN device per node in external
//! (collect-metadata) mode; the datapath chooses the remote end of every
//! packet with the tunnel key, so one device serves every peer.
//!
//! - **Encapsulation** (`np_from_pod`, a packet to a peer's pod whose
//!   entry has `peer_flags::VXLAN`): the packet is routed as to any egress
//!   device (TTL, then the MTU against the VXLAN device's, which leaves
//!   room for the 50 bytes of encapsulation, so a DF packet too big for the
//!   tunnel gets fragmentation needed from the gateway with the tunnel's
//!   MTU), then [`encap_redirect`] sets the tunnel key (the peer's node
//!   address, the VNI) and redirects it into the device, whose `xmit`
//!   wraps it in UDP and sends it from the node's stack (the node's own
//!   traffic: no forwarding involved). The inner MACs stay as the pod sent
//!   them; the receiver rewrites them on delivery.
//! - **Decapsulation** (`np_from_tunnel`, TC ingress on the VXLAN device):
//!   [`try_from_tunnel`] delivers an inner IPv4 packet from a peer's pod
//!   (whose entry names the tunnel's outer source as its node) to a local
//!   pod with `bpf_redirect_peer`; anything else is `drop_tunnel_decap`.

use core::mem;

use aya_ebpf::{
    bindings::{TC_ACT_REDIRECT, bpf_tunnel_key},
    helpers::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    programs::TcContext,
};
use netpath_common::Stat;

use crate::{
    dnat,
    parse::{self, Parsed},
    peer,
    stats::count,
};

/// The outer header's TTL.
const TUNNEL_TTL: u8 = 64;

/// Sets the tunnel key of the packet (remote end `remote`, VNI `vni`) and
/// redirects it into the VXLAN device `ifindex`.
#[inline(always)]
pub fn encap_redirect(
    ctx: &TcContext,
    remote: [u8; 4],
    vni: u32,
    ifindex: u32,
) -> Result<i32, Stat> {
    // SAFETY: an all-zero bpf_tunnel_key is a valid value of the C struct.
    let mut key: bpf_tunnel_key = unsafe { mem::zeroed() };
    key.tunnel_id = vni;
    // The helper takes the remote address in host order.
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(remote);
    key.tunnel_ttl = TUNNEL_TTL;
    // SAFETY: `key` is a valid, initialised struct on the stack and the
    // size passed is its size.
    let ret = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb.cast(),
            &raw mut key,
            mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if ret != 0 {
        return Err(Stat::DropTunnelEncap);
    }
    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect(ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropTunnelEncap);
    }
    count(Stat::TunnelEncap, ctx.len());
    Ok(TC_ACT_REDIRECT as i32)
}

/// The tunnel's outer source (the sending node's address).
#[inline(always)]
fn outer_source(ctx: &TcContext) -> Result<[u8; 4], Stat> {
    // SAFETY: an all-zero bpf_tunnel_key is a valid value of the C struct.
    let mut key: bpf_tunnel_key = unsafe { mem::zeroed() };
    // SAFETY: `key` is a valid struct on the stack and its size is passed.
    let ret = unsafe {
        bpf_skb_get_tunnel_key(
            ctx.skb.skb.cast(),
            &raw mut key,
            mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if ret != 0 {
        return Err(Stat::DropTunnelDecap);
    }
    // SAFETY: the kernel filled the IPv4 member (an IPv4 tunnel).
    Ok(unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be_bytes())
}

/// The walk of `np_from_tunnel`: a decapsulated packet from a peer's pod
/// to a local pod is delivered; anything else is dropped.
#[inline(always)]
pub fn try_from_tunnel(ctx: &TcContext) -> Result<i32, Stat> {
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Arp | Parsed::Ipv6 | Parsed::Other => return Err(Stat::DropTunnelDecap),
    };
    let f = parse::flow(ctx, &pkt)?;
    count(Stat::TunnelDecap, ctx.len());
    let node = outer_source(ctx)?;
    // For the reverse DNAT of a service backend's reply.
    dnat::stash_flow(&f)?;
    peer::deliver_from_peer(ctx, f.saddr, f.daddr, Some(node)).unwrap_or(Err(Stat::DropTunnelDecap))
}
