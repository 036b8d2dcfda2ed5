//! Per-pod counters: what each local pod sent and received through the
//! datapath, in the per-CPU hash map [`MAP`] (`pod_stats_v1`), keyed by the
//! pod's host-side veth ([`PodStatsKey`]).
//!
//! # The map's invariant
//!
//! - **Who inserts:** userspace only, never the datapath. An entry is
//!   created (zeroed, `BPF_NOEXIST`) when the pod's endpoint is written to
//!   `endpoints_v1`, and every apply re-creates the entry of any endpoint
//!   that lacks one (a node adopted from an older version).
//! - **Who deletes:** userspace, with the endpoint (removing a pod's
//!   endpoint removes the entry of the endpoint's ifindex first); an apply
//!   also deletes entries whose ifindex no endpoint has.
//! - **A missing entry** means "not counted": the datapath looks the entry
//!   up and adds to it, and does nothing when it is absent (a pod being
//!   created or removed). So the datapath's cost is one per-CPU lookup and
//!   two adds per counted direction, and the map never fills from traffic.
//! - **Keyed by ifindex**, not by address: `np_from_pod` counts what a pod
//!   sends at its entry, before parsing anything, from the ingress ifindex
//!   (every frame, ARP and dropped frames included); the deliveries know
//!   the endpoint they redirect to, hence its ifindex. A pod recreated
//!   gets a new veth (a new ifindex) and starts from zero.
//! - **Switch:** the programs count only while [`crate::node_flags::POD_COUNTERS`]
//!   is set in the node settings (`[node] pod_counters`, on by default).
//!
//! `rx` is what the datapath delivered into the pod (`bpf_redirect_peer`
//! from `np_from_pod` and `np_from_uplink`, `XDP_REDIRECT` from
//! `np_xdp_uplink`, and the gateway's ICMP answers); packets the node's own
//! stack sends to the pod (ARP replies, the node's own connections routed
//! by the kernel) are not seen by any program and not counted.

/// Name of the map (and of its pin).
pub const MAP: &str = "pod_stats_v1";

/// Size of the map: one entry per endpoint.
pub const MAX: u32 = crate::maps::ENDPOINTS_MAX;

/// Key: the ifindex of the pod's host-side veth in the node namespace
/// (`Endpoint::ifindex`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PodStatsKey {
    pub ifindex: u32,
}

/// One CPU's counters of one pod. Bytes are the frame length as TC and
/// XDP see it (Ethernet header included), as the veth's own counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodCounters {
    /// Frames delivered into the pod by the datapath.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the pod sent (every frame `np_from_pod` saw).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of the frames the pod sent, those the datapath dropped (the reason
    /// is in the node-wide drop counters).
    pub tx_dropped: u64,
}

impl PodCounters {
    /// The sum of two CPUs' counters.
    #[must_use]
    pub const fn add(self, o: Self) -> Self {
        Self {
            rx_packets: self.rx_packets + o.rx_packets,
            rx_bytes: self.rx_bytes + o.rx_bytes,
            tx_packets: self.tx_packets + o.tx_packets,
            tx_bytes: self.tx_bytes + o.tx_bytes,
            tx_dropped: self.tx_dropped + o.tx_dropped,
        }
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data with no padding and no pointers.
unsafe impl aya::Pod for PodStatsKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for PodCounters {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<PodStatsKey>(), 4);
        assert_eq!(core::mem::size_of::<PodCounters>(), 5 * 8);
    }
}
