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

pub mod events;
pub mod lb;
pub mod mac;
pub mod peer;
pub mod pod_stats;
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
    /// v3: the router, fragment, anti-spoofing and conntrack/NAT
    /// consistency counters.
    /// v4: DNAT, load balancing and XDP counters.
    pub const STATS: &str = "stats_v4";
    /// Maximum number of local pods one node can hold.
    pub const ENDPOINTS_MAX: u32 = 4096;
    /// Declared routes: LPM trie of [`crate::RouteKey`] → [`crate::RouteNextHop`].
    pub const ROUTES: &str = "routes_v1";
    /// Maximum number of declared routes. An LPM trie allocates per
    /// prefix (`BPF_F_NO_PREALLOC` is mandatory for the type), so the
    /// capacity costs nothing until it is used; a node whose pinned trie
    /// has another capacity gets it recreated and refilled by the next
    /// apply (`drop_mismatched_pin`).
    pub const ROUTES_MAX: u32 = 131_072;
    /// Masquerade rules: LPM trie of (egress interface, source prefix)
    /// ([`crate::MasqKey`]) → [`crate::MasqRule`].
    pub const MASQ: &str = "masq_v1";
    pub const MASQ_MAX: u32 = 256;
    /// Datapath settings: a one-slot array of [`crate::NodeSettings`].
    /// v3: the former padding holds the pods' gateway address; netfilter's
    /// SYN_RECV, CLOSE_WAIT, LAST_ACK and unacknowledged timeouts.
    /// v4: the node namespace's cookie (the socket hooks act only there).
    /// v5: flags ([`crate::node_flags`]: per-pod counters on or off).
    pub const SETTINGS: &str = "settings_v5";
    /// Connection table (LRU): original tuple [`crate::CtKey`] → [`crate::CtEntry`].
    /// v2: per-direction TCP sequence tracking, netfilter's states.
    pub const CONNTRACK: &str = "conntrack_v2";
    /// Reverse NAT (plain hash, never evicted): reply tuple [`crate::CtKey`]
    /// → [`crate::RevNat`]. v2: a hash instead of an LRU, owner flags and
    /// a creation time in the value.
    pub const REVNAT: &str = "revnat_v2";
    /// Default size of the connection table.
    pub const CONNTRACK_DEFAULT_MAX: u32 = 262_144;

    /// Size of the reverse NAT map for a connection table of
    /// `conntrack_max` entries: one reverse entry per connection, plus half
    /// as many again for reverse entries whose connection the LRU evicted
    /// (they hold their port until a reply repairs the connection, the
    /// datapath reclaims them, or GC collects them). The reverse map is a
    /// plain hash: it never evicts, and a full one is a counted drop
    /// (`drop_nat_table_full`), never a silent loss of a live mapping.
    pub const fn revnat_max(conntrack_max: u32) -> u32 {
        conntrack_max.saturating_add(conntrack_max / 2)
    }
    /// Fragment tracking (LRU): [`crate::FragKey`] → [`crate::FragEntry`],
    /// the translation a first fragment got, for the fragments that follow.
    pub const FRAGS: &str = "frags_v1";
    /// Datagrams in flight in fragments at once (both directions).
    pub const FRAGS_MAX: u32 = 8192;

    /// Frontends (service VIP:port/proto, or a node address and forwarded
    /// port): [`crate::FrontendKey`] → [`crate::Frontend`]. v2: 65,536 of
    /// them. v3: the value names its Maglev table (size and generation in
    /// `maglev_v3`). Frontend ids key the backends, tables and affinity;
    /// an upgrade from v2 carries the ids, backends and tables over
    /// (`netpath::datapath::migrate`).
    pub const FRONTENDS: &str = "frontends_v3";
    /// Maximum number of frontends (service ports plus port-forwards).
    pub const FRONTENDS_MAX: u32 = 65_536;
    /// Backends of every frontend: [`crate::BackendKey`] (frontend id,
    /// backend index) → [`crate::Backend`]. v2: with `frontends_v2`; v3:
    /// with `frontends_v3`.
    pub const BACKENDS: &str = "backends_v3";
    pub const BACKENDS_MAX: u32 = 262_144;
    /// Maglev lookup tables: a plain hash, [`crate::lb::MaglevKey`]
    /// (frontend id, generation, chunk) → [`crate::lb::MaglevChunk`] (256
    /// slots); see [`crate::lb`]. v2 was a hash of arrays, one per table.
    /// v3: chunks of generations named by the frontend value, so that a
    /// table change is plain hash updates (no RCU grace period per
    /// syscall, as every update of a map of maps has).
    pub const MAGLEV: &str = "maglev_v3";
    /// Maximum chunks in `maglev_v3`: 2^19. A table of `b` backends is at
    /// most 1 + `b` × 200 / 256 chunks (a size is the prime above 100
    /// slots per backend and sizes double), so a full node (65,536
    /// frontends, 262,144 backends) holds at most 270,336, and an apply
    /// holds two generations of the tables it changes until their
    /// frontends name the new ones: 524,288 covers every change short of
    /// rewriting every table of a full node at once (that apply fails on
    /// the full map and is rolled back). The map is not preallocated: a
    /// chunk costs a 568-byte element (a 1 KiB slab object) while it exists
    /// (30,000 two-backend services: 30,000 chunks, about 30 MiB of slab);
    /// its 524,288 hash buckets cost 8 MiB on every node, used or not (the
    /// kernel makes as many buckets as `max_entries`, rounded up to a power
    /// of two, so this stays a power of two).
    pub const MAGLEV_CHUNKS_MAX: u32 = 1 << 19;
    /// `BPF_F_NO_PREALLOC`: a hash map that allocates an entry when it is
    /// added, so its memory follows what it holds rather than its maximum.
    /// The frontends, backends and Maglev chunks have it (only the
    /// controller writes them, rarely; 65,536 frontends preallocated would
    /// cost about 11 MB on every node, used or not).
    pub const BPF_F_NO_PREALLOC: u32 = 1;
    /// ClientIP session affinity (LRU): [`crate::AffinityKey`] →
    /// [`crate::Affinity`]. v2: with `frontends_v2` (its keys hold
    /// frontend ids); v3: with `frontends_v3`.
    pub const AFFINITY: &str = "affinity_v3";
    pub const AFFINITY_MAX: u32 = 65_536;
    /// The XDP prefilter's deny list: LPM trie of source prefixes
    /// ([`crate::RouteKey`]) → [`crate::DenyRule`].
    pub const PREFILTER: &str = "prefilter_v1";
    pub const PREFILTER_MAX: u32 = 16_384;
}

