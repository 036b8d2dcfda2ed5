//! What an instance has built, recorded so that the next `apply` can diff
//! the desired state against it: `/run/netpath/<instance>/state.json`, with
//! the IPAM leases beside it in `leases.json`.
//!
//! `/run` is a tmpfs: like the namespaces and bpffs pins it describes, the
//! state is gone after a reboot.

use std::{
    collections::BTreeMap,
    fs, io,
    net::{Ipv4Addr, SocketAddrV4},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    config::L4Proto,
    resolve::{DesiredPod, POD_IFNAME, PodNetns},
    sys::file::write_atomic,
};

/// The parent of every instance's state directory.
pub const STATE_ROOT: &str = "/run/netpath";

/// Errors reading or writing the state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error(
        "{path} is corrupt: {source}; if no netpath pods of this instance exist any \
         more, remove the file"
    )]
    Corrupt {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// One pod as it was built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodState {
    /// The pod's namespace: a name netpath owns, or a path it was given.
    pub netns: PodNetns,
    /// The host side of the veth, in the node namespace.
    pub host_ifname: String,
    /// The pod side of the veth (left out of the file when `eth0`).
    #[serde(default = "default_ifname", skip_serializing_if = "is_default_ifname")]
    pub ifname: String,
    pub address: Ipv4Addr,
    /// The MTU of both ends of the veth (state files of earlier versions,
    /// which have none, built pods with the default).
    #[serde(default = "default_mtu")]
    pub mtu: u32,
}

impl PodState {
    /// The state of `pod` built with `address` and veth MTU `mtu`.
    pub fn new(pod: &DesiredPod, address: Ipv4Addr, mtu: u32) -> Self {
        Self {
            netns: pod.netns.clone(),
            host_ifname: pod.host_ifname.clone(),
            ifname: pod.ifname.clone(),
            address,
            mtu,
        }
    }
}

fn default_mtu() -> u32 {
    crate::resolve::DEFAULT_POD_MTU
}

fn default_ifname() -> String {
    POD_IFNAME.to_owned()
}

fn is_default_ifname(ifname: &str) -> bool {
    ifname == POD_IFNAME
}

/// Everything an instance built.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeState {
    /// The node namespace (`None`: the namespace netpath ran in).
    pub netns: Option<String>,
    /// The gateway address on the node's `np0` device.
    pub gateway: Option<Ipv4Addr>,
    /// FNV-1a hash of the eBPF object the programs were loaded from.
    pub object_hash: Option<String>,
    pub pods: BTreeMap<String, PodState>,
    /// Interfaces `np_from_uplink` is attached to (the masquerade rules'
    /// `out` interfaces), with their ifindex when it was attached.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uplinks: BTreeMap<String, u32>,
    /// The frontends (services and port-forward addresses) the load
    /// balancer's maps hold, with the names the configuration gave them.
    /// The maps themselves are the truth about ids, indices and tables;
    /// this is what `netpath service list` needs to name them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frontends: Vec<FrontendRecord>,
}

/// One frontend as built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrontendRecord {
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: L4Proto,
    /// The service's name; `None` for a port-forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub backends: Vec<BackendRecord>,
}

/// One backend of a frontend as built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendRecord {
    pub address: SocketAddrV4,
    /// The pod's name, or the address as configured.
    pub target: String,
}

/// Paths of one instance's state.
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn for_instance(instance: &str) -> Self {
        Self {
            root: Path::new(STATE_ROOT).join(instance),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn state_file(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn leases_file(&self) -> PathBuf {
        self.root.join("leases.json")
    }

    /// The recorded state; empty when the instance never ran.
    pub fn load(&self) -> Result<NodeState, StateError> {
        let path = self.state_file();
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|source| StateError::Corrupt { path, source }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(NodeState::default()),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Writes the state atomically and durably ([`write_atomic`]).
    pub fn save(&self, state: &NodeState) -> Result<(), StateError> {
        let json =
            serde_json::to_vec_pretty(state).expect("a NodeState is always representable in JSON");
        write_atomic(&self.state_file(), &json).map_err(|e| StateError::Write {
            path: e.path,
            source: e.source,
        })
    }

    /// Takes the instance's lock (`flock` on `lock`), so that two
    /// controllers never reconcile one instance at once. Held until dropped.
    pub fn lock(&self) -> Result<nix::fcntl::Flock<fs::File>, StateError> {
        let path = self.root.join("lock");
        let file = fs::create_dir_all(&self.root)
            .and_then(|()| {
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|source| StateError::Write {
                path: path.clone(),
                source,
            })?;
        nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(|(_, e)| {
            StateError::Write {
                path,
                source: e.into(),
            }
        })
    }

    /// Removes the whole state directory.
    pub fn remove(&self) -> Result<(), StateError> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.root.clone(),
                source,
            }),
        }
    }
}

/// FNV-1a 64 of `bytes`, hex: identifies an eBPF object build.
pub fn object_hash(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}
