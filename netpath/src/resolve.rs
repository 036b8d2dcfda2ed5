//! A validated [`Config`] resolved into what the node should be: one
//! [`DesiredNode`] holding every derived value (gateway, namespace and
//! interface names, the route table, the masquerade rules with their
//! defaults filled in, the datapath settings), computed once. The
//! reconciler ([`crate::reconcile`]) works on this value only.
//!
//! A pod is a [`DesiredPod`] whatever asks for it: a `[[pods]]` entry of a
//! TOML `apply` (a namespace netpath creates and owns, by name), a CNI ADD
//! (a namespace the runtime made, by path, and an in-pod interface name of
//! its choosing) or a `pod add` through a daemon: all three go through the
//! same plan and executor ([`crate::reconcile::plan`],
//! [`crate::reconcile::execute`]).
//!
//! Nothing here reads the system: what needs the node (interface indexes,
//! addresses) is resolved by [`crate::reconcile::routes`].

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::Ipv4Net;
use netpath_common::NodeSettings;
use serde::{Deserialize, Serialize};

use crate::{
    config::{Config, DnsConfig, L4Proto, PodConfig, SessionAffinity, Target, UplinkConfig},
    sys::netns::{Netns, NetnsError},
};

pub use crate::config::POD_IFNAME;

/// The MTU of a pod's veth when the node has no uplink (Ethernet's).
pub const DEFAULT_POD_MTU: u32 = 1500;

/// Everything one node should be, derived from its configuration once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    /// The instance name (pins, state, default names).
    pub instance: String,
    /// The named namespace that is the node; `None`: the current one.
    pub netns: Option<String>,
    /// The pod addresses.
    pub pod_cidr: Ipv4Net,
    /// The pods' gateway (on `np0`).
    pub gateway: Ipv4Addr,
    /// The uplink, if configured.
    pub uplink: Option<UplinkConfig>,
    /// The pods, in configuration order (the order IPAM serves them).
    pub pods: Vec<DesiredPod>,
    /// The route map's declared routes: the uplink gateway's default route
    /// first, then `[[routes]]` in order, each with its interface.
    pub routes: Vec<DesiredRoute>,
    /// The masquerade rules with `source` and `out` filled in.
    pub masquerade: Vec<DesiredMasquerade>,
    /// The datapath settings, with `fib_ifindex` 0: the FIB device's index
    /// is only known on the node (see [`DesiredNode::node_settings`]).
    pub settings: NodeSettings,
    /// Entries of the connection table and of the reverse NAT map.
    pub conntrack_max: u32,
    /// How often the daemon (and the demo) collect expired connections.
    pub gc_interval: Duration,
    /// XDP on the uplink (`node.xdp`, default native).
    pub xdp: crate::datapath::xdp::XdpMode,
    /// The prefilter's deny list (`node.deny_sources`).
    pub deny_sources: Vec<Ipv4Net>,
    /// Where the services' VIPs live.
    pub service_cidr: Option<Ipv4Net>,
    /// The port-forwards, in configuration order.
    pub port_forwards: Vec<DesiredPortForward>,
    /// The services, in configuration order.
    pub services: Vec<DesiredService>,
    /// What the resolver files of the pods netpath owns say (`[node.dns]`);
    /// `None`: netpath writes none (see [`crate::reconcile::dns`]).
    pub dns: Option<DnsConfig>,
    /// Several nodes (`[cluster]` and `[[peers]]`); `None`: a lone node.
    pub cluster: Option<crate::reconcile::cluster::DesiredCluster>,
}

/// Where a frontend's connections go: a pod (its address is the lease
/// IPAM gives it, known when the apply is planned) or a fixed address, and
/// the port, with its default filled in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DesiredTarget {
    pub target: Target,
    pub port: u16,
}

impl fmt::Display for DesiredTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.target {
            Target::Pod(name) => write!(f, "{name}:{}", self.port),
            Target::Address(a) => write!(f, "{a}"),
        }
    }
}

/// One port-forward with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPortForward {
    pub proto: L4Proto,
    pub port: u16,
    /// `None`: every address of the uplink and the pods' gateway (known
    /// when the apply is planned).
    pub address: Option<Ipv4Addr>,
    pub to: DesiredTarget,
}

/// One service with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredService {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub proto: L4Proto,
    /// In configuration order (the order does not matter to Maglev: a
    /// backend's slots follow from its address and port).
    pub backends: Vec<DesiredTarget>,
    /// ClientIP affinity timeout in seconds; `None`: no affinity.
    pub affinity_timeout: Option<u32>,
}