/// Names of the programs in the eBPF object.
pub mod progs {
    /// TC ingress on a pod's host-side veth: every packet the pod sends.
    pub const FROM_POD: &str = "np_from_pod";
    /// TC ingress on an uplink: replies to translated flows (reverse NAT).
    pub const FROM_UPLINK: &str = "np_from_uplink";
    /// TC egress on an uplink: the node's own connections, translated to
    /// another port when a pod's translated flow holds theirs.
    pub const TO_UPLINK: &str = "np_to_uplink";
    /// XDP on an uplink: the prefilter (deny list) and the fast path of
    /// established inbound flows; everything else passes to `np_from_uplink`.
    pub const XDP_UPLINK: &str = "np_xdp_uplink";
    /// XDP on a pod's `eth0` (inside the pod): passes everything. Its
    /// presence lets `XDP_REDIRECT` from the uplink into the pod's veth
    /// deliver (veth drops redirected frames when its peer has no XDP
    /// program).
    pub const XDP_POD: &str = "np_xdp_pod";
    /// cgroup `connect4`: the node's own processes connecting to a frontend
    /// get a backend at `connect()` time (socket-level load balancing).
    pub const SOCK_CONNECT: &str = "np_sock_connect4";
    /// cgroup `sendmsg4`: the same for unconnected UDP sends.
    pub const SOCK_SENDMSG: &str = "np_sock_sendmsg4";
    /// cgroup `recvmsg4`: a datagram from a backend is shown as from its
    /// frontend to an unconnected UDP socket.
    pub const SOCK_RECVMSG: &str = "np_sock_recvmsg4";
    /// cgroup `getpeername4`: a connected socket's peer is shown as the
    /// frontend it connected to.
    pub const SOCK_GETPEERNAME: &str = "np_sock_getpeername4";
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
    /// `SYN_SENT` (netfilter's `tcp_timeout_syn_sent`).
    pub tcp_syn_timeout: u32,
    pub tcp_established_timeout: u32,
    /// `FIN_WAIT` and `TIME_WAIT` (netfilter's `tcp_timeout_fin_wait` and
    /// `tcp_timeout_time_wait`, both 120 s).
    pub tcp_fin_timeout: u32,
    pub tcp_close_timeout: u32,
    /// `UNREPLIED` and `REPLIED` (replies seen, but not over 2 s yet).
    pub udp_timeout: u32,
    /// `STREAM`: traffic both ways spanning more than 2 s (`IPS_ASSURED`).
    pub udp_stream_timeout: u32,
    pub icmp_timeout: u32,
    /// `SYN_RECV`.
    pub tcp_syn_recv_timeout: u32,
    /// `CLOSE_WAIT`.
    pub tcp_close_wait_timeout: u32,
    /// `LAST_ACK`.
    pub tcp_last_ack_timeout: u32,
    /// The ceiling of a connection picked up mid-stream (its first packet
    /// was not a SYN) until both sides have been seen
    /// (`tcp_timeout_unacknowledged`).
    pub tcp_unack_timeout: u32,
    /// The pods' gateway address (network order): the source of the ICMP
    /// errors the datapath answers for the node as a router (time
    /// exceeded, fragmentation needed). `0.0.0.0` (not configured): those
    /// packets are dropped and counted without an answer. Also the source a
    /// hairpinned connection (a pod reaching a frontend that selects the pod
    /// itself) gets.
    pub gateway: [u8; 4],
    /// The network namespace cookie of the node namespace
    /// (`SO_NETNS_COOKIE`): the socket hooks (cgroup `connect4` ...) are
    /// attached to a cgroup shared by every namespace, and act only on
    /// sockets of this one. 0: they act nowhere.
    pub netns_cookie: u64,
    /// [`node_flags`] bits: switches the programs read (settings_v5).
    pub flags: u32,
    /// Always zero.
    pub _reserved: u32,
}

