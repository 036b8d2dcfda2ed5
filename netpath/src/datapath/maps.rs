//! Typed access to the datapath's maps, from a freshly loaded object or from
//! the pins of a running instance (what `netpath stats` and friends use).

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, PerCpuArray, lpm_trie::Key as LpmKey},
};
use ipnet::Ipv4Net;
use netpath_common::{
    Counter, CtEntry, CtKey, Endpoint, EndpointKey, MasqKey, MasqRule, NodeSettings, RevNat,
    RouteKey, RouteNextHop, Stat, maps,
};

use super::{
    lb_maps::{LbMaps, RawLbMaps},
    pins::PinDir,
};

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

/// Errors of opening or using a map.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("the eBPF object has no map {name}")]
    Missing { name: &'static str },
    #[error(
        "cannot open pinned map {path}: {source}; is the instance running? \
         (`netpath apply` creates it)"
    )]
    OpenPinned { path: PathBuf, source: MapError },
    #[error("map {name} has an unexpected type or layout: {source}")]
    Layout {
        name: &'static str,
        source: MapError,
    },
    #[error(
        "a Maglev table for maglev_v3 is refused: {what} (an apply that changes the \
         service's backends writes a new one)"
    )]
    MaglevTable { what: String },
    #[error("{op} on map {name} failed: {source}")]
    Op {
        op: &'static str,
        name: &'static str,
        source: MapError,
    },
}

/// The maps of one node.
pub struct NodeMaps {
    endpoints: HashMap<MapData, EndpointKey, Endpoint>,
    stats: PerCpuArray<MapData, Counter>,
    routes: LpmTrie<MapData, RouteKey, RouteNextHop>,
    masq: LpmTrie<MapData, MasqKey, MasqRule>,
    settings: Array<MapData, NodeSettings>,
    conntrack: HashMap<MapData, CtKey, CtEntry>,
    revnat: HashMap<MapData, CtKey, RevNat>,
    lb: LbMaps,
    /// Per-pod counters (`pod_stats_v1`; see [`super::pod_stats`]).
    pub(super) pod_stats: super::pod_stats::PodStatsMap,
}

/// The raw maps, before they get their types.
struct RawMaps {
    endpoints: Map,
    stats: Map,
    routes: Map,
    masq: Map,
    settings: Map,
    conntrack: Map,
    revnat: Map,
    lb: RawLbMaps,
    pod_stats: Map,
}

