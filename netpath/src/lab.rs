//! A lab node: a "node" network namespace with a veth uplink to a "LAN
//! host" namespace. The demo, the integration tests and the benchmarks run
//! netpath inside one, so that nothing ever touches the machine's real
//! interfaces or routes.
//!
//! ```text
//! ip netns add NODE ; ip netns add LAN
//! ip -n NODE link add uplink0 type veth peer name eth0 netns LAN
//! ip -n NODE addr add 192.168.50.2/24 dev uplink0 ; ip -n NODE link set uplink0 up
//! ip -n LAN  addr add 192.168.50.1/24 dev eth0    ; ip -n LAN  link set eth0 up
//! ```
//!
//! A [`RoutedLab`] adds a second uplink to a router namespace with a "far"
//! host behind it, for declared routes (`ip route add 192.168.70.0/24 via
//! 192.168.60.1 dev uplink1` in the classic recipe):
//!
//! ```text
//! node ns  uplink1 192.168.60.2/24 ── eth0 192.168.60.1/24  router ns (ip_forward=1)
//!                                     eth1 192.168.70.1/24 ── eth0 192.168.70.2/24  far ns
//!                                                                  default via 192.168.70.1
//! ```
//!
//! Nobody but the node knows the pod CIDR: replies reach pods only through
//! the datapath's masquerade.

use ipnet::Ipv4Net;

use crate::{
    netlink::{self, Netlink, NetlinkError, Route, SysctlError},
    netns::{Netns, NetnsError},
};

