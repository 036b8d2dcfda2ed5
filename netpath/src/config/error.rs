//! What is wrong with a configuration, and what to do about it.

use std::{fmt, io, net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

use super::{
    limits::{
        HOST_IFNAME_PREFIX, MAX_CONNTRACK_ENTRIES, MAX_IFNAME_LEN, MAX_NAME_LEN,
        MAX_POD_PREFIX_LEN, MIN_CONNTRACK_ENTRIES,
    },
    schema::{PodConfig, PortRange},
};
use crate::ipam::AddressError;

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
    pub(super) fn pod(pod: &PodConfig) -> Self {
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
    /// A pod address is outside the pod CIDR, or its network, broadcast
    /// or gateway address (the same check IPAM makes on a lease).
    #[error(transparent)]
    Address(#[from] AddressError),
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
    /// A pod's `netns_path`, `ifname` or `container_id` cannot be used.
    #[error("pod '{pod}': {field} {value:?} {why}; {hint}")]
    InvalidPodAttachment {
        /// The pod.
        pod: String,
        /// `netns_path`, `ifname` or `container_id`.
        field: &'static str,
        /// The value.
        value: String,
        /// What is wrong with it.
        why: String,
        /// What to do.
        hint: &'static str,
    },
    /// Two pods are the same container's same interface.
    #[error(
        "pods '{first}' and '{second}' are both interface {ifname} of container {container_id};          a container's interface is one pod (CNI DEL the first before adding it again)"
    )]
    DuplicateAttachment {
        /// The container id.
        container_id: String,
        /// The in-pod interface.
        ifname: String,
        /// The first pod.
        first: String,
        /// The second pod.
        second: String,
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
    /// A deny list without XDP to enforce it.
    #[error(
        "node.deny_sources lists {count} prefix(es) but node.xdp is off, and the deny list is \
         enforced by the uplink's XDP program; set node.xdp = \"native\" (or \"generic\" \
         where the driver has no native XDP), or remove node.deny_sources"
    )]
    DenyWithoutXdp {
        /// How many prefixes the deny list has.
        count: usize,
    },
    /// A route or masquerade prefix has host bits set.
    #[error("{what} {prefix} has host bits set; write its network address, {network}")]
    PrefixNotNetwork {
        /// `route dst`, `masquerade source` or `node.deny_sources entry`.
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
    /// A problem with `node.service_cidr`, a port-forward or a service.
    #[error(transparent)]
    Lb(#[from] super::lb_validate::LbError),
    /// A problem with `[cluster]` or `[[peers]]`.
    #[error(transparent)]
    Cluster(#[from] super::cluster::ClusterError),
    /// `[node.dns]` without a nameserver.
    #[error(
        "[node.dns] lists no nameservers; a pod's resolver would ask 127.0.0.1, which inside \
         the pod is the pod itself: add `nameservers = [\"<DNS server>\"]` or remove [node.dns]"
    )]
    DnsNoNameserver,
    /// More nameservers than the resolver uses.
    #[error(
        "[node.dns] lists {count} nameservers; the resolver uses at most {max} (glibc's MAXNS) \
         and would ignore the rest: keep the {max} to ask first",
        max = super::dns::MAX_NAMESERVERS
    )]
    DnsTooManyNameservers {
        /// How many are listed.
        count: usize,
    },
    /// A nameserver address no DNS server can have.
    #[error(
        "[node.dns] nameserver {address} is {why}, where a pod cannot reach a DNS server; use \
         the unicast address of a DNS server the pods can reach (e.g. one on the LAN)"
    )]
    DnsNameserver {
        /// The address.
        address: Ipv4Addr,
        /// What it is.
        why: &'static str,
    },
    /// More search domains than the resolver takes.
    #[error(
        "[node.dns] lists {count} search domains; the resolver takes at most {max}: keep the \
         {max} most used",
        max = super::dns::MAX_SEARCH_DOMAINS
    )]
    DnsTooManySearchDomains {
        /// How many are listed.
        count: usize,
    },
    /// A search domain that is not a DNS name.
    #[error(
        "[node.dns] search domain {domain:?} {why}; write a DNS name such as \
         \"svc.cluster.local\": labels of letters, digits and '-' separated by dots"
    )]
    DnsSearchDomain {
        /// The domain as written.
        domain: String,
        /// What is wrong with it.
        why: String,
    },
    /// A search list longer than the resolver takes.
    #[error(
        "[node.dns] search list is {len} characters with the spaces between domains; the \
         resolver takes at most {max}: use fewer or shorter domains",
        max = super::dns::MAX_SEARCH_LEN
    )]
    DnsSearchTooLong {
        /// Its length.
        len: usize,
    },
    /// A resolver option that cannot be written on the `options` line.
    #[error(
        "[node.dns] option {option:?} {why}; write each option as one word, e.g. \"ndots:5\" \
         or \"timeout:2\" (one list entry per option)"
    )]
    DnsOption {
        /// The option as written.
        option: String,
        /// What is wrong with it.
        why: String,
    },
    /// A `[conntrack]` timeout or interval of 0 seconds.
    #[error("conntrack.{field} is 0; it is a number of seconds and must be at least 1")]
    ZeroSeconds {
        /// The key.
        field: &'static str,
    },
}
