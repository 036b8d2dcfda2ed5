//! The walk of `np_to_uplink`, TC egress on an uplink: the node's own
//! connections must never collide with a pod's translated flow.
//!
//! A pod's connection translated to the node's address takes an external
//! tuple (node address, port, peer). New pod connections avoid the tuples
//! of the node's sockets (socket lookup when they are created), but a node
//! connection opened *after* a pod's took the same port and peer would have
//! its replies taken by the pod's reverse entry. netfilter avoids this by
//! tracking the node's connections in the same table and translating the
//! later one to a free port; this program does the same: a node packet
//! whose tuple a reverse entry holds gets a NODE-flagged connection with a
//! free port ([`crate::nat::node_snat`]), and `np_from_uplink` translates
//! the replies back and leaves them to the node's stack.
//!
//! The alternative, reserving the NAT range from the node's autobind
//! (`ip_local_reserved_ports`) and keeping a pod's own port only inside it,
//! changes a node-wide sysctl, breaks applications that bind a port of the
//! range explicitly, and still leaves explicit binds colliding; the egress
//! program costs one or two hash lookups per node packet and changes
//! nothing outside netpath.
//!
//! Packets that only pass through the uplink (pod traffic redirected by
//! `np_from_pod`) have an ingress interface; the node's own have none
//! (`skb->skb_iif` is 0 for locally generated packets), and only those are
//! looked at.
//!
//! parse → node packet? → TCP, UDP or ICMP echo, not a later fragment →
//! [`crate::nat::node_snat`] → pass.

use aya_ebpf::{bindings::TC_ACT_OK, programs::TcContext};
use netpath_common::{NodeSettings, Stat};

use crate::{
    maps::SETTINGS,
    nat,
    parse::{self, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Parsed},
    stats::count,
};

#[inline(always)]
pub fn try_to_uplink(ctx: &TcContext) -> Result<i32, Stat> {
    // SAFETY: reading a field of the context the kernel handed us.
    if unsafe { (*ctx.skb.skb).ingress_ifindex } != 0 {
        // Forwarded (a pod's packet redirected here), not the node's own.
        return Ok(TC_ACT_OK as i32);
    }
    let len = ctx.len();
    let pkt = match parse::parse_ipv4(ctx)? {
        Parsed::Ipv4(pkt) => pkt,
        Parsed::Arp | Parsed::Ipv6 | Parsed::Other => return Ok(TC_ACT_OK as i32),
    };
    let f = parse::flow(ctx, &pkt)?;
    // A later fragment has no port: the first one carried the translation,
    // and the L4 checksum covers the whole datagram, so it stays right.
    if !f.later_fragment {
        match f.proto {
            IPPROTO_TCP | IPPROTO_UDP => {}
            IPPROTO_ICMP if f.icmp_type == ICMP_ECHO => {}
            _ => {
                count(Stat::NodePass, len);
                return Ok(TC_ACT_OK as i32);
            }
        }
        let settings = SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT);
        nat::node_snat(ctx, &f, settings)?;
    }
    count(Stat::NodePass, len);
    Ok(TC_ACT_OK as i32)
}
