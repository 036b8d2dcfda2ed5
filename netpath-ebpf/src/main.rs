//! netpath's kernel side: TC programs that forward, route and translate
//! container traffic from BPF maps the controller fills.
//!
//! The packet walks read in module order:
//! - [`from_pod`] (`np_from_pod`): [`parse`] → [`source`] (anti-spoofing)
//!   → [`endpoint`] (local pod) or [`fib`] (route map, then the node's FIB)
//!   → [`router`] (TTL and MTU, answered by [`icmp_reply`]) → [`nat`]
//!   (masquerade, with [`conntrack`]; [`frag`] for later fragments) →
//!   [`l3`] (TTL, MACs) → redirect;
//! - [`from_uplink`] (`np_from_uplink`): [`parse`] → [`nat`] / [`icmp`]
//!   (reverse NAT of replies and errors; [`frag`]) → [`l3`] →
//!   `bpf_redirect_peer`;
//! - [`to_uplink`] (`np_to_uplink`, egress): the node's own packets →
//!   [`nat::node_snat`] when a pod's flow holds their tuple.
//!
//! - [`xdp`] (`np_xdp_uplink`, XDP on an uplink): the prefilter, and the
//!   fast path of established inbound flows to local pods (everything else
//!   passes to `np_from_uplink`); `np_xdp_pod` on each pod's `eth0`;
//! - [`sock`] (`np_sock_*`, cgroup hooks): the node's own connections to a
//!   service get a backend at `connect()` time.
//!
//! Every verdict and drop reason is counted in [`stats`]; a walk that drops
//! returns its reason, and [`stats::drop`] counts (and, when the loader
//! enabled it, logs) it in one place; there [`events`] hands it to a
//! running `netpath monitor`, if any.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod dnat;
mod endpoint;
mod events;
mod fib;
mod frag;
mod from_pod;
mod from_uplink;
mod icmp;
mod icmp_reply;
mod l3;
mod lb;
mod maps;
mod nat;
mod parse;
mod peer;
mod pod_stats;
mod reject;
mod router;
mod sock;
mod source;
mod stats;
mod to_uplink;
mod tunnel;
mod xdp;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC ingress on a pod's host-side veth: every packet the pod sends.
#[classifier]
pub fn np_from_pod(ctx: TcContext) -> i32 {
    let ifindex = parse::ingress_ifindex(&ctx);
    pod_stats::tx(ifindex, ctx.len());
    match from_pod::try_from_pod(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            pod_stats::tx_dropped(ifindex);
            stats::drop(&ctx, reason)
        }
    }
}

/// TC ingress on an uplink: replies to translated connections.
#[classifier]
pub fn np_from_uplink(ctx: TcContext) -> i32 {
    match from_uplink::try_from_uplink(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::drop(&ctx, reason),
    }
}

/// TC egress on an uplink: the node's own connections (translated to
/// another port when a pod's translated flow holds theirs).
#[classifier]
pub fn np_to_uplink(ctx: TcContext) -> i32 {
    match to_uplink::try_to_uplink(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::drop(&ctx, reason),
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

/// License of the object: GPL, which the helpers netpath calls require.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";

// --- XDP and the socket load balancer ---

/// XDP on an uplink: the prefilter and the fast path of established
/// inbound flows to local pods; everything else passes to `np_from_uplink`.
#[aya_ebpf::macros::xdp]
pub fn np_xdp_uplink(ctx: aya_ebpf::programs::XdpContext) -> u32 {
    xdp::try_xdp_uplink(&ctx)
}

/// XDP on a pod's `eth0` (inside the pod): passes everything. veth
/// delivers `XDP_REDIRECT`ed frames only to a peer with NAPI on, which an
/// XDP program turns on.
#[aya_ebpf::macros::xdp]
pub fn np_xdp_pod(_ctx: aya_ebpf::programs::XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// cgroup `connect4`: the node's sockets connecting to a frontend get a
/// backend.
#[aya_ebpf::macros::cgroup_sock_addr(connect4)]
pub fn np_sock_connect4(ctx: aya_ebpf::programs::SockAddrContext) -> i32 {
    sock::try_sock_connect(&ctx)
}

/// cgroup `sendmsg4`: the same for unconnected UDP sends.
#[aya_ebpf::macros::cgroup_sock_addr(sendmsg4)]
pub fn np_sock_sendmsg4(ctx: aya_ebpf::programs::SockAddrContext) -> i32 {
    sock::try_sock_connect(&ctx)
}

/// cgroup `recvmsg4`: a datagram from a backend shows its frontend as
/// source.
#[aya_ebpf::macros::cgroup_sock_addr(recvmsg4)]
pub fn np_sock_recvmsg4(ctx: aya_ebpf::programs::SockAddrContext) -> i32 {
    sock::try_sock_peer(&ctx)
}

/// cgroup `getpeername4`: a connected socket's peer shows as its frontend.
#[aya_ebpf::macros::cgroup_sock_addr(getpeername4)]
pub fn np_sock_getpeername4(ctx: aya_ebpf::programs::SockAddrContext) -> i32 {
    sock::try_sock_peer(&ctx)
}

// --- several nodes (peer.rs, tunnel.rs) ---

/// TC ingress on the node's VXLAN device: decapsulated packets from peer
/// nodes' pods, delivered to local pods.
#[classifier]
pub fn np_from_tunnel(ctx: TcContext) -> i32 {
    match tunnel::try_from_tunnel(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::drop(&ctx, reason),
    }
}
