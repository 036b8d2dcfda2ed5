//! `netpath demo --nodes N`: a cluster of N nodes on one LAN, each a
//! netpath node with two pods, its own pod CIDR out of the cluster CIDR
//! and every other node as a static peer; direct routing by default, the
//! VXLAN overlay with `--overlay vxlan`.
//!
//! ```text
//! # the LAN: a namespace whose Linux bridge is the switch
//! ip netns add demo-lan
//! ip -n demo-lan link add br0 type bridge ; ip -n demo-lan link set br0 up
//! ip -n demo-lan addr add 192.168.50.1/24 dev br0
//! # node i (1..N): a namespace plugged into the bridge
//! ip netns add demo-ni
//! ip -n demo-lan link add pi type veth peer name uplink0 netns demo-ni
//! ip -n demo-lan link set pi master br0 ; ip -n demo-lan link set pi up
//! ip -n demo-ni addr add 192.168.50.(10+i)/24 dev uplink0 ; ip -n demo-ni link set uplink0 up
//! # then netpath, in node i: pod CIDR 10.244.i.0/24, pods red and blue,
//! # [cluster] cidr 10.244.0.0/16, every other node a [[peers]] entry
//! ```
//!
//! The LAN routes no pod CIDR: pods of different nodes reach each other
//! only through the datapath (routed to the peer's node address, or
//! encapsulated to it). Every name derives from a prefix ([`NodesDemo::new`],
//! `--name`, default `demo`): the namespaces `<prefix>-lan`, `<prefix>-nI`
//! and `<prefix>-nI-red`/`-blue`, the instances `<prefix>-nI`; so a test can
//! run the demo beside another.
//!
//! The peers are static here; a cluster store (etcd) filling the same
//! `[[peers]]` list is what changes when the demo switches to it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use super::{
    DemoError,
    lab::{LabError, UPLINK},
};
use crate::{
    config::{
        Config, ConntrackConfig, MasqueradeConfig, NatConfig, NodeConfig, PodConfig, UplinkConfig,
        cluster::{ClusterConfig, ClusterMode, PeerConfig},
        metrics::{MetricsConfig, MetricsListen},
    },
    reconcile::{self, ApplyReport},
    sys::{
        netlink::{Netlink, NetlinkError},
        netns::Netns,
        preflight,
    },
};

/// The default prefix of the demo's names.
pub const DEFAULT_PREFIX: &str = "demo";
/// The cluster CIDR: node `i` gets `10.244.i.0/24`.
pub const CLUSTER_CIDR: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(10, 244, 0, 0), 16);
/// The LAN's network: the bridge is `.1`, node `i` is `.(10+i)`.
pub const LAN_NET: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 50, 0), 24);
/// The bridge in the LAN namespace.
pub const BRIDGE: &str = "br0";
/// The pods of every node.
pub const PODS: [&str; 2] = ["red", "blue"];
/// The most nodes the demo builds (the LAN's addresses `.11` to `.(10+N)`
/// and the pod CIDRs `10.244.1.0/24` up).
pub const MAX_NODES: u8 = 16;

/// One node of the demo.
#[derive(Debug, Clone)]
pub struct DemoNode {
    /// From 1.
    pub index: u8,
    /// The node's namespace (also its instance name).
    pub netns: String,
    /// The bridge port its uplink is plugged into (in the LAN namespace).
    pub port: String,
    /// What netpath applies in it (the daemon serves it).
    pub config: Config,
}

impl DemoNode {
    /// The instance name (`node.name`).
    pub fn instance(&self) -> &str {
        &self.config.node.name
    }

    /// The node's address on the LAN.
    pub fn address(&self) -> Ipv4Net {
        node_address(self.index)
    }

    /// The namespace of pod `pod`.
    pub fn pod_netns(&self, pod: &str) -> String {
        format!("{}-{pod}", self.netns)
    }
}

/// The demo's LAN and nodes, as planned (nothing built yet).
#[derive(Debug, Clone)]
pub struct NodesDemo {
    pub prefix: String,
    pub lan_netns: String,
    /// The bridge's address: the LAN host the pods reach by masquerade.
    pub lan_addr: Ipv4Net,
    pub mode: ClusterMode,
    pub nodes: Vec<DemoNode>,
}

