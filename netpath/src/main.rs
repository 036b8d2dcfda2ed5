//! `netpath`: the command line of the netpath controller.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use netpath::{
    config::Config,
    conntrack, daemon,
    datapath::{NodeMaps, PinDir, pinned_logger},
    demo, reconcile, render,
    resolve::DesiredNode,
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
            demo::clean(&lab, &config).await?;
            say("done: no namespace, link or pin of the demo is left.");
        }
        Command::DemoConfig => print!("{}", Config::demo().to_toml_string()),
    }
    Ok(())
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
