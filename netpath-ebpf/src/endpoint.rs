//! Local delivery: a packet from a pod to another pod on the same node is
//! rewritten at L2, its TTL decremented, and redirected straight into the
//! destination pod with `bpf_redirect_peer`: no bridge, no host routing,
//! no netfilter.

use aya_ebpf::{bindings::TC_ACT_REDIRECT, helpers::bpf_redirect_peer, programs::TcContext};
use netpath_common::{Endpoint, EndpointKey, Stat};

use crate::{csum, maps::ENDPOINTS, parse::Ipv4Packet, stats::count};

/// The local pod with address `addr`, if any.
#[inline(always)]
pub fn lookup(addr: [u8; 4]) -> Option<Endpoint> {
    // SAFETY: the value is copied out at once; a concurrent update from
    // userspace can at worst hand us the old or the new endpoint.
    unsafe { ENDPOINTS.get(EndpointKey { addr }) }.copied()
}

/// Delivers a parsed, untranslated packet to local pod `ep` through direct
/// packet access (the fast path of pod → pod traffic).
#[inline(always)]
pub fn deliver(ctx: &TcContext, pkt: &Ipv4Packet, ep: &Endpoint) -> Result<i32, Stat> {
    let len = ctx.len();
    // SAFETY: `pkt.ip` and `pkt.eth` were bounds-checked by the parser and no
    // helper that moves packet data has run since; direct writes are allowed
    // in TC (the verifier un-clones the skb first).
    unsafe {
        let ip = pkt.ip;
        let ttl = (*ip).ttl;
        if ttl <= 1 {
            return Err(Stat::DropTtlExceeded);
        }
        // TTL shares a 16-bit word with the protocol byte.
        let proto = u16::from((*ip).proto);
        let old = (u16::from(ttl) << 8) | proto;
        let new = (u16::from(ttl - 1) << 8) | proto;
        (*ip).ttl = ttl - 1;
        let check = u16::from_be_bytes((*ip).check);
        (*ip).check = csum::replace16(check, old, new).to_be_bytes();

        (*pkt.eth).dst_addr = ep.pod_mac;
        (*pkt.eth).src_addr = ep.gw_mac;
    }

    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        return Err(Stat::DropRewriteFailed);
    }
    count(Stat::FwdLocalPod, len);
    crate::pod_stats::rx(ep.ifindex, len);
    crate::events::trace_redirect(ctx, Stat::FwdLocalPod, ep.ifindex);
    Ok(TC_ACT_REDIRECT as i32)
}
