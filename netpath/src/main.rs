//! `netpath`: the command line of the netpath controller.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use netpath::{
    config::Config,
    conntrack, daemon,
    datapath::{NodeMaps, PinDir, pinned_logger},
    demo,
    lb::{frontends, inspect},
    reconcile, render,
    resolve::DesiredNode,
    state::{STATE_ROOT, StateDir},
};

#[derive(Parser)]
#[command(version, about = "eBPF datapath for container networking")]
struct Cli {
    /// Log filter (error, warn, info, debug, trace), as RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make the node what the configuration says (create, recreate or delete
    /// pods; load and attach the datapath). Idempotent.
    Apply {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Check a configuration without changing anything.
    Validate {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Remove every pod, program, map and pin of an instance.
    Destroy {
        #[arg(long)]
        instance: String,
    },
    /// List the pods an instance has built.
    Pods {
        #[arg(long)]
        instance: String,
    },
    /// Print the datapath's counters (every verdict and drop reason).
    Stats {
        #[arg(long)]
        instance: String,
    },
    /// Print the endpoint map (local pods as the datapath sees them).
    Endpoints {
        #[arg(long)]
        instance: String,
    },
    /// Print the route and masquerade maps (what replaces `ip route` and
    /// `iptables -t nat` for pod traffic).
    Routes {
        #[arg(long)]
        instance: String,
    },
    /// Follow what the eBPF programs log (drops and their reasons), when they
    /// were loaded with `NETPATH_EBPF_LOG=debug`. Ctrl-C stops.
    Logs {
        #[arg(long)]
        instance: String,
    },
    /// Inspect or clean the connection table.
    Conntrack {
        #[command(subcommand)]
        command: ConntrackCommand,
    },
    /// Inspect the services (VIPs load-balanced over backends by Maglev).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Inspect the port-forwards (node ports forwarded to pods).
    PortForward {
        #[command(subcommand)]
        command: PortForwardCommand,
    },
    /// Apply the configuration, then keep running: collect expired
    /// connections every `[conntrack] gc_interval` seconds, re-apply the file
    /// on SIGHUP, stop on SIGINT/SIGTERM (the datapath stays in place).
    Daemon {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Build the two-pod demo in its own namespaces; Ctrl-C removes it.
    Demo {
        /// Build, print and tear down at once instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Print the built-in demo configuration as TOML.
    DemoConfig,
}

#[derive(Subcommand)]
enum ConntrackCommand {
    /// List the tracked (translated) connections, like `conntrack -L`.
    List {
        #[arg(long)]
        instance: String,
    },
    /// Delete expired connections and orphaned reverse NAT entries now.
    Gc {
        #[arg(long)]
        instance: String,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// List the services: frontend, backends by index, established flows
    /// per backend.
    List {
        /// Default: the only instance there is.
        #[arg(long)]
        instance: Option<String>,
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Show a service's Maglev table: how many slots each backend owns.
    Maglev {
        /// The service's name.
        name: String,
        /// Default: the only instance there is.
        #[arg(long)]
        instance: Option<String>,
        /// Print the raw table too (slot → backend index).
        #[arg(long)]
        slots: bool,
    },
}

#[derive(Subcommand)]
enum PortForwardCommand {
    /// List the port-forwards: node address:port → destination, flows.
    List {
        /// Default: the only instance there is.
        #[arg(long)]
        instance: Option<String>,
    },
}

/// How a list is printed.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Table,
    Json,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut filter = std::env::var("RUST_LOG").unwrap_or(cli.log_level.clone());
    if matches!(cli.command, Command::Logs { .. }) {
        // The programs log under their module paths (`netpath::stats`).
        filter.push_str(",netpath::stats=trace");
    }
    env_logger::Builder::new()
        .parse_filters(&filter)
        .format_timestamp(None)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    rt.block_on(run(cli.command))
}

async fn run(command: Command) -> Result<()> {
    match command {
        Command::Apply { config } => {
            let config = Config::load(&config)?;
            let report = reconcile::apply(&config).await?;
            print!("{}", render::apply_report(&config.node.name, &report));
        }
        Command::Validate { config } => {
            let config = Config::load(&config)?;
            print!("{}", render::validation(&DesiredNode::resolve(&config)));
        }
        Command::Destroy { instance } => {
            let removed = reconcile::destroy(&instance).await?;
            print!("{}", render::destroyed(&instance, &removed));
        }
        Command::Pods { instance } => print!("{}", render::pods(&reconcile::pods(&instance)?)),
        Command::Stats { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            print!("{}", render::stats(&maps.stats()?));
        }
        Command::Endpoints { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            print!("{}", render::endpoints(&maps.endpoints()?));
        }
        Command::Logs { instance } => follow_logs(&instance).await?,
        Command::Routes { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            let tables = render::RouteMaps {
                routes: maps.routes()?,
                masq: maps.masq()?,
                settings: maps.settings()?,
                names: reconcile::interface_names(&instance)
                    .await
                    .unwrap_or_default(),
            };
            print!("{}", render::routes(&tables));
        }
        Command::Conntrack { command } => match command {
            ConntrackCommand::List { instance } => {
                let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
                print!("{}", render::conntrack(&conntrack::list(&maps)?));
            }
            ConntrackCommand::Gc { instance } => {
                print!("{}", render::gc(&daemon::gc_once(&instance)?));
            }
        },
        Command::Service { command } => match command {
            ServiceCommand::List { instance, output } => {
                let (_, views) = lb_views(&instance_or_only(instance)?)?;
                match output {
                    Output::Table => print!("{}", render::services(&views)),
                    Output::Json => print!("{}", render::services_json(&views)),
                }
            }
            ServiceCommand::Maglev {
                name,
                instance,
                slots,
            } => {
                let instance = instance_or_only(instance)?;
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
                let table = slots.then_some(fe.maglev.as_slice());
                print!("{}", render::maglev(view, &counts, table));
            }
        },
        Command::PortForward {
            command: PortForwardCommand::List { instance },
        } => {
            let (_, views) = lb_views(&instance_or_only(instance)?)?;
            print!("{}", render::port_forwards(&views));
        }
        Command::Daemon { config } => {
            let events = daemon::signal_events()?;
            daemon::run(&config, events).await?;
        }
        Command::Demo { once } => {
            // Ctrl-C is ours from the start (not the default, which would
            // kill us half-built or before the cleanup): one that arrives
            // while the demo is built stops it right after.
            let mut events = daemon::signal_events()?;
            let (lab, config) = demo::lab_and_config();
            let report = demo::up(&lab, &config).await?;
            let responders = match demo::serve(&lab, &config, &report).await {
                Ok(r) => r,
                Err(e) => {
                    demo::clean(&lab, &config).await?;
                    return Err(e.into());
                }
            };
            say(&render::demo(&lab, &config, &report));
            if !once {
                // Collect expired connections while the demo runs.
                let interval = daemon::gc_interval(&config);
                while daemon::gc_until_event(&config.node.name, interval, &mut events).await
                    != daemon::Event::Stop
                {}
            }
            // `cargo xtask run | tee log` and Ctrl-C: tee is gone before we
            // are, so nothing on the way to the cleanup may need stdout.
            say("removing the demo ...");
            drop(responders);
            demo::clean(&lab, &config).await?;
            say("done: no namespace, link or pin of the demo is left.");
        }
        Command::DemoConfig => print!("{}", Config::demo().to_toml_string()),
    }
    Ok(())
}

/// The frontends of `instance` (its load balancer's maps, named by its
/// state file, with flows counted from its connection table).
fn lb_views(instance: &str) -> Result<(frontends::LbState, Vec<inspect::FrontendView>)> {
    let maps = NodeMaps::open_pinned(&PinDir::for_instance(instance))?;
    let lb = frontends::read(maps.lb())?;
    let state = StateDir::for_instance(instance).load()?;
    let conns = conntrack::list(&maps)?;
    let views = inspect::frontends(&lb, &state.frontends, &conns);
    Ok((lb, views))
}

/// `instance`, or else the only instance this machine has state for.
fn instance_or_only(instance: Option<String>) -> Result<String> {
    if let Some(i) = instance {
        return Ok(i);
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
            "no netpath instance is running here ({STATE_ROOT} is empty); apply one first"
        ),
        many => anyhow::bail!(
            "there are several instances ({}); pick one with --instance",
            many.join(", ")
        ),
    }
}

/// Prints `text` and a newline to stdout, ignoring a closed or broken
/// stdout (`println!` panics on EPIPE, which would skip what follows, such
/// as the demo's cleanup).
fn say(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// `netpath logs`: prints what the pinned programs log until Ctrl-C.
async fn follow_logs(instance: &str) -> Result<()> {
    use tokio::io::{Interest, unix::AsyncFd};
    let logger = pinned_logger(&PinDir::for_instance(instance))?;
    // SAFETY: the logger owns the ring buffer's fd, which therefore
    // stays open for as long as the AsyncFd that holds the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the log buffer: {e}"))?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.context("cannot poll the log buffer")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
