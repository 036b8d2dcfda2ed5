//! Load generators. Each runs its server on a thread (or process) inside the
//! server namespace and its client inside the client namespace, for a fixed
//! time, bounded in count too, and checks the stop flag.
//!
//! [`iperf`]: TCP throughput (iperf3). [`rr`]: request/response on one TCP
//! connection. [`crr`]: connect, one exchange, close. [`udp`]: 64-byte
//! datagrams, delivered rate and loss. [`flows`]: idle UDP flows that fill a
//! conntrack table.

pub mod crr;
pub mod flood;
pub mod flows;
pub mod iperf;
pub mod rr;
pub mod udp;

use std::{
    io::{self, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::atomic::{AtomicBool, AtomicU16, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{ns, topology::Endpoints};

static NEXT_PORT: AtomicU16 = AtomicU16::new(20_000);

/// A fresh server port for each measurement (no TIME_WAIT leftovers).
pub fn port() -> u16 {
    let p = NEXT_PORT.fetch_add(1, Ordering::Relaxed);
    if p >= 29_000 {
        NEXT_PORT.store(20_000, Ordering::Relaxed);
    }
    p
}

/// The server port of a measurement: the port-forward's when the
/// endpoints have one, a fresh one otherwise.
pub fn port_for(ep: &Endpoints) -> u16 {
    ep.forward.map_or_else(port, |f| f.port())
}

/// Accepts one connection, giving up at `deadline` or on stop.
pub fn accept_until(l: &TcpListener, deadline: Instant) -> io::Result<TcpStream> {
    accept_unless(l, deadline, &AtomicBool::new(false))
}

/// Accepts one connection, giving up at `deadline`, on stop, or once
/// `done` is set. Waits in poll(2) (50 ms slices), so a connection is
/// accepted the moment it arrives.
pub fn accept_unless(
    l: &TcpListener,
    deadline: Instant,
    done: &AtomicBool,
) -> io::Result<TcpStream> {
    l.set_nonblocking(true)?;
    loop {
        match l.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline || ns::stopped() || done.load(Ordering::Relaxed) {
                    return Err(io::Error::new(io::ErrorKind::TimedOut, "no connection"));
                }
                let mut pfd = libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the listener's descriptor.
                unsafe { libc::poll(&mut pfd, 1, 50) };
            }
            Err(e) => return Err(e),
        }
    }
}

/// Binds a TCP listener in the server namespace and hands it to `serve` on
/// a thread there; returns once it listens.
pub fn tcp_server<T: Send + 'static>(
    ep: &Endpoints,
    port: u16,
    serve: impl FnOnce(TcpListener) -> Result<T> + Send + 'static,
) -> Result<ns::NsThread<Result<T>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = SocketAddrV4::new(ep.server_addr, port);
    let h = ns::spawn_in_ns(&ep.server_ns, "bench-server", move || {
        let l = match TcpListener::bind(addr) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.send(Err(format!("bind {addr}: {e}")));
                return Err(e.into());
            }
        };
        let _ = tx.send(Ok(()));
        serve(l)
    })?;
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => Ok(h),
        Ok(Err(e)) => bail!("server in {}: {e}", ep.server_ns),
        Err(_) => bail!("server in {} did not start", ep.server_ns),
    }
}

/// Whether the client can reach the server: a TCP connect and a one-byte
/// echo within `timeout`.
pub fn probe(ep: &Endpoints, timeout: Duration) -> Result<()> {
    let port = port_for(ep);
    let deadline = Instant::now() + timeout;
    let server = tcp_server(ep, port, move |l| {
        let mut s = accept_until(&l, deadline)?;
        s.set_read_timeout(Some(timeout))?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        s.write_all(&b)?;
        Ok(())
    })?;
    let dst = target(ep, port);
    let client = ns::in_ns(&ep.client_ns, move || -> Result<()> {
        let mut s = TcpStream::connect_timeout(&dst.into(), timeout)
            .with_context(|| format!("TCP connect to {dst}"))?;
        s.set_read_timeout(Some(timeout))?;
        s.write_all(b"p")?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).context("read the echo")?;
        Ok(())
    })?;
    let served = ns::join(server, "probe server");
    client?;
    served??;
    Ok(())
}

/// Pins the calling thread to CPU `cpu` (modulo the CPUs there are), so
/// every setup sees the same placement: the request/response loads keep
/// client and server on one CPU (the whole transaction, softirqs included,
/// runs there; no cross-CPU wake-ups, which a VM makes slow and erratic),
/// the UDP load puts sender and receiver on different ones. Best effort.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays within it;
    // sched_setaffinity(0) affects only the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu_index(cpu), &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

/// `cpu` modulo the CPUs this process may use.
pub fn cpu_index(cpu: usize) -> usize {
    cpu % std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
}

/// The CPU the client of a load runs on.
pub const CLIENT_CPU: usize = 0;
/// The CPU the server of a two-CPU load runs on.
pub const SERVER_CPU: usize = 1;

/// Raises a socket buffer (SO_RCVBUFFORCE/SO_SNDBUFFORCE: root ignores
/// rmem_max), best effort.
pub fn force_buffer(fd: std::os::fd::RawFd, opt: libc::c_int, bytes: libc::c_int) {
    // SAFETY: setsockopt on a valid descriptor with a c_int option value.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&raw const bytes).cast(),
            size_of::<libc::c_int>() as u32,
        );
    }
}

/// The address a client connects to: the server's, or the port-forward's
/// in front of it.
pub fn target(ep: &Endpoints, port: u16) -> SocketAddrV4 {
    ep.forward
        .unwrap_or_else(|| SocketAddrV4::new(ep.server_addr, port))
}

/// Percentile (0..=100) of sorted values, nearest rank.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Keeps only loopback-free, private addresses as targets (a last check:
/// every bench address is in 10/8 or 192.168.50/24 inside its namespaces).
pub fn check_target(addr: Ipv4Addr) -> Result<()> {
    let o = addr.octets();
    if o[0] == 10 || (o[0] == 192 && o[1] == 168 && o[2] == 50) {
        Ok(())
    } else {
        bail!("refusing to send to {addr}: not a bench address")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn targets() {
        assert!(check_target(Ipv4Addr::new(10, 201, 0, 3)).is_ok());
        assert!(check_target(Ipv4Addr::new(192, 168, 50, 1)).is_ok());
        assert!(check_target(Ipv4Addr::new(192, 168, 1, 1)).is_err());
        assert!(check_target(Ipv4Addr::new(8, 8, 8, 8)).is_err());
    }
}
