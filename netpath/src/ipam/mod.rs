//! The node's address leases: which pod holds which address of the pod CIDR.
//!
//! An [`Ipam`] never hands one address out twice and never hands out the
//! network, broadcast or gateway address. [`plan`] computes the leases of a
//! whole desired pod set before anything changes; [`Ipam::load`] and
//! [`Ipam::save`] keep the leases in a JSON file:
//!
//! ```json
//! { "cidr": "10.200.0.0/24", "gateway": "10.200.0.1",
//!   "leases": { "blue": "10.200.0.3", "red": "10.200.0.2" } }
//! ```

use std::{
    collections::{BTreeMap, BTreeSet},
    fs, io,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::sys::file::write_atomic;

/// The address leases of one node's pod CIDR.
///
/// Invariants (kept by every constructor, including deserialization): each
/// lease is a usable address of `cidr` (not network, broadcast or gateway)
/// and no two pods hold the same address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "IpamFile")]
pub struct Ipam {
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    leases: BTreeMap<String, Ipv4Addr>,
}

/// The lease file as written, before its invariants are checked.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct IpamFile {
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    #[serde(default)]
    leases: BTreeMap<String, Ipv4Addr>,
}

impl TryFrom<IpamFile> for Ipam {
    type Error = String;

    /// Checks the invariants of a lease file.
    fn try_from(file: IpamFile) -> Result<Self, String> {
        let ipam = Ipam::new(file.cidr, file.gateway);
        let mut holders: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        for (pod, &address) in &file.leases {
            if !ipam.cidr.contains(&address) {
                return Err(format!(
                    "pod '{pod}' holds {address}, outside the pod CIDR {}",
                    ipam.cidr
                ));
            }
            if let Some(why) = ipam.reserved(address) {
                return Err(format!(
                    "pod '{pod}' holds {address}, the {why} of the pod CIDR {}",
                    ipam.cidr
                ));
            }
            if let Some(other) = holders.insert(address, pod) {
                return Err(format!("pods '{other}' and '{pod}' both hold {address}"));
            }
        }
        Ok(Ipam {
            leases: file.leases,
            ..ipam
        })
    }
}

/// Why an address could not be leased, or the lease file not used.
#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    /// Every usable address is taken.
    #[error(
        "the pod CIDR {cidr} has room for {capacity} pods but {wanted} need an address; use \
         a larger pod_cidr (a shorter prefix) or fewer pods"
    )]
    Exhausted {
        /// The pod CIDR.
        cidr: Ipv4Net,
        /// Its usable addresses.
        capacity: u32,
        /// How many pods need an address.
        wanted: usize,
    },
    /// A requested address is outside the pod CIDR or reserved.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// A requested address is another pod's.
    #[error(
        "pod '{pod}': address {address} is already leased to pod '{by_pod}'; pick another \
         address or omit `address` to let IPAM choose"
    )]
    InUse {
        /// The pod asking.
        pod: String,
        /// The requested address.
        address: Ipv4Addr,
        /// The pod holding it.
        by_pod: String,
    },
    /// [`plan`] was given the same pod twice.
    #[error("pod '{pod}' appears more than once in the desired pods; pod names must be unique")]
    DuplicatePod {
        /// The pod.
        pod: String,
    },
    /// The lease file exists but could not be read.
    #[error(
        "cannot read the IPAM lease file {}: {source}; check its permissions",
        path.display()
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The lease file could not be written.
    #[error(
        "cannot save the IPAM lease file {} ({step}): {source}; check that its directory is \
         writable and the disk is not full",
        path.display()
    )]
    Write {
        /// The file.
        path: PathBuf,
        /// The step that failed.
        step: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The lease file is not valid JSON, or its leases break the rules.
    #[error(
        "the IPAM lease file {} is corrupt: {source}; repair it, or delete it and the pods \
         (deleting only the file forgets which pods hold which addresses)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The configuration's pod CIDR differs from the one the leases are in.
    #[error(
        "the pod CIDR changed from {file_cidr} to {config_cidr} while {leases} pods hold \
         leases (lease file {}); delete the pods first (apply with no pods and the old \
         pod_cidr), then change pod_cidr",
        path.display()
    )]
    CidrChanged {
        /// The lease file.
        path: PathBuf,
        /// The pod CIDR in the lease file.
        file_cidr: Ipv4Net,
        /// The pod CIDR in the configuration.
        config_cidr: Ipv4Net,
        /// How many leases the file holds.
        leases: usize,
    },
    /// The configuration's gateway differs from the one the leases were made with.
    #[error(
        "the gateway changed from {file_gateway} to {config_gateway} while {leases} pods hold \
         leases (lease file {}); delete the pods first (apply with no pods and the old \
         gateway), then change the gateway",
        path.display()
    )]
    GatewayChanged {
        /// The lease file.
        path: PathBuf,
        /// The gateway in the lease file.
        file_gateway: Ipv4Addr,
        /// The gateway in the configuration.
        config_gateway: Ipv4Addr,
        /// How many leases the file holds.
        leases: usize,
    },
}

