//! The desired state of one node, read from TOML.
//!
//! ```toml
//! [node]
//! name = "demo"                    # instance name; pins live under /sys/fs/bpf/netpath/<name>/
//! netns = "netpath-demo-node"      # optional: the named namespace that is the node
//! pod_cidr = "10.200.0.0/24"       # IPv4, prefix length <= 30
//! gateway = "10.200.0.1"           # optional; default: first host address of pod_cidr
//! pod_netns_prefix = "demo-"       # optional; default "<name>-"
//!
//! [node.uplink]                    # optional
//! name = "uplink0"                 # an interface in the node namespace
//! address = "192.168.50.2/24"      # optional: netpath assigns it if given
//! gateway = "192.168.50.1"         # optional: the pods' default route (via the uplink)
//!
//! [[pods]]
//! name = "red"                     # unique
//! address = "10.200.0.10"          # optional; IPAM picks otherwise
//! host_ifname = "np-red"           # optional; default "np-<name>"
//!
//! [[routes]]                       # `ip route add DST via VIA dev DEV`, for pod traffic
//! dst = "192.168.70.0/24"
//! via = "192.168.60.1"             # optional if dev is given (directly connected)
//! dev = "uplink1"                  # optional; default node.uplink.name
//!
//! [[masquerade]]                   # `iptables -t nat -A POSTROUTING -s SOURCE -o OUT -j MASQUERADE`
//! source = "10.200.0.0/24"         # optional; default pod_cidr
//! out = "uplink0"                  # optional; default node.uplink.name
//! address = "192.168.50.2"         # optional (SNAT --to-source); default: out's first IPv4
//!                                  # address (node.uplink.address when out is the uplink)
//!
//! [nat]
//! port_range = "32768-60999"       # the source ports SNAT hands out
//!
//! [conntrack]                      # every key optional; timeouts in seconds
//! max_entries = 262144
//! tcp_syn_timeout = 120
//! tcp_established_timeout = 432000
//! tcp_fin_timeout = 120
//! tcp_close_timeout = 10
//! udp_timeout = 30
//! udp_stream_timeout = 120
//! icmp_timeout = 30
//! gc_interval = 10                 # how often the daemon (and the demo) collect expired entries
//! ```
//!
//! Unknown keys are errors. [`Config::validate`] makes every check that needs
//! no system state and reports the first problem, in a fixed order (node
//! fields, then the uplink, then each pod in order, then the pod count, then
//! routes, masquerade rules, `[nat]` and `[conntrack]`);
//! [`Config::check_overlaps`] checks the pod CIDR against the networks the
//! caller found on the node. What needs the node (does `dev` exist, is `via`
//! on its network, which address does `out` have) the controller checks
//! before it changes anything.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt, fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use netpath_common::NodeSettings;

use crate::ipam::Ipam;

/// The longest instance or pod name, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// The longest Linux interface name, in bytes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// The longest pod CIDR prefix: a /30 still holds one pod besides the gateway.
pub const MAX_POD_PREFIX_LEN: u8 = 30;
/// The longest network namespace name, in bytes (a file name under `/run/netns`).
pub const MAX_NETNS_LEN: usize = 255;
/// What a pod's default host-side interface name starts with.
pub const HOST_IFNAME_PREFIX: &str = "np-";
/// The device in the node namespace that holds the gateway address (a veth
/// whose peer is `np0-peer`); no pod or uplink may use this name. (The
/// controller creates it.)
pub const GATEWAY_IFNAME: &str = "np0";
/// The peer of [`GATEWAY_IFNAME`]; reserved as well.
pub const GATEWAY_PEER_IFNAME: &str = "np0-peer";
/// The smallest connection table `[conntrack] max_entries` allows.
pub const MIN_CONNTRACK_ENTRIES: u32 = 1024;
/// The largest connection table `[conntrack] max_entries` allows (16 Mi
/// entries; each costs about 100 bytes in the table and its reverse map).
pub const MAX_CONNTRACK_ENTRIES: u32 = 1 << 24;
/// The most routes (declared, plus the default route) the route map holds.
pub const MAX_ROUTES: usize = netpath_common::maps::ROUTES_MAX as usize;
/// The most masquerade rules the masquerade map holds.
pub const MAX_MASQUERADE: usize = netpath_common::maps::MASQ_MAX as usize;

/// Address ranges a pod CIDR must not overlap, and why.
const SPECIAL_RANGES: &[(Ipv4Net, &str)] = &[
    (net(0, 0, 0, 0, 8), "\"this network\""),
    (net(127, 0, 0, 0, 8), "loopback"),
    (net(224, 0, 0, 0, 4), "multicast"),
    (net(240, 0, 0, 0, 4), "reserved (and limited broadcast)"),
];

const fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

/// The desired state of one node: the node itself and its pods.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The node (`[node]`).
    pub node: NodeConfig,
    /// The pods (`[[pods]]`), in the order IPAM serves them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pods: Vec<PodConfig>,
    /// Routes for pod traffic leaving the node (`[[routes]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConfig>,
    /// Source NAT rules (`[[masquerade]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub masquerade: Vec<MasqueradeConfig>,
    /// NAT settings (`[nat]`).
    #[serde(default, skip_serializing_if = "NatConfig::is_default")]
    pub nat: NatConfig,
    /// Connection tracking settings (`[conntrack]`).
    #[serde(default, skip_serializing_if = "ConntrackConfig::is_default")]
    pub conntrack: ConntrackConfig,
}

/// The `[node]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The instance name, `[a-z0-9][a-z0-9-]*`, at most 32 bytes; pins live
    /// under `/sys/fs/bpf/netpath/<name>/`.
    pub name: String,
    /// The named network namespace (`/run/netns/<netns>`) that is the node;
    /// `None` means the namespace netpath runs in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    /// The pod addresses, IPv4, prefix length at most 30.
    pub pod_cidr: Ipv4Net,
    /// The pods' gateway; `None` means the first host address of `pod_cidr`
    /// (see [`Config::gateway`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// What pod namespace names start with; `None` means `"<name>-"` (see
    /// [`Config::pod_netns`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_netns_prefix: Option<String>,
    /// The interface that leads out of the node (`[node.uplink]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkConfig>,
}

/// The `[node.uplink]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// An interface in the node namespace, at most 15 bytes.
    pub name: String,
    /// The uplink's address and prefix; netpath assigns it if given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Net>,
    /// The next hop of the pods' default route (`0.0.0.0/0 via GATEWAY dev
    /// <uplink>` in the route map); inside the uplink's network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
}

/// One `[[routes]]` entry: where pod traffic to `dst` leaves the node, like
/// `ip route add DST via VIA dev DEV` in the classic recipe (but only for
/// pod traffic: it goes into netpath's route map, not the node's FIB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The destination prefix (its network address).
    pub dst: Ipv4Net,
    /// The next hop, on a network of `dev`; `None` means `dst` is directly
    /// connected on `dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<Ipv4Addr>,
    /// The egress interface in the node namespace; `None` means
    /// `node.uplink.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
}

/// One `[[masquerade]]` entry: pod traffic from `source` that leaves through
/// `out` gets `out`'s address (or `address`) as its source, like `iptables
/// -t nat -A POSTROUTING -s SOURCE -o OUT -j MASQUERADE` (or `-j SNAT
/// --to-source ADDRESS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasqueradeConfig {
    /// The source prefix; `None` means `node.pod_cidr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Ipv4Net>,
    /// The egress interface; `None` means `node.uplink.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    /// A fixed NAT address; `None` means the first IPv4 address of `out`
    /// when the configuration is applied (`node.uplink.address`, if given,
    /// when `out` is the uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

/// The `[nat]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatConfig {
    /// The source ports SNAT hands out (`"MIN-MAX"`, inclusive). The
    /// original port is kept when it is inside the range and free.
    pub port_range: PortRange,
}

impl Default for NatConfig {
    fn default() -> Self {
        let d = NodeSettings::DEFAULT;
        Self {
            port_range: PortRange {
                min: d.nat_port_min,
                max: d.nat_port_max,
            },
        }
    }
}

impl NatConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// An inclusive port range, written `"MIN-MAX"` (or `"PORT"` for one port).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub min: u16,
    pub max: u16,
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| {
                format!(
                    "port range {s:?}: {p:?} is not a port number (0-65535); write \"MIN-MAX\", \
                     e.g. \"32768-60999\""
                )
            })
        };
        match s.split_once('-') {
            Some((min, max)) => Ok(Self {
                min: port(min)?,
                max: port(max)?,
            }),
            None => {
                let p = port(s)?;
                Ok(Self { min: p, max: p })
            }
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The `[conntrack]` section: the size of the connection table and how long
/// an idle connection lives in each state (seconds, as netfilter's
/// `nf_conntrack_*_timeout` sysctls; the defaults are netfilter's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConntrackConfig {
    /// Entries of the connection table (and of the reverse NAT map); when
    /// full, the least recently used connection is evicted.
    pub max_entries: u32,
    pub tcp_syn_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_fin_timeout: u32,
    pub tcp_close_timeout: u32,
    /// UDP flows that saw no reply.
    pub udp_timeout: u32,
    /// UDP flows that saw a reply.
    pub udp_stream_timeout: u32,
    pub icmp_timeout: u32,
    /// Seconds between two garbage collections of expired entries by
    /// `netpath daemon` and `netpath demo`.
    pub gc_interval: u32,
}

impl Default for ConntrackConfig {
    fn default() -> Self {
        let d = NodeSettings::DEFAULT;
        Self {
            max_entries: netpath_common::maps::CONNTRACK_DEFAULT_MAX,
            tcp_syn_timeout: d.tcp_syn_timeout,
            tcp_established_timeout: d.tcp_established_timeout,
            tcp_fin_timeout: d.tcp_fin_timeout,
            tcp_close_timeout: d.tcp_close_timeout,
            udp_timeout: d.udp_timeout,
            udp_stream_timeout: d.udp_stream_timeout,
            icmp_timeout: d.icmp_timeout,
            gc_interval: 10,
        }
    }
}

