//! The pin directory of one instance, `/sys/fs/bpf/netpath/<instance>/`,
//! and the paths inside it; mounting bpffs; removing pins. A leaf: it
//! depends on no other module of netpath.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The parent of every instance's pin directory.
pub const PIN_ROOT: &str = "/sys/fs/bpf/netpath";

/// Errors of the pin directory: mounting bpffs, creating and removing pins.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "bpffs is not mounted at {BPFFS} and mounting it failed: {source}; \
         mount it with `mount -t bpf bpf {BPFFS}` (needs CAP_SYS_ADMIN)"
    )]
    MountBpffs { source: nix::Error },
    #[error("{path} is not a bpffs mount; mount one with `mount -t bpf bpf {BPFFS}`")]
    NotBpffs { path: PathBuf },
    #[error("cannot create pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("cannot remove pin {path}: {source}")]
    Unpin { path: PathBuf, source: io::Error },
}

/// Makes sure bpffs is mounted at [`BPFFS`] (`mount -t bpf bpf /sys/fs/bpf`).
pub fn ensure_bpffs() -> Result<(), PinError> {
    if is_bpffs(Path::new(BPFFS)) {
        return Ok(());
    }
    nix::mount::mount(
        Some("bpf"),
        BPFFS,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| PinError::MountBpffs { source })?;
    if !is_bpffs(Path::new(BPFFS)) {
        return Err(PinError::NotBpffs { path: BPFFS.into() });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
}

/// The pin directory of one instance and the paths inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// `/sys/fs/bpf/netpath/<instance>`.
    pub fn for_instance(instance: &str) -> Self {
        Self {
            root: Path::new(PIN_ROOT).join(instance),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join("maps").join(name)
    }

    pub fn prog(&self, name: &str) -> PathBuf {
        self.root.join("progs").join(name)
    }

    /// The pin of the tcx ingress link on `ifname`: `links/<ifname>_ingress`.
    /// bpffs refuses names with a dot (lookups fail with EPERM), and
    /// interface names may have one (`eth0.100`), so dots become `_`.
    pub fn ingress_link(&self, ifname: &str) -> PathBuf {
        let name = ifname.replace('.', "_");
        self.root.join("links").join(format!("{name}_ingress"))
    }

    /// The pin of the tcx egress link on `ifname`: `links/<ifname>_egress`
    /// (dots become `_`, as for [`PinDir::ingress_link`]).
    pub fn egress_link(&self, ifname: &str) -> PathBuf {
        let name = ifname.replace('.', "_");
        self.root.join("links").join(format!("{name}_egress"))
    }

    /// Creates `maps/`, `progs/` and `links/` (mounting bpffs first if
    /// needed).
    pub fn create(&self) -> Result<(), PinError> {
        ensure_bpffs()?;
        for sub in ["maps", "progs", "links"] {
            let path = self.root.join(sub);
            fs::create_dir_all(&path).map_err(|source| PinError::PinDir { path, source })?;
        }
        Ok(())
    }

    /// Whether the instance has a pin directory.
    pub fn exists(&self) -> bool {
        self.root.exists()
    }

    /// Every pin below the root, for inspection and tests.
    pub fn list(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for sub in ["maps", "progs", "links"] {
            if let Ok(rd) = fs::read_dir(self.root.join(sub)) {
                out.extend(rd.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        out.sort();
        out
    }

    /// Removes every pin and the directory (unpinning a link detaches it
    /// once no process holds it).
    pub fn remove(&self) -> Result<(), PinError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(PinError::Unpin {
                path: self.root.clone(),
                source,
            }),
        }
    }
}

/// Removes a pin file; a missing one is fine.
pub fn remove_pin(path: &Path) -> Result<(), PinError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(PinError::Unpin {
            path: path.to_owned(),
            source,
        }),
    }
}
