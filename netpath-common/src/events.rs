//! The live monitor's events (`netpath monitor`): what the programs put in
//! the `events_v1` ring buffer, and the small maps that decide whether they
//! put anything there at all.
//!
//! # Cost when nobody watches
//!
//! The programs emit nothing unless a monitor holds a *watch lease*: slot 0
//! of [`MONITOR_MAP`] says until when ([`MonitorGate::lease_until_ns`],
//! `CLOCK_MONOTONIC` as `bpf_ktime_get_ns()` reads it) and which event
//! kinds it wants ([`MonitorGate::kinds`], bits `1 << kind`). `netpath
//! monitor` renews the lease every second and clears it when it exits; a
//! monitor that dies leaves a lease that expires by itself within a few
//! seconds. With the kinds at 0, an event point costs one array lookup
//! (inlined by the verifier) and one compare; a drop costs the same.
//!
//! # Rate limit and losses
//!
//! Every CPU has its own token bucket ([`BUCKET_MAP`]): at most
//! [`MonitorGate::rate_per_sec`] events per second per CPU, in bursts of up
//! to [`MonitorGate::burst`]. An event the bucket refuses, or that the ring
//! buffer has no room for, is counted in [`LOST_MAP`] (per CPU, by
//! [`lost`] reason) and never stalls the packet.

/// The ring buffer of [`Event`]s (`BPF_MAP_TYPE_RINGBUF`).
pub const EVENTS_MAP: &str = "events_v1";
/// Its size in bytes (a power of two, a multiple of the page size): 4,681
/// events of 56 bytes (each carries an 8-byte ring header).
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// The watch lease: a one-slot array of [`MonitorGate`].
pub const MONITOR_MAP: &str = "monitor_v1";
/// The per-CPU token buckets: a one-slot per-CPU array of [`TokenBucket`].
pub const BUCKET_MAP: &str = "event_bucket_v1";
/// Events lost, per CPU, indexed by [`lost`] reason (`u64` counters).
pub const LOST_MAP: &str = "events_lost_v1";

/// Why an event was lost (the index into [`LOST_MAP`]).
pub mod lost {
    /// The CPU's token bucket was empty (more than the rate asked for).
    pub const RATE_LIMITED: u32 = 0;
    /// The ring buffer was full (the monitor did not read fast enough).
    pub const RING_FULL: u32 = 1;
    /// Number of reasons.
    pub const COUNT: u32 = 2;
}

/// What an event is ([`Event::kind`]); [`MonitorGate::kinds`] has bit
/// `1 << kind` for each kind the monitor wants.
pub mod kind {
    /// A dropped packet; [`super::Event::reason`] is the drop's
    /// [`crate::Stat`].
    pub const DROP: u8 = 1;
    /// A new masqueraded connection (SNAT): the original tuple, and in
    /// `nat_*` the tuple after translation.
    pub const TRACE_SNAT: u8 = 2;
    /// A new connection to a frontend (a service or a port-forward) and
    /// the backend it got: the original tuple, and in `nat_daddr` /
    /// `nat_dport` the backend.
    pub const TRACE_BACKEND: u8 = 3;
    /// A packet redirected to a local pod (`bpf_redirect_peer`);
    /// [`super::Event::ifindex`] is the pod's host-side veth.
    pub const TRACE_REDIRECT: u8 = 4;

    /// The kinds bit of every drop.
    pub const DROP_MASK: u32 = 1 << DROP;
    /// The kinds bits of every trace event.
    pub const TRACE_MASK: u32 = (1 << TRACE_SNAT) | (1 << TRACE_BACKEND) | (1 << TRACE_REDIRECT);

    /// A readable name of a kind.
    pub const fn name(kind: u8) -> &'static str {
        match kind {
            DROP => "drop",
            TRACE_SNAT => "snat",
            TRACE_BACKEND => "backend",
            TRACE_REDIRECT => "redirect",
            _ => "?",
        }
    }
}

/// The watch lease (slot 0 of [`MONITOR_MAP`]), written by `netpath
/// monitor` while it runs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MonitorGate {
    /// Events are emitted while `bpf_ktime_get_ns()` is at most this
    /// (`CLOCK_MONOTONIC`, ns); 0: nobody watches.
    pub lease_until_ns: u64,
    /// Bits `1 << kind` of the wanted [`kind`]s; 0: nobody watches.
    pub kinds: u32,
    /// Events per second per CPU; 0: no limit.
    pub rate_per_sec: u32,
    /// The most events a CPU emits at once after being quiet (at least 1).
    pub burst: u32,
    pub _pad: u32,
}

/// One CPU's token bucket (slot 0 of [`BUCKET_MAP`]), kept by the
/// programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TokenBucket {
    /// Events this CPU may still emit.
    pub tokens: u64,
    /// When tokens were last added (`bpf_ktime_get_ns()`).
    pub last_ns: u64,
}

/// One event of the ring buffer. Addresses are in network order, ports in
/// host order (as [`crate::CtKey`]). A field the packet does not have (no
/// IPv4 header, no ports) is 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns()` when it happened (`CLOCK_MONOTONIC`).
    pub ktime_ns: u64,
    /// One of [`kind`].
    pub kind: u8,
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP; 0 without an IPv4 header).
    pub proto: u8,
    /// ICMP type and code (with `proto` 1).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// The drop reason or the counted verdict: a [`crate::Stat`] index.
    pub reason: u32,
    /// The interface the program ran on (for a redirect, where it went).
    pub ifindex: u32,
    /// The packet's length (the skb's, or the XDP frame's).
    pub len: u32,
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// TCP/UDP ports; for ICMP echo, the identifier in `sport`.
    pub sport: u16,
    pub dport: u16,
    /// Trace events: the tuple after translation (SNAT: the new source;
    /// backend: the backend as destination).
    pub nat_saddr: [u8; 4],
    pub nat_daddr: [u8; 4],
    pub nat_sport: u16,
    pub nat_dport: u16,
    /// The frame's ethertype (host order), for frames without IPv4.
    pub ethertype: u16,
    pub _pad: u16,
    pub _pad2: u32,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with no padding and no pointers.
    unsafe impl aya::Pod for super::MonitorGate {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::TokenBucket {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Event {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(size_of::<MonitorGate>(), 8 + 4 * 4);
        assert_eq!(size_of::<TokenBucket>(), 16);
        assert_eq!(size_of::<Event>(), 56);
        assert_eq!(
            align_of::<Event>(),
            8,
            "the ring buffer wants 8-byte alignment"
        );
    }

    #[test]
    fn kinds_have_names_and_distinct_bits() {
        for k in [
            kind::DROP,
            kind::TRACE_SNAT,
            kind::TRACE_BACKEND,
            kind::TRACE_REDIRECT,
        ] {
            assert_ne!(kind::name(k), "?");
        }
        assert_eq!(kind::DROP_MASK & kind::TRACE_MASK, 0);
        assert_eq!(kind::TRACE_MASK.count_ones(), 3);
    }
}