/// Why a pod may not hold an address of the pod CIDR: the same error for a
/// configured address ([`crate::config::ConfigError::Address`]) and a
/// requested lease ([`IpamError::Address`]).
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    /// The address is outside the pod CIDR.
    #[error(
        "pod '{pod}': address {address} is outside the pod CIDR {cidr}; pick an address \
         inside it or omit `address` to let IPAM choose"
    )]
    OutsideCidr {
        /// The pod.
        pod: String,
        /// The requested address.
        address: Ipv4Addr,
        /// The pod CIDR.
        cidr: Ipv4Net,
    },
    /// The address is the network, broadcast or gateway address.
    #[error(
        "pod '{pod}': address {address} is the {why} of the pod CIDR {cidr}; pick another \
         address or omit `address` to let IPAM choose"
    )]
    Reserved {
        /// The pod.
        pod: String,
        /// The requested address.
        address: Ipv4Addr,
        /// The pod CIDR.
        cidr: Ipv4Net,
        /// `network address`, `broadcast address` or `gateway`.
        why: &'static str,
    },
}

impl Ipam {
    /// No leases in `cidr` (its host bits are dropped), with `gateway`
    /// reserved. A gateway outside `cidr` reserves nothing.
    pub fn new(cidr: Ipv4Net, gateway: Ipv4Addr) -> Ipam {
        Ipam {
            cidr: cidr.trunc(),
            gateway,
            leases: BTreeMap::new(),
        }
    }

