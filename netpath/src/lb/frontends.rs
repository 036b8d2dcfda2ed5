//! Frontends as the controller reasons about them: what the load
//! balancer's maps hold ([`read`]) and what they should hold ([`assign`]),
//! both as one [`LbState`], so that [`super::plan`] can diff them.
//!
//! Identity is stable: a frontend that stays keeps its id, and a backend
//! that stays keeps its index (the maps are the source of truth, read at
//! every apply), so updating a service never moves the live flows of the
//! backends that remain: their conntrack entries name the backend's address,
//! affinity entries its index, and the Maglev table is rebuilt with
//! [`maglev::table_after`], which keeps every surviving slot when a backend
//! leaves.
//!
//! The cost of an apply follows what changes, not how many services there
//! are: [`read`] reads every frontend and backend and the Maglev map's
//! keys (which tables are whole) but no Maglev chunk ([`Tables::Unread`]),
//! and [`read_tables`] then reads only the tables of
//! the frontends whose backends change ([`changing`]); an unchanged
//! frontend keeps its table untouched ([`Maglev::InMap`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{Ipv4Addr, SocketAddrV4},
};

use netpath_common::{
    Frontend, FrontendKey, frontend_flags,
    lb::{MaglevKey, maglev_chunks},
};

/// The highest backend index (a Maglev slot holds 16 bits).
pub const MAX_BACKEND_INDEX: u32 = u16::MAX as u32;

use super::maglev::{self, Member};
use crate::{
    config::L4Proto,
    config::Target,
    datapath::{MapsError, lb_maps::LbMaps},
    resolve::{DesiredNode, DesiredTarget},
};

/// Where clients send: an address, port and protocol (a frontend map key,
/// ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Vip {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: L4Proto,
}

impl Vip {
    /// The frontend map key.
    pub fn key(&self) -> FrontendKey {
        crate::datapath::lb_maps::frontend_key(self.addr, self.port, self.proto.number())
    }

    /// From a frontend map key (`None` for a protocol netpath never writes).
    pub fn from_key(key: &FrontendKey) -> Option<Self> {
        Some(Self {
            addr: Ipv4Addr::from(key.addr),
            port: key.port,
            proto: L4Proto::from_number(key.proto)?,
        })
    }
}

/// `10.96.0.10:80/tcp`.
impl fmt::Display for Vip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.addr, self.port, self.proto)
    }
}

/// A frontend's Maglev table, as far as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Maglev {
    /// No table (a frontend without backends, or one whose table is
    /// missing from the map).
    Absent,
    /// In the map, not read: the frontend's backends do not change, so
    /// neither does its table.
    InMap,
    /// These slots: a backend index each.
    Slots(Vec<u32>),
}

impl Maglev {
    /// The slots, when known (empty otherwise).
    pub fn slots(&self) -> &[u32] {
        match self {
            Self::Slots(t) => t,
            Self::Absent | Self::InMap => &[],
        }
    }

    /// Whether there is a table (known or not).
    pub fn is_present(&self) -> bool {
        !matches!(self, Self::Absent)
    }
}

/// One frontend: its map value's parts, its backends by index and its
/// Maglev table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendState {
    pub id: u32,
    /// [`frontend_flags`] bits.
    pub flags: u8,
    pub affinity_timeout_secs: u32,
    /// Backend index → backend.
    pub backends: BTreeMap<u32, SocketAddrV4>,
    /// Its Maglev table; [`Maglev::Absent`] without backends.
    pub maglev: Maglev,
    /// The table's size the frontend value names (0: none).
    pub maglev_size: u32,
    /// The table's generation the frontend value names: its chunks in
    /// `maglev_v3`. A changed table gets the next one (see
    /// [`crate::datapath::lb_maps`] for the swap).
    pub maglev_gen: u16,
}

impl FrontendState {
    /// The frontend map value.
    pub fn value(&self) -> Frontend {
        Frontend {
            id: self.id,
            backends: u16::try_from(self.backends.len()).unwrap_or(u16::MAX),
            flags: self.flags,
            _pad: 0,
            affinity_timeout_secs: self.affinity_timeout_secs,
            maglev_size: self.maglev_size,
            maglev_gen: self.maglev_gen,
            _pad2: 0,
        }
    }

