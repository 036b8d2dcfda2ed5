//! The static checks of `node.service_cidr`, `[[port_forwards]]` and
//! `[[services]]` ([`Config::check_lb`]), and their errors ([`LbError`]).
//! What needs the node (is a forward's `address` one of its addresses) is
//! checked when the apply is planned.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use ipnet::Ipv4Net;
use netpath_common::maps::{BACKENDS_MAX, FRONTENDS_MAX};

use super::{
    error::ConfigError,
    lb::{L4Proto, MAX_AFFINITY_TIMEOUT, SessionAffinity, Target},
    limits::SPECIAL_RANGES,
    schema::{Config, PortRange},
    validate::{check_name, overlaps, special_address},
};

/// Where a forward listens on its port: one address (`None`: every node
/// address), and which entry it is.
type Listener = (Option<Ipv4Addr>, String);

/// The most backends one service can have: the frontend's backend count
/// is 16 bits.
pub const MAX_SERVICE_BACKENDS: usize = u16::MAX as usize;

/// What is wrong with the load balancer's part of a configuration, and what
/// to do about it.
#[derive(Debug, thiserror::Error)]
pub enum LbError {
    #[error("node.service_cidr {cidr} has host bits set; write its network address, {network}")]
    ServiceCidrNotNetwork { cidr: Ipv4Net, network: Ipv4Net },
    #[error(
        "node.service_cidr {cidr} overlaps {range}, the {why} range; use a private range such \
         as 10.96.0.0/16"
    )]
    ServiceCidrSpecial {
        cidr: Ipv4Net,
        range: Ipv4Net,
        why: &'static str,
    },
    #[error(
        "node.service_cidr {cidr} overlaps {what}; service VIPs must not be real addresses: \
         pick a service CIDR that overlaps no pod, node or routed network"
    )]
    ServiceCidrOverlaps { cidr: Ipv4Net, what: String },
    #[error(
        "service '{service}' needs node.service_cidr (the range its VIP comes from); add \
         `service_cidr = \"10.96.0.0/16\"` (or another unused range) to [node]"
    )]
    ServicesWithoutCidr { service: String },
    #[error("{owner}: {field} is 0; use a port from 1 to 65535")]
    PortZero { owner: String, field: &'static str },
    #[error(
        "{owner}: node port {port} is inside nat.port_range {range}, the ports masqueraded \
         connections take; a forward there could capture their replies: pick a port outside \
         {range} or narrow nat.port_range"
    )]
    NodePortInNatRange {
        owner: String,
        port: u16,
        range: PortRange,
    },
    #[error("{owner}: address {address} {why}; use an address of the node, or omit `address`")]
    ForwardAddress {
        owner: String,
        address: Ipv4Addr,
        why: String,
    },
    #[error(
        "{second} listens where {first} already does ({what}); two forwards of one protocol \
         and port must name different node addresses, and a forward without `address` \
         takes every address: change the port or the address, or remove one"
    )]
    DuplicateForward {
        first: String,
        second: String,
        what: String,
    },
    #[error("{owner}: there is no pod '{pod}' in [[pods]]; add it, or fix the name")]
    UnknownPod { owner: String, pod: String },
    #[error("{owner}: backend address {address} {why}; use a unicast address")]
    TargetAddress {
        owner: String,
        address: SocketAddrV4,
        why: String,
    },
    #[error(
        "{owner}: to_port is set but `to` is an address with its own port ({to}); remove \
         to_port, or write `to` as a pod name"
    )]
    ToPortWithAddress { owner: String, to: SocketAddrV4 },
    #[error(
        "service '{name}' is listed more than once; service names must be unique: rename or \
         remove one"
    )]
    DuplicateService { name: String },
    #[error(
        "service '{service}': vip {vip} is outside node.service_cidr {cidr}; pick an address \
         inside it"
    )]
    VipOutsideCidr {
        service: String,
        vip: Ipv4Addr,
        cidr: Ipv4Net,
    },
    #[error(
        "service '{service}': vip {vip} is the {why} of node.service_cidr {cidr}; pick a host \
         address"
    )]
    VipReserved {
        service: String,
        vip: Ipv4Addr,
        cidr: Ipv4Net,
        why: &'static str,
    },
    #[error(
        "service '{second}' has the VIP {frontend} of service '{first}'; a VIP, port and \
         protocol belong to one service: change the vip or the port"
    )]
    DuplicateFrontend {
        first: String,
        second: String,
        frontend: String,
    },
    #[error("service '{service}' has {count} backends; a service holds at most {max}: remove some")]
    TooManyBackends {
        service: String,
        count: usize,
        max: usize,
    },
    #[error(
        "service '{service}' lists backend {backend} twice; list each backend once (Maglev \
         weighs backends equally)"
    )]
    DuplicateBackend { service: String, backend: String },
    #[error("service '{service}': affinity_timeout {value} {why}")]
    AffinityTimeout {
        service: String,
        value: u32,
        why: String,
    },
    #[error("{count} {what} are configured; the datapath holds at most {max}: remove some")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
}

