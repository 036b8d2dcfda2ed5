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
//! Every verdict and drop reason is counted in [`stats`]; a walk that drops
//! returns its reason, and [`stats::drop`] counts (and, when the loader
//! enabled it, logs) it in one place.
#![no_std]
#![no_main]

mod conntrack;
mod csum;
mod endpoint;
mod fib;
mod frag;
mod from_pod;
mod from_uplink;
mod icmp;
mod icmp_reply;
mod l3;
mod maps;
mod nat;
mod parse;
mod router;
mod source;
mod stats;
mod to_uplink;

use aya_ebpf::{macros::classifier, programs::TcContext};

/// TC ingress on a pod's host-side veth: every packet the pod sends.
#[classifier]
pub fn np_from_pod(ctx: TcContext) -> i32 {
    match from_pod::try_from_pod(&ctx) {
        Ok(action) => action,
        Err(reason) => stats::drop(&ctx, reason),
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
