//! The checks that need no system state ([`Config::validate`]) and the
//! pod CIDR against the node's networks ([`Config::check_overlaps`]).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;

use super::{
    error::{ConfigError, IfnameOwner},
    limits::{
        GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, MAX_CONNTRACK_ENTRIES, MAX_IFNAME_LEN, MAX_MASQUERADE,
        MAX_NAME_LEN, MAX_NETNS_LEN, MAX_POD_PREFIX_LEN, MAX_ROUTES, MIN_CONNTRACK_ENTRIES,
        SPECIAL_RANGES,
    },
    schema::{Config, PodConfig, UplinkConfig, XdpMode},
};
use crate::ipam::Ipam;

impl Config {
    /// Makes every check that needs no system state and returns the first
    /// problem found, in a fixed order: the node's name, namespace, namespace
    /// prefix, pod CIDR, gateway and deny list; `[node.dns]`; the uplink (name, address, gateway);
    /// each pod in order (name, host interface, address, namespace); the pod
    /// count against the CIDR's capacity; each route in order (dst, pod
    /// CIDR, duplicates, via/dev); each masquerade rule in order (source,
    /// out, duplicates, address); the route and rule counts; `[nat]`;
    /// `[conntrack]`; finally the service CIDR, port-forwards and services
    /// (`Config::check_lb`).
    ///
    /// A `node.pod_cidr` left out for etcd to lease (C1 in
    /// [`super::cluster`]) is checked as if it were the whole cluster
    /// CIDR: what lies outside that lies outside any leased CIDR.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.pod_cidr_is_unset() {
            let Some(cluster) = self.etcd_cluster() else {
                return Err(super::cluster::ClusterError::PodCidrMissing.into());
            };
            let mut provisional = self.clone();
            provisional.node.pod_cidr = cluster.cidr;
            return provisional.validate();
        }
        let node = &self.node;
        check_name("node.name", &node.name)?;
        if let Some(netns) = &node.netns {
            check_netns_name("node.netns", netns, false)?;
        }
        if let Some(prefix) = &node.pod_netns_prefix {
            check_netns_name("node.pod_netns_prefix", prefix, true)?;
        }
        self.check_pod_cidr()?;
        let cidr = node.pod_cidr;
        let gateway = self.gateway();
        if !cidr.contains(&gateway) {
            return Err(ConfigError::GatewayOutsideCidr {
                gateway,
                pod_cidr: cidr,
            });
        }
        if let Some(why) = edge_address(cidr, gateway) {
            return Err(ConfigError::GatewayReserved {
                gateway,
                pod_cidr: cidr,
                why,
            });
        }

        if !node.deny_sources.is_empty() && node.xdp.unwrap_or_default() == XdpMode::Off {
            return Err(ConfigError::DenyWithoutXdp {
                count: node.deny_sources.len(),
            });
        }
        for prefix in &node.deny_sources {
            if prefix.trunc() != *prefix {
                return Err(ConfigError::PrefixNotNetwork {
                    what: "node.deny_sources entry",
                    prefix: *prefix,
                    network: prefix.trunc(),
                });
            }
        }

        if let Some(dns) = &node.dns {
            dns.validate()?;
        }

        let mut ifnames: BTreeMap<String, IfnameOwner> = BTreeMap::new();
        if let Some(uplink) = &node.uplink {
            check_ifname(&IfnameOwner::Uplink, &uplink.name)?;
            ifnames.insert(uplink.name.clone(), IfnameOwner::Uplink);
            if let Some(address) = uplink.address {
                let uplink_net = address.trunc();
                if overlaps(cidr, uplink_net) {
                    return Err(ConfigError::CidrOverlapsUplink {
                        pod_cidr: cidr,
                        uplink: uplink.name.clone(),
                        uplink_net,
                    });
                }
            }
            if let Some(gateway) = uplink.gateway {
                self.check_gateway(uplink, gateway)?;
            }
        }

        let ipam = Ipam::new(cidr, gateway);
        let mut names: BTreeSet<&str> = BTreeSet::new();
        let mut addresses: BTreeMap<Ipv4Addr, &str> = BTreeMap::new();
        let mut attachments: BTreeMap<(&str, &str), &str> = BTreeMap::new();
        for pod in &self.pods {
            check_name("pod name", &pod.name)?;
            if !names.insert(&pod.name) {
                return Err(ConfigError::DuplicatePod {
                    name: pod.name.clone(),
                });
            }
            let owner = IfnameOwner::pod(pod);
            let ifname = Self::host_ifname(pod);
            check_ifname(&owner, &ifname)?;
            if let Some(first) = ifnames.get(&ifname) {
                return Err(ConfigError::DuplicateIfname {
                    name: ifname,
                    first: first.clone(),
                    second: owner,
                });
            }
            ifnames.insert(ifname, owner);
            if let Some(address) = pod.address {
                ipam.check_address(&pod.name, address)?;
                if let Some(first) = addresses.insert(address, &pod.name) {
                    return Err(ConfigError::DuplicateAddress {
                        address,
                        first: first.to_owned(),
                        second: pod.name.clone(),
                    });
                }
            }
            check_attachment(pod)?;
            if let Some(id) = &pod.container_id {
                let ifname = pod.ifname.as_deref().unwrap_or(super::limits::POD_IFNAME);
                if let Some(first) = attachments.insert((id.as_str(), ifname), &pod.name) {
                    return Err(ConfigError::DuplicateAttachment {
                        container_id: id.clone(),
                        ifname: ifname.to_owned(),
                        first: first.to_owned(),
                        second: pod.name.clone(),
                    });
                }
            }
            let netns = self.pod_netns(pod);
            if pod.netns_path.is_none() && node.netns.as_deref() == Some(netns.as_str()) {
                return Err(ConfigError::NetnsIsNode {
                    pod: pod.name.clone(),
                    netns,
                });
            }
        }

        let capacity = ipam.capacity();
        if self.pods.len() > capacity as usize {
            return Err(ConfigError::CidrExhausted {
                pod_cidr: cidr,
                capacity,
                wanted: self.pods.len(),
            });
        }
        self.check_routes(&ifnames)?;
        self.check_masquerade(&ifnames)?;
        self.check_nat_and_conntrack()?;
        self.check_lb()?;
        self.check_cluster()
    }

    fn check_gateway(&self, uplink: &UplinkConfig, gateway: Ipv4Addr) -> Result<(), ConfigError> {
        let unusable = |why: String| ConfigError::UnusableAddress {
            field: "node.uplink.gateway".into(),
            address: gateway,
            why,
            hint: "use the address of the router on the uplink's network, or omit `gateway`",
        };
        if let Some(why) = self.not_a_next_hop(gateway) {
            return Err(unusable(why));
        }
        if let Some(address) = uplink.address {
            let network = address.trunc();
            if !network.contains(&gateway) {
                return Err(ConfigError::GatewayOffLink {
                    gateway,
                    uplink: uplink.name.clone(),
                    network,
                });
            }
            if gateway == address.addr() {
                return Err(unusable("is the uplink's own address".into()));
            }
            if network.prefix_len() <= 30
                && let Some(why) = edge_address(network, gateway)
            {
                return Err(unusable(format!("is the {why} of {network}")));
            }
        }
        Ok(())
    }

    /// Why `addr` cannot be a next hop (or a NAT address) of pod traffic.
    fn not_a_next_hop(&self, addr: Ipv4Addr) -> Option<String> {
        if let Some(why) = special_address(addr) {
            return Some(format!("is {why}"));
        }
        let cidr = self.node.pod_cidr;
        cidr.contains(&addr)
            .then(|| format!("is inside the pod CIDR {cidr}"))
    }

    /// The interface a route or masquerade rule uses: its own, or else the
    /// uplink's; checked like every interface name.
    fn check_rule_ifname(
        &self,
        owner: IfnameOwner,
        field: &'static str,
        name: Option<&str>,
        ifnames: &BTreeMap<String, IfnameOwner>,
    ) -> Result<(), ConfigError> {
        let Some(name) = name.or(self.node.uplink.as_ref().map(|u| u.name.as_str())) else {
            return Err(ConfigError::NoInterface { owner, field });
        };
        check_ifname(&owner, name)?;
        if let Some(IfnameOwner::Pod { pod, .. }) = ifnames.get(name) {
            return Err(ConfigError::IfnameIsPod {
                owner,
                name: name.to_owned(),
                pod: pod.clone(),
            });
        }
        Ok(())
    }

    fn check_routes(&self, ifnames: &BTreeMap<String, IfnameOwner>) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        let uplink = self.node.uplink.as_ref();
        let mut seen: BTreeMap<Ipv4Net, String> = BTreeMap::new();
        if uplink.is_some_and(|u| u.gateway.is_some()) {
            seen.insert(Ipv4Net::default(), "node.uplink.gateway".into());
        }
        for (i, route) in self.routes.iter().enumerate() {
            let dst = route.dst;
            if dst.trunc() != dst {
                return Err(ConfigError::PrefixNotNetwork {
                    what: "route dst",
                    prefix: dst,
                    network: dst.trunc(),
                });
            }
            if cidr.contains(&dst) {
                return Err(ConfigError::RouteInsidePodCidr {
                    dst,
                    pod_cidr: cidr,
                });
            }
            let here = format!("[[routes]] entry {}", i + 1);
            if let Some(first) = seen.get(&dst) {
                return Err(ConfigError::DuplicateRoute {
                    dst,
                    first: first.clone(),
                    second: here,
                });
            }
            seen.insert(dst, here);
            if route.via.is_none() && route.dev.is_none() {
                return Err(ConfigError::RouteNeedsViaOrDev { dst });
            }
            let owner = IfnameOwner::Route { dst };
            self.check_rule_ifname(owner, "dev", route.dev.as_deref(), ifnames)?;
            if let Some(via) = route.via {
                if let Some(why) = self.not_a_next_hop(via) {
                    return Err(ConfigError::UnusableAddress {
                        field: format!("route to {dst}: via"),
                        address: via,
                        why,
                        hint: "use the address of a router on a network of the route's dev",
                    });
                }
                // The uplink's network is known when its address is given;
                // other interfaces' networks are checked at apply time.
                if let Some(u) = uplink
                    && route.dev.as_deref().unwrap_or(&u.name) == u.name
                    && let Some(address) = u.address
                    && !address.trunc().contains(&via)
                {
                    return Err(ConfigError::RouteViaOffLink {
                        dst,
                        via,
                        dev: u.name.clone(),
                        network: address.trunc(),
                    });
                }
            }
        }
        if seen.len() > MAX_ROUTES {
            return Err(ConfigError::TooMany {
                what: "routes",
                count: seen.len(),
                max: MAX_ROUTES,
            });
        }
        Ok(())
    }

    fn check_masquerade(&self, ifnames: &BTreeMap<String, IfnameOwner>) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        let mut seen: BTreeSet<(Ipv4Net, String)> = Default::default();
        for rule in &self.masquerade {
            let source = rule.source.unwrap_or(cidr);
            if source.trunc() != source {
                return Err(ConfigError::PrefixNotNetwork {
                    what: "masquerade source",
                    prefix: source,
                    network: source.trunc(),
                });
            }
            if !overlaps(source, cidr) {
                return Err(ConfigError::MasqueradeOutsidePodCidr {
                    prefix: source,
                    pod_cidr: cidr,
                });
            }
            let owner = IfnameOwner::Masquerade { source };
            self.check_rule_ifname(owner, "out", rule.out.as_deref(), ifnames)?;
            let out = self.masquerade_out(rule).expect("checked above").to_owned();
            if !seen.insert((source, out.clone())) {
                return Err(ConfigError::DuplicateMasquerade {
                    prefix: source,
                    out,
                });
            }
            if let Some(address) = rule.address
                && let Some(why) = self.not_a_next_hop(address)
            {
                return Err(ConfigError::UnusableAddress {
                    field: format!("masquerade rule for {source}: address"),
                    address,
                    why,
                    hint: "use an address of the node on the out interface's network, or omit \
                           `address` to use the out interface's own",
                });
            }
        }
        if self.masquerade.len() > MAX_MASQUERADE {
            return Err(ConfigError::TooMany {
                what: "masquerade rules",
                count: self.masquerade.len(),
                max: MAX_MASQUERADE,
            });
        }
        Ok(())
    }

    fn check_nat_and_conntrack(&self) -> Result<(), ConfigError> {
        let range = self.nat.port_range;
        let why = if range.min == 0 {
            Some("includes port 0")
        } else if range.min > range.max {
            Some("is empty: MIN is above MAX")
        } else {
            None
        };
        if let Some(why) = why {
            return Err(ConfigError::InvalidPortRange { range, why });
        }
        let ct = &self.conntrack;
        if !(MIN_CONNTRACK_ENTRIES..=MAX_CONNTRACK_ENTRIES).contains(&ct.max_entries) {
            return Err(ConfigError::ConntrackSize {
                value: ct.max_entries,
            });
        }
        if let Some((field, _)) = ct.timeouts().into_iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::ZeroSeconds { field });
        }
        Ok(())
    }

    fn check_pod_cidr(&self) -> Result<(), ConfigError> {
        let cidr = self.node.pod_cidr;
        if cidr.prefix_len() > MAX_POD_PREFIX_LEN {
            return Err(ConfigError::PrefixTooLong { pod_cidr: cidr });
        }
        if cidr.trunc() != cidr {
            return Err(ConfigError::CidrNotNetwork {
                pod_cidr: cidr,
                network: cidr.trunc(),
            });
        }
        if let Some((range, why)) = SPECIAL_RANGES.iter().find(|(r, _)| overlaps(cidr, *r)) {
            return Err(ConfigError::CidrSpecial {
                pod_cidr: cidr,
                range: *range,
                why,
            });
        }
        Ok(())
    }

    /// Checks the pod CIDR against the networks that exist on the node: the
    /// caller passes `(interface name, address/prefix)` for the addresses it
    /// found (e.g. the uplink's real addresses). Entries of netpath's own
    /// devices (the pods' host interfaces and [`GATEWAY_IFNAME`]) are
    /// skipped, since they carry pod-CIDR addresses by design. The first
    /// overlap is an error: [`ConfigError::CidrOverlapsUplink`] for the
    /// uplink, [`ConfigError::CidrOverlapsInterface`] for any other.
    pub fn check_overlaps(&self, node_networks: &[(String, Ipv4Net)]) -> Result<(), ConfigError> {
        let pod_ifnames: Vec<String> = self.pods.iter().map(Self::host_ifname).collect();
        check_overlaps(
            self.node.pod_cidr,
            self.node.uplink.as_ref().map(|u| u.name.as_str()),
            &pod_ifnames,
            node_networks,
        )
    }
}

