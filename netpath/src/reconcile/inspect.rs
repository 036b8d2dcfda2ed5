//! What the pods are on the node, checked against how they were built: the
//! daemon's `pod list`, `status` and CNI `CHECK`.
//!
//! A pod is as built when its namespace exists; its host side exists with
//! the recorded MTU and carries its pinned `np_from_pod` link; the endpoint
//! map sends its address to that interface; and inside the pod, its
//! interface is up with the address as a `/32`, the gateway is on-link and
//! the default route goes via the gateway. Each miss is a problem named in
//! words (`ip`-style), so that a CNI `CHECK` failure says what to look at.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netpath_common::{Endpoint, mac::Mac};

use super::{Node, ReconcileError};
use crate::{
    datapath::NodeMaps,
    resolve::DesiredNode,
    state::{PodState, StateDir},
    sys::netlink::Netlink,
};

/// One built pod and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodReport {
    pub name: String,
    pub state: PodState,
    /// The pod side's MAC, from the endpoint map.
    pub mac: Option<String>,
    /// The host side's MAC (the gateway as the pod sees it).
    pub host_mac: Option<String>,
    /// Empty when the pod is as built.
    pub problems: Vec<String>,
}

impl PodReport {
    /// Whether the pod is as built.
    pub fn healthy(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Every pod the instance of `desired` built, checked. Pods the state
/// file does not hold are left out (they are not built).
pub async fn inspect_pods(desired: &DesiredNode) -> Result<Vec<PodReport>, ReconcileError> {
    let state = StateDir::for_instance(&desired.instance).load()?;
    let node = Node::open(desired).await?;
    let endpoints = NodeMaps::pinned_endpoints(&node.pins).unwrap_or_default();
    let mut reports = Vec::with_capacity(state.pods.len());
    for (name, pod) in &state.pods {
        let problems = check_pod(&node, &endpoints, desired.gateway, pod).await;
        let ep = endpoints.get(&pod.address);
        reports.push(PodReport {
            name: name.clone(),
            state: pod.clone(),
            mac: ep.map(|e| Mac(e.pod_mac).to_string()),
            host_mac: ep.map(|e| Mac(e.gw_mac).to_string()),
            problems,
        });
    }
    Ok(reports)
}

/// What is wrong with `pod` on `node` (empty: nothing).
pub async fn check_pod(
    node: &Node,
    endpoints: &BTreeMap<Ipv4Addr, Endpoint>,
    gateway: Ipv4Addr,
    pod: &PodState,
) -> Vec<String> {
    let mut problems = Vec::new();
    let mut problem = |p: String| problems.push(p);
    if !pod.netns.exists() {
        problem(format!("its namespace {} does not exist", pod.netns));
        return problems;
    }
    match node.nl.link_by_name(&pod.host_ifname).await {
        Ok(Some(host)) => {
            if host.mtu != pod.mtu {
                problem(format!(
                    "{} has MTU {}, not {}",
                    pod.host_ifname, host.mtu, pod.mtu
                ));
            }
            if !host.up {
                problem(format!("{} is down", pod.host_ifname));
            }
            match endpoints.get(&pod.address) {
                Some(ep) if ep.ifindex == host.index => {}
                Some(ep) => problem(format!(
                    "the endpoint map sends {} to ifindex {}, not to {} ({})",
                    pod.address, ep.ifindex, pod.host_ifname, host.index
                )),
                None => problem(format!("the endpoint map has no entry for {}", pod.address)),
            }
        }
        Ok(None) => problem(format!("the host side {} does not exist", pod.host_ifname)),
        Err(e) => problem(format!("cannot read {}: {e}", pod.host_ifname)),
    }
    if !node.pins.ingress_link(&pod.host_ifname).exists() {
        problem(format!(
            "np_from_pod is not pinned on {} ({})",
            pod.host_ifname,
            node.pins.ingress_link(&pod.host_ifname).display()
        ));
    }
    if let Err(e) = check_inside(pod, gateway, &mut problem).await {
        problem(format!("cannot look inside {}: {e}", pod.netns));
    }
    problems
}

/// The pod side: interface up, `address/32` on it, a link route to the
/// gateway and the default route via it.
async fn check_inside(
    pod: &PodState,
    gateway: Ipv4Addr,
    problem: &mut impl FnMut(String),
) -> Result<(), ReconcileError> {
    let ns = pod.netns.open()?;
    let nl = Netlink::connect(&ns).await?;
    let Some(link) = nl.link_by_name(&pod.ifname).await? else {
        problem(format!("{} has no interface {}", pod.netns, pod.ifname));
        return Ok(());
    };
    if !link.up {
        problem(format!("{} is down in {}", pod.ifname, pod.netns));
    }
    if !nl.addresses(link.index).await?.contains(&(pod.address, 32)) {
        problem(format!(
            "{} in {} does not have {}/32",
            pod.ifname, pod.netns, pod.address
        ));
    }
    let routes = nl.routes().await?;
    let on_link = |dst: Ipv4Net, via: Option<Ipv4Addr>| {
        routes
            .iter()
            .any(|r| r.dst == dst && r.gateway == via && r.oif == Some(link.index))
    };
    if !on_link(Ipv4Net::new(gateway, 32).expect("/32 is valid"), None) {
        problem(format!(
            "{} has no route to the gateway {gateway} on {}",
            pod.netns, pod.ifname
        ));
    }
    if !on_link(Ipv4Net::default(), Some(gateway)) {
        problem(format!(
            "{} has no default route via {gateway} dev {}",
            pod.netns, pod.ifname
        ));
    }
    Ok(())
}
