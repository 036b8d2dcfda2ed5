//! Traffic to a service: backend servers in the pods, and the clients the
//! figures run from the LAN host.
//!
//! Every backend pod runs a [`Backends`] server on the service's target
//! ports for the whole measurement of a service count (a service's
//! connections land on either pod, so both must answer). A connection's
//! first byte says what it wants: `c` one exchange, after which the server
//! closes first (the connection-rate load, as [`crate::load::crr`]); `r`
//! an echo of every byte until the client closes (the request/response
//! load, as [`crate::load::rr`]). Servers and clients run on the same CPU,
//! as in those loads.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    load::{CLIENT_CPU, accept_unless, percentile, pin_to_cpu},
    metrics::cpu::CpuMeter,
    ns,
};

/// The first byte of a connection of the connection-rate load.
const ONCE: u8 = b'c';
/// The first byte of a request/response connection.
const ECHO: u8 = b'r';

/// The servers of the backend pods; stopped when dropped.
pub struct Backends {
    done: Arc<AtomicBool>,
    threads: Vec<ns::NsThread<Result<()>>>,
}

impl Backends {
    /// Starts a server on each of `ports` in each namespace of `pods`
    /// (listening on every address), returning once all listen.
    pub fn start(pods: &[String], ports: &[u16]) -> Result<Self> {
        let done = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for pod in pods {
            for &port in ports {
                let (tx, rx) = std::sync::mpsc::channel();
                let stop = done.clone();
                let h = ns::spawn_in_ns(pod, "svc-backend", move || -> Result<()> {
                    let addr = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port);
                    let l = match TcpListener::bind(addr) {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            l
                        }
                        Err(e) => {
                            let _ = tx.send(Err(format!("bind {addr}: {e}")));
                            return Err(e.into());
                        }
                    };
                    pin_to_cpu(CLIENT_CPU);
                    serve(&l, &stop);
                    Ok(())
                })?;
                threads.push(h);
                match rx.recv_timeout(Duration::from_secs(5)) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => bail!("backend server in {pod}: {e}"),
                    Err(_) => bail!("backend server in {pod} did not start"),
                }
            }
        }
        Ok(Self { done, threads })
    }
}

impl Drop for Backends {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        for h in self.threads.drain(..) {
            let _ = ns::join(h, "backend server");
        }
    }
}

/// Serves connections one after the other until `done`.
fn serve(l: &TcpListener, done: &AtomicBool) {
    let forever = Instant::now() + Duration::from_secs(86_400);
    while !done.load(Ordering::Relaxed) && !ns::stopped() {
        let Ok(mut s) = accept_unless(l, forever, done) else {
            continue;
        };
        let _ = s.set_nodelay(true);
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut b = [0_u8; 1];
        if s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
            continue;
        }
        if b[0] == ECHO {
            while !done.load(Ordering::Relaxed) {
                if s.read_exact(&mut b).is_err() || s.write_all(&b).is_err() {
                    break;
                }
            }
        }
        // Dropping closes: the server closes first.
    }
}

