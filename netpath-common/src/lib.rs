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

pub mod mac;
pub mod proto;

/// Names of the maps and programs in the eBPF object, and of their pins.
///
/// The pin of a map is `/sys/fs/bpf/netpath/<instance>/maps/<name>`, of a
/// program `/sys/fs/bpf/netpath/<instance>/progs/<name>` and of a link
/// `/sys/fs/bpf/netpath/<instance>/links/<name>`.
pub mod maps {
    /// Local pods by IPv4 address: [`crate::EndpointKey`] → [`crate::Endpoint`].
    pub const ENDPOINTS: &str = "endpoints_v1";
    /// Per-CPU packet/byte counters indexed by [`crate::Stat`].
    /// v2: the router, fragment and anti-spoofing counters were added.
    pub const STATS: &str = "stats_v2";
    /// Maximum number of local pods one node can hold.
    pub const ENDPOINTS_MAX: u32 = 4096;
    /// Declared routes: LPM trie of [`crate::RouteKey`] → [`crate::RouteNextHop`].
    pub const ROUTES: &str = "routes_v1";
    /// Maximum number of declared routes.
    pub const ROUTES_MAX: u32 = 16384;
    /// Masquerade rules: LPM trie of (egress interface, source prefix)
    /// ([`crate::MasqKey`]) → [`crate::MasqRule`].
    pub const MASQ: &str = "masq_v1";
    pub const MASQ_MAX: u32 = 256;
    /// Datapath settings: a one-slot array of [`crate::NodeSettings`].
    /// v2: the former padding holds the pods' gateway address.
    pub const SETTINGS: &str = "settings_v2";
    /// Connection table (LRU): original tuple [`crate::CtKey`] → [`crate::CtEntry`].
    pub const CONNTRACK: &str = "conntrack_v1";
    /// Reverse NAT (LRU): reply tuple [`crate::CtKey`] → [`crate::RevNat`].
    pub const REVNAT: &str = "revnat_v1";
    /// Default size of the connection table (and of the reverse NAT map).
    pub const CONNTRACK_DEFAULT_MAX: u32 = 262_144;
    /// Fragment tracking (LRU): [`crate::FragKey`] → [`crate::FragEntry`],
    /// the translation a first fragment got, for the fragments that follow.
    pub const FRAGS: &str = "frags_v1";
    /// Datagrams in flight in fragments at once (both directions).
    pub const FRAGS_MAX: u32 = 8192;
}

/// Names of the programs in the eBPF object.
pub mod progs {
    /// TC ingress on a pod's host-side veth: every packet the pod sends.
    pub const FROM_POD: &str = "np_from_pod";
    /// TC ingress on an uplink: replies to translated flows (reverse NAT).
    pub const FROM_UPLINK: &str = "np_from_uplink";
}

/// Key of the route and masquerade LPM tries (the prefix length is carried
/// by aya's `lpm_trie::Key` around it): an IPv4 address, network order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RouteKey {
    pub addr: [u8; 4],
}

/// A declared route's next hop.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteNextHop {
    /// Egress interface in the node namespace.
    pub ifindex: u32,
    /// The gateway; `0.0.0.0` means directly connected (the destination
    /// itself is the next hop).
    pub via: [u8; 4],
}

/// Key of the masquerade LPM trie: the egress interface (always matched in
/// full: the prefix length is 32 + the source prefix length) and the source
/// address. One source can so be masqueraded out of several interfaces.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MasqKey {
    /// The egress ifindex, big-endian (the trie matches bits from the left).
    pub ifindex_be: [u8; 4],
    pub saddr: [u8; 4],
}

impl MasqKey {
    /// Length of the interface part of the key, in bits.
    pub const IFINDEX_BITS: u32 = 32;

    pub const fn new(ifindex: u32, saddr: [u8; 4]) -> Self {
        Self {
            ifindex_be: ifindex.to_be_bytes(),
            saddr,
        }
    }

    pub const fn ifindex(&self) -> u32 {
        u32::from_be_bytes(self.ifindex_be)
    }
}

/// A masquerade rule: traffic from the rule's source prefix that leaves
/// through `ifindex` gets `nat_addr` as its source address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MasqRule {
    pub ifindex: u32,
    pub nat_addr: [u8; 4],
}