/// One pod as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPod {
    /// The pod's name (a CNI plugin would use the container id): the key of
    /// its lease and of its state.
    pub name: String,
    /// The pod's network namespace.
    pub netns: PodNetns,
    /// The host side of the pod's veth, in the node namespace.
    pub host_ifname: String,
    /// The pod side of the veth, inside the pod's namespace.
    pub ifname: String,
    /// A fixed address; `None` lets IPAM choose.
    pub address: Option<Ipv4Addr>,
}

/// Where a pod's network namespace comes from, and so who removes it.
///
/// Stored in the state file as a plain string (a name) or as
/// `{"path": ...}`, so state files of earlier versions read unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PodNetns {
    /// `/run/netns/<name>`: netpath creates it with the pod and deletes it
    /// with the pod.
    Owned(String),
    /// A namespace someone else made (a container runtime's
    /// `/var/run/netns/x` or `/proc/<pid>/ns/net`): netpath only opens it,
    /// and never deletes it.
    Given {
        /// The namespace file.
        path: PathBuf,
    },
}

impl PodNetns {
    /// Whether netpath creates and deletes this namespace.
    pub fn is_owned(&self) -> bool {
        matches!(self, Self::Owned(_))
    }

    /// Whether the namespace (file) exists.
    pub fn exists(&self) -> bool {
        match self {
            Self::Owned(name) => Netns::exists(name),
            Self::Given { path } => path.exists(),
        }
    }

    /// Opens the namespace.
    pub fn open(&self) -> Result<Netns, NetnsError> {
        match self {
            Self::Owned(name) => Netns::open(name),
            Self::Given { path } => Netns::open_path(path),
        }
    }

    /// The path of the namespace file.
    pub fn path(&self) -> PathBuf {
        match self {
            Self::Owned(name) => Path::new(crate::sys::netns::NETNS_DIR).join(name),
            Self::Given { path } => path.clone(),
        }
    }
}

/// The name, or the path of a given namespace.
impl fmt::Display for PodNetns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owned(name) => f.write_str(name),
            Self::Given { path } => write!(f, "{}", path.display()),
        }
    }
}

/// One route of the route map, as declared (`ip route add DST via VIA dev
/// DEV`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredRoute {
    pub dst: Ipv4Net,
    /// `None`: `dst` is directly connected on `dev`.
    pub via: Option<Ipv4Addr>,
    pub dev: String,
}

/// One masquerade rule with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredMasquerade {
    pub source: Ipv4Net,
    pub out: String,
    /// `None`: `out`'s first IPv4 address when applied.
    pub address: Option<Ipv4Addr>,
}

impl DesiredNode {
    /// Resolves a configuration: call on a validated one (an invalid one
    /// may lose routes and rules that name no interface).
    pub fn resolve(config: &Config) -> Self {
        let pods = config
            .pods
            .iter()
            .map(|pod| DesiredPod::from_config(config, pod))
            .collect();
        let mut routes = Vec::new();
        if let Some(u) = &config.node.uplink
            && let Some(gw) = u.gateway
        {
            routes.push(DesiredRoute {
                dst: Ipv4Net::default(),
                via: Some(gw),
                dev: u.name.clone(),
            });
        }
        for r in &config.routes {
            if let Some(dev) = config.route_dev(r) {
                routes.push(DesiredRoute {
                    dst: r.dst,
                    via: r.via,
                    dev: dev.to_owned(),
                });
            }
        }
        let masquerade = config
            .masquerade
            .iter()
            .filter_map(|rule| {
                Some(DesiredMasquerade {
                    source: config.masquerade_source(rule),
                    out: config.masquerade_out(rule)?.to_owned(),
                    address: rule.address,
                })
            })
            .collect();
        let ct = &config.conntrack;
        let settings = NodeSettings {
            fib_ifindex: 0,
            nat_port_min: config.nat.port_range.min,
            nat_port_max: config.nat.port_range.max,
            tcp_syn_timeout: ct.tcp_syn_timeout,
            tcp_established_timeout: ct.tcp_established_timeout,
            tcp_fin_timeout: ct.tcp_fin_timeout,
            tcp_close_timeout: ct.tcp_close_timeout,
            udp_timeout: ct.udp_timeout,
            udp_stream_timeout: ct.udp_stream_timeout,
            icmp_timeout: ct.icmp_timeout,
            gateway: config.gateway().octets(),
            flags: if config.node.pod_counters.unwrap_or(true) {
                netpath_common::node_flags::POD_COUNTERS
            } else {
                0
            },
            // SYN_RECV, CLOSE_WAIT, LAST_ACK and the mid-stream pickup
            // ceiling keep netfilter's defaults (no config keys yet).
            ..NodeSettings::DEFAULT
        };
        Self {
            instance: config.node.name.clone(),
            netns: config.node.netns.clone(),
            pod_cidr: config.node.pod_cidr,
            gateway: config.gateway(),
            uplink: config.node.uplink.clone(),
            pods,
            routes,
            masquerade,
            settings,
            conntrack_max: ct.max_entries,
            gc_interval: Duration::from_secs(u64::from(ct.gc_interval)),
            service_cidr: config.node.service_cidr,
            port_forwards: config
                .port_forwards
                .iter()
                .map(|pf| DesiredPortForward {
                    proto: pf.proto,
                    port: pf.port,
                    address: pf.address,
                    to: DesiredTarget {
                        target: pf.to.clone(),
                        port: pf.target_port(),
                    },
                })
                .collect(),
            services: config
                .services
                .iter()
                .map(|svc| DesiredService {
                    name: svc.name.clone(),
                    vip: svc.vip,
                    port: svc.port,
                    proto: svc.proto,
                    backends: svc
                        .backends
                        .iter()
                        .map(|b| DesiredTarget {
                            target: b.clone(),
                            port: svc.backend_port(b),
                        })
                        .collect(),
                    affinity_timeout: (svc.affinity == SessionAffinity::ClientIp)
                        .then(|| svc.affinity_timeout_secs()),
                })
                .collect(),
            xdp: config.node.xdp.unwrap_or_default(),
            deny_sources: config.node.deny_sources.clone(),
            dns: config.node.dns.clone(),
            cluster: crate::reconcile::cluster::DesiredCluster::resolve(config),
        }
    }

