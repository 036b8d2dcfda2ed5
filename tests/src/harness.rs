//! A harness for tests in real namespaces: a lab node per test (its own
//! node and LAN host namespaces, instance name and pins), helpers that run
//! code inside a namespace, and real TCP/UDP/ICMP traffic.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

pub use netpath::testing::block_on;
use netpath::{
    config::{Config, ConntrackConfig, NatConfig, NodeConfig, PodConfig, UplinkConfig},
    datapath::{NodeMaps, PinDir},
    demo::lab::{Lab, UPLINK},
    reconcile,
    sys::netns::{Netns, NetnsError},
    testing::{RoutedLab, in_netns, spawn_in_netns},
};

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process and call: `t<pid>-<n>-<tag>`.
pub fn unique(tag: &str) -> String {
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("t{}-{n}-{tag}", std::process::id() % 100_000)
}

/// One lab node for one test; removes everything it made when dropped.
pub struct TestNode {
    pub lab: Lab,
    pub config: Config,
    /// The second uplink, router and far host, once [`TestNode::add_router`]
    /// made them.
    pub routed: Option<RoutedLab>,
}

impl TestNode {
    /// Builds the lab (node + LAN host namespaces, uplink) and a config for
    /// it with `pods` (no pods applied yet).
    pub fn new(tag: &str, pods: &[&str]) -> Self {
        let name = unique(tag);
        let lab = Lab::new(format!("{name}-node"), format!("{name}-lan"));
        block_on(lab.create()).expect("create the lab namespaces");
        let config = Config {
            node: NodeConfig {
                name: name.clone(),
                netns: Some(lab.node_netns.clone()),
                pod_cidr: "10.200.0.0/24".parse().unwrap(),
                service_cidr: None,
                gateway: None,
                pod_netns_prefix: Some(format!("{name}-")),
                uplink: Some(UplinkConfig {
                    name: UPLINK.into(),
                    address: None,
                    gateway: None,
                }),
                xdp: None,
                deny_sources: Vec::new(),
                dns: None,
                pod_counters: None,
                metrics: None,
            },
            pods: pods.iter().map(|p| pod(p)).collect(),
            routes: Vec::new(),
            masquerade: Vec::new(),
            nat: NatConfig::default(),
            conntrack: ConntrackConfig::default(),
            port_forwards: Vec::new(),
            services: Vec::new(),
            cluster: None,
            peers: Vec::new(),
        };
        Self {
            lab,
            config,
            routed: None,
        }
    }

    /// [`TestNode::new`] whose pods reach the LAN host through masquerade
    /// behind the uplink's address (the LAN host has no route to the pods).
    pub fn masqueraded(tag: &str, pods: &[&str]) -> Self {
        let mut node = Self::new(tag, pods);
        node.config
            .masquerade
            .push(netpath::config::MasqueradeConfig {
                source: None,
                out: None,
                address: None,
            });
        node
    }

    /// Adds a second uplink (`uplink1`, 192.168.60.2/24) to a router
    /// namespace with a far host (192.168.70.2/24) behind it; removed with
    /// the node.
    pub fn add_router(&mut self) -> &RoutedLab {
        let name = self.instance().to_owned();
        let routed = RoutedLab::new(
            self.lab.node_netns.clone(),
            format!("{name}-rtr"),
            format!("{name}-far"),
        );
        block_on(routed.create()).expect("create the router and far host namespaces");
        self.routed.insert(routed)
    }

    pub fn instance(&self) -> &str {
        &self.config.node.name
    }

    /// The instance's pinned maps.
    pub fn maps(&self) -> NodeMaps {
        NodeMaps::open_pinned(&PinDir::for_instance(self.instance())).expect("pinned maps")
    }

    /// Applies the current config.
    pub fn apply(&self) -> Result<reconcile::ApplyReport, reconcile::ReconcileError> {
        block_on(reconcile::apply(&self.config))
    }

    /// The namespace of pod `name`.
    pub fn pod_ns(&self, name: &str) -> String {
        let pod = self
            .config
            .pods
            .iter()
            .find(|p| p.name == name)
            .unwrap_or_else(|| panic!("no pod {name} in the config"));
        self.config.pod_netns(pod)
    }

    /// The address pod `name` got.
    pub fn pod_addr(&self, name: &str) -> Ipv4Addr {
        reconcile::pods(self.instance()).unwrap()[name].address
    }

    /// The namespaces of this instance's pods that exist (the lab's node
    /// and LAN host namespaces are not counted).
    pub fn pod_namespaces(&self) -> Vec<String> {
        let prefix = format!("{}-", self.instance());
        Netns::list()
            .unwrap()
            .into_iter()
            .filter(|n| n.starts_with(&prefix) && !n.ends_with("-node") && !n.ends_with("-lan"))
            .collect()
    }