/// Node-wide datapath settings (slot 0 of the settings map). Timeouts are in
/// seconds, as netfilter's `nf_conntrack_*_timeout` sysctls.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// ifindex of `np0`, the device `bpf_fib_lookup` runs as (it is the one
    /// device with forwarding on; see `netpath-ebpf/src/fib.rs`).
    pub fib_ifindex: u32,
    /// The first and last port of the NAT port range (host order).
    pub nat_port_min: u16,
    pub nat_port_max: u16,
    pub tcp_syn_timeout: u32,
    pub tcp_established_timeout: u32,
    pub tcp_fin_timeout: u32,
    pub tcp_close_timeout: u32,
    pub udp_timeout: u32,
    pub udp_stream_timeout: u32,
    pub icmp_timeout: u32,
    /// The pods' gateway address (network order): the source of the ICMP
    /// errors the datapath answers for the node as a router (time
    /// exceeded, fragmentation needed). `0.0.0.0` (not configured): those
    /// packets are dropped and counted without an answer.
    pub gateway: [u8; 4],
}

impl NodeSettings {
    /// netfilter's defaults (`nf_conntrack_tcp_timeout_*` etc.) and the
    /// ephemeral port range 32768-60999.
    pub const DEFAULT: NodeSettings = NodeSettings {
        fib_ifindex: 0,
        nat_port_min: 32768,
        nat_port_max: 60999,
        tcp_syn_timeout: 120,
        tcp_established_timeout: 432_000,
        tcp_fin_timeout: 120,
        tcp_close_timeout: 10,
        udp_timeout: 30,
        udp_stream_timeout: 120,
        icmp_timeout: 30,
        gateway: [0; 4],
    };
}

/// A connection tuple. Ports are in host order (readable in bpftool). For
/// ICMP echo the identifier is the port: the original tuple carries it in
/// `sport` (with `dport` 0), the reply tuple in `dport` (with `sport` 0), so
/// [`reply_key`] maps one onto the other as for TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    pub sport: u16,
    pub dport: u16,
    /// IP protocol (6 TCP, 17 UDP, 1 ICMP).
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Connection states ([`CtEntry::state`]).
pub mod ct_state {
    pub const TCP_SYN_SENT: u8 = 1;
    pub const TCP_ESTABLISHED: u8 = 2;
    pub const TCP_FIN_WAIT: u8 = 3;
    pub const TCP_TIME_WAIT: u8 = 4;
    pub const TCP_CLOSE: u8 = 5;
    pub const UDP_UNREPLIED: u8 = 10;
    pub const UDP_REPLIED: u8 = 11;
    pub const ICMP: u8 = 20;

    /// A readable name of a state.
    pub const fn name(state: u8) -> &'static str {
        match state {
            TCP_SYN_SENT => "SYN_SENT",
            TCP_ESTABLISHED => "ESTABLISHED",
            TCP_FIN_WAIT => "FIN_WAIT",
            TCP_TIME_WAIT => "TIME_WAIT",
            TCP_CLOSE => "CLOSE",
            UDP_UNREPLIED => "UNREPLIED",
            UDP_REPLIED => "REPLIED",
            ICMP => "ICMP",
            _ => "?",
        }
    }
}

impl NodeSettings {
    /// How long a connection in `state` lives without packets, in seconds.
    /// The datapath treats an entry older than this as gone (and replaces
    /// it); the controller's garbage collector deletes it.
    pub const fn ct_timeout_secs(&self, state: u8) -> u32 {
        match state {
            ct_state::TCP_SYN_SENT => self.tcp_syn_timeout,
            ct_state::TCP_ESTABLISHED => self.tcp_established_timeout,
            ct_state::TCP_FIN_WAIT | ct_state::TCP_TIME_WAIT => self.tcp_fin_timeout,
            ct_state::TCP_CLOSE => self.tcp_close_timeout,
            ct_state::UDP_REPLIED => self.udp_stream_timeout,
            ct_state::UDP_UNREPLIED => self.udp_timeout,
            _ => self.icmp_timeout,
        }
    }

    /// Whether an entry last seen at `last_seen_ns` in `state` has expired
    /// at `now_ns` (both CLOCK_MONOTONIC, as `bpf_ktime_get_ns`).
    pub const fn ct_expired(&self, state: u8, last_seen_ns: u64, now_ns: u64) -> bool {
        let timeout_ns = self.ct_timeout_secs(state) as u64 * 1_000_000_000;
        now_ns > last_seen_ns && now_ns - last_seen_ns > timeout_ns
    }
}

