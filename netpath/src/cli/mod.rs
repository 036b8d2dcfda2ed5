//! The `netpath` command line: the verbs, in the spirit of `ip` and
//! `cilium-dbg`.
//!
//! * Verbs that change a node (`pod`, `route`, `masquerade`,
//!   `port-forward`, `service` `add|del`, `conntrack flush`, `apply -f` on
//!   a node a daemon serves) and `status` talk to the instance's daemon
//!   ([`crate::api`]); without one, they say so and how to start it.
//! * Verbs that read the datapath (`stats`, `conntrack list`, `routes`,
//!   `endpoints`, `service list`, `port-forward list`, `logs`, `monitor`)
//!   read the pins directly, like `bpftool`: they work while no daemon
//!   runs, which is when one debugs a node.
//!
//! Every verb that talks to a node takes `--instance NAME` (by default
//! the only instance of the machine); every list takes `-o json`.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};

use crate::{
    api::{Changed, Client, PodInfo, Request, Status},
    config::{
        Config, L4Proto, MasqueradeConfig, PodConfig, PortForwardConfig, RouteConfig,
        ServiceConfig, SessionAffinity, Target,
    },
    conntrack, daemon,
    datapath::{NodeMaps, PinDir},
    lb::{frontends, inspect},
    reconcile, render,
    resolve::DesiredNode,
    state::{STATE_ROOT, StateDir},
};

mod monitor;
mod node;
mod run;
pub use node::NodeCommand;

pub use run::run;

/// The verbs.
#[derive(Subcommand)]
pub enum Command {
    /// Make the node what the file says (create, recreate or delete pods;
    /// load and attach the datapath). Through the instance's daemon when
    /// one runs (the file is then its whole desired state: what the file
    /// lacks is removed, except pods runtimes attached through CNI);
    /// directly otherwise. Idempotent.
    Apply {
        #[arg(
            short = 'f',
            long = "file",
            visible_alias = "config",
            short_alias = 'c'
        )]
        file: PathBuf,
    },
    /// Check a configuration without changing anything.
    Validate {
        #[arg(
            short = 'f',
            long = "file",
            visible_alias = "config",
            short_alias = 'c'
        )]
        file: PathBuf,
    },
    /// Remove every pod, program, map and pin of an instance (stop its
    /// daemon first).
    Destroy {
        #[arg(long)]
        instance: String,
    },
    /// Who serves an instance, and how its pods are (through the daemon).
    Status(Target1),
    /// Add, delete or list pods (through the daemon).
    Pod {
        #[command(subcommand)]
        command: PodCommand,
    },
    /// Add, delete or list the cluster's other nodes (through the daemon).
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Add, delete or list routes for pod traffic (through the daemon).
    Route {
        #[command(subcommand)]
        command: RouteCommand,
    },
    /// Add, delete or list masquerade (SNAT) rules (through the daemon).
    Masquerade {
        #[command(subcommand)]
        command: MasqueradeCommand,
    },
    /// Port-forwards: node ports forwarded to pods.
    PortForward {
        #[command(subcommand)]
        command: PortForwardCommand,
    },
    /// Services: VIPs load-balanced over backends by Maglev.
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Inspect, collect or flush the connection table.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Print the datapath's counters (every verdict and drop reason).
    Stats(Target1),
    /// Print the endpoint map (local pods as the datapath sees them).
    Endpoints(Instance),
    /// Print the route and masquerade maps (what replaces `ip route` and
    /// `iptables -t nat` for pod traffic).
    Routes(Instance),
    /// Follow what the eBPF programs log (drops and their reasons), when they
    /// were loaded with `NETPATH_EBPF_LOG=debug`. Ctrl-C stops.
    Logs(Instance),
    /// Run the node daemon: apply the node's desired state, serve the API
    /// on /run/netpath/<instance>/api.sock, collect expired connections,
    /// re-apply the file on SIGHUP, stop on SIGINT/SIGTERM (the datapath
    /// stays in place).
    Daemon {
        /// The node's configuration (the desired state at first start).
        #[arg(short, long, required_unless_present = "cleanup")]
        config: Option<PathBuf>,
        /// Instead of running: remove everything the instance built (as
        /// `netpath destroy`), with its kept desired state.
        #[arg(long, requires = "instance")]
        cleanup: bool,
        /// The instance to clean up.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Build the two-pod demo in its own namespaces and run a daemon for
    /// it (with --nodes N: N nodes on a bridged LAN, two pods each, a
    /// daemon per node); Ctrl-C removes it.
    Demo {
        /// Build, print and tear down at once instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Build a cluster of this many nodes (2 to 16) instead of the
        /// two-pod demo.
        #[arg(long)]
        nodes: Option<u8>,
        /// With --nodes: `vxlan` for the VXLAN overlay (default: direct
        /// routing, `none`).
        #[arg(long, requires = "nodes", value_parser = parse_overlay)]
        overlay: Option<crate::config::cluster::ClusterMode>,
        /// With --nodes: the prefix of the demo's namespaces and instances
        /// (`<name>-lan`, `<name>-n1`, ...).
        #[arg(long, requires = "nodes", default_value = crate::demo::nodes::DEFAULT_PREFIX)]
        name: String,
    },
    /// Print the built-in demo configuration as TOML.
    DemoConfig,
    /// The busiest pods (packets per second) and drop reasons by rate,
    /// refreshed (read from the pins: works without a daemon).
    Top(TopArgs),
    /// Watch the datapath live: every drop with its reason, interface, pod
    /// and tuple (`--type trace` adds new connections, backend choices and
    /// redirects). Ctrl-C stops.
    Monitor(monitor::MonitorArgs),
}

