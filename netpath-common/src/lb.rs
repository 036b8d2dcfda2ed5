//! The load balancer's hash of a new connection and the layout of its
//! Maglev tables, shared by the datapath (which picks a slot with them) and
//! userspace (which builds the tables, and predicts and tests the choice).
//!
//! # A Maglev table in the map
//!
//! Each frontend's table has [`maglev_size_for`] slots `M` (251 up to 2
//! backends, about 100 per backend above, a prime each time). It lives in
//! the plain hash map `maglev_v3` as [`maglev_chunks`]`(M)` elements of
//! [`MAGLEV_CHUNK_SLOTS`] 16-bit backend indices: slot `s` is lane
//! `s % 256` of chunk `s / 256` ([`maglev_chunk_pos`]), keyed by
//! ([`MaglevKey`]) the frontend id, the table's generation and the chunk.
//! The frontend's value ([`crate::Frontend`]) names its table: its size
//! `M` and its generation. A table is never written once a frontend names
//! it; a new one is written under another generation, then named by the
//! frontend, then the old generation is deleted ([`maglev_index`] gives
//! the pick, and what it does when it races with that delete).
//!
//! Why not a hash of arrays (`maglev_v2`, one inner array per table):
//! every update or delete of a map of maps waits for an RCU grace period
//! (about 10 ms), once per syscall, which only the `BPF_MAP_*_BATCH`
//! commands amortise, and aya has no batch calls. Updates of a plain hash
//! map wait for nothing: a 2-backend service's table is one element and
//! one update.

use crate::{CtKey, Frontend};

/// murmur3's 32-bit finalizer: every input bit affects every output bit.
#[inline(always)]
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Mixes one 32-bit word into `h` (murmur3's body step).
#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// The hash of a connection's original tuple (client → frontend): the same
/// tuple always hashes the same, on every CPU and across restarts.
#[inline(always)]
pub const fn flow_hash(key: &CtKey) -> u32 {
    let mut h = 0x6e70_6c62; // "nplb"
    h = mix(h, u32::from_le_bytes(key.saddr));
    h = mix(h, u32::from_le_bytes(key.daddr));
    h = mix(h, ((key.sport as u32) << 16) | key.dport as u32);
    h = mix(h, key.proto as u32);
    fmix(h ^ 13)
}

/// The Maglev slot of a connection's original tuple in a table of `size`
/// slots (not 0).
#[inline(always)]
pub const fn maglev_slot(key: &CtKey, size: u32) -> u32 {
    flow_hash(key) % size
}

/// The sizes a Maglev table can have: primes, each about twice the one
/// before ([`maglev_size_for`] picks one).
pub const MAGLEV_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16_381, 32_749, 65_521, 131_071,
];

/// Slots per backend a table has at least while the sizes allow:
/// Maglev's balance is then within a few percent, and a new backend takes
/// slots from the others in about equal parts.
pub const MAGLEV_SLOTS_PER_BACKEND: u32 = 100;

/// The smallest size of [`MAGLEV_SIZES`] with [`MAGLEV_SLOTS_PER_BACKEND`]
/// slots per backend; the largest for more than 1,310 backends (then at
/// least 2 slots each for the most a frontend can have, 65,535).
pub const fn maglev_size_for(backends: u32) -> u32 {
    let want = backends.saturating_mul(MAGLEV_SLOTS_PER_BACKEND);
    let mut i = 0;
    while i < MAGLEV_SIZES.len() {
        if MAGLEV_SIZES[i] >= want {
            return MAGLEV_SIZES[i];
        }
        i += 1;
    }
    MAGLEV_SIZES[MAGLEV_SIZES.len() - 1]
}

/// Slots per chunk of a table: 256, a power of two, so that the lane is
/// `slot & 255` (the verifier follows a mask, not a `%`), and a 251-slot
/// table (up to 2 backends, most services) is one element. The element is
/// 512 bytes of value; the kernel allocates a non-preallocated hash
/// element of 568 bytes (header, key, value) from its 1 KiB slab.
pub const MAGLEV_CHUNK_SLOTS: u32 = 256;

/// Chunks of a table of `size` slots.
pub const fn maglev_chunks(size: u32) -> u32 {
    size.div_ceil(MAGLEV_CHUNK_SLOTS)
}

