//! The three nodes of the service-scale group, each the lab's node and LAN
//! host namespaces with pods `red` and `blue`, the LAN host routing the
//! service range through the node:
//!
//! - kube-proxy, iptables mode: the CNI `bridge` wiring of the classic
//!   setup ([`crate::topology::classic::build_bridge_node`]), no other rule,
//!   and the services as kube-proxy writes them, in one `iptables-restore
//!   --noflush` ([`super::rules::iptables_restore`]);
//! - kube-proxy, nftables mode: the same wiring, the services in one `nft
//!   -f` ([`super::rules::nft_install`]);
//! - netpath: its default configuration (XDP off) with `service_cidr`, the
//!   services as `[[services]]`, applied by `netpath::reconcile::apply`.

use std::{
    net::{Ipv4Addr, SocketAddrV4},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use ipnet::Ipv4Net;
use netpath::{
    config::{L4Proto, ServiceConfig, SessionAffinity, Target},
    demo::lab::Lab,
};
use serde::{Deserialize, Serialize};

use super::rules::{self, Service};
use crate::{
    ns::{self, Names},
    topology::{
        Setup, classic,
        netpath::{Netpath, POD_CIDR},
    },
};

/// The range the VIPs come from (`10.96.0.0/16`, then `10.97.0.0/16`).
pub const SERVICE_CIDR: &str = "10.96.0.0/15";
/// The port every service listens on and its pods' port.
pub const SERVICE_PORT: u16 = 80;
/// A second port the pods answer on: the changed service's new endpoint
/// (`blue:81` instead of `blue:80`).
pub const OTHER_PORT: u16 = 81;
/// Pods of every node, in the order of a service's endpoints.
pub const PODS: [&str; 2] = ["red", "blue"];
/// How long an `iptables-restore` or `nft -f` may take (30,000 services
/// take minutes with iptables-nft).
const RULES_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// Which datapath a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// kube-proxy's iptables mode.
    Iptables,
    /// kube-proxy's nftables mode.
    Nftables,
    /// netpath's `[[services]]`.
    Netpath,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Iptables, Mode::Nftables, Mode::Netpath];

    pub fn id(self) -> &'static str {
        match self {
            Mode::Iptables => "iptables",
            Mode::Nftables => "nftables",
            Mode::Netpath => "netpath",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Mode::Iptables => "kube-proxy iptables",
            Mode::Nftables => "kube-proxy nftables",
            Mode::Netpath => "netpath",
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Mode::Iptables => "ki",
            Mode::Nftables => "kn",
            Mode::Netpath => "s",
        }
    }
}

/// The VIP of service `i`: `10.96.0.1`, `10.96.0.2`, ... (past
/// `10.96.255.255` into `10.97.0.0/16`).
pub fn vip(i: usize) -> Ipv4Addr {
    let base = u32::from(Ipv4Addr::new(10, 96, 0, 1));
    Ipv4Addr::from(base + u32::try_from(i).expect("fewer than 2^32 services"))
}

/// `n` services of two endpoints each, the pods at `pods` on
/// [`SERVICE_PORT`].
pub fn services(n: usize, pods: [Ipv4Addr; 2]) -> Vec<Service> {
    (0..n)
        .map(|index| Service {
            index,
            vip: vip(index),
            port: SERVICE_PORT,
            endpoints: pods
                .iter()
                .map(|a| SocketAddrV4::new(*a, SERVICE_PORT))
                .collect(),
        })
        .collect()
}

/// Service `s` with its second endpoint moved to [`OTHER_PORT`]: the
/// change the group times.
pub fn changed(s: &Service) -> Service {
    let mut new = s.clone();
    if let Some(ep) = new.endpoints.last_mut() {
        *ep = SocketAddrV4::new(*ep.ip(), OTHER_PORT);
    }
    new
}

/// What installing the services did.
#[derive(Clone, Debug)]
pub struct Installed {
    pub seconds: f64,
    /// What was installed, for the report (`210,007 rules in 90,004
    /// chains`).
    pub objects: String,
}

/// One node of the group.
pub trait ScaleNode {
    fn mode(&self) -> Mode;
    /// Creates the namespaces, pods and base rules; on error the caller
    /// still calls [`ScaleNode::teardown`].
    fn build(&mut self) -> Result<()>;
    fn teardown(&mut self);
    /// The LAN host, where the clients run.
    fn client_ns(&self) -> String;
    /// The pods' namespaces, in [`PODS`] order.
    fn pod_namespaces(&self) -> Vec<String>;
    /// The pods' addresses, in [`PODS`] order.
    fn pod_addresses(&self) -> Result<[Ipv4Addr; 2]>;
    /// Installs `services` (none before), timed.
    fn install(&mut self, services: &[Service]) -> Result<Installed>;
    /// Changes `all[i]` into `new` (the others stay), timed: seconds.
    fn change(&mut self, all: &[Service], i: usize, new: &Service) -> Result<f64>;
    /// netpath's load-balancer maps' `bytes_memlock` (frontends, backends,
    /// the Maglev map and every table), if this node has BPF maps.
    fn memlock(&self) -> Option<Result<u64>> {
        None
    }
    /// How it is wired, for the report.
    fn describe(&self) -> Vec<String>;
}

