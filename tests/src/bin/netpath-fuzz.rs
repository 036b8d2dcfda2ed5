//! `netpath-fuzz`: the long fuzz run (`cargo xtask fuzz -- --frames N
//! --seed S`). Needs root (it loads the eBPF object). Prints a progress
//! line per million frames and a summary per configuration; exits 1 when a
//! check that is not tolerated broke (findings are saved under
//! `target/fuzz/`).

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use tests::fuzz::{self, Config, rng};

#[derive(Parser)]
#[command(
    name = "netpath-fuzz",
    about = "Fuzz netpath's TC programs with BPF_PROG_TEST_RUN"
)]
struct Args {
    /// Frames per configuration.
    #[arg(long, default_value_t = 10_000_000)]
    frames: u64,
    /// PRNG seed (decimal or 0x-hex); random (and printed) by default.
    #[arg(long, value_parser = parse_seed)]
    seed: Option<u64>,
    /// Node configurations to run, comma-separated: default, tiny-ports,
    /// zero-timeouts, lru-eviction, or all.
    #[arg(long, default_value = "default")]
    config: String,
    /// Frames between two map and counter checks (default: the preset's).
    #[arg(long)]
    batch: Option<u64>,
    /// Tolerate nothing: known bugs (`fuzz::known_bugs`, and the
    /// forward/reverse pairing under LRU eviction) fail the run too.
    #[arg(long)]
    strict: bool,
    /// Examples kept per finding.
    #[arg(long, default_value_t = 5)]
    examples: usize,
}

fn parse_seed(s: &str) -> Result<u64, String> {
    let r = match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|e| format!("{s:?} is not a seed (a decimal or 0x-hex u64): {e}"))
}

/// The preset called `name`, with the command line's settings.
fn config(name: &str, seed: u64, args: &Args) -> Result<Config> {
    let Some(mut cfg) = fuzz::preset(name, seed, args.frames) else {
        bail!(
            "unknown configuration {name:?}: use {} or all",
            fuzz::PRESETS.join(", ")
        );
    };
    if args.strict {
        cfg.tolerated.clear();
    }
    if let Some(batch) = args.batch {
        cfg.batch = batch.max(1);
    }
    cfg.examples = args.examples;
    cfg.progress_every = (1_000_000 / cfg.batch).max(1);
    Ok(cfg)
}

fn main() -> Result<ExitCode> {
    let args = Args::parse();
    if !nix::unistd::Uid::effective().is_root() {
        bail!("netpath-fuzz loads eBPF programs: run it as root (cargo xtask fuzz does)");
    }
    let seed = args.seed.unwrap_or_else(rng::random_seed);
    let names: Vec<&str> = if args.config == "all" {
        fuzz::PRESETS.to_vec()
    } else {
        args.config.split(',').map(str::trim).collect()
    };
    let configs = names
        .iter()
        .map(|n| config(n, seed, &args))
        .collect::<Result<Vec<_>>>()?;
    println!(
        "netpath-fuzz: seed {seed} ({seed:#x}), {} frames per configuration",
        args.frames
    );
    let mut failed = false;
    for cfg in &configs {
        let report = fuzz::run(cfg)?;
        println!("{}", report.summary());
        failed |= report.failed();
    }
    if failed {
        println!("netpath-fuzz: FAILED (rerun with --seed {seed})");
        return Ok(ExitCode::FAILURE);
    }
    println!("netpath-fuzz: no check broke");
    Ok(ExitCode::SUCCESS)
}
