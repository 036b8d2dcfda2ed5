//! The plan: the desired node diffed against what the node has (the state
//! file, the leases, the pinned maps and programs, the links), made and
//! checked before anything changes.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netpath_common::{Endpoint, progs};

use super::{
    dns::{DnsStep, plan_dns},
    error::{PlanError, ReconcileError},
    gateway::gateway_ok,
    lb::{LbPlan, plan_lb},
    node::Node,
    pod::pod_healthy,
    report::ApplyReport,
    routes::{DatapathPlan, datapath_ok},
};
use crate::{
    config::check_overlaps,
    datapath::{MapsError, NodeMaps},
    ipam::{self, Ipam},
    resolve::{DesiredNode, netns_label},
    state::{self, NodeState, PodState, StateDir},
};

/// What an apply will do, and what it found already in place.
#[derive(Debug)]
pub struct Plan {
    /// The route and masquerade maps and the uplink links, resolved.
    pub datapath: DatapathPlan,
    /// The pods to delete, create and keep.
    pub pods: PodPlan,
    /// The leases before the apply (what a failed apply falls back to).
    pub current_leases: Ipam,
    /// The leases after the apply.
    pub leases: Ipam,
    /// Whether the gateway device is as desired (and recorded).
    pub gateway_ok: bool,
    /// Whether the pinned programs come from this build's eBPF object.
    pub programs_ok: bool,
    /// Whether the pinned maps, settings and links hold the datapath plan.
    pub datapath_ok: bool,
    /// The hash of this build's eBPF object (recorded after the apply).
    pub object_hash: String,
    /// The port-forwards' and services' frontends: the steps that change
    /// the load balancer's maps.
    pub lb: LbPlan,
    /// Whether the state file records the frontends as planned.
    pub lb_records_ok: bool,
    /// The `/etc/netns` files of pods that stay that differ from
    /// `[node.dns]` (see [`super::dns`]).
    pub dns: Vec<DnsStep>,
    /// The report of an apply that goes as planned.
    pub report: ApplyReport,
}

impl Plan {
    /// Whether the node is already what the desired node says.
    pub fn is_noop(&self) -> bool {
        self.only_lb() && self.lb.steps.is_empty() && self.lb_records_ok && self.dns.is_empty()
    }

    /// Whether nothing but the load balancer's maps (and their record in
    /// the state file) and the pods' `/etc/netns` files change: then the
    /// apply loads no program and touches only the frontends and files that
    /// differ.
    pub fn only_lb(&self) -> bool {
        self.pods.create.is_empty()
            && self.pods.delete.is_empty()
            && self.gateway_ok
            && self.programs_ok
            && self.datapath_ok
    }
}

/// The pods an apply deletes, creates and keeps. A recreated pod is in both
/// `delete` (as built) and `create` (as desired); deletions run first.
#[derive(Debug, Default)]
pub struct PodPlan {
    pub delete: Vec<(String, PodState)>,
    pub create: Vec<(String, PodState)>,
    pub unchanged: Vec<String>,
}

/// What one pod needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodAction {
    /// Built as desired and whole.
    Unchanged,
    /// Not built yet.
    Create,
    /// Built differently, or broken: delete what was built, then create.
    Recreate(PodState),
}

/// The uplink must exist, and the pod CIDR must not overlap its networks
/// (those it has, and the address the apply would give it).
pub async fn check_uplink(node: &Node, desired: &DesiredNode) -> Result<(), PlanError> {
    let Some(uplink) = &desired.uplink else {
        return Ok(());
    };
    let link =
        node.nl
            .link_by_name(&uplink.name)
            .await?
            .ok_or_else(|| PlanError::UplinkMissing {
                name: uplink.name.clone(),
                netns: desired.netns_label(),
            })?;
    let mut nets: Vec<(String, Ipv4Net)> = node
        .nl
        .addresses(link.index)
        .await?
        .into_iter()
        .filter_map(|(a, p)| Ipv4Net::new(a, p).ok().map(|n| (uplink.name.clone(), n)))
        .collect();
    if let Some(addr) = uplink.address {
        nets.push((uplink.name.clone(), addr));
    }
    let pod_ifnames: Vec<String> = desired.pods.iter().map(|p| p.host_ifname.clone()).collect();
    check_overlaps(desired.pod_cidr, Some(&uplink.name), &pod_ifnames, &nets)?;
    Ok(())
}

