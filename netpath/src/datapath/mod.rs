//! The datapath in the kernel: loading the eBPF object ([`load`]), its pins
//! ([`pins`]), attaching programs to interfaces ([`attach`]) and typed access
//! to its maps ([`maps`]).
//!
//! Dependencies point one way: `error` and `pins` are leaves; `maps` opens pinned maps
//! through `pins`; `load` and `attach` use both.
//!
//! Everything one netpath instance puts in the kernel is pinned under
//! `/sys/fs/bpf/netpath/<instance>/`:
//!
//! ```text
//! maps/endpoints_v1   local pods          (bpftool map dump pinned ...)
//! maps/stats_v4       per-CPU counters
//! maps/routes_v1      declared routes (LPM)
//! maps/masq_v1        masquerade rules (LPM on the source)
//! maps/settings_v5    node settings (NAT port range, timeouts, flags, ...)
//! maps/pod_stats_v1   per-pod counters (per-CPU, by host veth ifindex)
//! maps/peers_v1       other nodes' pod CIDRs (LPM): direct routing, VXLAN
//! maps/conntrack_v2   translated connections (LRU)
//! maps/revnat_v2      reverse NAT (hash)
//! maps/events_v1      the monitor's ring buffer (`netpath monitor`), and
//!   monitor_v1, event_bucket_v1, events_lost_v1: its lease, rate, losses
//! progs/np_from_pod   TC program on each pod's host-side veth
//! progs/np_from_uplink  TC program on each uplink
//! links/<ifname>_ingress  tcx link of a program on <ifname>
//! ```
//!
//! Maps are reused from their pins when they exist and have the layout the
//! object expects (`load::expected_layouts`; otherwise they are recreated,
//! with a warning, and pins of older maps removed), so a restarted
//! controller keeps the datapath's state; links are tcx links (kernel ≥ 6.6)
//! pinned so that they outlive the process that made them, and a reload
//! replaces the program behind each link atomically.

pub mod attach;
mod error;
pub mod events;
pub mod lb_maps;
pub mod load;
pub mod maps;
pub mod peers;
pub mod pins;
pub mod pod_stats;
pub mod sock;
pub mod xdp;

pub use error::DatapathError;
pub use load::{Datapath, LoadOptions, log_level, pinned_logger};
pub use maps::{MapsError, NodeMaps};
pub use pins::{BPFFS, PIN_ROOT, PinDir, PinError, ensure_bpffs, remove_pin};