/// [`NodeSettings::flags`] bits.
pub mod node_flags {
    /// Count every pod's packets and bytes in `pod_stats_v1` (see
    /// [`crate::pod_stats`]); `[node] pod_counters`, on by default.
    pub const POD_COUNTERS: u32 = 1;
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
        tcp_syn_recv_timeout: 60,
        tcp_close_wait_timeout: 60,
        tcp_last_ack_timeout: 30,
        tcp_unack_timeout: 300,
        gateway: [0; 4],
        netns_cookie: 0,
        flags: node_flags::POD_COUNTERS,
        _reserved: 0,
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

/// Connection states ([`CtEntry::state`]): netfilter's TCP states (its
/// `SYN_SENT2` simultaneous open aside), UDP's unreplied / replied / stream,
/// and ICMP echo.
pub mod ct_state {
    pub const TCP_SYN_SENT: u8 = 1;
    pub const TCP_ESTABLISHED: u8 = 2;
    pub const TCP_FIN_WAIT: u8 = 3;
    pub const TCP_TIME_WAIT: u8 = 4;
    pub const TCP_CLOSE: u8 = 5;
    pub const TCP_SYN_RECV: u8 = 6;
    pub const TCP_CLOSE_WAIT: u8 = 7;
    pub const TCP_LAST_ACK: u8 = 8;
    /// No reply seen.
    pub const UDP_UNREPLIED: u8 = 10;
    /// Replies seen, but the connection is not 2 s old yet.
    pub const UDP_REPLIED: u8 = 11;
    /// Traffic both ways spanning more than 2 s: a stream (netfilter's
    /// `IPS_ASSURED` UDP connection).
    pub const UDP_STREAM: u8 = 12;
    pub const ICMP: u8 = 20;

    /// A readable name of a state.
    pub const fn name(state: u8) -> &'static str {
        match state {
            TCP_SYN_SENT => "SYN_SENT",
            TCP_SYN_RECV => "SYN_RECV",
            TCP_ESTABLISHED => "ESTABLISHED",
            TCP_FIN_WAIT => "FIN_WAIT",
            TCP_CLOSE_WAIT => "CLOSE_WAIT",
            TCP_LAST_ACK => "LAST_ACK",
            TCP_TIME_WAIT => "TIME_WAIT",
            TCP_CLOSE => "CLOSE",
            UDP_UNREPLIED => "UNREPLIED",
            UDP_REPLIED => "REPLIED",
            UDP_STREAM => "STREAM",
            ICMP => "ICMP",
            _ => "?",
        }
    }
}

impl NodeSettings {
    /// How long a connection in `state` lives without packets, in seconds.
    pub const fn ct_timeout_secs(&self, state: u8) -> u32 {
        match state {
            ct_state::TCP_SYN_SENT => self.tcp_syn_timeout,
            ct_state::TCP_SYN_RECV => self.tcp_syn_recv_timeout,
            ct_state::TCP_ESTABLISHED => self.tcp_established_timeout,
            ct_state::TCP_FIN_WAIT | ct_state::TCP_TIME_WAIT => self.tcp_fin_timeout,
            ct_state::TCP_CLOSE_WAIT => self.tcp_close_wait_timeout,
            ct_state::TCP_LAST_ACK => self.tcp_last_ack_timeout,
            ct_state::TCP_CLOSE => self.tcp_close_timeout,
            ct_state::UDP_STREAM => self.udp_stream_timeout,
            ct_state::UDP_UNREPLIED | ct_state::UDP_REPLIED => self.udp_timeout,
            _ => self.icmp_timeout,
        }
    }

    /// How long connection `e` lives without packets, in seconds: its
    /// state's timeout, capped at `tcp_unack_timeout` for a TCP connection
    /// picked up mid-stream until both sides have been seen.
    pub const fn ct_timeout_of(&self, e: &CtEntry) -> u32 {
        let t = self.ct_timeout_secs(e.state);
        let both = ct_flags::SEEN_ORIG | ct_flags::SEEN_REPLY;
        if e.flags & ct_flags::PICKUP != 0 && e.flags & both != both && t > self.tcp_unack_timeout {
            self.tcp_unack_timeout
        } else {
            t
        }
    }

