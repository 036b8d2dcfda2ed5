//! The reconciler: desired state (a [`Config`]) → plan → kernel state.
//!
//! `apply` validates everything it can before it changes anything, diffs the
//! desired pods against what the instance built before ([`NodeState`]),
//! and then creates, recreates or deletes only the pods that differ.
//! Applying the same configuration twice changes nothing. If a step fails
//! midway, the steps already taken in this apply are undone in reverse
//! order.
//!
//! What a pod is, in `ip` terms (pod `red`, address 10.200.0.2, gateway
//! 10.200.0.1, in node namespace NODE):
//!
//! ```text
//! ip netns add demo-red
//! ip -n NODE link add np-red type veth peer name eth0 netns demo-red
//! ip -n demo-red addr add 10.200.0.2/32 dev eth0 ; ip -n demo-red link set eth0 up
//! ip -n demo-red route add 10.200.0.1 dev eth0 scope link
//! ip -n demo-red route add default via 10.200.0.1 dev eth0 onlink
//! ip -n demo-red neigh replace 10.200.0.1 lladdr <np-red MAC> dev eth0 nud permanent
//! ip -n NODE link set np-red up
//! ip -n NODE route replace 10.200.0.2/32 dev np-red scope link src 10.200.0.1
//! ip -n NODE neigh replace 10.200.0.2 lladdr <eth0 MAC> dev np-red nud permanent
//! (tcx ingress link of np_from_pod on np-red, endpoint map entry for 10.200.0.2)
//! ```
//!
//! The gateway address lives on `np0` in the node namespace, one end of a
//! veth pair whose other end is `np0-peer` (`ip link add np0 type veth peer
//! name np0-peer; ip addr add 10.200.0.1/32 dev np0`), so the node answers
//! for it; pods never ARP for it because their neighbour entry is static.
//! A veth rather than a dummy device because not every kernel has the dummy
//! driver (this project's CI kernel does not); Cilium's `cilium_host` /
//! `cilium_net` pair plays the same role.
//!
//! Routing and masquerade replace `ip_forward`, `ip route` and `iptables -t
//! nat` with map contents (see [`DatapathPlan`]):
//!
//! ```text
//! sysctl -w net.ipv4.conf.np0.forwarding=1      (only np0: bpf_fib_lookup runs as np0;
//!                                                no packet enters np0, ip_forward stays 0)
//! ip route add 0.0.0.0/0 via GW dev UPLINK       → routes_v1 (for pod traffic only)
//! ip route add DST via VIA dev DEV               → routes_v1
//! iptables -t nat -A POSTROUTING -s SRC -o OUT -j MASQUERADE
//!                                                → masq_v1 + np_from_uplink on OUT
//! port range, conntrack timeouts                 → settings_v1
//! ```
//!
//! When the route map holds a route that covers a connected network of an
//! interface netpath uses (a default route covers them all), that network
//! goes into the map too, as a directly connected route: otherwise the
//! declared route would win over the node's connected route, which the
//! kernel's FIB would have preferred. Likewise every address of the node
//! that a declared route covers goes in as a `/32` with ifindex 0 ("hand it
//! to the node's stack"), so that pods keep reaching the node itself. These
//! are computed at apply time: an address added to the node later needs
//! another apply (SIGHUP to the daemon).

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use log::{info, warn};
use netpath_common::{Endpoint, MasqRule, NodeSettings, RouteNextHop};

use crate::{
    config::{Config, ConfigError},
    datapath::{Datapath, DatapathError, LoadOptions, PinDir},
    ipam::{self, Ipam, IpamError},
    maps::{MapsError, NodeMaps},
    netlink::{self, Netlink, NetlinkError, Route, SysctlError},
    netns::{Netns, NetnsError},
    state::{self, NodeState, PodState, StateDir, StateError},
};

/// The device in the node namespace that holds the gateway address (one
/// end of the veth pair np0 / np0-peer).
pub use crate::config::GATEWAY_IFNAME;
pub use crate::config::GATEWAY_PEER_IFNAME;
/// The pod-side interface name.
pub const POD_IFNAME: &str = "eth0";
/// The sysctl that lets `bpf_fib_lookup` answer for `np0` (see the module
/// documentation): forwarding on np0 alone, never the node's `ip_forward`.
pub const NP0_FORWARDING: &str = "ipv4/conf/np0/forwarding";

