//! Network namespaces: creating, opening, deleting them and running code
//! inside them.
//!
//! Named namespaces live where iproute2 keeps them, as nsfs bind mounts under
//! `/run/netns/NAME`, so `ip netns list`, `ip -n NAME ...` and
//! `ip netns exec NAME ...` see the namespaces netpath makes and netpath sees
//! theirs. Creating and deleting goes through [`rtnetlink::NetworkNamespace`].
//!
//! Nothing here ever moves the calling thread: [`Netns::run`] runs a closure
//! on a fresh scoped thread that enters the namespace, so the rest of the
//! process (and the tokio runtime's worker threads) stay where they are.
//! Sockets keep the namespace they were created in, so a socket (or a netlink
//! connection, see [`crate::sys::netlink::Netlink::connect`]) made inside
//! [`Netns::run`] can be used from any thread afterwards. [`Netns::spawn`]
//! starts a long-lived thread inside a namespace (servers, load generators).
//!
//! This module sits below [`crate::sys::netlink`]: netlink connections are
//! opened through [`Netns::run`], and nothing here speaks rtnetlink except
//! through the [`rtnetlink::NetworkNamespace`] helpers (bringing `lo` up in a
//! new namespace is one `SIOCSIFFLAGS` ioctl).

use std::{
    any::Any,
    fmt, fs, io,
    os::{
        fd::{AsFd, AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
        unix::fs::MetadataExt,
    },
    path::{Path, PathBuf},
    thread,
};

use nix::{sched::CloneFlags, sys::statfs::NSFS_MAGIC};

/// Where iproute2 (and netpath) keeps the bind mounts of named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Errors of creating, opening, deleting and entering network namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error(
        "network namespace {name} does not exist (no {NETNS_DIR}/{name}); \
         create it with `ip netns add {name}` or `Netns::create`"
    )]
    NotFound { name: String },
    #[error(
        "network namespace {name} already exists ({NETNS_DIR}/{name}); \
         delete it with `ip netns del {name}` or pick another name"
    )]
    AlreadyExists { name: String },
    #[error(
        "invalid network namespace name {name:?}: it must be a non-empty file \
         name without '/' (and not \".\" or \"..\")"
    )]
    InvalidName { name: String },
    #[error("cannot create directory {path}: {source}")]
    Mkdir { path: PathBuf, source: io::Error },
    #[error(
        "creating network namespace {name} (`ip netns add {name}`) failed: {source}; \
         this needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN)"
    )]
    Create {
        name: String,
        source: rtnetlink::Error,
    },
    #[error("bringing up lo in the new network namespace {name} failed: {source}")]
    LoopbackUp { name: String, source: io::Error },
    #[error(
        "deleting network namespace {name} (`ip netns del {name}`) failed: {source}; \
         this needs root (CAP_SYS_ADMIN)"
    )]
    Delete {
        name: String,
        source: rtnetlink::Error,
    },
    #[error("cannot remove stale namespace file {path}: {source}")]
    RemoveStale { path: PathBuf, source: io::Error },
    #[error("cannot open network namespace file {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error(
        "{path} is not a network namespace file (not on nsfs); a leftover of a \
         failed `ip netns add`? remove it with `ip netns del`"
    )]
    NotANamespace { path: PathBuf },
    #[error("cannot list {path}: {source}")]
    List { path: PathBuf, source: io::Error },
    #[error("cannot spawn a thread to enter network namespace {ns}: {source}")]
    Spawn { ns: String, source: io::Error },
    #[error(
        "setns() into network namespace {ns} failed: {source}; \
         this needs CAP_SYS_ADMIN"
    )]
    Setns { ns: String, source: nix::Error },
    #[error("the closure run inside network namespace {ns} panicked: {message}")]
    ThreadPanicked { ns: String, message: String },
}

/// An open network namespace: a handle on its nsfs file, which keeps the
/// namespace alive while it is open (even after `ip netns del`).
#[derive(Debug)]
pub struct Netns {
    name: Option<String>,
    file: fs::File,
    id: (u64, u64),
}

impl Netns {
    /// The calling thread's network namespace (`/proc/thread-self/ns/net`).
    pub fn current() -> Result<Netns, NetnsError> {
        Self::open_file(None, Path::new("/proc/thread-self/ns/net"))
    }

