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
    fs,
    io::{self, Write as _},
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

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
    /// A requested address is outside the pod CIDR.
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
    /// A requested address is the network, broadcast or gateway address.
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
        let fail = |step: &'static str| {
            move |source: io::Error| IpamError::Write {
                path: path.to_path_buf(),
                step,
                source,
            }
        };
        let name = path.file_name().ok_or_else(|| {
            fail("naming the file")(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path does not end in a file name",
            ))
        })?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        fs::create_dir_all(dir).map_err(fail("creating its directory"))?;

        let mut tmp_name = name.to_os_string();
        tmp_name.push(format!(".tmp.{}", std::process::id()));
        let tmp = dir.join(tmp_name);
        let mut json =
            serde_json::to_vec_pretty(self).expect("an Ipam is always representable in JSON");
        json.push(b'\n');
        let written = (|| {
            let mut file = fs::File::create(&tmp).map_err(fail("creating a temporary file"))?;
            file.write_all(&json)
                .map_err(fail("writing the temporary file"))?;
            file.sync_all()
                .map_err(fail("syncing the temporary file"))?;
            fs::rename(&tmp, path).map_err(fail("renaming the temporary file over it"))
        })();
        if written.is_err() {
            // Best effort: the error that matters is the one returned.
            let _ = fs::remove_file(&tmp);
        }
        written?;
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(fail("syncing its directory"))
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
                self.check_usable(pod, address)?;
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

    /// Whether `pod` may hold `address`, other pods aside.
    fn check_usable(&self, pod: &str, address: Ipv4Addr) -> Result<(), IpamError> {
        if !self.cidr.contains(&address) {
            return Err(IpamError::OutsideCidr {
                pod: pod.to_owned(),
                address,
                cidr: self.cidr,
            });
        }
        if let Some(why) = self.reserved(address) {
            return Err(IpamError::Reserved {
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
/// ([`IpamError::OutsideCidr`], [`IpamError::Reserved`], or
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
        next.check_usable(pod, address)?;
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
            && next.check_usable(pod, address).is_ok()
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
mod tests {
    use super::*;

    fn addr(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn cidr(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    fn ipam24() -> Ipam {
        Ipam::new(cidr("10.200.0.0/24"), addr("10.200.0.1"))
    }

    fn pods(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<Ipv4Addr>)> {
        list.iter()
            .map(|(p, a)| (p.to_string(), a.map(addr)))
            .collect()
    }

    fn leases(ipam: &Ipam) -> Vec<(&str, String)> {
        ipam.leases()
            .iter()
            .map(|(p, a)| (p.as_str(), a.to_string()))
            .collect()
    }

    fn assert_mentions(err: &IpamError, mentions: &[&str]) {
        let msg = err.to_string();
        for m in mentions {
            assert!(msg.contains(m), "{msg:?} does not mention {m:?}");
        }
    }

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("netpath-ipam-test-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn capacity() {
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/30"), addr("10.0.0.1")).capacity(),
            1
        );
        assert_eq!(ipam24().capacity(), 253);
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/24"), addr("10.0.0.200")).capacity(),
            253
        );
        // A gateway outside the CIDR (or on its edge) reserves nothing more.
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/24"), addr("10.9.0.1")).capacity(),
            254
        );
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/24"), addr("10.0.0.0")).capacity(),
            254
        );
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/31"), addr("10.0.0.1")).capacity(),
            0
        );
        assert_eq!(
            Ipam::new(cidr("10.0.0.0/32"), addr("10.0.0.1")).capacity(),
            0
        );
        assert_eq!(
            Ipam::new(cidr("0.0.0.0/0"), addr("0.0.0.1")).capacity(),
            u32::MAX - 2
        );
    }

    #[test]
    fn new_truncates_the_cidr() {
        let ipam = Ipam::new(cidr("10.200.0.9/24"), addr("10.200.0.1"));
        assert_eq!(ipam.cidr(), cidr("10.200.0.0/24"));
        assert_eq!(ipam.gateway(), addr("10.200.0.1"));
    }

    #[test]
    fn assign_lowest_free_and_idempotent() {
        let mut ipam = ipam24();
        assert_eq!(ipam.assign("a", None).unwrap(), addr("10.200.0.2"));
        assert_eq!(ipam.assign("b", None).unwrap(), addr("10.200.0.3"));
        assert_eq!(ipam.assign("a", None).unwrap(), addr("10.200.0.2"));
        assert_eq!(
            ipam.assign("a", Some(addr("10.200.0.2"))).unwrap(),
            addr("10.200.0.2")
        );
        assert_eq!(ipam.lease("a"), Some(addr("10.200.0.2")));
        assert_eq!(ipam.lease("zzz"), None);
        assert_eq!(ipam.leases().len(), 2);
    }

    #[test]
    fn assign_skips_a_gateway_in_the_middle() {
        let mut ipam = Ipam::new(cidr("10.0.0.0/29"), addr("10.0.0.2"));
        let got: Vec<_> = ["a", "b", "c"]
            .iter()
            .map(|p| ipam.assign(p, None).unwrap().to_string())
            .collect();
        assert_eq!(got, ["10.0.0.1", "10.0.0.3", "10.0.0.4"]);
    }

    #[test]
    fn assign_requested_replaces_the_old_lease() {
        let mut ipam = ipam24();
        ipam.assign("a", None).unwrap();
        assert_eq!(
            ipam.assign("a", Some(addr("10.200.0.50"))).unwrap(),
            addr("10.200.0.50")
        );
        assert_eq!(leases(&ipam), [("a", "10.200.0.50".into())]);
        // The old address is free again.
        assert_eq!(ipam.assign("b", None).unwrap(), addr("10.200.0.2"));
    }

    #[test]
    fn release_frees_the_address() {
        let mut ipam = ipam24();
        ipam.assign("a", None).unwrap();
        ipam.assign("b", None).unwrap();
        assert_eq!(ipam.release("a"), Some(addr("10.200.0.2")));
        assert_eq!(ipam.release("a"), None);
        assert_eq!(ipam.assign("c", None).unwrap(), addr("10.200.0.2"));
    }

    #[test]
    fn assign_errors() {
        let mut ipam = ipam24();
        ipam.assign("a", Some(addr("10.200.0.9"))).unwrap();

        let err = ipam.assign("b", Some(addr("10.200.0.9"))).unwrap_err();
        assert!(matches!(err, IpamError::InUse { .. }));
        assert_mentions(&err, &["'b'", "10.200.0.9", "'a'"]);

        let err = ipam.assign("b", Some(addr("10.0.1.7"))).unwrap_err();
        assert!(matches!(err, IpamError::OutsideCidr { .. }));
        assert_mentions(&err, &["'b'", "10.0.1.7", "10.200.0.0/24"]);

        for (a, why) in [
            ("10.200.0.0", "network address"),
            ("10.200.0.255", "broadcast address"),
            ("10.200.0.1", "gateway"),
        ] {
            let err = ipam.assign("b", Some(addr(a))).unwrap_err();
            assert!(matches!(err, IpamError::Reserved { .. }));
            assert_mentions(&err, &["'b'", a, why]);
        }
        // Nothing changed.
        assert_eq!(leases(&ipam), [("a", "10.200.0.9".into())]);
    }

    #[test]
    fn assign_exhausted() {
        let mut ipam = Ipam::new(cidr("10.0.0.0/30"), addr("10.0.0.1"));
        assert_eq!(ipam.assign("a", None).unwrap(), addr("10.0.0.2"));
        let err = ipam.assign("b", None).unwrap_err();
        assert!(matches!(
            err,
            IpamError::Exhausted {
                capacity: 1,
                wanted: 2,
                ..
            }
        ));
        assert_mentions(&err, &["10.0.0.0/30", "room for 1", "2 need"]);
    }

    #[test]
    fn plan_fresh_in_pod_order() {
        let p = plan(&ipam24(), &pods(&[("red", None), ("blue", None)])).unwrap();
        assert_eq!(
            leases(&p),
            [("blue", "10.200.0.3".into()), ("red", "10.200.0.2".into())]
        );
        assert_eq!(p.cidr(), ipam24().cidr());
        assert_eq!(p.gateway(), ipam24().gateway());
    }

    #[test]
    fn plan_is_idempotent() {
        let want = pods(&[
            ("a", None),
            ("b", Some("10.200.0.2")),
            ("c", None),
            ("d", Some("10.200.0.40")),
        ]);
        let first = plan(&ipam24(), &want).unwrap();
        let second = plan(&first, &want).unwrap();
        assert_eq!(first, second);
        assert_eq!(
            leases(&first),
            [
                ("a", "10.200.0.3".into()),
                ("b", "10.200.0.2".into()),
                ("c", "10.200.0.4".into()),
                ("d", "10.200.0.40".into()),
            ]
        );
    }

    #[test]
    fn plan_adding_a_pod_moves_no_other() {
        let before = plan(&ipam24(), &pods(&[("b", None), ("c", None)])).unwrap();
        // "a" comes first in pod order but must not take b's address.
        let after = plan(&before, &pods(&[("a", None), ("b", None), ("c", None)])).unwrap();
        assert_eq!(after.lease("b"), before.lease("b"));
        assert_eq!(after.lease("c"), before.lease("c"));
        assert_eq!(after.lease("a"), Some(addr("10.200.0.4")));
    }

    #[test]
    fn plan_reuses_a_deleted_pods_address() {
        let before = plan(&ipam24(), &pods(&[("a", None), ("b", None), ("c", None)])).unwrap();
        let after = plan(&before, &pods(&[("a", None), ("c", None)])).unwrap();
        assert_eq!(after.lease("b"), None);
        assert_eq!(after.leases().len(), 2);
        assert_eq!(after.lease("c"), before.lease("c"));
        let again = plan(&after, &pods(&[("a", None), ("c", None), ("d", None)])).unwrap();
        assert_eq!(again.lease("d"), before.lease("b"));
    }

    #[test]
    fn plan_static_wins_over_a_dynamic_lease() {
        let before = plan(&ipam24(), &pods(&[("a", None), ("b", None)])).unwrap();
        assert_eq!(before.lease("a"), Some(addr("10.200.0.2")));
        // "c" now asks for a's address: c gets it, a moves, b stays.
        let after = plan(
            &before,
            &pods(&[("a", None), ("b", None), ("c", Some("10.200.0.2"))]),
        )
        .unwrap();
        assert_eq!(after.lease("c"), Some(addr("10.200.0.2")));
        assert_eq!(after.lease("b"), before.lease("b"));
        assert_eq!(after.lease("a"), Some(addr("10.200.0.4")));
    }

    #[test]
    fn plan_moves_a_pod_to_its_requested_address() {
        let before = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
        let after = plan(&before, &pods(&[("a", Some("10.200.0.99"))])).unwrap();
        assert_eq!(leases(&after), [("a", "10.200.0.99".into())]);
        // Dropping the request keeps the address.
        let later = plan(&after, &pods(&[("a", None)])).unwrap();
        assert_eq!(later, after);
    }

    #[test]
    fn plan_exhausted() {
        let small = Ipam::new(cidr("10.0.0.0/29"), addr("10.0.0.1"));
        let five: Vec<_> = (0..5).map(|i| (format!("p{i}"), None)).collect();
        plan(&small, &five).unwrap();
        let six: Vec<_> = (0..6).map(|i| (format!("p{i}"), None)).collect();
        let err = plan(&small, &six).unwrap_err();
        assert!(matches!(
            err,
            IpamError::Exhausted {
                capacity: 5,
                wanted: 6,
                ..
            }
        ));
        assert_mentions(&err, &["10.0.0.0/29", "room for 5", "6 need"]);
    }

    #[test]
    fn plan_errors() {
        let err = plan(
            &ipam24(),
            &pods(&[("a", Some("10.200.0.5")), ("b", Some("10.200.0.5"))]),
        )
        .unwrap_err();
        assert!(matches!(err, IpamError::InUse { .. }));
        assert_mentions(&err, &["'b'", "10.200.0.5", "'a'"]);

        let err = plan(&ipam24(), &pods(&[("a", Some("10.0.1.7"))])).unwrap_err();
        assert!(matches!(err, IpamError::OutsideCidr { .. }));
        assert_mentions(&err, &["'a'", "10.0.1.7"]);

        let err = plan(&ipam24(), &pods(&[("a", Some("10.200.0.1"))])).unwrap_err();
        assert!(matches!(err, IpamError::Reserved { why: "gateway", .. }));
        assert_mentions(&err, &["'a'", "10.200.0.1", "gateway"]);

        let err = plan(&ipam24(), &pods(&[("a", None), ("a", None)])).unwrap_err();
        assert!(matches!(err, IpamError::DuplicatePod { .. }));
        assert_mentions(&err, &["'a'"]);
    }

    #[test]
    fn plan_of_nothing_drops_every_lease() {
        let before = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
        let after = plan(&before, &[]).unwrap();
        assert!(after.leases().is_empty());
    }

    #[test]
    fn save_load_round_trip() {
        let dir = TempDir::new("round-trip");
        let path = dir.0.join("nested/dir/leases.json");
        // Missing file: no leases.
        let empty = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap();
        assert_eq!(empty, ipam24());

        let ipam = plan(
            &ipam24(),
            &pods(&[("red", None), ("blue", Some("10.200.0.77"))]),
        )
        .unwrap();
        ipam.save(&path).unwrap();
        let loaded = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap();
        assert_eq!(loaded, ipam);
        // Saving again replaces the file and leaves no temporary behind.
        let mut changed = loaded.clone();
        changed.release("red");
        changed.save(&path).unwrap();
        assert_eq!(
            Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap(),
            changed
        );
        let files: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
        assert_eq!(files.len(), 1);
    }

    #[test]
    fn load_corrupt() {
        let dir = TempDir::new("corrupt");
        let path = dir.0.join("leases.json");
        let net = cidr("10.200.0.0/24");
        let gw = addr("10.200.0.1");
        for (text, mentions) in [
            ("{ not json", vec!["leases.json"]),
            (
                r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","extra":1}"#,
                vec!["extra"],
            ),
            (
                r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.9.0.2"}}"#,
                vec!["leases.json", "10.9.0.2", "'a'"],
            ),
            (
                r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.200.0.1"}}"#,
                vec!["10.200.0.1", "gateway"],
            ),
            (
                r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.200.0.5","b":"10.200.0.5"}}"#,
                vec!["10.200.0.5", "'a'", "'b'"],
            ),
        ] {
            fs::write(&path, text).unwrap();
            let err = Ipam::load(&path, net, gw).unwrap_err();
            assert!(matches!(err, IpamError::Corrupt { .. }), "{err}");
            assert_mentions(&err, &mentions);
        }
    }

    #[test]
    fn load_unreadable() {
        let dir = TempDir::new("unreadable");
        // A directory where the file should be cannot be read as a file.
        let err = Ipam::load(&dir.0, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap_err();
        assert!(matches!(err, IpamError::Read { .. }), "{err}");
        assert_mentions(&err, &[&dir.0.display().to_string()]);
    }

    #[test]
    fn save_errors() {
        let dir = TempDir::new("save-errors");
        let blocker = dir.0.join("file");
        fs::write(&blocker, "").unwrap();
        let err = ipam24().save(&blocker.join("leases.json")).unwrap_err();
        assert!(matches!(err, IpamError::Write { .. }), "{err}");
        assert_mentions(&err, &["leases.json"]);
    }

    #[test]
    fn load_cidr_or_gateway_changed() {
        let dir = TempDir::new("changed");
        let path = dir.0.join("leases.json");
        let ipam = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
        ipam.save(&path).unwrap();

        let err = Ipam::load(&path, cidr("10.201.0.0/24"), addr("10.201.0.1")).unwrap_err();
        assert!(matches!(err, IpamError::CidrChanged { leases: 1, .. }));
        assert_mentions(
            &err,
            &["10.200.0.0/24", "10.201.0.0/24", "delete the pods first"],
        );

        let err = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.254")).unwrap_err();
        assert!(matches!(err, IpamError::GatewayChanged { .. }));
        assert_mentions(
            &err,
            &["10.200.0.1", "10.200.0.254", "delete the pods first"],
        );

        // Without leases, the file follows the configuration.
        plan(&ipam, &[]).unwrap().save(&path).unwrap();
        let moved = Ipam::load(&path, cidr("10.201.0.0/24"), addr("10.201.0.1")).unwrap();
        assert_eq!(moved, Ipam::new(cidr("10.201.0.0/24"), addr("10.201.0.1")));
    }
}
