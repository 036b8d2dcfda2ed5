//! Several nodes: the peer map and the VXLAN device, planned and applied
//! with the rest of the datapath (`routes::plan_datapath` checks, then
//! `execute::configure_datapath` calls [`configure_cluster`]).
//!
//! - **Resolve** ([`DesiredCluster`]): the cluster CIDR, the node's own
//!   pod CIDR, the peers, and in VXLAN mode the device, VNI and port.
//! - **Check** ([`check_peers`], before anything changes): no peer's
//!   address may be an address of this node.
//! - **Apply** ([`configure_cluster`]): the VXLAN device (created in
//!   external mode with rtnetlink when missing, MTU the uplink's minus the
//!   encapsulation, `np_from_tunnel` on its ingress), then the peer map as
//!   a diff (adding or removing a peer writes or removes that peer's entry
//!   only; the undo log puts the old entries back); a device the mode no
//!   longer needs is removed last.
//! - **Compare** ([`cluster_ok`]): whether the pinned map and the device
//!   already are as desired (then an apply changes nothing).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use log::info;
use netpath_common::peer::{PROG_FROM_TUNNEL, Peer, VXLAN_OVERHEAD, peer_flags};

use super::{error::PlanError, error::StepError, node::Node, undo::Undo};
use crate::{
    config::{
        Config, ConfigError,
        cluster::{ClusterError, ClusterMode, PeerConfig},
    },
    datapath::{Datapath, peers::PeerMap, remove_pin},
    resolve::DesiredNode,
    sys::netlink::{LinkInfo, Netlink},
};

/// The MTU of the VXLAN device when the node has no uplink.
const DEFAULT_TUNNEL_MTU: u32 = 1500 - VXLAN_OVERHEAD;

/// What the node's part of the cluster should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredCluster {
    /// The cluster CIDR (never masqueraded inside).
    pub cidr: Ipv4Net,
    pub mode: ClusterMode,
    /// The node's own pod CIDR.
    pub pod_cidr: Ipv4Net,
    /// The other nodes.
    pub peers: Vec<PeerConfig>,
    /// The VXLAN device in VXLAN mode.
    pub vxlan: Option<DesiredVxlan>,
    /// The VXLAN device's name, in either mode (direct mode removes it).
    pub device_name: String,
}

/// The node's VXLAN device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVxlan {
    pub device: String,
    pub vni: u32,
    pub port: u16,
}

impl DesiredCluster {
    /// The cluster part of a validated configuration; `None` without
    /// `[cluster]`.
    pub fn resolve(config: &Config) -> Option<Self> {
        let c = config.cluster.as_ref()?;
        Some(Self {
            cidr: c.cidr,
            mode: c.mode,
            pod_cidr: config.node.pod_cidr,
            peers: config.peers.clone(),
            device_name: c.device().to_owned(),
            vxlan: (c.mode == ClusterMode::Vxlan).then(|| DesiredVxlan {
                device: c.device().to_owned(),
                vni: c.vni(),
                port: c.port(),
            }),
        })
    }

    /// The peer map's entries (sorted by prefix), with the VXLAN device's
    /// ifindex `tunnel_ifindex` (ignored in direct mode).
    pub fn entries(&self, tunnel_ifindex: u32) -> Vec<(Ipv4Net, Peer)> {
        let mut out = vec![
            (
                self.cidr,
                Peer {
                    flags: peer_flags::CLUSTER,
                    ..Peer::default()
                },
            ),
            (
                self.pod_cidr.trunc(),
                Peer {
                    flags: peer_flags::LOCAL,
                    ..Peer::default()
                },
            ),
        ];
        for p in &self.peers {
            let peer = match &self.vxlan {
                Some(v) => Peer {
                    node_addr: p.node_address.octets(),
                    tunnel_ifindex,
                    vni: v.vni,
                    flags: peer_flags::NODE | peer_flags::VXLAN,
                },
                None => Peer {
                    node_addr: p.node_address.octets(),
                    flags: peer_flags::NODE,
                    ..Peer::default()
                },
            };
            out.push((p.pod_cidr, peer));
        }
        out.sort_by_key(|(n, _)| *n);
        out
    }
}

/// No peer's address may be one of the node's own (any interface's).
pub async fn check_peers(desired: &DesiredNode, nl: &Netlink) -> Result<(), PlanError> {
    let Some(cluster) = &desired.cluster else {
        return Ok(());
    };
    let mut own: Vec<Ipv4Addr> = vec![desired.gateway];
    for link in nl.links().await? {
        own.extend(nl.addresses(link.index).await?.into_iter().map(|(a, _)| a));
    }
    if let Some(addr) = desired.uplink.as_ref().and_then(|u| u.address) {
        own.push(addr.addr());
    }
    for p in &cluster.peers {
        if own.contains(&p.node_address) {
            return Err(ConfigError::from(ClusterError::PeerIsSelf {
                peer: p.name.clone(),
                address: p.node_address,
            })
            .into());
        }
    }
    Ok(())
}

/// The MTU the VXLAN device should have: the uplink's minus the
/// encapsulation.
async fn tunnel_mtu(
    nl: &Netlink,
    desired: &DesiredNode,
) -> Result<u32, crate::sys::netlink::NetlinkError> {
    let uplink = match &desired.uplink {
        Some(u) => nl.link_by_name(&u.name).await?,
        None => None,
    };
    Ok(uplink.map_or(DEFAULT_TUNNEL_MTU, |l| l.mtu.saturating_sub(VXLAN_OVERHEAD)))
}

