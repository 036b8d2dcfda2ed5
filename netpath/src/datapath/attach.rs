//! Attaching programs to interfaces as pinned tcx links.

use std::{io, path::Path};

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    links::{FdLink, LinkError, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions},
};
use netpath_common::progs;

use super::{error::DatapathError, load::Datapath, pins::remove_pin};
use crate::sys::netns::Netns;

impl Datapath {
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

    /// Attaches the uplink-egress program (`np_to_uplink`: the node's own
    /// connections that collide with a pod's translated flow) to `ifname`
    /// as a tcx egress link pinned at `links/<ifname>_egress`.
    ///
    /// Matches `tc filter add dev IFNAME egress bpf obj ... sec
    /// np_to_uplink`, with a tcx link instead of a clsact qdisc.
    pub fn attach_to_uplink(&mut self, netns: &Netns, ifname: &str) -> Result<(), DatapathError> {
        self.attach_tcx(progs::TO_UPLINK, netns, ifname, TcAttachType::Egress)
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

    /// Attaches program `name` to `ifname` in `netns` as a tcx link of
    /// `attach_type`, pinned at `links/<ifname>_ingress` or `_egress`.
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
        let existing = pinned_link(pin.as_deref())?;
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
            Some(pins) => Ok(remove_pin(&pins.ingress_link(ifname))?),
            None => Ok(()),
        }
    }

    /// Unpins the egress link on `ifname`.
    pub fn detach_egress(&self, ifname: &str) -> Result<(), DatapathError> {
        match &self.pins {
            Some(pins) => Ok(remove_pin(&pins.egress_link(ifname))?),
            None => Ok(()),
        }
    }
}

/// The link pinned at `pin`, if one is (`None` without a pin directory or
/// when nothing is pinned there yet): a new attach replaces the program
/// behind it instead of making a second link.
pub(super) fn pinned_link(pin: Option<&Path>) -> Result<Option<PinnedLink>, DatapathError> {
    let Some(path) = pin else {
        return Ok(None);
    };
    match PinnedLink::from_pin(path) {
        Ok(link) => Ok(Some(link)),
        Err(LinkError::SyscallError(e)) if e.io_error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(DatapathError::Link {
            path: path.to_path_buf(),
            source,
        }),
    }
}
