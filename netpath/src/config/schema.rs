//! The TOML schema: one struct per section, and the defaults of the
//! optional fields that name things (gateway, namespaces, interfaces).

use std::{fmt, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use netpath_common::NodeSettings;
use serde::{Deserialize, Serialize};

use super::{
    dns::DnsConfig,
    lb::{PortForwardConfig, ServiceConfig},
    limits::HOST_IFNAME_PREFIX,
};
pub use crate::datapath::xdp::XdpMode;

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
    /// Node ports forwarded to pods (`[[port_forwards]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_forwards: Vec<PortForwardConfig>,
    /// Services: VIPs load-balanced over backends (`[[services]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<ServiceConfig>,
    /// Several nodes: the cluster CIDR and mode (`[cluster]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<super::cluster::ClusterConfig>,
    /// The other nodes of the cluster (`[[peers]]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<super::cluster::PeerConfig>,
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
    /// The pod addresses, IPv4, prefix length at most 30. May be omitted
    /// with `[cluster] etcd_endpoints` (the lease decides it): it is then
    /// [`super::cluster::UNSET_POD_CIDR`] until the daemon fills it in.
    #[serde(
        default = "super::cluster::unset_pod_cidr",
        skip_serializing_if = "super::cluster::is_unset_pod_cidr"
    )]
    pub pod_cidr: Ipv4Net,
    /// Where the services' VIPs live (required with `[[services]]`); no
    /// pod, node or routed network may overlap it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_cidr: Option<Ipv4Net>,
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
    /// XDP on the uplink (`"native"`, `"generic"` or `"off"`): the
    /// prefilter and the fast path of established inbound flows. `None`:
    /// off (on a veth uplink XDP costs more than it saves; see
    /// [`XdpMode`]). `"native"` falls back to generic (with a warning) where
    /// the driver has no XDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<XdpMode>,
    /// Source prefixes whose packets the uplink's XDP drops before any
    /// other processing (the prefilter's deny list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_sources: Vec<Ipv4Net>,
    /// The resolver configuration of the pods whose namespace netpath owns
    /// (`[node.dns]`): written to `/etc/netns/<netns>/resolv.conf`, with a
    /// `hosts` beside it. `None`: netpath writes neither.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Per-pod packet and byte counters in the datapath (`netpath pod
    /// list`, the metrics): one per-CPU lookup and two adds per packet and
    /// direction. `None`: on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_counters: Option<bool>,
    /// The daemon's Prometheus endpoint (`[node.metrics]`); `None`: on, at
    /// [`super::metrics::DEFAULT_LISTEN`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<super::metrics::MetricsConfig>,
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
    pub(super) fn is_default(&self) -> bool {
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
    /// Entries of the connection table; when full, the least recently used
    /// connection is evicted. The reverse NAT map holds 1.5 times as many
    /// (`maps::revnat_max`), so a live claim is never evicted.
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
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// The timeouts by name, in the order of the section.
    pub(super) fn timeouts(&self) -> [(&'static str, u32); 8] {
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
    /// A network namespace someone else made, by path (a container
    /// runtime's, given to `netpath-cni` as `CNI_NETNS`): netpath opens it
    /// and never deletes it. `None`: netpath creates and owns the
    /// namespace [`Config::pod_netns`] names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns_path: Option<PathBuf>,
    /// The interface inside the pod; `None` means `eth0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// The container this pod is the network of, when a runtime attached it
    /// through `netpath-cni` (`CNI_CONTAINERID`): the runtime owns such a
    /// pod. `netpath apply -f` keeps it, CNI `DEL` and `GC` remove it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

impl PodConfig {
    /// A pod netpath builds in a namespace of its own, named `name`, with
    /// every other field defaulted.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            address: None,
            host_ifname: None,
            netns_path: None,
            ifname: None,
            container_id: None,
        }
    }
}

/// The defaults of the optional fields that name things: what the
/// configuration means when they are left out. [`crate::resolve`] calls each
/// once per apply; validation calls them to check the names they give.
impl Config {
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
}
