//! netpath's datapath: the same node + LAN host namespaces (a [`Lab`]) and
//! the same two pods, built by [`netpath::reconcile::apply`] from a
//! configuration, exactly as `netpath apply` would.
//!
//! The configuration is written as TOML (the format users write), so a new
//! netpath option — port-forwards, services — is a line in
//! [`Netpath::config_toml`], and the scenarios that need it start producing
//! numbers as soon as the datapath serves them: the runner probes every
//! scenario with a TCP connect first and reports `null` with the reason
//! while it fails.
//!
//! Two instances are built: [`SetupKind::Netpath`] as netpath is configured
//! by default (`xdp = "off"`: TC programs only), and [`SetupKind::NetpathXdp`]
//! with its XDP program on the uplink (`xdp = "native"`: the prefilter and
//! the fast path of established inbound flows), so the report shows what XDP
//! adds or costs on this machine's veth uplink. The service-scale group
//! builds a third, with `[[services]]` ([`Netpath::for_services`]).

use std::{fs, net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, Result};
use netpath::{
    config::Config,
    datapath::{NodeMaps, PinDir},
    demo::lab::{LAN_IFNAME, Lab, UPLINK},
    reconcile,
};

use super::{BpfPins, DENIED_SOURCE, Endpoints, FORWARD_PORT, Scenario, Setup, SetupKind};
use crate::{
    condition::thousands,
    ns::{self, Names},
};

/// The pod CIDR: the same as the classic setup's, so both carry the same
/// addresses.
pub const POD_CIDR: &str = "10.201.0.0/24";

/// SNAT the way the classic setup does it: pod traffic leaving through the
/// uplink is masqueraded (`[[masquerade]]`, source = the pod CIDR, out = the
/// uplink), pods' default route goes via the LAN host (`node.uplink.gateway`),
/// and idle UDP flows live as long as in the classic node during the
/// conntrack conditions. Tried first; a netpath whose configuration does not
/// know these keys yet falls back to [`BASE_ONLY`].
pub const SNAT_UPLINK_TOML: &str = "gateway = \"192.168.50.1\"\n";
pub const SNAT_TOML: &str = "\n[[masquerade]]\n\n[conntrack]\nudp_timeout = 3600\n";
/// What the notes say when the fallback was used.
pub const BASE_ONLY: &str = "netpath's configuration has no SNAT keys ([[masquerade]], node.uplink.gateway); built without them";

/// Why pod → LAN host has no numbers while the probe fails.
pub const NO_SNAT: &str = "netpath SNAT not available";

pub struct Netpath {
    kind: SetupKind,
    /// Namespace name prefix: `n` (default, TC), `x` (XDP), `s` (services).
    tag: &'static str,
    /// What the instance name adds to the run's (`""`, `-xdp`, `-svc`).
    instance_suffix: &'static str,
    /// `node.service_cidr`, when the instance has services.
    service_cidr: Option<&'static str>,
    lab: Lab,
    names: Names,
    /// Whether the SNAT keys were accepted.
    snat: bool,
    addresses: Vec<(String, Ipv4Addr)>,
    built: bool,
    routes: usize,
}

impl Netpath {
    /// `kind`: [`SetupKind::Netpath`] or [`SetupKind::NetpathXdp`].
    pub fn new(names: &Names, kind: SetupKind) -> Self {
        let (tag, instance_suffix) = if kind == SetupKind::NetpathXdp {
            ("x", "-xdp")
        } else {
            ("n", "")
        };
        Self::build_with(names, kind, tag, instance_suffix, None)
    }

    /// The service-scale group's instance: the default configuration (XDP
    /// off) with `service_cidr`, in namespaces of its own (`s-*`), to which
    /// [`Netpath::apply_services`] adds services.
    pub fn for_services(names: &Names, service_cidr: &'static str) -> Self {
        Self::build_with(names, SetupKind::Netpath, "s", "-svc", Some(service_cidr))
    }

    fn build_with(
        names: &Names,
        kind: SetupKind,
        tag: &'static str,
        instance_suffix: &'static str,
        service_cidr: Option<&'static str>,
    ) -> Self {
        Self {
            kind,
            tag,
            instance_suffix,
            service_cidr,
            lab: Lab::new(
                names.ns(&format!("{tag}-node")),
                names.ns(&format!("{tag}-lan")),
            ),
            names: names.clone(),
            snat: false,
            addresses: Vec::new(),
            built: false,
            routes: 0,
        }
    }

