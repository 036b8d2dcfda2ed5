//! TCP throughput with iperf3: `iperf3 -s -1` in the server namespace,
//! `iperf3 -c ADDR -t SECS -P STREAMS -A 0,1 -J` in the client namespace
//! (client on CPU 0, server on CPU 1); the figure is
//! `end.sum_received.bits_per_second` of the client's JSON. Runs shorter
//! than a second (smoke) send `-n 2 GB × secs` instead.

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
    let cpu = CpuMeter::start();
    let start = Instant::now();
    let client = ns::spawn_command(&ep.client_ns, &mut client_cmd)?;
    let out = ns::wait_output(client, Duration::from_secs(t + 20))?;
    let seconds = start.elapsed().as_secs_f64();
    let cpu_s = cpu.busy_seconds();
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
