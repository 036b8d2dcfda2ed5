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
//! The model is the one a cluster store fills: a list of peers, each a
//! name, a node address and a pod CIDR; the node's own pod CIDR is
//! `node.pod_cidr`. What needs the node (is a peer's address one of the
//! node's own) is checked when the apply is planned.
//!
//! # With etcd
//!
//! ```toml
//! [cluster]
//! cidr = "10.244.0.0/16"
//! etcd_endpoints = ["http://192.168.50.1:2379"]
//! # etcd_prefix = "/netpath/default"   # where the keys live
//! # node_cidr_len = 24                 # the length of each node's pod CIDR
//! # lease_ttl_secs = 10                # how long a dead node's routes outlive it
//! ```
//!
//! The daemon leases the node's pod CIDR ([`crate::etcd`]) and fills the
//! peers from etcd; the rules, checked before anything changes:
//!
//! - **C1 (the lease decides the pod CIDR)**: `node.pod_cidr` may be
//!   omitted; when given (the daemon's kept `desired.toml` always gives
//!   it), it must be a `/node_cidr_len` inside the cluster CIDR, and the
//!   daemon refuses to start when etcd leases it another one (the pods'
//!   addresses are in the given one).
//! - **C2 (one source of peers)**: a file with `etcd_endpoints` has no
//!   `[[peers]]`, and `netpath node add|del` are refused: a static peer is
//!   unknown to etcd, which would lease its pod CIDR to another node. The
//!   daemon's desired state holds the peers etcd reports, and never
//!   persists them (they are read from etcd again at every start).
//! - **C3 (the node is reachable)**: `node.uplink.address` is required: it
//!   is the address the node publishes for its peers.

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

/// The default key prefix in etcd.
pub const DEFAULT_ETCD_PREFIX: &str = "/netpath/default";
/// The default length of a leased pod CIDR.
pub const DEFAULT_NODE_CIDR_LEN: u8 = 24;
/// The default lease TTL, in seconds.
pub const DEFAULT_LEASE_TTL_SECS: u32 = 10;
/// The longest lease TTL accepted, in seconds (an hour: a dead node's
/// routes outlive it this long).
pub const MAX_LEASE_TTL_SECS: u32 = 3600;

/// The `[cluster]` section.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
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
    /// etcd's client URLs (`http://host:port`); non-empty: the node's pod
    /// CIDR is leased from etcd and its peers are etcd's (C1-C3 in the
    /// module doc).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub etcd_endpoints: Vec<String>,
    /// The key prefix in etcd; `None`: [`DEFAULT_ETCD_PREFIX`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_prefix: Option<String>,
    /// The length of each node's leased pod CIDR; `None`:
    /// [`DEFAULT_NODE_CIDR_LEN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cidr_len: Option<u8>,
    /// The lease's TTL in seconds: how long after a node's daemon died its
    /// peers still route to it; `None`: [`DEFAULT_LEASE_TTL_SECS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ttl_secs: Option<u32>,
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

    /// Whether the pod CIDR and the peers come from etcd.
    pub fn uses_etcd(&self) -> bool {
        !self.etcd_endpoints.is_empty()
    }

    /// The etcd key prefix, its default filled in.
    pub fn etcd_prefix(&self) -> &str {
        self.etcd_prefix.as_deref().unwrap_or(DEFAULT_ETCD_PREFIX)
    }

    /// The leased pod CIDRs' length, its default filled in.
    pub fn node_cidr_len(&self) -> u8 {
        self.node_cidr_len.unwrap_or(DEFAULT_NODE_CIDR_LEN)
    }

    /// The lease TTL, its default filled in.
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(
            self.lease_ttl_secs.unwrap_or(DEFAULT_LEASE_TTL_SECS),
        ))
    }

    /// The etcd settings alone (what a running daemon cannot change).
    pub fn etcd_settings(&self) -> (&[String], &str, u8, std::time::Duration) {
        (
            &self.etcd_endpoints,
            self.etcd_prefix(),
            self.node_cidr_len(),
            self.lease_ttl(),
        )
    }
}

impl super::NodeConfig {
    /// Whether `pod_cidr` was left out, for etcd to lease (C1).
    pub fn pod_cidr_is_unset(&self) -> bool {
        is_unset_pod_cidr(&self.pod_cidr)
    }
}

