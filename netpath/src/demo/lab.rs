//! A lab node: a "node" network namespace with a veth uplink to a "LAN
//! host" namespace. The demo, the integration tests and the benchmarks run
//! netpath inside one, so that nothing ever touches the machine's real
//! interfaces or routes. (Not test-only: `netpath demo` builds one.)
//!
//! ```text
//! ip netns add NODE ; ip netns add LAN
//! ip -n NODE link add uplink0 type veth peer name eth0 netns LAN
//! ip -n NODE addr add 192.168.50.2/24 dev uplink0 ; ip -n NODE link set uplink0 up
//! ip -n LAN  addr add 192.168.50.1/24 dev eth0    ; ip -n LAN  link set eth0 up
//! ```
//!
//! (With the `testing` feature, [`crate::testing::RoutedLab`] adds a second
//! uplink to a router namespace with a far host behind it.)
//!
//! Nobody but the node knows the pod CIDR: replies reach pods only through
//! the datapath's masquerade.

use ipnet::Ipv4Net;

use crate::sys::{
    netlink::{Netlink, NetlinkError},
    netns::{Netns, NetnsError},
    sysctl::SysctlError,
};

/// Errors building a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("lab: {0}")]
    Netns(#[from] NetnsError),
    #[error("lab: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("lab: {0}")]
    Sysctl(#[from] SysctlError),
}

/// The uplink's name in the node namespace.
pub const UPLINK: &str = "uplink0";
/// The LAN host's interface name.
pub const LAN_IFNAME: &str = "eth0";

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
        node_nl.address_up(UPLINK, self.node_addr).await?;
        lan_nl.address_up(LAN_IFNAME, self.lan_addr).await?;
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
