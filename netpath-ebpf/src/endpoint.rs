//! Local delivery: a packet from a pod to another pod on the same node is
//! rewritten at L2, its TTL decremented, and redirected straight into the
//! destination pod with `bpf_redirect_peer`: no bridge, no host routing,
//! no netfilter.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT},
    helpers::bpf_redirect_peer,
    programs::TcContext,
};
use netpath_common::{EndpointKey, Stat};

use crate::{
    csum,
    maps::ENDPOINTS,
    parse::{self, Parsed},
    stats::count,
};

/// Packet walk of TC ingress on a pod's host-side veth.
#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<i32, ()> {
    let len = ctx.len();
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::NotIpv4 => {
            count(Stat::PassNotIpv4, len);
            return Ok(TC_ACT_OK as i32);
        }
    };
    // SAFETY: `pkt.ip` and `pkt.eth` were bounds-checked by the parser and no
    // helper that moves packet data has run since.
    let (dst, ttl) = unsafe { ((*pkt.ip).dst_addr, (*pkt.ip).ttl) };

    // SAFETY: the value is copied out at once; a concurrent update from
    // userspace can at worst hand us the old or the new endpoint.
    let Some(ep) = (unsafe { ENDPOINTS.get(EndpointKey { addr: dst }) }).copied() else {
        count(Stat::PassToHost, len);
        return Ok(TC_ACT_OK as i32);
    };

    if ttl <= 1 {
        count(Stat::DropTtlExceeded, len);
        return Err(());
    }
    // SAFETY: bounds-checked pointers, as above; direct writes are allowed
    // in TC (the verifier un-clones the skb first).
    unsafe {
        let ip = pkt.ip;
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
    let _ = pkt.ihl_bytes;

    // SAFETY: helper call with plain integer arguments.
    let ret = unsafe { bpf_redirect_peer(ep.ifindex, 0) };
    if ret != i64::from(TC_ACT_REDIRECT) {
        count(Stat::DropRewriteFailed, len);
        return Err(());
    }
    count(Stat::FwdLocalPod, len);
    Ok(TC_ACT_REDIRECT as i32)
}
