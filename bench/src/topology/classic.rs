//! The classic datapath, wired the way the CNI `bridge` plugin with
//! `ipMasq: true` wires it (and `ip_forward` as it sets it), in the bench's
//! own node and LAN host namespaces:
//!
//! ```text
//! ip -n NODE link add cni0 type bridge
//! ip -n NODE addr add 10.201.0.1/24 dev cni0 ; ip -n NODE link set cni0 up
//! # per pod (red .2, blue .3):
//! ip netns add POD
//! ip -n NODE link add veth-red type veth peer name eth0 netns POD
//! ip -n NODE link set veth-red master cni0 ; ip -n NODE link set veth-red up
//! ip -n POD addr add 10.201.0.2/24 dev eth0 ; ip -n POD link set eth0 up
//! ip -n POD route add default via 10.201.0.1 dev eth0
//! # the node:
//! ip netns exec NODE sysctl -w net.ipv4.ip_forward=1
//! ip netns exec NODE iptables -t nat -A POSTROUTING -s 10.201.0.0/24 ! -d 10.201.0.0/24 -j MASQUERADE
//! # the port-forward, as the CNI portmap plugin's hostPort (tcp and udp):
//! ip netns exec NODE iptables -t nat -A PREROUTING -d NODE_ADDR -p tcp --dport 18080 -j DNAT --to-destination 10.201.0.3:18080
//! # the prefilter figure's deny rule, before conntrack:
//! ip netns exec NODE iptables -t raw -A PREROUTING -s 192.168.50.200 -j DROP
//! ```
//!
//! `net.bridge.bridge-nf-call-iptables` keeps its default (1, what
//! Kubernetes requires), so bridged pod → pod traffic goes through
//! netfilter and conntrack as on a Kubernetes node.

use std::{net::Ipv4Addr, time::Duration};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use netpath::{
    demo::lab::{LAN_IFNAME, Lab, UPLINK},
    sys::{
        netlink::{Netlink, Route},
        netns::Netns,
    },
};
use rtnetlink::{LinkBridge, LinkUnspec};

use super::{DENIED_SOURCE, Endpoints, FORWARD_PORT, Scenario, Setup, SetupKind};
use crate::{
    condition::thousands,
    ns::{self, Names},
};

pub const BRIDGE: &str = "cni0";
pub const POD_CIDR: &str = "10.201.0.0/24";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
/// Pods and their addresses (what host-local IPAM hands out first).
pub const PODS: [(&str, Ipv4Addr); 2] = [
    ("red", Ipv4Addr::new(10, 201, 0, 2)),
    ("blue", Ipv4Addr::new(10, 201, 0, 3)),
];
/// The UDP timeout while idle conntrack entries must stay (seconds).
pub const LONG_UDP_TIMEOUT: &str = "3600";

pub struct Classic {
    lab: Lab,
    names: Names,
    built: bool,
    routes: usize,
    masquerade: Vec<String>,
    /// The port-forward and deny rules, as added (for the report).
    rules: Vec<String>,
    /// `net.bridge.bridge-nf-call-iptables` in the node, as found.
    bridge_nf: Option<String>,
}

impl Classic {
    pub fn new(names: &Names) -> Self {
        Self {
            lab: Lab::new(names.ns("c-node"), names.ns("c-lan")),
            names: names.clone(),
            built: false,
            routes: 0,
            bridge_nf: None,
            rules: Vec::new(),
            masquerade: vec![
                "-t".into(),
                "nat".into(),
                "-A".into(),
                "POSTROUTING".into(),
                "-s".into(),
                POD_CIDR.into(),
                "!".into(),
                "-d".into(),
                POD_CIDR.into(),
                "-j".into(),
                "MASQUERADE".into(),
            ],
        }
    }

    fn pod_ns(&self, pod: &str) -> String {
        self.names.ns(&format!("c-{pod}"))
    }

    pub fn node_ns(&self) -> &str {
        &self.lab.node_netns
    }

    fn iptables(&self, args: &[&str]) -> Result<String> {
        ns::run_command(self.node_ns(), "iptables", args, Duration::from_secs(30))
    }
}