impl Config {
    /// The `[cluster]` section when it uses etcd.
    pub fn etcd_cluster(&self) -> Option<&ClusterConfig> {
        self.cluster.as_ref().filter(|c| c.uses_etcd())
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
    #[error(
        "node.pod_cidr is missing (0.0.0.0/0 reads as missing): give this node's pod CIDR (e.g. \"10.244.1.0/24\"), or set \
         [cluster] etcd_endpoints to lease one from etcd"
    )]
    PodCidrMissing,
    #[error(
        "cluster.etcd_endpoints entry {endpoint:?} is not a client URL; write \
         \"http://HOST:PORT\" (e.g. \"http://192.168.50.1:2379\")"
    )]
    EtcdEndpoint { endpoint: String },
    #[error(
        "cluster.etcd_prefix {prefix:?} must start with '/' and name a directory, e.g. \
         \"/netpath/prod\" (or omit it for {DEFAULT_ETCD_PREFIX})"
    )]
    EtcdPrefix { prefix: String },
    #[error(
        "cluster.node_cidr_len {len} does not fit cluster.cidr {cluster}: use a length between \
         /{} and /30",
        cluster.prefix_len()
    )]
    NodeCidrLen { len: u8, cluster: Ipv4Net },
    #[error("cluster.lease_ttl_secs {secs} is out of range: 1 to {MAX_LEASE_TTL_SECS}")]
    LeaseTtl { secs: u32 },
    #[error(
        "[cluster] etcd_endpoints needs node.uplink with its address: it is the address this \
         node publishes to its peers"
    )]
    EtcdWithoutUplinkAddress,
    #[error(
        "node.pod_cidr {pod_cidr} is not a /{len}: with etcd_endpoints the pod CIDR is leased as \
         a /{len} (cluster.node_cidr_len); omit node.pod_cidr and let etcd decide"
    )]
    PodCidrLen { pod_cidr: Ipv4Net, len: u8 },
    #[error(
        "[[peers]] and [cluster] etcd_endpoints together: with etcd the peers are the nodes \
         etcd knows (one source of truth; a static peer's pod CIDR could be leased to another \
         node). Remove the [[peers]], or remove etcd_endpoints to use static peers"
    )]
    StaticPeersWithEtcd,
    #[error(
        "node.pod_cidr is left for etcd to lease, and only `netpath daemon` joins etcd: start \
         the node's daemon (then `netpath apply -f` goes through it)"
    )]
    PodCidrNotLeased,
    #[error(
        "instance '{instance}' takes its pod CIDR and peers from etcd ([cluster] \
         etcd_endpoints), which only its daemon reads: start `netpath daemon` for it, then \
         `netpath apply -f` goes through it"
    )]
    EtcdNeedsDaemon { instance: String },
}

/// The sentinel that stands for "`node.pod_cidr` not given" (0.0.0.0/0,
/// never a valid pod CIDR): with etcd, the daemon replaces it with the
/// leased CIDR before anything is applied (C1).
pub const UNSET_POD_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);

/// `serde`'s default of `node.pod_cidr`: [`UNSET_POD_CIDR`].
pub(super) fn unset_pod_cidr() -> Ipv4Net {
    UNSET_POD_CIDR
}

/// Whether `node.pod_cidr` was not given.
#[expect(
    clippy::trivially_copy_pass_by_ref,
    reason = "serde's skip_serializing_if passes a reference"
)]
pub(super) fn is_unset_pod_cidr(cidr: &Ipv4Net) -> bool {
    *cidr == UNSET_POD_CIDR
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
        if cluster.uses_etcd() {
            check_etcd(self, cluster)?;
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

impl Config {
    /// The checks of a file (or a whole state an operator sends) on top of
    /// [`Config::validate`]: C1's length and C2. The daemon's own state,
    /// which holds the peers etcd reported, is not a file.
    pub fn check_file(&self) -> Result<(), ConfigError> {
        let Some(cluster) = self.etcd_cluster() else {
            return Ok(());
        };
        if !self.peers.is_empty() {
            return Err(ClusterError::StaticPeersWithEtcd.into());
        }
        let pod_cidr = self.node.pod_cidr;
        if !is_unset_pod_cidr(&pod_cidr) && pod_cidr.prefix_len() != cluster.node_cidr_len() {
            return Err(ClusterError::PodCidrLen {
                pod_cidr,
                len: cluster.node_cidr_len(),
            }
            .into());
        }
        Ok(())
    }
}

/// The etcd settings' checks (C3 and the values' ranges).
fn check_etcd(config: &Config, cluster: &ClusterConfig) -> Result<(), ConfigError> {
    for endpoint in &cluster.etcd_endpoints {
        let rest = endpoint
            .strip_prefix("http://")
            .or_else(|| endpoint.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains(char::is_whitespace)) {
            return Err(ClusterError::EtcdEndpoint {
                endpoint: endpoint.clone(),
            }
            .into());
        }
    }
    let prefix = cluster.etcd_prefix();
    if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
        return Err(ClusterError::EtcdPrefix {
            prefix: prefix.to_owned(),
        }
        .into());
    }
    let len = cluster.node_cidr_len();
    if len < cluster.cidr.prefix_len() || len > 30 {
        return Err(ClusterError::NodeCidrLen {
            len,
            cluster: cluster.cidr,
        }
        .into());
    }
    let secs = cluster.lease_ttl_secs.unwrap_or(DEFAULT_LEASE_TTL_SECS);
    if secs == 0 || secs > MAX_LEASE_TTL_SECS {
        return Err(ClusterError::LeaseTtl { secs }.into());
    }
    if config
        .node
        .uplink
        .as_ref()
        .and_then(|u| u.address)
        .is_none()
    {
        return Err(ClusterError::EtcdWithoutUplinkAddress.into());
    }
    Ok(())
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
