//! The node as the reconciler reaches it, and the names netpath keeps in
//! it. A leaf of `reconcile`: every step module uses it.

use std::collections::BTreeMap;

use ipnet::Ipv4Net;
use log::info;
use netpath_common::DenyRule;

use super::error::StepError;
use crate::{
    datapath::{
        Datapath, NodeMaps, PinDir,
        sock::sock_lb_pinned,
        xdp::{UplinkXdp, XdpMode, pod_pinned, uplink_pinned},
    },
    resolve::{DesiredNode, PodNetns},
    state::PodState,
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

/// The uplink's XDP program, the pods' pass-through XDP programs, the
/// prefilter's deny list and the socket load balancer (the node
/// namespace's cookie, the one namespace it acts in, is in the settings).
/// Returns the mode `np_xdp_uplink` runs in (`None`: no uplink).
///
/// `np_xdp_pod` is attached to every pod's `eth0` while the uplink runs
/// native XDP (veth delivers redirected frames only to a peer with NAPI
/// on); generic XDP redirects the skb itself and needs none. Pins of pods
/// that are gone are removed.
pub fn configure_fast_paths(
    node: &Node,
    dp: &mut Datapath,
    desired: &DesiredNode,
    pods: &BTreeMap<String, PodState>,
) -> Result<Option<XdpMode>, StepError> {
    let rules: Vec<(Ipv4Net, DenyRule)> = (0_u32..)
        .zip(&desired.deny_sources)
        .map(|(id, net)| (*net, DenyRule { id }))
        .collect();
    dp.maps().lb_mut().sync_prefilter(&rules)?;

    dp.attach_sock_lb()?;

    let Some(uplink) = &desired.uplink else {
        return Ok(None);
    };
    let mode = dp.attach_xdp_uplink(&node.netns, &uplink.name, desired.xdp)?;
    info!("np_xdp_uplink on {}: {mode}", uplink.name);
    for pod in pods.values() {
        if mode == XdpMode::Native {
            let ns = match &pod.netns {
                PodNetns::Owned(name) => Netns::open(name)?,
                PodNetns::Given { path } => Netns::open_path(path)?,
            };
            dp.attach_xdp_pod(&ns, &pod.ifname, &pod.host_ifname)?;
        } else {
            dp.detach_xdp_pod(&pod.host_ifname)?;
        }
    }
    for host_ifname in dp.xdp_pod_pins() {
        if !pods.values().any(|p| p.host_ifname == host_ifname) {
            dp.detach_xdp_pod(&host_ifname)?;
        }
    }
    Ok(Some(mode))
}

/// Whether what [`configure_fast_paths`] makes is in place: the prefilter
/// holds the deny list, the socket hooks' links are pinned, and the
/// uplink's XDP link is pinned in the desired mode (native may have fallen
/// back to generic) with, in native mode, every pod's.
pub fn fast_paths_ok(
    pins: &PinDir,
    maps: &NodeMaps,
    desired: &DesiredNode,
    pods: &BTreeMap<String, PodState>,
) -> bool {
    let mut want: Vec<Ipv4Net> = desired.deny_sources.clone();
    want.sort();
    let mut have: Vec<Ipv4Net> = match maps.lb().prefilter() {
        Ok(rules) => rules.into_iter().map(|(net, _)| net).collect(),
        Err(_) => return false,
    };
    have.sort();
    if have != want || !sock_lb_pinned(pins) {
        return false;
    }
    let Some(uplink) = &desired.uplink else {
        return true;
    };
    let pinned: Vec<UplinkXdp> = UplinkXdp::ALL
        .into_iter()
        .filter(|how| uplink_pinned(pins, &uplink.name, *how))
        .collect();
    let pods_attached = |attached: bool| {
        pods.values()
            .all(|p| pod_pinned(pins, &p.host_ifname) == attached)
    };
    match (desired.xdp, pinned.as_slice()) {
        (XdpMode::Native, [UplinkXdp::Native]) => pods_attached(true),
        (XdpMode::Native, [UplinkXdp::Fallback]) | (XdpMode::Generic, [UplinkXdp::Generic]) => {
            pods_attached(false)
        }
        (XdpMode::Off, []) => pods_attached(false),
        _ => false,
    }
}