impl Config {
    /// The checks of `node.service_cidr`, `[[port_forwards]]` and
    /// `[[services]]`, in this order: the service CIDR (network address,
    /// special ranges, the pod CIDR, the uplink's network, routes); each
    /// forward in order (ports, NAT range, address, target, duplicates);
    /// each service in order (name, VIP, ports, backends, affinity,
    /// duplicates); the totals against the maps' sizes. (Service names are
    /// checked before the services.)
    pub(super) fn check_lb(&self) -> Result<(), ConfigError> {
        self.check_service_cidr()?;
        self.check_port_forwards()?;
        for svc in &self.services {
            check_name("service name", &svc.name)?;
        }
        Ok(self.check_services()?)
    }

    fn check_service_cidr(&self) -> Result<(), LbError> {
        let Some(cidr) = self.node.service_cidr else {
            return Ok(());
        };
        if cidr.trunc() != cidr {
            return Err(LbError::ServiceCidrNotNetwork {
                cidr,
                network: cidr.trunc(),
            });
        }
        if let Some((range, why)) = SPECIAL_RANGES.iter().find(|(r, _)| overlaps(cidr, *r)) {
            return Err(LbError::ServiceCidrSpecial {
                cidr,
                range: *range,
                why,
            });
        }
        let overlap = |what: String| LbError::ServiceCidrOverlaps { cidr, what };
        if overlaps(cidr, self.node.pod_cidr) {
            return Err(overlap(format!("the pod CIDR {}", self.node.pod_cidr)));
        }
        if let Some(u) = &self.node.uplink
            && let Some(a) = u.address
            && overlaps(cidr, a.trunc())
        {
            return Err(overlap(format!(
                "the network {} of the uplink {}",
                a.trunc(),
                u.name
            )));
        }
        // A default route covers everything; only routes to a part of the
        // address space can clash with the VIPs.
        if let Some(r) = self
            .routes
            .iter()
            .find(|r| r.dst.prefix_len() > 0 && overlaps(cidr, r.dst))
        {
            return Err(overlap(format!("the route to {}", r.dst)));
        }
        Ok(())
    }

    fn check_target(&self, owner: &str, target: &Target) -> Result<(), LbError> {
        match target {
            Target::Pod(pod) => {
                if !self.pods.iter().any(|p| p.name == *pod) {
                    return Err(LbError::UnknownPod {
                        owner: owner.to_owned(),
                        pod: pod.clone(),
                    });
                }
            }
            Target::Address(a) => {
                if a.port() == 0 {
                    return Err(LbError::PortZero {
                        owner: owner.to_owned(),
                        field: "the backend's port",
                    });
                }
                let why = special_address(*a.ip())
                    .map(|w| format!("is {w}"))
                    .or_else(|| {
                        self.node
                            .service_cidr
                            .filter(|c| c.contains(a.ip()))
                            .map(|c| format!("is inside node.service_cidr {c} (a VIP)"))
                    });
                if let Some(why) = why {
                    return Err(LbError::TargetAddress {
                        owner: owner.to_owned(),
                        address: *a,
                        why,
                    });
                }
            }
        }
        Ok(())
    }

    fn check_port_forwards(&self) -> Result<(), LbError> {
        let range = self.nat.port_range;
        // (proto, port) → where forwards listen on it.
        let mut seen: BTreeMap<(L4Proto, u16), Vec<Listener>> = BTreeMap::new();
        for (i, pf) in self.port_forwards.iter().enumerate() {
            let owner = format!(
                "[[port_forwards]] entry {} ({} {})",
                i + 1,
                pf.proto,
                pf.port
            );
            if pf.port == 0 {
                return Err(LbError::PortZero {
                    owner,
                    field: "port",
                });
            }
            if pf.to_port == Some(0) {
                return Err(LbError::PortZero {
                    owner,
                    field: "to_port",
                });
            }
            if (range.min..=range.max).contains(&pf.port) {
                return Err(LbError::NodePortInNatRange {
                    owner,
                    port: pf.port,
                    range,
                });
            }
            if let Some(address) = pf.address {
                let why = special_address(address)
                    .map(|w| format!("is {w}"))
                    .or_else(|| {
                        (self.node.pod_cidr.contains(&address) && address != self.gateway())
                            .then(|| format!("is inside the pod CIDR {}", self.node.pod_cidr))
                    })
                    .or_else(|| {
                        self.node
                            .service_cidr
                            .filter(|c| c.contains(&address))
                            .map(|c| format!("is inside node.service_cidr {c}"))
                    });
                if let Some(why) = why {
                    return Err(LbError::ForwardAddress {
                        owner,
                        address,
                        why,
                    });
                }
            }
            if let (Target::Address(to), Some(_)) = (&pf.to, pf.to_port) {
                return Err(LbError::ToPortWithAddress { owner, to: *to });
            }
            self.check_target(&owner, &pf.to)?;
            let others = seen.entry((pf.proto, pf.port)).or_default();
            if let Some((_, first)) = others
                .iter()
                .find(|(a, _)| a.is_none() || pf.address.is_none() || *a == pf.address)
            {
                let what = match pf.address {
                    Some(a) => format!("{} {a}:{}", pf.proto, pf.port),
                    None => format!("{} port {} on every node address", pf.proto, pf.port),
                };
                return Err(LbError::DuplicateForward {
                    first: first.clone(),
                    second: owner,
                    what,
                });
            }
            others.push((pf.address, owner));
        }
        Ok(())
    }

