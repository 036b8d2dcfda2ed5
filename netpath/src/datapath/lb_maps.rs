//! Typed access to the load balancer's maps: frontends (service VIPs and
//! forwarded node ports), their backends, their Maglev tables, ClientIP
//! affinity, and the XDP prefilter's deny list.
//!
//! The Maglev map is a hash of maps: frontend id → one array of
//! `maps::MAGLEV_SIZE` backend indices. A table is replaced whole: a new
//! inner array is filled, then swapped in with one update of the outer map,
//! so a new connection always sees either the old table or the new one,
//! never a mix (as Cilium's `cilium_lb4_maglev`).

use std::{collections::BTreeMap, net::Ipv4Addr};

use aya::maps::{Array, HashMap, HashOfMaps, LpmTrie, Map, MapData, MapError};
use ipnet::Ipv4Net;
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, DenyRule, Frontend, FrontendKey, RouteKey, maps,
};

use super::maps::{MapsError, collect, ignore_absent, lookup};

/// The load balancer's maps of one node.
pub struct LbMaps {
    frontends: HashMap<MapData, FrontendKey, Frontend>,
    backends: HashMap<MapData, BackendKey, Backend>,
    maglev: HashOfMaps<MapData, u32, Array<MapData, u32>>,
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

    /// Replaces the Maglev table of frontend `id` with `table` (backend
    /// indices, `maps::MAGLEV_SIZE` of them): a new inner array, filled,
    /// then swapped in with one update of the outer map.
    pub fn set_maglev(&mut self, id: u32, table: &[u32]) -> Result<(), MapsError> {
        if table.len() != maps::MAGLEV_SIZE as usize {
            return Err(MapsError::Op {
                op: "fill",
                name: maps::MAGLEV,
                source: MapError::InvalidValueSize {
                    size: table.len(),
                    expected: maps::MAGLEV_SIZE as usize,
                },
            });
        }
        let mut inner: Array<MapData, u32> =
            Array::create(maps::MAGLEV_SIZE, 0).map_err(op("create", maps::MAGLEV))?;
        for (slot, index) in (0_u32..).zip(table) {
            inner
                .set(slot, index, 0)
                .map_err(op("fill", maps::MAGLEV))?;
        }
        self.maglev
            .insert(id, &inner, 0)
            .map_err(op("insert", maps::MAGLEV))
    }

    /// Removes the Maglev table of frontend `id`; absent is fine.
    pub fn remove_maglev(&mut self, id: u32) -> Result<(), MapsError> {
        ignore_absent(self.maglev.remove(&id), "remove", maps::MAGLEV)
    }

    /// The Maglev table of frontend `id`, if it has one.
    pub fn maglev(&self, id: u32) -> Result<Option<Vec<u32>>, MapsError> {
        let inner: Option<Array<MapData, u32>> = lookup(self.maglev.get(&id, 0), maps::MAGLEV)?;
        let Some(inner) = inner else {
            return Ok(None);
        };
        (0..maps::MAGLEV_SIZE)
            .map(|slot| inner.get(&slot, 0).map_err(op("read", maps::MAGLEV)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
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

/// A frontend key from its parts (port host order).
pub fn frontend_key(addr: Ipv4Addr, port: u16, proto: u8) -> FrontendKey {
    FrontendKey {
        addr: addr.octets(),
        port,
        proto,
        _pad: 0,
    }
}
