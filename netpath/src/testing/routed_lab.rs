//! A routed lab for tests of declared routes: a second uplink of a lab
//! node to a router namespace, and a far host behind the router (`ip route
//! add 192.168.70.0/24 via 192.168.60.1 dev uplink1` in the classic recipe):
//!
//! ```text
//! node ns  uplink1 192.168.60.2/24 ── eth0 192.168.60.1/24  router ns (ip_forward=1)
//!                                     eth1 192.168.70.1/24 ── eth0 192.168.70.2/24  far ns
//!                                                                  default via 192.168.70.1
//! ```

use ipnet::Ipv4Net;

use crate::{
    demo::lab::LabError,
    sys::{
        netlink::{Netlink, Route},
        netns::Netns,
        sysctl,
    },
};

/// The second uplink's name in the node namespace.
pub const UPLINK1: &str = "uplink1";

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
            nl.address_up(ifname, addr).await?;
        }
        let far_eth0 = far_nl.address_up("eth0", self.far_addr).await?;
        // The router routes (in its own namespace only).
        sysctl::write_sysctl(&router, "ipv4/ip_forward", "1")?;
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