    /// Asserts that the instance built nothing: no pod namespace, no pod
    /// in its state.
    pub fn assert_nothing_built(&self) {
        let left = self.pod_namespaces();
        assert!(left.is_empty(), "namespaces left: {left:?}");
        let state = netpath::state::StateDir::for_instance(self.instance())
            .load()
            .unwrap();
        assert!(state.pods.is_empty(), "state has pods: {state:?}");
    }

    pub fn gateway(&self) -> Ipv4Addr {
        self.config.gateway()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        let instance = self.config.node.name.clone();
        let lab = self.lab.clone();
        let routed = self.routed.take();
        block_on(async move {
            if let Err(e) = reconcile::destroy(&instance).await {
                eprintln!("cleanup: destroy {instance}: {e}");
            }
            if let Some(routed) = routed {
                routed.destroy().await;
            }
            lab.destroy().await;
        });
    }
}

/// A pod with a dynamic address.
pub fn pod(name: &str) -> PodConfig {
    PodConfig::named(name)
}

/// Runs `f` on a thread inside namespace `ns` ([`in_netns`]); panics if
/// the namespace cannot be entered.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    in_netns(ns, f).unwrap_or_else(|e| panic!("run in {ns}: {e}"))
}

/// A thread running inside a namespace (from [`spawn_in_ns`]).
pub struct InNs<T> {
    ns: String,
    handle: thread::JoinHandle<Result<T, NetnsError>>,
}

impl<T> InNs<T> {
    /// Waits for the thread: its result, or its panic. Panics if the thread
    /// could not enter the namespace.
    pub fn join(self) -> thread::Result<T> {
        let ns = self.ns;
        self.handle
            .join()
            .map(|r| r.unwrap_or_else(|e| panic!("enter {ns}: {e}")))
    }
}

/// Spawns `f` on a thread inside namespace `ns` ([`spawn_in_netns`]).
pub fn spawn_in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> InNs<T> {
    let handle =
        spawn_in_netns(ns, &format!("in-{ns}"), f).unwrap_or_else(|e| panic!("spawn in {ns}: {e}"));
    InNs {
        ns: ns.to_owned(),
        handle,
    }
}

/// Sends `count` ICMP echo requests from namespace `ns` to `dst` and returns
/// how many matching replies came back (raw ICMP socket, as `ping` does).
pub fn ping(ns: &str, dst: Ipv4Addr, count: u16) -> u16 {
    ping_with_ident(ns, dst, count, default_ident())
}

/// The ICMP echo identifier [`ping`] uses (one per test process).
pub fn default_ident() -> u16 {
    (std::process::id() as u16) ^ 0x5a5a
}

/// [`ping`] with a chosen echo identifier (the "port" of an ICMP echo
/// flow; two flows from the same address to the same host need distinct
/// ones).
pub fn ping_with_ident(ns: &str, dst: Ipv4Addr, count: u16, ident: u16) -> u16 {
    in_ns(ns, move || {
        icmp_echo(dst, count, Duration::from_secs(2), ident)
    })
}

/// A raw ICMP socket (as `ping` opens) with a receive timeout of
/// `timeout_us` microseconds; closed when dropped.
fn raw_icmp_socket(timeout_us: i64) -> OwnedFd {
    // SAFETY: plain socket syscalls; the descriptor is owned by the returned
    // OwnedFd from the moment it exists.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        let sock = OwnedFd::from_raw_fd(fd);
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: timeout_us,
        };
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            size_of::<libc::timeval>() as u32,
        );
        sock
    }
}

fn icmp_echo(dst: Ipv4Addr, count: u16, timeout: Duration, ident: u16) -> u16 {
    let sock = raw_icmp_socket(200_000);
    let fd = sock.as_raw_fd();
    // SAFETY: plain socket syscalls on a descriptor `sock` owns.
    unsafe {
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: 0,
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(dst.octets()),
            },
            sin_zero: [0; 8],
        };
        let mut replies = 0;
        for seq in 0..count {
            let mut req = [8u8, 0, 0, 0, 0, 0, 0, 0, b'n', b'p', b'!', b'!'];
            req[4..6].copy_from_slice(&ident.to_be_bytes());
            req[6..8].copy_from_slice(&seq.to_be_bytes());
            let c = crate::packet::inet_checksum(&req);
            req[2..4].copy_from_slice(&c.to_be_bytes());
            libc::sendto(
                fd,
                req.as_ptr().cast(),
                req.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            );
            let deadline = Instant::now() + timeout;
            while Instant::now() < deadline {
                let mut buf = [0u8; 1500];
                let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                if n <= 0 {
                    continue;
                }
                let ihl = usize::from(buf[0] & 0x0f) * 4;
                let icmp = &buf[ihl..n as usize];
                if buf[12..16] == dst.octets()
                    && icmp.len() >= 8
                    && icmp[0] == 0
                    && icmp[4..6] == ident.to_be_bytes()
                    && icmp[6..8] == seq.to_be_bytes()
                {
                    replies += 1;
                    break;
                }
            }
        }
        replies
    }
}