impl NodeMaps {
    /// Takes the maps out of a loaded object (after its programs are loaded:
    /// the programs keep their own references).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing { name });
        Self::from_raw(RawMaps {
            endpoints: take(maps::ENDPOINTS)?,
            stats: take(maps::STATS)?,
            routes: take(maps::ROUTES)?,
            masq: take(maps::MASQ)?,
            settings: take(maps::SETTINGS)?,
            conntrack: take(maps::CONNTRACK)?,
            revnat: take(maps::REVNAT)?,
            lb: RawLbMaps {
                frontends: take(maps::FRONTENDS)?,
                backends: take(maps::BACKENDS)?,
                maglev: take(maps::MAGLEV)?,
                affinity: take(maps::AFFINITY)?,
                prefilter: take(maps::PREFILTER)?,
            },
            pod_stats: take(netpath_common::pod_stats::MAP)?,
        })
    }

    /// Opens the maps pinned by a running instance.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        let open = |name: &'static str| {
            let path = pins.map(name);
            MapData::from_pin(&path).map_err(|source| MapsError::OpenPinned { path, source })
        };
        Self::from_raw(RawMaps {
            endpoints: Map::HashMap(open(maps::ENDPOINTS)?),
            stats: Map::PerCpuArray(open(maps::STATS)?),
            routes: Map::LpmTrie(open(maps::ROUTES)?),
            masq: Map::LpmTrie(open(maps::MASQ)?),
            settings: Map::Array(open(maps::SETTINGS)?),
            conntrack: Map::LruHashMap(open(maps::CONNTRACK)?),
            revnat: Map::HashMap(open(maps::REVNAT)?),
            lb: RawLbMaps {
                frontends: Map::HashMap(open(maps::FRONTENDS)?),
                backends: Map::HashMap(open(maps::BACKENDS)?),
                maglev: Map::HashMap(open(maps::MAGLEV)?),
                affinity: Map::LruHashMap(open(maps::AFFINITY)?),
                prefilter: Map::LpmTrie(open(maps::PREFILTER)?),
            },
            pod_stats: Map::PerCpuHashMap(open(netpath_common::pod_stats::MAP)?),
        })
    }

    fn from_raw(raw: RawMaps) -> Result<Self, MapsError> {
        fn typed<T: TryFrom<Map, Error = MapError>>(
            name: &'static str,
            map: Map,
        ) -> Result<T, MapsError> {
            T::try_from(map).map_err(|source| MapsError::Layout { name, source })
        }
        Ok(Self {
            endpoints: typed(maps::ENDPOINTS, raw.endpoints)?,
            stats: typed(maps::STATS, raw.stats)?,
            routes: typed(maps::ROUTES, raw.routes)?,
            masq: typed(maps::MASQ, raw.masq)?,
            settings: typed(maps::SETTINGS, raw.settings)?,
            conntrack: typed(maps::CONNTRACK, raw.conntrack)?,
            revnat: typed(maps::REVNAT, raw.revnat)?,
            lb: LbMaps::from_raw(raw.lb)?,
            pod_stats: typed(netpath_common::pod_stats::MAP, raw.pod_stats)?,
        })
    }

    /// The load balancer's maps (frontends, backends, Maglev, affinity,
    /// prefilter).
    pub fn lb(&self) -> &LbMaps {
        &self.lb
    }

    /// The load balancer's maps, to change.
    pub fn lb_mut(&mut self) -> &mut LbMaps {
        &mut self.lb
    }

    /// Adds or replaces the endpoint of a local pod.
    /// Its per-pod counters are created with it (zero, or kept when the
    /// veth already has them).
    pub fn upsert_endpoint(&mut self, addr: Ipv4Addr, ep: Endpoint) -> Result<(), MapsError> {
        self.endpoints
            .insert(key(addr), ep, 0)
            .map_err(|source| MapsError::Op {
                op: "insert",
                name: maps::ENDPOINTS,
                source,
            })?;
        super::pod_stats::create(&mut self.pod_stats, ep.ifindex)
    }

    /// Removes a local pod's endpoint and its per-pod counters; absent is
    /// fine.
    pub fn remove_endpoint(&mut self, addr: Ipv4Addr) -> Result<(), MapsError> {
        if let Ok(ep) = self.endpoints.get(&key(addr), 0) {
            super::pod_stats::remove(&mut self.pod_stats, ep.ifindex)?;
        }
        ignore_absent(self.endpoints.remove(&key(addr)), "remove", maps::ENDPOINTS)
    }

    /// Every endpoint, by address.
    pub fn endpoints(&self) -> Result<BTreeMap<Ipv4Addr, Endpoint>, MapsError> {
        endpoints_of(&self.endpoints)
    }

    /// Every endpoint of the instance pinned at `pins`, from the endpoint
    /// map's pin alone: the pods' health does not depend on the other maps,
    /// whose pins an upgrade to new layouts has not made yet (opening every
    /// map, as [`NodeMaps::open_pinned`] does, would fail then, and every
    /// pod would look broken and be recreated, losing its connections).
    pub fn pinned_endpoints(pins: &PinDir) -> Result<BTreeMap<Ipv4Addr, Endpoint>, MapsError> {
        let path = pins.map(maps::ENDPOINTS);
        let data =
            MapData::from_pin(&path).map_err(|source| MapsError::OpenPinned { path, source })?;
        let map: HashMap<MapData, EndpointKey, Endpoint> = HashMap::try_from(Map::HashMap(data))
            .map_err(|source| MapsError::Layout {
                name: maps::ENDPOINTS,
                source,
            })?;
        endpoints_of(&map)
    }

    /// Every counter, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>, MapsError> {
        Stat::ALL
            .iter()
            .map(|&stat| Ok((stat, self.stat(stat)?)))
            .collect()
    }

    /// One counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> Result<Counter, MapsError> {
        let per_cpu = self
            .stats
            .get(&(stat as u32), 0)
            .map_err(|source| MapsError::Op {
                op: "read",
                name: maps::STATS,
                source,
            })?;
        Ok(per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
            packets: acc.packets + c.packets,
            bytes: acc.bytes + c.bytes,
        }))
    }
}

impl NodeMaps {
    /// Makes the route map hold exactly `routes` (prefix → next hop).
    pub fn sync_routes(&mut self, routes: &[(Ipv4Net, RouteNextHop)]) -> Result<(), MapsError> {
        sync_lpm(&mut self.routes, maps::ROUTES, routes)
    }

    /// The declared routes.
    pub fn routes(&self) -> Result<Vec<(Ipv4Net, RouteNextHop)>, MapsError> {
        dump_lpm(&self.routes, maps::ROUTES)
    }