    /// The Maglev members: each backend named by its `address:port`.
    pub fn members(&self) -> Vec<Member> {
        self.backends
            .iter()
            .map(|(&index, b)| Member {
                name: b.to_string(),
                index,
            })
            .collect()
    }
}

/// Every frontend of a node.
pub type LbState = BTreeMap<Vip, FrontendState>;

/// Which Maglev tables [`read`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tables {
    /// Every one ([`Maglev::Slots`]): what `netpath service` shows.
    All,
    /// None ([`Maglev::InMap`] where there is one): what an apply starts
    /// from, before [`read_tables`] reads the ones it changes.
    Unread,
}

/// What the load balancer's maps hold.
pub fn read(maps: &LbMaps, tables: Tables) -> Result<LbState, MapsError> {
    let mut backends: BTreeMap<u32, BTreeMap<u32, SocketAddrV4>> = BTreeMap::new();
    for ((id, index), b) in maps.backends()? {
        backends
            .entry(id)
            .or_default()
            .insert(index, SocketAddrV4::new(Ipv4Addr::from(b.addr), b.port));
    }
    // Which tables are whole in the map: a walk of the chunk keys, no
    // chunk read. A frontend whose table is incomplete gets a fresh one.
    let chunks = maps.maglev_keys()?;
    let whole = |fe: &Frontend| {
        fe.maglev_size != 0
            && (0..maglev_chunks(fe.maglev_size)).all(|c| {
                chunks.contains(&MaglevKey {
                    frontend: fe.id,
                    generation: fe.maglev_gen,
                    chunk: u16::try_from(c).unwrap_or(u16::MAX),
                })
            })
    };
    let mut out = LbState::new();
    for (key, fe) in maps.frontends()? {
        let Some(vip) = Vip::from_key(&key) else {
            continue;
        };
        let maglev = match tables {
            _ if !whole(&fe) => Maglev::Absent,
            Tables::Unread => Maglev::InMap,
            Tables::All => maps.maglev_of(&fe)?.map_or(Maglev::Absent, Maglev::Slots),
        };
        out.insert(
            vip,
            FrontendState {
                id: fe.id,
                flags: fe.flags,
                affinity_timeout_secs: fe.affinity_timeout_secs,
                backends: backends.remove(&fe.id).unwrap_or_default(),
                maglev,
                maglev_size: fe.maglev_size,
                maglev_gen: fe.maglev_gen,
            },
        );
    }
    Ok(out)
}

/// The frontends of `current` whose backends `specs` change (their
/// addresses differ): the ones whose Maglev table an apply rebuilds from
/// the one in the map.
pub fn changing(specs: &[FrontendSpec], current: &LbState) -> Vec<Vip> {
    specs
        .iter()
        .filter(|spec| {
            current.get(&spec.vip).is_some_and(|have| {
                let had: BTreeSet<SocketAddrV4> = have.backends.values().copied().collect();
                let want: BTreeSet<SocketAddrV4> =
                    spec.backends.iter().map(|b| b.address).collect();
                had != want
            })
        })
        .map(|spec| spec.vip)
        .collect()
}

/// Reads the Maglev tables of `vips` into `state` (those it has as
/// [`Maglev::InMap`]).
pub fn read_tables(maps: &LbMaps, state: &mut LbState, vips: &[Vip]) -> Result<(), MapsError> {
    for vip in vips {
        if let Some(fe) = state.get_mut(vip)
            && fe.maglev == Maglev::InMap
        {
            fe.maglev = maps
                .maglev(fe.id, fe.maglev_gen, fe.maglev_size)?
                .map_or(Maglev::Absent, Maglev::Slots);
        }
    }
    Ok(())
}

/// Who a frontend is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Owner {
    /// A `[[services]]` entry, by name.
    Service(String),
    /// A `[[port_forwards]]` entry, by position (from 1).
    PortForward(usize),
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(name) => write!(f, "service {name}"),
            Self::PortForward(n) => write!(f, "port-forward {n}"),
        }
    }
}