/// A kube-proxy node: the CNI `bridge` wiring and kube-proxy's rules.
pub struct KubeNode {
    mode: Mode,
    lab: Lab,
    names: Names,
    built: bool,
}

/// Pods of the kube nodes (the classic setup's addresses).
const KUBE_PODS: [Ipv4Addr; 2] = [classic::PODS[0].1, classic::PODS[1].1];

impl KubeNode {
    /// `mode`: [`Mode::Iptables`] or [`Mode::Nftables`].
    pub fn new(names: &Names, mode: Mode) -> Self {
        let tag = mode.tag();
        Self {
            mode,
            lab: Lab::new(
                names.ns(&format!("{tag}-node")),
                names.ns(&format!("{tag}-lan")),
            ),
            names: names.clone(),
            built: false,
        }
    }

    fn pod_ns(&self, pod: &str) -> String {
        self.names.ns(&format!("{}-{pod}", self.mode.tag()))
    }

    /// Runs the rules tool on `text` (written to a file first, as
    /// kube-proxy pipes it), timed.
    fn load(&self, text: &str) -> Result<f64> {
        let path: PathBuf =
            std::env::temp_dir().join(format!("{}-{}.rules", self.names.prefix, self.mode.id()));
        std::fs::write(&path, text).with_context(|| format!("write {}", path.display()))?;
        let file = path.display().to_string();
        let (program, args): (&str, Vec<&str>) = match self.mode {
            Mode::Iptables => ("iptables-restore", vec!["--noflush", &file]),
            _ => ("nft", vec!["-f", &file]),
        };
        let t = Instant::now();
        let res = ns::run_command(&self.lab.node_netns, program, &args, RULES_TIMEOUT);
        let took = t.elapsed().as_secs_f64();
        let _ = std::fs::remove_file(&path);
        res?;
        Ok(took)
    }
}

/// `1234` → `1,234`.
fn count(n: usize) -> String {
    crate::condition::thousands(n as u64)
}

impl ScaleNode for KubeNode {
    fn mode(&self) -> Mode {
        self.mode
    }

    fn build(&mut self) -> Result<()> {
        for n in [&self.lab.node_netns, &self.lab.lan_netns] {
            ns::check_ours(n)?;
        }
        self.built = true;
        let pods: Vec<(String, Ipv4Addr, String)> = PODS
            .iter()
            .zip(KUBE_PODS)
            .map(|(p, a)| ((*p).to_owned(), a, self.pod_ns(p)))
            .collect();
        classic::build_bridge_node(&self.lab, &pods)?;
        crate::topology::route_via_node(&self.lab, SERVICE_CIDR.parse::<Ipv4Net>()?)
    }

    fn teardown(&mut self) {
        if std::mem::take(&mut self.built) {
            let lab = self.lab.clone();
            let pods: Vec<String> = PODS.iter().map(|p| self.pod_ns(p)).collect();
            ns::block_on(async move {
                ns::delete_all(&pods).await;
                lab.destroy().await;
            });
        }
    }

    fn client_ns(&self) -> String {
        self.lab.lan_netns.clone()
    }

    fn pod_namespaces(&self) -> Vec<String> {
        PODS.iter().map(|p| self.pod_ns(p)).collect()
    }

    fn pod_addresses(&self) -> Result<[Ipv4Addr; 2]> {
        Ok(KUBE_PODS)
    }

    fn install(&mut self, services: &[Service]) -> Result<Installed> {
        let (text, objects) = match self.mode {
            Mode::Iptables => {
                let text = rules::iptables_restore(services, true, &[]);
                let n_rules = text.lines().filter(|l| l.starts_with("-A ")).count();
                let n_chains = text.lines().filter(|l| l.starts_with(':')).count();
                let o = format!(
                    "{} rules in {} chains of the nat table",
                    count(n_rules),
                    count(n_chains)
                );
                (text, o)
            }
            _ => {
                let text = rules::nft_install(services);
                let n_rules = text.lines().filter(|l| l.starts_with("add rule ")).count();
                let n_chains = text.lines().filter(|l| l.starts_with("add chain ")).count();
                let n_elems = text
                    .lines()
                    .filter(|l| l.starts_with("add element "))
                    .count();
                let o = format!(
                    "{} rules in {} chains, {} elements of the service-ips map",
                    count(n_rules),
                    count(n_chains),
                    count(n_elems)
                );
                (text, o)
            }
        };
        let seconds = self.load(&text)?;
        Ok(Installed { seconds, objects })
    }

