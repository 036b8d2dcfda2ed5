//! `cargo xtask`: builds, tests and runs netpath on a fresh machine.
//!
//! Every command first bootstraps the toolchain ([`toolchain::bootstrap`]:
//! nightly + rust-src + a cached bpf-linker built against the nightly's
//! LLVM) and the system tools ([`syspkgs::ensure`]), then runs cargo with the
//! cached bpf-linker first on PATH.

mod cmd;
mod fuzz;
mod lint;
mod release_bin;
mod syspkgs;
mod toolchain;

use std::{fs, process::Command};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

use crate::syspkgs::Missing;

#[derive(Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    about = "netpath's build, test and demo tasks"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Bootstrap the toolchain, then `cargo build` the workspace's default
    /// members (the eBPF object is built by netpath's build script).
    Build {
        /// Build with the release profile.
        #[arg(long)]
        release: bool,
    },
    /// Bootstrap, run the lint gate (`cargo xtask lint`), then `cargo test
    /// --no-fail-fast` the default members (unit and integration tests).
    /// Test binaries run as root (through `sudo -E` when not root).
    ///
    /// Arguments after `--` go to `cargo test`, e.g.
    /// `cargo xtask test -- -p netpath-common -- --nocapture`.
    Test {
        /// Extra `cargo test` arguments.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Bootstrap, then check formatting (`cargo fmt --all --check`) and run
    /// clippy with `-D warnings` on every host crate (the lints are
    /// `[workspace.lints]` in Cargo.toml).
    Lint,
    /// Bootstrap, build and run `netpath demo` as root (through `sudo -E` when
    /// not root). Ctrl-C reaches netpath, which cleans up before exiting.
    ///
    /// Arguments after `--`: starting with an option, they are passed to
    /// `netpath demo` (`-- --help` → `netpath demo --help`); starting with a
    /// word, they replace `demo` (`-- daemon` → `netpath daemon`).
    Run {
        /// Build and run with the release profile.
        #[arg(long)]
        release: bool,
        /// Arguments for the netpath binary.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Bootstrap, build `netpath-bench` (release) and run it as root
    /// (through `sudo -E` when not root): netpath against a bare veth pair
    /// and the classic bridge + iptables datapath, in the bench's own
    /// namespaces. Writes bench/results/<timestamp>.json and .png and
    /// docs/benchmarks.md. Ctrl-C reaches the bench, which cleans up.
    ///
    /// Arguments after `--` go to netpath-bench, e.g. `-- --smoke` (every
    /// figure briefly, under a minute), `-- --only service-scale` (1 to
    /// 30,000 services: kube-proxy's iptables and nftables modes and
    /// netpath) or `-- --help`.
    Bench {
        /// Arguments for netpath-bench.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build `netpath-fuzz` (release) and run it as root: the long fuzz
    /// run, e.g. `cargo xtask fuzz -- --frames 10000000 --seed 42
    /// --config all` (`-- --help` for its options).
    Fuzz {
        /// Arguments for netpath-fuzz.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Build { release } => build(release),
        Task::Test { args } => test(&args),
        Task::Lint => lint(),
        Task::Run { release, args } => run(release, &args),
        Task::Bench { args } => bench(&args),
        Task::Fuzz { args } => fuzz::fuzz(&args),
    };
    let code = result.unwrap_or_else(|e| {
        // No backtrace (RUST_BACKTRACE=1 is common): the messages say which
        // step failed and how to fix it.
        eprintln!("xtask: error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        1
    });
    std::process::exit(code);
}

fn profile_args(release: bool) -> &'static [&'static str] {
    if release { &["--release"] } else { &[] }
}

/// Runs a cargo command the user asked for; its exit code becomes ours.
fn cargo_status(cargo: &mut Command) -> Result<i32> {
    println!("xtask: {}", cmd::display(cargo));
    let status = cmd::status(
        "cargo",
        cargo,
        "check that `cargo` is on PATH (usually ~/.cargo/bin)",
    )?;
    Ok(cmd::exit_code(status))
}

fn build(release: bool) -> Result<i32> {
    let tc = toolchain::bootstrap(Missing::Warn)?;
    // No `--workspace`: the default members exclude netpath-ebpf, which only
    // builds for bpfel-unknown-none (netpath/build.rs builds it).
    let mut cargo = tc.cargo();
    cargo.arg("build").args(profile_args(release));
    let code = cargo_status(&mut cargo)?;
    if code != 0 {
        return Ok(code);
    }
    // The tests and the bench enable netpath's `testing` feature, and cargo
    // unifies features across the packages of one build: build the shipped
    // binary again on its own, so that target/*/netpath has no test code.
    let mut shipped = tc.cargo();
    shipped
        .args(["build", "--package", "netpath", "--bin", "netpath"])
        .args(profile_args(release));
    cargo_status(&mut shipped)
}

fn lint() -> Result<i32> {
    let tc = toolchain::bootstrap(Missing::Warn)?;
    lint::run(&tc)?;
    Ok(0)
}

/// Linux 6.6 added tcx, which netpath attaches its TC programs with.
fn check_kernel() -> Result<()> {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease")
        .context("read the kernel version from /proc/sys/kernel/osrelease")?;
    let release = release.trim();
    println!("kernel: {release}");
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    if version < (6, 6) {
        bail!(
            "kernel {release} is older than 6.6: netpath attaches its programs with tcx \
             (Linux 6.6+), so the tests and the demo cannot run here; use a machine or VM \
             with Linux 6.6 or newer"
        );
    }
    Ok(())
}

/// The target triple rustc builds for by default (for the runner variable).
fn host_triple() -> Result<String> {
    let out = cmd::capture(
        "find the host target",
        Command::new("rustc").arg("-vV"),
        "check that `rustc -vV` works",
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` printed no `host:` line")
}

fn require_sudo(what: &str) -> Result<()> {
    if cmd::probe(Command::new("sudo").arg("--version")).is_none() {
        bail!(
            "{what} need root and `sudo` is not available: run `cargo xtask` as root, or install sudo"
        );
    }
    Ok(())
}

fn test(args: &[String]) -> Result<i32> {
    let tc = toolchain::bootstrap(Missing::Fail)?;
    check_kernel()?;
    // Fail fast: formatting and clippy before minutes of tests.
    lint::run(&tc)?;

    // The daemon, CLI and CNI tests run the shipped binaries
    // (tests/src/daemon.rs), which `cargo test` does not build.
    let mut bins = tc.cargo();
    bins.args(["build", "-p", "netpath", "--bins", "--features", "testing"]);
    let code = cargo_status(&mut bins)?;
    if code != 0 {
        return Ok(code);
    }

    let mut cargo = tc.cargo();
    cargo.arg("test");
    // Report every failing test binary, not only the first one.
    let cargo_args = args.split(|a| a == "--").next().unwrap_or_default();
    if !cargo_args.iter().any(|a| a == "--no-fail-fast") {
        cargo.arg("--no-fail-fast");
    }
    cargo.args(args).env("RUST_BACKTRACE", "1");
    if !cmd::is_root() {
        require_sudo("the tests (namespaces, BPF programs)")?;
        let runner = format!(
            "CARGO_TARGET_{}_RUNNER",
            host_triple()?.to_uppercase().replace(['-', '.'], "_")
        );
        println!("xtask: not root: test binaries run through `sudo -E` ({runner})");
        cargo.env(runner, "sudo -E");
    }
    let code = cargo_status(&mut cargo)?;
    if code != 0 {
        eprintln!("xtask: tests failed (cargo test exited with {code})");
    }
    Ok(code)
}

fn run(release: bool, args: &[String]) -> Result<i32> {
    let tc = toolchain::bootstrap(Missing::Fail)?;
    check_kernel()?;

    // Both binaries: `netpath` runs the demo (and its daemon), and
    // `netpath-cni` is there to try the CNI example against it.
    let mut cargo = tc.cargo();
    cargo
        .args(["build", "--package", "netpath", "--bins"])
        .args(profile_args(release));
    let code = cargo_status(&mut cargo)?;
    if code != 0 {
        return Ok(code);
    }

    let binary = tc
        .target_dir()
        .join(if release { "release" } else { "debug" })
        .join("netpath");
    let mut netpath = if cmd::is_root() {
        Command::new(&binary)
    } else {
        require_sudo("netpath demo (namespaces, BPF programs)")?;
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    if args.first().is_none_or(|a| a.starts_with('-')) {
        netpath.arg("demo");
    }
    netpath
        .args(args)
        .env("PATH", tc.path_env())
        .current_dir(&tc.workspace);
    println!("xtask: {}", cmd::display(&netpath));

    let fix = format!(
        "build it with `cargo xtask build` and run {}",
        binary.display()
    );
    let mut child = netpath.spawn().map_err(|e| {
        cmd::step_error(
            "run netpath",
            &netpath,
            &format!("could not start: {e}"),
            &fix,
        )
    })?;
    // Ctrl-C goes to the whole foreground process group: netpath (or sudo,
    // which relays it) handles it and cleans up; xtask must outlive it to
    // return its status. Ignored only after spawning, so the child starts
    // with the default disposition (SIG_IGN would be inherited over exec).
    let _sigint = IgnoreSigint::new();
    let status = child.wait().context("wait for netpath")?;
    Ok(cmd::exit_code(status))
}

/// Ignores SIGINT until dropped.
struct IgnoreSigint(libc::sighandler_t);

impl IgnoreSigint {
    fn new() -> Self {
        // SAFETY: installs SIG_IGN, a valid disposition; no handler code runs.
        Self(unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) })
    }
}

impl Drop for IgnoreSigint {
    fn drop(&mut self) {
        // SAFETY: restores the disposition `signal` returned before.
        unsafe { libc::signal(libc::SIGINT, self.0) };
    }
}

fn bench(args: &[String]) -> Result<i32> {
    // The report quotes the command that produced it.
    let mut shown = String::from("cargo xtask bench");
    if !args.is_empty() {
        shown.push_str(" -- ");
        shown.push_str(&args.join(" "));
    }
    // The bench handles Ctrl-C (removes its namespaces) and xtask waits.
    release_bin::ReleaseBin {
        package: "netpath-bench",
        bin: "netpath-bench",
        root_for: "the benchmarks (namespaces, iptables inside them, BPF programs)",
        env: vec![("NETPATH_BENCH_COMMAND", shown.into())],
    }
    .run(args)
}
