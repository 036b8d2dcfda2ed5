//! The ways the bench wires the same two pods and LAN host, behind one
//! [`Setup`] trait: [`limit`] (a bare veth pair, the ceiling), [`classic`]
//! (bridge + `ip_forward` + iptables MASQUERADE and DNAT, as the CNI
//! `bridge` and `portmap` plugins do it) and [`netpath`] (the controller's
//! own pods), the latter twice: in its default configuration (TC programs
//! only, XDP off), and with its XDP program on the uplink, so that what XDP
//! buys is measured, not assumed.
//!
//! A new scenario adds a [`Scenario`] variant and the endpoints each setup
//! offers for it; a setup that cannot serve it says why in
//! [`Setup::endpoints`] and its figures are reported as `null` with that
//! reason.

pub mod classic;
pub mod limit;
pub mod netpath;

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
};

use ::netpath::sys::{
    netlink::{Netlink, Route},
    netns::Netns,
};
use anyhow::{Context as _, Result};
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// Which datapath.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetupKind {
    /// A direct veth pair between two namespaces: what any datapath between
    /// two namespaces on this machine can at best do.
    Limit,
    /// Linux bridge + ip_forward + iptables MASQUERADE.
    Classic,
    /// netpath's eBPF datapath as configured by default: TC programs only
    /// (`xdp = "off"`).
    Netpath,
    /// netpath with its XDP program on the uplink (`xdp = "native"`: the
    /// prefilter and the fast path of established inbound flows).
    NetpathXdp,
}

impl SetupKind {
    pub const ALL: [SetupKind; 4] = [
        SetupKind::Limit,
        SetupKind::Classic,
        SetupKind::Netpath,
        SetupKind::NetpathXdp,
    ];

    pub fn id(self) -> &'static str {
        match self {
            SetupKind::Limit => "limit",
            SetupKind::Classic => "classic",
            SetupKind::Netpath => "netpath",
            SetupKind::NetpathXdp => "netpath_xdp",
        }
    }

    /// The column title in the report.
    pub fn title(self) -> &'static str {
        match self {
            SetupKind::Limit => "limit",
            SetupKind::Classic => "classic",
            SetupKind::Netpath => "netpath",
            SetupKind::NetpathXdp => "netpath XDP",
        }
    }
}

/// The node port of the port-forward scenario (outside netpath's SNAT port
/// range, 32768-60999, and the loads' own 20000-29000): the LAN host
/// connects to the node's uplink address on it and the pod listens on the
/// same port.
pub const FORWARD_PORT: u16 = 18_080;

/// A second address of the LAN host whose traffic the node denies (the
/// prefilter figure): netpath's XDP prefilter, the classic node's
/// `iptables -t raw -A PREROUTING -s ADDR -j DROP`.
pub const DENIED_SOURCE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 200);

/// What talks to what.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// Pod `red` → pod `blue` on the same node.
    PodToPod,
    /// Pod `red` → the LAN host, through the node's SNAT.
    PodToLan,
    /// The LAN host → pod `blue`, through a port-forward on the node's
    /// uplink address ([`FORWARD_PORT`]; DNAT).
    LanToPod,
}

impl Scenario {
    pub const ALL: [Scenario; 3] = [Scenario::PodToPod, Scenario::PodToLan, Scenario::LanToPod];

    pub fn id(self) -> &'static str {
        match self {
            Scenario::PodToPod => "pod_to_pod",
            Scenario::PodToLan => "pod_to_lan",
            Scenario::LanToPod => "lan_to_pod",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Scenario::PodToPod => "pod → pod (same node)",
            Scenario::PodToLan => "pod → LAN host (SNAT)",
            Scenario::LanToPod => "LAN host → pod (port-forward, DNAT)",
        }
    }

    /// A short title for table headers.
    pub fn short(self) -> &'static str {
        match self {
            Scenario::PodToPod => "pod → pod",
            Scenario::PodToLan => "pod → LAN",
            Scenario::LanToPod => "LAN → pod",
        }
    }
}

