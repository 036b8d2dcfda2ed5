//! netpath's kernel side: TC and XDP programs that forward, route and
//! translate container traffic from BPF maps the controller fills.
//!
//! The packet walk reads in module order:
//! [`parse`] (headers, bounds, IHL) → [`endpoint`] (local pod delivery) →
//! [`stats`] (a counter for every verdict and drop reason).
#![no_std]
#![no_main]

mod csum;
mod endpoint;
mod maps;
mod parse;
mod stats;

use aya_ebpf::{bindings::TC_ACT_SHOT, macros::classifier, programs::TcContext};

/// TC ingress on a pod's host-side veth: every packet the pod sends.
#[classifier]
pub fn np_from_pod(ctx: TcContext) -> i32 {
    match endpoint::try_from_pod(&ctx) {
        Ok(action) => action,
        // Every error path has already counted its drop reason.
        Err(()) => TC_ACT_SHOT as i32,
    }
}

/// TC ingress on an uplink: replies to translated flows.
#[classifier]
pub fn np_from_uplink(_ctx: TcContext) -> i32 {
    aya_ebpf::bindings::TC_ACT_OK as i32
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
