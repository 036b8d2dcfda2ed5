//! Loading the eBPF object, pinning it, attaching it to interfaces.
//!
//! Everything one netpath instance puts in the kernel is pinned under
//! `/sys/fs/bpf/netpath/<instance>/`:
//!
//! ```text
//! maps/endpoints_v1   local pods          (bpftool map dump pinned ...)
//! maps/stats_v2       per-CPU counters
//! maps/routes_v1      declared routes (LPM)
//! maps/masq_v1        masquerade rules (LPM on the source)
//! maps/settings_v1    node settings (NAT port range, timeouts, ...)
//! maps/conntrack_v2   translated connections (LRU)
//! maps/revnat_v2      reverse NAT (hash, 1.5 × the connection table)
//! progs/np_from_pod   TC program on each pod's host-side veth
//! progs/np_from_uplink  TC program on each uplink (ingress)
//! progs/np_to_uplink  TC program on each uplink (egress): node connections
//! links/<ifname>_ingress  tcx link of a program on <ifname>
//! links/<ifname>_egress   tcx egress link of np_to_uplink on an uplink
//! ```
//!
//! Maps are reused from their pins when they exist, so a restarted
//! controller keeps the datapath's state; links are tcx links (kernel ≥ 6.6)
//! pinned so that they outlive the process that made them, and a reload
//! replaces the program behind each link atomically.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    programs::{
        LinkOrder, ProgramError, SchedClassifier, TcAttachType,
        links::{FdLink, LinkError, PinnedLink},
        tc::{SchedClassifierLink, TcAttachOptions},
    },
};
use netpath_common::{maps, progs};

use crate::{
    maps::{MapsError, NodeMaps},
    netns::{Netns, NetnsError},
};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// The parent of every instance's pin directory.
pub const PIN_ROOT: &str = "/sys/fs/bpf/netpath";

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

/// Makes sure bpffs is mounted at [`BPFFS`] (`mount -t bpf bpf /sys/fs/bpf`).
pub fn ensure_bpffs() -> Result<(), DatapathError> {
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
    .map_err(|source| DatapathError::MountBpffs { source })?;
    if !is_bpffs(Path::new(BPFFS)) {
        return Err(DatapathError::NotBpffs { path: BPFFS.into() });
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    nix::sys::statfs::statfs(path)
        .map(|s| s.filesystem_type() == nix::sys::statfs::BPF_FS_MAGIC)
        .unwrap_or(false)
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

    /// The pin of the tcx egress link on `ifname`: `links/<ifname>_egress`.
    pub fn egress_link(&self, ifname: &str) -> PathBuf {
        let name = ifname.replace('.', "_");
        self.root.join("links").join(format!("{name}_egress"))
    }

    /// Creates `maps/`, `progs/` and `links/` (mounting bpffs first if
    /// needed).
    pub fn create(&self) -> Result<(), DatapathError> {
        ensure_bpffs()?;
        for sub in ["maps", "progs", "links"] {
            let path = self.root.join(sub);
            fs::create_dir_all(&path).map_err(|source| DatapathError::PinDir { path, source })?;
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
    pub fn remove(&self) -> Result<(), DatapathError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(DatapathError::Unpin {
                path: self.root.clone(),
                source,
            }),
        }
    }
}

/// How to load the object.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Pin maps, programs and links here; `None` loads a private, unpinned
    /// copy (program unit tests).
    pub pins: Option<PinDir>,
    /// Size of the connection table and of the reverse NAT map.
    pub conntrack_max: u32,
    /// eBPF-side log level (aya-log): 0 off (the default: the verifier then
    /// removes every log call), 1 error ... 4 debug (every drop and its
    /// reason), 5 trace. `netpath logs --instance X` prints them.
    pub log_level: u8,
}

impl Default for LoadOptions {
    /// Defaults, with the log level from `NETPATH_EBPF_LOG` (`off`, `error`,
    /// `warn`, `info`, `debug`, `trace`).
    fn default() -> Self {
        Self {
            pins: None,
            conntrack_max: maps::CONNTRACK_DEFAULT_MAX,
            log_level: std::env::var("NETPATH_EBPF_LOG")
                .map(|v| log_level(&v))
                .unwrap_or(0),
        }
    }
}

/// An aya-log level by name (unknown names: off).
pub fn log_level(name: &str) -> u8 {
    match name.to_ascii_lowercase().as_str() {
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 0,
    }
}

