//! `[node.dns]` in real namespaces, observed with the real tools: what
//! `ip netns exec POD cat /etc/resolv.conf` and `getent` see inside a pod
//! netpath owns, a DNS query from the pod reaching a DNS server on the LAN
//! host (through the datapath's masquerade), a DNS change reaching a
//! running pod without recreating it, and netpath's files going with the
//! pod, never anyone else's.

use std::{
    fs,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use netpath::{
    config::{ConfigError, DnsConfig},
    reconcile::{self, PlanError, ReconcileError},
    sys::netns::Netns,
};
use tests::harness::{TestNode, block_on, in_ns, pod, unique};

/// The LAN host: the pods' nameserver.
const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The node's uplink address: the source the LAN host sees.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// What the responder answers for every name.
const ANSWER: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn dns(nameservers: &[Ipv4Addr], search: &[&str], options: &[&str]) -> DnsConfig {
    DnsConfig {
        nameservers: nameservers.to_vec(),
        search: search.iter().map(|s| (*s).to_owned()).collect(),
        options: options.iter().map(|s| (*s).to_owned()).collect(),
    }
}

/// `/etc/netns/<netns>`.
fn etc_dir(netns: &str) -> PathBuf {
    Path::new("/etc/netns").join(netns)
}

/// `ip netns exec NETNS ARGS...` (which bind-mounts `/etc/netns/NETNS/*`
/// over `/etc/`): its stdout; panics when it fails.
fn netns_exec(netns: &str, args: &[&str]) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", netns])
        .args(args)
        .output()
        .expect("run ip netns exec");
    assert!(
        out.status.success(),
        "ip netns exec {netns} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// The lines of the pod's resolv.conf after netpath's marker line, which
/// is checked to name the instance and the pod.
fn resolv_conf(node: &TestNode, pod: &str) -> Vec<String> {
    let text = netns_exec(&node.pod_ns(pod), &["cat", "/etc/resolv.conf"]);
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with("# netpath wrote this file")
            && first.contains(&format!("pod {pod} "))
            && first.contains(node.instance()),
        "{text}"
    );
    lines.map(str::to_owned).collect()
}

/// The host-side veth's ifindex of the pod at `address`, from the endpoint
/// map.
fn veth_ifindex(node: &TestNode, address: Ipv4Addr) -> u32 {
    node.maps().endpoints().unwrap()[&address].ifindex
}

/// A DNS server on UDP port 53 in a namespace that answers every A query
/// with [`ANSWER`] (and any other question with no record), and records
/// each name asked and who asked.
struct Responder {
    stop: Arc<AtomicBool>,
    asked: Arc<Mutex<Vec<(String, SocketAddr)>>>,
    thread: thread::JoinHandle<()>,
}

impl Responder {
    fn start(ns: &str, address: Ipv4Addr) -> Self {
        // A socket belongs to the namespace it was made in: bind it there,
        // serve it from anywhere.
        let sock = in_ns(ns, move || UdpSocket::bind((address, 53))).expect("bind UDP port 53");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let asked = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, asked) = (stop.clone(), asked.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 512];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, from)) = sock.recv_from(&mut buf) else {
                        continue;
                    };
                    if let Some((name, reply)) = dns_answer(&buf[..n]) {
                        asked.lock().unwrap().push((name, from));
                        let _ = sock.send_to(&reply, from);
                    }
                }
            })
        };
        Self {
            stop,
            asked,
            thread,
        }
    }

    /// Stops the server: the names asked, in order, with who asked.
    fn stop(self) -> Vec<(String, SocketAddr)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("DNS responder panicked");
        Arc::try_unwrap(self.asked)
            .expect("the responder thread is gone")
            .into_inner()
            .unwrap()
    }
}