    fn check_services(&self) -> Result<(), LbError> {
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let mut frontends: BTreeMap<(Ipv4Addr, u16, L4Proto), &str> = BTreeMap::new();
        let mut backends_total = 0_usize;
        for svc in &self.services {
            if !names.insert(&svc.name) {
                return Err(LbError::DuplicateService {
                    name: svc.name.clone(),
                });
            }
            let service = svc.name.clone();
            let Some(cidr) = self.node.service_cidr else {
                return Err(LbError::ServicesWithoutCidr { service });
            };
            if !cidr.contains(&svc.vip) {
                return Err(LbError::VipOutsideCidr {
                    service,
                    vip: svc.vip,
                    cidr,
                });
            }
            let edge = if svc.vip == cidr.network() {
                Some("network address")
            } else if svc.vip == cidr.broadcast() {
                Some("broadcast address")
            } else {
                None
            };
            if let Some(why) = edge
                && cidr.prefix_len() <= 30
            {
                return Err(LbError::VipReserved {
                    service,
                    vip: svc.vip,
                    cidr,
                    why,
                });
            }
            let owner = format!("service '{}'", svc.name);
            if svc.port == 0 {
                return Err(LbError::PortZero {
                    owner,
                    field: "port",
                });
            }
            if svc.target_port == Some(0) {
                return Err(LbError::PortZero {
                    owner,
                    field: "target_port",
                });
            }
            if svc.backends.len() > MAX_SERVICE_BACKENDS {
                return Err(LbError::TooManyBackends {
                    service,
                    count: svc.backends.len(),
                    max: MAX_SERVICE_BACKENDS,
                });
            }
            let mut seen: BTreeSet<&Target> = BTreeSet::new();
            let mut dests: BTreeSet<(Target, u16)> = BTreeSet::new();
            for b in &svc.backends {
                self.check_target(&owner, b)?;
                if !seen.insert(b) || !dests.insert((b.clone(), svc.backend_port(b))) {
                    return Err(LbError::DuplicateBackend {
                        service,
                        backend: b.to_string(),
                    });
                }
            }
            backends_total += svc.backends.len();
            match (svc.affinity, svc.affinity_timeout) {
                (SessionAffinity::None, Some(value)) => {
                    return Err(LbError::AffinityTimeout {
                        service,
                        value,
                        why: "is set without affinity; add `affinity = \"client_ip\"` or remove \
                              affinity_timeout"
                            .into(),
                    });
                }
                (SessionAffinity::ClientIp, Some(value))
                    if value == 0 || value > MAX_AFFINITY_TIMEOUT =>
                {
                    return Err(LbError::AffinityTimeout {
                        service,
                        value,
                        why: format!(
                            "is out of range; use 1 to {MAX_AFFINITY_TIMEOUT} seconds (default \
                             {})",
                            super::lb::DEFAULT_AFFINITY_TIMEOUT
                        ),
                    });
                }
                _ => {}
            }
            let key = (svc.vip, svc.port, svc.proto);
            if let Some(first) = frontends.insert(key, &svc.name) {
                return Err(LbError::DuplicateFrontend {
                    first: first.to_owned(),
                    second: svc.name.clone(),
                    frontend: format!("{}:{}/{}", svc.vip, svc.port, svc.proto),
                });
            }
        }
        // A forward without an address is at least two frontends (an
        // uplink address and the gateway); the map's size is checked
        // again, exactly, when the apply is planned.
        let count = self.services.len()
            + self
                .port_forwards
                .iter()
                .map(|f| if f.address.is_some() { 1 } else { 2 })
                .sum::<usize>();
        if count > FRONTENDS_MAX as usize {
            return Err(LbError::TooMany {
                what: "frontends (services and port-forward addresses)",
                count,
                max: FRONTENDS_MAX as usize,
            });
        }
        let total = backends_total + count - self.services.len();
        if total > BACKENDS_MAX as usize {
            return Err(LbError::TooMany {
                what: "backends (of every service and forward)",
                count: total,
                max: BACKENDS_MAX as usize,
            });
        }
        Ok(())
    }
}