impl ConntrackConfig {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The timeouts by name, in the order of the section.
    fn timeouts(&self) -> [(&'static str, u32); 8] {
        [
            ("tcp_syn_timeout", self.tcp_syn_timeout),
            ("tcp_established_timeout", self.tcp_established_timeout),
            ("tcp_fin_timeout", self.tcp_fin_timeout),
            ("tcp_close_timeout", self.tcp_close_timeout),
            ("udp_timeout", self.udp_timeout),
            ("udp_stream_timeout", self.udp_stream_timeout),
            ("icmp_timeout", self.icmp_timeout),
            ("gc_interval", self.gc_interval),
        ]
    }
}

/// One `[[pods]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodConfig {
    /// The pod name, `[a-z0-9][a-z0-9-]*`, at most 32 bytes, unique.
    pub name: String,
    /// A fixed address inside the pod CIDR; `None` lets IPAM choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
    /// The host-side veth name; `None` means `"np-<name>"` (see
    /// [`Config::host_ifname`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
}

/// Who an interface name in the configuration belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfnameOwner {
    /// `node.uplink.name`.
    Uplink,
    /// A pod's host-side interface.
    Pod {
        /// The pod name.
        pod: String,
        /// Whether the name was set with `host_ifname` (else it is the
        /// default `np-<pod name>`).
        explicit: bool,
    },
    /// The `dev` of a `[[routes]]` entry.
    Route {
        /// The route's destination.
        dst: Ipv4Net,
    },
    /// The `out` of a `[[masquerade]]` entry.
    Masquerade {
        /// The rule's source prefix.
        source: Ipv4Net,
    },
}

impl IfnameOwner {
    fn pod(pod: &PodConfig) -> Self {
        Self::Pod {
            pod: pod.name.clone(),
            explicit: pod.host_ifname.is_some(),
        }
    }

    /// "interface name" or "host interface name".
    fn kind(&self) -> &'static str {
        match self {
            Self::Uplink => "interface name",
            Self::Pod { .. } => "host interface name",
            Self::Route { .. } => "dev",
            Self::Masquerade { .. } => "out",
        }
    }

    /// What to change when the name is too long.
    fn too_long_hint(&self) -> String {
        match self {
            Self::Uplink => {
                "Set node.uplink.name to the name of an interface in the node namespace.".into()
            }
            Self::Pod {
                explicit: false, ..
            } => format!(
                "Use a pod name of at most {} bytes or set host_ifname.",
                MAX_IFNAME_LEN - HOST_IFNAME_PREFIX.len()
            ),
            Self::Pod { explicit: true, .. } => "Shorten host_ifname.".into(),
            Self::Route { .. } => {
                "Set dev to the name of an interface in the node namespace.".into()
            }
            Self::Masquerade { .. } => {
                "Set out to the name of an interface in the node namespace.".into()
            }
        }
    }

    /// What to change when the name is invalid or taken.
    fn fix_hint(&self) -> &'static str {
        match self {
            Self::Uplink => {
                "set node.uplink.name to the name of an interface in the node namespace"
            }
            Self::Pod {
                explicit: false, ..
            } => "set host_ifname for this pod",
            Self::Pod { explicit: true, .. } => "choose another host_ifname",
            Self::Route { .. } => "set dev to the name of an interface in the node namespace",
            Self::Masquerade { .. } => "set out to the name of an interface in the node namespace",
        }
    }
}

impl fmt::Display for IfnameOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Uplink => f.write_str("node.uplink"),
            Self::Pod { pod, .. } => write!(f, "pod '{pod}'"),
            Self::Route { dst } => write!(f, "route to {dst}"),
            Self::Masquerade { source } => write!(f, "masquerade rule for {source}"),
        }
    }
}

/// What is wrong with a configuration, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration file could not be read.
    #[error("cannot read the configuration file {}: {source}; check the path and its permissions", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The text is not TOML, or not the shape of a configuration (unknown
    /// or missing keys, wrong types, a malformed address).
    #[error("{origin} is not a valid netpath configuration: {source}")]
    Parse {
        /// The file path, or `<string>`.
        origin: String,
        /// The parser's complaint (with line and column).
        source: toml::de::Error,
    },
    /// The instance name or a pod name breaks the naming rule.
    #[error(
        "{what} '{name}' is invalid: {why}; use 1 to {MAX_NAME_LEN} bytes of a-z, 0-9 and '-', \
         starting with a letter or digit"
    )]
    InvalidName {
        /// `node.name` or `pod name`.
        what: &'static str,
        /// The name.
        name: String,
        /// The broken rule.
        why: String,
    },
    /// `node.netns` or `node.pod_netns_prefix` cannot name a network namespace.
    #[error("{field} '{value}' cannot name a network namespace: {why}; {hint}")]
    InvalidNetns {
        /// `node.netns` or `node.pod_netns_prefix`.
        field: &'static str,
        /// The value.
        value: String,
        /// The broken rule.
        why: String,
        /// What to do.
        hint: &'static str,
    },
    /// An interface name is longer than Linux allows.
    #[error(
        "{owner}: {kind} '{name}' is {len} bytes; Linux allows at most {MAX_IFNAME_LEN}. {hint}",
        kind = .owner.kind(),
        hint = .owner.too_long_hint()
    )]
    IfnameTooLong {
        /// Whose name it is.
        owner: IfnameOwner,
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// An interface name Linux rejects, or one netpath keeps for itself.
    #[error("{owner}: {kind} '{name}' is not usable: {why}; {hint}", kind = .owner.kind(), hint = .owner.fix_hint())]
    InvalidIfname {
        /// Whose name it is.
        owner: IfnameOwner,
        /// The name.
        name: String,
        /// The broken rule.
        why: String,
    },
    /// Two pods have the same name.
    #[error(
        "pod '{name}' is listed more than once; pod names must be unique: rename or remove one"
    )]
    DuplicatePod {
        /// The name.
        name: String,
    },
    /// Two interfaces (pods' host sides or the uplink) have the same name.
    #[error(
        "interface name '{name}' is used by both {first} and {second}; give {second} another \
         name with host_ifname"
    )]
    DuplicateIfname {
        /// The name.
        name: String,
        /// Who uses it first (the uplink, or an earlier pod).
        first: IfnameOwner,
        /// The pod that uses it again.
        second: IfnameOwner,
    },
    /// Two pods ask for the same address.
    #[error(
        "pod '{second}' asks for address {address}, which pod '{first}' already asks for; \
         pick another address or omit `address` to let IPAM choose"
    )]
    DuplicateAddress {
        /// The address.
        address: Ipv4Addr,
        /// The first pod asking for it.
        first: String,
        /// The later pod asking for it.
        second: String,
    },
    /// A pod address is outside the pod CIDR.
    #[error(
        "pod '{pod}': address {address} is outside the pod CIDR {pod_cidr}; pick an address \
         inside it or omit `address` to let IPAM choose"
    )]
    AddressOutsideCidr {
        /// The pod.
        pod: String,
        /// The address it asks for.
        address: Ipv4Addr,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
    },
    /// A pod address is the network, broadcast or gateway address.
    #[error(
        "pod '{pod}': address {address} is the {why} of the pod CIDR {pod_cidr}; pick another \
         address or omit `address` to let IPAM choose"
    )]
    AddressReserved {
        /// The pod.
        pod: String,
        /// The address it asks for.
        address: Ipv4Addr,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// `network address`, `broadcast address` or `gateway`.
        why: &'static str,
    },
    /// The gateway is outside the pod CIDR.
    #[error(
        "gateway {gateway} is outside the pod CIDR {pod_cidr}; pick an address inside it or \
         omit `gateway` to use the first host address"
    )]
    GatewayOutsideCidr {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
    },
    /// The gateway is the network or broadcast address.
    #[error(
        "gateway {gateway} is the {why} of the pod CIDR {pod_cidr}; pick a host address or \
         omit `gateway` to use the first host address"
    )]
    GatewayReserved {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// `network address` or `broadcast address`.
        why: &'static str,
    },
    /// The pod CIDR leaves no room for a gateway and a pod.
    #[error(
        "pod_cidr {pod_cidr} is too small: the prefix length must be at most \
         {MAX_POD_PREFIX_LEN} (a /30 holds one pod); use a shorter prefix"
    )]
    PrefixTooLong {
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
    },
    /// The pod CIDR has host bits set.
    #[error("pod_cidr {pod_cidr} has host bits set; write its network address, {network}")]
    CidrNotNetwork {
        /// The pod CIDR as written.
        pod_cidr: Ipv4Net,
        /// What was probably meant.
        network: Ipv4Net,
    },
    /// The pod CIDR overlaps a range that is not unicast.
    #[error(
        "pod_cidr {pod_cidr} overlaps {range}, the {why} range; use a private range such as \
         10.200.0.0/24"
    )]
    CidrSpecial {
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// The special range.
        range: Ipv4Net,
        /// What the range is for.
        why: &'static str,
    },
    /// More pods than the pod CIDR has addresses for.
    #[error(
        "pod_cidr {pod_cidr} has room for {capacity} pods but {wanted} are configured; use a \
         shorter prefix or fewer pods"
    )]
    CidrExhausted {
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// Its usable addresses (without network, broadcast and gateway).
        capacity: u32,
        /// The configured pods.
        wanted: usize,
    },
    /// The pod CIDR overlaps a network of the uplink.
    #[error(
        "pod_cidr {pod_cidr} overlaps the network {uplink_net} of the uplink {uplink}; pick a \
         pod CIDR that does not overlap it"
    )]
    CidrOverlapsUplink {
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// The uplink's name.
        uplink: String,
        /// The uplink's network.
        uplink_net: Ipv4Net,
    },
    /// The pod CIDR overlaps a network of another interface of the node.
    #[error(
        "pod_cidr {pod_cidr} overlaps the network {network} of interface {ifname} in the node \
         namespace; pick a pod CIDR that does not overlap it"
    )]
    CidrOverlapsInterface {
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
        /// The interface.
        ifname: String,
        /// Its network.
        network: Ipv4Net,
    },
    /// A pod's namespace would be the node's namespace.
    #[error(
        "pod '{pod}': its namespace name '{netns}' is the node namespace (node.netns); rename \
         the pod or change node.pod_netns_prefix"
    )]
    NetnsIsNode {
        /// The pod.
        pod: String,
        /// The namespace name.
        netns: String,
    },
    /// A next hop or NAT address that cannot be one.
    #[error("{field}: {address} {why}; {hint}")]
    UnusableAddress {
        /// `node.uplink.gateway`, `route to X: via`, `masquerade rule for X: address`.
        field: String,
        /// The address.
        address: Ipv4Addr,
        /// What is wrong with it.
        why: String,
        /// What to do.
        hint: &'static str,
    },
    /// The uplink's gateway is not on the uplink's network.
    #[error(
        "node.uplink.gateway {gateway} is not inside the network {network} of the uplink \
         {uplink} (node.uplink.address); a gateway must be directly reachable: pick an \
         address inside {network}"
    )]
    GatewayOffLink {
        /// The gateway.
        gateway: Ipv4Addr,
        /// The uplink's name.
        uplink: String,
        /// The uplink's network.
        network: Ipv4Net,
    },
    /// A route's `via` is not on the network of its `dev` (the uplink, whose
    /// address the configuration gives).
    #[error(
        "route to {dst}: via {via} is not inside the network {network} of {dev}; a next \
         hop must be directly reachable: pick an address inside {network}, or another dev"
    )]
    RouteViaOffLink {
        /// The route's destination.
        dst: Ipv4Net,
        /// The next hop.
        via: Ipv4Addr,
        /// The egress interface.
        dev: String,
        /// Its network.
        network: Ipv4Net,
    },
    /// A route or masquerade prefix has host bits set.
    #[error("{what} {prefix} has host bits set; write its network address, {network}")]
    PrefixNotNetwork {
        /// `route dst` or `masquerade source`.
        what: &'static str,
        /// The prefix as written.
        prefix: Ipv4Net,
        /// What was probably meant.
        network: Ipv4Net,
    },
    /// Two routes (or a route and the uplink's gateway) have the same
    /// destination.
    #[error(
        "route to {dst} is declared twice ({first} and {second}); keep one of them (routes \
         with different prefix lengths may nest: the longest prefix wins)"
    )]
    DuplicateRoute {
        /// The destination.
        dst: Ipv4Net,
        /// Where it is declared first.
        first: String,
        /// Where it is declared again.
        second: String,
    },
    /// A route's destination lies inside the pod CIDR.
    #[error(
        "route to {dst} lies inside the pod CIDR {pod_cidr}: those addresses belong to this \
         node's pods; remove the route or pick a destination outside the pod CIDR"
    )]
    RouteInsidePodCidr {
        /// The destination.
        dst: Ipv4Net,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
    },
    /// A route has neither `via` nor `dev`.
    #[error(
        "route to {dst} has neither via nor dev; add `via = \"<next hop>\"`, or `dev = \
         \"<interface>\"` if {dst} is directly connected on that interface"
    )]
    RouteNeedsViaOrDev {
        /// The destination.
        dst: Ipv4Net,
    },
    /// A route or masquerade rule names no interface and there is no uplink
    /// to default to.
    #[error(
        "{owner} names no interface ({field} is not set) and there is no [node.uplink] to \
         default to; set {field}, or add [node.uplink]"
    )]
    NoInterface {
        /// The route or rule.
        owner: IfnameOwner,
        /// `dev` or `out`.
        field: &'static str,
    },
    /// A route or masquerade rule names a pod's host-side interface.
    #[error(
        "{owner}: {kind} '{name}' is the host side of pod '{pod}'; routes and masquerade \
         rules lead out of the node: name the uplink or another interface of the node",
        kind = .owner.kind()
    )]
    IfnameIsPod {
        /// The route or rule.
        owner: IfnameOwner,
        /// The interface name.
        name: String,
        /// The pod.
        pod: String,
    },
    /// More routes or masquerade rules than the datapath's map holds.
    #[error("{count} {what} are configured; the datapath holds at most {max}: remove some")]
    TooMany {
        /// `routes` or `masquerade rules`.
        what: &'static str,
        /// How many are configured.
        count: usize,
        /// The map's size.
        max: usize,
    },
    /// A masquerade source that no pod traffic can come from.
    #[error(
        "masquerade rule for {prefix}: the source does not overlap the pod CIDR {pod_cidr}, \
         and only pod traffic passes netpath's datapath; use a prefix inside the pod CIDR or \
         omit `source` to use the whole pod CIDR"
    )]
    MasqueradeOutsidePodCidr {
        /// The source prefix.
        prefix: Ipv4Net,
        /// The pod CIDR.
        pod_cidr: Ipv4Net,
    },
    /// Two masquerade rules for the same source prefix and out interface.
    #[error(
        "two masquerade rules have the source {prefix} and out {out}; keep one (rules for \
         one source through different out interfaces are fine)"
    )]
    DuplicateMasquerade {
        /// The source prefix.
        prefix: Ipv4Net,
        /// The out interface both rules name.
        out: String,
    },
    /// `[nat] port_range` is empty or includes port 0.
    #[error(
        "nat.port_range {range} {why}; write \"MIN-MAX\" with 1 <= MIN <= MAX <= 65535, e.g. \"32768-60999\""
    )]
    InvalidPortRange {
        /// The range.
        range: PortRange,
        /// What is wrong.
        why: &'static str,
    },
    /// `[conntrack] max_entries` outside the allowed range.
    #[error(
        "conntrack.max_entries {value} is out of range; use {MIN_CONNTRACK_ENTRIES} to \
         {MAX_CONNTRACK_ENTRIES} (default {default})",
        default = netpath_common::maps::CONNTRACK_DEFAULT_MAX
    )]
    ConntrackSize {
        /// The configured size.
        value: u32,
    },
    /// A `[conntrack]` timeout or interval of 0 seconds.
    #[error("conntrack.{field} is 0; it is a number of seconds and must be at least 1")]
    ZeroSeconds {
        /// The key.
        field: &'static str,
    },
}

