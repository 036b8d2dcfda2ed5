//! Small-packet rate: the client sends 64-byte UDP datagrams as fast as it
//! can (one connected socket, `send` in a loop) for the given time; the
//! server counts what arrives (sender and receiver on different CPUs). Delivered rate = received / send time; loss =
//! 1 - received / sent. With 2 cores the sender outruns the receiver, so the
//! loss mostly says where the machine saturates, the delivered rate is the
//! figure.

use std::{
    net::{SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use super::{CLIENT_CPU, SERVER_CPU, check_target, force_buffer, pin_to_cpu, port_for, target};
use crate::{metrics::cpu::CpuMeter, ns, topology::Endpoints};

pub const PAYLOAD: usize = 64;
/// At most this many datagrams per run, whatever the time.
const MAX_DATAGRAMS: u64 = 200_000_000;

#[derive(Debug, Clone)]
pub struct UdpResult {
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
    pub sent_pps: f64,
    pub delivered_pps: f64,
    pub loss: f64,
    pub cpu_ns_per_pkt: f64,
}

/// Runs the load; `during` is called (on the calling thread) right before
/// the sender starts and right after it stops, e.g. to read BPF program
/// statistics.
pub fn run(ep: &Endpoints, secs: f64, mut during: impl FnMut()) -> Result<UdpResult> {
    check_target(ep.server_addr)?;
    let port = port_for(ep);
    let bind = SocketAddrV4::new(ep.server_addr, port);
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel();
    let server_stop = stop.clone();
    let hard_deadline = Instant::now() + Duration::from_secs_f64(secs) + Duration::from_secs(10);
    let server = ns::spawn_in_ns(&ep.server_ns, "udp-sink", move || -> Result<u64> {
        pin_to_cpu(SERVER_CPU);
        let s = match UdpSocket::bind(bind) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(format!("bind {bind}: {e}")));
                return Err(e.into());
            }
        };
        force_buffer(s.as_raw_fd(), libc::SO_RCVBUFFORCE, 8 << 20);
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        let _ = tx.send(Ok(()));
        let mut buf = [0u8; 2048];
        let mut n = 0u64;
        while !server_stop.load(Ordering::Relaxed) && Instant::now() < hard_deadline {
            if s.recv(&mut buf).is_ok() {
                n += 1;
            }
        }
        // Drain what is queued already.
        s.set_nonblocking(true)?;
        while s.recv(&mut buf).is_ok() {
            n += 1;
        }
        Ok(n)
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => bail!("UDP sink in {}: {e}", ep.server_ns),
        Err(_) => bail!("UDP sink in {} did not start", ep.server_ns),
    }
    during();
    let dst = target(ep, port);
    let total = Duration::from_secs_f64(secs);
    let sent = ns::in_ns(&ep.client_ns, move || -> Result<(u64, f64, f64)> {
        pin_to_cpu(CLIENT_CPU);
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dst)
            .with_context(|| format!("connect UDP to {dst}"))?;
        force_buffer(s.as_raw_fd(), libc::SO_SNDBUFFORCE, 4 << 20);
        let buf = [0xa5u8; PAYLOAD];
        let cpu = CpuMeter::start();
        let start = Instant::now();
        let mut sent = 0u64;
        loop {
            for _ in 0..64 {
                if s.send(&buf).is_ok() {
                    sent += 1;
                }
            }
            if start.elapsed() >= total || sent >= MAX_DATAGRAMS || ns::stopped() {
                break;
            }
        }
        Ok((sent, start.elapsed().as_secs_f64(), cpu.busy_seconds()))
    });
    // Let in-flight datagrams land, then stop the sink.
    std::thread::sleep(Duration::from_millis(100));
    during();
    stop.store(true, Ordering::Relaxed);
    let received = ns::join(server, "udp sink");
    let (sent, seconds, cpu_s) = sent??;
    let received = received??;
    ns::check_stop()?;
    if sent == 0 {
        bail!("could not send any datagram to {dst}");
    }
    Ok(UdpResult {
        sent,
        received,
        seconds,
        sent_pps: sent as f64 / seconds,
        delivered_pps: received as f64 / seconds,
        loss: 1.0 - (received.min(sent) as f64 / sent as f64),
        cpu_ns_per_pkt: if received > 0 {
            cpu_s * 1e9 / received as f64
        } else {
            f64::NAN
        },
    })
}
