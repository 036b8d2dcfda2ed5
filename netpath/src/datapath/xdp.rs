//! XDP programs: `np_xdp_uplink` on an uplink (the prefilter and the fast
//! path of established inbound flows, `netpath-ebpf/src/xdp.rs`) and
//! `np_xdp_pod` on each pod's `eth0`, as links pinned so that they outlive
//! the process that made them.
//!
//! An interface has at most one XDP program, in one mode: native (run by
//! the driver, before any skb exists) or generic (run by the stack on the
//! skb, for drivers without XDP support). The link's pin says which:
//! `links/<ifname>_xdp_native`, `_xdp_generic`, or `_xdp_fallback` (native
//! asked for, generic used); a pod's is
//! `links/<host ifname>_xdp_pod` (the pod's `eth0`, in its namespace, as
//! native XDP: veth delivers redirected frames only to a peer with NAPI on).

use std::{
    io,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf,
    programs::{
        ProgramError, Xdp, XdpMode as AyaXdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use log::warn;
use netpath_common::progs;
use serde::{Deserialize, Serialize};

use super::{
    error::DatapathError,
    load::Datapath,
    pins::{PinDir, PinError, remove_pin},
};
use crate::sys::netns::Netns;

/// How `np_xdp_uplink` runs on an uplink (the node setting `xdp`).
///
/// The default is `Off`: on a veth uplink (every test, demo and benchmark
/// node here, and a node whose uplink is a veth into a host bridge) XDP
/// makes inbound TCP 3-5 times slower than TC alone, because native XDP on
/// a veth turns GSO off on its peer (about 40 times more packets cross)
/// and every frame is converted to an XDP frame and back (`cargo xtask
/// bench`, LAN → pod figures; `docs/benchmarks.md`). Turn it on for a NIC
/// with native XDP, and for the prefilter (`deny_sources` needs it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// In the driver; when the driver refuses, generic (with a warning).
    Native,
    /// In the stack, on the skb (any driver; slower than native, faster
    /// than TC for the prefilter).
    Generic,
    /// No XDP: TC handles everything.
    #[default]
    Off,
}

/// How `np_xdp_uplink` is attached, as its pin's name says: the mode it
/// runs in, and for generic whether native was asked for (a fallback; the
/// next apply must not take it for a requested generic mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UplinkXdp {
    Native,
    Generic,
    /// Native asked for, the driver refused: generic.
    Fallback,
}

impl UplinkXdp {
    pub const ALL: [UplinkXdp; 3] = [Self::Native, Self::Generic, Self::Fallback];

    fn pin_suffix(self) -> &'static str {
        match self {
            Self::Native => "xdp_native",
            Self::Generic => "xdp_generic",
            Self::Fallback => "xdp_fallback",
        }
    }

    fn aya_mode(self) -> AyaXdpMode {
        match self {
            Self::Native => AyaXdpMode::Driver,
            Self::Generic | Self::Fallback => AyaXdpMode::Skb,
        }
    }
}

impl std::fmt::Display for XdpMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Generic => "generic",
            Self::Off => "off",
        })
    }
}

