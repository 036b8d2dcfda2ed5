//! The load balancer's choice for a new connection to a frontend (a
//! service VIP:port, or a node address and forwarded port): the frontend
//! lookup, ClientIP affinity, and the Maglev pick.
//!
//! # Maps
//!
//! - `frontends_v1`: (address, port, protocol) → [`Frontend`] (id, number
//!   of backends, flags). Written by the controller only.
//! - `backends_v1`: (frontend id, backend index) → [`Backend`].
//! - `maglev_v1`: frontend id → an array of `MAGLEV_SIZE` backend indices,
//!   swapped whole by the controller, so one lookup sees either the old or
//!   the new table, never a mix.
//! - `affinity_v1` (LRU): (frontend id, client address) → the index the
//!   client's last new connection got, and when.
//!
//! # Invariants
//!
//! - **L1 (same tuple, same backend)**: without affinity, the backend of a
//!   connection's original tuple is `maglev[id][maglev_slot(tuple)]`, a
//!   pure function of the tuple and the table (`netpath_common::lb`, which
//!   userspace uses to predict it): a mid-stream packet whose connection
//!   entry was lost gets the backend its SYN got, as long as the table did
//!   not move that slot (`table_after` moves only the slots of removed
//!   backends).
//! - **L2 (never a stale index)**: an index read from the table or the
//!   affinity map is used only if `backends_v1` has it for this frontend;
//!   a missing one is `drop_lb_backend_missing` for the table (a frontend
//!   being updated) and a fall back to the table for affinity (the backend
//!   left since).
//! - **L3 (affinity)**: an affinity entry is followed only while younger
//!   than the frontend's timeout, and is (re)written by every new
//!   connection of the client with the backend it got, so it always names
//!   the backend of the client's latest connection.

use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, CtKey, Frontend, FrontendKey, Stat, frontend_flags,
    lb::maglev_slot,
};

use crate::maps::{AFFINITY, BACKENDS, FRONTENDS, MAGLEV};

/// The frontend at `key`'s destination (address, port, protocol), if any.
#[inline(always)]
pub fn frontend(key: &CtKey) -> Option<Frontend> {
    let fk = FrontendKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once; the controller replaces a
    // frontend whole.
    unsafe { FRONTENDS.get(&fk) }.copied()
}

/// The backend for a new connection with original tuple `key` to `fe`
/// (which has backends), and whether ClientIP affinity chose it.
#[inline(always)]
pub fn pick(fe: &Frontend, key: &CtKey, now: u64) -> Result<(Backend, bool), Stat> {
    let affine = fe.flags & frontend_flags::AFFINITY != 0;
    let akey = AffinityKey {
        frontend: fe.id,
        client: key.saddr,
    };
    if affine
        // SAFETY: the value is copied out at once.
        && let Some(a) = unsafe { AFFINITY.get(&akey) }.copied()
        && now.wrapping_sub(a.last_used_ns) <= u64::from(fe.affinity_timeout_secs) * 1_000_000_000
        && let Some(be) = backend(fe.id, a.index)
    {
        remember(&akey, a.index, now);
        return Ok((be, true));
    }
    let slot = maglev_slot(key);
    // SAFETY: the inner array is replaced whole by the controller; the
    // index is copied out at once.
    let index = unsafe { MAGLEV.get_value(&fe.id, &slot) }
        .copied()
        .ok_or(Stat::DropLbBackendMissing)?;
    let be = backend(fe.id, index).ok_or(Stat::DropLbBackendMissing)?;
    if affine {
        remember(&akey, index, now);
    }
    Ok((be, false))
}

/// Backend `index` of frontend `id` (L2).
#[inline(always)]
fn backend(id: u32, index: u32) -> Option<Backend> {
    let key = BackendKey {
        frontend: id,
        index,
    };
    // SAFETY: the value is copied out at once.
    unsafe { BACKENDS.get(&key) }.copied()
}

/// Records the client's latest backend (L3). A failed insert only loses
/// the affinity, never a connection.
#[inline(always)]
fn remember(akey: &AffinityKey, index: u32, now: u64) {
    let a = Affinity {
        index,
        _pad: 0,
        last_used_ns: now,
    };
    let _ = AFFINITY.insert(akey, &a, 0);
}
