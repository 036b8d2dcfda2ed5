//! Typed access to the load balancer's maps: frontends (service VIPs and
//! forwarded node ports), their backends, their Maglev tables, ClientIP
//! affinity, and the XDP prefilter's deny list. Everything goes through
//! aya's map calls, one element per syscall.
//!
//! The Maglev map is a plain hash of chunks (`netpath_common::lb`):
//! (frontend id, generation, chunk) → 256 slots. The frontend value names
//! its table (size and generation). A table is replaced by a swap
//! ([`LbMaps::swap_maglev`], and the reconciler's phases for many
//! frontends at once), whose order is what keeps every pick on one whole
//! table:
//!
//! - **S1** the new table is written under a generation the frontend does
//!   not name (its current one + 1), chunk by chunk: no program reads it
//!   yet;
//! - **S2** the frontend value is written naming the new size and
//!   generation (one hash update, atomic): new picks read the new table;
//! - **S3** only then are the old generation's chunks deleted; a pick that
//!   read the old frontend value just before S2 and finds its chunk gone
//!   reads the frontend once more and uses the new table
//!   (`netpath_common::lb::maglev_index`, T2).
//!
//! A generation is never written again while a frontend names it, so a
//! pick never reads a mix of two tables. None of these updates waits for
//! an RCU grace period (as every update of a map of maps does): a
//! two-backend service's table is one element, one update.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use aya::maps::{HashMap, LpmTrie, Map, MapData, MapError};
use ipnet::Ipv4Net;
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, DenyRule, Frontend, FrontendKey, RouteKey,
    lb::{
        MAGLEV_CHUNK_SLOTS, MAGLEV_SIZES, MaglevChunk, MaglevKey, maglev_chunk_pos, maglev_chunks,
    },
    maps,
};

use super::maps::{MapsError, collect, ignore_absent, lookup};

/// The load balancer's maps of one node.
pub struct LbMaps {
    frontends: HashMap<MapData, FrontendKey, Frontend>,
    backends: HashMap<MapData, BackendKey, Backend>,
    maglev: HashMap<MapData, MaglevKey, MaglevChunk>,
    /// An LRU hash; aya's `HashMap` covers both hash kinds.
    affinity: HashMap<MapData, AffinityKey, Affinity>,
    prefilter: LpmTrie<MapData, RouteKey, DenyRule>,
}

/// The raw maps, before they get their types.
pub(super) struct RawLbMaps {
    pub frontends: Map,
    pub backends: Map,
    pub maglev: Map,
    pub affinity: Map,
    pub prefilter: Map,
}

fn op(op: &'static str, name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op { op, name, source }
}

