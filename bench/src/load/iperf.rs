//! TCP throughput with iperf3: `iperf3 -s -1` in the server namespace,
//! `iperf3 -c ADDR -t SECS -P STREAMS -A 0,1 -J` in the client namespace
//! (client on CPU 0, server on CPU 1); the figure is
//! `end.sum_received.bits_per_second` of the client's JSON. Runs shorter
//! than a second (smoke) send `-n 2 GB × secs` instead.
//!
//! Beside the retransmits iperf3 reports, the counters that say where the
//! lost segments went ([`TcpEvidence`]): the per-CPU input backlog's drops
//! (`/proc/net/softnet_stat`, column 2: `netif_rx` found the queue at
//! `net.core.netdev_max_backlog`; machine-wide, only the bench sends
//! meanwhile), the receiver's out-of-order queueing (`TCPOFOQueue`: the
//! segments arrived reordered) and socket drops, and the sender's
//! duplicate-SACKs (`TCPDSACKRecv`: a retransmit of a segment that had
//! arrived after all, i.e. a spurious one), read from each namespace's
//! `/proc/net/netstat` before and after the run.

use std::{
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use super::{CLIENT_CPU, SERVER_CPU, check_target, cpu_index, port_for, target};
use crate::{metrics::cpu::CpuMeter, ns, topology::Endpoints};

#[derive(Debug, Clone)]
pub struct IperfResult {
    pub gbit_per_s: f64,
    pub retransmits: Option<f64>,
    pub seconds: f64,
    /// Average busy cores, machine-wide, while the client ran.
    pub cpu_cores: f64,
    /// Where the retransmitted segments went, when the counters could be
    /// read.
    pub evidence: Option<TcpEvidence>,
}

/// Counter deltas over one iperf3 run (see the module documentation).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpEvidence {
    /// Packets dropped at a CPU's input backlog (softnet_stat), all CPUs.
    pub backlog_drops: f64,
    /// Segments the receiver queued out of order (`TcpExt:TCPOFOQueue`).
    pub receiver_out_of_order: f64,
    /// Segments the receiving socket dropped (`TCPRcvQDrop`,
    /// `TCPBacklogDrop`, `TCPOFODrop`, `TCPZeroWindowDrop`).
    pub receiver_socket_drops: f64,
    /// Duplicate SACKs the sender got: spurious retransmits
    /// (`TcpExt:TCPDSACKRecv`).
    pub sender_dsacks: f64,
    /// Retransmits the sender's stack gave up on because the original was
    /// still in a queue of the host (`TCPSpuriousRtxHostQueues`).
    pub sender_host_queue_rtx: f64,
    /// Tail-loss probes the sender sent (`TCPLossProbes`): a retransmit of
    /// the last segment when no ACK came within about two round trips.
    pub sender_loss_probes: f64,
    /// Packets the client's and the server's namespaces' devices dropped
    /// (`/proc/net/dev`, receive and transmit drop columns).
    pub device_drops: f64,
}

/// The drop columns of the calling thread's namespace's devices summed
/// (`/proc/net/dev`: receive drop is the 4th number, transmit drop the
/// 12th).
fn device_drops() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/dev").ok()?;
    let mut sum = 0f64;
    for line in text.lines().skip(2) {
        let (_, nums) = line.split_once(':')?;
        let v: Vec<f64> = nums
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        sum += v.get(3)? + v.get(11)?;
    }
    Some(sum)
}

/// The sum of column 2 (dropped) of `/proc/net/softnet_stat` (hex).
fn softnet_drops() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").ok()?;
    let mut sum = 0u64;
    for line in text.lines() {
        let col = line.split_whitespace().nth(1)?;
        sum += u64::from_str_radix(col, 16).ok()?;
    }
    #[expect(clippy::cast_precision_loss, reason = "a packet count, far below 2^52")]
    Some(sum as f64)
}

/// `TcpExt` counters of the calling thread's namespace, by name.
fn tcp_ext() -> std::collections::BTreeMap<String, f64> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = std::collections::BTreeMap::new();
    for pair in lines.chunks(2) {
        let [names, values] = pair else { continue };
        if !names.starts_with("TcpExt:") {
            continue;
        }
        for (n, v) in names
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(n.to_owned(), v);
            }
        }
    }
    out
}

/// The counters [`TcpEvidence`] is the delta of, at one moment.
struct Counters {
    softnet: Option<f64>,
    devices: Option<f64>,
    receiver: std::collections::BTreeMap<String, f64>,
    sender: std::collections::BTreeMap<String, f64>,
}

impl Counters {
    fn read(ep: &Endpoints) -> Result<Self> {
        Ok(Self {
            softnet: softnet_drops(),
            devices: ns::in_ns(&ep.server_ns, device_drops)?
                .zip(ns::in_ns(&ep.client_ns, device_drops)?)
                .map(|(a, b)| a + b),
            receiver: ns::in_ns(&ep.server_ns, tcp_ext)?,
            sender: ns::in_ns(&ep.client_ns, tcp_ext)?,
        })
    }

