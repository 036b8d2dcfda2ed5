//! The load balancer's choice for a new connection to a frontend (a
//! service VIP:port, or a node address and forwarded port): the frontend
//! lookup, ClientIP affinity, and the Maglev pick.
//!
//! # Maps
//!
//! - `frontends_v2`: (address, port, protocol) → [`Frontend`] (id, number
//!   of backends, flags). Written by the controller only.
//! - `backends_v2`: (frontend id, backend index) → [`Backend`].
//! - `maglev_v2`: frontend id → the frontend's Maglev table, an array
//!   sized for its backends (251 slots up to two backends, about 100 per
//!   backend above; `netpath_common::lb::maglev_size_for`) whose element 0
//!   holds its size `M` and whose other elements hold the slots' backend
//!   indices, four to an element. Swapped whole by the controller, and
//!   looked up once per pick ([`maglev_index`]), so one pick reads the size
//!   and the slot of the same table, old or new, never a mix.
//! - `affinity_v2` (LRU): (frontend id, client address) → the index the
//!   client's last new connection got, and when.
//!
//! # Invariants
//!
//! - **L1 (same tuple, same backend)**: without affinity, the backend of a
//!   connection's original tuple is slot `flow_hash(tuple) % M` of its
//!   frontend's table, a pure function of the tuple and the table
//!   (`netpath_common::lb`, which userspace uses to predict it): a
//!   mid-stream packet whose connection entry was lost gets the backend its
//!   SYN got, as long as the table did not move that slot. The controller's
//!   `table_after` keeps the size and every slot of the backends that stay
//!   when a backend leaves (only a new backend may bring a new table, of
//!   the size its count asks for).
//! - **L2 (never a stale index)**: an index read from the table or the
//!   affinity map is used only if `backends_v2` has it for this frontend;
//!   a missing one is `drop_lb_backend_missing` for the table (a frontend
//!   being updated, or a table without a valid size) and a fall back to the
//!   table for affinity (the backend left since).
//! - **L3 (affinity)**: an affinity entry is followed only while younger
//!   than the frontend's timeout, and is (re)written by every new
//!   connection of the client with the backend it got, so it always names
//!   the backend of the client's latest connection.

use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, CtKey, Frontend, FrontendKey, Stat, frontend_flags,
    lb::maglev_position,
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
    let index = maglev_index(fe.id, netpath_common::lb::flow_hash(key))
        .ok_or(Stat::DropLbBackendMissing)?;
    let be = backend(fe.id, index).ok_or(Stat::DropLbBackendMissing)?;
    if affine {
        remember(&akey, index, now);
    }
    Ok((be, false))
}

/// The backend index in slot `hash % M` of frontend `id`'s Maglev table
/// (`M` its size), or `None` without a table or with a header of size 0.
/// The table is looked up once: its size and its slot come from the same
/// inner array (L1).
#[inline(always)]
pub fn maglev_index(id: u32, hash: u32) -> Option<u32> {
    // SAFETY: the inner array is replaced whole by the controller, never
    // written in place; every value is copied out at once.
    let table = unsafe { MAGLEV.get(&id) }?;
    let size = table.get(0)?.size();
    if size == 0 {
        return None;
    }
    let (elem, lane) = maglev_position(hash % size);
    let slots = table.get(elem)?;
    Some(u32::from(slots.index[lane & 3]))
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
