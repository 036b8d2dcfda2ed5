//! What the numbers were measured on.

use std::process::Command;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Machine {
    pub kernel: String,
    pub cores: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    /// `/proc/loadavg` when the run started (others' work skews the numbers).
    pub loadavg_at_start: String,
    pub iperf3: String,
    pub iptables: String,
    /// `git rev-parse --short=12 HEAD` of the work tree (read-only; local
    /// changes are not detected).
    pub commit: String,
    /// Whether the CPU's hardware counters are visible (`perf stat -e
    /// cycles`); VMs often have none.
    pub hardware_counters: bool,
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn first_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

pub fn info() -> Machine {
    let cpuinfo = read("/proc/cpuinfo");
    let meminfo = read("/proc/meminfo");
    let mem_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    Machine {
        kernel: read("/proc/sys/kernel/osrelease"),
        cores: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            .unwrap_or_default(),
        memory_gib: (mem_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
        loadavg_at_start: read("/proc/loadavg"),
        iperf3: first_line("iperf3", &["--version"]),
        iptables: first_line("iptables", &["--version"]),
        commit: first_line("git", &["-C", workspace, "rev-parse", "--short=12", "HEAD"]),
        hardware_counters: ["cpu", "cpu_core", "armv8_pmuv3_0"].iter().any(|d| {
            std::path::Path::new("/sys/bus/event_source/devices")
                .join(d)
                .exists()
        }),
    }
}