/// The reply tuple of a translated connection: what the remote side sends
/// back to the NAT address (the key of the reverse NAT map).
pub const fn reply_key(orig: &CtKey, nat_addr: [u8; 4], nat_port: u16) -> CtKey {
    CtKey {
        saddr: orig.daddr,
        daddr: nat_addr,
        sport: orig.dport,
        dport: nat_port,
        proto: orig.proto,
        _pad: [0; 3],
    }
}

/// [`CtEntry::flags`] bits.
pub mod ct_flags {
    /// A FIN was seen from the original side.
    pub const FIN_ORIG: u8 = 1;
    /// A FIN was seen from the reply side.
    pub const FIN_REPLY: u8 = 2;
    /// A reply was seen.
    pub const SEEN_REPLY: u8 = 4;
}

/// A tracked, translated connection, keyed by its original tuple (as the
/// pod sent it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    /// The source address and port the connection has outside the node.
    pub nat_addr: [u8; 4],
    pub nat_port: u16,
    /// One of [`ct_state`].
    pub state: u8,
    /// [`ct_flags`] bits.
    pub flags: u8,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) of creation and of the last
    /// packet (updated at most once a second per connection).
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets_orig: u64,
    pub packets_reply: u64,
}

/// Reverse NAT: where a reply to `nat_addr:nat_port` goes back to.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevNat {
    /// The pod's address and port (the original source).
    pub addr: [u8; 4],
    pub port: u16,
    pub _pad: u16,
}

/// Directions of [`FragKey::dir`].
pub mod frag_dir {
    /// A datagram a pod sends (the key holds the pod's original addresses).
    pub const FROM_POD: u8 = 1;
    /// A datagram arriving on an uplink (the key holds the addresses as
    /// they arrive: the remote host and the NAT address).
    pub const FROM_UPLINK: u8 = 2;
}

/// How long a first fragment's translation serves the fragments that follow
/// it, in seconds (Linux's `ipfrag_time`).
pub const FRAG_TIMEOUT_SECS: u64 = 30;

/// Key of the fragment map: one IP datagram. The IP identification is only
/// unique per (source, destination, protocol), so all of them are in the key.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FragKey {
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
    /// IP identification, host order.
    pub id: u16,
    pub proto: u8,
    /// One of [`frag_dir`].
    pub dir: u8,
}

