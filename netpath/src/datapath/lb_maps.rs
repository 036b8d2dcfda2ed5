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

use std::{collections::BTreeMap, net::Ipv4Addr};

use std::{collections::BTreeSet, os::fd::AsFd as _};

use aya::maps::{HashMap, HashOfMaps, LpmTrie, Map, MapData, MapError};
use ipnet::Ipv4Net;
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, DenyRule, Frontend, FrontendKey, RouteKey,
    lb::{MAGLEV_SIZES, MAGLEV_SLOTS_PER_ELEM, MaglevSlots, maglev_elems, maglev_position},
    maps,
};

use super::{
    array,
    maps::{MapsError, collect, ignore_absent, lookup},
};

/// The load balancer's maps of one node.
pub struct LbMaps {
    frontends: HashMap<MapData, FrontendKey, Frontend>,
    backends: HashMap<MapData, BackendKey, Backend>,
    maglev: HashOfMaps<MapData, u32, MapData>,
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

    /// Every frontend.
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

    /// Every backend of every frontend, by frontend id then index.
    pub fn backends(&self) -> Result<BTreeMap<(u32, u32), Backend>, MapsError> {
        Ok(collect(self.backends.iter(), maps::BACKENDS)?
            .into_iter()
            .map(|(k, v)| ((k.frontend, k.index), v))
            .collect())
    }

    /// Replaces the Maglev table of frontend `id` with `table` (a backend
    /// index per slot; as many slots as one of `MAGLEV_SIZES`, every index
    /// below 65,536): a new inner array, filled in one batch, then swapped
    /// in with one update of the outer map.
    pub fn set_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), MapsError> {
        let elems = pack_maglev(table)?;
        let len = u32::try_from(elems.len()).unwrap_or(u32::MAX);
        let fd = array::create::<MaglevSlots>("np_maglev", len, maps::BPF_F_INNER_MAP)
            .map_err(|e| syscall("create", e))?;
        array::write_all(fd.as_fd(), &elems).map_err(|e| syscall("fill", e))?;
        let inner = MapData::from_fd(fd).map_err(op("open", maps::MAGLEV))?;
        self.maglev
            .insert(id, &inner, 0)
            .map_err(op("insert", maps::MAGLEV))
    }

    /// Removes the Maglev table of frontend `id`; absent is fine.
    pub fn remove_maglev(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_absent(self.maglev.remove(&id), "remove", maps::MAGLEV)
    }

    /// The Maglev table of frontend `id` (a backend index per slot), if it
    /// has one.
    pub fn maglev(&self, id: u32) -> Result<Option<Vec<u32>>, MapsError> {
        let inner: Option<MapData> = lookup(self.maglev.get(&id, 0), maps::MAGLEV)?;
        let Some(inner) = inner else {
            return Ok(None);
        };
        let n = inner
            .info()
            .map_err(op("info", maps::MAGLEV))?
            .max_entries();
        let elems: Vec<MaglevSlots> =
            array::read_all(inner.fd().as_fd(), n).map_err(|e| syscall("read", e))?;
        unpack_maglev(&elems).map(Some)
    }

    /// The frontend ids that have a Maglev table (the outer map's keys; no
    /// table is read).
    pub fn maglev_ids(&self) -> Result<BTreeSet<u32>, MapsError> {
        self.maglev
            .keys()
            .collect::<Result<_, _>>()
            .map_err(op("iterate", maps::MAGLEV))
    }

    /// Forgets the affinity of every client of frontend `id` (its backends
    /// changed); absent is fine.
    pub fn clear_affinity(&mut self, id: u32) -> Result<(), MapsError> {
        let keys: Vec<AffinityKey> = collect(self.affinity.iter(), maps::AFFINITY)?
            .into_iter()
            .map(|(k, _)| k)
            .filter(|k| k.frontend == id)
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

/// A failed raw syscall on the Maglev map (see [`array`]).
fn syscall(what: &'static str, e: std::io::Error) -> MapsError {
    MapsError::Op {
        op: what,
        name: maps::MAGLEV,
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