/// Why an apply or destroy failed.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(
        "{owner}: interface {ifname} does not exist in the node namespace ({netns}); \
         create it first or fix {field}"
    )]
    InterfaceMissing {
        /// `route to X` or `masquerade rule for X`.
        owner: String,
        /// `dev` or `out`.
        field: &'static str,
        ifname: String,
        netns: String,
    },
    #[error(
        "route to {dst}: via {via} is not on a network of {dev} ({networks}); a next hop \
         must be directly reachable: use an address inside one of them, or the dev that \
         leads to {via}"
    )]
    ViaOffLink {
        dst: Ipv4Net,
        via: Ipv4Addr,
        dev: String,
        /// The interface's networks, or "it has no IPv4 address".
        networks: String,
    },
    #[error(
        "masquerade rule for {source_prefix}: interface {out} has no IPv4 address to \
         masquerade behind; give it one (`ip addr add ... dev {out}`) or set `address`"
    )]
    NoNatAddress { source_prefix: Ipv4Net, out: String },
    #[error(
        "netpath lacks {missing}; run it as root (e.g. `sudo netpath ...`) or grant \
         CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF"
    )]
    MissingPrivilege { missing: String },
    #[error(
        "kernel {found} is too old: netpath needs 6.6 or newer (tcx links, \
         bpf_redirect_peer); upgrade the kernel"
    )]
    KernelTooOld { found: String },
    #[error(
        "uplink {name} does not exist in the node namespace ({netns}); create it first \
         or fix node.uplink.name"
    )]
    UplinkMissing { name: String, netns: String },
    #[error(
        "interface {ifname} already exists in the node namespace and was not made by \
         netpath for pod '{pod}'; remove it or set the pod's host_ifname"
    )]
    IfnameTaken { ifname: String, pod: String },
    #[error(
        "network namespace {netns} already exists and was not made by netpath for pod \
         '{pod}'; remove it (`ip netns del {netns}`) or set node.pod_netns_prefix"
    )]
    NetnsTaken { netns: String, pod: String },
    #[error(
        "instance '{instance}' was built in node namespace {was} and the configuration \
         now says {now}; run `netpath destroy --instance {instance}` first"
    )]
    NodeMoved {
        instance: String,
        was: String,
        now: String,
    },
    #[error("injected failure at {at} (NETPATH_FAILPOINT is set)")]
    Failpoint { at: String },
    #[error("{source} (the changes made by this apply were rolled back)")]
    RolledBack { source: Box<ControllerError> },
}

/// What an apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
}

impl ApplyReport {
    /// Whether the apply changed anything.
    pub fn changed(&self) -> bool {
        !(self.created.is_empty()
            && self.recreated.is_empty()
            && self.deleted.is_empty()
            && !self.programs_loaded)
    }
}

/// Checks for CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF.
pub fn check_privileges() -> Result<(), ControllerError> {
    const NEEDED: [(u32, &str); 3] = [
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
        (39, "CAP_BPF"),
    ];
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ControllerError::MissingPrivilege {
            missing: missing.join(", "),
        })
    }
}

/// Checks that the kernel has tcx (6.6+).
pub fn check_kernel() -> Result<(), ControllerError> {
    let v = aya::util::KernelVersion::current().map_err(|e| ControllerError::KernelTooOld {
        found: format!("(unknown: {e})"),
    })?;
    if v < aya::util::KernelVersion::new(6, 6, 0) {
        return Err(ControllerError::KernelTooOld {
            found: format!("{v:?}"),
        });
    }
    Ok(())
}

/// The node namespace of a configuration.
fn node_netns(config: &Config) -> Result<Netns, ControllerError> {
    Ok(match &config.node.netns {
        Some(name) => Netns::open(name)?,
        None => Netns::current()?,
    })
}

fn netns_label(name: &Option<String>) -> String {
    name.clone()
        .unwrap_or_else(|| "the current namespace".into())
}

/// One step taken, and how to undo it.
enum Undo {
    DeleteNetns(String),
    DeleteLink {
        ifname: String,
    },
    RemoveEndpoint(Ipv4Addr),
    Unpin(String),
    /// Put back what the route, masquerade and settings maps held.
    RestoreMaps {
        routes: Vec<(Ipv4Net, RouteNextHop)>,
        masq: Vec<(Ipv4Net, MasqRule)>,
        settings: NodeSettings,
    },
}

/// What the route and masquerade maps should hold and where `np_from_uplink`
/// should be attached, resolved against the node (interface names →
/// ifindexes, NAT addresses). Built and checked before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathPlan {
    /// `routes_v1`, sorted by prefix.
    pub routes: Vec<(Ipv4Net, RouteNextHop)>,
    /// `masq_v1`, sorted by out interface, then source prefix.
    pub masq: Vec<(Ipv4Net, MasqRule)>,
    /// Interface name → ifindex of every masquerade `out`: `np_from_uplink`
    /// goes there (the replies to translated traffic arrive there).
    pub uplinks: BTreeMap<String, u32>,
}