    /// Loads the lease file (JSON) at `path`; a missing file means no leases.
    ///
    /// If the file holds leases made for another pod CIDR or gateway than
    /// `cidr` and `gateway`, that is [`IpamError::CidrChanged`] or
    /// [`IpamError::GatewayChanged`]; a file without leases adopts the new
    /// values.
    pub fn load(path: &Path, cidr: Ipv4Net, gateway: Ipv4Addr) -> Result<Ipam, IpamError> {
        let fresh = Ipam::new(cidr, gateway);
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(fresh),
            Err(source) => {
                return Err(IpamError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let file: Ipam = serde_json::from_str(&text).map_err(|source| IpamError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
        if file.leases.is_empty() {
            return Ok(fresh);
        }
        if file.cidr != fresh.cidr {
            return Err(IpamError::CidrChanged {
                path: path.to_path_buf(),
                file_cidr: file.cidr,
                config_cidr: fresh.cidr,
                leases: file.leases.len(),
            });
        }
        if file.gateway != gateway {
            return Err(IpamError::GatewayChanged {
                path: path.to_path_buf(),
                file_gateway: file.gateway,
                config_gateway: gateway,
                leases: file.leases.len(),
            });
        }
        Ok(file)
    }

    /// Writes the leases to `path` atomically: a temporary file beside it,
    /// fsync, rename over `path`, fsync of the directory. Creates missing
    /// parent directories.
    pub fn save(&self, path: &Path) -> Result<(), IpamError> {
        let mut json =
            serde_json::to_vec_pretty(self).expect("an Ipam is always representable in JSON");
        json.push(b'\n');
        write_atomic(path, &json).map_err(|e| IpamError::Write {
            path: e.path,
            step: e.step,
            source: e.source,
        })
    }

    /// The pod CIDR.
    pub fn cidr(&self) -> Ipv4Net {
        self.cidr
    }

    /// The gateway address (never leased).
    pub fn gateway(&self) -> Ipv4Addr {
        self.gateway
    }

    /// The address `pod` holds, if any.
    pub fn lease(&self, pod: &str) -> Option<Ipv4Addr> {
        self.leases.get(pod).copied()
    }

    /// All leases, by pod name.
    pub fn leases(&self) -> &BTreeMap<String, Ipv4Addr> {
        &self.leases
    }

    /// How many addresses can be leased: the CIDR minus its network,
    /// broadcast and gateway addresses (a /30 has 1, a /24 253).
    pub fn capacity(&self) -> u32 {
        let Some((first, last)) = self.host_range() else {
            return 0;
        };
        let hosts = u64::from(last - first) + 1;
        let gateway = u64::from(self.in_range(self.gateway));
        u32::try_from(hosts - gateway).expect("at most 2^32 - 2 host addresses")
    }

    /// Gives `pod` an address and returns it.
    ///
    /// If `pod` already holds a lease and `requested` is `None` or that
    /// lease, the lease is returned unchanged. A requested address must be
    /// inside the CIDR, not reserved and not leased to another pod; it
    /// replaces the pod's old lease. Without a request, the pod gets the
    /// lowest free usable address.
    pub fn assign(
        &mut self,
        pod: &str,
        requested: Option<Ipv4Addr>,
    ) -> Result<Ipv4Addr, IpamError> {
        if let Some(current) = self.lease(pod)
            && requested.is_none_or(|r| r == current)
        {
            return Ok(current);
        }
        let address = match requested {
            Some(address) => {
                self.check_address(pod, address)?;
                if let Some((by_pod, _)) = self
                    .leases
                    .iter()
                    .find(|(p, a)| **a == address && *p != pod)
                {
                    return Err(IpamError::InUse {
                        pod: pod.to_owned(),
                        address,
                        by_pod: by_pod.clone(),
                    });
                }
                address
            }
            None => {
                let taken: BTreeSet<Ipv4Addr> = self.leases.values().copied().collect();
                let mut cursor = None;
                self.next_free(&taken, &mut cursor)
                    .ok_or_else(|| IpamError::Exhausted {
                        cidr: self.cidr,
                        capacity: self.capacity(),
                        wanted: self.leases.len() + 1,
                    })?
            }
        };
        self.leases.insert(pod.to_owned(), address);
        Ok(address)
    }

    /// Takes `pod`'s lease away and returns the address it held.
    pub fn release(&mut self, pod: &str) -> Option<Ipv4Addr> {
        self.leases.remove(pod)
    }

    /// The first and last host addresses (without network and broadcast),
    /// or `None` for a /31 or /32.
    fn host_range(&self) -> Option<(u32, u32)> {
        if self.cidr.prefix_len() > 30 {
            return None;
        }
        Some((
            u32::from(self.cidr.network()) + 1,
            u32::from(self.cidr.broadcast()) - 1,
        ))
    }

    fn in_range(&self, address: Ipv4Addr) -> bool {
        self.host_range()
            .is_some_and(|(first, last)| (first..=last).contains(&u32::from(address)))
    }

    /// Why `address` (inside the CIDR) may not be leased, if it may not.
    fn reserved(&self, address: Ipv4Addr) -> Option<&'static str> {
        if address == self.cidr.network() {
            Some("network address")
        } else if address == self.cidr.broadcast() {
            Some("broadcast address")
        } else if address == self.gateway {
            Some("gateway")
        } else {
            None
        }
    }

    /// Whether `pod` may hold `address`, other pods aside: inside the CIDR
    /// and not its network, broadcast or gateway address.
    pub fn check_address(&self, pod: &str, address: Ipv4Addr) -> Result<(), AddressError> {
        if !self.cidr.contains(&address) {
            return Err(AddressError::OutsideCidr {
                pod: pod.to_owned(),
                address,
                cidr: self.cidr,
            });
        }
        if let Some(why) = self.reserved(address) {
            return Err(AddressError::Reserved {
                pod: pod.to_owned(),
                address,
                cidr: self.cidr,
                why,
            });
        }
        Ok(())
    }

    /// The lowest usable address not in `taken`, at or above `cursor` (the
    /// first host address when `None`); moves `cursor` past it.
    fn next_free(&self, taken: &BTreeSet<Ipv4Addr>, cursor: &mut Option<u32>) -> Option<Ipv4Addr> {
        let (first, last) = self.host_range()?;
        let mut candidate = cursor.unwrap_or(first).max(first);
        while candidate <= last {
            let address = Ipv4Addr::from(candidate);
            if address != self.gateway && !taken.contains(&address) {
                *cursor = candidate.checked_add(1);
                return Some(address);
            }
            candidate = candidate.checked_add(1)?;
        }
        None
    }
}

/// Plans the addresses of a whole desired pod set at once, before anything
/// changes, and returns the new leases (exactly the pods in `pods`).
///
/// Starting from `current`: leases of pods not in `pods` are dropped; every
/// requested address is honoured first (so a fixed address wins over a
/// dynamic lease that would collide, and that dynamic pod moves); pods
/// without a request keep their current lease when it is still free; the
/// rest get the lowest free addresses, in `pods` order. Errors:
/// [`IpamError::DuplicatePod`], [`IpamError::Exhausted`] (with capacity and
/// the number of pods), and a bad requested address
/// ([`IpamError::Address`], or
/// [`IpamError::InUse`] when two pods request the same one), the first in
/// `pods` order.
pub fn plan(current: &Ipam, pods: &[(String, Option<Ipv4Addr>)]) -> Result<Ipam, IpamError> {
    let mut seen = BTreeSet::new();
    if let Some((pod, _)) = pods.iter().find(|(pod, _)| !seen.insert(pod.as_str())) {
        return Err(IpamError::DuplicatePod { pod: pod.clone() });
    }
    let mut next = Ipam::new(current.cidr, current.gateway);
    let capacity = next.capacity();
    if pods.len() > capacity as usize {
        return Err(IpamError::Exhausted {
            cidr: next.cidr,
            capacity,
            wanted: pods.len(),
        });
    }

    let mut taken: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
    // 1. Requested addresses.
    for (pod, requested) in pods {
        let Some(address) = *requested else { continue };
        next.check_address(pod, address)?;
        if let Some(by_pod) = taken.insert(address, pod) {
            return Err(IpamError::InUse {
                pod: pod.clone(),
                address,
                by_pod: by_pod.to_owned(),
            });
        }
        next.leases.insert(pod.clone(), address);
    }
    // 2. Current leases that are still free.
    for (pod, requested) in pods {
        if requested.is_some() {
            continue;
        }
        if let Some(address) = current.lease(pod)
            && next.check_address(pod, address).is_ok()
            && !taken.contains_key(&address)
        {
            taken.insert(address, pod);
            next.leases.insert(pod.clone(), address);
        }
    }
    // 3. The lowest free addresses for the rest.
    let taken: BTreeSet<Ipv4Addr> = taken.into_keys().collect();
    let mut cursor = None;
    for (pod, _) in pods {
        if next.leases.contains_key(pod) {
            continue;
        }
        let address = next
            .next_free(&taken, &mut cursor)
            .ok_or(IpamError::Exhausted {
                cidr: next.cidr,
                capacity,
                wanted: pods.len(),
            })?;
        next.leases.insert(pod.clone(), address);
    }
    Ok(next)
}

#[cfg(test)]
mod tests;