/// Errors building a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab: {0}")]
    Netns(#[from] NetnsError),
    #[error("lab: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("lab: interface {0} vanished right after it was created")]
    Vanished(String),
    #[error("lab: {0}")]
    Sysctl(#[from] SysctlError),
}

/// The uplink's name in the node namespace.
pub const UPLINK: &str = "uplink0";
/// The LAN host's interface name.
pub const LAN_IFNAME: &str = "eth0";
/// The second uplink's name in the node namespace (see [`RoutedLab`]).
pub const UPLINK1: &str = "uplink1";

/// A node namespace wired to a LAN host namespace.
#[derive(Debug, Clone)]
pub struct Lab {
    pub node_netns: String,
    pub lan_netns: String,
    /// The node's uplink address (on [`UPLINK`]).
    pub node_addr: Ipv4Net,
    /// The LAN host's address (on its `eth0`).
    pub lan_addr: Ipv4Net,
}

impl Lab {
    /// A lab with the given namespace names and the 192.168.50.0/24 uplink
    /// network (node .2, LAN host .1).
    pub fn new(node_netns: impl Into<String>, lan_netns: impl Into<String>) -> Self {
        Self {
            node_netns: node_netns.into(),
            lan_netns: lan_netns.into(),
            node_addr: "192.168.50.2/24".parse().expect("valid"),
            lan_addr: "192.168.50.1/24".parse().expect("valid"),
        }
    }

    /// Builds the lab; on failure, removes what it built.
    pub async fn create(&self) -> Result<(), LabError> {
        let res = self.try_create().await;
        if res.is_err() {
            self.destroy().await;
        }
        res
    }

    async fn try_create(&self) -> Result<(), LabError> {
        let node = Netns::create(&self.node_netns).await?;
        let lan = Netns::create(&self.lan_netns).await?;
        let node_nl = Netlink::connect(&node).await?;
        let lan_nl = Netlink::connect(&lan).await?;
        node_nl.add_veth(UPLINK, LAN_IFNAME, &lan).await?;
        address_up(&node_nl, UPLINK, self.node_addr).await?;
        address_up(&lan_nl, LAN_IFNAME, self.lan_addr).await?;
        Ok(())
    }

    /// Removes both namespaces (and with them the uplink). Idempotent.
    pub async fn destroy(&self) {
        for ns in [&self.lan_netns, &self.node_netns] {
            if let Err(e) = Netns::delete(ns).await {
                log::warn!("lab: cannot delete namespace {ns}: {e}");
            }
        }
    }
}

/// `ip addr add ADDR dev IFNAME; ip link set IFNAME up`; returns the ifindex.
async fn address_up(nl: &Netlink, ifname: &str, addr: Ipv4Net) -> Result<u32, LabError> {
    let link = nl
        .link_by_name(ifname)
        .await?
        .ok_or_else(|| LabError::Vanished(ifname.into()))?;
    nl.add_address(link.index, addr.addr(), addr.prefix_len())
        .await?;
    nl.set_up(link.index).await?;
    Ok(link.index)
}

/// A second uplink of a lab node ([`UPLINK1`]) to a router namespace, and a
/// far host namespace behind the router (see the module documentation).
#[derive(Debug, Clone)]
pub struct RoutedLab {
    pub node_netns: String,
    pub router_netns: String,
    pub far_netns: String,
    /// The node's address on [`UPLINK1`].
    pub node_addr: Ipv4Net,
    /// The router's address towards the node (the next hop of the route).
    pub router_addr: Ipv4Net,
    /// The router's address towards the far host.
    pub router_far_addr: Ipv4Net,
    /// The far host's address.
    pub far_addr: Ipv4Net,
}

impl RoutedLab {
    /// A routed lab behind `node_netns` with the given router and far host
    /// namespace names: 192.168.60.0/24 between node (.2) and router (.1),
    /// 192.168.70.0/24 between router (.1) and far host (.2).
    pub fn new(
        node_netns: impl Into<String>,
        router_netns: impl Into<String>,
        far_netns: impl Into<String>,
    ) -> Self {
        let net = |s: &str| s.parse().expect("valid");
        Self {
            node_netns: node_netns.into(),
            router_netns: router_netns.into(),
            far_netns: far_netns.into(),
            node_addr: net("192.168.60.2/24"),
            router_addr: net("192.168.60.1/24"),
            router_far_addr: net("192.168.70.1/24"),
            far_addr: net("192.168.70.2/24"),
        }
    }

    /// Builds the router and far host namespaces and the node's second
    /// uplink; on failure, removes what it built. The node namespace must
    /// exist.
    pub async fn create(&self) -> Result<(), LabError> {
        let res = self.try_create().await;
        if res.is_err() {
            self.destroy().await;
        }
        res
    }

    async fn try_create(&self) -> Result<(), LabError> {
        let node = Netns::open(&self.node_netns)?;
        let router = Netns::create(&self.router_netns).await?;
        let far = Netns::create(&self.far_netns).await?;
        let node_nl = Netlink::connect(&node).await?;
        let router_nl = Netlink::connect(&router).await?;
        let far_nl = Netlink::connect(&far).await?;
        // ip -n NODE link add uplink1 type veth peer name eth0 netns ROUTER
        node_nl.add_veth(UPLINK1, "eth0", &router).await?;
        // ip -n ROUTER link add eth1 type veth peer name eth0 netns FAR
        router_nl.add_veth("eth1", "eth0", &far).await?;
        for (nl, ifname, addr) in [
            (&node_nl, UPLINK1, self.node_addr),
            (&router_nl, "eth0", self.router_addr),
            (&router_nl, "eth1", self.router_far_addr),
        ] {
            address_up(nl, ifname, addr).await?;
        }
        let far_eth0 = address_up(&far_nl, "eth0", self.far_addr).await?;
        // The router routes (in its own namespace only).
        netlink::write_sysctl(&router, "ipv4/ip_forward", "1")?;
        // ip -n FAR route add default via 192.168.70.1 dev eth0
        far_nl
            .replace_route(&Route {
                dst: Ipv4Net::default(),
                gateway: Some(self.router_far_addr.addr()),
                oif: Some(far_eth0),
                src: None,
                scope_link: false,
                onlink: false,
            })
            .await?;
        Ok(())
    }

    /// Removes the router and far host namespaces (and with them the
    /// node's second uplink). Idempotent.
    pub async fn destroy(&self) {
        for ns in [&self.far_netns, &self.router_netns] {
            if let Err(e) = Netns::delete(ns).await {
                log::warn!("lab: cannot delete namespace {ns}: {e}");
            }
        }
    }
}