    /// Whether connection `e` has expired at `now_ns` (CLOCK_MONOTONIC, as
    /// `bpf_ktime_get_ns`). The one expiry rule: the datapath treats an
    /// expired entry as gone (and replaces it), the garbage collector
    /// deletes it, `netpath conntrack list` shows it as expired.
    pub const fn ct_expired(&self, e: &CtEntry, now_ns: u64) -> bool {
        let timeout_ns = self.ct_timeout_of(e) as u64 * 1_000_000_000;
        now_ns > e.last_seen_ns && now_ns - e.last_seen_ns > timeout_ns
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

/// [`CtEntry::flags`] and [`RevNat::flags`] bits.
pub mod ct_flags {
    /// A packet was seen from the original side.
    pub const SEEN_ORIG: u8 = 1;
    /// A packet was seen from the reply side.
    pub const SEEN_REPLY: u8 = 2;
    /// TCP picked up mid-stream (the first packet seen was not a SYN): the
    /// `tcp_unack_timeout` ceiling applies until both sides are seen.
    pub const PICKUP: u8 = 4;
    /// The node's own connection (translated by `np_to_uplink`), not a
    /// pod's: its replies go to the node's stack.
    pub const NODE: u8 = 8;
    /// TCP: a FIN was seen from the original side.
    pub const FIN_ORIG: u8 = 16;
    /// TCP: a FIN was seen from the reply side.
    pub const FIN_REPLY: u8 = 32;
    /// A destination-translated connection (a service or a port-forward):
    /// the original tuple is client → frontend, `nat_addr`/`nat_port` of the
    /// connection entry are the backend's, and the reverse entry holds the
    /// frontend (see [`dnat_reply_key`]).
    pub const DNAT: u8 = 64;
    /// With [`DNAT`]: the backend is the client itself (a hairpin); the
    /// connection also has the gateway address as its source, so the
    /// backend's replies come back to the node.
    pub const HAIRPIN: u8 = 128;
}

/// Sequence tracking of one direction of a TCP connection (netfilter's
/// `ip_ct_tcp_state`, simplified): enough to accept a RST only in-window.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpDir {
    /// The end of the highest segment this side sent (seq + length, SYN
    /// and FIN counted), host order; valid once the side was seen.
    pub end: u32,
    /// The largest window this side advertised (unscaled; at least 1 once
    /// seen).
    pub max_win: u32,
}

/// A tracked, translated connection, keyed by its original tuple (as the
/// pod, or for a node connection the node, sent it).
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
    /// packet (updated at most once a second per connection, and on every
    /// state change).
    pub created_ns: u64,
    pub last_seen_ns: u64,
    pub packets_orig: u64,
    pub packets_reply: u64,
    /// TCP sequence tracking: `[original, reply]`.
    pub tcp: [TcpDir; 2],
}

/// Reverse NAT: where a reply to `nat_addr:nat_port` goes back to. The
/// entry is the claim of that external tuple: it exists from the moment a
/// connection takes the tuple until that connection (or a proof that
/// nothing owns it) releases it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RevNat {
    /// The original source: the pod's (or the node's) address and port.
    pub addr: [u8; 4],
    pub port: u16,
    /// [`ct_flags::NODE`] for the node's own connections.
    pub flags: u8,
    pub _pad: u8,
    /// When the tuple was claimed (CLOCK_MONOTONIC): a reverse entry whose
    /// connection entry is missing is only treated as an orphan once older
    /// than [`REVNAT_ORPHAN_GRACE_NS`] (its connection may be being created).
    pub created_ns: u64,
}

/// How long a fresh reverse entry without its connection entry is left
/// alone: the datapath claims the tuple first and inserts the connection
/// right after, on the same CPU, within microseconds.
pub const REVNAT_ORPHAN_GRACE_NS: u64 = 2_000_000_000;

impl RevNat {
    /// Whether this reverse entry was made for the connection whose
    /// original tuple is `orig`: for a source translation it holds the
    /// original source, for a destination translation ([`ct_flags::DNAT`])
    /// the original destination (the frontend). The rest of the original
    /// tuple is in the reverse entry's key ([`original_of`]).
    pub const fn leads_back(&self, orig: &CtKey) -> bool {
        let (addr, port) = if self.flags & ct_flags::DNAT != 0 {
            (orig.daddr, orig.dport)
        } else {
            (orig.saddr, orig.sport)
        };
        self.addr[0] == addr[0]
            && self.addr[1] == addr[1]
            && self.addr[2] == addr[2]
            && self.addr[3] == addr[3]
            && self.port == port
    }
}

