//! `netpath monitor`: its arguments, and the verb (the work is
//! [`crate::monitor`]'s).

use anyhow::Result;
use clap::{Args, ValueEnum};

use super::{Instance, Output};
use crate::monitor::{self, Filter, Kinds, Options, Proto};

/// `--type`.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EventType {
    /// Every drop, with its reason.
    Drop,
    /// New masqueraded connections, backend choices, redirects to pods.
    Trace,
    /// Both.
    All,
}

/// The arguments of `netpath monitor`.
#[derive(Args)]
pub struct MonitorArgs {
    #[command(flatten)]
    pub instance: Instance,
    /// What to show: drops (the default), trace events or all. Trace
    /// events cost a little on every forwarded packet while shown.
    #[arg(long = "type", value_enum, default_value_t = EventType::Drop)]
    pub kind: EventType,
    /// Only events of this pod (its interface, or its address in the
    /// tuple).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only events with this address in the tuple.
    #[arg(long)]
    pub addr: Option<std::net::Ipv4Addr>,
    /// Only this protocol: tcp, udp, icmp or a number.
    #[arg(long)]
    pub proto: Option<Proto>,
    /// Only events with this port in the tuple.
    #[arg(long)]
    pub port: Option<u16>,
    /// Events per second per CPU the programs emit at most (0: no limit);
    /// what is over is counted as lost.
    #[arg(long, default_value_t = monitor::DEFAULT_RATE)]
    pub rate: u32,
    /// Events a CPU may emit at once after a quiet spell (default: the
    /// rate).
    #[arg(long)]
    pub burst: Option<u32>,
    /// `json`: one JSON object per line (`"type": "lost"` for losses).
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

/// Runs `netpath monitor` until Ctrl-C, SIGTERM or a closed stdout.
pub async fn run(args: MonitorArgs) -> Result<()> {
    let instance = args.instance.resolve()?;
    let opts = Options {
        kinds: match args.kind {
            EventType::Drop => Kinds::Drop,
            EventType::Trace => Kinds::Trace,
            EventType::All => Kinds::All,
        },
        filter: Filter {
            pod: args.pod,
            addr: args.addr,
            proto: args.proto,
            port: args.port,
        },
        json: args.output == Output::Json,
        rate: args.rate,
        burst: args.burst,
    };
    monitor::run(&instance, &opts).await?;
    Ok(())
}
