//! Per-CPU counters: one per verdict, drop reason and notable property.

use aya_ebpf::{bindings::TC_ACT_SHOT, programs::TcContext};
use aya_log_ebpf::debug;
use netpath_common::Stat;

use crate::maps::STATS;

/// Drops a packet for `reason`: counts it and logs it at debug level.
///
/// Logging is off unless the loader sets `AYA_LOG_LEVEL` (netpath does when
/// `NETPATH_EBPF_LOG=debug`); it is a `.rodata` constant, so with logging off
/// the verifier removes the log call and a drop costs only its counter.
#[inline(always)]
pub fn drop(ctx: &TcContext, reason: Stat) -> i32 {
    count(reason, ctx.len());
    crate::events::tc_drop(ctx, reason);
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    debug!(
        ctx,
        "drop {} on ifindex {} ({} bytes)",
        reason.name(),
        ifindex,
        ctx.len()
    );
    TC_ACT_SHOT as i32
}

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
