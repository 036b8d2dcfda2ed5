//! `netpath demo` (what `cargo xtask run` starts): the classic two-namespace
//! exercise, `red` and `blue`, wired by netpath inside a lab node namespace
//! with a LAN host behind its uplink. The pods reach the LAN host through
//! the datapath's masquerade (the LAN host has no route to the pods), and
//! the node's kernel forwards nothing and has no iptables rule. [`lab`]
//! builds the node and LAN host namespaces (the tests and the benchmarks
//! use it too); [`crate::render::demo`] says what was built.
//!
//! It also shows DNAT the classic way: each pod runs an HTTP responder
//! ([`http`]) that answers with its own name, the LAN host reaches `blue`
//! through the port-forward `node-address:8080`, and the service `web`
//! (10.96.0.10:80, `red` and `blue` behind it) is reachable from the pods,
//! the node and the LAN host (which routes the service CIDR via the node,
//! as a router in front of a Kubernetes node would).

use crate::{
    config::Config,
    reconcile::{self, ApplyReport, ReconcileError},
    sys::preflight::{self, PreflightError},
};

pub mod http;
pub mod lab;
pub mod nodes;

use http::{HTTP_PORT, HttpError, Responders};
use lab::{Lab, LabError};

use crate::sys::{
    netlink::{Netlink, NetlinkError, Route},
    netns::{Netns, NetnsError},
};

/// The demo's node namespace.
pub const NODE_NETNS: &str = "netpath-demo-node";
/// The demo's LAN host namespace.
pub const LAN_NETNS: &str = "netpath-demo-lan";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the LAN host's route to the service CIDR: {0}")]
    Netns(#[from] NetnsError),
    #[error("the LAN host's route to the service CIDR: {0}")]
    Netlink(#[from] NetlinkError),
}

/// The demo's lab and configuration.
pub fn lab_and_config() -> (Lab, Config) {
    let config = Config::demo();
    let lab = Lab::new(NODE_NETNS, LAN_NETNS);
    (lab, config)
}

/// Removes whatever an earlier demo left behind (a crashed run).
pub async fn clean(lab: &Lab, config: &Config) -> Result<(), DemoError> {
    reconcile::destroy(&config.node.name).await?;
    lab.destroy().await;
    Ok(())
}

/// Builds the demo: the lab, then the pods through `apply`.
pub async fn up(lab: &Lab, config: &Config) -> Result<ApplyReport, DemoError> {
    preflight::check()?;
    clean(lab, config).await?;
    lab.create().await?;
    match reconcile::apply(config).await {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = clean(lab, config).await;
            Err(e.into())
        }
    }
}

/// Starts what the demo's users talk to: the pods' HTTP responders, and
/// the LAN host's route to the service CIDR via the node's uplink address
/// (`ip -n LAN route replace 10.96.0.0/16 via 192.168.50.2`). The
/// responders stop when the returned value is dropped.
pub async fn serve(
    lab: &Lab,
    config: &Config,
    report: &ApplyReport,
) -> Result<Responders, DemoError> {
    if let Some(cidr) = config.node.service_cidr {
        let lan = Netns::open(&lab.lan_netns)?;
        let nl = Netlink::connect(&lan).await?;
        nl.replace_route(&Route {
            dst: cidr,
            gateway: Some(lab.node_addr.addr()),
            oif: None,
            src: None,
            scope_link: false,
            onlink: false,
        })
        .await?;
    }
    let pods: Vec<(String, String)> = config
        .pods
        .iter()
        .filter(|p| report.addresses.contains_key(&p.name))
        .map(|p| (p.name.clone(), config.pod_netns(p)))
        .collect();
    Ok(Responders::start(&pods, HTTP_PORT)?)
}