/// Loads (and pins) the XDP programs of the object.
pub(super) fn load_programs(ebpf: &mut Ebpf, pins: Option<&PinDir>) -> Result<(), DatapathError> {
    for name in [progs::XDP_UPLINK, progs::XDP_POD] {
        let prog: &mut Xdp = ebpf
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

/// The pin of the uplink's XDP link attached as `how` on `ifname` (dots
/// become `_`, as for the tcx links).
fn uplink_pin(pins: &PinDir, ifname: &str, how: UplinkXdp) -> PathBuf {
    let name = ifname.replace('.', "_");
    pins.root()
        .join("links")
        .join(format!("{name}_{}", how.pin_suffix()))
}

/// Whether `np_xdp_uplink` is pinned on `ifname`, attached as `how`.
pub fn uplink_pinned(pins: &PinDir, ifname: &str, how: UplinkXdp) -> bool {
    uplink_pin(pins, ifname, how).exists()
}

/// Whether `np_xdp_pod` is pinned on the pod whose host-side veth is
/// `host_ifname`.
pub fn pod_pinned(pins: &PinDir, host_ifname: &str) -> bool {
    pod_pin(pins, host_ifname).exists()
}

/// The pin of `np_xdp_pod`'s link on the pod whose host-side veth is
/// `host_ifname`.
fn pod_pin(pins: &PinDir, host_ifname: &str) -> PathBuf {
    let name = host_ifname.replace('.', "_");
    pins.root().join("links").join(format!("{name}_xdp_pod"))
}

/// How long an attach retries while the hook still holds a link this
/// process let go of (see [`detach_pinned`]).
const BUSY_RETRY: Duration = Duration::from_secs(2);

/// Detaches the link pinned at `path` and removes the pin; a missing pin
/// is fine. A link leaves its hook when its last reference goes: the pin
/// (removed here) and the descriptor opened to remove it (closed here).
/// The kernel drops the pin's reference once the pin's inode is freed,
/// after an RCU grace period, so for a moment the hook may still hold the
/// link: an attach to the same hook retries while it is busy
/// ([`BUSY_RETRY`]). aya 0.14 has no `BPF_LINK_DETACH`, and netpath makes
/// no bpf() call by hand.
pub(super) fn detach_pinned(path: &Path) -> Result<(), DatapathError> {
    match PinnedLink::from_pin(path) {
        Ok(link) => {
            let fd_link = link.unpin().map_err(|source| PinError::Unpin {
                path: path.to_owned(),
                source,
            })?;
            drop(fd_link);
            Ok(())
        }
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(DatapathError::Link {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Whether an attach failed because the hook still holds another link
/// (`EBUSY`/`EEXIST` from `bpf_link_create`).
fn hook_busy(e: &ProgramError) -> bool {
    matches!(
        e,
        ProgramError::SyscallError(e)
            if matches!(e.io_error.raw_os_error(), Some(libc::EBUSY | libc::EEXIST))
    )
}

impl Datapath {
    /// Attaches `np_xdp_uplink` to `ifname` in `netns` in `mode`, pinned at
    /// `links/<ifname>_xdp_<mode>`, and returns the mode it runs in:
    /// [`XdpMode::Native`] falls back to [`XdpMode::Generic`] (with a
    /// warning) when the driver refuses; [`XdpMode::Off`] detaches it. A
    /// link already pinned in the mode gets the freshly loaded program
    /// atomically; a link in the other mode is detached first (an
    /// interface runs native or generic XDP, never both).
    pub fn attach_xdp_uplink(
        &mut self,
        netns: &Netns,
        ifname: &str,
        mode: XdpMode,
    ) -> Result<XdpMode, DatapathError> {
        if mode == XdpMode::Off {
            self.detach_xdp_uplink(ifname)?;
            return Ok(XdpMode::Off);
        }
        let how = if mode == XdpMode::Native {
            UplinkXdp::Native
        } else {
            UplinkXdp::Generic
        };
        match self.attach_xdp_uplink_as(netns, ifname, how) {
            Ok(()) => Ok(mode),
            Err(DatapathError::Attach { source, .. }) if how == UplinkXdp::Native => {
                warn!(
                    "{ifname}: the driver refused native XDP ({source}); np_xdp_uplink runs in \
                     generic mode (set node.xdp = \"generic\" to silence this, or \"off\")"
                );
                self.attach_xdp_uplink_as(netns, ifname, UplinkXdp::Fallback)?;
                Ok(XdpMode::Generic)
            }
            Err(e) => Err(e),
        }
    }

    /// Attaches `np_xdp_uplink` to `ifname` as `how`, after detaching it
    /// attached any other way (an interface runs one XDP program, native
    /// or generic).
    fn attach_xdp_uplink_as(
        &mut self,
        netns: &Netns,
        ifname: &str,
        how: UplinkXdp,
    ) -> Result<(), DatapathError> {
        let pin = match &self.pins {
            Some(pins) => {
                for other in UplinkXdp::ALL.into_iter().filter(|o| *o != how) {
                    detach_pinned(&uplink_pin(pins, ifname, other))?;
                }
                Some(uplink_pin(pins, ifname, how))
            }
            None => None,
        };
        self.attach_xdp(progs::XDP_UPLINK, netns, ifname, how.aya_mode(), pin)
    }

    /// Detaches `np_xdp_uplink` from `ifname` (whatever its mode).
    pub fn detach_xdp_uplink(&self, ifname: &str) -> Result<(), DatapathError> {
        if let Some(pins) = &self.pins {
            for how in UplinkXdp::ALL {
                detach_pinned(&uplink_pin(pins, ifname, how))?;
            }
        }
        Ok(())
    }

    /// Attaches `np_xdp_pod` (native) to `ifname` (a pod's `eth0`) in the
    /// pod's namespace `pod_netns`, pinned at `links/<host_ifname>_xdp_pod`.
    pub fn attach_xdp_pod(
        &mut self,
        pod_netns: &Netns,
        ifname: &str,
        host_ifname: &str,
    ) -> Result<(), DatapathError> {
        let pin = self.pins.as_ref().map(|p| pod_pin(p, host_ifname));
        self.attach_xdp(progs::XDP_POD, pod_netns, ifname, AyaXdpMode::Driver, pin)
    }

    /// Detaches `np_xdp_pod` from the pod whose host-side veth is
    /// `host_ifname` (a deleted pod's link is gone with its interface; this
    /// removes its pin).
    pub fn detach_xdp_pod(&self, host_ifname: &str) -> Result<(), DatapathError> {
        match &self.pins {
            Some(pins) => detach_pinned(&pod_pin(pins, host_ifname)),
            None => Ok(()),
        }
    }

    /// The host interfaces of the pods with a pinned `np_xdp_pod` link.
    pub fn xdp_pod_pins(&self) -> Vec<String> {
        let Some(pins) = &self.pins else {
            return Vec::new();
        };
        let Ok(dir) = std::fs::read_dir(pins.root().join("links")) else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_string_lossy()
                    .strip_suffix("_xdp_pod")
                    .map(str::to_owned)
            })
            .collect()
    }

    /// Attaches XDP program `name` to `ifname` in `netns` in `mode`,
    /// pinned at `pin`; a link pinned there gets the program atomically.
    fn attach_xdp(
        &mut self,
        name: &'static str,
        netns: &Netns,
        ifname: &str,
        mode: AyaXdpMode,
        pin: Option<PathBuf>,
    ) -> Result<(), DatapathError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram { name })?
            .try_into()
            .map_err(|source| DatapathError::LoadProgram { name, source })?;
        let existing = super::attach::pinned_link(pin.as_deref())?;
        let attach_err = |source| DatapathError::Attach {
            prog: name,
            ifname: ifname.to_owned(),
            source,
        };
        let attach_fresh = |prog: &mut Xdp| {
            let started = Instant::now();
            loop {
                match netns.run(|| prog.attach(ifname, mode))? {
                    Ok(id) => return Ok(id),
                    // A link detached a moment ago still holds the hook.
                    Err(e) if hook_busy(&e) && started.elapsed() < BUSY_RETRY => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(attach_err(e)),
                }
            }
        };
        let link_id = match existing {
            Some(old) => {
                let link =
                    XdpLink::try_from(FdLink::from(old)).map_err(|source| DatapathError::Link {
                        path: pin.clone().unwrap_or_default(),
                        source,
                    })?;
                match prog.attach_to_link(link) {
                    Ok(id) => id,
                    // The link's interface was deleted (a pod recreated):
                    // the pin holds a dead link; start afresh.
                    Err(_) => {
                        if let Some(path) = &pin {
                            detach_pinned(path)?;
                        }
                        attach_fresh(prog)?
                    }
                }
            }
            None => attach_fresh(prog)?,
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
                what: format!("XDP link on {ifname}"),
                path,
                source,
            })?;
        }
        Ok(())
    }

    /// The uplink XDP program, for `BPF_PROG_TEST_RUN`.
    pub fn xdp_uplink_program(&self) -> &Xdp {
        self.ebpf
            .program(progs::XDP_UPLINK)
            .and_then(|p| p.try_into().ok())
            .expect("every program is loaded in Datapath::load")
    }
}
