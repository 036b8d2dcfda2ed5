//! Per-pod counters (`pod_stats_v1`): what each local pod sent and what the
//! datapath delivered to it. The map's invariant (userspace inserts and
//! deletes, a missing entry means "not counted") is written beside its
//! types in `netpath_common::pod_stats`.
//!
//! Cost per counted packet: the settings slot (an array lookup the
//! verifier inlines), one per-CPU hash lookup and two adds. Nothing is
//! inserted here, so a full map or a pod being removed never fails a
//! packet; with `[node] pod_counters = false` only the settings read is
//! left.

use aya_ebpf::{btf_maps::PerCpuHashMap, macros::btf_map};
use netpath_common::{
    NodeSettings, node_flags,
    pod_stats::{MAX, PodCounters, PodStatsKey},
};

use crate::maps::SETTINGS;

/// The counters of every local pod, by its host-side veth's ifindex.
#[btf_map(name = "pod_stats_v1")]
pub static POD_STATS: PerCpuHashMap<PodStatsKey, PodCounters, { MAX as usize }> =
    PerCpuHashMap::new();

/// Whether the node counts per pod (`node_flags::POD_COUNTERS`).
#[inline(always)]
fn enabled() -> bool {
    SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT).flags & node_flags::POD_COUNTERS != 0
}

/// This CPU's counters of the pod behind `ifindex`, when counting is on
/// and the pod has an entry.
#[inline(always)]
fn counters(ifindex: u32) -> Option<*mut PodCounters> {
    if !enabled() {
        return None;
    }
    POD_STATS.get_ptr_mut(PodStatsKey { ifindex })
}

/// A frame of `bytes` bytes that the pod behind `ifindex` sent.
#[inline(always)]
pub fn tx(ifindex: u32, bytes: u32) {
    if let Some(c) = counters(ifindex) {
        // SAFETY: a per-CPU value belongs to this CPU while the program
        // runs; no one else writes it concurrently.
        unsafe {
            (*c).tx_packets += 1;
            (*c).tx_bytes += u64::from(bytes);
        }
    }
}

/// One of the frames the pod behind `ifindex` sent was dropped.
#[inline(always)]
pub fn tx_dropped(ifindex: u32) {
    if let Some(c) = counters(ifindex) {
        // SAFETY: as in `tx`.
        unsafe { (*c).tx_dropped += 1 };
    }
}

/// A frame of `bytes` bytes delivered into the pod behind `ifindex`.
#[inline(always)]
pub fn rx(ifindex: u32, bytes: u32) {
    if let Some(c) = counters(ifindex) {
        // SAFETY: as in `tx`.
        unsafe {
            (*c).rx_packets += 1;
            (*c).rx_bytes += u64::from(bytes);
        }
    }
}
