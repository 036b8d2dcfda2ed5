//! What replaces `iptables -t nat ... -j DNAT` and kube-proxy: the
//! port-forwards and services resolved against the node (pod leases, the
//! uplink's addresses) into frontends with stable ids and backend indices,
//! diffed against the load balancer's maps frontend by frontend
//! ([`crate::lb::plan`], whose docs give the order of the steps and why),
//! and carried out with an undo for every map change.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use log::{debug, info};
use netpath_common::BackendKey;

use super::{
    error::{PlanError, StepError},
    failpoint::failpoint,
    node::Node,
    undo::{LbUndo, Undo},
};
use crate::{
    conntrack,
    datapath::NodeMaps,
    ipam::Ipam,
    lb::{
        frontends::{self, FrontendSpec, LbState, NodeAddresses, Owner, Tables, Vip},
        plan::{LbStep, diff},
    },
    resolve::DesiredNode,
    state::{BackendRecord, FrontendRecord},
};

/// The load balancer's part of an apply.
#[derive(Debug, Clone, Default)]
pub struct LbPlan {
    /// The steps, frontend by frontend; empty when the maps are as desired.
    pub steps: Vec<LbStep>,
    /// What the state file records after the apply.
    pub records: Vec<FrontendRecord>,
    /// One line per frontend that changes, for the report.
    pub changes: Vec<String>,
}

/// Plans the frontends of `desired` against the load balancer's pinned
/// maps (none pinned yet: no frontend), with the pods' addresses from
/// `leases` and the node's from its interfaces. A forward's `address` must
/// be an address of the node.
pub async fn plan_lb(
    node: &Node,
    desired: &DesiredNode,
    leases: &Ipam,
) -> Result<LbPlan, PlanError> {
    let maps = NodeMaps::open_pinned(&node.pins).ok();
    let mut current = match &maps {
        Some(maps) => frontends::read(maps.lb(), Tables::Unread)?,
        None => LbState::new(),
    };
    if !desired.has_frontends() && current.is_empty() {
        return Ok(LbPlan::default());
    }
    let mut node_addrs: BTreeSet<Ipv4Addr> = BTreeSet::from([desired.gateway]);
    for link in node.nl.links().await? {
        for (a, prefix) in node.nl.addresses(link.index).await? {
            node_addrs.insert(a);
            // VIPs must not be addresses the node really has a route to.
            if let (Some(cidr), Ok(net)) = (desired.service_cidr, Ipv4Net::new(a, prefix))
                && !a.is_loopback()
                && (cidr.contains(&net.network()) || net.contains(&cidr.network()))
            {
                return Err(PlanError::ServiceCidrOnNode {
                    cidr,
                    ifname: link.name.clone(),
                    network: net.trunc(),
                });
            }
        }
    }
    let mut wildcard: Vec<Ipv4Addr> = Vec::new();
    if let Some(u) = &desired.uplink {
        if let Some(a) = u.address {
            node_addrs.insert(a.addr());
            wildcard.push(a.addr());
        }
        if let Some(link) = node.nl.link_by_name(&u.name).await? {
            for (a, _) in node.nl.addresses(link.index).await? {
                if !wildcard.contains(&a) {
                    wildcard.push(a);
                }
            }
        }
    }
    wildcard.push(desired.gateway);
    for (i, pf) in desired.port_forwards.iter().enumerate() {
        if let Some(address) = pf.address
            && !node_addrs.contains(&address)
        {
            return Err(PlanError::ForwardAddressNotOnNode {
                entry: i + 1,
                address,
                netns: desired.netns_label(),
            });
        }
    }
    let addrs = NodeAddresses {
        pods: desired
            .pods
            .iter()
            .filter_map(|p| Some((p.name.clone(), leases.lease(&p.name)?)))
            .collect(),
        wildcard,
    };
    let specs = frontends::specs(desired, &addrs)?;
    if specs.len() > netpath_common::maps::FRONTENDS_MAX as usize {
        return Err(PlanError::TooManyFrontends {
            count: specs.len(),
            max: netpath_common::maps::FRONTENDS_MAX as usize,
        });
    }
    if let Some(maps) = &maps {
        // Only the tables of the frontends whose backends change are read.
        let changing = frontends::changing(&specs, &current);
        frontends::read_tables(maps.lb(), &mut current, &changing)?;
    }
    let wanted = frontends::assign(&specs, &current);
    let steps = diff(&current, &wanted);
    Ok(LbPlan {
        changes: changes(&current, &wanted, &specs, &steps),
        records: records(&specs),
        steps,
    })
}