/// The answer to a DNS query (RFC 1035 4.1): the same id and question, and
/// one A record of [`ANSWER`] if it asks for an IPv4 address (class IN,
/// type A), else none. `None` for anything but a one-question query.
fn dns_answer(query: &[u8]) -> Option<(String, Vec<u8>)> {
    let qdcount = u16::from_be_bytes([*query.get(4)?, *query.get(5)?]);
    if query.len() < 12 || query[2] & 0x80 != 0 || qdcount != 1 {
        return None;
    }
    // QNAME: length-prefixed labels up to a zero byte (no compression in a
    // question), then QTYPE and QCLASS.
    let mut labels = Vec::new();
    let mut at = 12;
    loop {
        let len = usize::from(*query.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        labels.push(String::from_utf8_lossy(query.get(at..at + len)?).into_owned());
        at += len;
    }
    let question = query.get(12..at + 4)?;
    let is_a = query[at..at + 4] == [0, 1, 0, 1];
    let mut reply = Vec::with_capacity(question.len() + 28);
    reply.extend_from_slice(&query[..2]); // id
    reply.push(0x80 | (query[2] & 0x79)); // QR, the query's opcode and RD
    reply.push(0x80); // RA, NOERROR
    reply.extend_from_slice(&[0, 1, 0, u8::from(is_a), 0, 0, 0, 0]);
    reply.extend_from_slice(question);
    if is_a {
        // NAME (a pointer to the question's), TYPE A, CLASS IN, TTL 60,
        // RDLENGTH 4, RDATA.
        reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        reply.extend_from_slice(&ANSWER.octets());
    }
    Some((labels.join("."), reply))
}

/// Removes a directory when dropped (what a test put under /etc/netns).
struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn pods_resolve_with_node_dns_and_a_change_reaches_them_without_recreating() {
    // A pod in a namespace a runtime made (CNI): netpath writes nothing
    // for it. (Made first, so that it goes after the node is destroyed.)
    let given = unique("cni");
    block_on(Netns::create(&given)).expect("create the runtime's namespace");
    let _given_gone = GivenNetns(given.clone());
    let mut node = TestNode::masqueraded("dns", &["red"]);
    node.config.node.dns = Some(dns(
        &[LAN],
        &["cluster.local", "svc.cluster.local"],
        &["ndots:5"],
    ));
    let mut cni = pod("cni");
    cni.netns_path = Some(Path::new("/run/netns").join(&given));
    node.config.pods.push(cni);

    let report = node.apply().expect("apply");
    assert_eq!(report.created, ["red", "cni"]);
    let red = node.pod_ns("red");
    let red_addr = node.pod_addr("red");
    assert_eq!(
        resolv_conf(&node, "red"),
        [
            "nameserver 192.168.50.1",
            "search cluster.local svc.cluster.local",
            "options ndots:5",
        ]
    );
    let hosts = netns_exec(&red, &["getent", "hosts", "red"]);
    assert_eq!(
        hosts.split_whitespace().collect::<Vec<_>>(),
        [red_addr.to_string().as_str(), "red"],
        "{hosts}"
    );
    let localhost = netns_exec(&red, &["getent", "hosts", "localhost"]);
    assert!(
        localhost.starts_with("127.0.0.1") || localhost.starts_with("::1"),
        "{localhost}"
    );
    assert!(!etc_dir(&given).exists(), "files written for a CNI pod");
    assert_eq!(
        netns_exec(&given, &["cat", "/etc/resolv.conf"]),
        fs::read_to_string("/etc/resolv.conf").unwrap(),
        "the CNI pod should see the node's own resolv.conf"
    );

    // A query from the pod reaches the nameserver, masqueraded, and the
    // answer comes back; ndots:5 makes the resolver try the search list
    // first.
    let server = Responder::start(&node.lab.lan_netns, LAN);
    let out = netns_exec(&red, &["getent", "ahostsv4", "web.cluster.local"]);
    let asked = server.stop();
    assert!(out.starts_with(&format!("{ANSWER} ")), "{out}");
    let (first, from) = asked.first().expect("the responder got no query");
    assert_eq!(first, "web.cluster.local.cluster.local", "{asked:?}");
    assert_eq!(from.ip(), NODE, "{asked:?}");

    // Another [node.dns], applied: the running pod gets it, and is not
    // recreated (same veth); no program is reloaded.
    let ifindex = veth_ifindex(&node, red_addr);
    node.config.node.dns = Some(dns(
        &[LAN, Ipv4Addr::new(192, 168, 50, 53)],
        &["example.test"],
        &["ndots:1", "timeout:1"],
    ));
    let report = node.apply().expect("apply the DNS change");
    assert_eq!(report.unchanged, ["red", "cni"], "{report:?}");
    assert!(
        report.created.is_empty() && report.recreated.is_empty(),
        "{report:?}"
    );
    assert!(!report.programs_loaded, "{report:?}");
    assert_eq!(report.dns.len(), 1, "{report:?}");
    assert!(report.dns[0].contains("rewritten"), "{report:?}");
    assert_eq!(
        resolv_conf(&node, "red"),
        [
            "nameserver 192.168.50.1",
            "nameserver 192.168.50.53",
            "search example.test",
            "options ndots:1 timeout:1",
        ]
    );
    assert_eq!(veth_ifindex(&node, red_addr), ifindex, "red was recreated");
    let again = node.apply().expect("apply again");
    assert!(!again.changed(), "{again:?}");

    // Four nameservers: refused before anything changes.
    let mut bad = node.config.clone();
    bad.node.dns.as_mut().unwrap().nameservers = vec![LAN; 4];
    let err = block_on(reconcile::apply(&bad)).unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Config(ConfigError::DnsTooManyNameservers { count: 4 })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("at most 3"), "{err}");
    assert_eq!(resolv_conf(&node, "red")[1], "nameserver 192.168.50.53");

    // Without [node.dns]: netpath's files go, the pod stays and sees the
    // node's own.
    node.config.node.dns = None;
    let report = node.apply().expect("apply without [node.dns]");
    assert!(report.dns[0].contains("removed"), "{report:?}");
    assert!(!etc_dir(&red).exists());
    assert_eq!(
        netns_exec(&red, &["cat", "/etc/resolv.conf"]),
        fs::read_to_string("/etc/resolv.conf").unwrap()
    );
    assert_eq!(veth_ifindex(&node, red_addr), ifindex, "red was recreated");

    // Back, then the pod deleted: its directory goes with it.
    node.config.node.dns = Some(dns(&[LAN], &[], &[]));
    node.apply().expect("apply with [node.dns] again");
    assert_eq!(resolv_conf(&node, "red"), ["nameserver 192.168.50.1"]);
    node.config.pods.retain(|p| p.name != "red");
    let report = node.apply().expect("delete red");
    assert_eq!(report.deleted, ["red"]);
    assert!(
        !etc_dir(&red).exists(),
        "{} left behind",
        etc_dir(&red).display()
    );
    assert!(!Netns::exists(&red));
}