/// The translation a datagram's first fragment got, for its later fragments
/// (which carry no L4 header): they get the same address rewrite.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragEntry {
    /// [`frag_dir::FROM_POD`]: the NAT (new source) address;
    /// [`frag_dir::FROM_UPLINK`]: the pod's (new destination) address.
    pub addr: [u8; 4],
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` when the first fragment passed; the entry serves
    /// [`FRAG_TIMEOUT_SECS`] from then.
    pub first_ns: u64,
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
    /// Verdict: routed out of an uplink (with or without SNAT).
    FwdRouted = "fwd_routed",
    /// Info: the route came from the route map (a declared route).
    RouteMapHit = "route_map_hit",
    /// Info: the route came from `bpf_fib_lookup` (the node's FIB).
    RouteFibHit = "route_fib_hit",
    /// Info: the next hop's MAC was unknown; `bpf_redirect_neigh` resolves it.
    RouteNeighResolve = "route_neigh_resolve",
    /// Verdict: the FIB says the destination is local or not forwardable;
    /// handed to the node's stack.
    PassFibLocal = "pass_fib_local",
    /// Drop: the FIB has a blackhole, unreachable or prohibit route.
    DropFibUnreachable = "drop_fib_unreachable",
    /// Info: a new connection was translated (SNAT).
    SnatNew = "snat_new",
    /// Info: the original source port was taken; another one was chosen.
    SnatPortChanged = "snat_port_changed",
    /// Drop: no free port in the NAT range after bounded retries.
    DropSnatNoPort = "drop_snat_no_port",
    /// Drop: a fragment would need NAT (no L4 header to translate).
    DropNatFragment = "drop_nat_fragment",
    /// Drop: an IP protocol netpath cannot translate (not TCP, UDP, ICMP echo).
    DropNatProto = "drop_nat_proto",
    /// Verdict: a reply on an uplink was reverse-translated and delivered to
    /// its pod.
    FwdRevNat = "fwd_revnat",
    /// Info: an ICMP error about a translated flow was translated back.
    IcmpErrorRevNat = "icmp_error_revnat",
    /// Verdict: a packet on an uplink matched no translation; handed to the
    /// node's stack.
    PassUplink = "pass_uplink",
    /// Drop: a reverse-translated packet's pod no longer exists.
    DropRevNatNoPod = "drop_revnat_no_pod",
    // --- router behaviour, fragments, anti-spoofing (stats_v2) ---
    /// Verdict: a pod's packet whose TTL expired was answered with an ICMP
    /// time exceeded from the gateway (and not forwarded).
    ReplyTimeExceeded = "reply_time_exceeded",
    /// Verdict: a pod's packet with DF set, larger than the egress MTU, was
    /// answered with an ICMP fragmentation needed carrying that MTU.
    ReplyFragNeeded = "reply_frag_needed",
    /// Drop: larger than the egress MTU and not answered: DF set, but no
    /// gateway address is configured or it is not a first fragment.
    DropTooBig = "drop_too_big",
    /// Drop: larger than the egress MTU without DF; netpath does not
    /// fragment (the pods' MTU should not exceed the uplink's).
    DropTooBigNoDf = "drop_too_big_no_df",
    /// Info: `bpf_check_mtu` could not check (the egress device is gone);
    /// the redirect decides.
    MtuUnchecked = "mtu_unchecked",
    /// Info: a first fragment's translation was recorded for the fragments
    /// that follow it.
    FragTracked = "frag_tracked",
    /// Info: a later fragment got its first fragment's translation.
    FragFollowed = "frag_followed",
    /// Drop: a later fragment that needs translation, whose first fragment
    /// was not seen (lost, arrived after it, or more than 30 s ago).
    DropFragNoFirst = "drop_frag_no_first",
    /// Drop: a first fragment's translation could not be recorded.
    DropFragTrackFailed = "drop_frag_track_failed",
    /// Drop: a pod sent IPv4 from an address that is not its own.
    DropSpoofedIp = "drop_spoofed_ip",
    /// Drop: a pod sent a frame from a MAC that is not its own.
    DropSpoofedMac = "drop_spoofed_mac",
    /// Drop: a pod sent ARP with a sender address or MAC not its own.
    DropSpoofedArp = "drop_spoofed_arp",
    /// Drop: a pod sent IPv6 (pods are IPv4-only; the node routes no IPv6
    /// for them).
    DropPodIpv6 = "drop_pod_ipv6",
    /// Drop: a pod sent a frame that is neither IPv4, ARP nor IPv6.
    DropPodEthertype = "drop_pod_ethertype",
    /// Drop: a pod sent a frame with an offloaded VLAN tag (pods use no
    /// VLANs).
    DropPodVlan = "drop_pod_vlan",
    /// Verdict: a frame on an uplink with an offloaded VLAN tag belongs to
    /// a VLAN device of the node; handed to its stack untouched.
    PassUplinkVlan = "pass_uplink_vlan",
    /// Info: a BIG TCP packet (IPv4 total length 0, GSO): its length was
    /// taken from the skb.
    Ipv4BigTcp = "ipv4_big_tcp",
    /// Drop: the TCP, UDP or ICMP header of a whole packet or first
    /// fragment is shorter than its minimum (20, 8, 8 bytes) within the IP
    /// total length: nothing to translate, and no L4 field is ever read
    /// from the Ethernet padding after it.
    DropL4Truncated = "drop_l4_truncated",
    /// Drop: a pod sent a packet to an address no router forwards to
    /// (0.0.0.0/8, 127.0.0.0/8, 240.0.0.0/4 but the limited broadcast).
    DropMartian = "drop_martian",
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RouteKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RouteNextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MasqRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MasqKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::NodeSettings {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CtEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RevNat {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::FragEntry {}
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
        assert_eq!(core::mem::size_of::<CtKey>(), 16);
        assert_eq!(core::mem::size_of::<CtEntry>(), 8 + 4 * 8);
        assert_eq!(core::mem::size_of::<RevNat>(), 8);
        assert_eq!(core::mem::size_of::<NodeSettings>(), 4 + 4 + 8 * 4);
        assert_eq!(core::mem::size_of::<RouteNextHop>(), 8);
        assert_eq!(core::mem::size_of::<FragKey>(), 12);
        assert_eq!(core::mem::size_of::<FragEntry>(), 16);
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
