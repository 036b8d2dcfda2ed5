//! The prefilter figure: the LAN host floods 64-byte UDP datagrams from
//! its denied address ([`DENIED_SOURCE`]) at the node's port-forward, and
//! the node's deny rule (netpath's XDP prefilter, the classic node's
//! `iptables -t raw ... -j DROP`) drops them. On a veth uplink the drop runs
//! in the sender's softirq, on the sender's CPU, so the rate the sender
//! reaches is the cost of the drop path; the node's own counter says how
//! many it dropped.

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};

use super::{CLIENT_CPU, force_buffer, pin_to_cpu, port_for, target};
use crate::{
    metrics::cpu::CpuMeter,
    ns,
    topology::{DENIED_SOURCE, Endpoints},
};

pub const PAYLOAD: usize = 64;

#[derive(Debug, Clone)]
pub struct FloodResult {
    pub sent_pps: f64,
    pub dropped_pps: f64,
    /// Dropped / sent.
    pub dropped_share: f64,
    /// Sender CPU time (including the softirq that ran the drop) per
    /// dropped packet.
    pub cpu_ns_per_drop: f64,
}

/// Floods for `secs`; `drops` reads the node's drop counter.
pub fn run(
    ep: &Endpoints,
    secs: f64,
    drops: &dyn Fn() -> Result<u64, String>,
) -> Result<FloodResult> {
    let dst = target(ep, port_for(ep));
    let before = drops().map_err(|e| anyhow!(e))?;
    let total = Duration::from_secs_f64(secs);
    let (sent, seconds, cpu_s) = ns::in_ns(&ep.client_ns, move || -> Result<(u64, f64, f64)> {
        pin_to_cpu(CLIENT_CPU);
        let s = UdpSocket::bind(SocketAddrV4::new(DENIED_SOURCE, 0))
            .with_context(|| format!("bind UDP to {DENIED_SOURCE}"))?;
        s.connect(dst)
            .with_context(|| format!("connect UDP to {dst}"))?;
        force_buffer(s.as_raw_fd(), libc::SO_SNDBUFFORCE, 4 << 20);
        let buf = [0x5au8; PAYLOAD];
        let cpu = CpuMeter::start();
        let start = Instant::now();
        let mut sent = 0u64;
        loop {
            for _ in 0..64 {
                if s.send(&buf).is_ok() {
                    sent += 1;
                }
            }
            if start.elapsed() >= total || ns::stopped() {
                break;
            }
        }
        Ok((sent, start.elapsed().as_secs_f64(), cpu.busy_seconds()))
    })??;
    std::thread::sleep(Duration::from_millis(100));
    let after = drops().map_err(|e| anyhow!(e))?;
    ns::check_stop()?;
    if sent == 0 {
        bail!("could not send any datagram from {DENIED_SOURCE} to {dst}");
    }
    let dropped = after.saturating_sub(before);
    Ok(FloodResult {
        sent_pps: sent as f64 / seconds,
        dropped_pps: dropped as f64 / seconds,
        dropped_share: dropped as f64 / sent as f64,
        cpu_ns_per_drop: if dropped > 0 {
            cpu_s * 1e9 / dropped as f64
        } else {
            f64::NAN
        },
    })
}