/// [`Config::check_overlaps`] on resolved values: `pod_cidr` against
/// `node_networks`, skipping the gateway device and `pod_ifnames` (the pods'
/// host sides); an overlap with `uplink`'s networks is
/// [`ConfigError::CidrOverlapsUplink`].
pub fn check_overlaps(
    pod_cidr: Ipv4Net,
    uplink: Option<&str>,
    pod_ifnames: &[String],
    node_networks: &[(String, Ipv4Net)],
) -> Result<(), ConfigError> {
    for (ifname, network) in node_networks {
        let ours = ifname == GATEWAY_IFNAME || pod_ifnames.contains(ifname);
        if ours || !overlaps(pod_cidr, network.trunc()) {
            continue;
        }
        return Err(if uplink == Some(ifname.as_str()) {
            ConfigError::CidrOverlapsUplink {
                pod_cidr,
                uplink: ifname.clone(),
                uplink_net: network.trunc(),
            }
        } else {
            ConfigError::CidrOverlapsInterface {
                pod_cidr,
                ifname: ifname.clone(),
                network: network.trunc(),
            }
        });
    }
    Ok(())
}

/// Whether two networks share an address.
pub(super) fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// What `addr` is if it is not a unicast address (so it cannot be a next
/// hop or a NAT address).
pub(super) fn special_address(addr: Ipv4Addr) -> Option<&'static str> {
    if addr == Ipv4Addr::BROADCAST {
        Some("the limited broadcast address")
    } else {
        SPECIAL_RANGES
            .iter()
            .find(|(r, _)| r.contains(&addr))
            .map(|(_, why)| match *why {
                "\"this network\"" => "in 0.0.0.0/8 (\"this network\")",
                "loopback" => "a loopback address",
                "multicast" => "a multicast address",
                _ => "in the reserved range 240.0.0.0/4",
            })
    }
}

