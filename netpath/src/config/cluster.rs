//! Several nodes: `[cluster]` (the cluster CIDR and how pods reach other
//! nodes' pods) and `[[peers]]` (the other nodes, static), their checks
//! ([`Config::check_cluster`]) and errors ([`ClusterError`]).
//!
//! ```toml
//! [cluster]
//! cidr = "10.244.0.0/16"        # every node's pod CIDR lies inside; never masqueraded
//! mode = "direct"               # "direct" (routed to the peer's address) | "vxlan"
//! vxlan_vni = 1                 # optional (default 1)
//! vxlan_port = 8472             # optional (default 8472, as flannel)
//! vxlan_device = "np-vxlan"     # optional (default "np-vxlan")
//!
//! [[peers]]
//! name = "node2"
//! node_address = "192.168.50.3" # the peer's address on the shared network
//! pod_cidr = "10.244.2.0/24"
//! ```
//!
//! The model is the one a cluster store (etcd leases) would fill: a list
//! of peers, each a name, a node address and a pod CIDR; the node's own
//! pod CIDR is `node.pod_cidr`. What needs the node (is a peer's address
//! one of the node's own) is checked when the apply is planned.

use std::{collections::BTreeMap, fmt, net::Ipv4Addr};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{
    error::ConfigError,
    schema::Config,
    validate::{check_name, overlaps},
};

/// The default VNI (flannel's).
pub const DEFAULT_VXLAN_VNI: u32 = 1;
/// The default VXLAN UDP port (the Linux kernel's and flannel's 8472).
pub const DEFAULT_VXLAN_PORT: u16 = 8472;
/// The default name of the VXLAN device in the node namespace.
pub const DEFAULT_VXLAN_DEVICE: &str = "np-vxlan";
/// The largest VNI (24 bits).
pub const MAX_VXLAN_VNI: u32 = (1 << 24) - 1;

/// How pods reach the pods of other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClusterMode {
    /// Sent unchanged to the peer's node address (the nodes share a
    /// network, or the network routes nothing but node addresses to them).
    #[default]
    Direct,
    /// Encapsulated in VXLAN to the peer's node address (a network that
    /// does not route pod CIDRs).
    Vxlan,
}

impl fmt::Display for ClusterMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Direct => "direct",
            Self::Vxlan => "vxlan",
        })
    }
}

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Every node's pod CIDR lies inside; traffic between pods inside it
    /// is never masqueraded.
    pub cidr: Ipv4Net,
    /// `direct` (default) or `vxlan`.
    #[serde(default)]
    pub mode: ClusterMode,
    /// The VNI (1 to 2^24 − 1); `None`: [`DEFAULT_VXLAN_VNI`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_vni: Option<u32>,
    /// The VXLAN UDP port; `None`: [`DEFAULT_VXLAN_PORT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_port: Option<u16>,
    /// The VXLAN device's name; `None`: [`DEFAULT_VXLAN_DEVICE`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan_device: Option<String>,
}

impl ClusterConfig {
    /// The VNI, its default filled in.
    pub fn vni(&self) -> u32 {
        self.vxlan_vni.unwrap_or(DEFAULT_VXLAN_VNI)
    }

    /// The UDP port, its default filled in.
    pub fn port(&self) -> u16 {
        self.vxlan_port.unwrap_or(DEFAULT_VXLAN_PORT)
    }

    /// The VXLAN device's name, its default filled in.
    pub fn device(&self) -> &str {
        self.vxlan_device.as_deref().unwrap_or(DEFAULT_VXLAN_DEVICE)
    }
}

/// One `[[peers]]` entry: another node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's name, `[a-z0-9][a-z0-9-]*`, unique.
    pub name: String,
    /// The peer's address, reachable from this node (the next hop of its
    /// pods, or the tunnel's remote end).
    pub node_address: Ipv4Addr,
    /// The peer's pod CIDR, inside the cluster CIDR.
    pub pod_cidr: Ipv4Net,
}

/// What is wrong with `[cluster]` or `[[peers]]`, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[[peers]] needs a [cluster] section with its cidr (e.g. cidr = \"10.244.0.0/16\")")]
    PeersWithoutCluster,
    #[error("cluster.cidr {cidr} has host bits set; write its network address, {network}")]
    CidrNotNetwork { cidr: Ipv4Net, network: Ipv4Net },
    #[error(
        "node.pod_cidr {pod_cidr} is not inside cluster.cidr {cluster}: every node's pod CIDR \
         must be a part of the cluster CIDR"
    )]
    NodeCidrOutside { pod_cidr: Ipv4Net, cluster: Ipv4Net },
    #[error(
        "peer {peer}: pod_cidr {pod_cidr} is not inside cluster.cidr {cluster}; give it a part \
         of the cluster CIDR"
    )]
    PeerCidrOutside {
        peer: String,
        pod_cidr: Ipv4Net,
        cluster: Ipv4Net,
    },
    #[error("peer {peer}: pod_cidr {pod_cidr} has host bits set; write {network}")]
    PeerCidrNotNetwork {
        peer: String,
        pod_cidr: Ipv4Net,
        network: Ipv4Net,
    },
    #[error(
        "peer {peer}: pod_cidr {pod_cidr} overlaps {other_what} {other}; every node needs a \
         pod CIDR of its own"
    )]
    PeerCidrOverlap {
        peer: String,
        pod_cidr: Ipv4Net,
        other_what: String,
        other: Ipv4Net,
    },
    #[error("two peers are named {name}; peer names are unique")]
    DuplicatePeer { name: String },
    #[error("peers {first} and {second} both have node_address {address}; one node, one peer")]
    DuplicatePeerAddress {
        address: Ipv4Addr,
        first: String,
        second: String,
    },
    #[error(
        "peer {peer}: node_address {address} is this node's own address; a peer is another \
         node"
    )]
    PeerIsSelf { peer: String, address: Ipv4Addr },
    #[error("peer {peer}: node_address {address} is not a unicast address a node can have ({why})")]
    PeerAddress {
        peer: String,
        address: Ipv4Addr,
        why: &'static str,
    },
    #[error("cluster.vxlan_vni {vni} is out of range: 1 to {MAX_VXLAN_VNI}")]
    Vni { vni: u32 },
    #[error("cluster.vxlan_port 0 is no port; omit it for {DEFAULT_VXLAN_PORT}")]
    Port,
    #[error(
        "cluster.vxlan_device {name:?} is not a usable interface name (1 to 15 bytes, no '/', \
         whitespace or ':')"
    )]
    Device { name: String },
}