/// Errors of planning the demo (before anything is built).
#[derive(Debug, thiserror::Error)]
pub enum NodesDemoError {
    #[error("--nodes {0}: the multi-node demo builds 2 to {MAX_NODES} nodes")]
    NodeCount(u8),
    #[error(
        "--name {0:?}: the prefix of the demo's names must be 1 to 20 bytes of a-z, 0-9 and '-', \
         not starting with '-'"
    )]
    Prefix(String),
}

/// Node `i`'s address on the LAN.
fn node_address(i: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 50, 10 + i), 24)
}

/// Node `i`'s pod CIDR.
pub fn pod_cidr(i: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(10, 244, i, 0), 24)
}

impl NodesDemo {
    /// Plans `n` nodes named after `prefix` in `mode`: every node knows
    /// every other as a peer.
    pub fn new(prefix: &str, n: u8, mode: ClusterMode) -> Result<Self, NodesDemoError> {
        if !(2..=MAX_NODES).contains(&n) {
            return Err(NodesDemoError::NodeCount(n));
        }
        // `<prefix>-n16-`: the pod netns prefix stays within node.name's 32.
        let valid = !prefix.is_empty()
            && prefix.len() <= 20
            && !prefix.starts_with('-')
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !valid {
            return Err(NodesDemoError::Prefix(prefix.to_owned()));
        }
        let mut nodes: Vec<DemoNode> = (1..=n)
            .map(|i| {
                let name = format!("{prefix}-n{i}");
                DemoNode {
                    index: i,
                    netns: name.clone(),
                    port: format!("p{i}"),
                    config: node_config(&name, i, mode),
                }
            })
            .collect();
        let peers: Vec<PeerConfig> = nodes
            .iter()
            .map(|n| PeerConfig {
                name: n.instance().to_owned(),
                node_address: n.address().addr(),
                pod_cidr: n.config.node.pod_cidr,
            })
            .collect();
        for node in &mut nodes {
            node.config.peers = peers
                .iter()
                .filter(|p| p.name != node.config.node.name)
                .cloned()
                .collect();
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            lan_netns: format!("{prefix}-lan"),
            lan_addr: Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 50, 1), 24),
            mode,
            nodes,
        })
    }

    /// Removes whatever a demo of these names left (a crashed run): each
    /// instance (its pods, pins and state), then the namespaces.
    pub async fn clean(&self) -> Result<(), DemoError> {
        for node in &self.nodes {
            reconcile::destroy(node.instance()).await?;
        }
        for ns in self
            .nodes
            .iter()
            .map(|n| n.netns.as_str())
            .chain([self.lan_netns.as_str()])
        {
            if let Err(e) = Netns::delete(ns).await {
                log::warn!("demo: cannot delete namespace {ns}: {e}");
            }
        }
        Ok(())
    }

    /// Builds the LAN and the nodes, then applies every node's
    /// configuration; on failure removes everything. The reports are in
    /// node order.
    pub async fn up(&self) -> Result<Vec<ApplyReport>, DemoError> {
        preflight::check()?;
        self.clean().await?;
        let res = self.build().await;
        if res.is_err() {
            let _ = self.clean().await;
        }
        res
    }

    async fn build(&self) -> Result<Vec<ApplyReport>, DemoError> {
        self.build_network().await?;
        let mut reports = Vec::new();
        for node in &self.nodes {
            reports.push(reconcile::apply(&node.config).await?);
        }
        Ok(reports)
    }

    /// The LAN namespace with its bridge, and each node's namespace with
    /// its uplink plugged into the bridge.
    async fn build_network(&self) -> Result<(), LabError> {
        let lan = Netns::create(&self.lan_netns).await?;
        let lan_nl = Netlink::connect(&lan).await?;
        // ip link add br0 type bridge; ip link set br0 up; ip addr add 192.168.50.1/24 dev br0
        let bridge = lan_nl.add_bridge(BRIDGE).await?;
        lan_nl
            .add_address(bridge, self.lan_addr.addr(), self.lan_addr.prefix_len())
            .await?;
        for node in &self.nodes {
            let ns = Netns::create(&node.netns).await?;
            // ip -n LAN link add pI type veth peer name uplink0 netns NODE
            lan_nl.add_veth(&node.port, UPLINK, &ns).await?;
            let port =
                lan_nl
                    .link_by_name(&node.port)
                    .await?
                    .ok_or_else(|| NetlinkError::NotFound {
                        what: format!("{} in network namespace {}", node.port, self.lan_netns),
                    })?;
            // ip -n LAN link set pI master br0; ip -n LAN link set pI up
            lan_nl.set_controller(port.index, bridge).await?;
            lan_nl.set_up(port.index).await?;
            // ip -n NODE addr add 192.168.50.(10+i)/24 dev uplink0; up
            Netlink::connect(&ns)
                .await?
                .address_up(UPLINK, node.address())
                .await?;
        }
        Ok(())
    }

    /// Every pod as `(name shown, namespace)`, node by node, for the HTTP
    /// responders: the name says which node answered (`red@demo-n2`).
    pub fn pods(&self) -> Vec<(String, String)> {
        self.nodes
            .iter()
            .flat_map(|n| {
                PODS.iter()
                    .map(|p| (format!("{p}@{}", n.instance()), n.pod_netns(p)))
            })
            .collect()
    }
}

