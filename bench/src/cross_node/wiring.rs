//! How the cross-node group wires its two nodes, four ways.
//!
//! Every setup has the same shape: a LAN namespace whose Linux bridge is
//! the switch (no route to any pod CIDR), two node namespaces with a veth
//! uplink on it (192.168.50.11 and .12), and one pod per node (node `i`'s
//! pod CIDR is 10.244.i.0/24 out of the cluster's 10.244.0.0/16):
//!
//! ```text
//! ip -n LAN link add br0 type bridge ; ip -n LAN link set br0 up
//! ip -n LAN link add pI type veth peer name uplink0 netns NODE_I
//! ip -n LAN link set pI master br0 up ; ip -n NODE_I addr add 192.168.50.(10+I)/24 dev uplink0
//! ```
//!
//! **classic direct** — a routed cluster without overlay (flannel's
//! `host-gw`, Calico without encapsulation): the CNI `bridge` plugin's pod
//! wiring, `ip_forward`, flannel's masquerade of traffic leaving the
//! cluster, and a kernel route per peer:
//!
//! ```text
//! ip -n NODE_I link add cni0 type bridge ; ip -n NODE_I addr add 10.244.I.1/24 dev cni0
//! ip -n NODE_I link add veth-pod type veth peer name eth0 netns POD_I ; ... master cni0
//! ip -n POD_I addr add 10.244.I.2/24 dev eth0 ; ip -n POD_I route add default via 10.244.I.1
//! ip netns exec NODE_I sysctl -w net.ipv4.ip_forward=1
//! ip netns exec NODE_I iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
//! ip -n NODE_I route add 10.244.J.0/24 via 192.168.50.(10+J) dev uplink0
//! ```
//!
//! **classic overlay** — flannel's `vxlan` backend: the same pod wiring at
//! MTU 1450, and instead of the route a VXLAN device whose neighbour and
//! FDB entries flannel writes for each peer:
//!
//! ```text
//! ip -n NODE_I link add flannel.1 address 02:f1:00:00:00:0I mtu 1450 type vxlan id 1 \
//!     local 192.168.50.(10+I) dev uplink0 dstport 8472 nolearning
//! ip -n NODE_I addr add 10.244.I.0/32 dev flannel.1 ; ip -n NODE_I link set flannel.1 up
//! ip -n NODE_I route add 10.244.J.0/24 via 10.244.J.0 dev flannel.1 onlink
//! ip -n NODE_I neigh add 10.244.J.0 lladdr 02:f1:00:00:00:0J dev flannel.1 nud permanent
//! bridge -n NODE_I fdb add 02:f1:00:00:00:0J dev flannel.1 dst 192.168.50.(10+J) self permanent
//! ```
//!
//! **netpath direct** and **netpath vxlan** — `netpath::reconcile::apply`
//! of a node with one pod, `[cluster]` in that mode and the other node as
//! its `[[peers]]` entry (the masquerade rule as the classic nodes have
//! it; XDP off, the default).

use std::{
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use anyhow::{Context as _, Result};
use ipnet::Ipv4Net;
use netlink_packet_route::neighbour::NeighbourFlags;
use netpath::{
    config::{
        Config, ConntrackConfig, MasqueradeConfig, NatConfig, NodeConfig, PodConfig, UplinkConfig,
        cluster::{ClusterConfig, ClusterMode, PeerConfig},
        metrics::{MetricsConfig, MetricsListen},
    },
    demo::lab::UPLINK,
    reconcile,
    sys::{
        netlink::{Netlink, Route},
        netns::Netns,
    },
};
use rtnetlink::{LinkBridge, LinkVxlan};

use super::XnKind;
use crate::ns::{self, Names};

/// The cluster CIDR.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// The pods' MTU under an overlay (1500 minus VXLAN's 50 bytes).
pub const OVERLAY_MTU: u32 = 1450;
/// The bridge of the pods on a classic node.
const CNI_BRIDGE: &str = "cni0";
/// flannel's VXLAN device.
const FLANNEL_DEV: &str = "flannel.1";

/// Node `i`'s (1 or 2) address on the LAN.
pub fn node_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 50, 10 + i)
}

