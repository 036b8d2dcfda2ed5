//! The peer map (`peers_v1`, see `netpath_common::peer` for its
//! invariants): typed access, and a sync that changes only the entries
//! that differ (adding or removing a peer touches that peer's entry only).

use std::net::Ipv4Addr;

use aya::maps::{LpmTrie, Map, MapData, lpm_trie::Key as LpmKey};
use ipnet::Ipv4Net;
use netpath_common::peer::{MAP, Peer, PeerKey};

use super::{
    load::Datapath,
    maps::{MapsError, collect, ignore_absent},
    pins::PinDir,
};

/// The peer map of one node.
pub struct PeerMap {
    map: LpmTrie<MapData, PeerKey, Peer>,
}

impl PeerMap {
    /// Opens the instance's pinned peer map.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        let path = pins.map(MAP);
        let data =
            MapData::from_pin(&path).map_err(|source| MapsError::OpenPinned { path, source })?;
        Self::from_map(Map::LpmTrie(data))
    }

    fn from_map(map: Map) -> Result<Self, MapsError> {
        let map =
            LpmTrie::try_from(map).map_err(|source| MapsError::Layout { name: MAP, source })?;
        Ok(Self { map })
    }

    /// Every entry, sorted by prefix.
    pub fn entries(&self) -> Result<Vec<(Ipv4Net, Peer)>, MapsError> {
        let mut out: Vec<(Ipv4Net, Peer)> = collect(self.map.iter(), MAP)?
            .into_iter()
            .filter_map(|(k, v)| {
                let prefix = u8::try_from(k.prefix_len()).ok()?;
                Ipv4Net::new(Ipv4Addr::from(k.data().addr), prefix)
                    .ok()
                    .map(|n| (n, v))
            })
            .collect();
        out.sort_by_key(|(n, _)| *n);
        Ok(out)
    }

    /// Makes the map hold exactly `want`: inserts what is missing or
    /// different, removes what `want` lacks, leaves every other entry
    /// alone. Returns the number of entries written and removed.
    pub fn sync(&mut self, want: &[(Ipv4Net, Peer)]) -> Result<(usize, usize), MapsError> {
        let have = self.entries()?;
        let mut written = 0;
        for (net, value) in want {
            if !have.iter().any(|(n, v)| n == net && v == value) {
                self.map
                    .insert(&key(net), *value, 0)
                    .map_err(|source| MapsError::Op {
                        op: "insert",
                        name: MAP,
                        source,
                    })?;
                written += 1;
            }
        }
        let mut removed = 0;
        for (net, _) in have {
            if !want.iter().any(|(n, _)| *n == net) {
                ignore_absent(self.map.remove(&key(&net)), "remove", MAP)?;
                removed += 1;
            }
        }
        Ok((written, removed))
    }
}

impl Datapath {
    /// The peer map of a loaded object (for `BPF_PROG_TEST_RUN`; a pinned
    /// instance opens it with [`PeerMap::open_pinned`]). Takes it out of
    /// the object: call once.
    pub fn take_peer_map(&mut self) -> Result<PeerMap, MapsError> {
        let map = self
            .ebpf
            .take_map(MAP)
            .ok_or(MapsError::Missing { name: MAP })?;
        PeerMap::from_map(map)
    }
}

fn key(net: &Ipv4Net) -> LpmKey<PeerKey> {
    LpmKey::new(
        u32::from(net.prefix_len()),
        PeerKey {
            addr: net.network().octets(),
        },
    )
}
