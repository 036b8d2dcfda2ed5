//! What `netpath service list`, `netpath service maglev` and `netpath
//! port-forward list` show: the load balancer's maps joined with the names
//! the state file recorded and with the connection table (flows per
//! backend). Plain data; [`crate::render`] prints it.

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddrV4},
};

use netpath_common::frontend_flags;
use serde::Serialize;

use super::frontends::{FrontendState, LbState, Vip};
use crate::{config::L4Proto, conntrack::Connection, state::FrontendRecord};

/// One frontend as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FrontendView {
    /// The service's name; `None` for a port-forward (or a frontend the
    /// state file does not name).
    pub service: Option<String>,
    pub address: Ipv4Addr,
    pub port: u16,
    pub proto: L4Proto,
    pub id: u32,
    /// Whether this is a port-forward.
    pub port_forward: bool,
    /// ClientIP affinity timeout in seconds, with affinity.
    pub affinity_timeout_secs: Option<u32>,
    /// By index.
    pub backends: Vec<BackendView>,
    /// The generation of its Maglev table (`maglev_v3` chunks keyed by it;
    /// each change of the table takes the next one).
    pub maglev_generation: u16,
}

impl FrontendView {
    /// `10.96.0.10:80/tcp`.
    pub fn frontend(&self) -> String {
        Vip {
            addr: self.address,
            port: self.port,
            proto: self.proto,
        }
        .to_string()
    }
}

/// One backend as shown.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackendView {
    pub index: u32,
    pub address: SocketAddrV4,
    /// The pod's name, or the address, as configured (empty if unknown).
    pub target: String,
    /// Established connections of this frontend translated to it (TCP
    /// established, UDP not expired).
    pub flows: usize,
}

/// Every frontend of `lb`, named by `records`, with the established flows
/// of `conns` counted per backend; in address order.
pub fn frontends(
    lb: &LbState,
    records: &[FrontendRecord],
    conns: &[Connection],
) -> Vec<FrontendView> {
    let mut flows: BTreeMap<(Vip, SocketAddrV4), usize> = BTreeMap::new();
    for c in conns.iter().filter(|c| c.is_dnat() && c.is_established()) {
        let Some(proto) = L4Proto::from_number(c.orig.proto) else {
            continue;
        };
        let vip = Vip {
            addr: Ipv4Addr::from(c.orig.daddr),
            port: c.orig.dport,
            proto,
        };
        *flows.entry((vip, c.nat())).or_default() += 1;
    }
    lb.iter()
        .map(|(vip, fe)| {
            let record = records
                .iter()
                .find(|r| r.address == vip.addr && r.port == vip.port && r.proto == vip.proto);
            let target = |a: &SocketAddrV4| {
                record
                    .and_then(|r| r.backends.iter().find(|b| b.address == *a))
                    .map(|b| b.target.clone())
                    .unwrap_or_default()
            };
            FrontendView {
                service: record.and_then(|r| r.service.clone()),
                address: vip.addr,
                port: vip.port,
                proto: vip.proto,
                id: fe.id,
                port_forward: fe.flags & frontend_flags::PORT_FORWARD != 0,
                affinity_timeout_secs: (fe.flags & frontend_flags::AFFINITY != 0)
                    .then_some(fe.affinity_timeout_secs),
                backends: fe
                    .backends
                    .iter()
                    .map(|(&index, a)| BackendView {
                        index,
                        address: *a,
                        target: target(a),
                        flows: flows.get(&(*vip, *a)).copied().unwrap_or(0),
                    })
                    .collect(),
                maglev_generation: fe.maglev_gen,
            }
        })
        .collect()
}

/// How many slots of `fe`'s Maglev table each backend index owns (indices
/// the table holds without a backend entry included).
pub fn slot_counts(fe: &FrontendState) -> BTreeMap<u32, usize> {
    let mut counts: BTreeMap<u32, usize> = fe.backends.keys().map(|&i| (i, 0)).collect();
    for &index in fe.maglev.slots() {
        *counts.entry(index).or_default() += 1;
    }
    counts
}