impl Config {
    /// Parses a configuration from TOML and [validates](Self::validate) it.
    pub fn from_toml_str(s: &str) -> Result<Config, ConfigError> {
        Self::parse(s, "<string>")
    }

    /// Reads, parses and [validates](Self::validate) the configuration file
    /// at `path`; read and parse errors name the path.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    fn parse(s: &str, origin: &str) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(s).map_err(|source| ConfigError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML ([`from_toml_str`](Self::from_toml_str)
    /// reads it back to an equal `Config`).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a Config is always representable in TOML")
    }

    /// Makes every check that needs no system state and returns the first
    /// problem found, in a fixed order: the node's name, namespace, namespace
    /// prefix, pod CIDR and gateway; the uplink (name, address, gateway);
    /// each pod in order (name, host interface, address, namespace); the pod
    /// count against the CIDR's capacity; each route in order (dst, pod
    /// CIDR, duplicates, via/dev); each masquerade rule in order (source,
    /// out, duplicates, address); the route and rule counts; `[nat]`;
    /// finally `[conntrack]`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let node = &self.node;
        check_name("node.name", &node.name)?;
        if let Some(netns) = &node.netns {
            check_netns_name("node.netns", netns, false)?;
        }
        if let Some(prefix) = &node.pod_netns_prefix {
            check_netns_name("node.pod_netns_prefix", prefix, true)?;
        }
        self.check_pod_cidr()?;
        let cidr = node.pod_cidr;
        let gateway = self.gateway();
        if !cidr.contains(&gateway) {
            return Err(ConfigError::GatewayOutsideCidr {
                gateway,
                pod_cidr: cidr,
            });
        }
        if let Some(why) = edge_address(cidr, gateway) {
            return Err(ConfigError::GatewayReserved {
                gateway,
                pod_cidr: cidr,
                why,
            });
        }

        let mut ifnames: BTreeMap<String, IfnameOwner> = BTreeMap::new();
        if let Some(uplink) = &node.uplink {
            check_ifname(&IfnameOwner::Uplink, &uplink.name)?;
            ifnames.insert(uplink.name.clone(), IfnameOwner::Uplink);
            if let Some(address) = uplink.address {
                let uplink_net = address.trunc();
                if overlaps(cidr, uplink_net) {
                    return Err(ConfigError::CidrOverlapsUplink {
                        pod_cidr: cidr,
                        uplink: uplink.name.clone(),
                        uplink_net,
                    });
                }
            }
            if let Some(gateway) = uplink.gateway {
                self.check_gateway(uplink, gateway)?;
            }
        }

        let mut names: BTreeSet<&str> = BTreeSet::new();
        let mut addresses: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for pod in &self.pods {
            check_name("pod name", &pod.name)?;
            if !names.insert(&pod.name) {
                return Err(ConfigError::DuplicatePod {
                    name: pod.name.clone(),
                });
            }
            let owner = IfnameOwner::pod(pod);
            let ifname = Self::host_ifname(pod);
            check_ifname(&owner, &ifname)?;
            if let Some(first) = ifnames.get(&ifname) {
                return Err(ConfigError::DuplicateIfname {
                    name: ifname,
                    first: first.clone(),
                    second: owner,
                });
            }
            ifnames.insert(ifname, owner);
            if let Some(address) = pod.address {
                if !cidr.contains(&address) {
                    return Err(ConfigError::AddressOutsideCidr {
                        pod: pod.name.clone(),
                        address,
                        pod_cidr: cidr,
                    });
                }
                let reserved =
                    edge_address(cidr, address).or((address == gateway).then_some("gateway"));
                if let Some(why) = reserved {
                    return Err(ConfigError::AddressReserved {
                        pod: pod.name.clone(),
                        address,
                        pod_cidr: cidr,
                        why,
                    });
                }
                if let Some(first) = addresses.insert(address, &pod.name) {
                    return Err(ConfigError::DuplicateAddress {
                        address,
                        first: first.to_owned(),
                        second: pod.name.clone(),
                    });
                }
            }
            let netns = self.pod_netns(pod);
            if node.netns.as_deref() == Some(netns.as_str()) {
                return Err(ConfigError::NetnsIsNode {
                    pod: pod.name.clone(),
                    netns,
                });
            }
        }

        let capacity = Ipam::new(cidr, gateway).capacity();
        if self.pods.len() > capacity as usize {
            return Err(ConfigError::CidrExhausted {
                pod_cidr: cidr,
                capacity,
                wanted: self.pods.len(),
            });
        }
        self.check_routes(&ifnames)?;
        self.check_masquerade(&ifnames)?;
        self.check_nat_and_conntrack()
    }

    fn check_gateway(&self, uplink: &UplinkConfig, gateway: Ipv4Addr) -> Result<(), ConfigError> {
        let unusable = |why: String| ConfigError::UnusableAddress {
            field: "node.uplink.gateway".into(),
            address: gateway,
            why,
            hint: "use the address of the router on the uplink's network, or omit `gateway`",
        };
        if let Some(why) = self.not_a_next_hop(gateway) {
            return Err(unusable(why));
        }
        if let Some(address) = uplink.address {
            let network = address.trunc();
            if !network.contains(&gateway) {
                return Err(ConfigError::GatewayOffLink {
                    gateway,
                    uplink: uplink.name.clone(),
                    network,
                });
            }
            if gateway == address.addr() {
                return Err(unusable("is the uplink's own address".into()));
            }
            if network.prefix_len() <= 30
                && let Some(why) = edge_address(network, gateway)
            {
                return Err(unusable(format!("is the {why} of {network}")));
            }
        }
        Ok(())
    }

    /// Why `addr` cannot be a next hop (or a NAT address) of pod traffic.
    fn not_a_next_hop(&self, addr: Ipv4Addr) -> Option<String> {
        if let Some(why) = special_address(addr) {
            return Some(format!("is {why}"));
        }
        let cidr = self.node.pod_cidr;
        cidr.contains(&addr)
            .then(|| format!("is inside the pod CIDR {cidr}"))
    }

    /// The interface a route or masquerade rule uses: its own, or else the
    /// uplink's; checked like every interface name.
    fn check_rule_ifname(
        &self,
        owner: IfnameOwner,
        field: &'static str,
        name: Option<&str>,
        ifnames: &BTreeMap<String, IfnameOwner>,
    ) -> Result<(), ConfigError> {
        let Some(name) = name.or(self.node.uplink.as_ref().map(|u| u.name.as_str())) else {
            return Err(ConfigError::NoInterface { owner, field });
        };
        check_ifname(&owner, name)?;
        if let Some(IfnameOwner::Pod { pod, .. }) = ifnames.get(name) {
            return Err(ConfigError::IfnameIsPod {
                owner,
                name: name.to_owned(),
                pod: pod.clone(),
            });
        }
        Ok(())
    }

    fn check_routes(&self, ifnames: &BTreeMap<String, IfnameOwner>) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        let uplink = self.node.uplink.as_ref();
        let mut seen: BTreeMap<Ipv4Net, String> = BTreeMap::new();
        if uplink.is_some_and(|u| u.gateway.is_some()) {
            seen.insert(Ipv4Net::default(), "node.uplink.gateway".into());
        }
        for (i, route) in self.routes.iter().enumerate() {
            let dst = route.dst;
            if dst.trunc() != dst {
                return Err(ConfigError::PrefixNotNetwork {
                    what: "route dst",
                    prefix: dst,
                    network: dst.trunc(),
                });
            }
            if cidr.contains(&dst) {
                return Err(ConfigError::RouteInsidePodCidr {
                    dst,
                    pod_cidr: cidr,
                });
            }
            let here = format!("[[routes]] entry {}", i + 1);
            if let Some(first) = seen.get(&dst) {
                return Err(ConfigError::DuplicateRoute {
                    dst,
                    first: first.clone(),
                    second: here,
                });
            }
            seen.insert(dst, here);
            if route.via.is_none() && route.dev.is_none() {
                return Err(ConfigError::RouteNeedsViaOrDev { dst });
            }
            let owner = IfnameOwner::Route { dst };
            self.check_rule_ifname(owner, "dev", route.dev.as_deref(), ifnames)?;
            if let Some(via) = route.via {
                if let Some(why) = self.not_a_next_hop(via) {
                    return Err(ConfigError::UnusableAddress {
                        field: format!("route to {dst}: via"),
                        address: via,
                        why,
                        hint: "use the address of a router on a network of the route's dev",
                    });
                }
                // The uplink's network is known when its address is given;
                // other interfaces' networks are checked at apply time.
                if let Some(u) = uplink
                    && route.dev.as_deref().unwrap_or(&u.name) == u.name
                    && let Some(address) = u.address
                    && !address.trunc().contains(&via)
                {
                    return Err(ConfigError::RouteViaOffLink {
                        dst,
                        via,
                        dev: u.name.clone(),
                        network: address.trunc(),
                    });
                }
            }
        }
        if seen.len() > MAX_ROUTES {
            return Err(ConfigError::TooMany {
                what: "routes",
                count: seen.len(),
                max: MAX_ROUTES,
            });
        }
        Ok(())
    }

    fn check_masquerade(&self, ifnames: &BTreeMap<String, IfnameOwner>) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        let mut seen: std::collections::BTreeSet<(Ipv4Net, String)> = Default::default();
        for rule in &self.masquerade {
            let source = rule.source.unwrap_or(cidr);
            if source.trunc() != source {
                return Err(ConfigError::PrefixNotNetwork {
                    what: "masquerade source",
                    prefix: source,
                    network: source.trunc(),
                });
            }
            if !overlaps(source, cidr) {
                return Err(ConfigError::MasqueradeOutsidePodCidr {
                    prefix: source,
                    pod_cidr: cidr,
                });
            }
            let owner = IfnameOwner::Masquerade { source };
            self.check_rule_ifname(owner, "out", rule.out.as_deref(), ifnames)?;
            let out = self.masquerade_out(rule).expect("checked above").to_owned();
            if !seen.insert((source, out.clone())) {
                return Err(ConfigError::DuplicateMasquerade {
                    prefix: source,
                    out,
                });
            }
            if let Some(address) = rule.address
                && let Some(why) = self.not_a_next_hop(address)
            {
                return Err(ConfigError::UnusableAddress {
                    field: format!("masquerade rule for {source}: address"),
                    address,
                    why,
                    hint: "use an address of the node on the out interface's network, or omit \
                           `address` to use the out interface's own",
                });
            }
        }
        if self.masquerade.len() > MAX_MASQUERADE {
            return Err(ConfigError::TooMany {
                what: "masquerade rules",
                count: self.masquerade.len(),
                max: MAX_MASQUERADE,
            });
        }
        Ok(())
    }

    fn check_nat_and_conntrack(&self) -> Result<(), ConfigError> {
        let range = self.nat.port_range;
        let why = if range.min == 0 {
            Some("includes port 0")
        } else if range.min > range.max {
            Some("is empty: MIN is above MAX")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::InvalidPortRange { range, why });
        }
        let ct = &self.conntrack;
        if !(MIN_CONNTRACK_ENTRIES..=MAX_CONNTRACK_ENTRIES).contains(&ct.max_entries) {
            return Err(ConfigError::ConntrackSize {
                value: ct.max_entries,
            });
        }
        if let Some((field, _)) = ct.timeouts().into_iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::ZeroSeconds { field });
        }
        Ok(())
    }

    /// The egress interface of a route: its `dev`, or the uplink. `None`
    /// only for an invalid configuration.
    pub fn route_dev<'a>(&'a self, route: &'a RouteConfig) -> Option<&'a str> {
        route
            .dev
            .as_deref()
            .or(self.node.uplink.as_ref().map(|u| u.name.as_str()))
    }

    /// The out interface of a masquerade rule: its `out`, or the uplink.
    /// `None` only for an invalid configuration.
    pub fn masquerade_out<'a>(&'a self, rule: &'a MasqueradeConfig) -> Option<&'a str> {
        rule.out
            .as_deref()
            .or(self.node.uplink.as_ref().map(|u| u.name.as_str()))
    }

    /// The source prefix of a masquerade rule: its `source`, or the pod CIDR.
    pub fn masquerade_source(&self, rule: &MasqueradeConfig) -> Ipv4Net {
        rule.source.unwrap_or(self.node.pod_cidr)
    }

    /// Every route of the route map, with its interface name resolved: the
    /// default route of `node.uplink.gateway` first, then `[[routes]]` in
    /// order. Call on a validated configuration.
    pub fn route_table(&self) -> Vec<(Ipv4Net, Option<Ipv4Addr>, String)> {
        let mut out = Vec::new();
        if let Some(u) = &self.node.uplink
            && let Some(gw) = u.gateway
        {
            out.push((Ipv4Net::default(), Some(gw), u.name.clone()));
        }
        for r in &self.routes {
            if let Some(dev) = self.route_dev(r) {
                out.push((r.dst, r.via, dev.to_owned()));
            }
        }
        out
    }

    /// The datapath settings this configuration asks for, with `np0`'s
    /// ifindex as the device `bpf_fib_lookup` runs as.
    pub fn node_settings(&self, fib_ifindex: u32) -> NodeSettings {
        let ct = &self.conntrack;
        NodeSettings {
            fib_ifindex,
            nat_port_min: self.nat.port_range.min,
            nat_port_max: self.nat.port_range.max,
            tcp_syn_timeout: ct.tcp_syn_timeout,
            tcp_established_timeout: ct.tcp_established_timeout,
            tcp_fin_timeout: ct.tcp_fin_timeout,
            tcp_close_timeout: ct.tcp_close_timeout,
            udp_timeout: ct.udp_timeout,
            udp_stream_timeout: ct.udp_stream_timeout,
            icmp_timeout: ct.icmp_timeout,
            gateway: self.gateway().octets(),
        }
    }

    fn check_pod_cidr(&self) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        if cidr.prefix_len() > MAX_POD_PREFIX_LEN {
            return Err(ConfigError::PrefixTooLong { pod_cidr: cidr });
        }
        if cidr.trunc() != cidr {
            return Err(ConfigError::CidrNotNetwork {
                pod_cidr: cidr,
                network: cidr.trunc(),
            });
        }
        if let Some((range, why)) = SPECIAL_RANGES.iter().find(|(r, _)| overlaps(cidr, *r)) {
            return Err(ConfigError::CidrSpecial {
                pod_cidr: cidr,
                range: *range,
                why,
            });
        }
        Ok(())
    }

    /// The pods' gateway: `node.gateway`, or else the first host address of
    /// the pod CIDR.
    pub fn gateway(&self) -> Ipv4Addr {
        self.node.gateway.unwrap_or_else(|| {
            Ipv4Addr::from(u32::from(self.node.pod_cidr.network()).wrapping_add(1))
        })
    }

    /// The name of `pod`'s network namespace: `node.pod_netns_prefix` (by
    /// default `"<node name>-"`) followed by the pod name.
    pub fn pod_netns(&self, pod: &PodConfig) -> String {
        match &self.node.pod_netns_prefix {
            Some(prefix) => format!("{prefix}{}", pod.name),
            None => format!("{}-{}", self.node.name, pod.name),
        }
    }

    /// The name of `pod`'s host-side interface: `host_ifname`, or else
    /// `"np-<pod name>"`.
    pub fn host_ifname(pod: &PodConfig) -> String {
        pod.host_ifname
            .clone()
            .unwrap_or_else(|| format!("{HOST_IFNAME_PREFIX}{}", pod.name))
    }

    /// Checks the pod CIDR against the networks that exist on the node: the
    /// caller passes `(interface name, address/prefix)` for the addresses it
    /// found (e.g. the uplink's real addresses). Entries of netpath's own
    /// devices (the pods' host interfaces and [`GATEWAY_IFNAME`]) are
    /// skipped, since they carry pod-CIDR addresses by design. The first
    /// overlap is an error: [`ConfigError::CidrOverlapsUplink`] for the
    /// uplink, [`ConfigError::CidrOverlapsInterface`] for any other.
    pub fn check_overlaps(&self, node_networks: &[(String, Ipv4Net)]) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        let uplink = self.node.uplink.as_ref().map(|u| u.name.as_str());
        for (ifname, network) in node_networks {
            let ours = ifname == GATEWAY_IFNAME
                || self.pods.iter().any(|p| Self::host_ifname(p) == *ifname);
            if ours || !overlaps(cidr, network.trunc()) {
                continue;
            }
            return Err(if uplink == Some(ifname.as_str()) {
                ConfigError::CidrOverlapsUplink {
                    pod_cidr: cidr,
                    uplink: ifname.clone(),
                    uplink_net: network.trunc(),
                }
            } else {
                ConfigError::CidrOverlapsInterface {
                    pod_cidr: cidr,
                    ifname: ifname.clone(),
                    network: network.trunc(),
                }
            });
        }
        Ok(())
    }

    /// The built-in demo configuration: node `demo` in namespace
    /// `netpath-demo-node`, pod CIDR 10.200.0.0/24, uplink `uplink0` with
    /// 192.168.50.2/24 and gateway 192.168.50.1 (the LAN host), pods `red`
    /// and `blue` with addresses from IPAM, and pod traffic masqueraded
    /// behind the uplink's address.
    pub fn demo() -> Config {
        let pod = |name: &str| PodConfig {
            name: name.into(),
            address: None,
            host_ifname: None,
        };
        Config {
            node: NodeConfig {
                name: "demo".into(),
                netns: Some("netpath-demo-node".into()),
                pod_cidr: net(10, 200, 0, 0, 24),
                gateway: None,
                pod_netns_prefix: None,
                uplink: Some(UplinkConfig {
                    name: "uplink0".into(),
                    address: Some(net(192, 168, 50, 2, 24)),
                    gateway: Some(Ipv4Addr::new(192, 168, 50, 1)),
                }),
            },
            pods: vec![pod("red"), pod("blue")],
            routes: Vec::new(),
            // Pods reach the LAN host through SNAT to the uplink's address.
            masquerade: vec![MasqueradeConfig {
                source: None,
                out: None,
                address: None,
            }],
            nat: NatConfig::default(),
            conntrack: ConntrackConfig::default(),
        }
    }
}