/// Node `i`'s pod CIDR.
pub fn pod_cidr(i: u8) -> Ipv4Net {
    Ipv4Net::new(Ipv4Addr::new(10, 244, i, 0), 24).expect("a /24")
}

/// flannel's VTEP MAC of node `i`.
fn vtep_mac(i: u8) -> [u8; 6] {
    [0x02, 0xf1, 0, 0, 0, i]
}

/// The namespaces of one setup: `npb-<pid>-<tag>-lan`, `-n1`, `-n2`,
/// `-n1-pod`, `-n2-pod`.
#[derive(Clone, Debug)]
pub struct Wiring {
    pub kind: XnKind,
    pub lan: String,
    /// Node 1 (the client's) and node 2 (the server's).
    pub nodes: [String; 2],
    pub pods: [String; 2],
}

impl Wiring {
    pub fn new(names: &Names, kind: XnKind) -> Self {
        let tag = kind.tag();
        let node = |i: u8| names.ns(&format!("{tag}-n{i}"));
        Self {
            kind,
            lan: names.ns(&format!("{tag}-lan")),
            nodes: [node(1), node(2)],
            pods: [
                names.ns(&format!("{tag}-n1-pod")),
                names.ns(&format!("{tag}-n2-pod")),
            ],
        }
    }