    pub fn instance(&self) -> String {
        format!("{}{}", self.names.instance(), self.instance_suffix)
    }

    /// The node's XDP mode.
    fn xdp(&self) -> &'static str {
        if self.kind == SetupKind::NetpathXdp {
            "native"
        } else {
            "off"
        }
    }

    /// The configuration the setup applies, as TOML, with or without the
    /// SNAT keys, with `routes` extra `[[routes]]` (172.16.x.0/24 via the LAN
    /// host; needs the SNAT-era keys).
    pub fn config_toml(&self, snat: bool, routes: usize) -> String {
        let mut text = format!(
            "[node]\n\
             name = \"{instance}\"\n\
             netns = \"{node}\"\n\
             pod_cidr = \"{POD_CIDR}\"\n\
             pod_netns_prefix = \"{prefix}\"\n\
             xdp = \"{xdp}\"\n\
             {deny}\n\
             [node.uplink]\n\
             name = \"{UPLINK}\"\n\
             {uplink_extra}\n\
             [[pods]]\n\
             name = \"red\"\n\n\
             [[pods]]\n\
             name = \"blue\"\n\n\
             [[port_forwards]]\n\
             proto = \"tcp\"\n\
             port = {FORWARD_PORT}\n\
             to = \"blue\"\n\
             to_port = {FORWARD_PORT}\n\n\
             [[port_forwards]]\n\
             proto = \"udp\"\n\
             port = {FORWARD_PORT}\n\
             to = \"blue\"\n\
             to_port = {FORWARD_PORT}\n\
             {extra}",
            instance = self.instance(),
            node = self.lab.node_netns,
            prefix = self.names.ns(&format!("{}-", self.tag)),
            xdp = self.xdp(),
            // The prefilter is XDP's: only the XDP instance has one.
            deny = match (self.kind, self.service_cidr) {
                (SetupKind::NetpathXdp, _) => format!("deny_sources = [\"{DENIED_SOURCE}/32\"]\n"),
                (_, Some(cidr)) => format!("service_cidr = \"{cidr}\"\n"),
                _ => String::new(),
            },
            uplink_extra = if snat { SNAT_UPLINK_TOML } else { "" },
            extra = if snat { SNAT_TOML } else { "" },
        );
        for i in 0..routes {
            text += &format!(
                "\n[[routes]]\ndst = \"{}\"\nvia = \"{}\"\n",
                super::scale_route(i),
                self.lab.lan_addr.addr()
            );
        }
        text
    }

    /// The configuration: with the SNAT keys if this netpath knows them.
    fn config(&self) -> Result<(Config, bool)> {
        let with = self.config_toml(true, 0);
        match Config::from_toml_str(&with).and_then(|c| c.validate().map(|()| c)) {
            Ok(c) => Ok((c, true)),
            Err(snat_err) => {
                let text = self.config_toml(false, 0);
                let c = Config::from_toml_str(&text)
                    .with_context(|| format!("the bench's netpath configuration:\n{text}"))?;
                log::info!("netpath SNAT keys refused ({snat_err}); {BASE_ONLY}");
                Ok((c, false))
            }
        }
    }

    fn pod_ns(&self, pod: &str) -> String {
        self.names.ns(&format!("{}-{pod}", self.tag))
    }

    fn address(&self, pod: &str) -> Result<Ipv4Addr, String> {
        self.addresses
            .iter()
            .find(|(p, _)| p == pod)
            .map(|(_, a)| *a)
            .ok_or_else(|| format!("netpath did not build pod {pod}"))
    }

    /// Applies the configuration again with `routes` extra routes.
    fn reapply(&self, routes: usize) -> Result<()> {
        let text = self.config_toml(self.snat, routes);
        let config = Config::from_toml_str(&text).context("the routes configuration")?;
        ns::block_on(reconcile::apply(&config))
            .with_context(|| format!("netpath apply with {routes} routes"))?;
        Ok(())
    }

    fn pins(&self) -> PinDir {
        PinDir::for_instance(&self.instance())
    }

    /// The node and LAN host namespaces.
    pub fn lab(&self) -> &Lab {
        &self.lab
    }

    /// The namespace of pod `pod`.
    pub fn pod_namespace(&self, pod: &str) -> String {
        self.pod_ns(pod)
    }

    /// The address netpath gave pod `pod`.
    pub fn pod_address(&self, pod: &str) -> Result<Ipv4Addr, String> {
        self.address(pod)
    }

    /// The pin directory of the instance.
    pub fn pin_dir(&self) -> PinDir {
        self.pins()
    }

    /// Applies the configuration with `services` (the built node's
    /// configuration plus `[[services]]`), as `netpath apply` does; returns
    /// how long `reconcile::apply` took (the configuration is parsed
    /// before, as a running daemon has it).
    pub fn apply_services(
        &self,
        services: Vec<netpath::config::ServiceConfig>,
    ) -> Result<std::time::Duration> {
        let text = self.config_toml(self.snat, 0);
        let mut config = Config::from_toml_str(&text).context("the services configuration")?;
        let n = services.len();
        config.services = services;
        let t = std::time::Instant::now();
        ns::block_on(reconcile::apply(&config))
            .with_context(|| format!("netpath apply with {n} services"))?;
        Ok(t.elapsed())
    }
}

