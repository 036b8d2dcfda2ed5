//! The socket load balancer's programs (`netpath-ebpf/src/sock.rs`):
//! cgroup `sock_addr` hooks on the root cgroup v2, pinned as
//! `links/sock_<program>` so that they outlive the process that attached
//! them, and the node namespace's cookie that tells them where to act.
//!
//! The root cgroup holds every process of the machine: the programs act
//! only on sockets whose namespace cookie is `NodeSettings::netns_cookie`
//! (see [`netns_cookie`]), and are attached as links, which the kernel
//! always attaches with `BPF_F_ALLOW_MULTI`: several instances (and other
//! software) coexist.

use std::{
    fs::File,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::{Path, PathBuf},
};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, links::FdLink},
};
use netpath_common::progs;

use super::{error::DatapathError, load::Datapath, pins::PinDir, xdp::detach_pinned};
use crate::sys::netns::Netns;

/// Where the cgroup v2 hierarchy is mounted: its root is where the hooks
/// are attached. The first that is a cgroup v2 mount: the unified layout's
/// `/sys/fs/cgroup`, the hybrid layout's `/sys/fs/cgroup/unified`.
pub const CGROUP2_ROOTS: [&str; 2] = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"];

/// The socket load balancer's programs.
const SOCK_PROGS: [&str; 4] = [
    progs::SOCK_CONNECT,
    progs::SOCK_SENDMSG,
    progs::SOCK_RECVMSG,
    progs::SOCK_GETPEERNAME,
];

/// Errors of the socket load balancer's setup.
#[derive(Debug, thiserror::Error)]
pub enum SockLbError {
    #[error(
        "no cgroup v2 mount at /sys/fs/cgroup or /sys/fs/cgroup/unified; the socket load \
         balancer attaches to the root cgroup v2: mount it with \
         `mount -t cgroup2 none /sys/fs/cgroup/unified` (or boot with \
         systemd.unified_cgroup_hierarchy=1)"
    )]
    NoCgroup2,
    #[error("cannot open the cgroup {path}: {source}")]
    OpenCgroup { path: PathBuf, source: io::Error },
    #[error("cannot read the node namespace's cookie (SO_NETNS_COOKIE, kernel 5.14+): {source}")]
    NetnsCookie { source: io::Error },
    #[error("cannot attach {prog} to the cgroup {path}: {source}")]
    Attach {
        prog: &'static str,
        path: PathBuf,
        source: aya::programs::ProgramError,
    },
}

/// Loads (and pins) the socket hooks of the object.
pub(super) fn load_programs(ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<(), DatapathError> {
    for name in SOCK_PROGS {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::LoadProgram { name, source })?;
        prog.load()
            .map_err(|source| DatapathError::LoadProgram { name, source })?;
        super::load::pin_program(ebpf, pins, name)?;
    }
    Ok(())
}

/// The pin of the link of hook `name`.
fn link_pin(pins: &PinDir, name: &str) -> PathBuf {
    pins.root().join("links").join(format!("sock_{name}"))
}

/// Whether every socket hook's link is pinned.
pub fn sock_lb_pinned(pins: &PinDir) -> bool {
    SOCK_PROGS.iter().all(|name| link_pin(pins, name).exists())
}

/// Whether `path` is a cgroup v2 mount.
fn is_cgroup2(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// `SO_NETNS_COOKIE` (Linux 5.14; not in the libc crate's list).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// The cookie of the network namespace `netns` (`SO_NETNS_COOKIE` of a
/// socket opened in it): what `bpf_get_netns_cookie` returns for its
/// sockets.
pub fn netns_cookie(netns: &Netns) -> Result<u64, DatapathError> {
    let cookie = netns
        .run(|| {
            // SAFETY: plain socket syscalls; the descriptor is owned at once.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor nothing else owns.
            let sock = unsafe { OwnedFd::from_raw_fd(fd) };
            let mut cookie: u64 = 0;
            let mut len = size_of::<u64>() as libc::socklen_t;
            // SAFETY: `cookie` and `len` live across the call and are as
            // large as `len` says.
            let ret = unsafe {
                libc::getsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    SO_NETNS_COOKIE,
                    (&raw mut cookie).cast(),
                    &raw mut len,
                )
            };
            if ret != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(cookie)
        })?
        .map_err(|source| SockLbError::NetnsCookie { source })?;
    Ok(cookie)
}

impl Datapath {
    /// Attaches the socket hooks to the root cgroup v2 ([`CGROUP2_ROOTS`])
    /// and pins their links (`links/sock_<program>`). A hook already
    /// attached by an earlier apply is replaced: the new link is attached
    /// first, then the old one detached (both running for a moment is
    /// harmless: the second sees a backend, no frontend).
    pub fn attach_sock_lb(&mut self) -> Result<(), DatapathError> {
        let root = CGROUP2_ROOTS
            .iter()
            .map(PathBuf::from)
            .find(|p| is_cgroup2(p))
            .ok_or(SockLbError::NoCgroup2)?;
        let cgroup = File::open(&root).map_err(|source| SockLbError::OpenCgroup {
            path: root.clone(),
            source,
        })?;
        for name in SOCK_PROGS {
            let prog: &mut CgroupSockAddr = self
                .ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(|source| DatapathError::LoadProgram { name, source })?;
            let attach_err = |source| SockLbError::Attach {
                prog: name,
                path: root.clone(),
                source,
            };
            // A cgroup bpf_link is always attached as `BPF_F_ALLOW_MULTI`,
            // and `bpf_link_create` refuses any flag: `Single` is 0.
            let id = prog
                .attach(&cgroup, CgroupAttachMode::Single)
                .map_err(attach_err)?;
            let Some(pins) = &self.pins else {
                continue;
            };
            let link = prog.take_link(id).map_err(attach_err)?;
            let path = link_pin(pins, name);
            let fd_link = FdLink::try_from(link).map_err(|source| DatapathError::Link {
                path: path.clone(),
                source,
            })?;
            detach_pinned(&path)?;
            fd_link.pin(&path).map_err(|source| DatapathError::Pin {
                what: format!("cgroup link of {name}"),
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// Detaches the socket hooks (their pinned links).
    pub fn detach_sock_lb(&self) -> Result<(), DatapathError> {
        if let Some(pins) = &self.pins {
            for name in SOCK_PROGS {
                detach_pinned(&link_pin(pins, name))?;
            }
        }
        Ok(())
    }
}

impl From<SockLbError> for DatapathError {
    fn from(e: SockLbError) -> Self {
        DatapathError::SockLb(Box::new(e))
    }
}