/// Where a load's client and server run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoints {
    pub client_ns: String,
    pub server_ns: String,
    /// The address the server listens on (and the client connects to,
    /// unless `forward` says otherwise).
    pub server_addr: Ipv4Addr,
    /// A port-forward in front of the server: the client sends to this
    /// node address and port, and the server listens on the same port.
    pub forward: Option<SocketAddrV4>,
}

/// BPF objects a setup pinned, for the memory and CPU figures.
#[derive(Clone, Debug, Default)]
pub struct BpfPins {
    pub maps: Vec<PathBuf>,
    pub progs: Vec<PathBuf>,
}

/// One way of wiring the topology.
pub trait Setup: Send {
    fn kind(&self) -> SetupKind;

    /// Creates everything (namespaces, links, rules, programs). On error the
    /// caller still calls [`Setup::teardown`].
    fn build(&mut self) -> Result<()>;

    /// Removes everything this setup created. Idempotent, never fails.
    fn teardown(&mut self);

    /// The client and server of `scenario`, or why this setup has none.
    fn endpoints(&self, scenario: Scenario) -> Result<Endpoints, String>;

    /// Whether the setup is measured under `condition` (`Err`: why not; no
    /// samples then).
    fn applies(&self, _condition: crate::condition::Condition) -> Result<(), String> {
        Ok(())
    }

    /// Installs `n` extra routes where this datapath looks routes up;
    /// returns where they went (checked), for the report.
    fn add_routes(&mut self, _n: usize) -> Result<String, String> {
        Err("not applicable: a direct veth pair does no routing".into())
    }

    /// Removes the routes of [`Setup::add_routes`].
    fn remove_routes(&mut self) -> Result<()> {
        Ok(())
    }

    /// Prepares for idle conntrack entries (e.g. a long UDP timeout).
    fn prepare_conntrack(&mut self) -> Result<(), String> {
        Err("not applicable: a direct veth pair tracks no connections".into())
    }

    /// How many connections the datapath tracks now.
    fn conntrack_count(&self) -> Result<u64, String> {
        Err("not applicable: a direct veth pair tracks no connections".into())
    }

    /// The setup's BPF maps and programs (pins).
    fn bpf_pins(&self) -> BpfPins {
        BpfPins::default()
    }

    /// Packets from [`DENIED_SOURCE`] the node dropped so far (the
    /// prefilter figure), or why this setup has no such filter.
    fn denied_drops(&self) -> Result<u64, String> {
        Err("not applicable: nothing filters here".into())
    }

    /// How it is wired, in `ip`/`iptables` terms, for the report.
    fn describe(&self) -> Vec<String>;
}

/// Where the LAN host sends to reach the port-forward: the node's uplink
/// address, [`FORWARD_PORT`].
pub fn forward_target(lab: &::netpath::demo::lab::Lab) -> SocketAddrV4 {
    SocketAddrV4::new(lab.node_addr.addr(), FORWARD_PORT)
}

/// `ip -n LAN addr add 192.168.50.200/24 dev eth0`: the LAN host's second
/// address, the source the node denies ([`DENIED_SOURCE`]).
pub fn add_denied_source(lab: &::netpath::demo::lab::Lab) -> Result<()> {
    crate::ns::check_ours(&lab.lan_netns)?;
    let lan_ns = lab.lan_netns.clone();
    let prefix = lab.lan_addr.prefix_len();
    crate::ns::block_on(async move {
        let ns = Netns::open(&lan_ns)?;
        let nl = Netlink::connect(&ns).await?;
        let link = nl
            .link_by_name(::netpath::demo::lab::LAN_IFNAME)
            .await?
            .with_context(|| format!("eth0 in {lan_ns}"))?;
        nl.add_address(link.index, DENIED_SOURCE, prefix).await?;
        anyhow::Ok(())
    })
}

