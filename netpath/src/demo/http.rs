//! The demo pods' HTTP responders: each pod answers `GET` on port 80 with
//! its own name and the client address it sees, so that a `curl` through a
//! port-forward or a service shows which backend answered and that the
//! client's address was preserved (a DNAT rewrites only the destination).
//!
//! One thread per pod, inside the pod's namespace, serving one connection
//! at a time (HTTP/1.1 with `Connection: close`): enough for a demo and for
//! tests that make a handful of requests.

use std::{
    io::{self, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::sys::netns::{Netns, NetnsError};

/// The port the responders listen on.
pub const HTTP_PORT: u16 = 80;

/// Errors of starting a responder.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("HTTP responder of pod {pod}: {source}")]
    Netns {
        pod: String,
        #[source]
        source: Box<NetnsError>,
    },
    #[error("HTTP responder of pod {pod}: bind 0.0.0.0:{port}: {source}")]
    Bind {
        pod: String,
        port: u16,
        #[source]
        source: io::Error,
    },
    #[error("HTTP responder of pod {pod} did not start")]
    NotStarted { pod: String },
}

/// Running responders; dropping them stops them.
pub struct Responders {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<(), NetnsError>>>,
}

impl Responders {
    /// Starts one responder per `(pod name, pod namespace)` on `port`;
    /// returns once every one listens (or with the first failure, having
    /// stopped the others).
    pub fn start(pods: &[(String, String)], port: u16) -> Result<Self, HttpError> {
        let mut running = Responders {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
        };
        for (pod, netns) in pods {
            let ns = Netns::open(netns).map_err(|source| HttpError::Netns {
                pod: pod.clone(),
                source: Box::new(source),
            })?;
            let (tx, rx) = mpsc::channel();
            let stop = running.stop.clone();
            let name = pod.clone();
            let handle = ns
                .spawn(&format!("http-{pod}"), move || {
                    match TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)) {
                        Ok(l) => {
                            let _ = tx.send(Ok(()));
                            serve(&l, &name, &stop);
                        }
                        Err(e) => {
                            let _ = tx.send(Err(e));
                        }
                    }
                })
                .map_err(|source| HttpError::Netns {
                    pod: pod.clone(),
                    source: Box::new(source),
                })?;
            running.threads.push(handle);
            match rx.recv_timeout(Duration::from_secs(5)) {
                Ok(Ok(())) => {}
                Ok(Err(source)) => {
                    return Err(HttpError::Bind {
                        pod: pod.clone(),
                        port,
                        source,
                    });
                }
                Err(_) => return Err(HttpError::NotStarted { pod: pod.clone() }),
            }
        }
        Ok(running)
    }
}

impl Drop for Responders {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// The body a pod answers with.
pub fn body(pod: &str, local: Option<SocketAddr>, peer: SocketAddr) -> String {
    let at = local.map(|a| format!(" ({a})")).unwrap_or_default();
    format!("hello from {pod}{at}, you are {peer}\n")
}

/// Accepts until `stop`, waiting in poll(2) in 100 ms slices.
fn serve(l: &TcpListener, pod: &str, stop: &AtomicBool) {
    if l.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, peer)) => {
                let _ = answer(s, pod, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let mut pfd = libc::pollfd {
                    fd: l.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the listener's descriptor.
                unsafe { libc::poll(&raw mut pfd, 1, 100) };
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Reads the request head (up to a blank line, 8 KiB, or 2 s) and answers.
fn answer(mut s: TcpStream, pod: &str, peer: SocketAddr) -> io::Result<()> {
    s.set_nonblocking(false)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = body(pod, s.local_addr().ok(), peer);
    write!(
        s,
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\nServer: netpath-demo\r\n\r\n{text}",
        text.len()
    )?;
    s.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_the_pod_and_the_client() {
        let peer: SocketAddr = "192.168.50.1:40000".parse().unwrap();
        let local: SocketAddr = "10.200.0.3:80".parse().unwrap();
        assert_eq!(
            body("blue", Some(local), peer),
            "hello from blue (10.200.0.3:80), you are 192.168.50.1:40000\n"
        );
    }
}
