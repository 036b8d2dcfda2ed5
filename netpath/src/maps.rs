//! Typed access to the datapath's maps, from a freshly loaded object or from
//! the pins of a running instance (what `netpath stats` and friends use).

use std::{collections::BTreeMap, net::Ipv4Addr, path::PathBuf};

use aya::{
    Ebpf,
    maps::{HashMap, Map, MapData, MapError, PerCpuArray},
};
use netpath_common::{Counter, Endpoint, EndpointKey, Stat, maps};

use crate::datapath::PinDir;

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
}

impl NodeMaps {
    /// Takes the maps out of a loaded object (after its programs are loaded:
    /// the programs keep their own references).
    pub fn from_ebpf(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        let mut take = |name: &'static str| ebpf.take_map(name).ok_or(MapsError::Missing { name });
        let endpoints = take(maps::ENDPOINTS)?;
        let stats = take(maps::STATS)?;
        Self::from_maps(endpoints, stats)
    }

    /// Opens the maps pinned by a running instance.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        let open = |name: &'static str| {
            let path = pins.map(name);
            MapData::from_pin(&path).map_err(|source| MapsError::OpenPinned { path, source })
        };
        let endpoints = Map::HashMap(open(maps::ENDPOINTS)?);
        let stats = Map::PerCpuArray(open(maps::STATS)?);
        Self::from_maps(endpoints, stats)
    }

    fn from_maps(endpoints: Map, stats: Map) -> Result<Self, MapsError> {
        Ok(Self {
            endpoints: HashMap::try_from(endpoints).map_err(|source| MapsError::Layout {
                name: maps::ENDPOINTS,
                source,
            })?,
            stats: PerCpuArray::try_from(stats).map_err(|source| MapsError::Layout {
                name: maps::STATS,
                source,
            })?,
        })
    }

    /// Adds or replaces the endpoint of a local pod.
    pub fn upsert_endpoint(&mut self, addr: Ipv4Addr, ep: Endpoint) -> Result<(), MapsError> {
        self.endpoints
            .insert(key(addr), ep, 0)
            .map_err(|source| MapsError::Op {
                op: "insert",
                name: maps::ENDPOINTS,
                source,
            })
    }

    /// Removes a local pod's endpoint; absent is fine.
    pub fn remove_endpoint(&mut self, addr: Ipv4Addr) -> Result<(), MapsError> {
        match self.endpoints.remove(&key(addr)) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
                Ok(())
            }
            Err(source) => Err(MapsError::Op {
                op: "remove",
                name: maps::ENDPOINTS,
                source,
            }),
        }
    }

    /// Every endpoint, by address.
    pub fn endpoints(&self) -> Result<BTreeMap<Ipv4Addr, Endpoint>, MapsError> {
        self.endpoints
            .iter()
            .map(|r| r.map(|(k, v)| (Ipv4Addr::from(k.addr), v)))
            .collect::<Result<_, _>>()
            .map_err(|source| MapsError::Op {
                op: "iterate",
                name: maps::ENDPOINTS,
                source,
            })
    }

    /// Every counter, summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Stat, Counter)>, MapsError> {
        Stat::ALL
            .iter()
            .map(|&stat| {
                let per_cpu =
                    self.stats
                        .get(&(stat as u32), 0)
                        .map_err(|source| MapsError::Op {
                            op: "read",
                            name: maps::STATS,
                            source,
                        })?;
                let total = per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                    packets: acc.packets + c.packets,
                    bytes: acc.bytes + c.bytes,
                });
                Ok((stat, total))
            })
            .collect()
    }

    /// One counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> Result<Counter, MapsError> {
        Ok(self
            .stats()?
            .into_iter()
            .find(|(s, _)| *s == stat)
            .map(|(_, c)| c)
            .unwrap_or_default())
    }
}

fn key(addr: Ipv4Addr) -> EndpointKey {
    EndpointKey {
        addr: addr.octets(),
    }
}
