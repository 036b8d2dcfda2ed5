//! Route lookup: where a packet that is not for a local pod goes.
//!
//! 1. The route map (`routes_v1`, declared routes) decides the next hop if
//!    it has a prefix for the destination; an entry with ifindex 0 means
//!    "hand it to the node's stack" (the controller puts the node's own
//!    addresses that a declared route covers there as /32s, and the pod
//!    CIDR).
//! 2. Otherwise `bpf_fib_lookup` in the node's FIB decides: its next hop
//!    MAC when the neighbour is known, `bpf_redirect_neigh` when it is not;
//!    a local destination, or none (`BPF_FIB_LKUP_RET_NOT_FWDED` says
//!    either), goes to the node's stack.
//!
//! `bpf_fib_lookup` answers only for a device with IPv4 forwarding on
//! (`BPF_FIB_LKUP_RET_FWD_DISABLED` otherwise). It runs as `np0`
//! (`NodeSettings::fib_ifindex`), the one device where netpath turns
//! forwarding on: no packet ever enters through `np0`, so the node's kernel
//! still forwards nothing itself. With `fib_ifindex` 0 (not configured),
//! only the route map is used.

use core::mem;

use aya_ebpf::{
    bindings::{
        BPF_FIB_LKUP_RET_BLACKHOLE, BPF_FIB_LKUP_RET_NO_NEIGH, BPF_FIB_LKUP_RET_NOT_FWDED,
        BPF_FIB_LKUP_RET_PROHIBIT, BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNREACHABLE,
        bpf_fib_lookup as FibParams,
    },
    btf_maps::lpm_trie::Key,
    helpers::bpf_fib_lookup,
    programs::TcContext,
};
use netpath_common::{NodeSettings, RouteKey, Stat};

use crate::{maps::ROUTES, parse::Flow, stats::count};

const AF_INET: u8 = 2;

/// Where to send a packet.
pub enum NextHop {
    /// Out of `ifindex` to the neighbour `via` (resolved by the kernel with
    /// `bpf_redirect_neigh`).
    Neigh { ifindex: u32, via: [u8; 4] },
    /// Out of `ifindex` with these MACs (the FIB knew the neighbour).
    Direct {
        ifindex: u32,
        smac: [u8; 6],
        dmac: [u8; 6],
    },
    /// For the node's own stack: a local address or broadcast per the FIB,
    /// or an ifindex-0 route.
    Local,
    /// Nobody knows (no FIB configured, no route in the map): the node's
    /// stack decides.
    Host,
    /// No usable route: the FIB has a blackhole, unreachable or prohibit
    /// route.
    Unreachable,
}

/// Looks up the next hop of `f` as if it went to `daddr`: its own
/// destination, or a peer node's address for a packet to one of its pods
/// (direct routing). A BPF subprogram of its own (`inline(never)`): its
/// `bpf_fib_lookup` parameters then live in its own stack frame, not in
/// the walk's (see `from_pod`: the walk's frames must fit the 512-byte BPF
/// stack).
#[inline(never)]
pub fn lookup_to(ctx: &TcContext, f: &Flow, daddr: [u8; 4], settings: &NodeSettings) -> NextHop {
    let key = Key::new(32, RouteKey { addr: daddr });
    if let Some(route) = ROUTES.get(&key) {
        count(Stat::RouteMapHit, ctx.len());
        if route.ifindex == 0 {
            return NextHop::Local;
        }
        let via = if route.via == [0; 4] {
            daddr
        } else {
            route.via
        };
        return NextHop::Neigh {
            ifindex: route.ifindex,
            via,
        };
    }
    if settings.fib_ifindex == 0 {
        return NextHop::Host;
    }

    // SAFETY: an all-zero bpf_fib_lookup is a valid value of the C struct.
    let mut params: FibParams = unsafe { mem::zeroed() };
    params.family = AF_INET;
    params.l4_protocol = f.proto;
    params.sport = f.sport.to_be();
    params.dport = f.dport.to_be();
    params.ifindex = settings.fib_ifindex;
    params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(f.saddr);
    params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(daddr);
    // SAFETY: `params` is a valid, initialised struct on the stack and the
    // size passed is its size.
    let fib_ret = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb.cast(),
            &raw mut params,
            mem::size_of::<FibParams>() as i32,
            0,
        )
    } as u32;
    match fib_ret {
        BPF_FIB_LKUP_RET_SUCCESS => {
            count(Stat::RouteFibHit, ctx.len());
            NextHop::Direct {
                ifindex: params.ifindex,
                smac: params.smac,
                dmac: params.dmac,
            }
        }
        BPF_FIB_LKUP_RET_NO_NEIGH => {
            count(Stat::RouteFibHit, ctx.len());
            // SAFETY: the kernel filled the IPv4 next hop in the dst field.
            let via = unsafe { params.__bindgen_anon_4.ipv4_dst }.to_ne_bytes();
            NextHop::Neigh {
                ifindex: params.ifindex,
                via,
            }
        }
        BPF_FIB_LKUP_RET_BLACKHOLE | BPF_FIB_LKUP_RET_UNREACHABLE | BPF_FIB_LKUP_RET_PROHIBIT => {
            NextHop::Unreachable
        }
        BPF_FIB_LKUP_RET_NOT_FWDED => NextHop::Local,
        // Not configured, forwarding disabled, unsupported: the node's
        // stack decides.
        _ => NextHop::Host,
    }
}
