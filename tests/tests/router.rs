//! The node as its pods' router, in real namespaces with real tools
//! (`ping`): TTL expiry and PMTU answered from the gateway, and a spoofed
//! source dropped.

use std::net::Ipv4Addr;

use netpath::config::MasqueradeConfig;
use netpath_common::Stat;
use tests::harness::{self, TestNode};

const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);

fn snat_node(tag: &str) -> TestNode {
    let mut node = TestNode::new(tag, &["red"]);
    node.config.masquerade.push(MasqueradeConfig {
        source: None,
        out: None,
        address: None,
    });
    node
}

fn stat(node: &TestNode, stat: Stat) -> u64 {
    node.maps().stat(stat).unwrap().packets
}

/// Runs `ping args` in `ns`; its stdout, whatever its exit status.
fn ping_output(ns: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = harness::in_ns(ns, move || {
        std::process::Command::new("ping").args(&args).output()
    })
    .expect("run ping (installed by cargo xtask test)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_ttl_of_one_from_a_pod_is_answered_by_the_gateway() {
    let node = snat_node("ttl");
    node.apply().expect("apply");
    let gw = node.gateway().to_string();
    let out = ping_output(
        &node.pod_ns("red"),
        &["-n", "-c", "1", "-W", "2", "-t", "1", &LAN.to_string()],
    );
    assert!(
        out.contains(&format!("From {gw}")) && out.contains("Time to live exceeded"),
        "ping -t 1 output: {out}"
    );
    assert_eq!(stat(&node, Stat::ReplyTimeExceeded), 1);
    assert!(
        node.maps().conntrack().unwrap().is_empty(),
        "no connection for a packet that was not forwarded"
    );
}

#[test]
fn a_df_ping_over_the_uplink_mtu_gets_frag_needed_from_the_gateway() {
    let node = snat_node("pmtu");
    node.apply().expect("apply");
    harness::run_in_ns(
        &node.lab.node_netns,
        "ip",
        &["link", "set", "uplink0", "mtu", "1400"],
    );
    let gw = node.gateway().to_string();
    let out = ping_output(
        &node.pod_ns("red"),
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1472",
            &LAN.to_string(),
        ],
    );
    assert!(
        out.contains(&format!("From {gw}")) && out.contains("mtu = 1400"),
        "ping -M do -s 1472 output: {out}"
    );
    assert_eq!(stat(&node, Stat::ReplyFragNeeded), 1);
    // The pod learned the path MTU: a ping that fits now goes through.
    let out = ping_output(
        &node.pod_ns("red"),
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1372",
            &LAN.to_string(),
        ],
    );
    assert!(out.contains("1 received"), "ping -s 1372 output: {out}");
}

#[test]
fn a_spoofed_source_from_a_pod_never_leaves_the_node() {
    let node = snat_node("spoof");
    node.apply().expect("apply");
    let before = stat(&node, Stat::DropSpoofedIp);
    let ns = node.pod_ns("red");
    harness::run_in_ns(
        &ns,
        "ip",
        &["addr", "add", "192.168.50.77/32", "dev", "eth0"],
    );
    let out = ping_output(
        &ns,
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            "192.168.50.77",
            &LAN.to_string(),
        ],
    );
    assert!(out.contains("0 received"), "spoofed ping answered: {out}");
    assert!(stat(&node, Stat::DropSpoofedIp) > before);
}

/// Sends one UDP datagram with TTL 1 from `ns` to `dst:33434` (as
/// `traceroute` does) and returns the ICMP error the socket's error queue
/// receives: (origin address, ICMP type, ICMP code).
fn udp_ttl_probe(ns: &str, dst: Ipv4Addr) -> Option<(Ipv4Addr, u8, u8)> {
    harness::in_ns(ns, move || {
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        sock.connect((dst, 33434)).expect("connect");
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let one: libc::c_int = 1;
        // SAFETY: setsockopt on a socket `sock` owns, with a valid int.
        unsafe {
            for opt in [libc::IP_RECVERR, libc::IP_TTL] {
                let r = libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    opt,
                    (&raw const one).cast(),
                    size_of::<libc::c_int>() as u32,
                );
                assert_eq!(r, 0, "setsockopt {opt}");
            }
        }
        // A datagram large enough that the veth hands it over with a
        // partial checksum (CHECKSUM_PARTIAL), as a real probe.
        sock.send(&[0x55; 64]).expect("send");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            let mut data = [0u8; 256];
            let mut control = [0u8; 512];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // SAFETY: an all-zero msghdr is valid; its buffers outlive the call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &raw mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = control.len();
            // SAFETY: recvmsg on a socket `sock` owns with a valid msghdr.
            let n = unsafe { libc::recvmsg(fd, &raw mut msg, libc::MSG_ERRQUEUE) };
            if n < 0 {
                std::thread::sleep(std::time::Duration::from_millis(20));
                continue;
            }
            // SAFETY: walking the control messages the kernel wrote into
            // `control`, as CMSG_FIRSTHDR/CMSG_NXTHDR do.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&raw const msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::IPPROTO_IP && (*c).cmsg_type == libc::IP_RECVERR {
                        let ee = libc::CMSG_DATA(c).cast::<libc::sock_extended_err>();
                        let from = ee.add(1).cast::<libc::sockaddr_in>();
                        let addr = Ipv4Addr::from(u32::from_be((*from).sin_addr.s_addr));
                        return Some((addr, (*ee).ee_type, (*ee).ee_code));
                    }
                    c = libc::CMSG_NXTHDR(&raw const msg, c);
                }
            }
        }
        None
    })
}

