//! `netpath`: the command line of the netpath controller.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};
use netpath::{
    config::Config, conntrack, controller, daemon, datapath::PinDir, demo, maps::NodeMaps,
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
            let report = controller::apply(&config).await?;
            if !report.changed() {
                println!("instance {}: nothing to change", config.node.name);
            }
            for ifname in &report.uplinks_attached {
                println!("np_from_uplink attached to {ifname}");
            }
            for ifname in &report.uplinks_detached {
                println!("np_from_uplink detached from {ifname}");
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
                "{}: valid ({} pods, pod CIDR {}, {} routes, {} masquerade rules)",
                config.node.name,
                config.pods.len(),
                config.node.pod_cidr,
                config.route_table().len(),
                config.masquerade.len()
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
            let stats = maps.stats()?;
            for (stat, c) in &stats {
                println!("{:<24} {:>12} {:>14}", stat.name(), c.packets, c.bytes);
            }
            let dropped: u64 = stats
                .iter()
                .filter(|(stat, _)| stat.is_drop())
                .map(|(_, c)| c.packets)
                .sum();
            println!("{:<24} {:>12}", "(all drops)", dropped);
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
        Command::Logs { instance } => {
            use tokio::io::{Interest, unix::AsyncFd};
            let logger = netpath::datapath::pinned_logger(&PinDir::for_instance(&instance))?;
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
                    _ = tokio::signal::ctrl_c() => break,
                }
            }
        }
        Command::Routes { instance } => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            let names = controller::interface_names(&instance)
                .await
                .unwrap_or_default();
            let dev = |i: u32| {
                names
                    .get(&i)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex {i}"))
            };
            let mut routes = maps.routes()?;
            routes.sort_by_key(|(n, _)| (std::cmp::Reverse(n.prefix_len()), *n));
            println!("routes (routes_v1; anything else: the node's FIB)");
            println!("  {:<20} {:<16} DEV", "DST", "VIA");
            for (dst, hop) in routes {
                let via = std::net::Ipv4Addr::from(hop.via);
                let (via, dev) = if hop.ifindex == 0 {
                    ("(local)".to_owned(), "the node's stack".to_owned())
                } else if via.is_unspecified() {
                    ("(connected)".to_owned(), dev(hop.ifindex))
                } else {
                    (via.to_string(), dev(hop.ifindex))
                };
                println!("  {:<20} {:<16} {dev}", dst.to_string(), via);
            }
            println!("masquerade (masq_v1)");
            println!("  {:<20} {:<16} NAT ADDRESS", "SOURCE", "OUT");
            for (source, rule) in maps.masq()? {
                println!(
                    "  {:<20} {:<16} {}",
                    source.to_string(),
                    dev(rule.ifindex),
                    std::net::Ipv4Addr::from(rule.nat_addr)
                );
            }
            let s = maps.settings()?;
            println!(
                "settings: NAT ports {}-{}, fib lookups as {}, timeouts tcp syn/est/fin/close \
                 {}/{}/{}/{}s, udp {}/{}s (stream), icmp {}s",
                s.nat_port_min,
                s.nat_port_max,
                dev(s.fib_ifindex),
                s.tcp_syn_timeout,
                s.tcp_established_timeout,
                s.tcp_fin_timeout,
                s.tcp_close_timeout,
                s.udp_timeout,
                s.udp_stream_timeout,
                s.icmp_timeout
            );
        }
        Command::Conntrack { command } => match command {
            ConntrackCommand::List { instance } => {
                let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
                println!("{}", conntrack::format_table(&conntrack::list(&maps)?));
            }
            ConntrackCommand::Gc { instance } => {
                let r = daemon::gc_once(&instance)?;
                println!(
                    "removed {} expired connections and {} orphaned reverse entries; {} remain",
                    r.removed, r.orphans, r.remaining
                );
            }
        },
        Command::Daemon { config } => {
            let events = daemon::signal_events()?;
            daemon::run(&config, events).await?;
        }
        Command::Demo { once } => {
            let (lab, config) = demo::lab_and_config();
            let report = demo::up(&lab, &config).await?;
            println!("{}", demo::describe(&lab, &config, &report));
            if !once {
                // Collect expired connections while the demo runs.
                let mut events = daemon::signal_events()?;
                let interval = daemon::gc_interval(&config);
                while daemon::gc_until_event(&config.node.name, interval, &mut events).await
                    != daemon::Event::Stop
                {}
            }
            println!("removing the demo ...");
            demo::clean(&lab, &config).await?;
            println!("done: no namespace, link or pin of the demo is left.");
        }
        Command::DemoConfig => print!("{}", Config::demo().to_toml_string()),
    }
    Ok(())
}

fn mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