/// Whether two networks share an address.
fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What `addr` is if it is not a unicast address (so it cannot be a next
/// hop or a NAT address).
fn special_address(addr: Ipv4Addr) -> Option<&'static str> {
    if addr == Ipv4Addr::BROADCAST {
        Some("the limited broadcast address")
    } else {
        SPECIAL_RANGES
            .iter()
            .find(|(r, _)| r.contains(&addr))
            .map(|(_, why)| match *why {
                "\"this network\"" => "in 0.0.0.0/8 (\"this network\")",
                "loopback" => "a loopback address",
                "multicast" => "a multicast address",
                _ => "in the reserved range 240.0.0.0/4",
            })
    }
}

/// `network address` or `broadcast address` if `addr` is one of `cidr`'s.
fn edge_address(cidr: Ipv4Net, addr: Ipv4Addr) -> Option<&'static str> {
    if addr == cidr.network() {
        Some("network address")
    } else if addr == cidr.broadcast() {
        Some("broadcast address")
    } else {
        None
    }
}

/// `[a-z0-9][a-z0-9-]*`, at most [`MAX_NAME_LEN`] bytes.
fn check_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} bytes", name.len()))
    } else if name.starts_with('-') {
        Some("it starts with '-'".to_owned())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ConfigError::InvalidName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// A name (or, with `prefix`, the start of names) of a file under `/run/netns`.
fn check_netns_name(field: &'static str, value: &str, prefix: bool) -> Result<(), ConfigError> {
    let max = if prefix {
        MAX_NETNS_LEN - MAX_NAME_LEN
    } else {
        MAX_NETNS_LEN
    };
    let why = if value.is_empty() && !prefix {
        Some("it is empty".to_owned())
    } else if value.len() > max {
        Some(format!(
            "it is {} bytes; at most {max} are allowed",
            value.len()
        ))
    } else if !prefix && (value == "." || value == "..") {
        Some("'.' and '..' are not names".to_owned())
    } else {
        value
            .chars()
            .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ConfigError::InvalidNetns {
            field,
            value: value.to_owned(),
            why,
            hint: if prefix {
                "use a prefix without '/', whitespace or control characters, or omit it"
            } else {
                "use the name of a namespace under /run/netns (as `ip netns list` shows it), \
                 or omit it to use the current namespace"
            },
        }),
        None => Ok(()),
    }
}