/// `ip -n LAN route replace CIDR via NODE_ADDR dev eth0`: the LAN host
/// reaches the service range through the node, as a cluster's routers
/// route it.
pub fn route_via_node(lab: &::netpath::demo::lab::Lab, cidr: Ipv4Net) -> Result<()> {
    crate::ns::check_ours(&lab.lan_netns)?;
    let lan_ns = lab.lan_netns.clone();
    let via = lab.node_addr.addr();
    crate::ns::block_on(async move {
        let ns = Netns::open(&lan_ns)?;
        let nl = Netlink::connect(&ns).await?;
        let link = nl
            .link_by_name(::netpath::demo::lab::LAN_IFNAME)
            .await?
            .with_context(|| format!("eth0 in {lan_ns}"))?;
        nl.replace_route(&Route {
            dst: cidr,
            gateway: Some(via),
            oif: Some(link.index),
            src: None,
            scope_link: false,
            onlink: false,
        })
        .await?;
        anyhow::Ok(())
    })
}

/// How many /24 networks 172.16.0.0/12 holds: the most routes the routing
/// condition installs.
pub const MAX_SCALE_ROUTES: usize = 4096;

/// The networks [`add_node_routes`] installs: `172.16.0.0/24`,
/// `172.16.1.0/24`, ... (never used by any traffic).
pub fn scale_route(i: usize) -> Ipv4Net {
    let base = u32::from(Ipv4Addr::new(172, 16, 0, 0));
    Ipv4Net::new(Ipv4Addr::from(base + ((i as u32) << 8)), 24).expect("valid /24")
}

/// `ip -n NODE route replace 172.16.x.0/24 via GW dev UPLINK`, `n` times.
pub fn add_node_routes(node_ns: &str, uplink: &str, via: Ipv4Addr, n: usize) -> Result<()> {
    crate::ns::check_ours(node_ns)?;
    crate::ns::block_on(async {
        let ns = Netns::open(node_ns)?;
        let nl = Netlink::connect(&ns).await?;
        let link = nl
            .link_by_name(uplink)
            .await?
            .with_context(|| format!("{uplink} in {node_ns}"))?;
        for i in 0..n {
            nl.replace_route(&Route {
                dst: scale_route(i),
                gateway: Some(via),
                oif: Some(link.index),
                src: None,
                scope_link: false,
                onlink: false,
            })
            .await?;
        }
        anyhow::Ok(())
    })
}

/// Removes the routes [`add_node_routes`] added.
pub fn remove_node_routes(node_ns: &str, n: usize) -> Result<()> {
    crate::ns::check_ours(node_ns)?;
    crate::ns::block_on(async {
        let ns = Netns::open(node_ns)?;
        let nl = Netlink::connect(&ns).await?;
        for i in 0..n {
            nl.delete_route(&Route {
                dst: scale_route(i),
                gateway: None,
                oif: None,
                src: None,
                scope_link: false,
                onlink: false,
            })
            .await?;
        }
        anyhow::Ok(())
    })
}

/// The number of IPv4 routes in the main table of `ns`.
pub fn route_count(ns: &str) -> Result<usize> {
    crate::ns::check_ours(ns)?;
    crate::ns::block_on(async {
        let netns = Netns::open(ns)?;
        let nl = Netlink::connect(&netns).await?;
        anyhow::Ok(nl.routes().await?.len())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_routes_are_distinct_and_private() {
        assert_eq!(scale_route(0).to_string(), "172.16.0.0/24");
        assert_eq!(scale_route(1).to_string(), "172.16.1.0/24");
        assert_eq!(scale_route(999).to_string(), "172.19.231.0/24");
        let private: Ipv4Net = "172.16.0.0/12".parse().unwrap();
        assert!(private.contains(&scale_route(MAX_SCALE_ROUTES - 1)));
    }
}