/// Where slot `slot` lives: (chunk, lane).
#[inline(always)]
pub const fn maglev_chunk_pos(slot: u32) -> (u16, usize) {
    (
        (slot / MAGLEV_CHUNK_SLOTS) as u16,
        (slot & (MAGLEV_CHUNK_SLOTS - 1)) as usize,
    )
}

/// Key of `maglev_v3`: one chunk of one generation of one frontend's
/// table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaglevKey {
    /// [`crate::Frontend::id`].
    pub frontend: u32,
    /// [`crate::Frontend::maglev_gen`] of the frontend value that names
    /// this table.
    pub generation: u16,
    /// `slot / 256` (at most 511: the largest table has 131,071 slots).
    pub chunk: u16,
}

/// Value of `maglev_v3`: 256 slots' backend indices
/// ([`crate::BackendKey::index`], which the controller keeps below 65,536);
/// the last chunk of a table is padded with zeros past its size.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MaglevChunk {
    pub slots: [u16; MAGLEV_CHUNK_SLOTS as usize],
}

impl MaglevChunk {
    /// All slots 0.
    pub const ZERO: Self = Self {
        slots: [0; MAGLEV_CHUNK_SLOTS as usize],
    };
}

impl Default for MaglevChunk {
    fn default() -> Self {
        Self::ZERO
    }
}

/// The backend index in slot `hash % M` of the table `fe` names (`M` its
/// [`crate::Frontend::maglev_size`]), read with `lookup(key, lane)` (the
/// lane of the chunk at `key`, `None` when the chunk is absent); `None`
/// without a table.
#[inline(always)]
pub fn maglev_slot_of<L: Fn(&MaglevKey, usize) -> Option<u16>>(
    fe: &Frontend,
    hash: u32,
    lookup: &L,
) -> Option<u32> {
    if fe.maglev_size == 0 {
        return None;
    }
    let (chunk, lane) = maglev_chunk_pos(hash % fe.maglev_size);
    let key = MaglevKey {
        frontend: fe.id,
        generation: fe.maglev_gen,
        chunk,
    };
    lookup(&key, lane).map(u32::from)
}