/// Whether `dst` answers from `client_ns`: one connection, one exchange.
pub fn probe(client_ns: &str, dst: SocketAddrV4, timeout: Duration) -> Result<()> {
    ns::in_ns(client_ns, move || -> Result<()> {
        let mut s = TcpStream::connect_timeout(&dst.into(), timeout)
            .with_context(|| format!("TCP connect to {dst}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(&[ONCE])?;
        let mut b = [0_u8; 1];
        s.read_exact(&mut b)
            .with_context(|| format!("read the answer of {dst}"))?;
        Ok(())
    })?
}

/// What [`connections`] measured.
#[derive(Debug, Clone)]
pub struct ConnResult {
    pub conn_per_s: f64,
    pub errors: u64,
    pub cpu_us_per_conn: f64,
    /// `connect()` returning, after the SYN and SYN-ACK: the first packet's
    /// way through the datapath and back.
    pub connect_p50_us: f64,
    pub connect_p99_us: f64,
}

/// New connections to `dst` from `client_ns`, one at a time, for `secs`:
/// connect (timed), one exchange, the server closes, the client closes.
pub fn connections(client_ns: &str, dst: SocketAddrV4, secs: f64) -> Result<ConnResult> {
    let total = Duration::from_secs_f64(secs);
    ns::in_ns(client_ns, move || -> Result<ConnResult> {
        pin_to_cpu(CLIENT_CPU);
        let cpu = CpuMeter::start();
        let start = Instant::now();
        let mut connect_ns: Vec<u64> = Vec::with_capacity(1 << 16);
        let mut errors = 0_u64;
        while start.elapsed() < total {
            if connect_ns.len().is_multiple_of(256) && ns::stopped() {
                bail!("interrupted");
            }
            let one = || -> std::io::Result<u64> {
                let t0 = Instant::now();
                let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(1))?;
                let took = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
                s.set_nodelay(true)?;
                s.set_read_timeout(Some(Duration::from_secs(1)))?;
                s.write_all(&[ONCE])?;
                let mut b = [0_u8; 1];
                s.read_exact(&mut b)?;
                // Wait for the server's FIN, then close.
                let _ = s.read(&mut b);
                Ok(took)
            };
            match one() {
                Ok(t) => connect_ns.push(t),
                Err(e) => {
                    errors += 1;
                    if errors >= 100 {
                        bail!("{errors} failed connections to {dst}, last: {e}");
                    }
                }
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let busy = cpu.busy_seconds();
        if connect_ns.is_empty() {
            bail!("no connection to {dst} completed ({errors} failed)");
        }
        let n = connect_ns.len() as f64;
        connect_ns.sort_unstable();
        Ok(ConnResult {
            conn_per_s: n / secs,
            errors,
            cpu_us_per_conn: busy * 1e6 / n,
            connect_p50_us: percentile(&connect_ns, 50.0).unwrap_or(0) as f64 / 1e3,
            connect_p99_us: percentile(&connect_ns, 99.0).unwrap_or(0) as f64 / 1e3,
        })
    })?
}

/// What [`request_response`] measured.
#[derive(Debug, Clone)]
pub struct RrResult {
    pub tps: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One connection to `dst` from `client_ns`, 1-byte requests and
/// responses as fast as it goes, for `secs` (after a short warm-up).
pub fn request_response(client_ns: &str, dst: SocketAddrV4, secs: f64) -> Result<RrResult> {
    let warmup = Duration::from_secs_f64((secs * 0.1).min(0.3));
    let total = warmup + Duration::from_secs_f64(secs);
    ns::in_ns(client_ns, move || -> Result<RrResult> {
        pin_to_cpu(CLIENT_CPU);
        let mut s = TcpStream::connect_timeout(&dst.into(), Duration::from_secs(3))
            .with_context(|| format!("connect to {dst}"))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut b = [ECHO];
        s.write_all(&b)?;
        s.read_exact(&mut b).context("the backend's first answer")?;
        let mut lat: Vec<u64> = Vec::with_capacity(1 << 16);
        let start = Instant::now();
        let mut measuring = None;
        loop {
            let t0 = Instant::now();
            if measuring.is_none() && t0 - start >= warmup {
                measuring = Some(t0);
            }
            if t0 - start >= total {
                break;
            }
            if lat.len().is_multiple_of(1024) && ns::stopped() {
                bail!("interrupted");
            }
            s.write_all(&b)?;
            s.read_exact(&mut b).context("read the response")?;
            if measuring.is_some() {
                lat.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            }
        }
        let secs = measuring.map_or(0.0, |m| m.elapsed().as_secs_f64());
        if lat.is_empty() || secs <= 0.0 {
            bail!("no transaction with {dst} completed");
        }
        lat.sort_unstable();
        Ok(RrResult {
            tps: lat.len() as f64 / secs,
            p50_us: percentile(&lat, 50.0).unwrap_or(0) as f64 / 1e3,
            p99_us: percentile(&lat, 99.0).unwrap_or(0) as f64 / 1e3,
        })
    })?
}
