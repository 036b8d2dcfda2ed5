//! The load balancer's choice for a new connection to a frontend (a
//! service VIP:port, or a node address and forwarded port): the frontend
//! lookup, ClientIP affinity, and the Maglev pick.
//!
//! # Maps
//!
//! - `frontends_v3`: (address, port, protocol) → [`Frontend`] (id, number
//!   of backends, flags, and the Maglev table it names: size `M` and
//!   generation). Written whole by the controller only.
//! - `backends_v3`: (frontend id, backend index) → [`Backend`].
//! - `maglev_v3`: (frontend id, generation, chunk) → 256 slots' backend
//!   indices (`netpath_common::lb`). A table has `M` slots (251 up to two
//!   backends, about 100 per backend above;
//!   `netpath_common::lb::maglev_size_for`), slot `s` in lane `s % 256` of
//!   chunk `s / 256`. The controller never rewrites a generation a
//!   frontend names: a new table is written as the next generation, then
//!   the frontend is written naming it, then the old generation's chunks
//!   are deleted (`netpath::datapath::lb_maps::LbMaps::swap_maglev`).
//! - `affinity_v3` (LRU): (frontend id, client address) → the index the
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
//!   the size its count asks for). A pick reads one table: the size and
//!   the slot come from the generation the frontend value it read names
//!   (`netpath_common::lb::maglev_index`, T1), never a mix of an old size
//!   and a new table.
//! - **L2 (never a stale index)**: an index read from the table or the
//!   affinity map is used only if `backends_v3` has it for this frontend;
//!   a missing one is `drop_lb_backend_missing` for the table (a frontend
//!   being updated, or a table without a valid size) and a fall back to the
//!   table for affinity (the backend left since).
//! - **L4 (racing a swap)**: a pick whose frontend value named a
//!   generation the controller deleted meanwhile (it read the frontend just
//!   before the controller wrote the next one) finds its chunk gone; it
//!   reads the frontend again, once, and picks from the table that one
//!   names; only if that fails too is it `drop_lb_backend_missing`
//!   (`netpath_common::lb::maglev_index`, T2). Established connections
//!   never read the table: their conntrack entry holds the backend.
//! - **L3 (affinity)**: an affinity entry is followed only while younger
//!   than the frontend's timeout, and is (re)written by every new
//!   connection of the client with the backend it got, so it always names
//!   the backend of the client's latest connection.

use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, CtKey, Frontend, FrontendKey, Stat, frontend_flags,
};

use crate::maps::{AFFINITY, BACKENDS, FRONTENDS, MAGLEV};

/// The frontend at `key`'s destination (address, port, protocol), if any.
#[inline(always)]
pub fn frontend(key: &CtKey) -> Option<Frontend> {
    frontend_at(&frontend_key(key))
}

/// The frontend map key of `key`'s destination.
#[inline(always)]
fn frontend_key(key: &CtKey) -> FrontendKey {
    FrontendKey {
        addr: key.daddr,
        port: key.dport,
        proto: key.proto,
        _pad: 0,
    }
}

/// The frontend at `fk`, if any.
#[inline(always)]
pub fn frontend_at(fk: &FrontendKey) -> Option<Frontend> {
    // SAFETY: the value is copied out at once; the controller replaces a
    // frontend whole.
    unsafe { FRONTENDS.get(fk) }.copied()
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
    let index = maglev_index(fe, &frontend_key(key), netpath_common::lb::flow_hash(key))
        .ok_or(Stat::DropLbBackendMissing)?;
    let be = backend(fe.id, index).ok_or(Stat::DropLbBackendMissing)?;
    if affine {
        remember(&akey, index, now);
    }
    Ok((be, false))
}

/// The backend index in slot `hash % M` of the Maglev table `fe` names
/// (`M` its size), or `None` without a table. When that table's chunk is
/// gone (a swap deleted it after `fe` was read), the frontend at `fk` is
/// read once more and its table used (L1, L4).
#[inline(always)]
pub fn maglev_index(fe: &Frontend, fk: &FrontendKey, hash: u32) -> Option<u32> {
    netpath_common::lb::maglev_index(
        fe,
        hash,
        |key, lane| {
            // SAFETY: a chunk is never written once a frontend names its
            // generation (only deleted, after the frontend names the next:
            // the kernel frees it after every program that may hold it);
            // the slot is copied out at once. `lane` is below 256 (a mask).
            unsafe { MAGLEV.get(key) }.map(|c| c.slots[lane & 255])
        },
        || frontend_at(fk),
    )
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
