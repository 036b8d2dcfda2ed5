//! `netpath`: the command line of the netpath controller.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use netpath::{config::Config, controller, datapath::PinDir, demo, maps::NodeMaps};

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
    /// Build the two-pod demo in its own namespaces; Ctrl-C removes it.
    Demo {
        /// Build, print and tear down at once instead of waiting for Ctrl-C.
        #[arg(long)]
        once: bool,
    },
    /// Print the built-in demo configuration as TOML.
    DemoConfig,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or(cli.log_level.clone()))
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
            let report = controller::apply(&config).await?;
            if !report.changed() {
                println!("instance {}: nothing to change", config.node.name);
            }
            for (what, pods) in [
                ("created", &report.created),
                ("recreated", &report.recreated),
                ("deleted", &report.deleted),
                ("unchanged", &report.unchanged),
            ] {
                for pod in pods {
                    let addr = report
                        .addresses
                        .get(pod)
                        .map(|a| a.to_string())
                        .unwrap_or_default();
                    println!("pod {pod:<16} {what:<10} {addr}");
                }
            }
        }
        Command::Validate { config } => {
            let config = Config::load(&config)?;
            println!(
                "{}: valid ({} pods, pod CIDR {})",
                config.node.name,
                config.pods.len(),
                config.node.pod_cidr
            );
        }
        Command::Destroy { instance } => {
            let removed = controller::destroy(&instance).await?;
            println!(
                "instance {instance}: removed {} pods and all pins",
                removed.len()
            );
        }
        Command::Pods { instance } => {
            println!("{:<16} {:<16} {:<16} NETNS", "POD", "ADDRESS", "HOST IF");
            for (name, pod) in controller::pods(&instance)? {
                println!(
                    "{name:<16} {:<16} {:<16} {}",
                    pod.address.to_string(),
                    pod.host_ifname,
                    pod.netns
                );
            }
        }
        Command::Stats { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            println!("{:<24} {:>12} {:>14}", "COUNTER", "PACKETS", "BYTES");
            for (stat, c) in maps.stats()? {
                println!("{:<24} {:>12} {:>14}", stat.name(), c.packets, c.bytes);
            }
        }
        Command::Endpoints { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            println!(
                "{:<16} {:>8} {:<18} GW MAC",
                "ADDRESS", "IFINDEX", "POD MAC"
            );
            for (addr, ep) in maps.endpoints()? {
                println!(
                    "{:<16} {:>8} {:<18} {}",
                    addr.to_string(),
                    ep.ifindex,
                    mac(ep.pod_mac),
                    mac(ep.gw_mac)
                );
            }
        }
        Command::Demo { once } => {
            let (lab, config) = demo::lab_and_config();
            let report = demo::up(&lab, &config).await?;
            println!("{}", demo::describe(&lab, &config, &report));
            if !once {
                wait_for_shutdown().await?;
            }
            println!("removing the demo ...");
            demo::clean(&lab, &config).await?;
            println!("done: no namespace, link or pin of the demo is left.");
        }
        Command::DemoConfig => print!("{}", Config::demo().to_toml_string()),
    }
    Ok(())
}

async fn wait_for_shutdown() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("cannot watch Ctrl-C")?,
        _ = term.recv() => {}
    }
    Ok(())
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
