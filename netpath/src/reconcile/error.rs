//! Why an apply or destroy failed: one type per stage, each variant saying
//! what failed and carrying the source.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;

use crate::{
    config::ConfigError,
    datapath::{DatapathError, MapsError, PinError},
    ipam::IpamError,
    state::StateError,
    sys::{
        etc_netns::EtcNetnsError, netlink::NetlinkError, netns::NetnsError,
        preflight::PreflightError, sysctl::SysctlError,
    },
};

/// Why an apply or destroy failed.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Step(#[from] StepError),
    #[error("{source} (the changes made by this apply were rolled back)")]
    RolledBack { source: Box<ReconcileError> },
}

/// Why the desired node cannot be planned against the node: found before
/// anything changes.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "{owner}: interface {ifname} does not exist in the node namespace ({netns}); \
         create it first or fix {field}"
    )]
    InterfaceMissing {
        /// `route to X` or `masquerade rule for X`.
        owner: String,
        /// `dev` or `out`.
        field: &'static str,
        ifname: String,
        netns: String,
    },
    #[error(
        "route to {dst}: via {via} is not on a network of {dev} ({networks}); a next hop \
         must be directly reachable: use an address inside one of them, or the dev that \
         leads to {via}"
    )]
    ViaOffLink {
        dst: Ipv4Net,
        via: Ipv4Addr,
        dev: String,
        /// The interface's networks, or "it has no IPv4 address".
        networks: String,
    },
    #[error(
        "masquerade rule for {source_prefix}: interface {out} has no IPv4 address to \
         masquerade behind; give it one (`ip addr add ... dev {out}`) or set `address`"
    )]
    NoNatAddress { source_prefix: Ipv4Net, out: String },
    #[error(
        "uplink {name} does not exist in the node namespace ({netns}); create it first \
         or fix node.uplink.name"
    )]
    UplinkMissing { name: String, netns: String },
    #[error(
        "interface {ifname} already exists in the node namespace and was not made by \
         netpath for pod '{pod}'; remove it or set the pod's host_ifname"
    )]
    IfnameTaken { ifname: String, pod: String },
    #[error(
        "network namespace {netns} already exists and was not made by netpath for pod \
         '{pod}'; remove it (`ip netns del {netns}`) or set node.pod_netns_prefix"
    )]
    NetnsTaken { netns: String, pod: String },
    #[error(
        "pod '{pod}': network namespace {netns} does not exist; the runtime that gave it \
         must create it first"
    )]
    NetnsMissing { netns: String, pod: String },
    #[error(
        "instance '{instance}' was built in node namespace {was} and the configuration \
         now says {now}; run `netpath destroy --instance {instance}` first"
    )]
    NodeMoved {
        instance: String,
        was: String,
        now: String,
    },
    #[error(
        "[[port_forwards]] entry {entry}: address {address} is not an address of the node \
         ({netns}); use one of the node's addresses, or omit `address` to listen on every \
         uplink address and the pods' gateway"
    )]
    ForwardAddressNotOnNode {
        entry: usize,
        address: Ipv4Addr,
        netns: String,
    },
    #[error(
        "node.service_cidr {cidr} overlaps the network {network} of interface {ifname} in the \
         node namespace; service VIPs must not be real addresses: pick a service CIDR that \
         overlaps no network of the node"
    )]
    ServiceCidrOnNode {
        cidr: Ipv4Net,
        ifname: String,
        network: Ipv4Net,
    },
    #[error(
        "{count} frontends (services and port-forward addresses) are configured; the \
         datapath holds at most {max}: remove some"
    )]
    TooManyFrontends { count: usize, max: usize },
    #[error(transparent)]
    Frontend(#[from] crate::lb::frontends::SpecError),
    /// The pod CIDR overlaps a network the node has.
    #[error(transparent)]
    Overlap(Box<ConfigError>),
    #[error(
        "{}: the file exists and netpath did not write it, and pod '{pod}' would get its \
         resolver configuration there ([node.dns]); netpath never overwrites someone else's \
         file: move it away, or remove [node.dns]",
        path.display()
    )]
    EtcFileTaken { path: PathBuf, pod: String },
    #[error(transparent)]
    EtcNetns(#[from] EtcNetnsError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// Why a step of an apply (or its undo, or a destroy) failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Cluster(#[from] super::cluster::ClusterStepError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Pins(#[from] PinError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    EtcNetns(#[from] EtcNetnsError),
    /// Only with the `testing` feature (see `reconcile::failpoint`).
    #[cfg(feature = "testing")]
    #[error("injected failure at {at} (NETPATH_FAILPOINT is set)")]
    Failpoint { at: String },
}

impl From<ConfigError> for PlanError {
    fn from(e: ConfigError) -> Self {
        Self::Overlap(Box::new(e))
    }
}

impl From<NetlinkError> for ReconcileError {
    fn from(e: NetlinkError) -> Self {
        Self::Step(e.into())
    }
}

impl From<NetnsError> for ReconcileError {
    fn from(e: NetnsError) -> Self {
        Self::Step(e.into())
    }
}

impl From<MapsError> for ReconcileError {
    fn from(e: MapsError) -> Self {
        Self::Step(e.into())
    }
}

impl From<PinError> for ReconcileError {
    fn from(e: PinError) -> Self {
        Self::Step(e.into())
    }
}

impl From<DatapathError> for ReconcileError {
    fn from(e: DatapathError) -> Self {
        Self::Step(e.into())
    }
}