/// What the state file records: each frontend's owner and backend names.
fn records(specs: &[FrontendSpec]) -> Vec<FrontendRecord> {
    specs
        .iter()
        .map(|s| FrontendRecord {
            address: s.vip.addr,
            port: s.vip.port,
            proto: s.vip.proto,
            service: match &s.owner {
                Owner::Service(name) => Some(name.clone()),
                Owner::PortForward(_) => None,
            },
            backends: s
                .backends
                .iter()
                .map(|b| BackendRecord {
                    address: b.address,
                    target: b.label.clone(),
                })
                .collect(),
        })
        .collect()
}

/// One line per frontend the steps change.
fn changes(
    current: &LbState,
    wanted: &LbState,
    specs: &[FrontendSpec],
    steps: &[LbStep],
) -> Vec<String> {
    let touched: BTreeSet<Vip> = steps.iter().map(LbStep::vip).collect();
    let owners: BTreeMap<Vip, &Owner> = specs.iter().map(|s| (s.vip, &s.owner)).collect();
    let owner = |vip: &Vip| {
        owners
            .get(vip)
            .map_or_else(|| "frontend".to_owned(), ToString::to_string)
    };
    touched
        .iter()
        .map(|vip| match (current.get(vip), wanted.get(vip)) {
            (None, Some(w)) => format!(
                "{} {vip}: added ({} backends)",
                owner(vip),
                w.backends.len()
            ),
            (Some(_), None) => format!("frontend {vip}: removed"),
            (Some(h), Some(w)) => {
                let added = w
                    .backends
                    .keys()
                    .filter(|i| !h.backends.contains_key(i))
                    .count();
                let removed = h
                    .backends
                    .keys()
                    .filter(|i| !w.backends.contains_key(i))
                    .count();
                format!(
                    "{} {vip}: {added} backends added, {removed} removed",
                    owner(vip)
                )
            }
            (None, None) => format!("frontend {vip}"),
        })
        .collect()
}

/// The order [`execute_lb`] runs the steps of all frontends in: a step of
/// an earlier phase before any of a later one, each frontend's steps
/// keeping their order (its steps' phases only grow, see
/// [`crate::lb::plan`]), so every frontend sees its steps in the plan's
/// order while the connection table and the affinity map are walked once.
/// Every new table is written (1) before any frontend names it (2), and
/// every old one deleted (3) after: the swap of
/// [`crate::datapath::lb_maps`] for all frontends at once.
fn phase(step: &LbStep) -> u8 {
    match step {
        LbStep::SetBackend { .. } => 0,
        LbStep::SetMaglev { .. } => 1,
        LbStep::SetFrontend { .. } | LbStep::RemoveFrontend { .. } => 2,
        LbStep::RemoveMaglev { .. } => 3,
        LbStep::RemoveBackend { .. } => 4,
        LbStep::PurgeConnections { .. } => 5,
        LbStep::ClearAffinity { .. } => 6,
    }
}

/// Carries out `steps` on `maps`, pushing the undo of every map change,
/// phase by phase ([`phase`]). Purged connections and cleared affinity are
/// not undone (they are re-made by the traffic: a rolled-back table sends
/// a flow's next packet where it went before). `instance` names the
/// failpoints: `lb:<instance>:<vip>` fails after the last step of that
/// frontend.
pub fn execute_lb(
    maps: &mut NodeMaps,
    instance: &str,
    steps: &[LbStep],
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let mut order: Vec<&LbStep> = steps.iter().collect();
    order.sort_by_key(|s| phase(s));
    let mut last: BTreeMap<Vip, usize> = BTreeMap::new();
    for (i, s) in order.iter().enumerate() {
        last.insert(s.vip(), i);
    }
    let mut i = 0;
    while i < order.len() {
        let ph = phase(order[i]);
        let end = order[i..]
            .iter()
            .position(|s| phase(s) != ph)
            .map_or(order.len(), |n| i + n);
        let run = &order[i..end];
        match ph {
            5 => purge(maps, run)?,
            6 => {
                let ids: BTreeSet<u32> = run
                    .iter()
                    .filter_map(|s| match s {
                        LbStep::ClearAffinity { id, .. } => Some(*id),
                        _ => None,
                    })
                    .collect();
                maps.lb_mut().clear_affinity_of(&ids)?;
            }
            _ => {
                for step in run {
                    run_step(maps, step, undo)?;
                }
            }
        }
        for (k, step) in run.iter().enumerate() {
            if last.get(&step.vip()) == Some(&(i + k)) {
                failpoint(&format!("lb:{instance}:{}", step.vip()))?;
            }
        }
        i = end;
    }
    Ok(())
}

