//! A small responder per pod for the port-forward and service tests: a
//! TCP server that greets every connection with the pod's name (a line),
//! then echoes what it reads until the client closes; and a UDP server
//! that answers every datagram with the pod's name. Both record the
//! client address they saw (a DNAT must keep it). Runs on threads inside
//! the pod's namespace; dropping it stops them.

use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::Duration,
};

use crate::harness::{InNs, in_ns, spawn_in_ns};

/// How often the servers look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

/// A pod's TCP and UDP responders.
pub struct Responder {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    threads: Vec<InNs<()>>,
}

impl Responder {
    /// Starts the responders of pod `name` in namespace `ns`, listening on
    /// `port` (TCP and UDP, every address); returns once both are bound.
    pub fn start(ns: &str, name: &str, port: u16) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let (ready, bound) = mpsc::channel();
        let tcp = {
            let (stop, peers, name, ready) =
                (stop.clone(), peers.clone(), name.to_owned(), ready.clone());
            spawn_in_ns(ns, move || {
                let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                    .expect("bind the TCP responder");
                l.set_nonblocking(true).unwrap();
                let _ = ready.send(());
                serve_tcp(&l, &name, &stop, &peers);
            })
        };
        let udp = {
            let (stop, peers, name) = (stop.clone(), peers.clone(), name.to_owned());
            spawn_in_ns(ns, move || {
                let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                    .expect("bind the UDP responder");
                s.set_read_timeout(Some(POLL)).unwrap();
                let _ = ready.send(());
                let mut buf = [0_u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = s.recv_from(&mut buf) {
                        peers.lock().unwrap().push(from);
                        let _ = s.send_to(name.as_bytes(), from);
                    }
                }
            })
        };
        for _ in 0..2 {
            bound
                .recv_timeout(Duration::from_secs(5))
                .expect("the responders did not start");
        }
        Self {
            stop,
            peers,
            threads: vec![tcp, udp],
        }
    }

    /// The client addresses seen so far (TCP connections and datagrams).
    pub fn peers(&self) -> Vec<SocketAddr> {
        self.peers.lock().unwrap().clone()
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn serve_tcp(l: &TcpListener, name: &str, stop: &Arc<AtomicBool>, peers: &Mutex<Vec<SocketAddr>>) {
    let mut conns = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((mut s, peer)) => {
                peers.lock().unwrap().push(peer);
                let stop = stop.clone();
                let greeting = format!("{name}\n");
                conns.push(thread::spawn(move || {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(POLL)).unwrap();
                    if s.write_all(greeting.as_bytes()).is_err() {
                        return;
                    }
                    let mut buf = [0_u8; 4096];
                    while !stop.load(Ordering::Relaxed) {
                        match s.read(&mut buf) {
                            Ok(0) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                                ) => {}
                            Err(_) => return,
                        }
                    }
                }));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL / 5),
            Err(_) => break,
        }
    }
    for c in conns {
        let _ = c.join();
    }
}

/// A connection from namespace `ns` to a responder behind `dst:port`, and
/// the name it greeted with. The socket stays open (in `ns`).
pub fn tcp_open(ns: &str, dst: Ipv4Addr, port: u16) -> io::Result<(TcpStream, String)> {
    in_ns(ns, move || {
        let s = TcpStream::connect_timeout(
            &SocketAddrV4::new(dst, port).into(),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok((s, line.trim_end().to_owned()))
    })
}

/// The name of the responder that answers a TCP connection from `ns` to
/// `dst:port` (the connection is closed after the greeting).
pub fn tcp_name(ns: &str, dst: Ipv4Addr, port: u16) -> io::Result<String> {
    tcp_open(ns, dst, port).map(|(_, name)| name)
}

/// The name of the responder that answers a datagram from `ns` to
/// `dst:port`.
pub fn udp_name(ns: &str, dst: Ipv4Addr, port: u16) -> io::Result<String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.connect(SocketAddrV4::new(dst, port))?;
        s.send(b"who?")?;
        let mut buf = [0_u8; 256];
        let n = s.recv(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
    })
}

/// Sends `msg` on an open responder connection and reads the echo.
pub fn echo(s: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
    s.write_all(msg)?;
    let mut got = vec![0_u8; msg.len()];
    s.read_exact(&mut got)?;
    Ok(got)
}