/// `network address` or `broadcast address` if `addr` is one of `cidr`'s.
fn edge_address(cidr: Ipv4Net, addr: Ipv4Addr) -> Option<&'static str> {
    if addr == cidr.network() {
        Some("network address")
    } else if addr == cidr.broadcast() {
        Some("broadcast address")
    } else {
        None
    }
}

/// `[a-z0-9][a-z0-9-]*`, at most [`MAX_NAME_LEN`] bytes.
pub(super) fn check_name(what: &'static str, name: &str) -> Result<(), ConfigError> {
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name.len() > MAX_NAME_LEN {
        Some(format!("it is {} bytes", name.len()))
    } else if name.starts_with('-') {
        Some("it starts with '-'".to_owned())
    } else {
        name.chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ConfigError::InvalidName {
            what,
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// A pod's `netns_path` (absolute), in-pod `ifname` (a Linux interface
/// name) and `container_id` (the CNI spec's: letters, digits, `_`, `.`,
/// `-`).
fn check_attachment(pod: &PodConfig) -> Result<(), ConfigError> {
    let bad = |field, value: &str, why: String, hint| ConfigError::InvalidPodAttachment {
        pod: pod.name.clone(),
        field,
        value: value.to_owned(),
        why,
        hint,
    };
    if let Some(path) = &pod.netns_path
        && !path.is_absolute()
    {
        return Err(bad(
            "netns_path",
            &path.display().to_string(),
            "is not an absolute path".into(),
            "give the namespace file, e.g. /var/run/netns/NAME or /proc/PID/ns/net",
        ));
    }
    if let Some(ifname) = &pod.ifname {
        let why = if ifname.is_empty() {
            Some("is empty".to_owned())
        } else if ifname.len() > MAX_IFNAME_LEN {
            Some(format!(
                "is {} bytes; Linux allows at most {MAX_IFNAME_LEN}",
                ifname.len()
            ))
        } else if ifname == "." || ifname == ".." || ifname == "lo" {
            Some("is not a name a pod's interface can have".to_owned())
        } else {
            ifname
                .chars()
                .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
                .map(|c| format!("contains {c:?}, which Linux does not allow"))
        };
        if let Some(why) = why {
            return Err(bad("ifname", ifname, why, "use a name like eth0 or net1"));
        }
    }
    if let Some(id) = &pod.container_id {
        let why = if id.is_empty() {
            Some("is empty".to_owned())
        } else {
            id.chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
                .map(|c| format!("contains {c:?}"))
        };
        if let Some(why) = why {
            return Err(bad(
                "container_id",
                id,
                why,
                "a container id is letters, digits, '_', '.' and '-' (the CNI spec's rule)",
            ));
        }
    }
    Ok(())
}

/// A name (or, with `prefix`, the start of names) of a file under `/run/netns`.
fn check_netns_name(field: &'static str, value: &str, prefix: bool) -> Result<(), ConfigError> {
    let max = if prefix {
        MAX_NETNS_LEN - MAX_NAME_LEN
    } else {
        MAX_NETNS_LEN
    };
    let why = if value.is_empty() && !prefix {
        Some("it is empty".to_owned())
    } else if value.len() > max {
        Some(format!(
            "it is {} bytes; at most {max} are allowed",
            value.len()
        ))
    } else if !prefix && (value == "." || value == "..") {
        Some("'.' and '..' are not names".to_owned())
    } else {
        value
            .chars()
            .find(|c| *c == '/' || c.is_whitespace() || c.is_control())
            .map(|c| format!("it contains {c:?}"))
    };
    match why {
        Some(why) => Err(ConfigError::InvalidNetns {
            field,
            value: value.to_owned(),
            why,
            hint: if prefix {
                "use a prefix without '/', whitespace or control characters, or omit it"
            } else {
                "use the name of a namespace under /run/netns (as `ip netns list` shows it), \
                 or omit it to use the current namespace"
            },
        }),
        None => Ok(()),
    }
}

/// A name Linux accepts for an interface (1..=15 bytes, not `.` or `..`, no
/// `/`, `:` or whitespace) and that netpath does not keep for itself.
fn check_ifname(owner: &IfnameOwner, name: &str) -> Result<(), ConfigError> {
    if name.len() > MAX_IFNAME_LEN {
        return Err(ConfigError::IfnameTooLong {
            owner: owner.clone(),
            name: name.to_owned(),
            len: name.len(),
        });
    }
    let why = if name.is_empty() {
        Some("it is empty".to_owned())
    } else if name == "." || name == ".." {
        Some("'.' and '..' are not interface names".to_owned())
    } else if let Some(c) = name
        .chars()
        .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
    {
        Some(format!("Linux does not allow {c:?} in interface names"))
    } else if name == "lo" {
        Some("it is the loopback device".to_owned())
    } else if name == GATEWAY_IFNAME || name == GATEWAY_PEER_IFNAME {
        Some("netpath's gateway device pair uses this name".to_owned())
    } else {
        None
    };
    match why {
        Some(why) => Err(ConfigError::InvalidIfname {
            owner: owner.clone(),
            name: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}