/// One backend as wanted: where it is, and what the configuration called
/// it (a pod name, or the address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantedBackend {
    pub address: SocketAddrV4,
    pub label: String,
}

/// One frontend as wanted, before it has an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrontendSpec {
    pub vip: Vip,
    pub owner: Owner,
    pub flags: u8,
    pub affinity_timeout_secs: u32,
    pub backends: Vec<WantedBackend>,
}

/// What the node's addresses are, for the frontends that depend on them.
#[derive(Debug, Clone, Default)]
pub struct NodeAddresses {
    /// Pod name → its address (the leases of this apply).
    pub pods: BTreeMap<String, Ipv4Addr>,
    /// Where a port-forward without `address` listens: every address of
    /// the uplink, and the pods' gateway.
    pub wildcard: Vec<Ipv4Addr>,
}

/// Why a frontend cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{owner}: pod '{pod}' has no address (it is not in this apply's leases)")]
    NoPodAddress { owner: Owner, pod: String },
    #[error(
        "{owner} listens on every node address, but the node has none (no uplink address, \
         no gateway); set `address` or give the uplink an address"
    )]
    NoWildcardAddress { owner: Owner },
}

fn backend(
    owner: &Owner,
    t: &DesiredTarget,
    addrs: &NodeAddresses,
) -> Result<WantedBackend, SpecError> {
    Ok(match &t.target {
        Target::Pod(pod) => WantedBackend {
            address: SocketAddrV4::new(
                *addrs.pods.get(pod).ok_or_else(|| SpecError::NoPodAddress {
                    owner: owner.clone(),
                    pod: pod.clone(),
                })?,
                t.port,
            ),
            label: pod.clone(),
        },
        Target::Address(a) => WantedBackend {
            address: *a,
            label: a.to_string(),
        },
    })
}

/// The frontends `desired` asks for, with the node's `addrs` filled in: one
/// per service, one per port-forward address (a forward without `address`
/// listens on each of `addrs.wildcard`).
pub fn specs(desired: &DesiredNode, addrs: &NodeAddresses) -> Result<Vec<FrontendSpec>, SpecError> {
    let mut out = Vec::new();
    for (i, pf) in desired.port_forwards.iter().enumerate() {
        let owner = Owner::PortForward(i + 1);
        let to = backend(&owner, &pf.to, addrs)?;
        let listen = match pf.address {
            Some(a) => vec![a],
            None if addrs.wildcard.is_empty() => {
                return Err(SpecError::NoWildcardAddress { owner });
            }
            None => addrs.wildcard.clone(),
        };
        for addr in listen {
            out.push(FrontendSpec {
                vip: Vip {
                    addr,
                    port: pf.port,
                    proto: pf.proto,
                },
                owner: owner.clone(),
                flags: frontend_flags::PORT_FORWARD,
                affinity_timeout_secs: 0,
                backends: vec![to.clone()],
            });
        }
    }
    for svc in &desired.services {
        let owner = Owner::Service(svc.name.clone());
        let backends = svc
            .backends
            .iter()
            .map(|t| backend(&owner, t, addrs))
            .collect::<Result<Vec<_>, _>>()?;
        out.push(FrontendSpec {
            vip: Vip {
                addr: svc.vip,
                port: svc.port,
                proto: svc.proto,
            },
            owner,
            flags: if svc.affinity_timeout.is_some() {
                frontend_flags::AFFINITY
            } else {
                0
            },
            affinity_timeout_secs: svc.affinity_timeout.unwrap_or(0),
            backends,
        });
    }
    Ok(out)
}