/// The original tuple the reverse entry `rev` at `reply` was made for.
///
/// - Source NAT: `reply` is remote → NAT address; the original is
///   `rev` (the pod) → remote.
/// - Destination NAT ([`ct_flags::DNAT`]): `reply` is backend → client;
///   the original is client → `rev` (the frontend). For a hairpin
///   ([`ct_flags::HAIRPIN`]) `reply` is backend → gateway and the client
///   is the backend itself, with its own port (a hairpin keeps the
///   client's port).
pub const fn original_of(reply: &CtKey, rev: &RevNat) -> CtKey {
    if rev.flags & ct_flags::DNAT != 0 {
        let client = if rev.flags & ct_flags::HAIRPIN != 0 {
            reply.saddr
        } else {
            reply.daddr
        };
        return CtKey {
            saddr: client,
            daddr: rev.addr,
            sport: reply.dport,
            dport: rev.port,
            proto: reply.proto,
            _pad: [0; 3],
        };
    }
    CtKey {
        saddr: rev.addr,
        daddr: reply.saddr,
        sport: rev.port,
        dport: reply.sport,
        proto: reply.proto,
        _pad: [0; 3],
    }
}

/// The reply tuple of a destination-translated connection `orig` (client
/// → frontend) given backend `backend:backend_port`: what the backend sends
/// back (the key of its reverse entry). `hairpin_src` is the gateway
/// address for a hairpin ([`ct_flags::HAIRPIN`]: the backend is the client
/// and sees the connection coming from the gateway), `None` otherwise.
pub const fn dnat_reply_key(
    orig: &CtKey,
    backend: [u8; 4],
    backend_port: u16,
    hairpin_src: Option<[u8; 4]>,
) -> CtKey {
    CtKey {
        saddr: backend,
        daddr: match hairpin_src {
            Some(gw) => gw,
            None => orig.saddr,
        },
        sport: backend_port,
        dport: orig.sport,
        proto: orig.proto,
        _pad: [0; 3],
    }
}

/// The reply tuple of the connection `e` at original tuple `orig`, whatever
/// its translation: [`reply_key`] for a source translation,
/// [`dnat_reply_key`] for a destination one (`gateway`: the node settings'
/// gateway, the source of a hairpin).
pub const fn reply_of(orig: &CtKey, e: &CtEntry, gateway: [u8; 4]) -> CtKey {
    if e.flags & ct_flags::DNAT != 0 {
        let hairpin = if e.flags & ct_flags::HAIRPIN != 0 {
            Some(gateway)
        } else {
            None
        };
        dnat_reply_key(orig, e.nat_addr, e.nat_port, hairpin)
    } else {
        reply_key(orig, e.nat_addr, e.nat_port)
    }
}

/// Key of the frontend map: where clients send. Ports host order.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrontendKey {
    /// A service VIP, or a node address (port-forwards).
    pub addr: [u8; 4],
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub proto: u8,
    pub _pad: u8,
}

/// [`Frontend::flags`] bits.
pub mod frontend_flags {
    /// A port-forward (`hostPort`, `iptables -t nat ... DNAT`), not a
    /// service VIP.
    pub const PORT_FORWARD: u8 = 1;
    /// ClientIP session affinity: a client's new connections go to the
    /// backend its last one got, while within the timeout.
    pub const AFFINITY: u8 = 2;
}

/// A frontend: its backends are `BackendKey { frontend: id, index: 0.. }`
/// and its Maglev table is the chunks `MaglevKey { frontend: id,
/// generation: maglev_gen, chunk: 0.. }` of `maglev_v3` (see [`crate::lb`]).
/// Written whole by the controller (a hash update replaces the element
/// atomically), so a program reads a size and a generation of one table.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frontend {
    /// Stable identifier, assigned by the controller (never 0).
    pub id: u32,
    /// Number of backends; 0 rejects new connections (TCP RST, ICMP port
    /// unreachable).
    pub backends: u16,
    /// [`frontend_flags`] bits.
    pub flags: u8,
    pub _pad: u8,
    /// ClientIP affinity timeout, seconds (with [`frontend_flags::AFFINITY`]).
    pub affinity_timeout_secs: u32,
    /// Slots of its Maglev table (one of [`crate::lb::MAGLEV_SIZES`]); 0:
    /// no table (no backends).
    pub maglev_size: u32,
    /// Generation of its Maglev table: the chunks to read.
    pub maglev_gen: u16,
    pub _pad2: u16,
}

/// Key of the backend map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BackendKey {
    /// [`Frontend::id`].
    pub frontend: u32,
    /// The backend's index, as the Maglev table holds it; stable while the
    /// backend stays.
    pub index: u32,
}

/// A backend: the destination a new connection to its frontend gets.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backend {
    pub addr: [u8; 4],
    /// Host order.
    pub port: u16,
    /// Reserved; 0.
    pub flags: u8,
    pub _pad: u8,
}

/// Key of the affinity map: one client of one frontend.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AffinityKey {
    pub frontend: u32,
    pub client: [u8; 4],
}

/// The backend a client's connections to a frontend go to, and when the
/// client last opened one (CLOCK_MONOTONIC).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Affinity {
    pub index: u32,
    pub _pad: u32,
    pub last_used_ns: u64,
}