    /// Opens the named namespace `/run/netns/NAME`, the target of
    /// `ip netns exec NAME`. [`NetnsError::NotFound`] if it does not exist.
    pub fn open(name: &str) -> Result<Netns, NetnsError> {
        let path = Self::path(name)?;
        if !path.exists() {
            return Err(NetnsError::NotFound {
                name: name.to_owned(),
            });
        }
        Self::open_file(Some(name.to_owned()), &path)
    }

    /// Creates the named namespace, like `ip netns add NAME`, then brings its
    /// loopback up (`ip -n NAME link set lo up`), and returns it opened.
    ///
    /// [`NetnsError::AlreadyExists`] if `/run/netns/NAME` exists. Creates
    /// `/run/netns` if needed. Uses [`rtnetlink::NetworkNamespace::add`],
    /// which forks a short-lived child process that does the `unshare` and
    /// the bind mount, so no thread of this process changes namespace.
    /// If bringing `lo` up fails, the namespace is deleted again.
    pub async fn create(name: &str) -> Result<Netns, NetnsError> {
        let path = Self::path(name)?;
        fs::create_dir_all(NETNS_DIR).map_err(|source| NetnsError::Mkdir {
            path: PathBuf::from(NETNS_DIR),
            source,
        })?;
        if path.exists() {
            return Err(NetnsError::AlreadyExists {
                name: name.to_owned(),
            });
        }
        rtnetlink::NetworkNamespace::add(name)
            .await
            .map_err(|source| NetnsError::Create {
                name: name.to_owned(),
                source,
            })?;
        let ns = Self::open(name)?;
        let up = ns
            .run(loopback_up)
            .unwrap_or_else(|e| Err(io::Error::other(e)));
        if let Err(source) = up {
            // Best effort: the error that matters is the one about lo.
            if let Err(e) = Self::delete(name).await {
                log::warn!("cleaning up network namespace {name} failed: {e}");
            }
            return Err(NetnsError::LoopbackUp {
                name: name.to_owned(),
                source,
            });
        }
        Ok(ns)
    }

    /// Deletes the named namespace, like `ip netns del NAME`: unmounts and
    /// removes `/run/netns/NAME` (with [`rtnetlink::NetworkNamespace::del`]).
    /// The namespace itself goes away once nothing uses it any more (open
    /// [`Netns`] handles, sockets and processes inside keep it alive).
    ///
    /// `Ok(())` if it does not exist. A stale `/run/netns/NAME` that is not a
    /// namespace mount (left by a crashed `ip netns add`) is just removed.
    pub async fn delete(name: &str) -> Result<(), NetnsError> {
        let path = Self::path(name)?;
        // symlink_metadata: does the directory entry exist at all.
        if fs::symlink_metadata(&path).is_err() {
            return Ok(());
        }
        if !is_nsfs(&path) {
            return fs::remove_file(&path)
                .map_err(|source| NetnsError::RemoveStale { path, source });
        }
        rtnetlink::NetworkNamespace::del(name)
            .await
            .map_err(|source| NetnsError::Delete {
                name: name.to_owned(),
                source,
            })
    }

    /// Whether `/run/netns/NAME` exists (`ip netns list | grep NAME`).
    pub fn exists(name: &str) -> bool {
        Self::path(name).is_ok_and(|p| p.exists())
    }

