//! CPU cost.
//!
//! * [`CpuMeter`]: machine-wide busy CPU time (all cores: user, system,
//!   irq, softirq, steal) from `/proc/stat` over a load's run, divided by
//!   the load's operations. It counts the sender, the receiver and the
//!   datapath together, for every setup alike; other processes on the
//!   machine count too (run the bench on an idle machine).
//! * [`BpfStats`]: the run time of netpath's own programs per packet, from
//!   the kernel's BPF statistics (`run_time_ns` / `run_cnt` in `bpftool
//!   prog show`). Statistics are switched on with `BPF_ENABLE_STATS` only
//!   while [`BpfStats`] lives; the kernel switches them off when its file
//!   descriptor closes, also if the process dies, so
//!   `kernel.bpf_stats_enabled` never stays on.

use std::{os::fd::OwnedFd, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

/// Busy and total jiffies of all CPUs together.
fn jiffies() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user)
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// Busy CPU time of the whole machine since [`CpuMeter::start`].
pub struct CpuMeter {
    busy: u64,
}

impl CpuMeter {
    pub fn start() -> Self {
        Self { busy: jiffies().0 }
    }

    /// Busy CPU seconds (summed over cores) since start.
    pub fn busy_seconds(&self) -> f64 {
        jiffies().0.saturating_sub(self.busy) as f64 / clock_ticks()
    }
}

/// Run time and run count of BPF programs.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ProgStats {
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

impl ProgStats {
    pub fn since(self, earlier: ProgStats) -> ProgStats {
        ProgStats {
            run_time_ns: self.run_time_ns.saturating_sub(earlier.run_time_ns),
            run_cnt: self.run_cnt.saturating_sub(earlier.run_cnt),
        }
    }
}

/// `bpftool -j prog show pinned PATH`, summed over `progs`.
pub fn prog_stats(progs: &[impl AsRef<Path>]) -> Result<ProgStats> {
    let mut sum = ProgStats::default();
    for p in progs {
        let p = p.as_ref();
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "pinned"])
            .arg(p)
            .output()
            .context("run bpftool (Debian package bpftool)")?;
        if !out.status.success() {
            bail!(
                "bpftool prog show pinned {}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("bpftool prog show pinned {}: not JSON", p.display()))?;
        // Absent while zero.
        sum.run_time_ns += v.get("run_time_ns").and_then(Value::as_u64).unwrap_or(0);
        sum.run_cnt += v.get("run_cnt").and_then(Value::as_u64).unwrap_or(0);
    }
    Ok(sum)
}

/// BPF run-time statistics, on while this lives.
pub struct BpfStats {
    _fd: OwnedFd,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let fd = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("BPF_ENABLE_STATS (kernel 5.8+, needs CAP_SYS_ADMIN)")?;
        Ok(Self { _fd: fd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meter_counts_busy_time() {
        let m = CpuMeter::start();
        let t = std::time::Instant::now();
        let mut x = 0u64;
        while t.elapsed().as_millis() < 120 {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        let busy = m.busy_seconds();
        assert!(busy > 0.0 && busy < 10.0, "{busy}");
    }

    #[test]
    fn stats_delta() {
        let a = ProgStats {
            run_time_ns: 100,
            run_cnt: 2,
        };
        let b = ProgStats {
            run_time_ns: 350,
            run_cnt: 7,
        };
        assert_eq!(
            b.since(a),
            ProgStats {
                run_time_ns: 250,
                run_cnt: 5
            }
        );
    }
}