    fn change(&mut self, all: &[Service], i: usize, new: &Service) -> Result<f64> {
        let old = all.get(i).context("no such service")?;
        let text = match self.mode {
            Mode::Iptables => {
                // kube-proxy's iptables mode rewrites every chain.
                let mut now = all.to_vec();
                now[i] = new.clone();
                rules::iptables_restore(&now, false, &rules::stale_iptables_chains(old, new))
            }
            _ => rules::nft_change(old, new),
        };
        self.load(&text)
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "node netns {} (uplink {} {}) ══ veth ══ LAN host netns {} (eth0 {}, route {SERVICE_CIDR} via {})",
                self.lab.node_netns,
                netpath::demo::lab::UPLINK,
                self.lab.node_addr,
                self.lab.lan_netns,
                self.lab.lan_addr,
                self.lab.node_addr.addr()
            ),
            format!(
                "bridge {} {}/24 in the node (the classic setup's wiring); net.ipv4.ip_forward=1",
                classic::BRIDGE,
                classic::GATEWAY
            ),
        ];
        for (pod, addr) in PODS.iter().zip(KUBE_PODS) {
            lines.push(format!(
                "pod {pod}: netns {} eth0 {addr}/24, answering on :{SERVICE_PORT} and :{OTHER_PORT}",
                self.pod_ns(pod)
            ));
        }
        lines.push(match self.mode {
            Mode::Iptables => {
                "services: iptables-restore --noflush of kube-proxy's nat chains (KUBE-SERVICES, \
                 KUBE-SVC-*, KUBE-SEP-*, KUBE-MARK-MASQ, KUBE-POSTROUTING; PREROUTING and OUTPUT \
                 jump to KUBE-SERVICES); a change rewrites them all"
                    .to_owned()
            }
            _ => "services: nft -f of kube-proxy's table ip kube-proxy (service-ips verdict map, \
                  service-* and endpoint-* chains); a change is a transaction on the changed \
                  service's chains"
                .to_owned(),
        });
        lines
    }
}

/// netpath with `[[services]]`.
pub struct NetpathNode {
    np: Netpath,
    built: bool,
}

impl NetpathNode {
    pub fn new(names: &Names) -> Self {
        Self {
            np: Netpath::for_services(names, SERVICE_CIDR),
            built: false,
        }
    }

    /// The `[[services]]` of `services` (their pods named, target port
    /// [`SERVICE_PORT`]; an endpoint on another port as `address:port`).
    fn config(&self, services: &[Service]) -> Result<Vec<ServiceConfig>> {
        let pods = self.pod_addresses()?;
        Ok(services
            .iter()
            .map(|s| ServiceConfig {
                name: format!("s{}", s.index),
                vip: s.vip,
                port: s.port,
                proto: L4Proto::Tcp,
                backends: s
                    .endpoints
                    .iter()
                    .map(|ep| match pods.iter().position(|a| a == ep.ip()) {
                        Some(i) if ep.port() == SERVICE_PORT => Target::Pod(PODS[i].to_owned()),
                        _ => Target::Address(*ep),
                    })
                    .collect(),
                target_port: Some(SERVICE_PORT),
                affinity: SessionAffinity::None,
                affinity_timeout: None,
            })
            .collect())
    }
}

impl ScaleNode for NetpathNode {
    fn mode(&self) -> Mode {
        Mode::Netpath
    }

    fn build(&mut self) -> Result<()> {
        self.built = true;
        self.np.build()?;
        crate::topology::route_via_node(self.np.lab(), SERVICE_CIDR.parse::<Ipv4Net>()?)
    }

    fn teardown(&mut self) {
        if std::mem::take(&mut self.built) {
            self.np.teardown();
        }
    }

    fn client_ns(&self) -> String {
        self.np.lab().lan_netns.clone()
    }

    fn pod_namespaces(&self) -> Vec<String> {
        PODS.iter().map(|p| self.np.pod_namespace(p)).collect()
    }

    fn pod_addresses(&self) -> Result<[Ipv4Addr; 2]> {
        let a = |p| self.np.pod_address(p).map_err(anyhow::Error::msg);
        Ok([a(PODS[0])?, a(PODS[1])?])
    }

    fn install(&mut self, services: &[Service]) -> Result<Installed> {
        let config = self.config(services)?;
        let took = self.np.apply_services(config)?;
        let backends: usize = services.iter().map(|s| s.endpoints.len()).sum();
        Ok(Installed {
            seconds: took.as_secs_f64(),
            objects: format!(
                "{} frontends, {} backends, {} Maglev tables",
                count(services.len()),
                count(backends),
                count(services.len())
            ),
        })
    }

    fn change(&mut self, all: &[Service], i: usize, new: &Service) -> Result<f64> {
        let mut now = all.to_vec();
        if i >= now.len() {
            bail!("no service {i}");
        }
        now[i] = new.clone();
        let config = self.config(&now)?;
        Ok(self.np.apply_services(config)?.as_secs_f64())
    }

    fn memlock(&self) -> Option<Result<u64>> {
        Some(crate::metrics::memory::lb_memlock(&self.np.pin_dir()))
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = self.np.describe();
        lines.push(format!(
            "LAN host: route {SERVICE_CIDR} via the node; pods answer on :{SERVICE_PORT} and \
             :{OTHER_PORT}; pod CIDR {POD_CIDR}"
        ));
        lines.push(
            "services: [[services]] (name sN, vip, port 80, backends [\"red\", \"blue\"], \
             target_port 80), applied with netpath::reconcile::apply; a change applies the \
             configuration with one service's backends changed"
                .to_owned(),
        );
        lines
    }
}
