//! The node as the reconciler reaches it, and the names netpath keeps in
//! it. A leaf of `reconcile`: every step module uses it.

use super::error::StepError;
use crate::{
    datapath::PinDir,
    resolve::DesiredNode,
    sys::{netlink::Netlink, netns::Netns},
};

/// The device in the node namespace that holds the gateway address (one
/// end of the veth pair np0 / np0-peer).
pub use crate::config::GATEWAY_IFNAME;
pub use crate::config::GATEWAY_PEER_IFNAME;
/// The sysctl that lets `bpf_fib_lookup` answer for `np0` (see [`crate::reconcile`]): forwarding on np0 alone, never the node's `ip_forward`.
pub const NP0_FORWARDING: &str = "ipv4/conf/np0/forwarding";

/// The node as the reconciler reaches it: its namespace, a netlink
/// connection into it and the instance's pin directory.
pub struct Node {
    pub netns: Netns,
    pub nl: Netlink,
    pub pins: PinDir,
}

impl Node {
    /// Opens the node namespace of `desired` and connects to it.
    pub async fn open(desired: &DesiredNode) -> Result<Self, StepError> {
        let netns = match &desired.netns {
            Some(name) => Netns::open(name)?,
            None => Netns::current()?,
        };
        let nl = Netlink::connect(&netns).await?;
        Ok(Self {
            netns,
            nl,
            pins: PinDir::for_instance(&desired.instance),
        })
    }
}