    /// The names of the named namespaces, `/run/netns/*` (`ip netns list`),
    /// sorted. Empty if `/run/netns` does not exist.
    pub fn list() -> Result<Vec<String>, NetnsError> {
        let list_err = |source| NetnsError::List {
            path: PathBuf::from(NETNS_DIR),
            source,
        };
        let entries = match fs::read_dir(NETNS_DIR) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(list_err(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(list_err)?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    /// The name under `/run/netns`, `None` for [`Netns::current`].
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// `(st_dev, st_ino)` of the nsfs file: two handles with the same id
    /// refer to the same namespace (what `ip netns identify` compares).
    pub fn id(&self) -> (u64, u64) {
        self.id
    }

    /// Runs `f` inside this namespace, like `ip netns exec NAME`, and
    /// returns its result.
    ///
    /// `f` runs on a new scoped OS thread that `setns()`es into the
    /// namespace first; no other thread of the process changes namespace,
    /// and the calling thread blocks until `f` returns. Anything namespace-
    /// bound that `f` creates (sockets, netlink connections, files opened
    /// under `/proc/sys/net`) stays bound to this namespace afterwards.
    ///
    /// A panic in `f` is caught (the panic hook still prints it) and
    /// returned as [`NetnsError::ThreadPanicked`] with its message.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        let ns = self.to_string();
        thread::scope(|scope| {
            let handle = thread::Builder::new()
                .name(format!("netns-{}", self.name().unwrap_or("?")))
                .spawn_scoped(scope, || {
                    nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET).map_err(
                        |source| NetnsError::Setns {
                            ns: ns.clone(),
                            source,
                        },
                    )?;
                    Ok(f())
                })
                .map_err(|source| NetnsError::Spawn {
                    ns: ns.clone(),
                    source,
                })?;
            handle.join().unwrap_or_else(|payload| {
                Err(NetnsError::ThreadPanicked {
                    ns: ns.clone(),
                    message: panic_message(payload.as_ref()),
                })
            })
        })
    }

    /// Starts `f` on a new named thread that enters this namespace first,
    /// like [`Netns::run`] but without waiting: for servers and load
    /// generators that run beside the caller. The handle yields
    /// [`NetnsError::Setns`] if entering failed; a panic in `f` surfaces
    /// when the handle is joined (see [`panic_message`]).
    pub fn spawn<T: Send + 'static>(
        self,
        thread_name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<thread::JoinHandle<Result<T, NetnsError>>, NetnsError> {
        let ns = self.to_string();
        let ns_for_spawn = ns.clone();
        thread::Builder::new()
            .name(thread_name.to_owned())
            .spawn(move || {
                nix::sched::setns(self.file.as_fd(), CloneFlags::CLONE_NEWNET)
                    .map_err(|source| NetnsError::Setns { ns, source })?;
                Ok(f())
            })
            .map_err(|source| NetnsError::Spawn {
                ns: ns_for_spawn,
                source,
            })
    }

    /// Opens the namespace file at `path` (e.g. `/proc/PID/ns/net`, or a
    /// bind mount a container runtime made): a namespace netpath did not
    /// create and never deletes.
    pub fn open_path(path: &Path) -> Result<Netns, NetnsError> {
        Self::open_file(None, path)
    }

    fn path(name: &str) -> Result<PathBuf, NetnsError> {
        if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
            return Err(NetnsError::InvalidName {
                name: name.to_owned(),
            });
        }
        Ok(Path::new(NETNS_DIR).join(name))
    }

    fn open_file(name: Option<String>, path: &Path) -> Result<Netns, NetnsError> {
        // std opens files with O_CLOEXEC.
        let file = fs::File::open(path).map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        let is_ns =
            nix::sys::statfs::fstatfs(&file).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC);
        if !is_ns {
            return Err(NetnsError::NotANamespace {
                path: path.to_owned(),
            });
        }
        let meta = file.metadata().map_err(|source| NetnsError::Open {
            path: path.to_owned(),
            source,
        })?;
        Ok(Netns {
            name,
            file,
            id: (meta.dev(), meta.ino()),
        })
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// `NAME`, or `[dev:inode]` for an unnamed namespace.
impl fmt::Display for Netns {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => f.write_str(name),
            None => write!(f, "[{}:{}]", self.id.0, self.id.1),
        }
    }
}

fn is_nsfs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// `ip link set lo up`, on the calling thread's namespace: `SIOCGIFFLAGS`,
/// then `SIOCSIFFLAGS` with `IFF_UP` added.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket(2) with constant arguments; the descriptor is owned by
    // `sock` from the moment it exists.
    let sock = unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: `ifreq` is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = libc::c_char::try_from(*src).unwrap_or_default();
    }
    // SAFETY: SIOCGIFFLAGS reads the name and writes the flags of `req`,
    // which outlives the call; `sock` is an open socket.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS just filled `ifru_flags`, the union's active field.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or_default();
    }
    // SAFETY: SIOCSIFFLAGS reads the name and flags of `req`; `sock` is open.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &raw const req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The message of a panic payload (what `panic!` was given).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_owned()
    }
}
