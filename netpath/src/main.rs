//! `netpath`: the command line of the netpath controller (the verbs are
//! [`netpath::cli`]'s).

use anyhow::{Context as _, Result};
use clap::Parser;
use netpath::cli::{self, Command};

#[derive(Parser)]
#[command(version, about = "eBPF datapath for container networking")]
struct Cli {
    /// Log filter (error, warn, info, debug, trace), as RUST_LOG.
    #[arg(long, global = true, default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut filter = std::env::var("RUST_LOG").unwrap_or(cli.log_level.clone());
    if matches!(cli.command, Command::Logs(_)) {
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
    rt.block_on(cli::run(cli.command))
}
