//! The connection-table invariants (issue 8, item 1), checked on a dump of
//! the maps after every batch, and per delivered reply.
//!
//! Forward map `conntrack` (original tuple → NAT address and port) and
//! reverse map `revnat` (reply tuple → pod address and port) must be one
//! bijection:
//! - `forward-without-reverse`: every forward entry's external tuple
//!   (NAT address/port + peer) has a reverse entry...
//! - `reverse-mismatch`: ...that points back to the forward entry's pod
//!   address and port;
//! - `shared-external-tuple`: no two forward entries share an external
//!   tuple;
//! - `nat-port`, `nat-address`: a NAT port is the pod's own source port or
//!   one of the range, the NAT address one of a rule's;
//! - `delivered-without-forward`: a reply `np_from_uplink` delivered to a
//!   pod belongs to a forward entry with that NAT address and port;
//! - `dropped-but-tracked`: a pod's frame that was dropped neither created
//!   nor advanced its connection.
//!
//! Fragment map `frags` (a datagram → the translation its first fragment
//! got):
//! - `frag-entry`: an entry of a pod's datagram (`frag_dir::FROM_POD`) is
//!   keyed by a pod's address and holds a NAT address; one of a datagram
//!   arriving on the uplink (`FROM_UPLINK`) is keyed by a NAT address and
//!   holds a pod's;
//! - `frag-follow`: a later fragment that was translated got exactly the
//!   translation its datagram's entry holds.
//!
//! ADAPTING (when the conntrack rework lands): this module is the only one
//! that knows the layouts. Change the map names (taken from
//! `netpath_common::maps`), the key/value types and [`reply_tuple`] /
//! [`orig_of_reply`] (how one side's key is made from the other's), and
//! add checks for new maps (fragment tracking) here.

use std::{collections::HashMap as StdHashMap, fmt, net::Ipv4Addr};

use aya::maps::{HashMap, Map, MapData, MapError};
use netpath::datapath::Datapath;
use netpath_common::{
    CtEntry, CtKey, FragEntry, FragKey, RevNat, ct_state, frag_dir, maps, reply_key,
};

use super::{
    oracle::{Delivered, Violation},
    seed::Node,
};
use crate::packet::{IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP};

/// The external (reply) tuple of a forward entry.
pub fn reply_tuple(orig: &CtKey, e: &CtEntry) -> CtKey {
    reply_key(orig, e.nat_addr, e.nat_port)
}

/// The forward key a reverse entry names.
pub fn orig_of_reply(rkey: &CtKey, r: &RevNat) -> CtKey {
    CtKey {
        saddr: r.addr,
        daddr: rkey.saddr,
        sport: r.port,
        dport: rkey.sport,
        proto: rkey.proto,
        _pad: [0; 3],
    }
}