/// Deletes a namespace the test made (as a container runtime would) when
/// dropped.
struct GivenNetns(String);

impl Drop for GivenNetns {
    fn drop(&mut self) {
        let _ = block_on(Netns::delete(&self.0));
    }
}

#[test]
fn files_netpath_did_not_write_are_never_touched() {
    let mut node = TestNode::masqueraded("dnsforeign", &["red"]);
    node.config.node.dns = Some(dns(&[LAN], &["cluster.local"], &[]));
    let dir = etc_dir(&node.pod_ns("red"));
    let _cleanup = RemoveDir(dir.clone());

    // Someone else's resolv.conf where the pod's would go: the apply is
    // refused before anything is built.
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("resolv.conf"), "nameserver 198.51.100.1\n").unwrap();
    let err = node.apply().unwrap_err();
    assert!(
        matches!(err, ReconcileError::Plan(PlanError::EtcFileTaken { .. })),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("resolv.conf").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("did not write"), "{msg}");
    node.assert_nothing_built();
    assert_eq!(
        fs::read_to_string(dir.join("resolv.conf")).unwrap(),
        "nameserver 198.51.100.1\n"
    );

    // Someone else's other file beside netpath's: deleting the pod removes
    // netpath's two files and leaves theirs, and the directory.
    fs::remove_file(dir.join("resolv.conf")).unwrap();
    fs::write(dir.join("gai.conf"), "precedence ::ffff:0:0/96 100\n").unwrap();
    node.apply().expect("apply");
    assert_eq!(
        resolv_conf(&node, "red"),
        ["nameserver 192.168.50.1", "search cluster.local"]
    );
    node.config.pods.clear();
    node.apply().expect("delete the pod");
    let mut left: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["gai.conf"]);
}

#[test]
fn four_nameservers_are_refused_before_anything_is_built() {
    let mut node = TestNode::masqueraded("dns4", &["red"]);
    node.config.node.dns = Some(dns(&[LAN, LAN, LAN, LAN], &[], &[]));
    let err = node.apply().unwrap_err();
    assert!(
        matches!(
            err,
            ReconcileError::Config(ConfigError::DnsTooManyNameservers { count: 4 })
        ),
        "{err}"
    );
    node.assert_nothing_built();
    assert!(!etc_dir(&node.pod_ns("red")).exists());
}

#[test]
fn a_failed_apply_puts_the_files_back() {
    let mut node = TestNode::masqueraded("dnsundo", &["red"]);
    node.config.node.dns = Some(dns(&[LAN], &["cluster.local"], &[]));
    node.apply().expect("apply");
    let before = resolv_conf(&node, "red");

    // A DNS change and a new pod whose creation fails after its files are
    // written: red's files are put back, blue's go with it.
    node.config.node.dns = Some(dns(&[LAN], &["example.test"], &["ndots:2"]));
    node.config.pods.push(pod("blue"));
    let blue = node.pod_ns("blue");
    let failpoint = format!("create-pod:{blue}");
    // SAFETY: the variable names a namespace unique to this test, so other
    // tests that read it concurrently are unaffected.
    unsafe { std::env::set_var("NETPATH_FAILPOINT", &failpoint) };
    let err = node.apply().expect_err("failpoint");
    // SAFETY: as for set_var above.
    unsafe { std::env::remove_var("NETPATH_FAILPOINT") };
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(resolv_conf(&node, "red"), before);
    assert!(!Netns::exists(&blue));
    assert!(
        !etc_dir(&blue).exists(),
        "{} left behind",
        etc_dir(&blue).display()
    );

    // The same apply without the failure goes through.
    let report = node.apply().expect("apply");
    assert_eq!(report.created, ["blue"]);
    assert_eq!(
        resolv_conf(&node, "blue"),
        [
            "nameserver 192.168.50.1",
            "search example.test",
            "options ndots:2"
        ]
    );
    assert_eq!(resolv_conf(&node, "red"), resolv_conf(&node, "blue"));
}