/// A prefilter deny rule: packets from its source prefix are dropped by
/// XDP before any skb is built (`drop_xdp_prefilter`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DenyRule {
    /// The rule's position in the configuration (for `netpath` to report).
    pub id: u32,
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
    // Connection tracking and NAT consistency (conntrack.rs, nat.rs,
    // to_uplink.rs).
    /// Drop: a TCP packet that opens nothing (RST, SYN-ACK, or no ACK) and
    /// belongs to no tracked connection (netfilter: INVALID).
    DropCtInvalid = "drop_ct_invalid",
    /// Drop: the reverse NAT map is full (no entry can be claimed).
    DropNatTableFull = "drop_nat_table_full",
    /// Drop: the NAT path's per-CPU scratch slot was missing (never
    /// expected: the slot always exists).
    DropNatScratch = "drop_nat_scratch",
    /// Info: a missing reverse entry of a live connection was re-inserted.
    NatRepairReverse = "nat_repair_reverse",
    /// Info: a missing connection entry was re-created from its reverse
    /// entry by a reply.
    NatRepairForward = "nat_repair_forward",
    /// Info: a connection's external tuple was found held by another
    /// connection; the connection was given a new mapping.
    NatConflict = "nat_conflict",
    /// Info: a reverse entry proved not to belong to its connection (a
    /// stale mapping) was deleted; its packet went to the node's stack.
    NatStaleReverse = "nat_stale_reverse",
    /// Info: two CPUs created one connection; the loser took the winner's
    /// mapping and released its own claim.
    NatRaceLost = "nat_race_lost",
    /// Info: a TCP RST outside the tracked window was forwarded without
    /// closing its connection.
    CtRstOutOfWindow = "ct_rst_out_of_window",
    /// Info: a node connection whose port a pod's translated flow holds was
    /// translated to another port (`np_to_uplink`).
    NodeNatNew = "node_nat_new",
    /// Verdict: a node packet left through `np_to_uplink` (translated or
    /// not).
    NodePass = "node_pass",
    /// Drop: no free port for a node connection that collides with a pod's
    /// translated flow.
    DropNodeNatNoPort = "drop_node_nat_no_port",
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
    // --- DNAT: port-forwards and services (stats_v4; dnat.rs, lb.rs) ---
    /// Info: a new connection to a frontend got a backend (Maglev).
    DnatNew = "dnat_new",
    /// Info: a new connection's backend came from ClientIP affinity.
    LbAffinityHit = "lb_affinity_hit",
    /// Info: a pod reached a frontend that selected the pod itself; the
    /// connection got the gateway as its source (hairpin).
    DnatHairpin = "dnat_hairpin",
    /// Verdict: a packet to a frontend was translated to its backend and
    /// delivered to it (a local pod).
    FwdDnat = "fwd_dnat",
    /// Verdict: a backend's reply was translated back (the frontend as its
    /// source) and forwarded to the client.
    FwdRevDnat = "fwd_revdnat",
    /// Verdict: a new connection to a frontend without backends was
    /// refused (TCP RST, or ICMP port unreachable from the frontend).
    ReplyNoBackend = "reply_no_backend",
    /// Drop: a frontend without backends, and no refusal could be sent
    /// (a fragment, or a packet that may not be answered).
    DropNoBackend = "drop_no_backend",
    /// Drop: the Maglev table or a backend it names was missing (a
    /// frontend being updated).
    DropLbBackendMissing = "drop_lb_backend_missing",
    /// Drop: the backend's reply tuple for this connection is held by
    /// another connection (two frontends leading one client port to one
    /// backend).
    DropDnatTupleTaken = "drop_dnat_tuple_taken",
    /// Drop: a packet from an uplink to a frontend whose backend is not a
    /// local pod (backends off the node are reachable from pods only).
    DropDnatRemoteBackend = "drop_dnat_remote_backend",
    /// Info: an ICMP error about a destination-translated connection was
    /// translated (quoted header included).
    IcmpErrorDnat = "icmp_error_dnat",
    /// Info: the node's own socket connecting to a frontend got a backend
    /// at `connect()`/`sendmsg()` time.
    SockLbConnect = "sock_lb_connect",
    /// Info: the node's own socket connecting to a frontend without
    /// backends was refused (`ECONNREFUSED`).
    SockLbNoBackend = "sock_lb_no_backend",
    // --- XDP on the uplink (stats_v4; xdp_uplink.rs) ---
    /// Verdict: XDP left the packet to the TC program (first packets,
    /// fragments, unknown flows, anything it cannot handle).
    XdpPass = "xdp_pass",
    /// Drop: the source matched the prefilter's deny list.
    DropXdpPrefilter = "drop_xdp_prefilter",
    /// Verdict: XDP translated a reply of a masqueraded connection and
    /// redirected it to its pod.
    XdpFwdRevSnat = "xdp_fwd_revsnat",
    /// Verdict: XDP translated a packet of an established port-forward or
    /// service connection and redirected it to its backend pod.
    XdpFwdDnat = "xdp_fwd_dnat",
    /// Verdict: XDP passed a packet it would have redirected because the
    /// redirect failed; TC handles it.
    XdpRedirectFailed = "xdp_redirect_failed",
    // --- several nodes (peers_v1; peer.rs, tunnel.rs) ---
    /// Verdict: a packet to a peer node's pod routed unchanged to that
    /// node's address (direct routing).
    FwdToPeer = "fwd_to_peer",
    /// Verdict: a packet from a peer node's pod delivered to a local pod
    /// (direct routing, from the uplink).
    FwdFromPeer = "fwd_from_peer",
    /// Verdict: a packet to a peer node's pod encapsulated in VXLAN.
    TunnelEncap = "tunnel_encap",
    /// Verdict: a decapsulated packet from a peer node's pod delivered to
    /// a local pod.
    TunnelDecap = "tunnel_decap",
    /// Drop: the tunnel key could not be set or the redirect into the
    /// VXLAN device failed.
    DropTunnelEncap = "drop_tunnel_encap",
    /// Drop: a decapsulated packet that is not IPv4 from a peer's pod to a
    /// local pod.
    DropTunnelDecap = "drop_tunnel_decap",
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
    unsafe impl aya::Pod for super::TcpDir {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::FragEntry {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::FrontendKey {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::Frontend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::BackendKey {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::Backend {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::AffinityKey {}
    // SAFETY: as above (`_pad` is always zero).
    unsafe impl aya::Pod for super::Affinity {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::DenyRule {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::lb::MaglevKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::lb::MaglevChunk {}
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
        assert_eq!(core::mem::size_of::<CtEntry>(), 8 + 4 * 8 + 16);
        assert_eq!(core::mem::size_of::<RevNat>(), 16);
        // fib_ifindex, the port range, 11 timeouts, the gateway, the cookie,
        // the flags.
        assert_eq!(
            core::mem::size_of::<NodeSettings>(),
            4 + 4 + 11 * 4 + 4 + 8 + 4 + 4
        );
        assert_eq!(core::mem::size_of::<FrontendKey>(), 8);
        assert_eq!(core::mem::size_of::<Frontend>(), 20);
        assert_eq!(core::mem::size_of::<BackendKey>(), 8);
        assert_eq!(core::mem::size_of::<Backend>(), 8);
        assert_eq!(core::mem::size_of::<AffinityKey>(), 8);
        assert_eq!(core::mem::size_of::<Affinity>(), 16);
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

    fn tcp_entry(state: u8, flags: u8, last_seen_s: u64) -> CtEntry {
        CtEntry {
            nat_addr: [192, 168, 50, 2],
            nat_port: 40000,
            state,
            flags,
            created_ns: 0,
            last_seen_ns: last_seen_s * 1_000_000_000,
            packets_orig: 1,
            packets_reply: 0,
            tcp: [TcpDir::default(); 2],
        }
    }

    #[test]
    fn timeouts_are_netfilters() {
        let s = NodeSettings::DEFAULT;
        for (state, secs) in [
            (ct_state::TCP_SYN_SENT, 120),
            (ct_state::TCP_SYN_RECV, 60),
            (ct_state::TCP_ESTABLISHED, 432_000),
            (ct_state::TCP_FIN_WAIT, 120),
            (ct_state::TCP_CLOSE_WAIT, 60),
            (ct_state::TCP_LAST_ACK, 30),
            (ct_state::TCP_TIME_WAIT, 120),
            (ct_state::TCP_CLOSE, 10),
            (ct_state::UDP_UNREPLIED, 30),
            (ct_state::UDP_REPLIED, 30),
            (ct_state::UDP_STREAM, 120),
            (ct_state::ICMP, 30),
        ] {
            assert_eq!(s.ct_timeout_secs(state), secs, "{}", ct_state::name(state));
            assert_ne!(ct_state::name(state), "?");
        }
    }

    #[test]
    fn a_mid_stream_pickup_is_capped_until_both_sides_are_seen() {
        let s = NodeSettings::DEFAULT;
        let e = tcp_entry(
            ct_state::TCP_ESTABLISHED,
            ct_flags::PICKUP | ct_flags::SEEN_ORIG,
            0,
        );
        assert_eq!(s.ct_timeout_of(&e), 300);
        assert!(!s.ct_expired(&e, 300_000_000_000));
        assert!(s.ct_expired(&e, 300_000_000_001));
        let answered = CtEntry {
            flags: e.flags | ct_flags::SEEN_REPLY,
            ..e
        };
        assert_eq!(s.ct_timeout_of(&answered), 432_000);
        // The cap never lengthens a shorter timeout.
        let closing = CtEntry {
            state: ct_state::TCP_CLOSE,
            ..e
        };
        assert_eq!(s.ct_timeout_of(&closing), 10);
        // A connection opened with a SYN is not capped.
        let syn = tcp_entry(ct_state::TCP_ESTABLISHED, ct_flags::SEEN_ORIG, 0);
        assert_eq!(s.ct_timeout_of(&syn), 432_000);
    }

    #[test]
    fn expiry_needs_time_past_the_timeout_and_tolerates_a_future_stamp() {
        let s = NodeSettings::DEFAULT;
        let e = tcp_entry(ct_state::TCP_CLOSE, 0, 100);
        assert!(!s.ct_expired(&e, 110_000_000_000));
        assert!(s.ct_expired(&e, 110_000_000_001));
        // Another CPU may have stamped the entry after our `now`.
        assert!(!s.ct_expired(&e, 50_000_000_000));
    }

    #[test]
    fn a_reverse_entry_leads_back_to_its_original() {
        let orig = CtKey {
            saddr: [10, 200, 0, 2],
            daddr: [192, 168, 50, 1],
            sport: 41000,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        };
        let reply = reply_key(&orig, [192, 168, 50, 2], 40001);
        let rev = RevNat {
            addr: orig.saddr,
            port: orig.sport,
            flags: 0,
            _pad: 0,
            created_ns: 0,
        };
        assert!(rev.leads_back(&orig));
        assert_eq!(original_of(&reply, &rev), orig);
        assert!(!RevNat { port: 41001, ..rev }.leads_back(&orig));
        assert!(maps::revnat_max(maps::CONNTRACK_DEFAULT_MAX) > maps::CONNTRACK_DEFAULT_MAX);
    }

    #[test]
    fn a_dnat_reverse_entry_leads_back_to_client_and_frontend() {
        let orig = CtKey {
            saddr: [192, 168, 50, 1],
            daddr: [192, 168, 50, 2],
            sport: 5555,
            dport: 8080,
            proto: 6,
            _pad: [0; 3],
        };
        let reply = dnat_reply_key(&orig, [10, 200, 0, 3], 80, None);
        assert_eq!(reply.saddr, [10, 200, 0, 3]);
        assert_eq!(reply.daddr, orig.saddr);
        let rev = RevNat {
            addr: orig.daddr,
            port: orig.dport,
            flags: ct_flags::DNAT,
            _pad: 0,
            created_ns: 0,
        };
        assert!(rev.leads_back(&orig));
        assert_eq!(original_of(&reply, &rev), orig);

        // A hairpin: pod 10.200.0.3 reaches a VIP that selects itself.
        let orig = CtKey {
            saddr: [10, 200, 0, 3],
            daddr: [10, 96, 0, 10],
            sport: 41000,
            dport: 80,
            proto: 6,
            _pad: [0; 3],
        };
        let gw = [10, 200, 0, 1];
        let reply = dnat_reply_key(&orig, orig.saddr, 80, Some(gw));
        let rev = RevNat {
            addr: orig.daddr,
            port: orig.dport,
            flags: ct_flags::DNAT | ct_flags::HAIRPIN,
            _pad: 0,
            created_ns: 0,
        };
        assert_eq!(reply.daddr, gw);
        assert_eq!(original_of(&reply, &rev), orig);
        let e = CtEntry {
            flags: ct_flags::DNAT | ct_flags::HAIRPIN,
            nat_addr: orig.saddr,
            nat_port: 80,
            ..tcp_entry(ct_state::TCP_SYN_SENT, 0, 0)
        };
        assert_eq!(reply_of(&orig, &e, gw), reply);
    }
}

/// The socket load balancer's reverse map (`np_sock_*` cgroup hooks): a
/// socket of the node that `connect()`ed or `sendmsg()`ed to a frontend
/// is shown its frontend, not the backend it got, by `getpeername()` and
/// `recvmsg()`.
pub mod sock {
    /// Name of the map: LRU [`SockRevKey`] → [`SockRevNat`].
    pub const REVNAT_MAP: &str = "sock_revnat_v1";
    /// Sockets (× backends each talks to) remembered at once; the least
    /// recently used go first (a long-idle socket then shows the backend).
    pub const REVNAT_MAX: u32 = 65_536;

    /// One socket's view of one backend: the socket cookie and the backend
    /// it was sent to. The backend is in the key so that one unconnected UDP
    /// socket can talk to several frontends (`recvmsg` sees the backend as
    /// the datagram's source and must find which frontend it stands for).
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct SockRevKey {
        /// `bpf_get_socket_cookie()`.
        pub cookie: u64,
        pub backend: [u8; 4],
        /// Host order.
        pub port: u16,
        pub _pad: u16,
    }

    /// The frontend a socket asked for.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct SockRevNat {
        pub frontend: [u8; 4],
        /// Host order.
        pub port: u16,
        pub _pad: u16,
    }

    #[cfg(feature = "user")]
    mod user {
        // SAFETY: plain `#[repr(C)]` data with no padding and no pointers
        // (`_pad` is always zero).
        unsafe impl aya::Pod for super::SockRevKey {}
        // SAFETY: as above.
        unsafe impl aya::Pod for super::SockRevNat {}
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn layouts_have_no_padding() {
            assert_eq!(core::mem::size_of::<super::SockRevKey>(), 16);
            assert_eq!(core::mem::size_of::<super::SockRevNat>(), 8);
        }
    }
}