    /// Every namespace, pods first (what teardown deletes).
    pub fn namespaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pods.to_vec();
        v.extend(self.nodes.iter().cloned());
        v.push(self.lan.clone());
        v
    }

    /// The netpath instance of node `i` (the node namespace's name).
    pub fn instance(&self, i: u8) -> &str {
        &self.nodes[usize::from(i - 1)]
    }

    /// Builds the setup; returns the server pod's address (node 2's pod).
    pub fn build(&self) -> Result<Ipv4Addr> {
        for ns in self.namespaces() {
            ns::check_ours(&ns)?;
        }
        self.build_lan()?;
        match self.kind {
            XnKind::ClassicDirect | XnKind::ClassicVxlan => {
                for i in 1..=2 {
                    self.build_classic_node(i)?;
                }
                Ok(classic_pod_addr(2))
            }
            XnKind::NetpathDirect | XnKind::NetpathVxlan => {
                let mut server = None;
                for i in 1..=2 {
                    let config = self.netpath_config(i);
                    let report = ns::block_on(reconcile::apply(&config))
                        .with_context(|| format!("netpath apply on node {i}"))?;
                    server = report.addresses.get("pod").copied();
                }
                server.context("netpath gave node 2's pod no address")
            }
        }
    }

    /// Removes every namespace (and with them the links, routes and
    /// rules), after netpath's instances. Never fails.
    pub fn teardown(&self) {
        let instances: Vec<String> = if self.kind.is_netpath() {
            self.nodes.to_vec()
        } else {
            Vec::new()
        };
        let namespaces = self.namespaces();
        ns::block_on(async move {
            for instance in instances {
                if let Err(e) = reconcile::destroy(&instance).await {
                    log::warn!("destroy netpath instance {instance}: {e}");
                }
            }
            ns::delete_all(&namespaces).await;
        });
    }

    /// The LAN namespace and its bridge, the node namespaces and their
    /// uplinks on it.
    fn build_lan(&self) -> Result<()> {
        let w = self.clone();
        ns::block_on(async move {
            let lan = Netns::create(&w.lan).await?;
            let nl = Netlink::connect(&lan).await?;
            let br = nl.add_bridge("br0").await?;
            for (k, node) in w.nodes.iter().enumerate() {
                let i = u8::try_from(k + 1).expect("two nodes");
                let node_ns = Netns::create(node).await?;
                let port = format!("p{i}");
                nl.add_veth(&port, UPLINK, &node_ns).await?;
                let link = nl
                    .link_by_name(&port)
                    .await?
                    .with_context(|| format!("{port} in {}", w.lan))?;
                nl.set_controller(link.index, br).await?;
                nl.set_up(link.index).await?;
                Netlink::connect(&node_ns)
                    .await?
                    .address_up(UPLINK, Ipv4Net::new(node_addr(i), 24).expect("a /24"))
                    .await?;
            }
            anyhow::Ok(())
        })
    }

    /// A classic node: the `bridge` plugin's pod, `ip_forward`, flannel's
    /// masquerade, and the route or the VXLAN device to the other node.
    fn build_classic_node(&self, i: u8) -> Result<()> {
        let peer = 3 - i;
        let overlay = self.kind == XnKind::ClassicVxlan;
        let mtu = overlay.then_some(OVERLAY_MTU);
        let (node_name, pod_name) = (
            self.nodes[usize::from(i - 1)].clone(),
            self.pods[usize::from(i - 1)].clone(),
        );
        ns::block_on(async move {
            let node = Netns::open(&node_name)?;
            let nl = Netlink::connect(&node).await?;
            let gateway = Ipv4Addr::new(10, 244, i, 1);
            // ip link add cni0 type bridge; ip addr add 10.244.I.1/24 dev cni0
            nl.handle()
                .link()
                .add(LinkBridge::new(CNI_BRIDGE).build())
                .execute()
                .await
                .context("ip link add cni0 type bridge")?;
            let br = nl.link_by_name(CNI_BRIDGE).await?.context("cni0")?;
            nl.add_address(br.index, gateway, 24).await?;
            // The pod: a veth into cni0, its address, its default route.
            let pod_ns = Netns::create(&pod_name).await?;
            nl.add_veth_mtu("veth-pod", "eth0", &pod_ns, mtu).await?;
            let host = nl.link_by_name("veth-pod").await?.context("veth-pod")?;
            nl.set_controller(host.index, br.index).await?;
            nl.set_up(host.index).await?;
            let pod_nl = Netlink::connect(&pod_ns).await?;
            let eth0 = pod_nl.link_by_name("eth0").await?.context("eth0")?;
            pod_nl
                .add_address(eth0.index, classic_pod_addr(i), 24)
                .await?;
            pod_nl.set_up(eth0.index).await?;
            pod_nl
                .replace_route(&Route {
                    dst: Ipv4Net::default(),
                    gateway: Some(gateway),
                    oif: Some(eth0.index),
                    src: None,
                    scope_link: false,
                    onlink: false,
                })
                .await?;
            if overlay {
                let uplink = nl.link_by_name(UPLINK).await?.context("uplink0")?;
                // ip link add flannel.1 ... type vxlan id 1 local NODE dev uplink0 dstport 8472 nolearning
                let msg = LinkVxlan::new(FLANNEL_DEV, 1)
                    .local(node_addr(i))
                    .dev(uplink.index)
                    .port(8472)
                    .learning(false)
                    .mtu(OVERLAY_MTU)
                    .address(vtep_mac(i).to_vec())
                    .build();
                nl.handle()
                    .link()
                    .add(msg)
                    .execute()
                    .await
                    .context("ip link add flannel.1 type vxlan")?;
                let dev = nl.link_by_name(FLANNEL_DEV).await?.context("flannel.1")?;
                nl.add_address(dev.index, Ipv4Addr::new(10, 244, i, 0), 32)
                    .await?;
                nl.set_up(dev.index).await?;
                let peer_vtep = Ipv4Addr::new(10, 244, peer, 0);
                // ip route add 10.244.J.0/24 via 10.244.J.0 dev flannel.1 onlink
                nl.replace_route(&Route {
                    dst: pod_cidr(peer),
                    gateway: Some(peer_vtep),
                    oif: Some(dev.index),
                    src: None,
                    scope_link: false,
                    onlink: true,
                })
                .await?;
                // ip neigh add 10.244.J.0 lladdr MAC_J dev flannel.1 nud permanent
                nl.handle()
                    .neighbours()
                    .add(dev.index, IpAddr::V4(peer_vtep))
                    .link_layer_address(&vtep_mac(peer))
                    .execute()
                    .await
                    .context("ip neigh add (flannel.1)")?;
                // bridge fdb add MAC_J dev flannel.1 dst NODE_J self permanent
                nl.handle()
                    .neighbours()
                    .add_bridge(dev.index, &vtep_mac(peer))
                    .flags(NeighbourFlags::Own)
                    .destination(IpAddr::V4(node_addr(peer)))
                    .execute()
                    .await
                    .context("bridge fdb add (flannel.1)")?;
            } else {
                // ip route add 10.244.J.0/24 via NODE_J dev uplink0
                nl.replace_route(&Route {
                    dst: pod_cidr(peer),
                    gateway: Some(node_addr(peer)),
                    oif: None,
                    src: None,
                    scope_link: false,
                    onlink: false,
                })
                .await?;
            }
            anyhow::Ok(())
        })?;
        let node = &self.nodes[usize::from(i - 1)];
        ns::sysctl(node, "ipv4/ip_forward", "1")?;
        ns::run_command(
            node,
            "iptables",
            &[
                "-t",
                "nat",
                "-A",
                "POSTROUTING",
                "-s",
                CLUSTER_CIDR,
                "!",
                "-d",
                CLUSTER_CIDR,
                "-j",
                "MASQUERADE",
            ],
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Node `i`'s netpath configuration: one pod, `[cluster]` in this
    /// setup's mode, the other node as its peer.
    pub fn netpath_config(&self, i: u8) -> Config {
        let peer = 3 - i;
        let mode = if self.kind == XnKind::NetpathVxlan {
            ClusterMode::Vxlan
        } else {
            ClusterMode::Direct
        };
        let name = self.instance(i).to_owned();
        Config {
            node: NodeConfig {
                name: name.clone(),
                netns: Some(name.clone()),
                pod_cidr: pod_cidr(i),
                service_cidr: None,
                gateway: None,
                pod_netns_prefix: Some(format!("{name}-")),
                uplink: Some(UplinkConfig {
                    name: UPLINK.into(),
                    address: Some(Ipv4Net::new(node_addr(i), 24).expect("a /24")),
                    gateway: None,
                }),
                xdp: None,
                deny_sources: Vec::new(),
                dns: None,
                pod_counters: None,
                metrics: Some(MetricsConfig {
                    listen: MetricsListen::Off,
                }),
            },
            pods: vec![PodConfig::named("pod")],
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
                cidr: CLUSTER_CIDR.parse().expect("valid"),
                mode,
                vxlan_vni: None,
                vxlan_port: None,
                vxlan_device: None,
                ..ClusterConfig::default()
            }),
            peers: vec![PeerConfig {
                name: self.instance(peer).to_owned(),
                node_address: node_addr(peer),
                pod_cidr: pod_cidr(peer),
            }],
        }
    }

    /// How it is wired, for the report.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "LAN netns {} (bridge br0, no route to any pod CIDR); nodes {} (192.168.50.11) and \
             {} (192.168.50.12) on it; client pod {} on node 1, server pod {} on node 2",
            self.lan, self.nodes[0], self.nodes[1], self.pods[0], self.pods[1]
        )];
        match self.kind {
            XnKind::ClassicDirect => lines.push(
                "per node: cni0 10.244.I.1/24 + veth (the CNI bridge plugin), ip_forward=1, \
                 iptables -t nat -A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j \
                 MASQUERADE, ip route add 10.244.J.0/24 via 192.168.50.(10+J)"
                    .into(),
            ),
            XnKind::ClassicVxlan => lines.push(
                "per node: cni0 + veth at MTU 1450, ip_forward=1, the same MASQUERADE rule, \
                 flannel.1 (vxlan id 1 dstport 8472 nolearning, 10.244.I.0/32), route \
                 10.244.J.0/24 via 10.244.J.0 dev flannel.1 onlink, a permanent neighbour and \
                 an FDB entry (dst 192.168.50.(10+J)) for the peer's VTEP"
                    .into(),
            ),
            XnKind::NetpathDirect | XnKind::NetpathVxlan => {
                lines.push("netpath::reconcile::apply of (node 1):".into());
                lines.extend(
                    self.netpath_config(1)
                        .to_toml_string()
                        .lines()
                        .filter(|l| !l.is_empty())
                        .map(|l| format!("  {l}")),
                );
            }
        }
        lines
    }
}

/// The classic pod's address on node `i` (host-local's first).
fn classic_pod_addr(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, i, 2)
}
