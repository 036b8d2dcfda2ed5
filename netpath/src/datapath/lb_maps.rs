//! Typed access to the load balancer's maps: frontends (service VIPs and
//! forwarded node ports), their backends, their Maglev tables, ClientIP
//! affinity, and the XDP prefilter's deny list.
//!
//! The Maglev map is a hash of maps: frontend id → one array holding the
//! frontend's table, sized for it (`netpath_common::lb` gives the layout:
//! its size in element 0, then four 16-bit slots per element). A table is
//! replaced whole: a new inner array is created and filled in one batch,
//! then swapped in with one update of the outer map, so a new connection
//! always sees either the old table or the new one, never a mix (as
//! Cilium's `cilium_lb4_maglev`).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
};

use aya::maps::{HashMap, HashOfMaps, IterableMap as _, LpmTrie, Map, MapData, MapError};
use ipnet::Ipv4Net;
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, DenyRule, Frontend, FrontendKey, RouteKey,
    lb::{MAGLEV_SIZES, MAGLEV_SLOTS_PER_ELEM, MaglevSlots, maglev_elems, maglev_position},
    maps,
};

use super::{
    batch,
    maps::{MapsError, collect, ignore_absent, lookup},
};

/// Maglev tables swapped in per batch: each needs an open descriptor of
/// its new inner array until the batch is in (well under the 1,024 a
/// process may have by default).
const TABLES_PER_BATCH: usize = 512;

/// The load balancer's maps of one node.
pub struct LbMaps {
    frontends: HashMap<MapData, FrontendKey, Frontend>,
    backends: HashMap<MapData, BackendKey, Backend>,
    /// A hash of maps, kept untyped: its descriptor is needed for the
    /// batches, a typed view ([`HashOfMaps`]) is made per use.
    maglev: Map,
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
            maglev: {
                let _: HashOfMaps<&MapData, u32, MapData> = HashOfMaps::try_from(&raw.maglev)
                    .map_err(|source| MapsError::Layout {
                        name: maps::MAGLEV,
                        source,
                    })?;
                raw.maglev
            },
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

    /// Every frontend (read in batches).
    pub fn frontends(&self) -> Result<Vec<(FrontendKey, Frontend)>, MapsError> {
        batch::lookup_hash(self.frontends.map().fd().as_fd())
            .map_err(|e| syscall_on("iterate", maps::FRONTENDS, e))
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

    /// Every backend of every frontend, by frontend id then index (read in
    /// batches).
    pub fn backends(&self) -> Result<BTreeMap<(u32, u32), Backend>, MapsError> {
        let all: Vec<(BackendKey, Backend)> = batch::lookup_hash(self.backends.map().fd().as_fd())
            .map_err(|e| syscall_on("iterate", maps::BACKENDS, e))?;
        Ok(all
            .into_iter()
            .map(|(k, v)| ((k.frontend, k.index), v))
            .collect())
    }

    /// The Maglev outer map's descriptor.
    fn maglev_fd(&self) -> BorrowedFd<'_> {
        match &self.maglev {
            Map::HashOfMaps(m) => m.fd().as_fd(),
            _ => unreachable!("checked to be a hash of maps in from_raw"),
        }
    }

    /// Replaces the Maglev table of frontend `id` with `table` (a backend
    /// index per slot; as many slots as one of `MAGLEV_SIZES`, every index
    /// below 65,536): [`LbMaps::set_maglevs`] of one.
    pub fn set_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), MapsError> {
        self.set_maglevs(&[(id, table)])
    }

    /// Replaces the Maglev tables of frontends `tables` (id, table): each a
    /// new inner array, created and filled in one batch, then all swapped
    /// in with one batch update of the outer map per [`TABLES_PER_BATCH`]
    /// (each update of the outer map waits for an RCU grace period, once
    /// per syscall). Every table is checked before anything changes.
    pub fn set_maglevs(&mut self, tables: &[(u32, &[u32])]) -> Result<(), MapsError> {
        let packed = tables
            .iter()
            .map(|(id, t)| Ok((*id, pack_maglev(t)?)))
            .collect::<Result<Vec<_>, MapsError>>()?;
        for chunk in packed.chunks(TABLES_PER_BATCH) {
            let mut ids: Vec<u32> = Vec::with_capacity(chunk.len());
            let mut fds: Vec<OwnedFd> = Vec::with_capacity(chunk.len());
            for (id, elems) in chunk {
                let len = u32::try_from(elems.len()).unwrap_or(u32::MAX);
                let fd =
                    batch::create_array::<MaglevSlots>("np_maglev", len, maps::BPF_F_INNER_MAP)
                        .map_err(|e| syscall("create", e))?;
                batch::update(fd.as_fd(), &(0..len).collect::<Vec<u32>>(), elems)
                    .map_err(|e| syscall("fill", e))?;
                ids.push(*id);
                fds.push(fd);
            }
            let values: Vec<u32> = fds
                .iter()
                .map(|fd| fd.as_raw_fd().cast_unsigned())
                .collect();
            batch::update(self.maglev_fd(), &ids, &values).map_err(|e| syscall("insert", e))?;
        }
        Ok(())
    }

    /// Removes the Maglev table of frontend `id`; absent is fine.
    pub fn remove_maglev(&mut self, id: u32) -> Result<(), MapsError> {
        self.remove_maglevs(&[id])
    }

    /// Removes the Maglev tables of frontends `ids` in one batch (absent
    /// ones are fine).
    pub fn remove_maglevs(&mut self, ids: &[u32]) -> Result<(), MapsError> {
        batch::delete(self.maglev_fd(), ids).map_err(|e| syscall("remove", e))?;
        Ok(())
    }

    /// The Maglev table of frontend `id` (a backend index per slot), if it
    /// has one.
    pub fn maglev(&self, id: u32) -> Result<Option<Vec<u32>>, MapsError> {
        let outer: HashOfMaps<&MapData, u32, MapData> =
            HashOfMaps::try_from(&self.maglev).map_err(op("open", maps::MAGLEV))?;
        let inner: Option<MapData> = lookup(outer.get(&id, 0), maps::MAGLEV)?;
        let Some(inner) = inner else {
            return Ok(None);
        };
        let n = inner
            .info()
            .map_err(op("info", maps::MAGLEV))?
            .max_entries();
        let elems: Vec<MaglevSlots> =
            batch::lookup_array(inner.fd().as_fd(), n).map_err(|e| syscall("read", e))?;
        unpack_maglev(&elems).map(Some)
    }

    /// The frontend ids that have a Maglev table (the outer map's keys; no
    /// table is read).
    pub fn maglev_ids(&self) -> Result<BTreeSet<u32>, MapsError> {
        let all: Vec<(u32, u32)> =
            batch::lookup_hash(self.maglev_fd()).map_err(|e| syscall("iterate", e))?;
        Ok(all.into_iter().map(|(id, _inner_map_id)| id).collect())
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

/// A failed raw syscall on the Maglev map (see [`batch`]).
fn syscall(what: &'static str, e: std::io::Error) -> MapsError {
    syscall_on(what, maps::MAGLEV, e)
}

/// A failed raw syscall on map `name` (see [`batch`]).
fn syscall_on(what: &'static str, name: &'static str, e: std::io::Error) -> MapsError {
    MapsError::Op {
        op: what,
        name,
        source: MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf",
            io_error: e,
        }),
    }
}