/// Resolves the configuration's routes and masquerade rules in the node
/// namespace; every error names the rule and what to change.
pub async fn plan_datapath(config: &Config, nl: &Netlink) -> Result<DatapathPlan, ControllerError> {
    let netns = netns_label(&config.node.netns);
    let uplink = config.node.uplink.as_ref();
    // Interface name → (ifindex, its networks), looked up once each.
    let mut ifaces: BTreeMap<String, (u32, Vec<Ipv4Net>)> = BTreeMap::new();
    let mut lookup = async |name: &str, owner: String, field: &'static str| {
        if let Some(found) = ifaces.get(name) {
            return Ok::<_, ControllerError>(found.clone());
        }
        let link =
            nl.link_by_name(name)
                .await?
                .ok_or_else(|| ControllerError::InterfaceMissing {
                    owner,
                    field,
                    ifname: name.to_owned(),
                    netns: netns.clone(),
                })?;
        let mut nets: Vec<Ipv4Net> = nl
            .addresses(link.index)
            .await?
            .into_iter()
            .filter_map(|(a, p)| Ipv4Net::new(a, p).ok())
            .collect();
        // The uplink's configured address (assigned by this apply) comes
        // first: it is the one a masquerade rule uses by default.
        if let Some(u) = uplink
            && u.name == name
            && let Some(addr) = u.address
        {
            nets.retain(|n| *n != addr);
            nets.insert(0, addr);
        }
        ifaces.insert(name.to_owned(), (link.index, nets.clone()));
        Ok((link.index, nets))
    };

    let mut routes: BTreeMap<Ipv4Net, RouteNextHop> = BTreeMap::new();
    for (dst, via, dev) in config.route_table() {
        let (ifindex, nets) = lookup(&dev, format!("route to {dst}"), "dev").await?;
        if let Some(via) = via
            && !nets.iter().any(|n| n.trunc().contains(&via))
        {
            let networks = if nets.is_empty() {
                "it has no IPv4 address".to_owned()
            } else {
                nets.iter()
                    .map(|n| n.trunc().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(ControllerError::ViaOffLink {
                dst,
                via,
                dev,
                networks,
            });
        }
        let via = via.map_or([0; 4], |v| v.octets());
        routes.insert(dst, RouteNextHop { ifindex, via });
    }

    let mut masq = Vec::new();
    let mut uplinks = BTreeMap::new();
    for rule in &config.masquerade {
        let source = config.masquerade_source(rule);
        let out = config
            .masquerade_out(rule)
            .expect("validated: a rule without out has the uplink")
            .to_owned();
        let (ifindex, nets) = lookup(&out, format!("masquerade rule for {source}"), "out").await?;
        let nat_addr = match rule.address {
            Some(a) => a,
            None => {
                nets.first()
                    .map(|n| n.addr())
                    .ok_or_else(|| ControllerError::NoNatAddress {
                        source_prefix: source,
                        out: out.clone(),
                    })?
            }
        };
        masq.push((
            source,
            MasqRule {
                ifindex,
                nat_addr: nat_addr.octets(),
            },
        ));
        uplinks.insert(out, ifindex);
    }
    if let Some(u) = uplink {
        lookup(&u.name, "node.uplink".into(), "node.uplink.name").await?;
    }

    // Connected networks that a declared route would otherwise shadow.
    let declared: Vec<Ipv4Net> = routes.keys().copied().collect();
    let shadows = |net: &Ipv4Net| {
        declared
            .iter()
            .any(|d| d.prefix_len() < net.prefix_len() && d.contains(net))
    };
    for (ifindex, nets) in ifaces.values() {
        for net in nets.iter().map(|n| n.trunc()) {
            if shadows(&net) && !routes.contains_key(&net) {
                routes.insert(
                    net,
                    RouteNextHop {
                        ifindex: *ifindex,
                        via: [0; 4],
                    },
                );
            }
        }
    }
    // The node's own addresses (the pods' gateway, every interface's)
    // that a declared route covers: ifindex 0, "hand it to the node's
    // stack", so that pods keep reaching the node.
    if !declared.is_empty() {
        let mut local: BTreeSet<Ipv4Addr> = BTreeSet::from([config.gateway()]);
        for link in nl.links().await? {
            local.extend(nl.addresses(link.index).await?.into_iter().map(|(a, _)| a));
        }
        local.extend(
            ifaces
                .values()
                .flat_map(|(_, nets)| nets.iter().map(|n| n.addr())),
        );
        // The pod CIDR too: an address no pod holds must not follow a
        // default route out of the node (the pods themselves are found in
        // the endpoint map before any route is looked up).
        let pod_cidr = config.node.pod_cidr.trunc();
        if shadows(&pod_cidr) && !routes.contains_key(&pod_cidr) {
            routes.insert(
                pod_cidr,
                RouteNextHop {
                    ifindex: 0,
                    via: [0; 4],
                },
            );
        }
        for addr in local {
            let host = Ipv4Net::new(addr, 32).expect("/32 is valid");
            if !addr.is_loopback() && shadows(&host) && !routes.contains_key(&host) {
                routes.insert(
                    host,
                    RouteNextHop {
                        ifindex: 0,
                        via: [0; 4],
                    },
                );
            }
        }
    }
    masq.sort_by_key(|(n, r)| (r.ifindex, *n));
    Ok(DatapathPlan {
        routes: routes.into_iter().collect(),
        masq,
        uplinks,
    })
}

/// Whether the pinned datapath already holds `plan`, `config`'s settings
/// and table size, and the uplink links recorded in `state`.
async fn datapath_ok(
    config: &Config,
    node_ns: &Netns,
    nl: &Netlink,
    pins: &PinDir,
    state: &NodeState,
    plan: &DatapathPlan,
) -> Result<bool, ControllerError> {
    let Some(np0) = nl.link_by_name(GATEWAY_IFNAME).await? else {
        return Ok(false);
    };
    let Ok(maps) = NodeMaps::open_pinned(pins) else {
        return Ok(false);
    };
    let mut routes = maps.routes()?;
    routes.sort_by_key(|(n, _)| *n);
    let mut masq = maps.masq()?;
    masq.sort_by_key(|(n, r)| (r.ifindex, *n));
    let table_size = aya::maps::MapData::from_pin(pins.map(netpath_common::maps::CONNTRACK))
        .ok()
        .and_then(|m| m.info().ok())
        .map(|i| i.max_entries());
    let uplinks_ok = state.uplinks == plan.uplinks
        && plan
            .uplinks
            .keys()
            .all(|name| pins.ingress_link(name).exists());
    let forwarding = netlink::read_sysctl(node_ns, NP0_FORWARDING).ok();
    Ok(routes == plan.routes
        && masq == plan.masq
        && maps.settings()? == config.node_settings(np0.index)
        && table_size == Some(config.conntrack.max_entries)
        && uplinks_ok
        && forwarding.as_deref() == Some("1"))
}

/// Applies `config`: makes the node and its pods what the configuration says.
pub async fn apply(config: &Config) -> Result<ApplyReport, ControllerError> {
    config.validate()?;
    check_privileges()?;
    check_kernel()?;
    let instance = config.node.name.as_str();
    let node_ns = node_netns(config)?;
    let nl = Netlink::connect(&node_ns).await?;

    // The uplink must exist; the pod CIDR must not overlap its networks.
    if let Some(uplink) = &config.node.uplink {
        let link =
            nl.link_by_name(&uplink.name)
                .await?
                .ok_or_else(|| ControllerError::UplinkMissing {
                    name: uplink.name.clone(),
                    netns: netns_label(&config.node.netns),
                })?;
        let mut nets: Vec<(String, Ipv4Net)> = nl
            .addresses(link.index)
            .await?
            .into_iter()
            .filter_map(|(a, p)| Ipv4Net::new(a, p).ok().map(|n| (uplink.name.clone(), n)))
            .collect();
        if let Some(addr) = uplink.address {
            nets.push((uplink.name.clone(), addr));
        }
        config.check_overlaps(&nets)?;
    }
    // Routes and masquerade rules must resolve on the node.
    let plan = plan_datapath(config, &nl).await?;

    let state_dir = StateDir::for_instance(instance);
    let _lock = state_dir.lock()?;
    let mut state = state_dir.load()?;
    if !state.pods.is_empty() && state.netns != config.node.netns {
        return Err(ControllerError::NodeMoved {
            instance: instance.into(),
            was: netns_label(&state.netns),
            now: netns_label(&config.node.netns),
        });
    }
    let gateway = config.gateway();
    let current = Ipam::load(&state_dir.leases_file(), config.node.pod_cidr, gateway)?;
    let wanted: Vec<(String, Option<Ipv4Addr>)> = config
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.address))
        .collect();
    let planned = ipam::plan(&current, &wanted)?;

    // Diff desired pods against what was built.
    let pins = PinDir::for_instance(instance);
    // The endpoints the datapath holds (none if it was never loaded), read
    // once for every pod's health check.
    let endpoints = match NodeMaps::open_pinned(&pins) {
        Ok(maps) => maps.endpoints()?,
        Err(_) => BTreeMap::new(),
    };
    let mut report = ApplyReport::default();
    let mut to_create: Vec<(String, PodState)> = Vec::new();
    let mut to_delete: Vec<(String, PodState)> = Vec::new();
    for pod in &config.pods {
        let address = planned.lease(&pod.name).expect("plan leases every pod");
        report.addresses.insert(pod.name.clone(), address);
        let want = PodState {
            netns: config.pod_netns(pod),
            host_ifname: Config::host_ifname(pod),
            address,
        };
        match state.pods.get(&pod.name) {
            Some(have) if *have == want && pod_healthy(&nl, &pins, &endpoints, have).await? => {
                report.unchanged.push(pod.name.clone());
            }
            Some(have) => {
                report.recreated.push(pod.name.clone());
                to_delete.push((pod.name.clone(), have.clone()));
                to_create.push((pod.name.clone(), want));
            }
            None => {
                report.created.push(pod.name.clone());
                to_create.push((pod.name.clone(), want));
            }
        }
    }
    for (name, have) in &state.pods {
        if !config.pods.iter().any(|p| &p.name == name) {
            report.deleted.push(name.clone());
            to_delete.push((name.clone(), have.clone()));
        }
    }

    // Names a new pod would take must be free (or be ours, being recreated).
    for (name, want) in &to_create {
        let ours = to_delete.iter().any(|(_, s)| s.netns == want.netns);
        if !ours && Netns::exists(&want.netns) {
            return Err(ControllerError::NetnsTaken {
                netns: want.netns.clone(),
                pod: name.clone(),
            });
        }
        let ours = to_delete
            .iter()
            .any(|(_, s)| s.host_ifname == want.host_ifname);
        if !ours && nl.link_by_name(&want.host_ifname).await?.is_some() {
            return Err(ControllerError::IfnameTaken {
                ifname: want.host_ifname.clone(),
                pod: name.clone(),
            });
        }
    }

    let hash = state::object_hash(crate::ebpf::OBJECT);
    let node_ok = state.gateway == Some(gateway) && gateway_ok(&nl, gateway).await?;
    let programs_ok = state.object_hash.as_deref() == Some(hash.as_str())
        && pins.prog(netpath_common::progs::FROM_POD).exists()
        && pins.prog(netpath_common::progs::FROM_UPLINK).exists();
    if to_create.is_empty()
        && to_delete.is_empty()
        && node_ok
        && programs_ok
        && datapath_ok(config, &node_ns, &nl, &pins, &state, &plan).await?
    {
        info!("instance {instance}: nothing to change");
        return Ok(report);
    }

    // From here on the system changes; every step is undone on failure.
    let mut undo = Vec::new();
    let result = execute(
        config,
        &node_ns,
        &nl,
        &pins,
        &mut state,
        &plan,
        &to_create,
        &to_delete,
        &report.unchanged,
        node_ok,
        &mut undo,
    )
    .await;
    match result {
        Ok(()) => {
            report.programs_loaded = true;
            report.uplinks_attached = plan
                .uplinks
                .iter()
                .filter(|(name, index)| state.uplinks.get(*name) != Some(index))
                .map(|(name, _)| name.clone())
                .collect();
            report.uplinks_detached = state
                .uplinks
                .keys()
                .filter(|name| !plan.uplinks.contains_key(*name))
                .cloned()
                .collect();
            state.uplinks = plan.uplinks.clone();
            state.netns = config.node.netns.clone();
            state.gateway = Some(gateway);
            state.object_hash = Some(hash);
            planned.save(&state_dir.leases_file())?;
            state_dir.save(&state)?;
            Ok(report)
        }
        Err(e) => {
            warn!("apply of instance {instance} failed: {e}; rolling back");
            rollback(&node_ns, &pins, undo).await;
            // What this apply created is undone; what it deleted stays
            // deleted. Record exactly that, and free the gone pods' leases.
            for (name, _) in &to_create {
                state.pods.remove(name);
            }
            let mut leases = current;
            let gone: Vec<String> = leases
                .leases()
                .keys()
                .filter(|p| !state.pods.contains_key(*p))
                .cloned()
                .collect();
            for pod in gone {
                leases.release(&pod);
            }
            leases.save(&state_dir.leases_file())?;
            state_dir.save(&state)?;
            Err(ControllerError::RolledBack {
                source: Box::new(e),
            })
        }
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename these"
)]
async fn execute(
    config: &Config,
    node_ns: &Netns,
    nl: &Netlink,
    pins: &PinDir,
    state: &mut NodeState,
    plan: &DatapathPlan,
    to_create: &[(String, PodState)],
    to_delete: &[(String, PodState)],
    unchanged: &[String],
    node_ok: bool,
    undo: &mut Vec<Undo>,
) -> Result<(), ControllerError> {
    let gateway = config.gateway();
    let mut dp = Datapath::load(LoadOptions {
        pins: Some(pins.clone()),
        conntrack_max: config.conntrack.max_entries,
        ..LoadOptions::default()
    })?;

    if !node_ok {
        ensure_gateway(node_ns, nl, gateway, undo).await?;
    }
    if let Some(uplink) = &config.node.uplink
        && let Some(addr) = uplink.address
    {
        let link = nl
            .link_by_name(&uplink.name)
            .await?
            .expect("checked before any change");
        // `ip addr add ADDR dev UPLINK` (idempotent) and `ip link set UPLINK up`
        nl.add_address(link.index, addr.addr(), addr.prefix_len())
            .await?;
        nl.set_up(link.index).await?;
    }
    configure_datapath(config, node_ns, nl, pins, &mut dp, state, plan, undo).await?;

    for (name, have) in to_delete {
        info!("pod {name}: deleting");
        delete_pod(nl, &mut dp, have).await?;
        state.pods.remove(name);
    }
    for (name, want) in to_create {
        info!("pod {name}: creating {} in {}", want.address, want.netns);
        create_pod(node_ns, nl, &mut dp, gateway, want, undo).await?;
        state.pods.insert(name.clone(), want.clone());
    }
    // Pods that stay get the freshly loaded program, atomically.
    for name in unchanged {
        let pod = &state.pods[name];
        dp.attach_from_pod(node_ns, &pod.host_ifname)?;
    }
    // Last, as a rollback could not re-attach it: interfaces no masquerade
    // rule uses any more lose np_from_uplink.
    for name in state.uplinks.keys() {
        if !plan.uplinks.contains_key(name) {
            info!("np_from_uplink: detaching from {name}");
            dp.detach_ingress(name)?;
            dp.detach_egress(name)?;
        }
    }
    Ok(())
}