    /// Makes the masquerade map hold exactly `rules` (source prefix → rule;
    /// the rule's `ifindex` is part of the key).
    pub fn sync_masq(&mut self, rules: &[(Ipv4Net, MasqRule)]) -> Result<(), MapsError> {
        let name = maps::MASQ;
        let have = self.masq()?;
        for (net, rule) in rules {
            if !have.contains(&(*net, *rule)) {
                self.masq
                    .insert(&masq_key(net, rule.ifindex), *rule, 0)
                    .map_err(|source| MapsError::Op {
                        op: "insert",
                        name,
                        source,
                    })?;
            }
        }
        for (net, rule) in have {
            if !rules
                .iter()
                .any(|(n, r)| *n == net && r.ifindex == rule.ifindex)
            {
                ignore_absent(
                    self.masq.remove(&masq_key(&net, rule.ifindex)),
                    "remove",
                    name,
                )?;
            }
        }
        Ok(())
    }

    /// The masquerade rules.
    pub fn masq(&self) -> Result<Vec<(Ipv4Net, MasqRule)>, MapsError> {
        let entries = collect(self.masq.iter(), maps::MASQ)?;
        let mut out: Vec<_> = entries
            .into_iter()
            .filter_map(|(k, rule)| {
                let prefix = k.prefix_len().checked_sub(MasqKey::IFINDEX_BITS)?;
                let net = Ipv4Net::new(Ipv4Addr::from(k.data().saddr), u8::try_from(prefix).ok()?)
                    .ok()?;
                Some((net, rule))
            })
            .collect();
        out.sort_by_key(|(n, r)| (r.ifindex, *n));
        Ok(out)
    }

    /// Writes the node settings.
    pub fn set_settings(&mut self, settings: NodeSettings) -> Result<(), MapsError> {
        self.settings
            .set(0, settings, 0)
            .map_err(|source| MapsError::Op {
                op: "write",
                name: maps::SETTINGS,
                source,
            })
    }

    /// The node settings.
    pub fn settings(&self) -> Result<NodeSettings, MapsError> {
        self.settings.get(&0, 0).map_err(|source| MapsError::Op {
            op: "read",
            name: maps::SETTINGS,
            source,
        })
    }

    /// Every tracked connection (one bounded walk: see [`bounded_walk`]).
    pub fn conntrack(&self) -> Result<Vec<(CtKey, CtEntry)>, MapsError> {
        bounded_walk(&self.conntrack, maps::CONNTRACK)
    }

    /// Every reverse NAT entry (one bounded walk).
    pub fn revnat(&self) -> Result<Vec<(CtKey, RevNat)>, MapsError> {
        bounded_walk(&self.revnat, maps::REVNAT)
    }

    /// One connection, if present.
    pub fn conntrack_entry(&self, key: &CtKey) -> Result<Option<CtEntry>, MapsError> {
        lookup(self.conntrack.get(key, 0), maps::CONNTRACK)
    }

    /// One reverse NAT entry, if present.
    pub fn revnat_entry(&self, key: &CtKey) -> Result<Option<RevNat>, MapsError> {
        lookup(self.revnat.get(key, 0), maps::REVNAT)
    }

    /// Inserts a reverse NAT entry only if its key is free (`BPF_NOEXIST`,
    /// the datapath's claim); `false` when it exists.
    pub fn claim_revnat(&mut self, key: CtKey, entry: RevNat) -> Result<bool, MapsError> {
        match self.revnat.insert(key, entry, BPF_NOEXIST) {
            Ok(()) => Ok(true),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => {
                Ok(false)
            }
            Err(source) => Err(MapsError::Op {
                op: "insert",
                name: maps::REVNAT,
                source,
            }),
        }
    }

    /// Adds a connection (tests and benchmarks fill the table with it).
    pub fn insert_conntrack(&mut self, key: CtKey, entry: CtEntry) -> Result<(), MapsError> {
        self.conntrack
            .insert(key, entry, 0)
            .map_err(|source| MapsError::Op {
                op: "insert",
                name: maps::CONNTRACK,
                source,
            })
    }

    /// Adds a reverse NAT entry.
    pub fn insert_revnat(&mut self, key: CtKey, entry: RevNat) -> Result<(), MapsError> {
        self.revnat
            .insert(key, entry, 0)
            .map_err(|source| MapsError::Op {
                op: "insert",
                name: maps::REVNAT,
                source,
            })
    }

    /// Removes a connection; absent is fine.
    pub fn remove_conntrack(&mut self, key: &CtKey) -> Result<(), MapsError> {
        ignore_absent(self.conntrack.remove(key), "remove", maps::CONNTRACK)
    }

    /// Removes a reverse NAT entry; absent is fine.
    pub fn remove_revnat(&mut self, key: &CtKey) -> Result<(), MapsError> {
        ignore_absent(self.revnat.remove(key), "remove", maps::REVNAT)
    }
}