/// A table as the inner array holds it: the header, then the slots four
/// to an element. Refused: a size that is not one of `MAGLEV_SIZES`, an
/// index above 65,535.
pub fn pack_maglev(table: &[u32]) -> Result<Vec<MaglevSlots>, MapsError> {
    let size = u32::try_from(table.len()).unwrap_or(u32::MAX);
    if !MAGLEV_SIZES.contains(&size) {
        return Err(MapsError::MaglevTable {
            what: format!("{} slots; a table has one of {MAGLEV_SIZES:?}", table.len()),
        });
    }
    let mut elems = vec![MaglevSlots::default(); maglev_elems(size) as usize];
    elems[0] = MaglevSlots::header(size);
    for (slot, &index) in (0_u32..).zip(table) {
        let index = u16::try_from(index).map_err(|_| MapsError::MaglevTable {
            what: format!("slot {slot} holds backend index {index}, above 65,535"),
        })?;
        let (elem, lane) = maglev_position(slot);
        elems[elem as usize].index[lane] = index;
    }
    Ok(elems)
}

/// The slots of a table read back from its inner array.
pub fn unpack_maglev(elems: &[MaglevSlots]) -> Result<Vec<u32>, MapsError> {
    let size = elems.first().map_or(0, MaglevSlots::size);
    let room = elems.len().saturating_sub(1) * MAGLEV_SLOTS_PER_ELEM as usize;
    if size == 0 || size as usize > room {
        return Err(MapsError::MaglevTable {
            what: format!(
                "its header says {size} slots in an array of {} elements",
                elems.len()
            ),
        });
    }
    Ok((0..size)
        .map(|slot| {
            let (elem, lane) = maglev_position(slot);
            u32::from(elems[elem as usize].index[lane])
        })
        .collect())
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
    fn a_table_packs_behind_its_header_and_unpacks_slot_for_slot() {
        let table: Vec<u32> = (0..251).map(|s| s * 7 % 300).collect();
        let elems = pack_maglev(&table).unwrap();
        assert_eq!(elems.len(), 64);
        assert_eq!(elems[0], MaglevSlots::header(251));
        assert_eq!(elems[1].index, [0, 7, 14, 21]);
        assert_eq!(
            elems[63].index,
            [table[248] as u16, table[249] as u16, table[250] as u16, 0]
        );
        assert_eq!(unpack_maglev(&elems).unwrap(), table);
        let big: Vec<u32> = (0..131_071).map(|s| s % 65_536).collect();
        assert_eq!(unpack_maglev(&pack_maglev(&big).unwrap()).unwrap(), big);
    }

    #[test]
    fn malformed_tables_are_refused_both_ways() {
        assert!(matches!(
            pack_maglev(&[0; 250]),
            Err(MapsError::MaglevTable { .. })
        ));
        assert!(pack_maglev(&[]).is_err());
        let mut t = vec![0; 251];
        t[3] = 65_536;
        let e = pack_maglev(&t).unwrap_err().to_string();
        assert!(e.contains("slot 3 holds backend index 65536"), "{e}");
        // A header larger than its array, or none.
        let mut elems = pack_maglev(&[1; 251]).unwrap();
        elems.truncate(10);
        assert!(unpack_maglev(&elems).is_err());
        assert!(unpack_maglev(&[]).is_err());
        assert!(unpack_maglev(&[MaglevSlots::default(); 4]).is_err());
    }
}