/// Settings, routes, masquerade rules and the uplink links: what replaces
/// `ip_forward`, `ip route` and `iptables -t nat`.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename these"
)]
async fn configure_datapath(
    config: &Config,
    node_ns: &Netns,
    nl: &Netlink,
    pins: &PinDir,
    dp: &mut Datapath,
    state: &NodeState,
    plan: &DatapathPlan,
    undo: &mut Vec<Undo>,
) -> Result<(), ControllerError> {
    let np0 = nl
        .link_by_name(GATEWAY_IFNAME)
        .await?
        .ok_or_else(|| NetlinkError::NotFound {
            what: format!("{GATEWAY_IFNAME} after setting up the gateway"),
        })?;
    // sysctl -w net.ipv4.conf.np0.forwarding=1 (np0 only; see the module docs)
    netlink::write_sysctl(node_ns, NP0_FORWARDING, "1")?;

    let maps = dp.maps();
    undo.push(Undo::RestoreMaps {
        routes: maps.routes()?,
        masq: maps.masq()?,
        settings: maps.settings()?,
    });
    maps.set_settings(config.node_settings(np0.index))?;
    maps.sync_routes(&plan.routes)?;
    maps.sync_masq(&plan.masq)?;

    for (name, index) in &plan.uplinks {
        if state.uplinks.get(name) != Some(index) {
            // New, or the interface was recreated: a pinned link of the old
            // one would only get the new program, so start afresh.
            crate::datapath::remove_pin(&pins.ingress_link(name))?;
            crate::datapath::remove_pin(&pins.egress_link(name))?;
            undo.push(Undo::Unpin(name.clone()));
            info!("np_from_uplink: attaching to {name}");
        }
        dp.attach_from_uplink(node_ns, name)?;
        dp.attach_to_uplink(node_ns, name)?;
    }
    failpoint(&format!("configure-datapath:{}", config.node.name))
}