    fn since(&self, before: &Counters) -> Option<TcpEvidence> {
        let d = |now: &std::collections::BTreeMap<String, f64>,
                 then: &std::collections::BTreeMap<String, f64>,
                 names: &[&str]|
         -> Option<f64> {
            names
                .iter()
                .map(|n| Some(now.get(*n)? - then.get(*n)?))
                .sum()
        };
        Some(TcpEvidence {
            backlog_drops: self.softnet? - before.softnet?,
            receiver_out_of_order: d(&self.receiver, &before.receiver, &["TCPOFOQueue"])?,
            receiver_socket_drops: d(
                &self.receiver,
                &before.receiver,
                &[
                    "TCPRcvQDrop",
                    "TCPBacklogDrop",
                    "TCPOFODrop",
                    "TCPZeroWindowDrop",
                ],
            )?,
            sender_dsacks: d(&self.sender, &before.sender, &["TCPDSACKRecv"])?,
            sender_host_queue_rtx: d(&self.sender, &before.sender, &["TCPSpuriousRtxHostQueues"])?,
            sender_loss_probes: d(&self.sender, &before.sender, &["TCPLossProbes"])?,
            device_drops: self.devices? - before.devices?,
        })
    }
}

/// Whether a TCP socket listens on `port` in the namespace of the calling
/// thread (`/proc/thread-self/net/tcp`, state 0A).
fn listening(port: u16) -> bool {
    let want = format!(":{port:04X}");
    std::fs::read_to_string("/proc/thread-self/net/tcp")
        .into_iter()
        .chain(std::fs::read_to_string("/proc/thread-self/net/tcp6"))
        .any(|text| {
            text.lines().skip(1).any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1].ends_with(&want) && f[3] == "0A"
            })
        })
}

/// iperf3's whole-second duration for `secs` (at least 1).
pub fn whole_seconds(secs: f64) -> u64 {
    secs.round().max(1.0) as u64
}

pub fn run(ep: &Endpoints, streams: u32, secs: f64) -> Result<IperfResult> {
    check_target(ep.server_addr)?;
    let port = port_for(ep);
    let t = whole_seconds(secs);
    // Under a second (smoke runs): a fixed amount of data instead of time.
    let amount = if secs < 1.0 {
        vec!["-n".to_owned(), format!("{}", (secs * 2e9) as u64)]
    } else {
        vec!["-t".to_owned(), t.to_string()]
    };
    let addr = ep.server_addr.to_string();
    let dst = target(ep, port).ip().to_string();
    let port_s = port.to_string();

    let mut server_cmd = Command::new("iperf3");
    server_cmd
        .args(["-s", "-1", "-B", &addr, "-p", &port_s])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let server = ns::spawn_command(&ep.server_ns, &mut server_cmd)?;
    let mut server = KillOnDrop(Some(server));

    // Wait until it listens (a probe connection would be its one client).
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if ns::in_ns(&ep.server_ns, move || listening(port))? {
            break;
        }
        if let Some(st) = server.0.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
            bail!("iperf3 server in {} exited at once: {st}", ep.server_ns);
        }
        if Instant::now() >= deadline {
            bail!("iperf3 server in {} did not listen on {port}", ep.server_ns);
        }
        ns::check_stop()?;
        thread::sleep(Duration::from_millis(20));
    }

    let mut client_cmd = Command::new("iperf3");
    client_cmd
        .args([
            "-c",
            &dst,
            "-p",
            &port_s,
            "-J",
            "--connect-timeout",
            "3000",
        ])
        .args(&amount)
        .args(["-P", &streams.to_string()])
        // Client and server processes on different CPUs, as for UDP.
        .args([
            "-A",
            &format!("{},{}", cpu_index(CLIENT_CPU), cpu_index(SERVER_CPU)),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let shown = ns::show(&client_cmd);
    let before = Counters::read(ep)?;
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let client = ns::spawn_command(&ep.client_ns, &mut client_cmd)?;
    let out = ns::wait_output(client, Duration::from_secs(t + 20))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = cpu.busy_seconds();
    let evidence = Counters::read(ep)?.since(&before);
    ns::check_stop()?;
    if out.timed_out {
        bail!("`{shown}` timed out");
    }
    let json: Value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "`{shown}` printed no JSON (exit {:?}): {}",
            out.status,
            out.stderr.trim()
        )
    })?;
    if let Some(err) = json.get("error").and_then(Value::as_str) {
        bail!("`{shown}`: {err}");
    }
    let bps = json
        .pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .with_context(|| format!("`{shown}`: no end.sum_received.bits_per_second"))?;
    let retransmits = json
        .pointer("/end/sum_sent/retransmits")
        .and_then(Value::as_f64);
    // The server exits after its one client.
    if let Some(mut s) = server.0.take() {
        let deadline = Instant::now() + Duration::from_secs(3);
        while s.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(20));
        }
        let _ = s.kill();
        let _ = s.wait();
    }
    Ok(IperfResult {
        gbit_per_s: bps / 1e9,
        retransmits,
        seconds,
        cpu_cores: cpu_s / seconds,
        evidence,
    })
}

/// Kills and reaps a child process when dropped (error paths, Ctrl-C).
struct KillOnDrop(Option<std::process::Child>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(whole_seconds(0.3), 1);
        assert_eq!(whole_seconds(1.0), 1);
        assert_eq!(whole_seconds(2.6), 3);
    }
}