/// Runs `serve` on a thread inside `ns` and returns once it has called
/// `ready` (its socket is bound), so that clients can connect at once.
fn start_in_ns<T: Send + 'static>(
    ns: &str,
    what: &str,
    serve: impl FnOnce(&dyn Fn()) -> T + Send + 'static,
) -> InNs<T> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = spawn_in_ns(ns, move || {
        serve(&|| {
            let _ = tx.send(());
        })
    });
    rx.recv_timeout(Duration::from_secs(5))
        .unwrap_or_else(|_| panic!("{what} did not start"));
    h
}

/// Echoes what `s` reads back to it until EOF, an error or `idle` without
/// data.
fn echo(s: &mut TcpStream, idle: Duration) {
    s.set_read_timeout(Some(idle)).unwrap();
    let mut buf = [0u8; 65536];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 || s.write_all(&buf[..n]).is_err() {
            break;
        }
    }
}

/// Starts a TCP echo server in `ns` on `addr:port` that serves `conns`
/// connections one after the other, then exits and returns the peer
/// address of each (what the server saw as the client). Returns once it is
/// listening.
pub fn tcp_echo_server(ns: &str, addr: Ipv4Addr, port: u16, conns: usize) -> InNs<Vec<SocketAddr>> {
    start_in_ns(ns, "TCP server", move |ready| {
        let l = TcpListener::bind(SocketAddrV4::new(addr, port)).expect("bind TCP");
        ready();
        let mut peers = Vec::new();
        for _ in 0..conns {
            let (mut s, peer) = l.accept().expect("accept");
            peers.push(peer);
            echo(&mut s, Duration::from_secs(5));
        }
        peers
    })
}

/// Starts a TCP server in `ns` on `addr:port` that accepts `conns`
/// connections and keeps them all open, echoing each in its own thread;
/// returns the peers once every connection has closed.
pub fn tcp_echo_server_concurrent(
    ns: &str,
    addr: Ipv4Addr,
    port: u16,
    conns: usize,
) -> InNs<Vec<SocketAddr>> {
    start_in_ns(ns, "TCP server", move |ready| {
        let l = TcpListener::bind(SocketAddrV4::new(addr, port)).expect("bind TCP");
        ready();
        let mut peers = Vec::new();
        let mut workers = Vec::new();
        for _ in 0..conns {
            let (mut s, peer) = l.accept().expect("accept");
            peers.push(peer);
            workers.push(thread::spawn(move || echo(&mut s, Duration::from_secs(20))));
        }
        for w in workers {
            let _ = w.join();
        }
        peers
    })
}

/// Connects from `ns` to `dst:port` (from local port `sport`, if given) and
/// returns the open connection: the socket stays in `ns`'s namespace.
pub fn tcp_connect(
    ns: &str,
    dst: Ipv4Addr,
    port: u16,
    sport: Option<u16>,
) -> std::io::Result<TcpStream> {
    in_ns(ns, move || {
        let stream = match sport {
            None => TcpStream::connect_timeout(
                &SocketAddrV4::new(dst, port).into(),
                Duration::from_secs(3),
            )?,
            Some(sport) => connect_from(sport, SocketAddrV4::new(dst, port))?,
        };
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(stream)
    })
}

/// A TCP connection from local port `sport` (SO_REUSEADDR, so a port in
/// TIME_WAIT can be reused).
fn connect_from(sport: u16, dst: SocketAddrV4) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket syscalls; the descriptor is owned by the
    // returned stream (or closed on error).
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&raw const one).cast(),
            size_of::<libc::c_int>() as u32,
        );
        let sin = |a: SocketAddrV4| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(a.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        let local = sin(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport));
        if libc::bind(
            fd,
            (&raw const local).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sin(dst);
        if libc::connect(
            fd,
            (&raw const remote).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        ) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}

/// Sends `msg` on an open connection and reads the echo back.
pub fn tcp_exchange(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(msg)?;
    let mut got = vec![0u8; msg.len()];
    stream.read_exact(&mut got)?;
    Ok(got)
}

/// Connects from `ns` to `dst:port`, sends `payload`, and returns what came
/// back (the same number of bytes).
pub fn tcp_roundtrip(
    ns: &str,
    dst: Ipv4Addr,
    port: u16,
    payload: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    in_ns(ns, move || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddrV4::new(dst, port).into(),
            Duration::from_secs(3),
        )?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&payload)?;
        let mut got = vec![0u8; payload.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    })
}