/// Whether `link` is a VXLAN device as `desired` wants it.
fn device_ok(link: &LinkInfo, mtu: u32) -> bool {
    link.kind.as_deref() == Some("vxlan") && link.up && link.mtu == mtu
}

/// Whether the node already holds the cluster as desired: the peer map's
/// entries, and in VXLAN mode the device and its pinned link.
pub async fn cluster_ok(node: &Node, desired: &DesiredNode) -> Result<bool, PlanError> {
    let have = match PeerMap::open_pinned(&node.pins) {
        Ok(map) => map.entries()?,
        Err(_) => return Ok(desired.cluster.is_none()),
    };
    let Some(cluster) = &desired.cluster else {
        return Ok(have.is_empty());
    };
    let tunnel = match &cluster.vxlan {
        Some(v) => {
            let Some(link) = node.nl.link_by_name(&v.device).await? else {
                return Ok(false);
            };
            let mtu = tunnel_mtu(&node.nl, desired).await?;
            if !device_ok(&link, mtu) || !node.pins.ingress_link(&v.device).exists() {
                return Ok(false);
            }
            link.index
        }
        None => 0,
    };
    Ok(have == cluster.entries(tunnel))
}

/// Applies the cluster part of `desired` (see the module docs): the VXLAN
/// device and its program, then the peer map as a diff; every step pushes
/// its undo. A node without `[cluster]` gets an empty peer map.
pub async fn configure_cluster(
    node: &Node,
    desired: &DesiredNode,
    dp: &mut Datapath,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let mut map = PeerMap::open_pinned(&node.pins)?;
    let before = map.entries()?;
    let Some(cluster) = &desired.cluster else {
        if !before.is_empty() {
            undo.push(Undo::RestorePeers(before));
            map.sync(&[])?;
        }
        return Ok(());
    };
    let mut tunnel = 0;
    if let Some(v) = &cluster.vxlan {
        let mtu = tunnel_mtu(&node.nl, desired).await?;
        let link = match node.nl.link_by_name(&v.device).await? {
            Some(link) if link.kind.as_deref() == Some("vxlan") => link,
            Some(link) => {
                return Err(ClusterStepError::DeviceTaken {
                    name: link.name,
                    kind: link.kind.unwrap_or_else(|| "none".into()),
                }
                .into());
            }
            None => {
                info!(
                    "cluster: creating vxlan device {} (external, dstport {}, mtu {mtu})",
                    v.device, v.port
                );
                node.nl.add_vxlan_external(&v.device, v.port, mtu).await?;
                undo.push(Undo::DeleteLink {
                    ifname: v.device.clone(),
                });
                node.nl.link_by_name(&v.device).await?.ok_or_else(|| {
                    crate::sys::netlink::NetlinkError::NotFound {
                        what: format!("vxlan device {} after creating it", v.device),
                    }
                })?
            }
        };
        if link.mtu != mtu {
            node.nl.set_mtu(link.index, mtu).await?;
        }
        node.nl.set_up(link.index).await?;
        dp.attach_ingress(PROG_FROM_TUNNEL, &node.netns, &v.device)?;
        tunnel = link.index;
    }
    let want = cluster.entries(tunnel);
    if before != want {
        undo.push(Undo::RestorePeers(before));
        let (written, removed) = map.sync(&want)?;
        info!("cluster: peer map: {written} entries written, {removed} removed");
    }
    Ok(())
}

/// Removes the VXLAN device `name` when the desired node has none (a
/// switch to direct mode, or no cluster any more): last, as it cannot be
/// undone.
pub async fn remove_stale_device(
    node: &Node,
    desired: &DesiredNode,
    name: &str,
) -> Result<(), StepError> {
    if desired
        .cluster
        .as_ref()
        .and_then(|c| c.vxlan.as_ref())
        .is_some_and(|v| v.device == name)
    {
        return Ok(());
    }
    if let Some(link) = node.nl.link_by_name(name).await?
        && link.kind.as_deref() == Some("vxlan")
    {
        info!("cluster: removing vxlan device {name}");
        remove_pin(&node.pins.ingress_link(name))?;
        node.nl.delete_link(link.index).await?;
    }
    Ok(())
}

/// Removes the VXLAN devices the instance's peer map points to, and one
/// of the default name (`netpath destroy`).
pub async fn delete_devices(nl: &Netlink, pins: &crate::datapath::PinDir) -> Result<(), StepError> {
    let mut indexes: Vec<u32> = match PeerMap::open_pinned(pins) {
        Ok(map) => map
            .entries()?
            .into_iter()
            .map(|(_, p)| p.tunnel_ifindex)
            .filter(|i| *i != 0)
            .collect(),
        Err(_) => Vec::new(),
    };
    if let Some(link) = nl
        .link_by_name(crate::config::cluster::DEFAULT_VXLAN_DEVICE)
        .await?
    {
        indexes.push(link.index);
    }
    indexes.sort_unstable();
    indexes.dedup();
    for index in indexes {
        if let Some(link) = nl.link_by_index(index).await?
            && link.kind.as_deref() == Some("vxlan")
        {
            info!("cluster: removing vxlan device {}", link.name);
            nl.delete_link(index).await?;
        }
    }
    Ok(())
}

/// A cluster step that cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum ClusterStepError {
    #[error(
        "interface {name} exists and is no vxlan device (kind {kind}); remove it or set \
         cluster.vxlan_device to another name"
    )]
    DeviceTaken { name: String, kind: String },
}
