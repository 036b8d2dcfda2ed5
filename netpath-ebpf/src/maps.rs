//! Every map of the datapath, in one place. Names and layouts come from
//! `netpath-common`; userspace pins each under
//! `/sys/fs/bpf/netpath/<instance>/maps/<name>`.
//!
//! These are BTF maps (`.maps` section), so `bpftool map dump` prints the
//! field names of keys and values.

use aya_ebpf::{
    btf_maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
    macros::btf_map,
};
use netpath_common::{
    Counter, CtEntry, CtKey, Endpoint, EndpointKey, MasqKey, MasqRule, NodeSettings, RevNat,
    RouteKey, RouteNextHop, STAT_COUNT, maps,
};

/// Local pods by address.
#[btf_map(name = "endpoints_v1")]
pub static ENDPOINTS: HashMap<EndpointKey, Endpoint, { maps::ENDPOINTS_MAX as usize }> =
    HashMap::new();

/// A counter per verdict and drop reason, per CPU.
#[btf_map(name = "stats_v4")]
pub static STATS: PerCpuArray<Counter, { STAT_COUNT as usize }> = PerCpuArray::new();

/// Declared routes (longest prefix match on the destination).
#[btf_map(name = "routes_v1")]
pub static ROUTES: LpmTrie<RouteKey, RouteNextHop, { maps::ROUTES_MAX as usize }> = LpmTrie::new();

/// Masquerade rules (the egress interface, then longest prefix match on
/// the source).
#[btf_map(name = "masq_v1")]
pub static MASQ: LpmTrie<MasqKey, MasqRule, { maps::MASQ_MAX as usize }> = LpmTrie::new();

/// Node settings in slot 0 (v5: the flags, `netpath_common::node_flags`).
#[btf_map(name = "settings_v5")]
pub static SETTINGS: Array<NodeSettings, 1> = Array::new();

/// Translated connections by original tuple (LRU: a full table evicts the
/// least recently used connection). The size is set at load time. See
/// `nat.rs` for the invariants this map and [`REVNAT`] keep together.
#[btf_map(name = "conntrack_v2")]
pub static CONNTRACK: LruHashMap<CtKey, CtEntry, { maps::CONNTRACK_DEFAULT_MAX as usize }> =
    LruHashMap::new();

/// Reverse NAT by reply tuple: the claims of external tuples. A plain hash,
/// never evicted (see `nat.rs` for why); `maps::revnat_max` of the
/// connection table's size, set at load time.
#[btf_map(name = "revnat_v2")]
pub static REVNAT: HashMap<
    CtKey,
    RevNat,
    { maps::revnat_max(maps::CONNTRACK_DEFAULT_MAX) as usize },
> = HashMap::new();

// --- router, fragments and anti-spoofing (branch `router`) ---

/// The translation each fragmented datagram's first fragment got, for its
/// later fragments (`frag.rs`). Not pinned: it holds at most
/// [`netpath_common::FRAG_TIMEOUT_SECS`] of state, and a reload losing it
/// costs only the datagrams in flight.
#[btf_map(name = "frags_v1")]
pub static FRAGS: LruHashMap<
    netpath_common::FragKey,
    netpath_common::FragEntry,
    { maps::FRAGS_MAX as usize },
> = LruHashMap::new();

// The per-CPU scratch slots live beside the types they hold (`nat`,
// `from_pod`, `icmp_reply`): this module imports no walk.

// --- DNAT: port-forwards and services, and the XDP prefilter ---

/// Frontends: service VIPs and forwarded node ports. Not preallocated
/// (`BPF_F_NO_PREALLOC`), like the backends and the Maglev chunks: their
/// memory follows the services a node has.
#[btf_map(name = "frontends_v3")]
pub static FRONTENDS: HashMap<
    netpath_common::FrontendKey,
    netpath_common::Frontend,
    { maps::FRONTENDS_MAX as usize },
    { maps::BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Every frontend's backends, by (frontend id, backend index).
#[btf_map(name = "backends_v3")]
pub static BACKENDS: HashMap<
    netpath_common::BackendKey,
    netpath_common::Backend,
    { maps::BACKENDS_MAX as usize },
    { maps::BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// Maglev tables: (frontend id, generation, chunk) → 256 slots' backend
/// indices (`netpath_common::lb`). A plain hash, not a map of maps: the
/// controller writes a new generation's chunks, then the frontend naming
/// them, then deletes the old ones, each a plain update (no RCU grace
/// period per syscall). Not preallocated; `maps::MAGLEV_CHUNKS_MAX` says
/// the memory.
#[btf_map(name = "maglev_v3")]
pub static MAGLEV: HashMap<
    netpath_common::lb::MaglevKey,
    netpath_common::lb::MaglevChunk,
    { maps::MAGLEV_CHUNKS_MAX as usize },
    { maps::BPF_F_NO_PREALLOC as usize },
> = HashMap::new();

/// ClientIP session affinity (LRU).
#[btf_map(name = "affinity_v3")]
pub static AFFINITY: LruHashMap<
    netpath_common::AffinityKey,
    netpath_common::Affinity,
    { maps::AFFINITY_MAX as usize },
> = LruHashMap::new();

/// The XDP prefilter's deny list (longest prefix match on the source).
#[btf_map(name = "prefilter_v1")]
pub static PREFILTER: LpmTrie<
    RouteKey,
    netpath_common::DenyRule,
    { maps::PREFILTER_MAX as usize },
> = LpmTrie::new();

// --- the socket load balancer (`sock.rs`) ---

/// Socket cookie and backend → the frontend the socket asked for (LRU).
#[btf_map(name = "sock_revnat_v1")]
pub static SOCK_REVNAT: LruHashMap<
    netpath_common::sock::SockRevKey,
    netpath_common::sock::SockRevNat,
    { netpath_common::sock::REVNAT_MAX as usize },
> = LruHashMap::new();
