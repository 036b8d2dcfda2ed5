//! The desired state of one node, read from TOML: the schema ([`schema`]),
//! its errors ([`error`]) and the checks that need no system state
//! ([`validate`]). What the configuration means once its defaults are
//! filled in is [`crate::resolve`]'s business.
//!
//! ```toml
//! [node]
//! name = "demo"                    # instance name; pins live under /sys/fs/bpf/netpath/<name>/
//! netns = "netpath-demo-node"      # optional: the named namespace that is the node
//! pod_cidr = "10.200.0.0/24"       # IPv4, prefix length <= 30
//! gateway = "10.200.0.1"           # optional; default: first host address of pod_cidr
//! pod_netns_prefix = "demo-"       # optional; default "<name>-"
//! xdp = "native"                   # optional: "native" (default; generic where the driver
//!                                  # has no XDP), "generic" or "off"
//! deny_sources = ["203.0.113.0/24"] # optional: sources the uplink's XDP drops
//!
//! [node.uplink]                    # optional
//! name = "uplink0"                 # an interface in the node namespace
//! address = "192.168.50.2/24"      # optional: netpath assigns it if given
//! gateway = "192.168.50.1"         # optional: the pods' default route (via the uplink)
//!
//! [node.dns]                       # optional: each owned pod's /etc/netns/<netns>/resolv.conf
//! nameservers = ["192.168.50.1"]   # 1 to 3 (glibc's MAXNS)
//! search = ["cluster.local"]       # optional; at most 6 DNS names, 256 characters in all
//! options = ["ndots:5"]            # optional; resolv.conf(5) options, one word each
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
//! `[node.dns]` is described and checked in `config/dns.rs` ([`DnsConfig`]);
//! netpath writes nothing under `/etc/netns` without it.
//!
//! Port-forwards, services and `node.service_cidr` are described in
//! `config/lb.rs` ([`PortForwardConfig`], [`ServiceConfig`]) and checked by
//! `config/lb_validate.rs` ([`LbError`]).
//!
//! Unknown keys are errors. [`Config::validate`] makes every check that needs
//! no system state and reports the first problem, in a fixed order (node
//! fields, then the uplink, then each pod in order, then the pod count, then
//! routes, masquerade rules, `[nat]` and `[conntrack]`);
//! [`Config::check_overlaps`] checks the pod CIDR against the networks the
//! caller found on the node. What needs the node (does `dev` exist, is `via`
//! on its network, which address does `out` have) the reconciler checks
//! before it changes anything ([`crate::reconcile::plan`]).

use std::{fs, net::Ipv4Addr, path::Path};

pub mod cluster;
mod dns;
mod error;
mod lb;
mod lb_validate;
mod limits;
pub mod metrics;
mod schema;
mod validate;

pub use validate::check_overlaps;

pub use dns::{DnsConfig, MAX_NAMESERVERS, MAX_SEARCH_DOMAINS, MAX_SEARCH_LEN};
pub use error::{ConfigError, IfnameOwner};
pub use lb::{
    DEFAULT_AFFINITY_TIMEOUT, L4Proto, MAX_AFFINITY_TIMEOUT, PortForwardConfig, ServiceConfig,
    SessionAffinity, Target,
};
pub use lb_validate::{LbError, MAX_SERVICE_BACKENDS};
use limits::net;
pub use limits::{
    GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, HOST_IFNAME_PREFIX, MAX_CONNTRACK_ENTRIES, MAX_IFNAME_LEN,
    MAX_MASQUERADE, MAX_NAME_LEN, MAX_NETNS_LEN, MAX_POD_PREFIX_LEN, MAX_ROUTES,
    MIN_CONNTRACK_ENTRIES, POD_IFNAME,
};
pub use schema::{
    Config, ConntrackConfig, MasqueradeConfig, NatConfig, NodeConfig, PodConfig, PortRange,
    RouteConfig, UplinkConfig, XdpMode,
};

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
        // C2 first: with static peers, a left-out pod CIDR is checked as
        // the whole cluster range, which every peer overlaps.
        config.check_file()?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML ([`from_toml_str`](Self::from_toml_str)
    /// reads it back to an equal `Config`).
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("a Config is always representable in TOML")
    }

    /// The built-in demo configuration: node `demo` in namespace
    /// `netpath-demo-node`, pod CIDR 10.200.0.0/24, uplink `uplink0` with
    /// 192.168.50.2/24 and gateway 192.168.50.1 (the LAN host), pods `red`
    /// and `blue` with addresses from IPAM, pod traffic masqueraded behind
    /// the uplink's address, the classic port-forward (TCP 8080 on the
    /// node → `blue`:80) and a service `web` (10.96.0.10:80 in service CIDR
    /// 10.96.0.0/16) with `red` and `blue` behind it.
    pub fn demo() -> Config {
        let pod = PodConfig::named;
        Config {
            node: NodeConfig {
                name: "demo".into(),
                netns: Some("netpath-demo-node".into()),
                pod_cidr: net(10, 200, 0, 0, 24),
                service_cidr: Some(net(10, 96, 0, 0, 16)),
                gateway: None,
                pod_netns_prefix: None,
                uplink: Some(UplinkConfig {
                    name: "uplink0".into(),
                    address: Some(net(192, 168, 50, 2, 24)),
                    gateway: Some(Ipv4Addr::new(192, 168, 50, 1)),
                }),
                xdp: None,
                deny_sources: Vec::new(),
                dns: None,
                pod_counters: None,
                metrics: None,
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
            // `iptables -t nat -A PREROUTING -p tcp --dport 8080 -j DNAT
            // --to-destination BLUE:80`, on every node address.
            port_forwards: vec![PortForwardConfig {
                proto: L4Proto::Tcp,
                port: 8080,
                address: None,
                to: Target::Pod("blue".into()),
                to_port: Some(80),
            }],
            services: vec![ServiceConfig {
                name: "web".into(),
                vip: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                proto: L4Proto::Tcp,
                backends: vec![Target::Pod("red".into()), Target::Pod("blue".into())],
                target_port: None,
                affinity: SessionAffinity::None,
                affinity_timeout: None,
            }],
            cluster: None,
            peers: Vec::new(),
        }
    }

    /// The demo's pods, routes and masquerade without its port-forward,
    /// service and service CIDR: the base of the tests that are about the
    /// rest of the schema.
    #[cfg(test)]
    pub(crate) fn demo_without_lb() -> Config {
        let mut c = Config::demo();
        c.node.service_cidr = None;
        c.port_forwards.clear();
        c.services.clear();
        c
    }
}

#[cfg(test)]
mod tests;
