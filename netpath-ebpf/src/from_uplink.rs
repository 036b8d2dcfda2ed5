//! The walk of `np_from_uplink`, TC ingress on an uplink: replies to
//! translated connections (and ICMP errors about them) go back to their
//! pods; everything else is the node's own traffic and passes to its stack.
//!
//! parse → reverse NAT ([`crate::nat::rev_snat`], or
//! [`crate::icmp::rev_snat_error`]) → local pod → TTL, MACs,
//! `bpf_redirect_peer`.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netpath_common::Stat;

use crate::{
    endpoint, icmp, l3, nat,
    parse::{self, ICMP_ECHO_REPLY, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Parsed},
    stats::count,
};

#[inline(always)]
pub fn try_from_uplink(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::NotIpv4 => {
            count(Stat::PassUplink, len);
            return Ok(TC_ACT_OK as i32);
        }
    };
    let f = parse::flow(ctx, &pkt)?;
    let pod = if f.later_fragment {
        // No L4 header to match: the node's stack reassembles or drops it.
        None
    } else {
        match f.proto {
            IPPROTO_TCP | IPPROTO_UDP => nat::rev_snat(ctx, &f)?,
            IPPROTO_ICMP if f.icmp_type == ICMP_ECHO_REPLY => nat::rev_snat(ctx, &f)?,
            IPPROTO_ICMP if icmp::is_error(&f) => icmp::rev_snat_error(ctx, &f)?,
            _ => None,
        }
    };
    let Some(pod) = pod else {
        count(Stat::PassUplink, len);
        return Ok(TC_ACT_OK as i32);
    };
    let Some(ep) = endpoint::lookup(pod) else {
        return Err(Stat::DropRevNatNoPod);
    };
    let ret = l3::deliver_to_pod(ctx, &ep, Some(pod))?;
    count(Stat::FwdRevNat, len);
    Ok(ret)
}