/// Whether the gateway device `np0` exists, is up and holds the gateway.
async fn gateway_ok(nl: &Netlink, gateway: Ipv4Addr) -> Result<bool, ControllerError> {
    let Some(link) = nl.link_by_name(GATEWAY_IFNAME).await? else {
        return Ok(false);
    };
    Ok(link.up && nl.addresses(link.index).await?.contains(&(gateway, 32)))
}

/// `ip link add np0 type veth peer name np0-peer; ip addr add GW/32 dev np0;
/// ip link set np0 up; ip link set np0-peer up`
async fn ensure_gateway(
    node_ns: &Netns,
    nl: &Netlink,
    gateway: Ipv4Addr,
    undo: &mut Vec<Undo>,
) -> Result<(), ControllerError> {
    if nl.link_by_name(GATEWAY_IFNAME).await?.is_none() {
        nl.add_veth(GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, node_ns)
            .await?;
        undo.push(Undo::DeleteLink {
            ifname: GATEWAY_IFNAME.into(),
        });
    }
    for name in [GATEWAY_PEER_IFNAME, GATEWAY_IFNAME] {
        let link = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::NotFound {
                what: format!("{name} right after creating it"),
            })?;
        if name == GATEWAY_IFNAME {
            nl.add_address(link.index, gateway, 32).await?;
        }
        nl.set_up(link.index).await?;
    }
    Ok(())
}