/// The Maglev pick of a new connection whose flow hash is `hash`, to the
/// frontend `fe` read from the frontend map: the shared logic of the
/// datapath (`netpath-ebpf/src/lb.rs`, with map lookups) and of tests that
/// race it with a table swap (with closures).
///
/// # Invariants
///
/// - **T1 (one table per pick)**: the size and the slot come from the
///   generation `fe` names, whose chunks the controller wrote before it
///   wrote `fe` and never writes again: a pick never mixes two tables.
/// - **T2 (racing the delete, bounded)**: the controller deletes a
///   generation's chunks only after the frontend names the next one; a
///   pick that read the old value just before finds a chunk gone. It then
///   reads the frontend once more (`reread`) and, if it names another
///   table of the same frontend, picks from that one; only when that fails
///   too (the frontend went, its table is missing) is the result `None`,
///   which the datapath counts as `drop_lb_backend_missing`. One retry is
///   enough: the controller deletes a generation only once the frontend
///   names its successor, and leaves that successor in place for the whole
///   apply.
#[inline(always)]
pub fn maglev_index<L, R>(fe: &Frontend, hash: u32, lookup: L, reread: R) -> Option<u32>
where
    L: Fn(&MaglevKey, usize) -> Option<u16>,
    R: FnOnce() -> Option<Frontend>,
{
    if let Some(index) = maglev_slot_of(fe, hash, &lookup) {
        return Some(index);
    }
    let fresh = reread()?;
    if fresh.id != fe.id
        || (fresh.maglev_gen == fe.maglev_gen && fresh.maglev_size == fe.maglev_size)
    {
        return None;
    }
    maglev_slot_of(&fresh, hash, &lookup)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_primes_and_grow_with_the_backends() {
        for &m in &MAGLEV_SIZES {
            assert!((2..m).take_while(|d| d * d <= m).all(|d| m % d != 0), "{m}");
        }
        assert_eq!(maglev_size_for(0), 251);
        assert_eq!(maglev_size_for(1), 251);
        assert_eq!(maglev_size_for(2), 251);
        assert_eq!(maglev_size_for(3), 509);
        assert_eq!(maglev_size_for(40), 4093);
        assert_eq!(maglev_size_for(41), 8191);
        assert_eq!(maglev_size_for(1310), 131_071);
        assert_eq!(maglev_size_for(65_535), 131_071);
        assert_eq!(maglev_size_for(u32::MAX), 131_071);
    }

    #[test]
    fn slots_are_packed_256_to_a_chunk() {
        assert_eq!(maglev_chunks(251), 1);
        assert_eq!(maglev_chunks(509), 2);
        assert_eq!(maglev_chunks(131_071), 512);
        assert_eq!(maglev_chunk_pos(0), (0, 0));
        assert_eq!(maglev_chunk_pos(255), (0, 255));
        assert_eq!(maglev_chunk_pos(256), (1, 0));
        assert_eq!(maglev_chunk_pos(131_070), (511, 254));
        assert_eq!(core::mem::size_of::<MaglevKey>(), 8);
        assert_eq!(core::mem::size_of::<MaglevChunk>(), 512);
    }

    #[test]
    fn the_chunk_map_holds_a_full_node_and_a_generation_more_of_most_changes() {
        // A table of b backends is at most 1 + b * 200 / 256 chunks.
        for b in 1..=65_535_u32 {
            let chunks = maglev_chunks(maglev_size_for(b));
            assert!(chunks <= 1 + b * 200 / 256, "{b} backends: {chunks} chunks");
        }
        let full = crate::maps::FRONTENDS_MAX + crate::maps::BACKENDS_MAX * 200 / 256;
        assert_eq!(full, 270_336);
        assert!(crate::maps::MAGLEV_CHUNKS_MAX >= full + full * 9 / 10);
        assert!(crate::maps::MAGLEV_CHUNKS_MAX.is_power_of_two());
    }

    extern crate std;
    use std::{cell::RefCell, collections::BTreeMap};

    fn fe(generation: u16, size: u32) -> Frontend {
        Frontend {
            id: 7,
            backends: 2,
            flags: 0,
            _pad: 0,
            affinity_timeout_secs: 0,
            maglev_size: size,
            maglev_gen: generation,
            _pad2: 0,
        }
    }

    /// A chunk map: every slot of generation `g` holds backend index `g`.
    fn chunks(gens: &[(u16, u32)]) -> RefCell<BTreeMap<MaglevKey, u16>> {
        let mut m = BTreeMap::new();
        for &(g, size) in gens {
            for chunk in 0..maglev_chunks(size) as u16 {
                m.insert(
                    MaglevKey {
                        frontend: 7,
                        generation: g,
                        chunk,
                    },
                    g,
                );
            }
        }
        RefCell::new(m)
    }

    #[test]
    fn a_pick_reads_the_generation_its_frontend_names() {
        let map = chunks(&[(1, 251), (2, 509)]);
        let lookup = |k: &MaglevKey, _lane: usize| map.borrow().get(k).copied();
        for hash in [0, 250, 251, 508, u32::MAX] {
            assert_eq!(maglev_index(&fe(1, 251), hash, lookup, || None), Some(1));
            assert_eq!(maglev_index(&fe(2, 509), hash, lookup, || None), Some(2));
        }
        assert_eq!(
            maglev_index(&fe(1, 0), 3, lookup, || None),
            None,
            "no table"
        );
    }

    #[test]
    fn a_pick_racing_the_delete_of_its_generation_retries_once_with_the_new_one() {
        // The controller's swap: generation 2 written, the frontend names
        // it, generation 1 deleted; this pick read the frontend before.
        let map = chunks(&[(2, 509)]);
        let lookup = |k: &MaglevKey, _lane: usize| map.borrow().get(k).copied();
        let rereads = RefCell::new(0);
        let reread = || {
            *rereads.borrow_mut() += 1;
            Some(fe(2, 509))
        };
        assert_eq!(maglev_index(&fe(1, 251), 600, lookup, reread), Some(2));
        assert_eq!(*rereads.borrow(), 1);
        // Both gone (a table missing for good): one retry, then None.
        map.borrow_mut().clear();
        let rereads = RefCell::new(0);
        let reread = || {
            *rereads.borrow_mut() += 1;
            Some(fe(2, 509))
        };
        assert_eq!(maglev_index(&fe(1, 251), 600, lookup, reread), None);
        assert_eq!(*rereads.borrow(), 1, "bounded: one retry");
        // The frontend names the same table again, or is gone: no retry pick.
        assert_eq!(
            maglev_index(&fe(1, 251), 6, lookup, || Some(fe(1, 251))),
            None
        );
        assert_eq!(maglev_index(&fe(1, 251), 6, lookup, || None), None);
    }
}
