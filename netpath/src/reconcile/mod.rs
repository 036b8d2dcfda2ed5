//! The reconciler: desired state (a [`DesiredNode`]) → plan → kernel state.
//!
//! `apply` validates everything it can before it changes anything, diffs the
//! desired pods against what the instance built before ([`NodeState`]),
//! and then creates, recreates or deletes only the pods that differ.
//! Applying the same configuration twice changes nothing. If a step fails
//! midway, the steps already taken in this apply are undone in reverse
//! order.
//!
//! The flow: [`crate::config`] → [`crate::resolve`] ([`DesiredNode`]) →
//! [`plan`] (diff against the state file, the leases, the pinned maps and
//! the links) → [`execute`] (the steps, each with its undo in [`undo`]) →
//! the [`ApplyReport`] ([`crate::render`] prints it). A pod is created and
//! deleted by [`pod`]; the pods' gateway device is [`gateway`]'s; the route
//! and masquerade maps are resolved by [`routes`].
//!
//! Routing and masquerade replace `ip_forward`, `ip route` and `iptables -t
//! nat` with map contents (see [`routes::DatapathPlan`]):
//!
//! ```text
//! sysctl -w net.ipv4.conf.np0.forwarding=1      (only np0: bpf_fib_lookup runs as np0;
//!                                                no packet enters np0, ip_forward stays 0)
//! ip route add 0.0.0.0/0 via GW dev UPLINK       → routes_v1 (for pod traffic only) + np_from_uplink on UPLINK
//! ip route add DST via VIA dev DEV               → routes_v1 + np_from_uplink on DEV
//! iptables -t nat -A POSTROUTING -s SRC -o OUT -j MASQUERADE
//!                                                → masq_v1 + np_from_uplink on OUT
//! port range, conntrack timeouts                 → settings_v1
//! ```
//!
//! When the route map holds a route that covers a connected network of an
//! interface netpath uses (a default route covers them all), that network
//! goes into the map too, as a directly connected route: otherwise the
//! declared route would win over the node's connected route, which the
//! kernel's FIB would have preferred. Likewise every address of the node
//! that a declared route covers goes in as a `/32` with ifindex 0 ("hand it
//! to the node's stack"), so that pods keep reaching the node itself. These
//! are computed at apply time: an address added to the node later needs
//! another apply (SIGHUP to the daemon).

use std::collections::{BTreeMap, BTreeSet};

use log::info;

use crate::{
    config::Config,
    datapath::{NodeMaps, PinDir},
    resolve::DesiredNode,
    state::{PodState, StateDir},
    sys::{
        netlink::Netlink,
        netns::Netns,
        preflight::{self, check_privileges},
    },
};

pub mod cluster;
pub mod dns;
mod error;
pub mod execute;
mod failpoint;
pub mod gateway;
pub mod inspect;
pub mod lb;
mod node;
pub mod plan;
pub mod pod;
mod report;
pub mod routes;
pub mod undo;

pub use error::{PlanError, ReconcileError, StepError};
pub use report::ApplyReport;

pub use node::{GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, NP0_FORWARDING, Node};

/// Applies `config`: makes the node and its pods what the configuration says.
pub async fn apply(config: &Config) -> Result<ApplyReport, ReconcileError> {
    if config.node.pod_cidr_is_unset() {
        // Validation accepts it for etcd to fill in; nothing may build a
        // node from it (C1 in `config::cluster`).
        return Err(crate::config::ConfigError::from(
            crate::config::cluster::ClusterError::PodCidrNotLeased,
        )
        .into());
    }
    config.validate()?;
    apply_desired(&DesiredNode::resolve(config)).await
}

/// Applies a resolved node (see [`apply`]): validates against the node,
/// plans, and executes the plan if it changes anything.
pub async fn apply_desired(desired: &DesiredNode) -> Result<ApplyReport, ReconcileError> {
    preflight::check()?;
    let node = Node::open(desired).await?;
    plan::check_uplink(&node, desired).await?;
    // Routes and masquerade rules must resolve on the node.
    let datapath = routes::plan_datapath(desired, &node.nl).await?;

    let state_dir = StateDir::for_instance(&desired.instance);
    let _lock = state_dir.lock()?;
    let mut state = state_dir.load()?;
    let plan = plan::plan(&node, desired, &state_dir, &state, datapath).await?;
    if plan.is_noop() {
        info!("instance {}: nothing to change", desired.instance);
        return Ok(plan.report);
    }
    // From here on the system changes; every step is undone on failure.
    execute::Apply {
        node: &node,
        desired,
        plan: &plan,
    }
    .run(&state_dir, &mut state)
    .await
}

/// Removes everything an instance built: its pods, the gateway device, the
/// pins and the state. Idempotent.
pub async fn destroy(instance: &str) -> Result<Vec<String>, ReconcileError> {
    check_privileges()?;
    let state_dir = StateDir::for_instance(instance);
    let pins = PinDir::for_instance(instance);
    if !state_dir.root().exists() && !pins.exists() {
        return Ok(Vec::new());
    }
    let _lock = state_dir.lock()?;
    let state = state_dir.load()?;
    let node_ns = match &state.netns {
        Some(name) if Netns::exists(name) => Some(Netns::open(name)?),
        Some(_) => None,
        None => Some(Netns::current()?),
    };
    let mut maps = NodeMaps::open_pinned(&pins).ok();
    let nl = match &node_ns {
        Some(ns) => Some(Netlink::connect(ns).await?),
        None => None,
    };
    let mut removed = Vec::new();
    for (name, pod) in &state.pods {
        pod::delete_pod(nl.as_ref(), maps.as_mut(), &pins, pod).await?;
        removed.push(name.clone());
    }
    if let Some(nl) = &nl
        && state.gateway.is_some()
    {
        gateway::delete_gateway(nl).await?;
    }
    if let Some(nl) = &nl {
        cluster::delete_devices(nl, &pins).await?;
    }
    drop(maps);
    pins.remove()?;
    state_dir.remove()?;
    Ok(removed)
}

/// The pods an instance has built (from its state file).
pub fn pods(instance: &str) -> Result<BTreeMap<String, PodState>, ReconcileError> {
    Ok(StateDir::for_instance(instance).load()?.pods)
}

/// Interface names by ifindex in an instance's node namespace (to print the
/// ifindexes the maps hold). Empty when the namespace is gone.
pub async fn interface_names(instance: &str) -> Result<BTreeMap<u32, String>, ReconcileError> {
    let state = StateDir::for_instance(instance).load()?;
    let ns = match &state.netns {
        Some(name) if Netns::exists(name) => Netns::open(name)?,
        Some(_) => return Ok(BTreeMap::new()),
        None => Netns::current()?,
    };
    let nl = Netlink::connect(&ns).await?;
    Ok(nl
        .links()
        .await?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect())
}

/// The interfaces `np_from_uplink` is attached to, from the state file.
pub fn uplinks(instance: &str) -> Result<BTreeSet<String>, ReconcileError> {
    Ok(StateDir::for_instance(instance)
        .load()?
        .uplinks
        .into_keys()
        .collect())
}
