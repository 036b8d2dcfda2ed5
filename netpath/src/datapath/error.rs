//! Errors of loading, pinning and attaching the datapath.

use std::path::PathBuf;

use aya::{
    EbpfError,
    programs::{ProgramError, links::LinkError},
};

use super::{maps::MapsError, pins::PinError};
use crate::sys::netns::NetnsError;

/// Errors of loading, pinning and attaching the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
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
    Pins(#[from] PinError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    SockLb(Box<super::sock::SockLbError>),
}
