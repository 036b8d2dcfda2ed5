//! Names for the numbers an event carries: which interface an ifindex is
//! (in the node's namespace), and which pod an interface or an address
//! belongs to (from the instance's state file and endpoint map).

use std::{collections::BTreeMap, net::Ipv4Addr};

use crate::{
    datapath::{NodeMaps, PinDir},
    reconcile,
    state::StateDir,
};

/// What an interface or an address is called.
#[derive(Debug, Clone, Default)]
pub struct Names {
    ifaces: BTreeMap<u32, String>,
    pod_by_ifindex: BTreeMap<u32, String>,
    pod_by_addr: BTreeMap<Ipv4Addr, String>,
}

impl Names {
    /// Reads the names of an instance: its node namespace's links, its
    /// pods (state file) and their host-side interfaces (endpoint map).
    /// What cannot be read stays unnamed (an event is shown with numbers).
    pub async fn load(instance: &str, pins: &PinDir) -> Self {
        let mut names = Self {
            ifaces: reconcile::interface_names(instance)
                .await
                .unwrap_or_default(),
            ..Self::default()
        };
        let endpoints = NodeMaps::open_pinned(pins)
            .and_then(|m| m.endpoints())
            .unwrap_or_default();
        if let Ok(state) = StateDir::for_instance(instance).load() {
            for (name, pod) in &state.pods {
                let ifindex = endpoints.get(&pod.address).map(|e| e.ifindex);
                names.add_pod(name, pod.address, ifindex, &pod.host_ifname);
            }
        }
        names
    }

    /// Records pod `name` at `addr`, behind host-side interface `ifname`
    /// (`ifindex` when known).
    pub fn add_pod(&mut self, name: &str, addr: Ipv4Addr, ifindex: Option<u32>, ifname: &str) {
        self.pod_by_addr.insert(addr, name.to_owned());
        if let Some(i) = ifindex {
            self.pod_by_ifindex.insert(i, name.to_owned());
            self.ifaces.entry(i).or_insert_with(|| ifname.to_owned());
        }
    }

    /// The interface's name.
    pub fn iface(&self, ifindex: u32) -> Option<&str> {
        self.ifaces.get(&ifindex).map(String::as_str)
    }

    /// The pod behind an interface.
    pub fn pod_of_ifindex(&self, ifindex: u32) -> Option<&str> {
        self.pod_by_ifindex.get(&ifindex).map(String::as_str)
    }

    /// The pod that has an address.
    pub fn pod_of_addr(&self, addr: Ipv4Addr) -> Option<&str> {
        self.pod_by_addr.get(&addr).map(String::as_str)
    }

    /// Whether `ifindex` is unknown (a pod added since the names were read).
    pub fn knows(&self, ifindex: u32) -> bool {
        self.ifaces.contains_key(&ifindex)
    }
}