/// Our own handles on the loaded object's connection maps, found through
/// the maps the program uses (names are not unique system-wide: other
/// tests load the same object at the same time).
pub struct Tables {
    pub conntrack: HashMap<MapData, CtKey, CtEntry>,
    pub revnat: HashMap<MapData, CtKey, RevNat>,
    pub frags: HashMap<MapData, FragKey, FragEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TablesError {
    #[error("cannot list the maps of {prog}: {source}")]
    Info {
        prog: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {name} is not used by the loaded programs")]
    Missing { name: &'static str },
    #[error("cannot open map {name}: {source}")]
    Open {
        name: &'static str,
        source: MapError,
    },
    #[error("cannot read map {name}: {source}")]
    Read {
        name: &'static str,
        source: MapError,
    },
}

impl Tables {
    pub fn open(dp: &Datapath) -> Result<Self, TablesError> {
        let mut found: StdHashMap<String, MapData> = StdHashMap::new();
        for (prog, p) in [
            ("np_from_pod", dp.from_pod_program()),
            ("np_from_uplink", dp.from_uplink_program()),
        ] {
            let ids = p
                .info()
                .and_then(|i| i.map_ids())
                .map_err(|source| TablesError::Info { prog, source })?
                .unwrap_or_default();
            for id in ids {
                let Ok(data) = MapData::from_id(id) else {
                    continue;
                };
                let name = data
                    .info()
                    .ok()
                    .and_then(|i| i.name_as_str().map(str::to_owned));
                if let Some(name) = name {
                    found.insert(name, data);
                }
            }
        }
        let mut take = |name: &'static str| {
            found
                .remove(name)
                .map(Map::LruHashMap)
                .ok_or(TablesError::Missing { name })
        };
        let (ct, rev, frags) = (
            take(maps::CONNTRACK)?,
            take(maps::REVNAT)?,
            take(maps::FRAGS)?,
        );
        Ok(Self {
            frags: HashMap::try_from(frags).map_err(|source| TablesError::Open {
                name: maps::FRAGS,
                source,
            })?,
            conntrack: HashMap::try_from(ct).map_err(|source| TablesError::Open {
                name: maps::CONNTRACK,
                source,
            })?,
            revnat: HashMap::try_from(rev).map_err(|source| TablesError::Open {
                name: maps::REVNAT,
                source,
            })?,
        })
    }

    /// Both tables.
    pub fn dump(&self) -> Result<Snapshot, TablesError> {
        let conntrack = self
            .conntrack
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TablesError::Read {
                name: maps::CONNTRACK,
                source,
            })?;
        let revnat = self
            .revnat
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TablesError::Read {
                name: maps::REVNAT,
                source,
            })?;
        let frags = self
            .frags
            .iter()
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| TablesError::Read {
                name: maps::FRAGS,
                source,
            })?;
        Ok(Snapshot {
            conntrack,
            revnat,
            frags,
        })
    }

    /// `frag-follow`: later fragment `input` (dir `dir`) was translated to
    /// `addr` (the new source from a pod, the pod on the uplink); its
    /// datagram's entry must say so.
    pub fn check_followed(&self, input: &[u8], dir: u8, addr: Ipv4Addr) -> Option<Violation> {
        let v = super::frame::Ipv4View::parse(input)?;
        let id = u16::from_be_bytes([input[18], input[19]]);
        let key = FragKey {
            saddr: v.src.octets(),
            daddr: v.dst.octets(),
            id,
            proto: v.proto,
            dir,
        };
        let got = self.frags.get(&key, 0).ok().map(|e| Ipv4Addr::from(e.addr));
        (got != Some(addr)).then(|| Violation {
            check: "frag-follow",
            detail: format!(
                "later fragment {} → {} id {id:#06x} proto {} (dir {dir}) translated to {addr}, \
                 its datagram's entry says {got:?}",
                v.src, v.dst, v.proto
            ),
        })
    }

    /// Empties both tables (the harness's garbage collection between
    /// epochs of a run that must not evict); pairs are removed together.
    pub fn flush(&mut self, snap: &Snapshot) {
        for (k, _) in &snap.conntrack {
            let _ = self.conntrack.remove(k);
        }
        for (k, _) in &snap.revnat {
            let _ = self.revnat.remove(k);
        }
    }

    /// `delivered-without-forward`, for one delivered reply.
    pub fn check_delivered(&self, d: &Delivered) -> Option<Violation> {
        let orig = CtKey {
            saddr: d.pod.0.octets(),
            daddr: d.peer.0.octets(),
            sport: d.pod.1,
            dport: if d.proto == IPPROTO_ICMP { 0 } else { d.peer.1 },
            proto: d.proto,
            _pad: [0; 3],
        };
        match self.conntrack.get(&orig, 0) {
            Ok(e) if Ipv4Addr::from(e.nat_addr) == d.nat.0 && e.nat_port == d.nat.1 => None,
            Ok(e) => Some(Violation {
                check: "delivered-without-forward",
                detail: format!(
                    "reply {}:{} → {}:{} delivered to {} whose connection is translated to \
                     {}:{}",
                    d.peer.0,
                    d.peer.1,
                    d.nat.0,
                    d.nat.1,
                    Tuple(&orig),
                    Ipv4Addr::from(e.nat_addr),
                    e.nat_port
                ),
            }),
            Err(_) => Some(Violation {
                check: "delivered-without-forward",
                detail: format!(
                    "reply {}:{} → {}:{} (proto {}) delivered to {}:{}, which has no connection {}",
                    d.peer.0,
                    d.peer.1,
                    d.nat.0,
                    d.nat.1,
                    d.proto,
                    d.pod.0,
                    d.pod.1,
                    Tuple(&orig)
                ),
            }),
        }
    }
}

/// The connection a pod's frame belongs to, and its packet count before
/// the frame ran (see [`Tables::check_dropped`]).
pub struct Probe {
    key: CtKey,
    packets_before: Option<u64>,
}

impl Tables {
    /// Notes the connection of `frame` (a pod's TCP/UDP/ICMP echo frame)
    /// before it runs.
    pub fn probe(&self, frame: &[u8]) -> Option<Probe> {
        let v = super::frame::Ipv4View::parse(frame)?;
        let (sport, dport) = v.ports(frame)?;
        if v.proto == IPPROTO_ICMP && v.segment(frame)[0] != 8 {
            return None;
        }
        let key = CtKey {
            saddr: v.src.octets(),
            daddr: v.dst.octets(),
            sport,
            dport,
            proto: v.proto,
            _pad: [0; 3],
        };
        let packets_before = self.conntrack.get(&key, 0).ok().map(|e| e.packets_orig);
        Some(Probe {
            key,
            packets_before,
        })
    }

    /// `dropped-but-tracked`: a frame the program dropped must not have
    /// created or advanced its connection (netfilter only confirms a
    /// connection when its packet leaves).
    pub fn check_dropped(&self, p: &Probe) -> Option<Violation> {
        let after = self.conntrack.get(&p.key, 0).ok()?;
        if p.packets_before == Some(after.packets_orig) {
            return None;
        }
        Some(Violation {
            check: "dropped-but-tracked",
            detail: format!(
                "{} was dropped but its connection was {} (NAT {}:{}, {})",
                Tuple(&p.key),
                if p.packets_before.is_none() {
                    "created"
                } else {
                    "advanced"
                },
                Ipv4Addr::from(after.nat_addr),
                after.nat_port,
                ct_state::name(after.state)
            ),
        })
    }
}

