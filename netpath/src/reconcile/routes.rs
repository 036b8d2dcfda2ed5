//! What replaces `ip route` and `iptables -t nat` for pod traffic: the
//! desired routes and masquerade rules resolved against the node
//! (interface names → ifindexes, NAT addresses, connected networks a
//! declared route would shadow), and whether the pinned maps hold them.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use ipnet::Ipv4Net;
use netpath_common::{MasqRule, NodeSettings, RouteNextHop};

use super::{
    error::PlanError,
    node::{GATEWAY_IFNAME, NP0_FORWARDING, Node},
};
use crate::{
    datapath::NodeMaps,
    resolve::{DesiredNode, DesiredRoute},
    state::NodeState,
    sys::{netlink::Netlink, sysctl},
};

/// What the route and masquerade maps should hold and where `np_from_uplink`
/// should be attached, resolved against the node (interface names →
/// ifindexes, NAT addresses). Built and checked before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatapathPlan {
    /// `routes_v1`, sorted by prefix.
    pub routes: Vec<(Ipv4Net, RouteNextHop)>,
    /// `masq_v1`, sorted by out interface, then source prefix.
    pub masq: Vec<(Ipv4Net, MasqRule)>,
    /// Interface name → ifindex of every masquerade `out` and every
    /// declared route's `dev` (the uplink gateway's default route
    /// included), and the uplink when the node has port-forwards or
    /// services: `np_from_uplink` goes there (the replies to translated
    /// traffic, to routed traffic from the pods' own addresses, and the
    /// clients of frontends arrive there).
    pub uplinks: BTreeMap<String, u32>,
}

/// Resolves the configuration's routes and masquerade rules in the node
/// namespace; every error names the rule and what to change.
pub async fn plan_datapath(desired: &DesiredNode, nl: &Netlink) -> Result<DatapathPlan, PlanError> {
    let netns = desired.netns_label();
    let uplink = desired.uplink.as_ref();
    // Interface name → (ifindex, its networks), looked up once each.
    let mut ifaces: BTreeMap<String, (u32, Vec<Ipv4Net>)> = BTreeMap::new();
    let mut lookup = async |name: &str, owner: String, field: &'static str| {
        if let Some(found) = ifaces.get(name) {
            return Ok::<_, PlanError>(found.clone());
        }
        let link = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| PlanError::InterfaceMissing {
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

    super::cluster::check_peers(desired, nl).await?;
    let mut routes: BTreeMap<Ipv4Net, RouteNextHop> = BTreeMap::new();
    let mut uplinks = BTreeMap::new();
    for route in &desired.routes {
        let DesiredRoute { dst, via, ref dev } = *route;
        let (ifindex, nets) = lookup(dev, format!("route to {dst}"), "dev").await?;
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
            return Err(PlanError::ViaOffLink {
                dst,
                via,
                dev: dev.clone(),
                networks,
            });
        }
        let via = via.map_or([0; 4], |v| v.octets());
        routes.insert(dst, RouteNextHop { ifindex, via });
        // The replies of untranslated traffic routed out here come back
        // here, to the pods' own addresses.
        uplinks.insert(dev.clone(), ifindex);
    }

    let mut masq = Vec::new();
    for rule in &desired.masquerade {
        let source = rule.source;
        let out = rule.out.clone();
        let (ifindex, nets) = lookup(&out, format!("masquerade rule for {source}"), "out").await?;
        let nat_addr = match rule.address {
            Some(a) => a,
            None => nets
                .first()
                .map(Ipv4Net::addr)
                .ok_or_else(|| PlanError::NoNatAddress {
                    source_prefix: source,
                    out: out.clone(),
                })?,
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
        let (ifindex, _) = lookup(&u.name, "node.uplink".into(), "node.uplink.name").await?;
        // Clients of port-forwards and services on the LAN arrive here.
        // Several nodes: the pods of peers arrive here (direct routing).
        if desired.has_frontends() || desired.cluster.is_some() {
            uplinks.insert(u.name.clone(), ifindex);
        }
    }

    // Connected networks that a declared route would otherwise shadow.
    let declared: Vec<Ipv4Net> = routes.keys().copied().collect();
    let shadows = |net: &Ipv4Net| {
        declared
            .iter()
            .any(|d| d.prefix_len() < net.prefix_len() && d.contains(net))
    };
    for (ifindex, nets) in ifaces.values() {
        for net in nets.iter().map(Ipv4Net::trunc) {
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
        let mut local: BTreeSet<Ipv4Addr> = BTreeSet::from([desired.gateway]);
        for link in nl.links().await? {
            local.extend(nl.addresses(link.index).await?.into_iter().map(|(a, _)| a));
        }
        local.extend(
            ifaces
                .values()
                .flat_map(|(_, nets)| nets.iter().map(Ipv4Net::addr)),
        );
        // The pod CIDR too: an address no pod holds must not follow a
        // default route out of the node (the pods themselves are found in
        // the endpoint map before any route is looked up).
        let pod_cidr = desired.pod_cidr.trunc();
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

/// Whether the pinned datapath already holds `plan`, the desired settings
/// and table size, and the uplink links recorded in `state`.
pub async fn datapath_ok(
    node: &Node,
    desired: &DesiredNode,
    state: &NodeState,
    plan: &DatapathPlan,
) -> Result<bool, PlanError> {
    let Node {
        netns: node_ns,
        nl,
        pins,
    } = node;
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
            .all(|name| pins.ingress_link(name).exists() && pins.egress_link(name).exists());
    let forwarding = sysctl::read_sysctl(node_ns, NP0_FORWARDING).ok();
    // The socket hooks' namespace cookie is written with the settings
    // (`execute::configure_datapath`): it must be this namespace's.
    let cookie = crate::datapath::sock::netns_cookie(node_ns).ok();
    let settings_ok = Some(maps.settings()?)
        == cookie.map(|netns_cookie| NodeSettings {
            netns_cookie,
            ..desired.node_settings(np0.index)
        });
    Ok(routes == plan.routes
        && masq == plan.masq
        && settings_ok
        && super::node::fast_paths_ok(pins, &maps, desired, &state.pods)
        && table_size == Some(desired.conntrack_max)
        && super::cluster::cluster_ok(node, desired).await?
        && uplinks_ok
        && forwarding.as_deref() == Some("1"))
}
