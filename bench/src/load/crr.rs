//! New connections per second (netperf's TCP_CRR): connect, send one byte,
//! read one byte back, close; one connection at a time, for the given time.
//!
//! The server closes first (after its reply), so the TIME_WAIT sockets stay
//! on the server side and the client's ephemeral ports (the default range,
//! which a NAT keeps when it can) are free again at once; a reused port
//! meets the server's TIME_WAIT socket, which takes the new SYN (newer
//! timestamps), and the datapath's connection entry in TIME_WAIT, which a
//! NAT must let the new connection replace.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::{CLIENT_CPU, accept_unless, check_target, pin_to_cpu, target, tcp_server};
use crate::{metrics::cpu::CpuMeter, ns, topology::Endpoints};

/// One server port for every run: the connection tuples repeat across runs
/// (the client's ephemeral ports cycle), so the datapaths' connection tables
/// hold at most one entry per client port from this figure, not one per
/// connection ever made.
pub const PORT: u16 = 19_999;
/// At most this many connections per run, whatever the time.
const MAX_CONNECTIONS: u64 = 2_000_000;
/// Give up after this many failed connections in one run.
const MAX_ERRORS: u64 = 100;

#[derive(Debug, Clone)]
pub struct CrrResult {
    pub connections: u64,
    pub errors: u64,
    pub seconds: f64,
    pub conn_per_s: f64,
    pub cpu_us_per_conn: f64,
}

pub fn run(ep: &Endpoints, secs: f64) -> Result<CrrResult> {
    check_target(ep.server_addr)?;
    let port = ep.forward.map_or(PORT, |f| f.port());
    let total = Duration::from_secs_f64(secs);
    let server_deadline = Instant::now() + total + Duration::from_secs(5);
    let done = Arc::new(AtomicBool::new(false));
    let server_done = done.clone();
    let server = tcp_server(ep, port, move |l| {
        pin_to_cpu(CLIENT_CPU);
        let mut served = 0u64;
        while Instant::now() < server_deadline && !ns::stopped() {
            let Ok(mut s) = accept_unless(&l, server_deadline, &server_done) else {
                break;
            };
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() && s.write_all(&b).is_ok() {
                served += 1;
            }
            // Dropping closes: the server closes first.
        }
        Ok(served)
    })?;
    let dst = target(ep, port);
    let client = ns::in_ns(&ep.client_ns, move || -> Result<(u64, u64, f64, f64)> {
        pin_to_cpu(CLIENT_CPU);
        let start = Instant::now();
        let cpu = CpuMeter::start();
        let (mut ok, mut errors) = (0u64, 0u64);
        while start.elapsed() < total && ok < MAX_CONNECTIONS {
            if ok % 256 == 0 && ns::stopped() {
                bail!("interrupted");
            }
            let one = || -> std::io::Result<()> {
                let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(1))?;
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(b"c")?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)?;
                // Wait for the server's FIN, then close.
                let _ = s.read(&mut b);
                Ok(())
            };
            match one() {
                Ok(()) => ok += 1,
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_ERRORS {
                        bail!("{errors} failed connections to {dst}, last: {e}");
                    }
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        Ok((ok, errors, secs, cpu.busy_seconds()))
    });
    // The server leaves its accept loop once the client is done.
    done.store(true, Ordering::Relaxed);
    let client = client?;
    let served = ns::join(server, "crr server");
    let (ok, errors, secs, cpu_s) = client?;
    served??;
    if ok == 0 {
        bail!("no connection completed ({errors} failed)");
    }
    Ok(CrrResult {
        connections: ok,
        errors,
        seconds: secs,
        conn_per_s: ok as f64 / secs,
        cpu_us_per_conn: cpu_s * 1e6 / ok as f64,
    })
}