/// Starts a UDP echo server in `ns` answering `datagrams` datagrams; it
/// returns the source address of each.
pub fn udp_echo_server(
    ns: &str,
    addr: Ipv4Addr,
    port: u16,
    datagrams: usize,
) -> InNs<Vec<SocketAddr>> {
    start_in_ns(ns, "UDP server", move |ready| {
        let s = UdpSocket::bind(SocketAddrV4::new(addr, port)).expect("bind UDP");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        ready();
        let mut buf = [0u8; 65536];
        let mut peers = Vec::new();
        for _ in 0..datagrams {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                break;
            };
            peers.push(from);
            let _ = s.send_to(&buf[..n], from);
        }
        peers
    })
}

/// Sends one datagram from `ns` to `dst:port` and returns the echo.
pub fn udp_roundtrip(
    ns: &str,
    dst: Ipv4Addr,
    port: u16,
    payload: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send_to(&payload, SocketAddrV4::new(dst, port))?;
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// Sends one datagram from a connected UDP socket in `ns` to `dst:port`
/// and waits for an answer: `Err` with `ConnectionRefused` when an ICMP
/// port unreachable came back (the kernel reports it on the next receive
/// of a connected socket).
pub fn udp_connected_roundtrip(
    ns: &str,
    dst: Ipv4Addr,
    port: u16,
    payload: Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.connect(SocketAddrV4::new(dst, port))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        s.send(&payload)?;
        let mut buf = vec![0u8; 65536];
        let n = s.recv(&mut buf)?;
        buf.truncate(n);
        Ok(buf)
    })
}

/// Watches ICMP echo requests arriving in `ns` (a raw ICMP socket sees a
/// copy of every ICMP packet) until [`IcmpWatch::stop`]; returns their
/// source addresses.
pub struct IcmpWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: InNs<Vec<Ipv4Addr>>,
}

impl IcmpWatch {
    pub fn start(ns: &str) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = start_in_ns(ns, "ICMP watcher", move |ready| {
            let sock = raw_icmp_socket(100_000);
            let fd = sock.as_raw_fd();
            ready();
            // SAFETY: plain socket syscalls on a descriptor `sock` owns.
            unsafe {
                let mut sources = Vec::new();
                loop {
                    // Read what is queued even once told to stop (a watcher
                    // scheduled late must still see every request): stop
                    // only when stopping and the queue is empty.
                    let stopping = flag.load(Ordering::Relaxed);
                    let mut buf = [0u8; 1500];
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 0 && stopping {
                        break;
                    }
                    if n < 28 {
                        continue;
                    }
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    if buf[ihl] == 8 {
                        sources.push(Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
                    }
                }
                sources
            }
        });
        Self { stop, handle }
    }

    /// Stops watching; the sources of the echo requests seen.
    pub fn stop(self) -> Vec<Ipv4Addr> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().expect("ICMP watcher panicked")
    }
}

/// Runs `program args...` inside `ns` (spawned from a thread in the
/// namespace, so the child starts there) and returns its stdout; panics
/// when it cannot run or fails.
pub fn run_in_ns(ns: &str, program: &str, args: &[&str]) -> String {
    let program = program.to_owned();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let what = format!("{program} {}", args.join(" "));
    let out = in_ns(ns, move || {
        std::process::Command::new(&program).args(&args).output()
    })
    .unwrap_or_else(|e| panic!("run {what} (installed by cargo xtask test?): {e}"));
    assert!(
        out.status.success(),
        "{what} in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A `/proc/net/snmp` IP counter (e.g. "ForwDatagrams") inside `ns`.
pub fn ip_snmp_counter(ns: &str, name: &str) -> u64 {
    let name = name.to_owned();
    in_ns(ns, move || {
        // /proc/net is per network namespace of the reading thread
        // (/proc/thread-self/net, not /proc/self/net).
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("read snmp");
        let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let i = header
            .iter()
            .position(|h| *h == name)
            .expect("counter name");
        values[i].parse().unwrap()
    })
}

/// Sends a raw Ethernet frame out of `ifname` inside `ns` (AF_PACKET), as a
/// misbehaving pod could.
pub fn send_raw_frame(ns: &str, ifname: &str, frame: Vec<u8>) {
    let ifname = ifname.to_owned();
    in_ns(ns, move || {
        let index = nix::net::if_::if_nametoindex(ifname.as_str()).expect("ifindex");
        // SAFETY: plain socket syscalls on a descriptor owned by this closure.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                fd,
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const addr).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            assert_eq!(n, frame.len() as isize, "{err}");
        }
    });
}