/// The frontends `specs` ask for, with ids and backend indices: a frontend
/// the maps hold (`current`) keeps its id, a backend it has keeps its
/// index; new ones get the lowest free id (from 1) and index (from 0) that
/// no current frontend or backend of that frontend uses, so a frontend
/// removed in the same apply never lends its id to a new one (an index, only
/// when the indices below [`MAX_BACKEND_INDEX`] run out). Maglev tables are
/// rebuilt from the current ones ([`maglev::table_after`]) when the
/// backends change, and kept as they are otherwise.
pub fn assign(specs: &[FrontendSpec], current: &LbState) -> LbState {
    let mut used_ids: BTreeSet<u32> = current.values().map(|f| f.id).collect();
    let mut next_id = 1_u32;
    let mut out = LbState::new();
    for spec in specs {
        let have = current.get(&spec.vip);
        let id = if let Some(h) = have {
            h.id
        } else {
            while used_ids.contains(&next_id) {
                next_id += 1;
            }
            used_ids.insert(next_id);
            next_id
        };
        let backends = indices(spec, have);
        let mut fe = FrontendState {
            id,
            flags: spec.flags,
            affinity_timeout_secs: spec.affinity_timeout_secs,
            backends,
            maglev: Maglev::Absent,
            maglev_size: 0,
            maglev_gen: have.map_or(0, |h| h.maglev_gen),
        };
        let members = fe.members();
        // A table that changes gets the next generation (never the one the
        // frontend names now: that one is not written again); one that
        // stays keeps its generation and size.
        let next = have.map_or(0, |h| h.maglev_gen.wrapping_add(1));
        let (maglev, generation) = match have {
            _ if members.is_empty() => (Maglev::Absent, fe.maglev_gen),
            None => (Maglev::Slots(maglev::table(&members)), next),
            Some(h) => match &h.maglev {
                Maglev::InMap if h.backends == fe.backends => (Maglev::InMap, h.maglev_gen),
                Maglev::Slots(previous) => {
                    let table = maglev::table_after(previous, &members);
                    if table == *previous {
                        (Maglev::Slots(table), h.maglev_gen)
                    } else {
                        (Maglev::Slots(table), next)
                    }
                }
                // Not read (the caller did not expect a change) or missing:
                // a fresh table.
                Maglev::InMap | Maglev::Absent => (Maglev::Slots(maglev::table(&members)), next),
            },
        };
        fe.maglev_size = match (&maglev, have) {
            (Maglev::Slots(t), _) => u32::try_from(t.len()).unwrap_or(u32::MAX),
            (Maglev::InMap, Some(h)) => h.maglev_size,
            (Maglev::InMap | Maglev::Absent, _) => 0,
        };
        fe.maglev = maglev;
        fe.maglev_gen = generation;
        out.insert(spec.vip, fe);
    }
    out
}

/// The backends of `spec` by index: the ones `have` has keep theirs, new
/// ones get the lowest index no current backend uses (or, past
/// [`MAX_BACKEND_INDEX`], the lowest no backend of this apply uses).
fn indices(spec: &FrontendSpec, have: Option<&FrontendState>) -> BTreeMap<u32, SocketAddrV4> {
    let mut backends: BTreeMap<u32, SocketAddrV4> = BTreeMap::new();
    let mut wanted: Vec<SocketAddrV4> = Vec::new();
    for b in &spec.backends {
        if !wanted.contains(&b.address) {
            wanted.push(b.address);
        }
    }
    let mut used_idx: BTreeSet<u32> = BTreeSet::new();
    let mut kept: BTreeSet<SocketAddrV4> = BTreeSet::new();
    if let Some(h) = have {
        let want: BTreeSet<SocketAddrV4> = wanted.iter().copied().collect();
        for (&index, addr) in &h.backends {
            used_idx.insert(index);
            if want.contains(addr) && kept.insert(*addr) {
                backends.insert(index, *addr);
            }
        }
    }
    let mut next_idx = 0_u32;
    for addr in wanted {
        if kept.contains(&addr) {
            continue;
        }
        while used_idx.contains(&next_idx) {
            next_idx += 1;
        }
        if next_idx > MAX_BACKEND_INDEX {
            // Only indices of removed backends are left: reuse the lowest.
            used_idx = backends.keys().copied().collect();
            next_idx = 0;
            while used_idx.contains(&next_idx) {
                next_idx += 1;
            }
        }
        used_idx.insert(next_idx);
        backends.insert(next_idx, addr);
    }
    backends
}