/// The lab (node and LAN host namespaces) with the CNI `bridge` plugin's
/// wiring in the node: `cni0` with the gateway address, and a pod per
/// `(name, address, namespace)` of `pods` on a veth enslaved to it, its
/// default route via the gateway; `ip_forward=1` in the node. No rule of
/// any kind: the caller adds its own.
pub fn build_bridge_node(lab: &Lab, pods: &[(String, Ipv4Addr, String)]) -> Result<()> {
    let node_ns = lab.node_netns.clone();
    let lab = lab.clone();
    let pods = pods.to_vec();
    ns::block_on(async move {
        lab.create().await?;
        let node = Netns::open(&lab.node_netns)?;
        let nl = Netlink::connect(&node).await?;
        // ip link add cni0 type bridge; ip addr add 10.201.0.1/24 dev cni0; up
        nl.handle()
            .link()
            .add(LinkBridge::new(BRIDGE).build())
            .execute()
            .await
            .context("ip link add cni0 type bridge")?;
        let br = nl
            .link_by_name(BRIDGE)
            .await?
            .context("cni0 right after creating it")?;
        nl.add_address(br.index, GATEWAY, 24).await?;
        nl.set_up(br.index).await?;
        for (pod, addr, pod_ns_name) in &pods {
            ns::check_ours(pod_ns_name)?;
            let pod_ns = Netns::create(pod_ns_name).await?;
            let host_if = format!("veth-{pod}");
            nl.add_veth(&host_if, "eth0", &pod_ns).await?;
            let host = nl
                .link_by_name(&host_if)
                .await?
                .with_context(|| format!("{host_if} right after creating it"))?;
            // ip link set veth-POD master cni0
            nl.handle()
                .link()
                .change(
                    LinkUnspec::new_with_index(host.index)
                        .controller(br.index)
                        .build(),
                )
                .execute()
                .await
                .with_context(|| format!("ip link set {host_if} master cni0"))?;
            nl.set_up(host.index).await?;
            let pod_nl = Netlink::connect(&pod_ns).await?;
            let eth0 = pod_nl
                .link_by_name("eth0")
                .await?
                .with_context(|| format!("eth0 in {pod_ns_name}"))?;
            pod_nl.add_address(eth0.index, *addr, 24).await?;
            pod_nl.set_up(eth0.index).await?;
            pod_nl
                .replace_route(&Route {
                    dst: Ipv4Net::default(),
                    gateway: Some(GATEWAY),
                    oif: Some(eth0.index),
                    src: None,
                    scope_link: false,
                    onlink: false,
                })
                .await?;
        }
        anyhow::Ok(())
    })?;
    ns::sysctl(&node_ns, "ipv4/ip_forward", "1")
}

impl Setup for Classic {
    fn kind(&self) -> SetupKind {
        SetupKind::Classic
    }

    fn build(&mut self) -> Result<()> {
        for ns in [&self.lab.node_netns, &self.lab.lan_netns] {
            ns::check_ours(ns)?;
        }
        self.built = true;
        let lab = self.lab.clone();
        let pods: Vec<(String, Ipv4Addr, String)> = PODS
            .iter()
            .map(|(p, a)| (p.to_string(), *a, self.pod_ns(p)))
            .collect();
        build_bridge_node(&lab, &pods)?;
        let args: Vec<&str> = self.masquerade.iter().map(String::as_str).collect();
        self.iptables(&args)?;
        let rules = self.iptables(&["-t", "nat", "-S", "POSTROUTING"])?;
        if !rules.contains("MASQUERADE") {
            bail!("the MASQUERADE rule is missing after adding it: {rules}");
        }
        let node_addr = self.lab.node_addr.addr().to_string();
        let blue = format!("{}:{FORWARD_PORT}", PODS[1].1);
        let port = FORWARD_PORT.to_string();
        let denied = DENIED_SOURCE.to_string();
        let mut rules: Vec<Vec<&str>> = ["tcp", "udp"]
            .into_iter()
            .map(|proto| {
                vec![
                    "-t",
                    "nat",
                    "-A",
                    "PREROUTING",
                    "-d",
                    &node_addr,
                    "-p",
                    proto,
                    "--dport",
                    &port,
                    "-j",
                    "DNAT",
                    "--to-destination",
                    &blue,
                ]
            })
            .collect();
        rules.push(vec![
            "-t",
            "raw",
            "-A",
            "PREROUTING",
            "-s",
            &denied,
            "-j",
            "DROP",
        ]);
        for rule in rules {
            self.iptables(&rule)?;
            self.rules.push(format!("iptables {}", rule.join(" ")));
        }
        super::add_denied_source(&self.lab)?;
        self.bridge_nf = ns::read_sysctl(self.node_ns(), "bridge/bridge-nf-call-iptables").ok();
        Ok(())
    }

