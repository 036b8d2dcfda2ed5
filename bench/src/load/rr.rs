//! Request/response: one TCP connection (TCP_NODELAY), the client writes
//! `size` bytes and waits for the same `size` bytes back, as fast as it can
//! for the given time (netperf's TCP_RR). Every transaction's latency is
//! kept, so p50/p99 are exact. Client and server share one CPU (see
//! [`super::pin_to_cpu`]).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{
    CLIENT_CPU, accept_until, check_target, percentile, pin_to_cpu, port_for, target, tcp_server,
};
use crate::{metrics::cpu::CpuMeter, ns, topology::Endpoints};

/// At most this many transactions per run, whatever the time.
const MAX_TRANSACTIONS: usize = 20_000_000;

#[derive(Debug, Clone)]
pub struct RrResult {
    pub transactions: u64,
    pub seconds: f64,
    pub tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Machine-wide busy CPU time per transaction (all cores), µs.
    pub cpu_us_per_tx: f64,
}

pub fn run(ep: &Endpoints, size: usize, secs: f64) -> Result<RrResult> {
    check_target(ep.server_addr)?;
    let port = port_for(ep);
    let warmup = Duration::from_secs_f64((secs * 0.1).min(0.3));
    let total = warmup + Duration::from_secs_f64(secs);
    let server_deadline = Instant::now() + total + Duration::from_secs(10);
    let server = tcp_server(ep, port, move |l| {
        pin_to_cpu(CLIENT_CPU);
        let mut s = accept_until(&l, Instant::now() + Duration::from_secs(5))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = vec![0u8; size];
        let mut n = 0u64;
        while Instant::now() < server_deadline {
            match s.read_exact(&mut buf) {
                Ok(()) => {}
                Err(_) => break, // EOF: the client is done
            }
            s.write_all(&buf)?;
            n += 1;
        }
        Ok(n)
    })?;
    let dst = target(ep, port);
    let client = ns::in_ns(&ep.client_ns, move || -> Result<(Vec<u64>, f64, f64)> {
        pin_to_cpu(CLIENT_CPU);
        let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))
            .with_context(|| format!("connect to {dst}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut buf = vec![0x5au8; size];
        let mut lat = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        let mut measuring = None;
        let mut cpu = None;
        loop {
            let t0 = Instant::now();
            if measuring.is_none() && t0 - start >= warmup {
                measuring = Some(t0);
                cpu = Some(CpuMeter::start());
            }
            if t0 - start >= total || lat.len() >= MAX_TRANSACTIONS {
                break;
            }
            if lat.len() % 1024 == 0 && ns::stopped() {
                bail!("interrupted");
            }
            s.write_all(&buf)?;
            s.read_exact(&mut buf).context("read the response")?;
            if measuring.is_some() {
                lat.push(t0.elapsed().as_nanos() as u64);
            }
        }
        let secs = measuring.map_or(0.0, |m| m.elapsed().as_secs_f64());
        let cpu_s = cpu.map_or(0.0, |c| c.busy_seconds());
        Ok((lat, secs, cpu_s))
    })?;
    let served = ns::join(server, "rr server");
    let (mut lat, secs, cpu_s) = client?;
    served??;
    if lat.is_empty() || secs <= 0.0 {
        bail!("no transaction completed");
    }
    lat.sort_unstable();
    let n = lat.len() as u64;
    Ok(RrResult {
        transactions: n,
        seconds: secs,
        tps: n as f64 / secs,
        p50_us: percentile(&lat, 50.0).unwrap_or(0) as f64 / 1e3,
        p99_us: percentile(&lat, 99.0).unwrap_or(0) as f64 / 1e3,
        cpu_us_per_tx: cpu_s * 1e6 / n as f64,
    })
}
