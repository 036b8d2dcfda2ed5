//! The walk of `np_from_pod`, TC ingress on a pod's host-side veth: every
//! packet a pod sends.
//!
//! parse → local pod? deliver ([`crate::endpoint`]) → route
//! ([`crate::fib`]) → masquerade rule for the source and egress device?
//! SNAT ([`crate::nat`]) → TTL → redirect out of the egress device.

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_REDIRECT, bpf_redir_neigh, bpf_redir_neigh__bindgen_ty_1},
    btf_maps::lpm_trie::Key,
    helpers::{bpf_redirect, bpf_redirect_neigh},
    programs::TcContext,
};
use netpath_common::{MasqKey, NodeSettings, Stat};

use crate::{
    endpoint,
    fib::{self, NextHop},
    l3::{self, Headers},
    maps::{MASQ, SETTINGS},
    nat,
    parse::{self, Parsed},
    stats::count,
};

const AF_INET: u32 = 2;

#[inline(always)]
pub fn try_from_pod(ctx: &TcContext) -> Result<i32, Stat> {
    let len = ctx.len();
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::NotIpv4 => {
            count(Stat::PassNotIpv4, len);
            return Ok(TC_ACT_OK as i32);
        }
    };
    // SAFETY: bounds-checked by the parser.
    let dst = unsafe { (*pkt.ip).dst_addr };
    if let Some(ep) = endpoint::lookup(dst) {
        return endpoint::deliver(ctx, &pkt, &ep);
    }

    let f = parse::flow(ctx, &pkt)?;
    let settings = SETTINGS.get(0).copied().unwrap_or(NodeSettings::DEFAULT);
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

    // A masquerade rule for this egress interface and source?
    let key = Key::new(MasqKey::IFINDEX_BITS + 32, MasqKey::new(egress, f.saddr));
    let mut headers = Headers {
        macs: macs.map(|(smac, dmac)| (dmac, smac)),
        ..Headers::default()
    };
    if let Some(rule) = MASQ.get(&key).copied() {
        headers.saddr = Some(nat::snat(ctx, &f, &rule, &settings)?);
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