#[test]
fn a_traceroute_udp_probe_shows_the_gateway_as_the_first_hop() {
    let node = snat_node("trace");
    node.apply().expect("apply");
    let got = udp_ttl_probe(&node.pod_ns("red"), LAN);
    assert_eq!(
        got,
        Some((node.gateway(), 11, 0)),
        "time exceeded from the gateway"
    );
    assert_eq!(stat(&node, Stat::ReplyTimeExceeded), 1);
    assert!(node.maps().conntrack().unwrap().is_empty());
}

#[test]
fn traceroute_from_a_pod_shows_the_gateway_then_the_lan_host() {
    let node = snat_node("traceroute");
    node.apply().expect("apply");
    // UDP probes (traceroute's default): hop 1 answers time exceeded, the
    // LAN host answers port unreachable, translated back by the datapath.
    let out = harness::run_in_ns(
        &node.pod_ns("red"),
        "traceroute",
        &["-n", "-q", "1", "-w", "2", "-m", "4", &LAN.to_string()],
    );
    let hops: Vec<Vec<&str>> = out
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    let gateway = node.gateway().to_string();
    assert_eq!(hops.len(), 2, "two hops to the LAN host:\n{out}");
    assert_eq!(hops[0].get(1), Some(&gateway.as_str()), "hop 1:\n{out}");
    assert_eq!(hops[1].get(1), Some(&"192.168.50.1"), "hop 2:\n{out}");
}

/// `n` bytes of a recognisable pattern.
fn pattern(n: u32, modulo: u32) -> Vec<u8> {
    (0..n).map(|i| (i % modulo) as u8).collect()
}

#[test]
fn a_fragmented_udp_answer_reaches_the_pod_whole_in_both_directions() {
    use std::net::{SocketAddrV4, UdpSocket};
    use std::time::Duration;

    let node = snat_node("fragudp");
    node.apply().expect("apply");
    let red = node.pod_ns("red");
    let followed = stat(&node, Stat::FragFollowed);

    // A small query and a 3,000-byte answer (two fragments at MTU 1500), as
    // a DNS answer with EDNS can be.
    let server = harness::spawn_in_ns(&node.lab.lan_netns, move || {
        let s = UdpSocket::bind(SocketAddrV4::new(LAN, 5300)).expect("bind");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 512];
        let (_, from) = s.recv_from(&mut buf).expect("query");
        s.send_to(&pattern(3000, 251), from).expect("answer");
    });
    std::thread::sleep(Duration::from_millis(200));
    let got = harness::in_ns(&red, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"query", SocketAddrV4::new(LAN, 5300)).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, _) = s.recv_from(&mut buf).expect("the fragmented answer");
        buf.truncate(n);
        buf
    });
    server.join().unwrap();
    assert_eq!(got, pattern(3000, 251));

    // The other way: a 3,000-byte datagram from the pod (fragmented by the
    // pod's kernel) is translated fragment by fragment, and its echo comes
    // back the same way.
    let server = harness::udp_echo_server(&node.lab.lan_netns, LAN, 5301, 1);
    let got =
        harness::udp_roundtrip(&red, LAN, 5301, pattern(3000, 247)).expect("echo of 3,000 bytes");
    assert_eq!(got, pattern(3000, 247));
    let peers = server.join().unwrap();
    assert!(
        peers
            .iter()
            .all(|p| p.ip() == std::net::IpAddr::V4(Ipv4Addr::new(192, 168, 50, 2))),
        "the LAN host saw {peers:?}"
    );
    // One later fragment each way, at least, followed its first.
    assert!(stat(&node, Stat::FragFollowed) >= followed + 2);
}

/// Bytes the PMTU test uploads.
const SIZE: u64 = 400_000;

#[test]
fn tcp_learns_the_path_mtu_from_frag_needed_and_completes_an_upload() {
    use std::io::{Read as _, Write as _};
    use std::net::{SocketAddrV4, TcpListener, TcpStream};
    use std::time::Duration;

    let node = snat_node("pmtutcp");
    node.apply().expect("apply");
    // Only the node's side shrinks: the LAN host still advertises an MSS
    // for 1500, so the pod's first full segments are too big for the
    // uplink and must come back as frag-needed, not vanish.
    harness::run_in_ns(
        &node.lab.node_netns,
        "ip",
        &["link", "set", "uplink0", "mtu", "1400"],
    );
    let sink = harness::spawn_in_ns(&node.lab.lan_netns, || {
        let l = TcpListener::bind(SocketAddrV4::new(LAN, 9400)).unwrap();
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut total = 0u64;
        let mut buf = [0u8; 65536];
        while total < SIZE {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        s.write_all(&total.to_be_bytes()).unwrap();
        total
    });
    std::thread::sleep(Duration::from_millis(200));
    let acked = harness::in_ns(&node.pod_ns("red"), || {
        let mut s = TcpStream::connect_timeout(
            &SocketAddrV4::new(LAN, 9400).into(),
            Duration::from_secs(3),
        )
        .expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s.write_all(&vec![7u8; SIZE as usize]).expect("upload");
        let mut n = [0u8; 8];
        s.read_exact(&mut n).expect("the sink's count");
        u64::from_be_bytes(n)
    });
    assert_eq!(acked, SIZE);
    assert_eq!(sink.join().unwrap(), SIZE);
    assert!(stat(&node, Stat::ReplyFragNeeded) >= 1);
}
