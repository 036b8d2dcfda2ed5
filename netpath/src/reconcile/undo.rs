//! The undo log of an apply: every step that changes the node pushes how to
//! take it back, and a failed apply replays the log in reverse.

use std::net::Ipv4Addr;

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
    /// Generation `generation` (of `size` slots) of frontend `id`'s Maglev
    /// table was written, where no frontend named it: the undo deletes it
    /// (after the frontend's own undo names the table it named before).
    MaglevWritten { id: u32, generation: u16, size: u32 },
    /// Generation `generation` of frontend `id`'s Maglev table was deleted
    /// (once the frontend named another): the undo writes it back (before
    /// the frontend's own undo names it again).
    MaglevRemoved {
        id: u32,
        generation: u16,
        table: Vec<u32>,
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
    // Newest first: a frontend's value is put back after the table it names
    // again is written back, and before the table it named is deleted (the
    // apply's order reversed), so every pick still finds a whole table.
    for step in undo.into_iter().rev() {
        if let Err(e) = undo_step(step, nl.as_ref(), maps.as_mut(), pins).await {
            warn!("rollback step failed: {e}");
        }
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
                    LbUndo::MaglevWritten {
                        id,
                        generation,
                        size,
                    } => lb.remove_maglev(id, generation, size)?,
                    LbUndo::MaglevRemoved {
                        id,
                        generation,
                        table,
                    } => lb.set_maglev(id, generation, &table)?,
                }
            }
        }
    }
    Ok(())
}