impl LbMaps {
    pub(super) fn from_raw(raw: RawLbMaps) -> Result<Self, MapsError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, MapsError> {
            T::try_from(map).map_err(|source| MapsError::Layout { name, source })
        }
        Ok(Self {
            frontends: typed(maps::FRONTENDS, raw.frontends)?,
            backends: typed(maps::BACKENDS, raw.backends)?,
            maglev: typed(maps::MAGLEV, raw.maglev)?,
            affinity: typed(maps::AFFINITY, raw.affinity)?,
            prefilter: typed(maps::PREFILTER, raw.prefilter)?,
        })
    }

    /// Adds or replaces a frontend.
    pub fn set_frontend(&mut self, key: FrontendKey, fe: Frontend) -> Result<(), MapsError> {
        self.frontends
            .insert(key, fe, 0)
            .map_err(op("insert", maps::FRONTENDS))
    }

    /// Removes a frontend; absent is fine.
    pub fn remove_frontend(&mut self, key: &FrontendKey) -> Result<(), MapsError> {
        ignore_absent(self.frontends.remove(key), "remove", maps::FRONTENDS)
    }

    /// One frontend, if present.
    pub fn frontend(&self, key: &FrontendKey) -> Result<Option<Frontend>, MapsError> {
        lookup(self.frontends.get(key, 0), maps::FRONTENDS)
    }

    /// Every frontend (a walk of the map; one added or removed meanwhile
    /// may be seen or not).
    pub fn frontends(&self) -> Result<Vec<(FrontendKey, Frontend)>, MapsError> {
        collect(self.frontends.iter(), maps::FRONTENDS)
    }

    /// Adds or replaces a backend of a frontend.
    pub fn set_backend(&mut self, key: BackendKey, be: Backend) -> Result<(), MapsError> {
        self.backends
            .insert(key, be, 0)
            .map_err(op("insert", maps::BACKENDS))
    }

    /// Removes a backend; absent is fine.
    pub fn remove_backend(&mut self, key: &BackendKey) -> Result<(), MapsError> {
        ignore_absent(self.backends.remove(key), "remove", maps::BACKENDS)
    }

    /// One backend, if present.
    pub fn backend(&self, key: &BackendKey) -> Result<Option<Backend>, MapsError> {
        lookup(self.backends.get(key, 0), maps::BACKENDS)
    }

    /// Every backend of every frontend, by frontend id then index.
    pub fn backends(&self) -> Result<BTreeMap<(u32, u32), Backend>, MapsError> {
        Ok(collect(self.backends.iter(), maps::BACKENDS)?
            .into_iter()
            .map(|(k, v)| ((k.frontend, k.index), v))
            .collect())
    }

    /// Writes `table` (a backend index per slot; as many slots as one of
    /// `MAGLEV_SIZES`, every index below 65,536) as generation `generation`
    /// of frontend `id`'s table, chunk by chunk (S1: the caller makes sure
    /// no frontend names that generation yet). The table is checked before
    /// anything is written.
    pub fn set_maglev(&mut self, id: u32, generation: u16, table: &[u32]) -> Result<(), MapsError> {
        let chunks = pack_maglev(table)?;
        for (chunk, value) in (0_u16..).zip(&chunks) {
            let key = MaglevKey {
                frontend: id,
                generation,
                chunk,
            };
            self.maglev
                .insert(key, value, 0)
                .map_err(op("insert", maps::MAGLEV))?;
        }
        Ok(())
    }

    /// Deletes the chunks of generation `generation` of frontend `id`'s
    /// table of `size` slots (S3); absent ones are fine.
    pub fn remove_maglev(&mut self, id: u32, generation: u16, size: u32) -> Result<(), MapsError> {
        for chunk in 0..maglev_chunks(size) {
            let key = MaglevKey {
                frontend: id,
                generation,
                chunk: u16::try_from(chunk).unwrap_or(u16::MAX),
            };
            ignore_absent(self.maglev.remove(&key), "remove", maps::MAGLEV)?;
        }
        Ok(())
    }

    /// Generation `generation` of frontend `id`'s table of `size` slots (a
    /// backend index per slot), if every chunk of it is there.
    pub fn maglev(
        &self,
        id: u32,
        generation: u16,
        size: u32,
    ) -> Result<Option<Vec<u32>>, MapsError> {
        if size == 0 {
            return Ok(None);
        }
        let mut chunks = Vec::with_capacity(maglev_chunks(size) as usize);
        for chunk in 0..maglev_chunks(size) {
            let key = MaglevKey {
                frontend: id,
                generation,
                chunk: u16::try_from(chunk).unwrap_or(u16::MAX),
            };
            match lookup(self.maglev.get(&key, 0), maps::MAGLEV)? {
                Some(c) => chunks.push(c),
                None => return Ok(None),
            }
        }
        Ok(Some(unpack_maglev(size, &chunks)))
    }

    /// The table the frontend value `fe` names, if it has one and every
    /// chunk of it is there.
    pub fn maglev_of(&self, fe: &Frontend) -> Result<Option<Vec<u32>>, MapsError> {
        self.maglev(fe.id, fe.maglev_gen, fe.maglev_size)
    }

    /// Every chunk key of the Maglev map (a walk of its keys; no chunk is
    /// read).
    pub fn maglev_keys(&self) -> Result<BTreeSet<MaglevKey>, MapsError> {
        self.maglev
            .keys()
            .collect::<Result<BTreeSet<_>, _>>()
            .map_err(op("iterate", maps::MAGLEV))
    }

    /// Replaces the Maglev table of the frontend at `key` with `table`, in
    /// the order of the module docs: the next generation's chunks (S1),
    /// the frontend naming them (S2), the old generation's deletion (S3).
    /// What the reconciler does for many frontends at once, phase by
    /// phase; tests use it for one.
    pub fn swap_maglev(&mut self, key: &FrontendKey, table: &[u32]) -> Result<(), MapsError> {
        let Some(fe) = self.frontend(key)? else {
            return Err(MapsError::MaglevTable {
                what: "its frontend is not in the map; add the frontend first".to_owned(),
            });
        };
        let generation = fe.maglev_gen.wrapping_add(1);
        self.set_maglev(fe.id, generation, table)?;
        self.set_frontend(
            *key,
            Frontend {
                maglev_size: u32::try_from(table.len()).unwrap_or(u32::MAX),
                maglev_gen: generation,
                ..fe
            },
        )?;
        self.remove_maglev(fe.id, fe.maglev_gen, fe.maglev_size)
    }

    /// Forgets the affinity of every client of frontend `id` (its backends
    /// changed); absent is fine.
    pub fn clear_affinity(&mut self, id: u32) -> Result<(), MapsError> {
        self.clear_affinity_of(&BTreeSet::from([id]))
    }

    /// Forgets the affinity of every client of the frontends `ids`, in one
    /// walk of the affinity map; absent is fine.
    pub fn clear_affinity_of(&mut self, ids: &BTreeSet<u32>) -> Result<(), MapsError> {
        if ids.is_empty() {
            return Ok(());
        }
        let keys: Vec<AffinityKey> = collect(self.affinity.iter(), maps::AFFINITY)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| ids.contains(&k.frontend))
            .collect();
        for k in keys {
            ignore_absent(self.affinity.remove(&k), "remove", maps::AFFINITY)?;
        }
        Ok(())
    }

    /// Every affinity entry.
    pub fn affinity(&self) -> Result<Vec<(AffinityKey, Affinity)>, MapsError> {
        collect(self.affinity.iter(), maps::AFFINITY)
    }

    /// Makes the prefilter's deny list hold exactly `rules` (source prefix
    /// → rule).
    pub fn sync_prefilter(&mut self, rules: &[(Ipv4Net, DenyRule)]) -> Result<(), MapsError> {
        super::maps::sync_lpm(&mut self.prefilter, maps::PREFILTER, rules)
    }

    /// The prefilter's deny list.
    pub fn prefilter(&self) -> Result<Vec<(Ipv4Net, DenyRule)>, MapsError> {
        super::maps::dump_lpm(&self.prefilter, maps::PREFILTER)
    }
}

