//! `netpath demo` (what `cargo xtask run` starts): the classic two-namespace
//! exercise, `red` and `blue`, wired by netpath inside a lab node namespace
//! with a LAN host behind its uplink. The pods reach the LAN host through
//! the datapath's masquerade (the LAN host has no route to the pods), and
//! the node's kernel forwards nothing and has no iptables rule.

use std::fmt::Write as _;

use crate::{
    config::Config,
    controller::{self, ApplyReport, ControllerError},
    datapath::PinDir,
    lab::{Lab, LabError, UPLINK},
};

/// The demo's node namespace.
pub const NODE_NETNS: &str = "netpath-demo-node";
/// The demo's LAN host namespace.
pub const LAN_NETNS: &str = "netpath-demo-lan";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Controller(#[from] ControllerError),
}

/// The demo's lab and configuration.
pub fn lab_and_config() -> (Lab, Config) {
    let config = Config::demo();
    let lab = Lab::new(NODE_NETNS, LAN_NETNS);
    (lab, config)
}

/// Removes whatever an earlier demo left behind (a crashed run).
pub async fn clean(lab: &Lab, config: &Config) -> Result<(), DemoError> {
    controller::destroy(&config.node.name).await?;
    lab.destroy().await;
    Ok(())
}

/// Builds the demo: the lab, then the pods through `apply`.
pub async fn up(lab: &Lab, config: &Config) -> Result<ApplyReport, DemoError> {
    controller::check_privileges()?;
    controller::check_kernel()?;
    clean(lab, config).await?;
    lab.create().await?;
    match controller::apply(config).await {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = clean(lab, config).await;
            Err(e.into())
        }
    }
}

/// What the demo built and what to try, for the terminal.
pub fn describe(lab: &Lab, config: &Config, report: &ApplyReport) -> String {
    let pins = PinDir::for_instance(&config.node.name);
    let node = &lab.node_netns;
    let mut s = String::new();
    let _ = writeln!(s, "netpath demo is up.\n");
    let _ = writeln!(
        s,
        "  node namespace  {node}  (uplink {UPLINK} {}, gateway {} on np0)",
        lab.node_addr,
        config.gateway()
    );
    let _ = writeln!(
        s,
        "  LAN host        {}  (eth0 {})",
        lab.lan_netns, lab.lan_addr
    );
    for pod in &config.pods {
        let addr = report.addresses.get(&pod.name).copied();
        let _ = writeln!(
            s,
            "  pod {:<10}  netns {:<20} eth0 {}/32  host side {}",
            pod.name,
            config.pod_netns(pod),
            addr.map(|a| a.to_string()).unwrap_or_default(),
            Config::host_ifname(pod),
        );
    }
    let _ = writeln!(s, "  pins            {}/", pins.root().display());
    let mut pods = config.pods.iter();
    if let (Some(a), Some(b)) = (pods.next(), pods.next()) {
        let (a_ns, b_addr) = (config.pod_netns(a), report.addresses.get(&b.name));
        let b_addr = b_addr.map(|a| a.to_string()).unwrap_or_default();
        let _ = writeln!(s, "\nTry (in another terminal, as root):\n");
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {b_addr}          # pod -> pod, forwarded by np_from_pod"
        );
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {}          # pod -> node (gateway)",
            config.gateway()
        );
        let _ = writeln!(
            s,
            "  ip netns exec {node} ping -c 3 {b_addr}   # node -> pod"
        );
        let _ = writeln!(
            s,
            "  ip netns exec {a_ns} ping -c 3 {}        # pod -> LAN host, masqueraded by the datapath",
            lab.lan_addr.addr()
        );
        let exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "netpath".into());
        let _ = writeln!(
            s,
            "  {exe} conntrack list --instance {}   # translated connections",
            config.node.name
        );
        let _ = writeln!(
            s,
            "  {exe} routes --instance {}   # route and masquerade maps",
            config.node.name
        );
        let _ = writeln!(
            s,
            "  {exe} stats --instance {}   # per-verdict counters",
            config.node.name
        );
        let _ = writeln!(s, "  {exe} endpoints --instance {}", config.node.name);
        let _ = writeln!(
            s,
            "  ip netns exec {node} iptables-save; ip netns exec {node} nft list ruleset   # empty"
        );
        let _ = writeln!(s, "  bpftool prog show name np_from_pod");
        let _ = writeln!(
            s,
            "  bpftool map dump pinned {}",
            pins.map(netpath_common::maps::ENDPOINTS).display()
        );
        let _ = writeln!(
            s,
            "  bpftool map dump pinned {}",
            pins.map(netpath_common::maps::STATS).display()
        );
        if let Some(pod) = config.pods.first() {
            let _ = writeln!(
                s,
                "  bpftool link show pinned {}   # the tcx link on {}",
                pins.ingress_link(&Config::host_ifname(pod)).display(),
                Config::host_ifname(pod)
            );
        }
    }
    let _ = writeln!(
        s,
        "\nExpired connections are collected every {}s. Press Ctrl-C to remove everything.",
        config.conntrack.gc_interval
    );
    s
}