/// Whether every piece of a built pod is still there.
async fn pod_healthy(
    nl: &Netlink,
    pins: &PinDir,
    endpoints: &BTreeMap<Ipv4Addr, Endpoint>,
    pod: &PodState,
) -> Result<bool, ControllerError> {
    if !Netns::exists(&pod.netns) || !pins.ingress_link(&pod.host_ifname).exists() {
        return Ok(false);
    }
    let Some(link) = nl.link_by_name(&pod.host_ifname).await? else {
        return Ok(false);
    };
    Ok(endpoints
        .get(&pod.address)
        .is_some_and(|ep| ep.ifindex == link.index))
}

async fn create_pod(
    node_ns: &Netns,
    nl: &Netlink,
    dp: &mut Datapath,
    gateway: Ipv4Addr,
    pod: &PodState,
    undo: &mut Vec<Undo>,
) -> Result<(), ControllerError> {
    // ip netns add POD
    let pod_ns = Netns::create(&pod.netns).await?;
    undo.push(Undo::DeleteNetns(pod.netns.clone()));
    // ip link add HOST type veth peer name eth0 netns POD
    nl.add_veth(&pod.host_ifname, POD_IFNAME, &pod_ns).await?;
    undo.push(Undo::DeleteLink {
        ifname: pod.host_ifname.clone(),
    });
    let host = nl
        .link_by_name(&pod.host_ifname)
        .await?
        .ok_or_else(|| NetlinkError::NotFound {
            what: format!("{} right after creating it", pod.host_ifname),
        })?;

    let pod_nl = Netlink::connect(&pod_ns).await?;
    let eth0 = pod_nl
        .link_by_name(POD_IFNAME)
        .await?
        .ok_or_else(|| NetlinkError::NotFound {
            what: format!("{POD_IFNAME} in {}", pod.netns),
        })?;
    pod_nl.add_address(eth0.index, pod.address, 32).await?;
    pod_nl.set_up(eth0.index).await?;
    let gw_net = Ipv4Net::new(gateway, 32).expect("/32 is valid");
    pod_nl
        .replace_route(&Route {
            dst: gw_net,
            gateway: None,
            oif: Some(eth0.index),
            src: None,
            scope_link: true,
            onlink: false,
        })
        .await?;
    pod_nl
        .replace_route(&Route {
            dst: Ipv4Net::default(),
            gateway: Some(gateway),
            oif: Some(eth0.index),
            src: None,
            scope_link: false,
            onlink: true,
        })
        .await?;
    pod_nl
        .replace_neighbour(eth0.index, gateway, host.mac)
        .await?;

    nl.set_up(host.index).await?;
    nl.replace_route(&Route {
        dst: Ipv4Net::new(pod.address, 32).expect("/32 is valid"),
        gateway: None,
        oif: Some(host.index),
        src: Some(gateway),
        scope_link: true,
        onlink: false,
    })
    .await?;
    nl.replace_neighbour(host.index, pod.address, eth0.mac)
        .await?;

    dp.attach_from_pod(node_ns, &pod.host_ifname)?;
    undo.push(Undo::Unpin(pod.host_ifname.clone()));
    dp.maps().upsert_endpoint(
        pod.address,
        Endpoint {
            ifindex: host.index,
            flags: 0,
            pod_mac: eth0.mac,
            gw_mac: host.mac,
        },
    )?;
    undo.push(Undo::RemoveEndpoint(pod.address));
    failpoint(&format!("create-pod:{}", pod.netns))
}

