//! The undo log of an apply: every step that changes the node pushes how to
//! take it back, and a failed apply replays the log in reverse.

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use log::warn;
use netpath_common::{
    Backend, BackendKey, Frontend, FrontendKey, MasqRule, NodeSettings, RouteNextHop,
};

use super::error::StepError;
use crate::{
    datapath::{NodeMaps, PinDir, remove_pin},
    sys::{
        etc_netns::{EtcNetns, Snapshot},
        netlink::Netlink,
        netns::Netns,
    },
};

/// One step taken, and how to undo it.
pub enum Undo {
    /// Delete a namespace netpath created (`ip netns del`).
    DeleteNetns(String),
    /// Delete an interface of the node namespace (`ip link del`).
    DeleteLink { ifname: String },
    /// Remove a pod from the endpoint map.
    RemoveEndpoint(Ipv4Addr),
    /// Remove the pinned ingress link of an interface.
    Unpin(String),
    /// Put back what the route, masquerade and settings maps held.
    RestoreMaps {
        routes: Vec<(Ipv4Net, RouteNextHop)>,
        masq: Vec<(Ipv4Net, MasqRule)>,
        settings: NodeSettings,
    },
    /// Put back netpath's `/etc/netns/<netns>/` files as they were.
    RestoreEtcNetns { netns: String, snapshot: Snapshot },
    /// Put back one entry of the load balancer's maps.
    Lb(LbUndo),
    /// Put back what the peer map held.
    RestorePeers(Vec<(Ipv4Net, netpath_common::peer::Peer)>),
}

/// One entry of the load balancer's maps as it was before a step: `None`
/// means it did not exist (the undo removes it).
pub enum LbUndo {
    Frontend {
        key: FrontendKey,
        previous: Option<Frontend>,
    },
    Backend {
        key: BackendKey,
        previous: Option<Backend>,
    },
    Maglev {
        id: u32,
        previous: Option<Vec<u32>>,
    },
}

/// Undoes `undo` in reverse order, best effort: a step that fails is logged
/// and the others still run.
pub async fn rollback(node_ns: &Netns, pins: &PinDir, undo: Vec<Undo>) {
    let nl = match Netlink::connect(node_ns).await {
        Ok(nl) => Some(nl),
        Err(e) => {
            warn!("rollback: no netlink connection to the node namespace: {e}");
            None
        }
    };
    let mut maps = NodeMaps::open_pinned(pins).ok();
    // Consecutive Maglev tables are put back in batches (a syscall on the
    // Maglev map waits for an RCU grace period): id → the table it had,
    // the oldest record winning (they come newest first).
    let mut tables: BTreeMap<u32, Option<Vec<u32>>> = BTreeMap::new();
    for step in undo.into_iter().rev() {
        if let Undo::Lb(LbUndo::Maglev { id, previous }) = step {
            tables.insert(id, previous);
            continue;
        }
        restore_tables(maps.as_mut(), &mut tables);
        if let Err(e) = undo_step(step, nl.as_ref(), maps.as_mut(), pins).await {
            warn!("rollback step failed: {e}");
        }
    }
    restore_tables(maps.as_mut(), &mut tables);
}

/// Puts back the Maglev tables `tables` holds (and empties it): the ones
/// that did not exist removed in one batch, the others set in batches.
fn restore_tables(maps: Option<&mut NodeMaps>, tables: &mut BTreeMap<u32, Option<Vec<u32>>>) {
    let tables = std::mem::take(tables);
    let Some(maps) = maps else {
        return;
    };
    let lb = maps.lb_mut();
    let absent: Vec<u32> = tables
        .iter()
        .filter_map(|(id, t)| t.is_none().then_some(*id))
        .collect();
    if let Err(e) = lb.remove_maglevs(&absent) {
        warn!(
            "rollback: removing {} Maglev tables failed: {e}",
            absent.len()
        );
    }
    let present: Vec<(u32, &[u32])> = tables
        .iter()
        .filter_map(|(id, t)| t.as_deref().map(|t| (*id, t)))
        .collect();
    if let Err(e) = lb.set_maglevs(&present) {
        warn!(
            "rollback: restoring {} Maglev tables failed: {e}",
            present.len()
        );
    }
}

async fn undo_step(
    step: Undo,
    nl: Option<&Netlink>,
    maps: Option<&mut NodeMaps>,
    pins: &PinDir,
) -> Result<(), StepError> {
    match step {
        Undo::DeleteNetns(name) => Netns::delete(&name).await?,
        Undo::DeleteLink { ifname } => {
            if let Some(nl) = nl
                && let Some(link) = nl.link_by_name(&ifname).await?
            {
                nl.delete_link(link.index).await?;
            }
        }
        Undo::RemoveEndpoint(addr) => {
            if let Some(maps) = maps {
                maps.remove_endpoint(addr)?;
            }
        }
        Undo::Unpin(ifname) => {
            remove_pin(&pins.ingress_link(&ifname))?;
            remove_pin(&pins.egress_link(&ifname))?;
        }
        Undo::RestoreMaps {
            routes,
            masq,
            settings,
        } => {
            if let Some(maps) = maps {
                maps.sync_routes(&routes)?;
                maps.sync_masq(&masq)?;
                maps.set_settings(settings)?;
            }
        }
        Undo::RestorePeers(entries) => {
            crate::datapath::peers::PeerMap::open_pinned(pins)?.sync(&entries)?;
        }
        Undo::RestoreEtcNetns { netns, snapshot } => {
            EtcNetns::new(&netns)?.restore(&snapshot)?;
        }
        Undo::Lb(step) => {
            if let Some(maps) = maps {
                let lb = maps.lb_mut();
                match step {
                    LbUndo::Frontend { key, previous } => match previous {
                        Some(fe) => lb.set_frontend(key, fe)?,
                        None => lb.remove_frontend(&key)?,
                    },
                    LbUndo::Backend { key, previous } => match previous {
                        Some(be) => lb.set_backend(key, be)?,
                        None => lb.remove_backend(&key)?,
                    },
                    LbUndo::Maglev { id, previous } => match previous {
                        Some(table) => lb.set_maglev(id, &table)?,
                        None => lb.remove_maglev(id)?,
                    },
                }
            }
        }
    }
    Ok(())
}