/// A dump of both tables.
pub struct Snapshot {
    pub conntrack: Vec<(CtKey, CtEntry)>,
    pub revnat: Vec<(CtKey, RevNat)>,
    pub frags: Vec<(FragKey, FragEntry)>,
}

/// The forward ↔ reverse pairing checks (the ones the current design is
/// known to break under LRU eviction).
pub const PAIRING: [&str; 4] = [
    "forward-without-reverse",
    "reverse-mismatch",
    "shared-external-tuple",
    "delivered-without-forward",
];

/// Checks every invariant on `snap`.
pub fn check(node: &Node, snap: &Snapshot) -> Vec<Violation> {
    let mut out = Vec::new();
    let rev: StdHashMap<CtKey, RevNat> = snap.revnat.iter().copied().collect();
    let mut external: StdHashMap<CtKey, CtKey> = StdHashMap::new();
    let now = netpath::conntrack::now_ns();
    for (k, e) in &snap.conntrack {
        let rk = reply_tuple(k, e);
        // An expired connection is dead: its pairing no longer matters (the
        // next packet of its tuple replaces it).
        let live = !node.settings.ct_expired(e, now);
        match rev.get(&rk).filter(|_| live) {
            _ if !live => {}
            None => out.push(Violation {
                check: "forward-without-reverse",
                detail: format!(
                    "{} [{}] → NAT {}:{} has no reverse entry {}",
                    Tuple(k),
                    ct_state::name(e.state),
                    Ipv4Addr::from(e.nat_addr),
                    e.nat_port,
                    Tuple(&rk)
                ),
            }),
            Some(r) if r.addr != k.saddr || r.port != k.sport => out.push(Violation {
                check: "reverse-mismatch",
                detail: format!(
                    "{} → NAT {}:{}: its reverse entry {} points to {}:{}",
                    Tuple(k),
                    Ipv4Addr::from(e.nat_addr),
                    e.nat_port,
                    Tuple(&rk),
                    Ipv4Addr::from(r.addr),
                    r.port
                ),
            }),
            Some(_) => {}
        }
        if let Some(other) = live.then(|| external.insert(rk, *k)).flatten() {
            out.push(Violation {
                check: "shared-external-tuple",
                detail: format!(
                    "{} and {} both leave as {}",
                    Tuple(&other),
                    Tuple(k),
                    Tuple(&rk)
                ),
            });
        }
        if e.nat_port != k.sport && !node.in_port_range(e.nat_port) {
            out.push(Violation {
                check: "nat-port",
                detail: format!(
                    "{} got NAT port {}: neither its own nor in the range",
                    Tuple(k),
                    e.nat_port
                ),
            });
        }
        if !node.is_nat_addr(Ipv4Addr::from(e.nat_addr)) {
            out.push(Violation {
                check: "nat-address",
                detail: format!(
                    "{} got NAT address {}",
                    Tuple(k),
                    Ipv4Addr::from(e.nat_addr)
                ),
            });
        }
        if !matches!(k.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_ICMP) {
            out.push(Violation {
                check: "nat-address",
                detail: format!("{} has a protocol netpath does not translate", Tuple(k)),
            });
        }
    }
    for (k, e) in &snap.frags {
        let (ka, kd, addr) = (
            Ipv4Addr::from(k.saddr),
            Ipv4Addr::from(k.daddr),
            Ipv4Addr::from(e.addr),
        );
        let ok = match k.dir {
            frag_dir::FROM_POD => node.pod(ka).is_some() && node.is_nat_addr(addr),
            frag_dir::FROM_UPLINK => node.is_nat_addr(kd) && node.pod(addr).is_some(),
            _ => false,
        };
        if !ok {
            out.push(Violation {
                check: "frag-entry",
                detail: format!(
                    "fragment entry {ka} → {kd} id {:#06x} proto {} dir {} holds {addr}",
                    k.id, k.proto, k.dir
                ),
            });
        }
    }
    // A reverse entry without its connection, or whose connection now maps
    // elsewhere, is a claim that is not proven dead yet (the LRU evicted
    // its connection, or the connection was re-created): allowed by the
    // design (nat.rs, I4), reclaimed by a reply, a claim or the GC; never
    // followed while its connection maps elsewhere (checked per frame by
    // `delivered-without-forward`).
    out
}

/// `proto src:sport → dst:dport`.
pub struct Tuple<'a>(pub &'a CtKey);

impl fmt::Display for Tuple<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let k = self.0;
        let proto = match k.proto {
            IPPROTO_TCP => "tcp",
            IPPROTO_UDP => "udp",
            IPPROTO_ICMP => "icmp",
            _ => "?",
        };
        write!(
            f,
            "{proto} {}:{} → {}:{}",
            Ipv4Addr::from(k.saddr),
            k.sport,
            Ipv4Addr::from(k.daddr),
            k.dport
        )
    }
}
