//! The load balancer's plan: the maps' frontends diffed against the
//! desired ones, one frontend at a time, as ordered steps. A change to one
//! service touches only that service's frontend, backends, Maglev table,
//! connections and affinity.
//!
//! The order within one frontend is what keeps its traffic right while the
//! maps change (each map update is atomic, the sequence is not):
//!
//! 1. new backends are written first: nothing refers to them yet;
//! 2. the new Maglev table is swapped in whole (`LbMaps::set_maglev`): from
//!    here on no new connection can pick a removed backend, and slots of
//!    the backends that stay keep them ([`super::maglev::table_after`]);
//! 3. the frontend's value (backend count, flags, affinity timeout): a new
//!    frontend appears only once its backends and table exist, a count of 0
//!    starts refusing new connections;
//! 4. a table of a frontend left without backends is removed;
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
//! while the tables go in and out in batches (every syscall on the Maglev
//! hash of maps waits for an RCU grace period, so that no program runs
//! with the table it replaced when it returns) and the connection table
//! and the affinity map are walked once per apply, not once per service.

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
    /// Swap in the Maglev table of frontend `id`.
    SetMaglev { vip: Vip, id: u32, table: Vec<u32> },
    /// Add or replace the frontend entry.
    SetFrontend { vip: Vip, frontend: Frontend },
    /// Delete the frontend entry.
    RemoveFrontend { vip: Vip },
    /// Delete the Maglev table of frontend `id`.
    RemoveMaglev { vip: Vip, id: u32 },
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
        steps.push(LbStep::RemoveMaglev { vip, id });
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
            && have.is_none_or(|h| h.maglev != want.maglev)
        {
            steps.push(LbStep::SetMaglev {
                vip,
                id,
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
        if !want.maglev.is_present() && have.maglev.is_present() {
            steps.push(LbStep::RemoveMaglev { vip, id });
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
