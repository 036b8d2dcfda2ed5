//! A lab of several nodes for the multi-node tests: one LAN namespace whose
//! Linux bridge is the switch (made with `ip` here, in the test only), and
//! per node a namespace with a veth uplink plugged into that bridge, its
//! own pod CIDR (10.244.N.0/24), instance name, pins and pods. The LAN
//! namespace has no route to any pod CIDR: pods reach each other only
//! through the datapath (direct routing, or the VXLAN overlay).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netpath::{
    config::{
        Config, ConntrackConfig, NatConfig, NodeConfig, UplinkConfig,
        cluster::{ClusterConfig, ClusterMode, PeerConfig},
    },
    datapath::{NodeMaps, PinDir, peers::PeerMap},
    demo::lab::UPLINK,
    reconcile,
    sys::netns::Netns,
};

use crate::harness::{block_on, pod, run_in_ns, unique};

/// The cluster CIDR of the lab.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// One node of a [`Cluster`].
pub struct ClusterNode {
    pub netns: String,
    pub config: Config,
}

impl ClusterNode {
    pub fn instance(&self) -> &str {
        &self.config.node.name
    }

    /// The node's address on the shared network.
    pub fn address(&self) -> Ipv4Addr {
        self.config
            .node
            .uplink
            .as_ref()
            .and_then(|u| u.address)
            .expect("lab nodes have an uplink address")
            .addr()
    }

    /// This node as another node's peer.
    pub fn as_peer(&self) -> PeerConfig {
        PeerConfig {
            name: self.instance().to_owned(),
            node_address: self.address(),
            pod_cidr: self.config.node.pod_cidr,
        }
    }

    /// Applies the node's configuration.
    pub fn apply(&self) -> Result<reconcile::ApplyReport, reconcile::ReconcileError> {
        block_on(reconcile::apply(&self.config))
    }

    /// The namespace of pod `name`.
    pub fn pod_ns(&self, name: &str) -> String {
        let pod = self
            .config
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} on {}", self.instance()));
        self.config.pod_netns(pod)
    }

    /// The address pod `name` got.
    pub fn pod_addr(&self, name: &str) -> Ipv4Addr {
        reconcile::pods(self.instance()).unwrap()[name].address
    }

    /// The instance's pinned maps.
    pub fn maps(&self) -> NodeMaps {
        NodeMaps::open_pinned(&PinDir::for_instance(self.instance())).expect("pinned maps")
    }

    /// The instance's peer map.
    pub fn peer_map(&self) -> PeerMap {
        PeerMap::open_pinned(&PinDir::for_instance(self.instance())).expect("pinned peer map")
    }
}

/// A LAN namespace with a bridge and `n` nodes plugged into it.
pub struct Cluster {
    pub lan_netns: String,
    pub nodes: Vec<ClusterNode>,
}

impl Cluster {
    /// Builds the LAN and `n` node namespaces (node `i`, from 1: uplink
    /// 192.168.50.(10+i)/24, pod CIDR 10.244.i.0/24, the pods `pods`),
    /// every node knowing every other as a peer, in `mode`. Nothing is
    /// applied yet.
    pub fn new(tag: &str, n: u8, mode: ClusterMode, pods: &[&str]) -> Self {
        let base = unique(tag);
        let lan_netns = format!("{base}-lan");
        block_on(Netns::create(&lan_netns)).expect("create the LAN namespace");
        let mut cluster = Self {
            lan_netns: lan_netns.clone(),
            nodes: Vec::new(),
        };
        run_in_ns(&lan_netns, "ip", &["link", "add", "br0", "type", "bridge"]);
        run_in_ns(
            &lan_netns,
            "ip",
            &["addr", "add", "192.168.50.1/24", "dev", "br0"],
        );
        run_in_ns(&lan_netns, "ip", &["link", "set", "br0", "up"]);
        for i in 1..=n {
            let name = format!("{base}-n{i}");
            let netns = format!("{name}-node");
            block_on(Netns::create(&netns)).expect("create a node namespace");
            let port = format!("p{i}");
            run_in_ns(
                &lan_netns,
                "ip",
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", UPLINK, "netns", &netns,
                ],
            );
            run_in_ns(
                &lan_netns,
                "ip",
                &["link", "set", &port, "master", "br0", "up"],
            );
            let address: Ipv4Net = format!("192.168.50.{}/24", 10 + i).parse().unwrap();
            let config = Config {
                node: NodeConfig {
                    name: name.clone(),
                    netns: Some(netns.clone()),
                    pod_cidr: format!("10.244.{i}.0/24").parse().unwrap(),
                    service_cidr: None,
                    gateway: None,
                    pod_netns_prefix: Some(format!("{name}-")),
                    uplink: Some(UplinkConfig {
                        name: UPLINK.into(),
                        address: Some(address),
                        gateway: None,
                    }),
                    xdp: None,
                    deny_sources: Vec::new(),
                    dns: None,
                    pod_counters: None,
                    metrics: None,
                },
                pods: pods.iter().map(|p| pod(p)).collect(),
                routes: Vec::new(),
                masquerade: Vec::new(),
                nat: NatConfig::default(),
                conntrack: ConntrackConfig::default(),
                port_forwards: Vec::new(),
                services: Vec::new(),
                cluster: Some(ClusterConfig {
                    cidr: CLUSTER_CIDR.parse().unwrap(),
                    mode,
                    vxlan_vni: None,
                    vxlan_port: None,
                    vxlan_device: None,
                    ..ClusterConfig::default()
                }),
                peers: Vec::new(),
            };
            cluster.nodes.push(ClusterNode { netns, config });
        }
        let peers: Vec<PeerConfig> = cluster.nodes.iter().map(ClusterNode::as_peer).collect();
        for node in &mut cluster.nodes {
            node.config.peers = peers
                .iter()
                .filter(|p| p.name != node.config.node.name)
                .cloned()
                .collect();
        }
        cluster
    }

    /// Turns the lab into an etcd cluster: every node's `[cluster]` gets
    /// `etcd_endpoints = [endpoint]` and a lease TTL of `ttl_secs`, and
    /// loses its pod CIDR (the lease decides it) and its static peers.
    pub fn use_etcd(&mut self, endpoint: &str, ttl_secs: u32) {
        for node in &mut self.nodes {
            node.config.node.pod_cidr = netpath::config::cluster::UNSET_POD_CIDR;
            node.config.peers.clear();
            let cluster = node
                .config
                .cluster
                .as_mut()
                .expect("lab nodes have [cluster]");
            cluster.etcd_endpoints = vec![endpoint.to_owned()];
            cluster.lease_ttl_secs = Some(ttl_secs);
        }
    }

    /// Applies every node's configuration.
    pub fn apply_all(&self) {
        for node in &self.nodes {
            node.apply()
                .unwrap_or_else(|e| panic!("apply {}: {e}", node.instance()));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let instances: Vec<String> = self.nodes.iter().map(|n| n.instance().to_owned()).collect();
        let mut namespaces: Vec<String> = self.nodes.iter().map(|n| n.netns.clone()).collect();
        namespaces.push(self.lan_netns.clone());
        block_on(async move {
            for instance in instances {
                if let Err(e) = reconcile::destroy(&instance).await {
                    eprintln!("cleanup: destroy {instance}: {e}");
                }
            }
            for ns in namespaces {
                if let Err(e) = Netns::delete(&ns).await {
                    eprintln!("cleanup: delete namespace {ns}: {e}");
                }
            }
        });
    }
}
