//! What an apply did: the last stage of the flow ([`crate::render`] prints it).

use std::{collections::BTreeMap, net::Ipv4Addr};

/// What an apply did (also the reply of the daemon's API to a change).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ApplyReport {
    pub created: Vec<String>,
    pub recreated: Vec<String>,
    pub deleted: Vec<String>,
    pub unchanged: Vec<String>,
    /// Whether the eBPF programs were (re)loaded.
    pub programs_loaded: bool,
    /// Pod name → address, after the apply.
    pub addresses: BTreeMap<String, Ipv4Addr>,
    /// Interfaces `np_from_uplink` was newly attached to.
    pub uplinks_attached: Vec<String>,
    /// Interfaces `np_from_uplink` was detached from.
    pub uplinks_detached: Vec<String>,
    /// One line per frontend (service, port-forward address) that changed.
    pub frontends: Vec<String>,
    /// One line per pod that stays whose `/etc/netns` files were rewritten
    /// or removed (`[node.dns]` changed).
    pub dns: Vec<String>,
    /// The mode `np_xdp_uplink` runs in on the uplink (`None`: no uplink).
    pub xdp: Option<crate::datapath::xdp::XdpMode>,
}

impl ApplyReport {
    /// Whether the apply changed anything.
    pub fn changed(&self) -> bool {
        !(self.created.is_empty()
            && self.recreated.is_empty()
            && self.deleted.is_empty()
            && self.frontends.is_empty()
            && self.dns.is_empty()
            && !self.programs_loaded)
    }
}
