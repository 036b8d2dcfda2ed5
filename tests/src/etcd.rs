//! A real etcd (Debian's `etcd-server`) for the tests, inside a network
//! namespace the test made: started with `ip netns exec`, its data in a
//! temporary directory, killed and removed when dropped.

use std::{
    net::{Ipv4Addr, SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::harness::in_ns;

/// One etcd member serving clients on `addr:2379` inside `ns`.
pub struct EtcdServer {
    pub ns: String,
    pub addr: Ipv4Addr,
    child: Child,
    dir: PathBuf,
    log: PathBuf,
}

impl EtcdServer {
    /// Starts etcd in namespace `ns` (which must exist and have `addr`
    /// configured, `127.0.0.1` being always there) and waits until it
    /// accepts connections.
    pub fn start(ns: &str, addr: Ipv4Addr) -> Self {
        let dir = std::env::temp_dir().join(format!("netpath-etcd-{ns}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("etcd data dir");
        let log = dir.with_extension("log");
        let client = format!("http://{addr}:2379");
        let peer = format!("http://{addr}:2380");
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "etcd"])
            .args(["--name", "t", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            // Quick elections: one member, a test's patience.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("etcd log"))
            .spawn()
            .expect("start etcd (Debian's etcd-server; `cargo xtask` installs it)");
        let mut s = Self {
            ns: ns.to_owned(),
            addr,
            child,
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        let target = SocketAddr::from((addr, 2379));
        loop {
            let up = in_ns(ns, move || {
                TcpStream::connect_timeout(&target, Duration::from_millis(200)).is_ok()
            });
            if up {
                break;
            }
            if let Ok(Some(st)) = s.child.try_wait() {
                panic!("etcd exited at once ({st}): {}", s.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not listen on {target} in {ns}: {}",
                s.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// The client URL, as `[cluster] etcd_endpoints` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}:2379", self.addr)
    }

    /// What etcd printed.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.log);
    }
}