    /// Whether the node has any frontend (a port-forward or a service):
    /// then `np_from_uplink` is attached to the uplink, where clients of
    /// the LAN arrive.
    pub fn has_frontends(&self) -> bool {
        !self.port_forwards.is_empty() || !self.services.is_empty()
    }

    /// The MTU of every pod's veth (both ends): the uplink's, `uplink_mtu`
    /// as read on the node (the pods' traffic leaves through it, so a
    /// larger pod MTU would only make the datapath answer "fragmentation
    /// needed"), or [`DEFAULT_POD_MTU`] when the node has no uplink.
    ///
    /// In a VXLAN cluster the encapsulation's 50 bytes are left out
    /// (`netpath_common::peer::VXLAN_OVERHEAD`): a pod's full-size packet
    /// then fits the tunnel.
    pub fn pod_mtu(&self, uplink_mtu: Option<u32>) -> u32 {
        let mtu = match (&self.uplink, uplink_mtu) {
            (Some(_), Some(mtu)) if mtu > 0 => mtu,
            _ => DEFAULT_POD_MTU,
        };
        match &self.cluster {
            Some(c) if c.vxlan.is_some() => {
                mtu.saturating_sub(netpath_common::peer::VXLAN_OVERHEAD)
            }
            _ => mtu,
        }
    }

    /// The datapath settings with `fib_ifindex` (`np0`'s ifindex, the
    /// device `bpf_fib_lookup` runs as).
    pub fn node_settings(&self, fib_ifindex: u32) -> NodeSettings {
        NodeSettings {
            fib_ifindex,
            ..self.settings
        }
    }

    /// The node namespace for messages: its name, or "the current
    /// namespace".
    pub fn netns_label(&self) -> String {
        netns_label(self.netns.as_deref())
    }

    /// The pod named `name`.
    pub fn pod(&self, name: &str) -> Option<&DesiredPod> {
        self.pods.iter().find(|p| p.name == name)
    }
}

/// A node namespace for messages: its name, or "the current namespace".
pub fn netns_label(name: Option<&str>) -> String {
    name.map_or_else(|| "the current namespace".into(), str::to_owned)
}

impl DesiredPod {
    /// A `[[pods]]` entry: the namespace at `netns_path` (someone else's)
    /// or else one netpath owns, named `node.pod_netns_prefix` + pod name;
    /// `ifname` (default [`POD_IFNAME`]) inside.
    pub fn from_config(config: &Config, pod: &PodConfig) -> Self {
        Self {
            name: pod.name.clone(),
            netns: match &pod.netns_path {
                Some(path) => PodNetns::Given { path: path.clone() },
                None => PodNetns::Owned(config.pod_netns(pod)),
            },
            host_ifname: Config::host_ifname(pod),
            ifname: pod.ifname.clone().unwrap_or_else(|| POD_IFNAME.to_owned()),
            address: pod.address,
        }
    }
}

#[cfg(test)]
mod tests;
