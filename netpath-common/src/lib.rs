//! Types shared by the eBPF datapath (`netpath-ebpf`) and the userspace
//! controller (`netpath`).
//!
//! Every map key and value is `#[repr(C)]`, has no implicit padding (so the
//! bytes userspace writes are exactly the bytes the kernel compares), and
//! uses byte arrays for addresses so that `bpftool map dump` prints them as
//! `[10,200,0,2]` rather than as one large integer.
//!
//! When a layout here changes, bump the `_vN` suffix of the map that holds
//! it (see [`maps`]): aya reuses an existing pin without checking its key and
//! value sizes, so an old pin must never be opened with a new layout.
#![no_std]

/// Names of the maps and programs in the eBPF object, and of their pins.
///
/// The pin of a map is `/sys/fs/bpf/netpath/<instance>/maps/<name>`, of a
/// program `/sys/fs/bpf/netpath/<instance>/progs/<name>` and of a link
/// `/sys/fs/bpf/netpath/<instance>/links/<name>`.
pub mod maps {
    /// Local pods by IPv4 address: [`crate::EndpointKey`] → [`crate::Endpoint`].
    pub const ENDPOINTS: &str = "endpoints_v1";
    /// Per-CPU packet/byte counters indexed by [`crate::Stat`].
    pub const STATS: &str = "stats_v1";
    /// Maximum number of local pods one node can hold.
    pub const ENDPOINTS_MAX: u32 = 4096;
}

/// Names of the programs in the eBPF object.
pub mod progs {
    /// TC ingress on a pod's host-side veth: every packet the pod sends.
    pub const FROM_POD: &str = "np_from_pod";
}

/// Key of the endpoint map: a local pod's IPv4 address, network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: [u8; 4],
}

/// A local pod as the datapath needs it to deliver a packet.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// ifindex of the pod's host-side veth in the node namespace;
    /// `bpf_redirect_peer` to it lands in the pod's `eth0`.
    pub ifindex: u32,
    /// Reserved for endpoint flags; always 0 today.
    pub flags: u32,
    /// MAC of the pod's `eth0` (destination MAC of packets delivered to it).
    pub pod_mac: [u8; 6],
    /// MAC of the host-side veth: the gateway's MAC as the pod sees it, so
    /// the source MAC of packets delivered to the pod.
    pub gw_mac: [u8; 6],
}

/// A per-CPU counter: packets and bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

macro_rules! stats {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )+) => {
        /// Index of a counter in the stats map: every verdict and every drop
        /// reason has its own, and so do the notable packet properties.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat {
            $( $(#[doc = $doc])* $variant, )+
        }

        impl Stat {
            /// Every counter, in index order.
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)+];

            /// The counter's stable, human-readable name (`netpath stats`).
            pub const fn name(self) -> &'static str {
                match self { $(Stat::$variant => $name,)+ }
            }

            /// Whether the counter records a dropped packet.
            pub const fn is_drop(self) -> bool {
                let name = self.name().as_bytes();
                name.len() > 5
                    && name[0] == b'd'
                    && name[1] == b'r'
                    && name[2] == b'o'
                    && name[3] == b'p'
                    && name[4] == b'_'
            }
        }
    };
}

stats! {
    /// Verdict: forwarded to a pod on this node with `bpf_redirect_peer`.
    FwdLocalPod = "fwd_local_pod",
    /// Verdict: destination is not a local pod (the gateway, the node, or
    /// outside); handed to the node's stack.
    PassToHost = "pass_to_host",
    /// Verdict: not IPv4 (ARP, IPv6, ...); handed to the node's stack.
    PassNotIpv4 = "pass_not_ipv4",
    /// Drop: the frame ends inside the Ethernet or IPv4 header.
    DropTruncated = "drop_truncated",
    /// Drop: IPv4 header is malformed (version is not 4, IHL below 5, or
    /// the total length is shorter than the header).
    DropBadIpHeader = "drop_bad_ip_header",
    /// Drop: TTL would reach 0 when forwarded.
    DropTtlExceeded = "drop_ttl_exceeded",
    /// Drop: a packet rewrite helper failed.
    DropRewriteFailed = "drop_rewrite_failed",
    /// Info: an IPv4 header carrying options (IHL > 5) was seen.
    Ipv4Options = "ipv4_options",
    /// Info: an IPv4 fragment was seen (forwarded at L3 like any packet).
    Ipv4Fragment = "ipv4_fragment",
}

/// Number of counters in the stats map.
pub const STAT_COUNT: u32 = Stat::ALL.len() as u32;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` data with no padding and no pointers.
    unsafe impl aya::Pod for super::EndpointKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Endpoint {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<EndpointKey>(), 4);
        assert_eq!(core::mem::size_of::<Endpoint>(), 4 + 4 + 6 + 6);
        assert_eq!(core::mem::size_of::<Counter>(), 16);
    }

    #[test]
    fn stat_indices_are_dense_and_names_unique() {
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
        let mut names: std::vec::Vec<_> = Stat::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Stat::ALL.len());
        assert!(Stat::DropTruncated.is_drop());
        assert!(!Stat::FwdLocalPod.is_drop());
    }
}
