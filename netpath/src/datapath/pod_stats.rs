//! Userspace side of the per-pod counters (`pod_stats_v1`): creating and
//! deleting a pod's entry with its endpoint, reading them summed over
//! CPUs. The map's invariant is in `netpath_common::pod_stats`: only
//! userspace inserts and deletes; the datapath adds to an entry that
//! exists and skips a pod without one.

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{MapData, MapError, PerCpuHashMap, PerCpuValues};
use netpath_common::pod_stats::{MAP, PodCounters, PodStatsKey};

use super::maps::{MapsError, NodeMaps, ignore_absent};

/// The typed map.
pub type PodStatsMap = PerCpuHashMap<MapData, PodStatsKey, PodCounters>;

/// `BPF_NOEXIST`: insert only if the key is absent.
const BPF_NOEXIST: u64 = 1;

fn op(op: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Op {
        op,
        name: MAP,
        source,
    }
}

/// Creates the zeroed entry of the pod behind `ifindex`; an existing entry
/// keeps its counts (the same veth, re-written endpoint).
pub(super) fn create(map: &mut PodStatsMap, ifindex: u32) -> Result<(), MapsError> {
    let syscall = |call: &'static str, io_error| {
        op("insert")(MapError::SyscallError(aya::sys::SyscallError {
            call,
            io_error,
        }))
    };
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| syscall("nr_cpus", e))?;
    let zero = PerCpuValues::try_from(vec![PodCounters::default(); cpus])
        .map_err(|e| syscall("per-CPU values", e))?;
    match map.insert(PodStatsKey { ifindex }, zero, BPF_NOEXIST) {
        Ok(()) => Ok(()),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(op("insert")(e)),
    }
}

/// Deletes the entry of the pod behind `ifindex`; absent is fine.
pub(super) fn remove(map: &mut PodStatsMap, ifindex: u32) -> Result<(), MapsError> {
    ignore_absent(map.remove(&PodStatsKey { ifindex }), "remove", MAP)
}

impl NodeMaps {
    /// Every pod's counters (by its host-side veth's ifindex), summed over
    /// CPUs.
    pub fn pod_counters(&self) -> Result<BTreeMap<u32, PodCounters>, MapsError> {
        let mut out = BTreeMap::new();
        for entry in &self.pod_stats {
            let (key, per_cpu) = entry.map_err(op("iterate"))?;
            let sum = per_cpu
                .iter()
                .fold(PodCounters::default(), |acc, c| acc.add(*c));
            out.insert(key.ifindex, sum);
        }
        Ok(out)
    }

    /// Makes the counters' entries follow the endpoints: creates the
    /// missing ones (a node adopted from a version without per-pod
    /// counters) and deletes those of veths no endpoint has. Returns how
    /// many were created and deleted.
    pub fn sync_pod_counters(&mut self) -> Result<(usize, usize), MapsError> {
        let want: BTreeSet<u32> = self.endpoints()?.values().map(|e| e.ifindex).collect();
        let have: BTreeSet<u32> = self
            .pod_stats
            .keys()
            .map(|k| k.map(|k| k.ifindex))
            .collect::<Result<_, _>>()
            .map_err(op("iterate"))?;
        let mut created = 0;
        for &ifindex in want.difference(&have) {
            create(&mut self.pod_stats, ifindex)?;
            created += 1;
        }
        let mut deleted = 0;
        for &ifindex in have.difference(&want) {
            remove(&mut self.pod_stats, ifindex)?;
            deleted += 1;
        }
        Ok((created, deleted))
    }
}