/// The connections of `run` (`PurgeConnections` steps), in one walk.
fn purge(maps: &mut NodeMaps, run: &[&LbStep]) -> Result<(), StepError> {
    let which: Vec<_> = run
        .iter()
        .filter_map(|s| match s {
            LbStep::PurgeConnections { vip, backend } => Some((vip.key(), *backend)),
            _ => None,
        })
        .collect();
    let r = conntrack::purge_backends(maps, &which)?;
    if r.connections > 0 {
        info!(
            "purged {} connections of {} removed backends or frontends",
            r.connections,
            which.len()
        );
    }
    Ok(())
}

fn run_step(maps: &mut NodeMaps, step: &LbStep, undo: &mut Vec<Undo>) -> Result<(), StepError> {
    match step {
        LbStep::SetBackend {
            id, index, backend, ..
        } => {
            let key = BackendKey {
                frontend: *id,
                index: *index,
            };
            let previous = maps.lb().backend(&key)?;
            undo.push(Undo::Lb(LbUndo::Backend { key, previous }));
            maps.lb_mut().set_backend(
                key,
                netpath_common::Backend {
                    addr: backend.ip().octets(),
                    port: backend.port(),
                    flags: 0,
                    _pad: 0,
                },
            )?;
        }
        LbStep::SetFrontend { vip, frontend } => {
            let key = vip.key();
            let previous = maps.lb().frontend(&key)?;
            undo.push(Undo::Lb(LbUndo::Frontend { key, previous }));
            debug!(
                "frontend {vip}: id {}, {} backends",
                frontend.id, frontend.backends
            );
            maps.lb_mut().set_frontend(key, *frontend)?;
        }
        LbStep::RemoveFrontend { vip } => {
            let key = vip.key();
            let previous = maps.lb().frontend(&key)?;
            undo.push(Undo::Lb(LbUndo::Frontend { key, previous }));
            debug!("frontend {vip}: removing");
            maps.lb_mut().remove_frontend(&key)?;
        }
        LbStep::RemoveBackend { id, index, .. } => {
            let key = BackendKey {
                frontend: *id,
                index: *index,
            };
            let previous = maps.lb().backend(&key)?;
            undo.push(Undo::Lb(LbUndo::Backend { key, previous }));
            maps.lb_mut().remove_backend(&key)?;
        }
        LbStep::SetMaglev {
            id,
            generation,
            table,
            ..
        } => {
            // S1: a generation no frontend names (the plan's next one).
            undo.push(Undo::Lb(LbUndo::MaglevWritten {
                id: *id,
                generation: *generation,
                size: u32::try_from(table.len()).unwrap_or(u32::MAX),
            }));
            maps.lb_mut().set_maglev(*id, *generation, table)?;
        }
        LbStep::RemoveMaglev {
            id,
            generation,
            size,
            ..
        } => {
            // S3: the frontend names another generation (or none) by now.
            if let Some(table) = maps.lb().maglev(*id, *generation, *size)? {
                undo.push(Undo::Lb(LbUndo::MaglevRemoved {
                    id: *id,
                    generation: *generation,
                    table,
                }));
            }
            maps.lb_mut().remove_maglev(*id, *generation, *size)?;
        }
        // Run once per apply in execute_lb.
        LbStep::PurgeConnections { .. } | LbStep::ClearAffinity { .. } => {}
    }
    Ok(())
}
