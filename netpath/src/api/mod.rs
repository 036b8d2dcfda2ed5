//! The node daemon's local API: what `netpath pod add`, `netpath apply -f`
//! and `netpath-cni` send to a running `netpath daemon`.
//!
//! The transport is a Unix stream socket, `/run/netpath/<instance>/api.sock`
//! (mode `0600`, owned by root; the daemon also refuses peers whose
//! `SO_PEERCRED` uid is not 0). A client writes one [`Request`] as a line of
//! JSON and reads one [`Response`] line back, then closes:
//!
//! ```text
//! → {"op":"pod_del","name":"web"}
//! ← {"ok":{...}}                      or  {"error":{"kind":"not_found","message":"..."}}
//! ```
//!
//! A request that changes the desired state is validated whole, applied
//! through the same resolve → plan → execute as `netpath apply` (undone if
//! a step fails) and persisted only when the apply succeeded: a failed
//! request changes nothing. The daemon serves such requests one at a time;
//! read-only ones run beside them.

use std::{net::Ipv4Addr, path::PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::{
    config::{
        Config, L4Proto, MasqueradeConfig, PodConfig, PortForwardConfig, RouteConfig, ServiceConfig,
    },
    reconcile::ApplyReport,
    state::StateDir,
};

pub mod client;

pub use client::{Client, ClientError};

/// The socket's file name in the instance's state directory.
pub const SOCKET_NAME: &str = "api.sock";

/// The API socket of `instance`.
pub fn socket_path(instance: &str) -> PathBuf {
    StateDir::for_instance(instance).root().join(SOCKET_NAME)
}

/// One request to the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Who serves the instance, since when, and how its pods are.
    Status,
    /// The desired state as the daemon holds it.
    Desired,
    /// Replaces the whole desired state (`netpath apply -f`). Pods that a
    /// runtime attached through CNI (with a `container_id`) are the
    /// runtime's: they stay unless `config` names them too.
    Apply { config: Box<Config> },
    /// Adds one pod (`netpath pod add`).
    PodAdd { pod: PodConfig },
    /// Deletes one pod by name (`netpath pod del`).
    PodDel { name: String },
    /// The pods, with their addresses, interfaces and health.
    PodList,
    /// Adds a route for pod traffic (`netpath route add`).
    RouteAdd { route: RouteConfig },
    /// Deletes the route to `dst` (`netpath route del`).
    RouteDel { dst: Ipv4Net },
    /// Adds a masquerade rule (`netpath masquerade add`).
    MasqueradeAdd { rule: MasqueradeConfig },
    /// Deletes the masquerade rule equal to `rule` (`netpath masquerade del`).
    MasqueradeDel { rule: MasqueradeConfig },
    /// Adds a port-forward (`netpath port-forward add`).
    PortForwardAdd { forward: PortForwardConfig },
    /// Deletes the port-forward listening on `proto`/`port`/`address`.
    PortForwardDel {
        proto: L4Proto,
        port: u16,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<Ipv4Addr>,
    },
    /// Adds a service (`netpath service add`).
    ServiceAdd { service: ServiceConfig },
    /// Deletes a service by name (`netpath service del`).
    ServiceDel { name: String },
    /// Deletes every tracked connection (`conntrack -F`).
    ConntrackFlush,
    /// CNI `ADD`: a pod in the runtime's namespace.
    CniAdd { attachment: CniAttachment },
    /// CNI `DEL`: idempotent; `Ok` when the attachment is already gone.
    CniDel {
        container_id: String,
        ifname: String,
    },
    /// CNI `CHECK`: the attachment's interface, address, route and
    /// endpoint entry, as the pod was built.
    CniCheck {
        container_id: String,
        ifname: String,
    },
    /// CNI `GC`: removes every CNI attachment not in `valid`.
    CniGc { valid: Vec<AttachmentId> },
    /// Adds a peer node (`netpath node add`).
    NodeAdd {
        peer: crate::config::cluster::PeerConfig,
    },
    /// Deletes a peer node by name (`netpath node del`).
    NodeDel { name: String },
}

impl Request {
    /// Whether the request changes the desired state or the datapath (and
    /// so is serialized with the others that do).
    pub fn changes(&self) -> bool {
        !matches!(
            self,
            Self::Status | Self::Desired | Self::PodList | Self::CniCheck { .. }
        )
    }
}

/// A container's interface, as the runtime names it in CNI.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentId {
    pub container_id: String,
    pub ifname: String,
}

/// What CNI `ADD` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniAttachment {
    pub container_id: String,
    /// The interface to create inside the namespace (`CNI_IFNAME`).
    pub ifname: String,
    /// The runtime's namespace (`CNI_NETNS`).
    pub netns: PathBuf,
    /// A fixed address (the `ips` capability or `IP=` in `CNI_ARGS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<Ipv4Addr>,
}

/// The reply: exactly one of `ok` and `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    Ok(serde_json::Value),
    Error(ApiError),
}

/// A refused or failed request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    /// What is wrong and what to do.
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request (or the state it would make) is invalid; nothing changed.
    Invalid,
    /// The named object does not exist; nothing changed.
    NotFound,
    /// The object exists already; nothing changed.
    Exists,
    /// Applying failed on the node and was rolled back.
    Failed,
    /// A CNI `CHECK` found the attachment not as it was built.
    Unhealthy,
    /// The request could not be read.
    BadRequest,
}

/// `Ok` of [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub instance: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// The file the daemon was started with.
    pub config_file: Option<PathBuf>,
    /// Where the desired state is persisted.
    pub desired_file: PathBuf,
    pub socket: PathBuf,
    /// The pin directory.
    pub pins: PathBuf,
    pub pods: usize,
    pub pods_healthy: usize,
    pub routes: usize,
    pub masquerade: usize,
    pub port_forwards: usize,
    pub services: usize,
    /// Tracked connections (forward entries).
    pub connections: usize,
    /// Whether the last apply reloaded the programs (false: adopted).
    pub programs_loaded_at_start: bool,
}

/// One pod as the daemon reports it (`pod add`, `pod list`, CNI `ADD`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodInfo {
    pub name: String,
    pub address: Ipv4Addr,
    /// The pods' gateway (their default route's next hop).
    pub gateway: Ipv4Addr,
    /// The namespace name, or the file of a given one.
    pub netns: String,
    pub host_ifname: String,
    pub ifname: String,
    pub mtu: u32,
    /// The MAC of the pod's interface, as `ip link` prints it.
    pub mac: Option<String>,
    /// The MAC of the host side.
    pub host_mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Interface, address, route and endpoint entry all as built.
    pub healthy: bool,
    /// The node's `[node.dns]`, for a CNI result's `dns`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<crate::config::DnsConfig>,
}

/// `Ok` of a request that changed the desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    pub report: ApplyReport,
    /// The pod the request added, when it added one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodInfo>,
}