/// Fails when `NETPATH_FAILPOINT` names `at`: lets the tests break an apply
/// midway (after real changes) and check that it rolls back.
fn failpoint(at: &str) -> Result<(), ControllerError> {
    match std::env::var("NETPATH_FAILPOINT") {
        Ok(v) if v.split(',').any(|f| f == at) => Err(ControllerError::Failpoint { at: at.into() }),
        _ => Ok(()),
    }
}

async fn delete_pod(
    nl: &Netlink,
    dp: &mut Datapath,
    pod: &PodState,
) -> Result<(), ControllerError> {
    dp.maps().remove_endpoint(pod.address)?;
    dp.detach_ingress(&pod.host_ifname)?;
    if let Some(link) = nl.link_by_name(&pod.host_ifname).await? {
        // ip link del HOST (takes eth0 with it)
        nl.delete_link(link.index).await?;
    }
    // ip netns del POD
    Netns::delete(&pod.netns).await?;
    Ok(())
}

async fn rollback(node_ns: &Netns, pins: &PinDir, undo: Vec<Undo>) {
    let nl = match Netlink::connect(node_ns).await {
        Ok(nl) => Some(nl),
        Err(e) => {
            warn!("rollback: no netlink connection to the node namespace: {e}");
            None
        }
    };
    let mut maps = NodeMaps::open_pinned(pins).ok();
    for step in undo.into_iter().rev() {
        let res: Result<(), ControllerError> = async {
            match step {
                Undo::DeleteNetns(name) => Netns::delete(&name).await?,
                Undo::DeleteLink { ifname } => {
                    if let Some(nl) = &nl
                        && let Some(link) = nl.link_by_name(&ifname).await?
                    {
                        nl.delete_link(link.index).await?;
                    }
                }
                Undo::RemoveEndpoint(addr) => {
                    if let Some(maps) = &mut maps {
                        maps.remove_endpoint(addr)?;
                    }
                }
                Undo::Unpin(ifname) => {
                    crate::datapath::remove_pin(&pins.ingress_link(&ifname))?;
                    crate::datapath::remove_pin(&pins.egress_link(&ifname))?;
                }
                Undo::RestoreMaps {
                    routes,
                    masq,
                    settings,
                } => {
                    if let Some(maps) = &mut maps {
                        maps.sync_routes(&routes)?;
                        maps.sync_masq(&masq)?;
                        maps.set_settings(settings)?;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = res {
            warn!("rollback step failed: {e}");
        }
    }
}

/// Removes everything an instance built: its pods, the gateway device, the
/// pins and the state. Idempotent.
pub async fn destroy(instance: &str) -> Result<Vec<String>, ControllerError> {
    check_privileges()?;
    let state_dir = StateDir::for_instance(instance);
    if !state_dir.root().exists() && !PinDir::for_instance(instance).exists() {
        return Ok(Vec::new());
    }
    let _lock = state_dir.lock()?;
    let state = state_dir.load()?;
    let pins = PinDir::for_instance(instance);
    let node_ns = match &state.netns {
        Some(name) if Netns::exists(name) => Some(Netns::open(name)?),
        Some(_) => None,
        None => Some(Netns::current()?),
    };
    let mut removed = Vec::new();
    let mut maps = NodeMaps::open_pinned(&pins).ok();
    let nl = match &node_ns {
        Some(ns) => Some(Netlink::connect(ns).await?),
        None => None,
    };
    for (name, pod) in &state.pods {
        if let Some(maps) = &mut maps {
            maps.remove_endpoint(pod.address)?;
        }
        crate::datapath::remove_pin(&pins.ingress_link(&pod.host_ifname))?;
        if let Some(nl) = &nl
            && let Some(link) = nl.link_by_name(&pod.host_ifname).await?
        {
            nl.delete_link(link.index).await?;
        }
        Netns::delete(&pod.netns).await?;
        removed.push(name.clone());
    }
    if let Some(nl) = &nl
        && state.gateway.is_some()
        && let Some(link) = nl.link_by_name(GATEWAY_IFNAME).await?
    {
        nl.delete_link(link.index).await?;
    }
    drop(maps);
    pins.remove()?;
    state_dir.remove()?;
    Ok(removed)
}

/// The pods an instance has built (from its state file).
pub fn pods(instance: &str) -> Result<BTreeMap<String, PodState>, ControllerError> {
    Ok(StateDir::for_instance(instance).load()?.pods)
}

/// Interface names by ifindex in an instance's node namespace (to print the
/// ifindexes the maps hold). Empty when the namespace is gone.
pub async fn interface_names(instance: &str) -> Result<BTreeMap<u32, String>, ControllerError> {
    let state = StateDir::for_instance(instance).load()?;
    let ns = match &state.netns {
        Some(name) if Netns::exists(name) => Netns::open(name)?,
        Some(_) => return Ok(BTreeMap::new()),
        None => Netns::current()?,
    };
    let nl = Netlink::connect(&ns).await?;
    Ok(nl
        .links()
        .await?
        .into_iter()
        .map(|l| (l.index, l.name))
        .collect())
}

/// The interfaces `np_from_uplink` is attached to, from the state file.
pub fn uplinks(instance: &str) -> Result<BTreeSet<String>, ControllerError> {
    Ok(StateDir::for_instance(instance)
        .load()?
        .uplinks
        .into_keys()
        .collect())
}
