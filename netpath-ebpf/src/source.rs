//! Source verification (anti-spoofing), as Cilium's source IP verification:
//! a pod may send only from its own address and its own MAC.
//!
//! The endpoint map is keyed by address, so a frame is verified from its
//! claimed source: the endpoint of that address must exist, live behind the
//! veth the frame came in on (`ifindex` = the ingress ifindex), and have
//! that MAC (`pod_mac`) as the frame's Ethernet source. Anything else is a
//! counted drop, before any lookup, state or rewrite, so it holds on every
//! path (local delivery, routed, SNAT, and the node's own addresses).
//!
//! - IPv4: source address → `drop_spoofed_ip`; Ethernet source MAC →
//!   `drop_spoofed_mac`.
//! - ARP (a pod answers the node's ARP for its address): the sender
//!   address and MAC, and the Ethernet source, must be the pod's →
//!   `drop_spoofed_arp` (so a pod can neither poison the node's neighbour
//!   table nor probe with 0.0.0.0).
//! - IPv6 and other ethertypes are dropped and counted by the walk (pods
//!   are IPv4-only and nothing could verify their source).

use aya_ebpf::programs::TcContext;
use netpath_common::{Endpoint, Stat};

use crate::{endpoint, parse};

/// Verifies the source of an IPv4 packet from a pod (source address
/// `saddr`, Ethernet source `smac`); returns the sending pod's endpoint.
#[inline(always)]
pub fn verify_ipv4(ctx: &TcContext, saddr: [u8; 4], smac: [u8; 6]) -> Result<Endpoint, Stat> {
    let ep = endpoint::lookup(saddr).ok_or(Stat::DropSpoofedIp)?;
    if ep.ifindex != parse::ingress_ifindex(ctx) {
        return Err(Stat::DropSpoofedIp);
    }
    if smac != ep.pod_mac {
        return Err(Stat::DropSpoofedMac);
    }
    Ok(ep)
}

/// Verifies the sender of an ARP frame from a pod.
#[inline(always)]
pub fn verify_arp(ctx: &TcContext) -> Result<(), Stat> {
    let (sha, spa) = parse::arp_sender(ctx)?;
    let ep = endpoint::lookup(spa).ok_or(Stat::DropSpoofedArp)?;
    if ep.ifindex != parse::ingress_ifindex(ctx)
        || sha != ep.pod_mac
        || parse::src_mac(ctx)? != ep.pod_mac
    {
        return Err(Stat::DropSpoofedArp);
    }
    Ok(())
}
