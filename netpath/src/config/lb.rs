//! The load balancer's part of the schema: `[[port_forwards]]` (a node
//! port forwarded to a pod, as `iptables -t nat ... -j DNAT` or the CNI
//! `portmap` plugin) and `[[services]]` (a virtual address with backends,
//! as kube-proxy's), with `node.service_cidr` holding the services' VIPs.
//!
//! ```toml
//! [node]
//! service_cidr = "10.96.0.0/16"    # where service VIPs live (required with [[services]])
//!
//! [[port_forwards]]                # node:8080/tcp → pod blue:80
//! proto = "tcp"                    # "tcp" | "udp"
//! port = 8080                      # the node port; outside [nat] port_range
//! address = "192.168.50.2"         # optional: one node address; default: every uplink
//!                                  # address and the pods' gateway (pods reach it too)
//! to = "blue"                      # a pod name, or "address:port"
//! to_port = 80                     # with a pod; default: `port`
//!
//! [[services]]
//! name = "web"
//! vip = "10.96.0.10"               # inside node.service_cidr
//! port = 80
//! proto = "tcp"
//! backends = ["red", "blue", "192.168.50.1:8080"]   # pod names or "address:port"
//! target_port = 8080               # the pods' port; default: `port`
//! affinity = "client_ip"           # optional: "none" (default) | "client_ip"
//! affinity_timeout = 10800         # seconds (kube-proxy's default)
//! ```

use std::{fmt, net::SocketAddrV4, str::FromStr};

use serde::{Deserialize, Serialize};

/// The transport protocol of a forward or service.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum L4Proto {
    Tcp,
    Udp,
}

impl L4Proto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => netpath_common::proto::TCP,
            Self::Udp => netpath_common::proto::UDP,
        }
    }

    /// From an IP protocol number (`None` for anything but TCP and UDP).
    pub fn from_number(n: u8) -> Option<Self> {
        match n {
            netpath_common::proto::TCP => Some(Self::Tcp),
            netpath_common::proto::UDP => Some(Self::Udp),
            _ => None,
        }
    }
}

impl fmt::Display for L4Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

/// Where a forward or a service sends connections: a pod of this node (by
/// name; its address comes from IPAM) or a fixed `address:port`. Written
/// as one string: anything that parses as `a.b.c.d:port` is an address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Pod(String),
    Address(SocketAddrV4),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pod(name) => f.write_str(name),
            Self::Address(a) => write!(f, "{a}"),
        }
    }
}

impl FromStr for Target {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.parse::<SocketAddrV4>() {
            Ok(a) => Self::Address(a),
            Err(_) => Self::Pod(s.to_owned()),
        })
    }
}

impl Serialize for Target {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(s.parse()
            .unwrap_or_else(|e: std::convert::Infallible| match e {}))
    }
}

/// One `[[port_forwards]]` entry: connections to a node port go to a pod
/// (or an address), with the client's address kept (`iptables -t nat -A
/// PREROUTING -p PROTO --dport PORT -j DNAT --to-destination POD:TO_PORT`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortForwardConfig {
    pub proto: L4Proto,
    /// The node port; never inside `[nat] port_range` (a masqueraded flow
    /// must never take a port a forward listens on).
    pub port: u16,
    /// One address of the node; `None`: every address of the uplink and
    /// the pods' gateway (so pods reach the forward too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
    /// A pod name or `"address:port"`.
    pub to: Target,
    /// The pod's port (only with a pod name); `None`: `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_port: Option<u16>,
}

impl PortForwardConfig {
    /// The destination's port: `to_port`, the address's own, or `port`.
    pub fn target_port(&self) -> u16 {
        match &self.to {
            Target::Address(a) => a.port(),
            Target::Pod(_) => self.to_port.unwrap_or(self.port),
        }
    }
}

/// ClientIP session affinity, as a Kubernetes service's `sessionAffinity`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum SessionAffinity {
    /// Every new connection is placed by Maglev.
    #[default]
    None,
    /// A client's new connections go to the backend its last one got.
    #[value(name = "client_ip")]
    ClientIp,
}

impl SessionAffinity {
    fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// kube-proxy's default ClientIP affinity timeout (`timeoutSeconds`).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;
/// The longest affinity timeout Kubernetes allows (one day).
pub const MAX_AFFINITY_TIMEOUT: u32 = 86_400;

/// One `[[services]]` entry: a virtual address (inside `node.service_cidr`)
/// and port whose connections are spread over backends by Maglev.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// `[a-z0-9][a-z0-9-]*`, at most 32 bytes, unique.
    pub name: String,
    pub vip: std::net::Ipv4Addr,
    pub port: u16,
    pub proto: L4Proto,
    /// Pod names or `"address:port"`; empty: connections are refused.
    #[serde(default)]
    pub backends: Vec<Target>,
    /// The pods' port; `None`: `port`. (An `"address:port"` backend has
    /// its own.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_port: Option<u16>,
    #[serde(default, skip_serializing_if = "SessionAffinity::is_none")]
    pub affinity: SessionAffinity,
    /// Seconds (with `affinity = "client_ip"`); `None`:
    /// [`DEFAULT_AFFINITY_TIMEOUT`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity_timeout: Option<u32>,
}

impl ServiceConfig {
    /// The port of backend `target`: its own, or `target_port`, or `port`.
    pub fn backend_port(&self, target: &Target) -> u16 {
        match target {
            Target::Address(a) => a.port(),
            Target::Pod(_) => self.target_port.unwrap_or(self.port),
        }
    }

    /// The affinity timeout in seconds; 0 without affinity.
    pub fn affinity_timeout_secs(&self) -> u32 {
        match self.affinity {
            SessionAffinity::None => 0,
            SessionAffinity::ClientIp => self.affinity_timeout.unwrap_or(DEFAULT_AFFINITY_TIMEOUT),
        }
    }
}