fn list(dir: PathBuf) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    v.sort();
    v
}

impl Setup for Netpath {
    fn kind(&self) -> SetupKind {
        self.kind
    }

    fn build(&mut self) -> Result<()> {
        for ns in [&self.lab.node_netns, &self.lab.lan_netns] {
            ns::check_ours(ns)?;
        }
        let (config, snat) = self.config()?;
        self.snat = snat;
        self.built = true;
        let lab = self.lab.clone();
        let report = ns::block_on(async move {
            lab.create().await?;
            anyhow::Ok(reconcile::apply(&config).await?)
        })?;
        super::add_denied_source(&self.lab)?;
        self.addresses = report.addresses.into_iter().collect();
        Ok(())
    }

    fn teardown(&mut self) {
        if std::mem::take(&mut self.built) {
            let instance = self.instance();
            let lab = self.lab.clone();
            ns::block_on(async move {
                if let Err(e) = reconcile::destroy(&instance).await {
                    log::warn!("destroy netpath instance {instance}: {e}");
                }
                lab.destroy().await;
            });
        }
    }

    fn endpoints(&self, scenario: Scenario) -> Result<Endpoints, String> {
        Ok(match scenario {
            Scenario::PodToPod if self.kind == SetupKind::NetpathXdp => {
                return Err(
                    "not measured: pod → pod never crosses the uplink, where XDP runs \
                     (the netpath column is the same datapath)"
                        .into(),
                );
            }
            Scenario::PodToPod => Endpoints {
                client_ns: self.pod_ns("red"),
                server_ns: self.pod_ns("blue"),
                server_addr: self.address("blue")?,
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
                server_addr: self.address("blue")?,
                forward: Some(super::forward_target(&self.lab)),
            },
        })
    }

    /// The XDP prefilter's drop counter (`drop_xdp_prefilter`, summed over
    /// CPUs). With XDP off nothing filters.
    fn denied_drops(&self) -> Result<u64, String> {
        if self.kind != SetupKind::NetpathXdp {
            return Err(
                "not applicable: the prefilter is part of the XDP program (XDP off)".into(),
            );
        }
        let maps = NodeMaps::open_pinned(&self.pins()).map_err(|e| e.to_string())?;
        maps.stat(netpath_common::Stat::DropXdpPrefilter)
            .map(|c| c.packets)
            .map_err(|e| e.to_string())
    }

    /// The XDP instance is there for the XDP comparison at baseline; the
    /// scaling conditions do not touch the uplink programs.
    fn applies(&self, condition: crate::condition::Condition) -> Result<(), String> {
        if self.kind == SetupKind::NetpathXdp && condition != crate::condition::Condition::Baseline
        {
            Err("not measured: the XDP instance is for the XDP comparison at baseline".into())
        } else {
            Ok(())
        }
    }