/// Node `i`'s configuration, without its peers: pods red and blue, the
/// uplink with the LAN's bridge as its gateway, masquerade to the LAN
/// (never inside the cluster CIDR), no metrics endpoint (N daemons in one
/// process would take the same port).
fn node_config(name: &str, i: u8, mode: ClusterMode) -> Config {
    Config {
        node: NodeConfig {
            name: name.to_owned(),
            netns: Some(name.to_owned()),
            pod_cidr: pod_cidr(i),
            service_cidr: None,
            gateway: None,
            pod_netns_prefix: Some(format!("{name}-")),
            uplink: Some(UplinkConfig {
                name: UPLINK.into(),
                address: Some(node_address(i)),
                gateway: Some(Ipv4Addr::new(192, 168, 50, 1)),
            }),
            xdp: None,
            deny_sources: Vec::new(),
            dns: None,
            pod_counters: None,
            metrics: Some(MetricsConfig {
                listen: MetricsListen::Off,
            }),
        },
        pods: PODS.iter().map(|p| PodConfig::named(p)).collect(),
        routes: Vec::new(),
        masquerade: vec![MasqueradeConfig {
            source: None,
            out: None,
            address: None,
        }],
        nat: NatConfig::default(),
        conntrack: ConntrackConfig::default(),
        port_forwards: Vec::new(),
        services: Vec::new(),
        cluster: Some(ClusterConfig {
            cidr: CLUSTER_CIDR,
            mode,
            vxlan_vni: None,
            vxlan_port: None,
            vxlan_device: None,
            ..ClusterConfig::default()
        }),
        peers: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_nodes_get_their_own_pod_cidr_and_each_other_as_peers() {
        let demo = NodesDemo::new("demo", 3, ClusterMode::Vxlan).unwrap();
        assert_eq!(demo.lan_netns, "demo-lan");
        let names: Vec<&str> = demo.nodes.iter().map(DemoNode::instance).collect();
        assert_eq!(names, ["demo-n1", "demo-n2", "demo-n3"]);
        for node in &demo.nodes {
            node.config.validate().unwrap();
            assert_eq!(node.config.peers.len(), 2);
            assert!(node.config.peers.iter().all(|p| p.name != node.instance()));
            assert_eq!(
                node.config.cluster.as_ref().unwrap().mode,
                ClusterMode::Vxlan
            );
            assert_eq!(
                node.config.pod_netns(&node.config.pods[0]),
                node.pod_netns("red")
            );
        }
        let n2 = &demo.nodes[1];
        assert_eq!(n2.config.node.pod_cidr.to_string(), "10.244.2.0/24");
        assert_eq!(n2.address().to_string(), "192.168.50.12/24");
        assert_eq!(n2.pod_netns("blue"), "demo-n2-blue");
        let to_n2 = demo.nodes[0]
            .config
            .peers
            .iter()
            .find(|p| p.name == "demo-n2")
            .unwrap();
        assert_eq!(to_n2.node_address, Ipv4Addr::new(192, 168, 50, 12));
    }

    #[test]
    fn node_counts_and_prefixes_outside_the_range_are_refused() {
        assert!(matches!(
            NodesDemo::new("demo", 1, ClusterMode::Direct),
            Err(NodesDemoError::NodeCount(1))
        ));
        assert!(NodesDemo::new("demo", MAX_NODES, ClusterMode::Direct).is_ok());
        assert!(NodesDemo::new("demo", MAX_NODES + 1, ClusterMode::Direct).is_err());
        for bad in ["", "-x", "Demo", "a_b", "abcdefghijklmnopqrstu"] {
            assert!(
                matches!(
                    NodesDemo::new(bad, 3, ClusterMode::Direct),
                    Err(NodesDemoError::Prefix(_))
                ),
                "{bad:?}"
            );
        }
    }
}