pub(crate) fn ignore_absent(
    res: Result<(), MapError>,
    op: &'static str,
    name: &'static str,
) -> Result<(), MapsError> {
    match res {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(()),
        Err(source) => Err(MapsError::Op { op, name, source }),
    }
}

/// Every entry of a hash map that the datapath changes while we read it.
///
/// `BPF_MAP_GET_NEXT_KEY` restarts from the first bucket when the key it
/// continues from was deleted meanwhile (an LRU eviction, an expired entry
/// replaced), so a plain walk of a churning map can last forever or return
/// entries many times. This walk takes at most twice the map's capacity
/// steps and returns each key once, with the value read at that moment; an
/// entry that appeared or vanished during the walk may be missing, which a
/// listing or a garbage collector (that re-checks before it deletes) can
/// live with. aya 0.14 does not expose `BPF_MAP_LOOKUP_BATCH`, which would
/// walk bucket by bucket.
fn bounded_walk<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError>
where
    K: aya::Pod + Eq + std::hash::Hash,
    V: aya::Pod,
{
    use aya::maps::IterableMap as _;
    let capacity = map
        .map()
        .info()
        .map_or(maps::CONNTRACK_DEFAULT_MAX, |i| i.max_entries());
    let steps = capacity.saturating_mul(2) as usize;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for key in map.keys().take(steps) {
        let key = key.map_err(|source| MapsError::Op {
            op: "walk",
            name,
            source,
        })?;
        if !seen.insert(key) {
            continue;
        }
        if let Some(value) = lookup(map.get(&key, 0), name)? {
            out.push((key, value));
        }
    }
    Ok(out)
}

pub(super) fn lookup<V>(
    res: Result<V, MapError>,
    name: &'static str,
) -> Result<Option<V>, MapsError> {
    match res {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(source) => Err(MapsError::Op {
            op: "read",
            name,
            source,
        }),
    }
}

pub(crate) fn collect<K, V>(
    iter: impl Iterator<Item = Result<(K, V), MapError>>,
    name: &'static str,
) -> Result<Vec<(K, V)>, MapsError> {
    iter.collect::<Result<_, _>>()
        .map_err(|source| MapsError::Op {
            op: "iterate",
            name,
            source,
        })
}

fn masq_key(net: &Ipv4Net, ifindex: u32) -> LpmKey<MasqKey> {
    LpmKey::new(
        MasqKey::IFINDEX_BITS + u32::from(net.prefix_len()),
        MasqKey::new(ifindex, net.network().octets()),
    )
}

fn lpm_key(net: &Ipv4Net) -> LpmKey<RouteKey> {
    LpmKey::new(
        u32::from(net.prefix_len()),
        RouteKey {
            addr: net.network().octets(),
        },
    )
}

pub(super) fn sync_lpm<V: aya::Pod + PartialEq>(
    map: &mut LpmTrie<MapData, RouteKey, V>,
    name: &'static str,
    want: &[(Ipv4Net, V)],
) -> Result<(), MapsError> {
    let have = dump_lpm(map, name)?;
    for (net, value) in want {
        if !have.iter().any(|(n, v)| n == net && v == value) {
            map.insert(&lpm_key(net), *value, 0)
                .map_err(|source| MapsError::Op {
                    op: "insert",
                    name,
                    source,
                })?;
        }
    }
    for (net, _) in have {
        if !want.iter().any(|(n, _)| *n == net) {
            ignore_absent(map.remove(&lpm_key(&net)), "remove", name)?;
        }
    }
    Ok(())
}

pub(super) fn dump_lpm<V: aya::Pod>(
    map: &LpmTrie<MapData, RouteKey, V>,
    name: &'static str,
) -> Result<Vec<(Ipv4Net, V)>, MapsError> {
    let entries = collect(map.iter(), name)?;
    Ok(entries
        .into_iter()
        .filter_map(|(k, v)| {
            let prefix = u8::try_from(k.prefix_len()).ok()?;
            Ipv4Net::new(Ipv4Addr::from(k.data().addr), prefix)
                .ok()
                .map(|n| (n, v))
        })
        .collect())
}

fn key(addr: Ipv4Addr) -> EndpointKey {
    EndpointKey {
        addr: addr.octets(),
    }
}

/// Every endpoint of `map`, by address.
fn endpoints_of(
    map: &HashMap<MapData, EndpointKey, Endpoint>,
) -> Result<BTreeMap<Ipv4Addr, Endpoint>, MapsError> {
    map.iter()
        .map(|r| r.map(|(k, v)| (Ipv4Addr::from(k.addr), v)))
        .collect::<Result<_, _>>()
        .map_err(|source| MapsError::Op {
            op: "iterate",
            name: maps::ENDPOINTS,
            source,
        })
}