/// `netpath top`.
#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub instance: Instance,
    /// Seconds between frames (and the window of the rates).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Print one frame (rates over one interval) and exit.
    #[arg(long, conflicts_with = "iterations")]
    pub once: bool,
    /// Print this many frames and exit (default: until Ctrl-C).
    #[arg(long)]
    pub iterations: Option<u64>,
}

/// `--instance`, defaulting to the only instance there is.
#[derive(Args)]
pub struct Instance {
    /// The instance (node.name); default: the only one on this machine.
    #[arg(long, short = 'i')]
    pub instance: Option<String>,
}

/// `--instance` and `-o`.
#[derive(Args)]
pub struct Target1 {
    #[command(flatten)]
    pub instance: Instance,
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// How a list is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

impl Output {
    /// `value` as a table (`table` renders it) or as JSON.
    fn show<T: serde::Serialize + ?Sized>(
        self,
        value: &T,
        table: impl FnOnce(&T) -> String,
    ) -> String {
        match self {
            Self::Table => table(value),
            Self::Json => render::pretty(&value),
        }
    }
}

#[derive(Subcommand)]
pub enum PodCommand {
    /// Add a pod: a namespace `<prefix><name>` with a veth, an address
    /// from IPAM (or --address) and a default route via the gateway.
    Add {
        name: String,
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
        /// The host side's name (default np-<name>).
        #[arg(long)]
        host_ifname: Option<String>,
        #[command(flatten)]
        instance: Instance,
    },
    /// Delete a pod, its namespace and its connections.
    Del {
        name: String,
        #[command(flatten)]
        instance: Instance,
    },
    /// List the pods, checked against how they were built.
    List(Target1),
}

#[derive(Subcommand)]
pub enum RouteCommand {
    /// `ip route add DST [via VIA] [dev DEV]`, for pod traffic only.
    Add {
        dst: ipnet::Ipv4Net,
        #[arg(long)]
        via: Option<std::net::Ipv4Addr>,
        /// Default: the uplink.
        #[arg(long)]
        dev: Option<String>,
        #[command(flatten)]
        instance: Instance,
    },
    /// `ip route del DST`.
    Del {
        dst: ipnet::Ipv4Net,
        #[command(flatten)]
        instance: Instance,
    },
    /// The declared routes.
    List(Target1),
}

/// The fields of a masquerade rule.
#[derive(Args)]
pub struct MasqueradeRule {
    /// `-s SOURCE`; default: the pod CIDR.
    #[arg(long)]
    pub source: Option<ipnet::Ipv4Net>,
    /// `-o OUT`; default: the uplink.
    #[arg(long)]
    pub out: Option<String>,
    /// `-j SNAT --to-source ADDRESS`; default: OUT's address.
    #[arg(long)]
    pub address: Option<std::net::Ipv4Addr>,
}

impl MasqueradeRule {
    fn config(&self) -> MasqueradeConfig {
        MasqueradeConfig {
            source: self.source,
            out: self.out.clone(),
            address: self.address,
        }
    }
}

#[derive(Subcommand)]
pub enum MasqueradeCommand {
    /// `iptables -t nat -A POSTROUTING -s SOURCE -o OUT -j MASQUERADE`.
    Add {
        #[command(flatten)]
        rule: MasqueradeRule,
        #[command(flatten)]
        instance: Instance,
    },
    /// `iptables -t nat -D POSTROUTING ...`: the rule with exactly these
    /// fields.
    Del {
        #[command(flatten)]
        rule: MasqueradeRule,
        #[command(flatten)]
        instance: Instance,
    },
    /// The rules, as `iptables -S` prints them.
    List(Target1),
}

#[derive(Subcommand)]
pub enum PortForwardCommand {
    /// `iptables -t nat -A PREROUTING -p PROTO --dport PORT -j DNAT
    /// --to-destination TO:TO_PORT`.
    Add {
        #[arg(long, value_enum, default_value_t = L4Proto::Tcp)]
        proto: L4Proto,
        /// The node port.
        #[arg(long)]
        port: u16,
        /// A pod name or ADDRESS:PORT.
        #[arg(long)]
        to: String,
        /// The pod's port (default: PORT).
        #[arg(long)]
        to_port: Option<u16>,
        /// One node address (default: every address of the uplink and the
        /// gateway).
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
        #[command(flatten)]
        instance: Instance,
    },
    /// Delete the port-forward on PROTO/PORT (and ADDRESS).
    Del {
        #[arg(long, value_enum, default_value_t = L4Proto::Tcp)]
        proto: L4Proto,
        #[arg(long)]
        port: u16,
        #[arg(long)]
        address: Option<std::net::Ipv4Addr>,
        #[command(flatten)]
        instance: Instance,
    },
    /// The port-forwards as the maps hold them: node address:port →
    /// destination, flows.
    List(Target1),
}

#[derive(Subcommand)]
pub enum ServiceCommand {
    /// Add a service: VIP:PORT over the backends (`ipvsadm -A` + `-a`).
    Add {
        name: String,
        #[arg(long)]
        vip: std::net::Ipv4Addr,
        #[arg(long)]
        port: u16,
        #[arg(long, value_enum, default_value_t = L4Proto::Tcp)]
        proto: L4Proto,
        /// A pod name or ADDRESS:PORT; repeat for each backend.
        #[arg(long = "backend", required = true)]
        backends: Vec<String>,
        /// The pods' port (default: PORT).
        #[arg(long)]
        target_port: Option<u16>,
        #[arg(long, value_enum, default_value_t = SessionAffinity::None)]
        affinity: SessionAffinity,
        /// Seconds (with --affinity client_ip).
        #[arg(long)]
        affinity_timeout: Option<u32>,
        #[command(flatten)]
        instance: Instance,
    },
    /// Delete a service.
    Del {
        name: String,
        #[command(flatten)]
        instance: Instance,
    },
    /// The services: frontend, backends by index, established flows per
    /// backend (from the maps).
    List(Target1),
    /// A service's Maglev table: how many slots each backend owns.
    Maglev {
        /// The service's name.
        name: String,
        #[command(flatten)]
        instance: Instance,
        /// Print the raw table too (slot → backend index).
        #[arg(long)]
        slots: bool,
    },
}

#[derive(Subcommand)]
pub enum ConntrackCommand {
    /// List the tracked (translated) connections, like `conntrack -L`.
    List(Target1),
    /// Delete expired connections and orphaned reverse entries now.
    Gc(Instance),
    /// Delete every connection of pods and frontends, like `conntrack -F`
    /// (through the daemon).
    Flush(Instance),
}

impl Instance {
    /// The instance named, or the only one this machine has state for.
    pub fn resolve(&self) -> Result<String> {
        if let Some(i) = &self.instance {
            return Ok(i.clone());
        }
        let mut found: Vec<String> = std::fs::read_dir(STATE_ROOT)
            .map(|d| {
                d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!(
                "no netpath instance exists here ({STATE_ROOT} is empty); start one with \
                 `netpath daemon --config FILE`"
            ),
            many => anyhow::bail!(
                "there are several instances ({}); pick one with --instance",
                many.join(", ")
            ),
        }
    }

    fn client(&self) -> Result<Client> {
        Ok(Client::new(&self.resolve()?))
    }
}

/// The frontends of `instance` (its load balancer's maps, named by its
/// state file, with flows counted from its connection table).
fn lb_views(instance: &str) -> Result<(frontends::LbState, Vec<inspect::FrontendView>)> {
    let maps = NodeMaps::open_pinned(&PinDir::for_instance(instance))?;
    let lb = frontends::read(maps.lb(), frontends::Tables::All)?;
    let state = StateDir::for_instance(instance).load()?;
    let conns = conntrack::list(&maps)?;
    let views = inspect::frontends(&lb, &state.frontends, &conns);
    Ok((lb, views))
}

fn print_changed(instance: &str, changed: &Changed) -> String {
    let mut s = render::apply_report(instance, &changed.report);
    if let Some(p) = &changed.pod {
        s.push_str(&render::pod_list(std::slice::from_ref(p)));
    }
    s
}

pub(super) fn change(instance: &Instance, request: &Request) -> Result<String> {
    let client = instance.client()?;
    let changed: Changed = client.call(request)?;
    Ok(print_changed(client.instance(), &changed))
}

pub(super) fn desired(instance: &Instance) -> Result<Config> {
    Ok(instance.client()?.call(&Request::Desired)?)
}

fn pod_verb(command: PodCommand) -> Result<String> {
    Ok(match command {
        PodCommand::Add {
            name,
            address,
            host_ifname,
            instance,
        } => {
            let mut pod = PodConfig::named(&name);
            pod.address = address;
            pod.host_ifname = host_ifname;
            change(&instance, &Request::PodAdd { pod })?
        }
        PodCommand::Del { name, instance } => change(&instance, &Request::PodDel { name })?,
        PodCommand::List(t) => {
            let pods: Vec<PodInfo> = t.instance.client()?.call(&Request::PodList)?;
            let rows = crate::metrics::top::pod_rows_of(&t.instance.resolve()?, pods);
            t.output
                .show(&rows, |r| crate::metrics::pods::render_pod_list(r))
        }
    })
}

fn route_verb(command: RouteCommand) -> Result<String> {
    Ok(match command {
        RouteCommand::Add {
            dst,
            via,
            dev,
            instance,
        } => change(
            &instance,
            &Request::RouteAdd {
                route: RouteConfig { dst, via, dev },
            },
        )?,
        RouteCommand::Del { dst, instance } => change(&instance, &Request::RouteDel { dst })?,
        RouteCommand::List(t) => {
            let config = desired(&t.instance)?;
            t.output
                .show(&config.routes, |r| render::route_list(&config, r))
        }
    })
}

fn masquerade_verb(command: MasqueradeCommand) -> Result<String> {
    Ok(match command {
        MasqueradeCommand::Add { rule, instance } => change(
            &instance,
            &Request::MasqueradeAdd {
                rule: rule.config(),
            },
        )?,
        MasqueradeCommand::Del { rule, instance } => change(
            &instance,
            &Request::MasqueradeDel {
                rule: rule.config(),
            },
        )?,
        MasqueradeCommand::List(t) => {
            let config = desired(&t.instance)?;
            t.output
                .show(&config.masquerade, |m| render::masquerade_list(&config, m))
        }
    })
}

fn port_forward_verb(command: PortForwardCommand) -> Result<String> {
    Ok(match command {
        PortForwardCommand::Add {
            proto,
            port,
            to,
            to_port,
            address,
            instance,
        } => {
            let to: Target = to.parse().expect("infallible");
            change(
                &instance,
                &Request::PortForwardAdd {
                    forward: PortForwardConfig {
                        proto,
                        port,
                        address,
                        to,
                        to_port,
                    },
                },
            )?
        }
        PortForwardCommand::Del {
            proto,
            port,
            address,
            instance,
        } => change(
            &instance,
            &Request::PortForwardDel {
                proto,
                port,
                address,
            },
        )?,
        PortForwardCommand::List(t) => {
            let (_, views) = lb_views(&t.instance.resolve()?)?;
            let views: Vec<_> = views.into_iter().filter(|v| v.port_forward).collect();
            t.output.show(&views, |v| render::port_forwards(v))
        }
    })
}

fn service_verb(command: ServiceCommand) -> Result<String> {
    Ok(match command {
        ServiceCommand::Add {
            name,
            vip,
            port,
            proto,
            backends,
            target_port,
            affinity,
            affinity_timeout,
            instance,
        } => {
            let service = ServiceConfig {
                name,
                vip,
                port,
                proto,
                backends: backends
                    .iter()
                    .map(|b| b.parse().expect("infallible"))
                    .collect(),
                target_port,
                affinity,
                affinity_timeout,
            };
            change(&instance, &Request::ServiceAdd { service })?
        }
        ServiceCommand::Del { name, instance } => change(&instance, &Request::ServiceDel { name })?,
        ServiceCommand::List(t) => {
            let (_, views) = lb_views(&t.instance.resolve()?)?;
            match t.output {
                Output::Table => render::services(&views),
                Output::Json => render::services_json(&views),
            }
        }
        ServiceCommand::Maglev {
            name,
            instance,
            slots,
        } => {
            let instance = instance.resolve()?;
            let (lb, views) = lb_views(&instance)?;
            let view = views
                .iter()
                .find(|v| !v.port_forward && v.service.as_deref() == Some(name.as_str()))
                .with_context(|| {
                    format!(
                        "instance {instance} has no service '{name}' (`netpath service list \
                         --instance {instance}` lists them)"
                    )
                })?;
            let fe = lb
                .values()
                .find(|f| f.id == view.id)
                .expect("views come from these frontends");
            let counts = inspect::slot_counts(fe);
            let table = slots.then_some(fe.maglev.slots());
            render::maglev(view, &counts, table)
        }
    })
}

fn conntrack_verb(command: ConntrackCommand) -> Result<String> {
    Ok(match command {
        ConntrackCommand::List(t) => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&t.instance.resolve()?))?;
            let conns = conntrack::list(&maps)?;
            match t.output {
                Output::Table => render::conntrack(&conns),
                Output::Json => render::conntrack_json(&conns),
            }
        }
        ConntrackCommand::Gc(i) => render::gc(&daemon::gc_once(&i.resolve()?)?),
        ConntrackCommand::Flush(i) => {
            let r: conntrack::PurgeReport = i.client()?.call(&Request::ConntrackFlush)?;
            format!(
                "flushed {} connections and {} reverse entries (the node's own kept)\n",
                r.connections, r.reverse
            )
        }
    })
}