/// Plans an apply of `desired` on `node`, whose recorded state is `state`
/// (call with the instance's lock held), with `datapath` from
/// [`super::routes::plan_datapath`] (made before the lock is taken: a rule that does not
/// resolve fails the apply before anything, even the state directory, is
/// made).
pub async fn plan(
    node: &Node,
    desired: &DesiredNode,
    state_dir: &StateDir,
    state: &NodeState,
    datapath: DatapathPlan,
) -> Result<Plan, ReconcileError> {
    if !state.pods.is_empty() && state.netns != desired.netns {
        return Err(PlanError::NodeMoved {
            instance: desired.instance.clone(),
            was: netns_label(state.netns.as_deref()),
            now: desired.netns_label(),
        }
        .into());
    }
    let current_leases = Ipam::load(&state_dir.leases_file(), desired.pod_cidr, desired.gateway)?;
    let wanted: Vec<(String, Option<Ipv4Addr>)> = desired
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.address))
        .collect();
    let leases = ipam::plan(&current_leases, &wanted)?;
    let lb = plan_lb(node, desired, &leases).await?;
    let lb_records_ok = state.frontends == lb.records;

    // The endpoints the datapath holds (none if it was never loaded), read
    // once for every pod's health check.
    // The endpoint map's pin alone: an upgrade whose other maps change
    // layout must not make every pod look broken.
    let endpoints = match NodeMaps::pinned_endpoints(&node.pins) {
        Ok(endpoints) => endpoints,
        Err(MapsError::OpenPinned { .. }) => BTreeMap::new(),
        Err(e) => return Err(PlanError::from(e).into()),
    };
    // Every pod's veth MTU: the uplink's, read once.
    let uplink_mtu = match &desired.uplink {
        Some(u) => node
            .nl
            .link_by_name(&u.name)
            .await
            .map_err(PlanError::from)?
            .map(|l| l.mtu),
        None => None,
    };
    let pod_mtu = desired.pod_mtu(uplink_mtu);
    let mut report = ApplyReport::default();
    let mut pods = PodPlan::default();
    for pod in &desired.pods {
        let address = leases.lease(&pod.name).expect("plan leases every pod");
        report.addresses.insert(pod.name.clone(), address);
        let want = PodState::new(pod, address, pod_mtu);
        let have = state.pods.get(&pod.name);
        match plan_pod(node, &endpoints, have, &want).await? {
            PodAction::Unchanged => report.unchanged.push(pod.name.clone()),
            PodAction::Recreate(have) => {
                report.recreated.push(pod.name.clone());
                pods.delete.push((pod.name.clone(), have));
                pods.create.push((pod.name.clone(), want));
            }
            PodAction::Create => {
                report.created.push(pod.name.clone());
                pods.create.push((pod.name.clone(), want));
            }
        }
    }
    for (name, have) in &state.pods {
        if desired.pod(name).is_none() {
            report.deleted.push(name.clone());
            pods.delete.push((name.clone(), have.clone()));
        }
    }
    check_names_free(node, &pods).await?;
    report.unchanged.clone_into(&mut pods.unchanged);
    report.frontends.clone_from(&lb.changes);
    let (dns, dns_lines) = plan_dns(desired, state, &pods)?;
    report.dns = dns_lines;

    let object_hash = state::object_hash(crate::ebpf::OBJECT);
    let gateway_ok = state.gateway == Some(desired.gateway)
        && gateway_ok(&node.nl, desired.gateway)
            .await
            .map_err(PlanError::from)?;
    let programs_ok = state.object_hash.as_deref() == Some(object_hash.as_str())
        && node.pins.prog(progs::FROM_POD).exists()
        && node.pins.prog(progs::FROM_UPLINK).exists();
    let datapath_ok = pods.create.is_empty()
        && pods.delete.is_empty()
        && gateway_ok
        && programs_ok
        && datapath_ok(node, desired, state, &datapath).await?;
    Ok(Plan {
        datapath,
        pods,
        current_leases,
        leases,
        gateway_ok,
        programs_ok,
        datapath_ok,
        object_hash,
        lb,
        lb_records_ok,
        dns,
        report,
    })
}

/// What one pod needs: `want` against what was built (`have`), checked
/// against the node (`endpoints`: the endpoint map's contents).
pub async fn plan_pod(
    node: &Node,
    endpoints: &BTreeMap<Ipv4Addr, Endpoint>,
    have: Option<&PodState>,
    want: &PodState,
) -> Result<PodAction, PlanError> {
    Ok(match have {
        Some(have) if have == want && pod_healthy(node, endpoints, have).await? => {
            PodAction::Unchanged
        }
        Some(have) => PodAction::Recreate(have.clone()),
        None => PodAction::Create,
    })
}

/// The names a new pod would take must be free, or be ours (being
/// recreated); a namespace netpath is given must exist.
pub async fn check_names_free(node: &Node, pods: &PodPlan) -> Result<(), PlanError> {
    for (name, want) in &pods.create {
        let ours = pods.delete.iter().any(|(_, s)| s.netns == want.netns);
        if want.netns.is_owned() {
            if !ours && want.netns.exists() {
                return Err(PlanError::NetnsTaken {
                    netns: want.netns.to_string(),
                    pod: name.clone(),
                });
            }
        } else if !want.netns.exists() {
            return Err(PlanError::NetnsMissing {
                netns: want.netns.to_string(),
                pod: name.clone(),
            });
        }
        let ours = pods
            .delete
            .iter()
            .any(|(_, s)| s.host_ifname == want.host_ifname);
        if !ours && node.nl.link_by_name(&want.host_ifname).await?.is_some() {
            return Err(PlanError::IfnameTaken {
                ifname: want.host_ifname.clone(),
                pod: name.clone(),
            });
        }
    }
    Ok(())
}