/// A name Linux accepts for an interface (1..=15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace) and that netpath does not keep for itself.
fn check_ifname(owner: &IfnameOwner, name: &str) -> Result<(), ConfigError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(ConfigError::IfnameTooLong {
            owner: owner.clone(),
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names".to_owned())
    } else if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(format!("Linux does not allow {c:?} in interface names"))
    } else if name == "lo" {
        Some("it is the loopback device".to_owned())
    } else if name == GATEWAY_IFNAME || name == GATEWAY_PEER_IFNAME {
        Some("netpath's gateway device pair uses this name".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::InvalidIfname {
            owner: owner.clone(),
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn pod(name: &str) -> PodConfig {
        PodConfig {
            name: name.into(),
            address: None,
            host_ifname: None,
        }
    }

    /// Validates `config` and returns the error's message, checking that it
    /// mentions every string in `mentions`.
    fn fails(config: &Config, mentions: &[&str]) -> ConfigError {
        let err = config
            .validate()
            .expect_err("the configuration should be invalid");
        let msg = err.to_string();
        for m in mentions {
            assert!(msg.contains(m), "{msg:?} does not mention {m:?}");
        }
        err
    }

    const FULL: &str = r#"
[node]
name = "demo"
netns = "netpath-demo-node"
pod_cidr = "10.200.0.0/24"
gateway = "10.200.0.1"
pod_netns_prefix = "demo-"

[node.uplink]
name = "uplink0"
address = "192.168.50.2/24"

[[pods]]
name = "red"
address = "10.200.0.10"
host_ifname = "np-red"

[[pods]]
name = "blue"
"#;

    #[test]
    fn parses_the_full_example() {
        let c = Config::from_toml_str(FULL).unwrap();
        assert_eq!(c.node.name, "demo");
        assert_eq!(c.node.netns.as_deref(), Some("netpath-demo-node"));
        assert_eq!(c.node.pod_cidr, cidr("10.200.0.0/24"));
        assert_eq!(c.gateway(), addr("10.200.0.1"));
        let uplink = c.node.uplink.as_ref().unwrap();
        assert_eq!(uplink.name, "uplink0");
        assert_eq!(uplink.address, Some(cidr("192.168.50.2/24")));
        assert_eq!(c.pods.len(), 2);
        assert_eq!(c.pods[0].address, Some(addr("10.200.0.10")));
        assert_eq!(c.pods[1], pod("blue"));
    }

    #[test]
    fn minimal_config_and_defaults() {
        let c = Config::from_toml_str(
            "[node]\nname = \"n1\"\npod_cidr = \"10.1.2.0/24\"\n\n[[pods]]\nname = \"web\"\n",
        )
        .unwrap();
        assert_eq!(c.node.netns, None);
        assert_eq!(c.node.uplink, None);
        assert_eq!(c.gateway(), addr("10.1.2.1"));
        assert_eq!(c.pod_netns(&c.pods[0]), "n1-web");
        assert_eq!(Config::host_ifname(&c.pods[0]), "np-web");

        let c =
            Config::from_toml_str("[node]\nname = \"n1\"\npod_cidr = \"10.1.2.0/24\"\n").unwrap();
        assert!(c.pods.is_empty());
    }

    #[test]
    fn explicit_prefix_and_ifname() {
        let mut c = Config::demo();
        c.node.pod_netns_prefix = Some("x.".into());
        c.pods[0].host_ifname = Some("veth-red".into());
        c.validate().unwrap();
        assert_eq!(c.pod_netns(&c.pods[0]), "x.red");
        assert_eq!(Config::host_ifname(&c.pods[0]), "veth-red");
        c.node.pod_netns_prefix = Some(String::new());
        c.validate().unwrap();
        assert_eq!(c.pod_netns(&c.pods[1]), "blue");
    }

    #[test]
    fn toml_round_trip() {
        for c in [Config::from_toml_str(FULL).unwrap(), Config::demo()] {
            let text = c.to_toml_string();
            assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
        }
        let mut bare = Config::demo();
        bare.pods.clear();
        bare.masquerade.clear();
        bare.node.uplink = None;
        bare.node.netns = None;
        let text = bare.to_toml_string();
        for section in ["pods", "routes", "masquerade", "nat", "conntrack"] {
            assert!(!text.contains(section), "{text}");
        }
        assert_eq!(Config::from_toml_str(&text).unwrap(), bare);
    }

    #[test]
    fn demo_validates() {
        let c = Config::demo();
        c.validate().unwrap();
        assert_eq!(c.node.name, "demo");
        assert_eq!(c.node.netns.as_deref(), Some("netpath-demo-node"));
        assert_eq!(c.gateway(), addr("10.200.0.1"));
        assert_eq!(c.pod_netns(&c.pods[0]), "demo-red");
        assert_eq!(Config::host_ifname(&c.pods[1]), "np-blue");
        let names: Vec<_> = c.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["red", "blue"]);
        assert!(c.pods.iter().all(|p| p.address.is_none()));
    }

    #[test]
    fn unknown_keys_are_errors() {
        for (text, key) in [
            (FULL.replace("gateway =", "gatway ="), "gatway"),
            (
                FULL.replace(
                    "[[pods]]\nname = \"blue\"",
                    "[[pods]]\nname = \"blue\"\nip = \"1.2.3.4\"",
                ),
                "ip",
            ),
            (
                FULL.replace("[node.uplink]", "[node.uplink]\nmtu = 1500"),
                "mtu",
            ),
            (format!("{FULL}\n[extra]\nx = 1\n"), "extra"),
        ] {
            let err = Config::from_toml_str(&text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
            let msg = err.to_string();
            assert!(msg.contains("<string>") && msg.contains(key), "{msg}");
        }
    }

    #[test]
    fn parse_errors() {
        let err =
            Config::from_toml_str("[node]\nname = \"a\"\npod_cidr = \"fd00::/64\"\n").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let err = Config::from_toml_str("[node]\nname = \"a\"\n").unwrap_err();
        assert!(err.to_string().contains("pod_cidr"), "{err}");
        let err = Config::from_toml_str("not toml at all [").unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    }

    #[test]
    fn load_names_the_path() {
        let dir = std::env::temp_dir().join(format!("netpath-config-test-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.toml");
        let err = Config::load(&missing).unwrap_err();
        assert!(matches!(err, ConfigError::Read { .. }));
        assert!(err.to_string().contains("missing.toml"), "{err}");

        let bad = dir.join("bad.toml");
        fs::write(&bad, "[node]\nname = 5\n").unwrap();
        let err = Config::load(&bad).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        assert!(err.to_string().contains("bad.toml"), "{err}");

        let good = dir.join("good.toml");
        fs::write(&good, Config::demo().to_toml_string()).unwrap();
        assert_eq!(Config::load(&good).unwrap(), Config::demo());

        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn invalid_names() {
        for bad in ["", "Demo", "-x", "a_b", "a b", &"x".repeat(33)] {
            let mut c = Config::demo();
            c.node.name = bad.into();
            let err = fails(&c, &["node.name", &format!("'{bad}'")]);
            assert!(matches!(err, ConfigError::InvalidName { .. }));

            let mut c = Config::demo();
            c.pods[1].name = bad.into();
            c.pods[1].host_ifname = Some("np-x".into());
            let err = fails(&c, &["pod name", &format!("'{bad}'")]);
            assert!(matches!(err, ConfigError::InvalidName { .. }));
        }
        let mut c = Config::demo();
        c.node.name = "x".repeat(32);
        c.pods[0].name = "0-a".repeat(10);
        c.pods[0].host_ifname = Some("np-long".into());
        c.validate().unwrap();
    }

    #[test]
    fn invalid_netns() {
        for bad in ["", ".", "..", "a/b", "a b", "a\nb"] {
            let mut c = Config::demo();
            c.node.netns = Some(bad.into());
            let err = fails(&c, &["node.netns", &format!("'{bad}'")]);
            assert!(matches!(err, ConfigError::InvalidNetns { .. }));
        }
        let mut c = Config::demo();
        c.node.pod_netns_prefix = Some("a/".into());
        let err = fails(&c, &["node.pod_netns_prefix", "'a/'"]);
        assert!(matches!(err, ConfigError::InvalidNetns { .. }));
    }

    #[test]
    fn pod_netns_must_not_be_the_node() {
        let mut c = Config::demo();
        c.node.netns = Some("demo-red".into());
        let err = fails(&c, &["pod 'red'", "'demo-red'"]);
        assert!(matches!(err, ConfigError::NetnsIsNode { .. }));
    }

    #[test]
    fn ifname_too_long_default() {
        let mut c = Config::demo();
        c.pods.push(pod("averyveryverylongpod"));
        let err = c.validate().unwrap_err();
        assert!(matches!(err, ConfigError::IfnameTooLong { len: 23, .. }));
        assert_eq!(
            err.to_string(),
            "pod 'averyveryverylongpod': host interface name 'np-averyveryverylongpod' is 23 \
             bytes; Linux allows at most 15. Use a pod name of at most 12 bytes or set \
             host_ifname."
        );
        // 12 bytes fit; setting host_ifname fixes it too.
        c.pods[2].name = "abcdefghijkl".into();
        c.validate().unwrap();
        c.pods[2].name = "averyveryverylongpod".into();
        c.pods[2].host_ifname = Some("np-long".into());
        c.validate().unwrap();
    }

    #[test]
    fn ifname_too_long_explicit_and_uplink() {
        let mut c = Config::demo();
        c.pods[0].host_ifname = Some("a-sixteen-bytes!".into());
        let err = fails(
            &c,
            &["pod 'red'", "'a-sixteen-bytes!'", "16 bytes", "host_ifname"],
        );
        assert!(matches!(err, ConfigError::IfnameTooLong { .. }));

        let mut c = Config::demo();
        c.node.uplink.as_mut().unwrap().name = "uplink-with-long-name".into();
        let err = fails(&c, &["node.uplink", "'uplink-with-long-name'", "21 bytes"]);
        assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
    }

    #[test]
    fn invalid_ifnames() {
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a:b",
            "a b",
            "a\tb",
            "lo",
            GATEWAY_IFNAME,
        ] {
            let mut c = Config::demo();
            c.pods[1].host_ifname = Some(bad.into());
            let err = fails(&c, &["pod 'blue'", &format!("'{bad}'")]);
            assert!(matches!(err, ConfigError::InvalidIfname { .. }), "{err}");

            let mut c = Config::demo();
            c.node.uplink.as_mut().unwrap().name = bad.into();
            let err = fails(&c, &["node.uplink", &format!("'{bad}'")]);
            assert!(matches!(err, ConfigError::InvalidIfname { .. }), "{err}");
        }
    }

    #[test]
    fn duplicate_pod() {
        let mut c = Config::demo();
        c.pods.push(pod("red"));
        let err = fails(&c, &["'red'"]);
        assert!(matches!(err, ConfigError::DuplicatePod { .. }));
    }

    #[test]
    fn duplicate_ifnames() {
        let mut c = Config::demo();
        c.pods[1].host_ifname = Some("np-red".into());
        let err = fails(&c, &["'np-red'", "pod 'red'", "pod 'blue'"]);
        assert!(matches!(err, ConfigError::DuplicateIfname { .. }));

        let mut c = Config::demo();
        c.pods[0].host_ifname = Some("uplink0".into());
        let err = fails(&c, &["'uplink0'", "node.uplink", "pod 'red'"]);
        assert!(matches!(err, ConfigError::DuplicateIfname { .. }));
    }

    #[test]
    fn duplicate_address() {
        let mut c = Config::demo();
        c.pods[0].address = Some(addr("10.200.0.7"));
        c.pods[1].address = Some(addr("10.200.0.7"));
        let err = fails(&c, &["10.200.0.7", "'red'", "'blue'"]);
        assert!(matches!(err, ConfigError::DuplicateAddress { .. }));
    }

    #[test]
    fn address_outside_cidr() {
        let mut c = Config::demo();
        c.pods[0].address = Some(addr("10.0.1.7"));
        let err = c.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod 'red': address 10.0.1.7 is outside the pod CIDR 10.200.0.0/24; pick an address \
             inside it or omit `address` to let IPAM choose"
        );
    }

    #[test]
    fn address_reserved() {
        for (a, why) in [
            ("10.200.0.0", "network address"),
            ("10.200.0.255", "broadcast address"),
            ("10.200.0.1", "gateway"),
        ] {
            let mut c = Config::demo();
            c.pods[1].address = Some(addr(a));
            let err = fails(&c, &["pod 'blue'", a, why]);
            assert!(matches!(err, ConfigError::AddressReserved { why: w, .. } if w == why));
        }
        // A non-default gateway is reserved; the default one is then free.
        let mut c = Config::demo();
        c.node.gateway = Some(addr("10.200.0.254"));
        c.pods[0].address = Some(addr("10.200.0.1"));
        c.validate().unwrap();
        c.pods[1].address = Some(addr("10.200.0.254"));
        fails(&c, &["10.200.0.254", "gateway"]);
    }

    #[test]
    fn gateway_errors() {
        let mut c = Config::demo();
        c.node.gateway = Some(addr("10.9.9.9"));
        let err = fails(&c, &["10.9.9.9", "10.200.0.0/24"]);
        assert!(matches!(err, ConfigError::GatewayOutsideCidr { .. }));

        for (g, why) in [("10.200.0.0", "network"), ("10.200.0.255", "broadcast")] {
            c.node.gateway = Some(addr(g));
            let err = fails(&c, &[g, why]);
            assert!(matches!(err, ConfigError::GatewayReserved { .. }));
        }
    }

    #[test]
    fn cidr_errors() {
        let mut c = Config::demo();
        c.pods.truncate(1);
        c.node.pod_cidr = cidr("10.200.0.0/31");
        let err = fails(&c, &["10.200.0.0/31", "30"]);
        assert!(matches!(err, ConfigError::PrefixTooLong { .. }));

        c.node.pod_cidr = cidr("10.200.0.0/30");
        c.validate().unwrap();

        c.node.pod_cidr = cidr("10.200.0.5/24");
        let err = fails(&c, &["10.200.0.5/24", "10.200.0.0/24"]);
        assert!(matches!(err, ConfigError::CidrNotNetwork { .. }));

        for (bad, range) in [
            ("127.1.0.0/16", "127.0.0.0/8"),
            ("0.0.0.0/0", "0.0.0.0/8"),
            ("224.0.0.0/24", "224.0.0.0/4"),
            ("255.255.255.0/24", "240.0.0.0/4"),
        ] {
            c.node.pod_cidr = cidr(bad);
            let err = fails(&c, &[bad, range]);
            assert!(matches!(err, ConfigError::CidrSpecial { .. }), "{err}");
        }
    }

    #[test]
    fn cidr_exhausted() {
        let mut c = Config::demo();
        c.node.pod_cidr = cidr("10.200.0.0/30");
        let err = fails(&c, &["10.200.0.0/30", "room for 1", "2 are configured"]);
        assert!(matches!(
            err,
            ConfigError::CidrExhausted {
                capacity: 1,
                wanted: 2,
                ..
            }
        ));
    }

    #[test]
    fn cidr_overlaps_uplink_statically() {
        let mut c = Config::demo();
        c.node.uplink.as_mut().unwrap().address = Some(cidr("10.200.0.77/16"));
        let err = fails(&c, &["10.200.0.0/24", "10.200.0.0/16", "uplink0"]);
        assert!(matches!(err, ConfigError::CidrOverlapsUplink { .. }));
    }

    #[test]
    fn check_overlaps() {
        let c = Config::demo();
        let ok = [
            ("uplink0".to_owned(), cidr("192.168.50.2/24")),
            ("eth9".to_owned(), cidr("10.201.0.1/24")),
            // netpath's own devices carry pod-CIDR addresses.
            (GATEWAY_IFNAME.to_owned(), cidr("10.200.0.1/32")),
            ("np-red".to_owned(), cidr("10.200.0.1/32")),
        ];
        c.check_overlaps(&ok).unwrap();
        c.check_overlaps(&[]).unwrap();

        let err = c
            .check_overlaps(&[("uplink0".into(), cidr("10.200.0.9/8"))])
            .unwrap_err();
        assert!(matches!(err, ConfigError::CidrOverlapsUplink { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("10.0.0.0/8") && msg.contains("uplink0"),
            "{msg}"
        );

        let err = c
            .check_overlaps(&[("eth1".into(), cidr("10.200.0.128/25"))])
            .unwrap_err();
        assert!(matches!(err, ConfigError::CidrOverlapsInterface { .. }));
        let msg = err.to_string();
        assert!(
            msg.contains("10.200.0.128/25") && msg.contains("eth1"),
            "{msg}"
        );
    }

    const ROUTED: &str = r#"
[node]
name = "edge"
pod_cidr = "10.200.0.0/24"

[node.uplink]
name = "uplink0"
address = "192.168.50.2/24"
gateway = "192.168.50.1"

[[routes]]
dst = "192.168.70.0/24"
via = "192.168.60.1"
dev = "uplink1"

[[routes]]
dst = "192.168.2.0/24"
via = "192.168.50.6"

[[routes]]
dst = "172.16.0.0/12"
dev = "eth9"

[[masquerade]]

[[masquerade]]
source = "10.200.0.128/25"
out = "uplink1"
address = "192.168.60.2"

[nat]
port_range = "20000-29999"

[conntrack]
max_entries = 4096
tcp_fin_timeout = 1
gc_interval = 2
"#;

    #[test]
    fn routes_masquerade_nat_and_conntrack_parse() {
        let c = Config::from_toml_str(ROUTED).unwrap();
        assert_eq!(
            c.node.uplink.as_ref().unwrap().gateway,
            Some(addr("192.168.50.1"))
        );
        assert_eq!(
            c.route_table(),
            vec![
                (
                    cidr("0.0.0.0/0"),
                    Some(addr("192.168.50.1")),
                    "uplink0".into()
                ),
                (
                    cidr("192.168.70.0/24"),
                    Some(addr("192.168.60.1")),
                    "uplink1".into()
                ),
                (
                    cidr("192.168.2.0/24"),
                    Some(addr("192.168.50.6")),
                    "uplink0".into()
                ),
                (cidr("172.16.0.0/12"), None, "eth9".into()),
            ]
        );
        assert_eq!(c.masquerade_source(&c.masquerade[0]), cidr("10.200.0.0/24"));
        assert_eq!(c.masquerade_out(&c.masquerade[0]), Some("uplink0"));
        assert_eq!(c.masquerade_out(&c.masquerade[1]), Some("uplink1"));
        assert_eq!(c.masquerade[1].address, Some(addr("192.168.60.2")));
        assert_eq!(
            c.nat.port_range,
            PortRange {
                min: 20000,
                max: 29999
            }
        );
        assert_eq!(c.conntrack.max_entries, 4096);
        assert_eq!(c.conntrack.tcp_fin_timeout, 1);
        assert_eq!(c.conntrack.gc_interval, 2);
        // Keys left out keep netfilter's defaults.
        let s = c.node_settings(7);
        assert_eq!(s.fib_ifindex, 7);
        assert_eq!((s.nat_port_min, s.nat_port_max), (20000, 29999));
        assert_eq!(s.tcp_fin_timeout, 1);
        assert_eq!(s.tcp_syn_timeout, NodeSettings::DEFAULT.tcp_syn_timeout);
        assert_eq!(s.udp_timeout, NodeSettings::DEFAULT.udp_timeout);

        let text = c.to_toml_string();
        assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
    }

    #[test]
    fn nat_and_conntrack_defaults_are_netfilters() {
        let c = Config::from_toml_str(FULL).unwrap();
        let mut want = NodeSettings::DEFAULT;
        want.fib_ifindex = 3;
        want.gateway = c.gateway().octets();
        assert_eq!(c.node_settings(3), want);
        assert_eq!(
            c.conntrack.max_entries,
            netpath_common::maps::CONNTRACK_DEFAULT_MAX
        );
        assert_eq!(c.conntrack.gc_interval, 10);
        assert!(c.routes.is_empty() && c.masquerade.is_empty());
    }

    #[test]
    fn demo_masquerades_through_the_uplink_and_routes_by_default() {
        let c = Config::demo();
        assert_eq!(
            c.route_table(),
            vec![(
                cidr("0.0.0.0/0"),
                Some(addr("192.168.50.1")),
                "uplink0".into()
            )]
        );
        assert_eq!(c.masquerade.len(), 1);
        assert_eq!(c.masquerade_source(&c.masquerade[0]), c.node.pod_cidr);
        assert_eq!(c.masquerade_out(&c.masquerade[0]), Some("uplink0"));
    }

    #[test]
    fn new_sections_reject_unknown_keys() {
        for (text, key) in [
            (
                ROUTED.replace("dev = \"eth9\"", "dev = \"eth9\"\nmetric = 5"),
                "metric",
            ),
            (
                ROUTED.replace("out = \"uplink1\"", "out = \"uplink1\"\nto = 1"),
                "to",
            ),
            (ROUTED.replace("[nat]", "[nat]\nports = 1"), "ports"),
            (
                ROUTED.replace("[conntrack]", "[conntrack]\ntcp_timeout = 1"),
                "tcp_timeout",
            ),
            (
                ROUTED.replace("gateway = \"192.168.50.1\"", "gw = \"192.168.50.1\""),
                "gw",
            ),
        ] {
            let err = Config::from_toml_str(&text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
            assert!(err.to_string().contains(key), "{err}");
        }
    }

    #[test]
    fn port_range_syntax() {
        assert_eq!(
            "1000-2000".parse(),
            Ok(PortRange {
                min: 1000,
                max: 2000
            })
        );
        assert_eq!(
            "5000".parse(),
            Ok(PortRange {
                min: 5000,
                max: 5000
            })
        );
        for bad in ["", "a-b", "1-", "70000-80000", "1-2-3"] {
            let err = bad.parse::<PortRange>().unwrap_err();
            assert!(err.contains("MIN-MAX"), "{err}");
        }
        let err = Config::from_toml_str(&ROUTED.replace("20000-29999", "20000-x")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("MIN-MAX"), "{err}");
    }

    #[test]
    fn invalid_port_ranges() {
        let mut c = Config::demo();
        c.nat.port_range = PortRange {
            min: 40000,
            max: 30000,
        };
        let err = fails(&c, &["nat.port_range 40000-30000", "MIN is above MAX"]);
        assert!(matches!(err, ConfigError::InvalidPortRange { .. }));
        c.nat.port_range = PortRange { min: 0, max: 30000 };
        fails(&c, &["0-30000", "port 0"]);
        c.nat.port_range = PortRange { min: 5, max: 5 };
        c.validate().unwrap();
    }

    #[test]
    fn conntrack_limits() {
        for bad in [0, MIN_CONNTRACK_ENTRIES - 1, MAX_CONNTRACK_ENTRIES + 1] {
            let mut c = Config::demo();
            c.conntrack.max_entries = bad;
            let err = fails(&c, &["conntrack.max_entries", &bad.to_string(), "1024"]);
            assert!(matches!(err, ConfigError::ConntrackSize { .. }));
        }
        let mut c = Config::demo();
        c.conntrack.udp_stream_timeout = 0;
        let err = fails(&c, &["conntrack.udp_stream_timeout", "at least 1"]);
        assert!(matches!(err, ConfigError::ZeroSeconds { .. }));
        let mut c = Config::demo();
        c.conntrack.gc_interval = 0;
        fails(&c, &["conntrack.gc_interval"]);
    }

    fn route(dst: &str, via: Option<&str>, dev: Option<&str>) -> RouteConfig {
        RouteConfig {
            dst: cidr(dst),
            via: via.map(addr),
            dev: dev.map(Into::into),
        }
    }

    #[test]
    fn uplink_gateway_errors() {
        let set = |g: &str| {
            let mut c = Config::demo();
            c.node.uplink.as_mut().unwrap().gateway = Some(addr(g));
            c
        };
        let err = fails(
            &set("192.168.51.1"),
            &["192.168.51.1", "192.168.50.0/24", "uplink0"],
        );
        assert!(matches!(err, ConfigError::GatewayOffLink { .. }));
        for (g, why) in [
            ("192.168.50.2", "own address"),
            ("192.168.50.255", "broadcast"),
            ("192.168.50.0", "network address"),
            ("10.200.0.9", "pod CIDR"),
            ("127.0.0.1", "loopback"),
            ("224.0.0.1", "multicast"),
            ("0.0.0.0", "this network"),
        ] {
            let err = fails(&set(g), &["node.uplink.gateway", g, why]);
            assert!(matches!(err, ConfigError::UnusableAddress { .. }), "{err}");
        }
        // Without an address the network is unknown: checked at apply time.
        let mut c = set("192.168.51.1");
        c.node.uplink.as_mut().unwrap().address = None;
        c.validate().unwrap();
    }

    #[test]
    fn route_errors() {
        let with = |r: RouteConfig| {
            let mut c = Config::demo();
            c.routes.push(r);
            c
        };
        let err = fails(
            &with(route("192.168.2.9/24", Some("192.168.50.6"), None)),
            &["route dst 192.168.2.9/24", "192.168.2.0/24"],
        );
        assert!(matches!(err, ConfigError::PrefixNotNetwork { .. }));

        for inside in ["10.200.0.0/24", "10.200.0.128/25", "10.200.0.7/32"] {
            let err = fails(
                &with(route(inside, Some("192.168.50.6"), None)),
                &[inside, "inside the pod CIDR 10.200.0.0/24"],
            );
            assert!(matches!(err, ConfigError::RouteInsidePodCidr { .. }));
        }
        // A route that holds the pod CIDR is fine: local pods win.
        with(route("10.0.0.0/8", Some("192.168.50.6"), None))
            .validate()
            .unwrap();

        // The default route is already the uplink gateway's.
        let err = fails(
            &with(route("0.0.0.0/0", Some("192.168.50.6"), None)),
            &["0.0.0.0/0", "node.uplink.gateway", "[[routes]] entry 1"],
        );
        assert!(matches!(err, ConfigError::DuplicateRoute { .. }));
        let mut c = with(route("192.168.2.0/24", Some("192.168.50.6"), None));
        c.routes.push(route("192.168.2.0/24", None, Some("eth1")));
        let err = fails(&c, &["192.168.2.0/24", "entry 1", "entry 2"]);
        assert!(matches!(err, ConfigError::DuplicateRoute { .. }));
        // Nested prefixes are not duplicates.
        c.routes[1].dst = cidr("192.168.2.0/25");
        c.validate().unwrap();

        let err = fails(
            &with(route("192.168.2.0/24", None, None)),
            &["neither via nor dev"],
        );
        assert!(matches!(err, ConfigError::RouteNeedsViaOrDev { .. }));

        let err = fails(
            &with(route("192.168.2.0/24", Some("192.168.51.6"), None)),
            &["via 192.168.51.6", "192.168.50.0/24", "uplink0"],
        );
        assert!(matches!(err, ConfigError::RouteViaOffLink { .. }));
        // Another dev's networks are only known at apply time.
        with(route("192.168.2.0/24", Some("192.168.51.6"), Some("eth1")))
            .validate()
            .unwrap();

        for (via, why) in [("10.200.0.5", "pod CIDR"), ("255.255.255.255", "broadcast")] {
            let err = fails(
                &with(route("192.168.2.0/24", Some(via), Some("eth1"))),
                &["route to 192.168.2.0/24: via", via, why],
            );
            assert!(matches!(err, ConfigError::UnusableAddress { .. }));
        }

        let err = fails(
            &with(route("192.168.2.0/24", None, Some("a-very-long-ifname"))),
            &[
                "route to 192.168.2.0/24",
                "dev 'a-very-long-ifname'",
                "18 bytes",
            ],
        );
        assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
        let err = fails(
            &with(route("192.168.2.0/24", None, Some("np0"))),
            &["route to 192.168.2.0/24", "'np0'"],
        );
        assert!(matches!(err, ConfigError::InvalidIfname { .. }));
        let err = fails(
            &with(route("192.168.2.0/24", None, Some("np0-peer"))),
            &["'np0-peer'", "gateway device pair"],
        );
        assert!(matches!(err, ConfigError::InvalidIfname { .. }));
        let err = fails(
            &with(route("192.168.2.0/24", None, Some("np-red"))),
            &["'np-red'", "pod 'red'"],
        );
        assert!(matches!(err, ConfigError::IfnameIsPod { .. }));

        let mut c = with(route("192.168.2.0/24", Some("192.168.50.6"), None));
        c.node.uplink = None;
        c.masquerade.clear();
        let err = fails(&c, &["route to 192.168.2.0/24", "dev", "[node.uplink]"]);
        assert!(matches!(err, ConfigError::NoInterface { .. }));
    }

    #[test]
    fn too_many_routes() {
        let mut c = Config::demo();
        c.routes = (0..MAX_ROUTES as u32)
            .map(|i| RouteConfig {
                dst: Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap(),
                via: None,
                dev: Some("eth1".into()),
            })
            .collect();
        // With the uplink's default route, one too many.
        let err = fails(&c, &["16385 routes", "16384"]);
        assert!(matches!(err, ConfigError::TooMany { .. }));
        c.node.uplink.as_mut().unwrap().gateway = None;
        c.validate().unwrap();
    }

    fn masq(source: Option<&str>, out: Option<&str>, address: Option<&str>) -> MasqueradeConfig {
        MasqueradeConfig {
            source: source.map(cidr),
            out: out.map(Into::into),
            address: address.map(addr),
        }
    }

    #[test]
    fn masquerade_errors() {
        let with = |m: MasqueradeConfig| {
            let mut c = Config::demo();
            c.masquerade = vec![m];
            c
        };
        let err = fails(
            &with(masq(Some("10.200.0.1/24"), None, None)),
            &["masquerade source 10.200.0.1/24", "10.200.0.0/24"],
        );
        assert!(matches!(err, ConfigError::PrefixNotNetwork { .. }));

        let err = fails(
            &with(masq(Some("10.9.0.0/16"), None, None)),
            &["10.9.0.0/16", "does not overlap the pod CIDR 10.200.0.0/24"],
        );
        assert!(matches!(err, ConfigError::MasqueradeOutsidePodCidr { .. }));
        // A prefix holding the pod CIDR, or part of it, is fine.
        with(masq(Some("10.0.0.0/8"), None, None))
            .validate()
            .unwrap();
        with(masq(Some("10.200.0.0/25"), None, None))
            .validate()
            .unwrap();

        let err = fails(
            &with(masq(None, Some("uplink-number-one"), None)),
            &[
                "masquerade rule for 10.200.0.0/24",
                "out 'uplink-number-one'",
                "17 bytes",
            ],
        );
        assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
        let err = fails(&with(masq(None, Some("np-blue"), None)), &["pod 'blue'"]);
        assert!(matches!(err, ConfigError::IfnameIsPod { .. }));
        let err = fails(&with(masq(None, Some("a/b"), None)), &["out 'a/b'"]);
        assert!(matches!(err, ConfigError::InvalidIfname { .. }));

        let mut c = with(masq(None, None, None));
        c.masquerade
            .push(masq(Some("10.200.0.0/24"), Some("uplink0"), None));
        let err = fails(&c, &["10.200.0.0/24", "uplink0", "keep one"]);
        assert!(matches!(err, ConfigError::DuplicateMasquerade { .. }));
        // One source out of two interfaces is fine.
        c.masquerade[1].out = Some("uplink1".into());
        c.validate().unwrap();
        c.masquerade[1].source = Some(cidr("10.200.0.0/25"));
        c.validate().unwrap();

        for (a, why) in [("10.200.0.9", "pod CIDR"), ("239.1.1.1", "multicast")] {
            let err = fails(
                &with(masq(None, None, Some(a))),
                &["masquerade rule for 10.200.0.0/24: address", a, why],
            );
            assert!(matches!(err, ConfigError::UnusableAddress { .. }));
        }

        let mut c = with(masq(None, None, None));
        c.node.uplink = None;
        let err = fails(
            &c,
            &["masquerade rule for 10.200.0.0/24", "out", "[node.uplink]"],
        );
        assert!(matches!(err, ConfigError::NoInterface { .. }));
        c.masquerade[0].out = Some("eth1".into());
        c.validate().unwrap();
    }

    #[test]
    fn validation_order_is_deterministic() {
        // Several problems: the first pod's comes first.
        let mut c = Config::demo();
        c.pods[0].address = Some(addr("1.2.3.4"));
        c.pods[1].host_ifname = Some("lo".into());
        for _ in 0..3 {
            assert!(matches!(
                c.validate().unwrap_err(),
                ConfigError::AddressOutsideCidr { .. }
            ));
        }
    }
}