/// `netpath apply -f`: through the daemon of the file's instance if one
/// runs, directly otherwise.
async fn apply(file: &std::path::Path) -> Result<String> {
    let config = Config::load(file)?;
    let instance = config.node.name.clone();
    let client = Client::new(&instance);
    match client.call::<Changed>(&Request::Apply {
        config: Box::new(config.clone()),
    }) {
        Ok(changed) => Ok(print_changed(&instance, &changed)),
        Err(e) if e.is_not_running() => {
            if config.etcd_cluster().is_some() {
                return Err(crate::config::ConfigError::from(
                    crate::config::cluster::ClusterError::EtcdNeedsDaemon { instance },
                )
                .into());
            }
            let report = reconcile::apply(&config).await?;
            Ok(render::apply_report(&instance, &report))
        }
        Err(e) => Err(e.into()),
    }
}

fn status(t: &Target1) -> Result<String> {
    let st: Status = t.instance.client()?.call(&Request::Status)?;
    Ok(t.output.show(&st, render::status))
}

fn stats(t: &Target1) -> Result<String> {
    let pins = PinDir::for_instance(&t.instance.resolve()?);
    let maps = NodeMaps::open_pinned(&pins)?;
    let stats = maps.stats()?;
    let lost = crate::datapath::events::pinned_lost(&pins)?;
    Ok(match t.output {
        Output::Table => render::stats(&stats) + &crate::monitor::show::lost_rows(lost.as_ref()),
        Output::Json => {
            crate::monitor::show::with_lost_json(&render::stats_json(&stats), lost.as_ref())
        }
    })
}

fn validate(file: &std::path::Path) -> Result<String> {
    let config = Config::load(file)?;
    Ok(render::validation(&DesiredNode::resolve(&config)))
}

/// `--overlay`: `vxlan`, or `none` / `direct` for direct routing.
fn parse_overlay(s: &str) -> Result<crate::config::cluster::ClusterMode, String> {
    use crate::config::cluster::ClusterMode;
    match s {
        "vxlan" => Ok(ClusterMode::Vxlan),
        "none" | "direct" => Ok(ClusterMode::Direct),
        other => Err(format!(
            "unknown overlay {other:?}: `vxlan`, or `none` for direct routing"
        )),
    }
}