impl Config {
    /// The checks of `[cluster]` and `[[peers]]` that need no system state.
    pub(super) fn check_cluster(&self) -> Result<(), ConfigError> {
        let Some(cluster) = &self.cluster else {
            if self.peers.is_empty() {
                return Ok(());
            }
            return Err(ClusterError::PeersWithoutCluster.into());
        };
        let cidr = cluster.cidr;
        if cidr.trunc() != cidr {
            return Err(ClusterError::CidrNotNetwork {
                cidr,
                network: cidr.trunc(),
            }
            .into());
        }
        let pod_cidr = self.node.pod_cidr;
        if !cidr.contains(&pod_cidr) {
            return Err(ClusterError::NodeCidrOutside {
                pod_cidr,
                cluster: cidr,
            }
            .into());
        }
        let vni = cluster.vni();
        if vni == 0 || vni > MAX_VXLAN_VNI {
            return Err(ClusterError::Vni { vni }.into());
        }
        if cluster.vxlan_port == Some(0) {
            return Err(ClusterError::Port.into());
        }
        let device = cluster.device();
        if device.is_empty()
            || device.len() > super::MAX_IFNAME_LEN
            || device.contains(['/', ':'])
            || device.contains(char::is_whitespace)
        {
            return Err(ClusterError::Device {
                name: device.to_owned(),
            }
            .into());
        }
        let own = self.node.uplink.as_ref().and_then(|u| u.address);
        let mut names: BTreeMap<&str, ()> = BTreeMap::new();
        let mut addresses: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            check_peer(peer, cidr, pod_cidr, own)?;
            if names.insert(&peer.name, ()).is_some() {
                return Err(ClusterError::DuplicatePeer {
                    name: peer.name.clone(),
                }
                .into());
            }
            if let Some(first) = addresses.insert(peer.node_address, &peer.name) {
                return Err(ClusterError::DuplicatePeerAddress {
                    address: peer.node_address,
                    first: first.to_owned(),
                    second: peer.name.clone(),
                }
                .into());
            }
            for other in &self.peers[..i] {
                if overlaps(peer.pod_cidr, other.pod_cidr) {
                    return Err(ClusterError::PeerCidrOverlap {
                        peer: peer.name.clone(),
                        pod_cidr: peer.pod_cidr,
                        other_what: format!("peer {}'s pod_cidr", other.name),
                        other: other.pod_cidr,
                    }
                    .into());
                }
            }
        }
        Ok(())
    }
}

/// One peer's own checks: its name, address and pod CIDR against the
/// cluster CIDR, the node's pod CIDR and the node's configured address.
fn check_peer(
    peer: &PeerConfig,
    cluster: Ipv4Net,
    pod_cidr: Ipv4Net,
    own: Option<Ipv4Net>,
) -> Result<(), ConfigError> {
    check_name("peer name", &peer.name)?;
    let address = peer.node_address;
    let why = if address.is_unspecified() {
        Some("0.0.0.0")
    } else if address.is_loopback() {
        Some("loopback")
    } else if address.is_multicast() {
        Some("multicast")
    } else if address.is_broadcast() {
        Some("broadcast")
    } else {
        None
    };
    if let Some(why) = why {
        return Err(ClusterError::PeerAddress {
            peer: peer.name.clone(),
            address,
            why,
        }
        .into());
    }
    if own.is_some_and(|o| o.addr() == address) {
        return Err(ClusterError::PeerIsSelf {
            peer: peer.name.clone(),
            address,
        }
        .into());
    }
    let net = peer.pod_cidr;
    if net.trunc() != net {
        return Err(ClusterError::PeerCidrNotNetwork {
            peer: peer.name.clone(),
            pod_cidr: net,
            network: net.trunc(),
        }
        .into());
    }
    if !cluster.contains(&net) {
        return Err(ClusterError::PeerCidrOutside {
            peer: peer.name.clone(),
            pod_cidr: net,
            cluster,
        }
        .into());
    }
    if overlaps(net, pod_cidr) {
        return Err(ClusterError::PeerCidrOverlap {
            peer: peer.name.clone(),
            pod_cidr: net,
            other_what: "this node's node.pod_cidr".into(),
            other: pod_cidr,
        }
        .into());
    }
    Ok(())
}