    fn teardown(&mut self) {
        if std::mem::take(&mut self.built) {
            let lab = self.lab.clone();
            let pods: Vec<String> = PODS.iter().map(|(p, _)| self.pod_ns(p)).collect();
            ns::block_on(async move {
                ns::delete_all(&pods).await;
                // The node namespace takes cni0, the veths, the iptables
                // rules and its conntrack table with it.
                lab.destroy().await;
            });
        }
    }

    fn endpoints(&self, scenario: Scenario) -> Result<Endpoints, String> {
        Ok(match scenario {
            Scenario::PodToPod => Endpoints {
                client_ns: self.pod_ns("red"),
                server_ns: self.pod_ns("blue"),
                server_addr: PODS[1].1,
                forward: None,
            },
            Scenario::PodToLan => Endpoints {
                client_ns: self.pod_ns("red"),
                server_ns: self.lab.lan_netns.clone(),
                server_addr: self.lab.lan_addr.addr(),
                forward: None,
            },
            Scenario::LanToPod => Endpoints {
                client_ns: self.lab.lan_netns.clone(),
                server_ns: self.pod_ns("blue"),
                server_addr: PODS[1].1,
                forward: Some(super::forward_target(&self.lab)),
            },
        })
    }

    /// The packet counter of the raw table's DROP rule
    /// (`iptables -t raw -L PREROUTING -v -x -n`).
    fn denied_drops(&self) -> Result<u64, String> {
        let out = self
            .iptables(&["-t", "raw", "-L", "PREROUTING", "-v", "-x", "-n"])
            .map_err(|e| format!("{e:#}"))?;
        out.lines()
            .find(|l| l.contains("DROP") && l.contains(&DENIED_SOURCE.to_string()))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("no DROP rule for {DENIED_SOURCE} in:\n{out}"))
    }

    fn add_routes(&mut self, n: usize) -> Result<String, String> {
        self.routes = n;
        super::add_node_routes(self.node_ns(), UPLINK, self.lab.lan_addr.addr(), n)
            .map_err(|e| format!("{e:#}"))?;
        let total = super::route_count(self.node_ns()).map_err(|e| format!("{e:#}"))?;
        Ok(format!(
            "{} `ip route` entries via the LAN host ({} routes in the node's main table)",
            thousands(n as u64),
            thousands(total as u64)
        ))
    }

    fn remove_routes(&mut self) -> Result<()> {
        let n = std::mem::take(&mut self.routes);
        super::remove_node_routes(self.node_ns(), n)
    }

    fn prepare_conntrack(&mut self) -> Result<(), String> {
        ns::sysctl(
            self.node_ns(),
            "netfilter/nf_conntrack_udp_timeout",
            LONG_UDP_TIMEOUT,
        )
        .map_err(|e| format!("{e:#}"))
    }

    fn conntrack_count(&self) -> Result<u64, String> {
        ns::read_sysctl(self.node_ns(), "netfilter/nf_conntrack_count")
            .map_err(|e| format!("{e:#}"))?
            .trim()
            .parse()
            .map_err(|e| format!("nf_conntrack_count: {e}"))
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "node netns {} (uplink {UPLINK} {}) ══ veth ══ LAN host netns {} ({LAN_IFNAME} {})",
                self.lab.node_netns, self.lab.node_addr, self.lab.lan_netns, self.lab.lan_addr
            ),
            format!(
                "bridge {BRIDGE} {GATEWAY}/24 in the node; net.ipv4.ip_forward=1; \
                 net.bridge.bridge-nf-call-iptables={} (default)",
                self.bridge_nf.as_deref().unwrap_or("?")
            ),
        ];
        for (pod, addr) in PODS {
            lines.push(format!(
                "pod {pod}: netns {} eth0 {addr}/24, default via {GATEWAY}; veth-{pod} master {BRIDGE}",
                self.pod_ns(pod)
            ));
        }
        lines.push(format!("iptables {}", self.masquerade.join(" ")));
        lines.extend(self.rules.iter().cloned());
        lines
    }
}
