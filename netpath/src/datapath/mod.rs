//! The datapath in the kernel: loading the eBPF object ([`load`]), its pins
//! ([`pins`]), attaching programs to interfaces ([`attach`]) and typed access
//! to its maps ([`maps`]).
//!
//! Dependencies point one way: `pins` is a leaf; `maps` opens pinned maps
//! through `pins`; `load` and `attach` use both.
//!
//! Everything one netpath instance puts in the kernel is pinned under
//! `/sys/fs/bpf/netpath/<instance>/`:
//!
//! ```text
//! maps/endpoints_v1   local pods          (bpftool map dump pinned ...)
//! maps/stats_v1       per-CPU counters
//! maps/routes_v1      declared routes (LPM)
//! maps/masq_v1        masquerade rules (LPM on the source)
//! maps/settings_v1    node settings (NAT port range, timeouts, ...)
//! maps/conntrack_v1   translated connections (LRU)
//! maps/revnat_v1      reverse NAT (LRU)
//! progs/np_from_pod   TC program on each pod's host-side veth
//! progs/np_from_uplink  TC program on each uplink
//! links/<ifname>_ingress  tcx link of a program on <ifname>
//! ```
//!
//! Maps are reused from their pins when they exist, so a restarted
//! controller keeps the datapath's state; links are tcx links (kernel ≥ 6.6)
//! pinned so that they outlive the process that made them, and a reload
//! replaces the program behind each link atomically.

use std::{io, path::PathBuf};

use aya::{
    EbpfError,
    programs::{ProgramError, links::LinkError},
};

use crate::sys::netns::NetnsError;

pub mod attach;
pub mod load;
pub mod maps;
pub mod pins;

pub use load::{Datapath, LoadOptions, log_level, pinned_logger};
pub use maps::{MapsError, NodeMaps};
pub use pins::{BPFFS, PIN_ROOT, PinDir, ensure_bpffs, remove_pin};

/// Errors of loading, pinning and attaching the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error(
        "bpffs is not mounted at {BPFFS} and mounting it failed: {source}; \
         mount it with `mount -t bpf bpf {BPFFS}` (needs CAP_SYS_ADMIN)"
    )]
    MountBpffs { source: nix::Error },
    #[error("{path} is not a bpffs mount; mount one with `mount -t bpf bpf {BPFFS}`")]
    NotBpffs { path: PathBuf },
    #[error("cannot create pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error(
        "loading the eBPF object failed: {source}. netpath needs root (CAP_BPF and \
         CAP_NET_ADMIN) and a kernel with BTF (6.6 or newer)"
    )]
    Load { source: EbpfError },
    #[error("the eBPF object has no program {name}")]
    MissingProgram { name: &'static str },
    #[error("the kernel rejected program {name}: {source}")]
    LoadProgram {
        name: &'static str,
        source: ProgramError,
    },
    #[error("cannot pin {what} at {path}: {source}")]
    Pin {
        what: String,
        path: PathBuf,
        source: aya::pin::PinError,
    },
    #[error("cannot remove pin {path}: {source}")]
    Unpin { path: PathBuf, source: io::Error },
    #[error("cannot attach {prog} to {ifname} ingress (tcx, kernel 6.6 or newer): {source}")]
    Attach {
        prog: &'static str,
        ifname: String,
        source: ProgramError,
    },
    #[error("cannot reuse the pinned link {path}: {source}")]
    Link { path: PathBuf, source: LinkError },
    #[error(
        "cannot read the programs' log buffer: {source}; were they loaded with \
         NETPATH_EBPF_LOG set (e.g. NETPATH_EBPF_LOG=debug netpath apply ...)?"
    )]
    Logger { source: aya_log::Error },
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Maps(#[from] MapsError),
}