/// Every map, pinned by name.
const ALL_MAPS: [&str; 7] = [
    maps::ENDPOINTS,
    maps::STATS,
    maps::ROUTES,
    maps::MASQ,
    maps::SETTINGS,
    maps::CONNTRACK,
    maps::REVNAT,
];

/// Every program.
const ALL_PROGS: [&str; 3] = [progs::FROM_POD, progs::FROM_UPLINK, progs::TO_UPLINK];

/// The loaded datapath of one node.
pub struct Datapath {
    ebpf: Ebpf,
    pins: Option<PinDir>,
    maps: NodeMaps,
}

impl Datapath {
    /// Loads the eBPF object and its programs into the kernel, reusing
    /// pinned maps when they exist (a pinned connection table of another
    /// size is replaced: its connections are lost, and a warning says so).
    pub fn load(opts: LoadOptions) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, false);
        loader.map_max_entries(maps::CONNTRACK, opts.conntrack_max);
        loader.map_max_entries(maps::REVNAT, maps::revnat_max(opts.conntrack_max));
        let map_pins: Vec<(&'static str, PathBuf)> = match &opts.pins {
            Some(pins) => {
                pins.create()?;
                ALL_MAPS.into_iter().map(|m| (m, pins.map(m))).collect()
            }
            None => Vec::new(),
        };
        for (name, path) in &map_pins {
            if *name == maps::CONNTRACK {
                drop_resized_pin(path, opts.conntrack_max)?;
            } else if *name == maps::REVNAT {
                drop_resized_pin(path, maps::revnat_max(opts.conntrack_max))?;
            }
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(crate::ebpf::OBJECT)
            .map_err(|source| DatapathError::Load { source })?;

        for name in ALL_PROGS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(|source| DatapathError::LoadProgram { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::LoadProgram { name, source })?;
            if let Some(pins) = &opts.pins {
                let path = pins.prog(name);
                remove_pin(&path)?;
                prog.pin(&path).map_err(|source| DatapathError::Pin {
                    what: format!("program {name}"),
                    path,
                    source,
                })?;
            }
        }
        let maps = NodeMaps::from_ebpf(&mut ebpf)?;
        Ok(Self {
            ebpf,
            pins: opts.pins,
            maps,
        })
    }

    /// The datapath's maps.
    pub fn maps(&mut self) -> &mut NodeMaps {
        &mut self.maps
    }

    /// The pin directory, if pinned.
    pub fn pins(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    /// The pod-ingress program, for `BPF_PROG_TEST_RUN`.
    pub fn from_pod_program(&self) -> &SchedClassifier {
        self.program(progs::FROM_POD)
    }

    /// The uplink-ingress program, for `BPF_PROG_TEST_RUN`.
    pub fn from_uplink_program(&self) -> &SchedClassifier {
        self.program(progs::FROM_UPLINK)
    }

    /// The uplink-egress program (the node's own connections), for
    /// `BPF_PROG_TEST_RUN`.
    pub fn to_uplink_program(&self) -> &SchedClassifier {
        self.program(progs::TO_UPLINK)
    }

    fn program(&self, name: &str) -> &SchedClassifier {
        self.ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("every program is loaded in Datapath::load")
    }

    /// Attaches the pod-ingress program to `ifname` (a pod's host-side veth
    /// in `netns`). See [`Datapath::attach_ingress`].
    pub fn attach_from_pod(&mut self, netns: &Netns, ifname: &str) -> Result<(), DatapathError> {
        self.attach_ingress(progs::FROM_POD, netns, ifname)
    }

    /// Attaches the uplink-ingress program to `ifname` (an uplink in
    /// `netns`). See [`Datapath::attach_ingress`].
    pub fn attach_from_uplink(&mut self, netns: &Netns, ifname: &str) -> Result<(), DatapathError> {
        self.attach_ingress(progs::FROM_UPLINK, netns, ifname)
    }

    /// Attaches program `name` to `ifname` in `netns` as a tcx ingress
    /// link, and pins the link. An existing pinned link on that interface
    /// gets the new program atomically.
    ///
    /// Matches `tc filter add dev IFNAME ingress bpf obj ... sec NAME`, but
    /// with a tcx link instead of a clsact qdisc.
    pub fn attach_ingress(
        &mut self,
        name: &'static str,
        netns: &Netns,
        ifname: &str,
    ) -> Result<(), DatapathError> {
        self.attach_tcx(name, netns, ifname, TcAttachType::Ingress)
    }

    /// Attaches the uplink-egress program (`np_to_uplink`: the node's own
    /// connections that collide with a pod's translated flow) to `ifname`
    /// as a tcx egress link pinned at `links/<ifname>_egress`.
    pub fn attach_to_uplink(&mut self, netns: &Netns, ifname: &str) -> Result<(), DatapathError> {
        self.attach_tcx(progs::TO_UPLINK, netns, ifname, TcAttachType::Egress)
    }

    /// Unpins the egress link on `ifname`.
    pub fn detach_egress(&self, ifname: &str) -> Result<(), DatapathError> {
        match &self.pins {
            Some(pins) => remove_pin(&pins.egress_link(ifname)),
            None => Ok(()),
        }
    }

    fn attach_tcx(
        &mut self,
        name: &'static str,
        netns: &Netns,
        ifname: &str,
        attach_type: TcAttachType,
    ) -> Result<(), DatapathError> {
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::LoadProgram { name, source })?;
        let pin = self.pins.as_ref().map(|p| match attach_type {
            TcAttachType::Egress => p.egress_link(ifname),
            _ => p.ingress_link(ifname),
        });
        let existing = match &pin {
            Some(path) => match PinnedLink::from_pin(path) {
                Ok(link) => Some(link),
                Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => {
                    None
                }
                Err(source) => {
                    return Err(DatapathError::Link {
                        path: path.clone(),
                        source,
                    });
                }
            },
            None => None,
        };
        let attach_err = |source| DatapathError::Attach {
            prog: name,
            ifname: ifname.to_owned(),
            source,
        };
        let link_id = match existing {
            Some(old) => {
                let link = SchedClassifierLink::try_from(FdLink::from(old)).map_err(|source| {
                    DatapathError::Link {
                        path: pin.clone().unwrap_or_default(),
                        source,
                    }
                })?;
                prog.attach_to_link(link).map_err(attach_err)?
            }
            None => netns
                .run(|| {
                    prog.attach_with_options(
                        ifname,
                        attach_type,
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                })?
                .map_err(attach_err)?,
        };
        if let Some(path) = pin {
            let link = prog.take_link(link_id).map_err(attach_err)?;
            let fd_link = FdLink::try_from(link).map_err(|source| DatapathError::Link {
                path: path.clone(),
                source,
            })?;
            remove_pin(&path)?;
            // Pinning consumes the link: from here on the pin holds it.
            fd_link.pin(&path).map_err(|source| DatapathError::Pin {
                what: format!("tcx link on {ifname}"),
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// Unpins the ingress link on `ifname` (the link detaches when its pin
    /// and every fd are gone; deleting the interface detaches it as well).
    pub fn detach_ingress(&self, ifname: &str) -> Result<(), DatapathError> {
        match &self.pins {
            Some(pins) => remove_pin(&pins.ingress_link(ifname)),
            None => Ok(()),
        }
    }
}

/// The eBPF-side logger of an instance's pinned programs (their aya-log
/// ring buffer): poll its fd and call `flush` to print what they logged.
pub fn pinned_logger(
    pins: &PinDir,
) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>, DatapathError> {
    let name = progs::FROM_POD;
    let prog = SchedClassifier::from_pin(pins.prog(name))
        .map_err(|source| DatapathError::LoadProgram { name, source })?;
    let id = prog
        .info()
        .map_err(|source| DatapathError::LoadProgram { name, source })?
        .id();
    aya_log::EbpfLogger::init_from_id(id).map_err(|source| DatapathError::Logger { source })
}

/// Removes a pinned map whose size is not `max_entries` (aya would reuse it
/// as it is).
fn drop_resized_pin(path: &Path, max_entries: u32) -> Result<(), DatapathError> {
    let Ok(map) = aya::maps::MapData::from_pin(path) else {
        return Ok(());
    };
    let size = map.info().map(|i| i.max_entries()).unwrap_or(max_entries);
    if size != max_entries {
        log::warn!(
            "{}: size changes from {size} to {max_entries}; the table is recreated and \
             its entries are lost",
            path.display()
        );
        remove_pin(path)?;
    }
    Ok(())
}

/// Removes a pin file; a missing one is fine.
pub fn remove_pin(path: &Path) -> Result<(), DatapathError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Unpin {
            path: path.to_owned(),
            source,
        }),
    }
}
