//! The load balancer's plan: the maps' frontends diffed against the
//! desired ones, one frontend at a time, as ordered steps. A change to one
//! service touches only that service's frontend, backends, Maglev table,
//! connections and affinity.
//!
//! The order within one frontend is what keeps its traffic right while the
//! maps change (each map update is atomic, the sequence is not):
//!
//! 1. new backends are written first: nothing refers to them yet;
//! 2. the new Maglev table is written as the next generation of the
//!    frontend's table (`LbMaps::set_maglev`), which nothing names yet;
//! 3. the frontend's value (backend count, flags, affinity timeout, and the
//!    table's size and generation): from here on no new connection can
//!    pick a removed backend, and slots of the backends that stay keep them
//!    ([`super::maglev::table_after`]); a new frontend appears only once
//!    its backends and table exist, a count of 0 starts refusing new
//!    connections;
//! 4. the table the frontend named before is deleted (a pick that read the
//!    old value and finds it gone reads the frontend again: see
//!    [`crate::datapath::lb_maps`]), and so is the table of a frontend left
//!    without backends;
//! 5. removed backends' entries are deleted: a packet that read the old
//!    table just before the swap finds no backend (`drop_lb_backend_missing`,
//!    the client retransmits and gets the new table);
//! 6. the connections of this frontend to each removed backend are purged
//!    (reverse entry, then forward entry: see
//!    [`crate::conntrack::purge_backend`]): their next packet re-picks a
//!    backend (UDP) or is answered with a RST (TCP mid-stream); connections
//!    of the other backends are not touched;
//! 7. the frontend's affinity entries are cleared: a client pinned to a
//!    removed backend must not be sent to its index.
//!
//! A removed frontend goes the other way: its frontend entry first (no new
//! connection finds it), then its table, backends, connections and
//! affinity.
//!
//! The steps of one frontend only ever go forward in that list, so the
//! reconciler runs the steps of all frontends kind by kind (every new
//! backend, then every table, every frontend entry, ...;
//! `reconcile::lb::execute_lb`): each frontend still sees its own order,
//! while the connection table and the affinity map are walked once per
//! apply, not once per service. Tables are plain hash elements (a
//! two-backend service's table is one), so writing 30,000 of them is
//! 30,000 updates that wait for nothing.

use std::net::SocketAddrV4;

use netpath_common::Frontend;

use super::frontends::{LbState, Maglev, Vip};

/// One change to the load balancer's maps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbStep {
    /// Add or replace backend `index` of frontend `id`.
    SetBackend {
        vip: Vip,
        id: u32,
        index: u32,
        backend: SocketAddrV4,
    },
    /// Write generation `generation` of frontend `id`'s Maglev table.
    SetMaglev {
        vip: Vip,
        id: u32,
        generation: u16,
        table: Vec<u32>,
    },
    /// Add or replace the frontend entry.
    SetFrontend { vip: Vip, frontend: Frontend },
    /// Delete the frontend entry.
    RemoveFrontend { vip: Vip },
    /// Delete generation `generation` (of `size` slots) of frontend `id`'s
    /// Maglev table.
    RemoveMaglev {
        vip: Vip,
        id: u32,
        generation: u16,
        size: u32,
    },
    /// Delete backend `index` of frontend `id`.
    RemoveBackend { vip: Vip, id: u32, index: u32 },
    /// Delete the connections to `vip` translated to `backend` (`None`:
    /// every connection to `vip`).
    PurgeConnections {
        vip: Vip,
        backend: Option<SocketAddrV4>,
    },
    /// Forget the affinity of every client of frontend `id`.
    ClearAffinity { vip: Vip, id: u32 },
}

impl LbStep {
    /// The frontend this step changes.
    pub fn vip(&self) -> Vip {
        match self {
            Self::SetBackend { vip, .. }
            | Self::SetMaglev { vip, .. }
            | Self::SetFrontend { vip, .. }
            | Self::RemoveFrontend { vip }
            | Self::RemoveMaglev { vip, .. }
            | Self::RemoveBackend { vip, .. }
            | Self::PurgeConnections { vip, .. }
            | Self::ClearAffinity { vip, .. } => *vip,
        }
    }
}

/// The steps that turn `current` into `desired`, frontend by frontend
/// (removed frontends first, then the others in address order), each
/// frontend's steps in the order of the module docs. Empty when they are
/// equal.
pub fn diff(current: &LbState, desired: &LbState) -> Vec<LbStep> {
    let mut steps = Vec::new();
    for (vip, have) in current {
        if desired.contains_key(vip) {
            continue;
        }
        let (vip, id) = (*vip, have.id);
        steps.push(LbStep::RemoveFrontend { vip });
        if have.maglev_size != 0 {
            steps.push(LbStep::RemoveMaglev {
                vip,
                id,
                generation: have.maglev_gen,
                size: have.maglev_size,
            });
        }
        for &index in have.backends.keys() {
            steps.push(LbStep::RemoveBackend { vip, id, index });
        }
        steps.push(LbStep::PurgeConnections { vip, backend: None });
        steps.push(LbStep::ClearAffinity { vip, id });
    }
    for (vip, want) in desired {
        let vip = *vip;
        let id = want.id;
        let have = current.get(&vip);
        let had = |index: &u32| have.and_then(|h| h.backends.get(index));
        for (&index, &backend) in &want.backends {
            if had(&index) != Some(&backend) {
                steps.push(LbStep::SetBackend {
                    vip,
                    id,
                    index,
                    backend,
                });
            }
        }
        if let Maglev::Slots(table) = &want.maglev
            && have.is_none_or(|h| h.maglev_gen != want.maglev_gen || h.maglev != want.maglev)
        {
            steps.push(LbStep::SetMaglev {
                vip,
                id,
                generation: want.maglev_gen,
                table: table.clone(),
            });
        }
        if have.is_none_or(|h| h.value() != want.value()) {
            steps.push(LbStep::SetFrontend {
                vip,
                frontend: want.value(),
            });
        }
        let Some(have) = have else {
            continue;
        };
        // The table the frontend named before, once it names another (or
        // none).
        if have.maglev_size != 0 && (want.maglev_size == 0 || want.maglev_gen != have.maglev_gen) {
            steps.push(LbStep::RemoveMaglev {
                vip,
                id,
                generation: have.maglev_gen,
                size: have.maglev_size,
            });
        }
        let removed: Vec<(u32, SocketAddrV4)> = have
            .backends
            .iter()
            .filter(|(index, b)| want.backends.get(index) != Some(b))
            .map(|(i, b)| (*i, *b))
            .collect();
        // An index that holds another backend now was overwritten by its
        // `SetBackend` (indices are reused only once the 16-bit ones run
        // out): only the indices that hold nothing are deleted.
        for &(index, _) in &removed {
            if !want.backends.contains_key(&index) {
                steps.push(LbStep::RemoveBackend { vip, id, index });
            }
        }
        for &(_, backend) in &removed {
            steps.push(LbStep::PurgeConnections {
                vip,
                backend: Some(backend),
            });
        }
        let affinity_changed =
            have.flags != want.flags || have.affinity_timeout_secs != want.affinity_timeout_secs;
        if !removed.is_empty() || affinity_changed {
            steps.push(LbStep::ClearAffinity { vip, id });
        }
    }
    steps
}

#[cfg(test)]
mod tests;
