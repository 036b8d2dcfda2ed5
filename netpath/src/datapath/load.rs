//! Loading the eBPF object: maps reused from their pins, programs loaded
//! and pinned; the programs' log buffer.

use std::path::{Path, PathBuf};

use aya::{Ebpf, EbpfLoader, programs::SchedClassifier};
use netpath_common::{maps, progs};

use super::{
    error::DatapathError,
    maps::NodeMaps,
    pins::{PinDir, remove_pin},
};

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
            log_level: std::env::var("NETPATH_EBPF_LOG").map_or(0, |v| log_level(&v)),
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
    pub(super) ebpf: Ebpf,
    pub(super) pins: Option<PinDir>,
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
    let size = map.info().map_or(max_entries, |i| i.max_entries());
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