/// A table as the Maglev map holds it: 256 slots per chunk, the last
/// padded with zeros. Refused: a size that is not one of `MAGLEV_SIZES`,
/// an index above 65,535.
pub fn pack_maglev(table: &[u32]) -> Result<Vec<MaglevChunk>, MapsError> {
    let size = u32::try_from(table.len()).unwrap_or(u32::MAX);
    if !MAGLEV_SIZES.contains(&size) {
        return Err(MapsError::MaglevTable {
            what: format!("{} slots; a table has one of {MAGLEV_SIZES:?}", table.len()),
        });
    }
    let mut chunks = vec![MaglevChunk::ZERO; maglev_chunks(size) as usize];
    for (slot, &index) in (0_u32..).zip(table) {
        let index = u16::try_from(index).map_err(|_| MapsError::MaglevTable {
            what: format!("slot {slot} holds backend index {index}, above 65,535"),
        })?;
        let (chunk, lane) = maglev_chunk_pos(slot);
        chunks[usize::from(chunk)].slots[lane] = index;
    }
    Ok(chunks)
}

/// The `size` slots of a table read back from its chunks (which hold at
/// least `size` slots: `maglev_chunks(size)` of them).
pub fn unpack_maglev(size: u32, chunks: &[MaglevChunk]) -> Vec<u32> {
    debug_assert!(chunks.len() * MAGLEV_CHUNK_SLOTS as usize >= size as usize);
    (0..size)
        .map(|slot| {
            let (chunk, lane) = maglev_chunk_pos(slot);
            u32::from(chunks[usize::from(chunk)].slots[lane])
        })
        .collect()
}

/// A frontend key from its parts (port host order).
pub fn frontend_key(addr: Ipv4Addr, port: u16, proto: u8) -> FrontendKey {
    FrontendKey {
        addr: addr.octets(),
        port,
        proto,
        _pad: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_packs_256_slots_to_a_chunk_and_unpacks_slot_for_slot() {
        let table: Vec<u32> = (0..251).map(|s| s * 7 % 300).collect();
        let chunks = pack_maglev(&table).unwrap();
        assert_eq!(chunks.len(), 1, "a 251-slot table is one chunk");
        assert_eq!(chunks[0].slots[..4], [0, 7, 14, 21]);
        assert_eq!(chunks[0].slots[250], table[250] as u16);
        assert!(chunks[0].slots[251..].iter().all(|&s| s == 0), "padding");
        assert_eq!(unpack_maglev(251, &chunks), table);
        let big: Vec<u32> = (0..131_071).map(|s| s % 65_536).collect();
        let chunks = pack_maglev(&big).unwrap();
        assert_eq!(chunks.len(), 512);
        assert_eq!(chunks[1].slots[0], 256);
        assert_eq!(unpack_maglev(131_071, &chunks), big);
    }

    #[test]
    fn malformed_tables_are_refused() {
        assert!(matches!(
            pack_maglev(&[0; 250]),
            Err(MapsError::MaglevTable { .. })
        ));
        assert!(pack_maglev(&[]).is_err());
        let mut t = vec![0; 251];
        t[3] = 65_536;
        let e = pack_maglev(&t).unwrap_err().to_string();
        assert!(e.contains("slot 3 holds backend index 65536"), "{e}");
    }
}
