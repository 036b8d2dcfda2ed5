//! Per-CPU counters: one per verdict, drop reason and notable property.

use netpath_common::Stat;

use crate::maps::STATS;

/// Count one packet of `bytes` bytes under `stat`.
#[inline(always)]
pub fn count(stat: Stat, bytes: u32) {
    if let Some(counter) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: a per-CPU array slot belongs to this CPU while the program
        // runs (programs are not preempted on their CPU), so no one else
        // writes it concurrently.
        unsafe {
            (*counter).packets += 1;
            (*counter).bytes += u64::from(bytes);
        }
    }
}