    /// netpath's own route map (`[[routes]]`, re-applied) when its
    /// configuration has routes; otherwise kernel routes in the node
    /// namespace.
    fn add_routes(&mut self, n: usize) -> Result<String, String> {
        self.routes = n;
        if self.snat {
            self.reapply(n).map_err(|e| format!("{e:#}"))?;
            let maps = NodeMaps::open_pinned(&self.pins()).map_err(|e| e.to_string())?;
            let have = maps.routes().map_err(|e| e.to_string())?.len();
            if have < n {
                return Err(format!(
                    "netpath apply with {n} [[routes]] left {have} entries in its route map"
                ));
            }
            Ok(format!(
                "{} `[[routes]]` via the LAN host, re-applied ({} entries in its route map)",
                thousands(n as u64),
                thousands(have as u64)
            ))
        } else {
            super::add_node_routes(&self.lab.node_netns, UPLINK, self.lab.lan_addr.addr(), n)
                .map_err(|e| format!("{e:#}"))?;
            Ok(format!(
                "{} kernel routes in the node (its configuration has no [[routes]])",
                thousands(n as u64)
            ))
        }
    }

    fn remove_routes(&mut self) -> Result<()> {
        let n = std::mem::take(&mut self.routes);
        if self.snat {
            self.reapply(0)
        } else {
            super::remove_node_routes(&self.lab.node_netns, n)
        }
    }

    fn prepare_conntrack(&mut self) -> Result<(), String> {
        // Nothing expires entries while no netpath daemon runs its garbage
        // collector, so idle flows stay in the map.
        Ok(())
    }

    fn conntrack_count(&self) -> Result<u64, String> {
        let maps = NodeMaps::open_pinned(&self.pins()).map_err(|e| e.to_string())?;
        maps.conntrack()
            .map(|v| v.len() as u64)
            .map_err(|e| e.to_string())
    }

    fn bpf_pins(&self) -> BpfPins {
        let pins = self.pins();
        BpfPins {
            maps: list(pins.root().join("maps")),
            progs: list(pins.root().join("progs")),
        }
    }

    fn describe(&self) -> Vec<String> {
        let mut lines = vec![format!(
            "node netns {} (uplink {UPLINK} {}) ══ veth ══ LAN host netns {} ({LAN_IFNAME} {})",
            self.lab.node_netns, self.lab.node_addr, self.lab.lan_netns, self.lab.lan_addr
        )];
        for (pod, addr) in &self.addresses {
            lines.push(format!(
                "pod {pod}: netns {} eth0 {addr}/32, built by netpath::reconcile::apply",
                self.pod_ns(pod)
            ));
        }
        if !self.snat {
            lines.push(BASE_ONLY.into());
        }
        lines.push("configuration (netpath apply):".into());
        lines.extend(
            self.config_toml(self.snat, 0)
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| format!("  {l}")),
        );
        lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_parses_and_validates() {
        let names = Names {
            prefix: "npb-4242".into(),
        };
        let np = Netpath::new(&names, SetupKind::Netpath);
        let (c, _snat) = np.config().unwrap();
        c.validate().unwrap();
        assert_eq!(c.node.name, "npb-4242");
        assert_eq!(c.node.netns.as_deref(), Some("npb-4242-n-node"));
        assert_eq!(c.pod_netns(&c.pods[0]), "npb-4242-n-red");
        assert_eq!(c.pods.len(), 2);
        let text = np.config_toml(true, 3);
        assert_eq!(text.matches("[[routes]]").count(), 3);
        assert!(text.contains("dst = \"172.16.2.0/24\""));
        assert!(text.contains("xdp = \"off\""), "the default: TC only");
        assert!(!text.contains("deny_sources"));
        let xdp = Netpath::new(&names, SetupKind::NetpathXdp);
        let (c, _) = xdp.config().unwrap();
        assert_eq!(c.node.name, "npb-4242-xdp");
        assert_eq!(c.pod_netns(&c.pods[0]), "npb-4242-x-red");
        let text = xdp.config_toml(true, 0);
        assert!(text.contains("xdp = \"native\""));
        assert!(text.contains("deny_sources"));
        let svc = Netpath::for_services(&names, "10.96.0.0/15");
        let (c, _) = svc.config().unwrap();
        assert_eq!(c.node.name, "npb-4242-svc");
        assert_eq!(c.node.service_cidr, Some("10.96.0.0/15".parse().unwrap()));
        assert_eq!(c.pod_netns(&c.pods[0]), "npb-4242-s-red");
    }
}
