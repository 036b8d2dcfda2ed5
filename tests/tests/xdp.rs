//! XDP on the uplink and the socket load balancer in real namespaces: the
//! prefilter drops a LAN source, established masqueraded TCP takes the
//! fast path (data intact), the mode is reported, and the node's own
//! connections to a service VIP reach a backend pod while other namespaces
//! are untouched.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    time::Duration,
};

use netpath::{
    config::{MasqueradeConfig, XdpMode},
    datapath::{NodeMaps, PinDir, lb_maps::frontend_key},
    lb::maglev,
};
use netpath_common::{Backend, BackendKey, Frontend, Stat, frontend_flags};
use tests::harness::{
    TestNode, in_ns, ping, tcp_connect, tcp_echo_server, tcp_exchange, udp_echo_server,
};

const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);

/// A lab node with pods masqueraded out of the uplink.
/// A node with masquerade and XDP in native mode (veth has it; the
/// default is off).
fn snat_node(tag: &str, pods: &[&str]) -> TestNode {
    let mut node = TestNode::new(tag, pods);
    node.config.node.xdp = Some(XdpMode::Native);
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

/// Turns TX checksum offload of `ifname` in `ns` on or off
/// (`ethtool -K IFNAME tx on|off`, through the `SIOCETHTOOL` ioctl).
fn set_tx_checksum(ns: &str, ifname: &str, on: bool) {
    let ifname = ifname.to_owned();
    in_ns(ns, move || {
        const SIOCETHTOOL: libc::c_ulong = 0x8946;
        const ETHTOOL_STXCSUM: u32 = 0x17;
        #[repr(C)]
        struct EthtoolValue {
            cmd: u32,
            data: u32,
        }
        #[repr(C)]
        struct Ifreq {
            name: [u8; 16],
            data: *mut EthtoolValue,
            _pad: [u8; 16],
        }
        let mut value = EthtoolValue {
            cmd: ETHTOOL_STXCSUM,
            data: u32::from(on),
        };
        let mut ifr = Ifreq {
            name: [0; 16],
            data: &raw mut value,
            _pad: [0; 16],
        };
        ifr.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
        let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
        // SAFETY: the ioctl reads `ifr` and the value it points to, both
        // alive across the call.
        let ret = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &raw mut ifr) };
        assert_eq!(ret, 0, "{}", std::io::Error::last_os_error());
    });
}

/// `n` round trips of `size` bytes on one connection from pod `pod` to the
/// LAN host's echo server on `port`: every byte must come back intact.
fn exchange(node: &TestNode, pod: &str, port: u16, n: usize, size: usize) {
    let server = tcp_echo_server(&node.lab.lan_netns, LAN, port, 1);
    let mut s = tcp_connect(&node.pod_ns(pod), LAN, port, None).expect("connect to the LAN");
    for i in 0..n {
        let msg: Vec<u8> = (0..size).map(|b| (b * 7 + i) as u8).collect();
        assert_eq!(tcp_exchange(&mut s, &msg).expect("echo"), msg, "round {i}");
    }
    drop(s);
    let peers = server.join().unwrap();
    assert_eq!(peers[0].ip(), NODE, "masqueraded");
}

#[test]
fn the_prefilter_drops_a_denied_lan_source_and_the_mode_is_reported() {
    let mut node = snat_node("xdpdeny", &["red"]);
    let report = node.apply().unwrap();
    assert_eq!(report.xdp, Some(XdpMode::Native), "veth has native XDP");
    assert_eq!(ping(&node.lab.lan_netns, NODE, 2), 2);

    node.config.node.deny_sources = vec!["192.168.50.0/30".parse().unwrap()];
    node.apply().unwrap();
    let before = stat(&node, Stat::DropXdpPrefilter);
    assert_eq!(ping(&node.lab.lan_netns, NODE, 2), 0, "denied");
    assert!(stat(&node, Stat::DropXdpPrefilter) >= before + 2);

    node.config.node.deny_sources.clear();
    node.apply().unwrap();
    assert_eq!(ping(&node.lab.lan_netns, NODE, 2), 2, "allowed again");
}

#[test]
fn established_masqueraded_tcp_takes_the_fast_path_with_complete_checksums() {
    let node = snat_node("xdpfast", &["red"]);
    node.apply().unwrap();
    // The LAN host computes its checksums (as a host behind a real NIC
    // hands over complete ones).
    set_tx_checksum(&node.lab.lan_netns, "eth0", false);
    exchange(&node, "red", 7101, 50, 3000);
    let fast = stat(&node, Stat::XdpFwdRevSnat);
    assert!(fast >= 50, "replies through XDP: {fast}");
    assert!(
        stat(&node, Stat::FwdRevNat) >= 1,
        "the SYN-ACK (a state change) through TC"
    );
}

#[test]
fn partial_checksums_from_a_veth_peer_with_offload_are_left_to_tc() {
    let node = snat_node("xdppart", &["red"]);
    node.apply().unwrap();
    // veth's default: TX checksum offload on, so the LAN host's segments
    // carry CHECKSUM_PARTIAL, which XDP sees as the pseudo-header sum.
    set_tx_checksum(&node.lab.lan_netns, "eth0", true);
    exchange(&node, "red", 7102, 20, 3000);
    assert_eq!(stat(&node, Stat::XdpFwdRevSnat), 0);
    assert!(stat(&node, Stat::FwdRevNat) >= 20, "translated by TC");
}

#[test]
fn generic_and_off_modes_are_applied_and_reported() {
    let mut node = snat_node("xdpmode", &["red"]);
    node.config.node.xdp = Some(XdpMode::Generic);
    assert_eq!(node.apply().unwrap().xdp, Some(XdpMode::Generic));
    let pins = PinDir::for_instance(node.instance());
    let links = |suffix: &str| {
        pins.list()
            .iter()
            .filter(|p| p.parent().is_some_and(|d| d.ends_with("links")))
            .filter(|p| p.to_string_lossy().ends_with(suffix))
            .count()
    };
    assert_eq!(links("_xdp_generic"), 1);
    assert_eq!(links("_xdp_native") + links("_xdp_pod"), 0);
    set_tx_checksum(&node.lab.lan_netns, "eth0", false);
    exchange(&node, "red", 7103, 10, 1000);
    assert!(stat(&node, Stat::XdpFwdRevSnat) >= 10);

    node.config.node.xdp = Some(XdpMode::Native);
    assert_eq!(node.apply().unwrap().xdp, Some(XdpMode::Native));
    assert_eq!((links("_xdp_native"), links("_xdp_pod")), (1, 1));
    assert_eq!(links("_xdp_generic"), 0);

    node.config.node.xdp = Some(XdpMode::Off);
    assert_eq!(node.apply().unwrap().xdp, Some(XdpMode::Off));
    assert_eq!(
        links("_xdp_native") + links("_xdp_generic") + links("_xdp_pod"),
        0
    );
    let before = stat(&node, Stat::XdpFwdRevSnat);
    exchange(&node, "red", 7104, 10, 1000);
    assert_eq!(stat(&node, Stat::XdpFwdRevSnat), before, "no XDP left");
    assert!(
        !node.apply().unwrap().changed(),
        "a second apply changes nothing"
    );
}

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A service VIP:80/TCP and VIP:53/UDP with one backend each, pod `addr`.
fn add_service(maps: &mut NodeMaps, addr: Ipv4Addr, tcp_port: u16) {
    let lb = maps.lb_mut();
    for (id, port, proto, backend_port) in [(1, 80, 6, tcp_port), (2, 53, 17, 5353)] {
        lb.set_frontend(
            frontend_key(VIP, port, proto),
            Frontend {
                id,
                backends: 1,
                flags: 0,
                _pad: 0,
                affinity_timeout_secs: 0,
                maglev_size: 0,
                maglev_gen: 0,
                _pad2: 0,
            },
        )
        .unwrap();
        lb.set_backend(
            BackendKey {
                frontend: id,
                index: 0,
            },
            Backend {
                addr: addr.octets(),
                port: backend_port,
                flags: 0,
                _pad: 0,
            },
        )
        .unwrap();
        let member = maglev::Member {
            name: format!("{addr}:{backend_port}"),
            index: 0,
        };
        lb.swap_maglev(&frontend_key(VIP, port, proto), &maglev::table(&[member]))
            .unwrap();
    }
}

#[test]
fn the_nodes_own_connection_to_a_vip_reaches_the_backend_and_sees_the_vip() {
    let node = snat_node("socklb", &["red"]);
    node.apply().unwrap();
    let red = node.pod_addr("red");
    add_service(&mut node.maps(), red, 8080);
    let server = tcp_echo_server(&node.pod_ns("red"), red, 8080, 1);

    let (peer, echoed) = in_ns(&node.lab.node_netns, || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_secs(3))
                .expect("connect to the VIP");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"via the VIP").unwrap();
        let mut got = [0u8; 11];
        s.read_exact(&mut got).unwrap();
        (s.peer_addr().unwrap(), got)
    });
    assert_eq!(&echoed, b"via the VIP");
    assert_eq!(
        peer,
        SocketAddr::from((VIP, 80)),
        "getpeername shows the VIP"
    );
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), 1, "the backend pod accepted the connection");
    assert_eq!(stat(&node, Stat::SockLbConnect), 1);

    // The same connect from other namespaces (the machine's own, the LAN
    // host's) is not translated: a UDP connect sends nothing, and shows
    // the backend as its peer if the hook had rewritten it.
    for ns in [None, Some(node.lab.lan_netns.as_str())] {
        let connect = || {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.connect(SocketAddrV4::new(VIP, 53)).ok()?;
            s.peer_addr().ok()
        };
        let peer = match ns {
            Some(ns) => in_ns(ns, connect),
            None => connect(),
        };
        if let Some(peer) = peer {
            assert_eq!(peer, SocketAddr::from((VIP, 53)));
        }
    }
    assert_eq!(
        stat(&node, Stat::SockLbConnect),
        1,
        "nothing else translated"
    );

    // In the node namespace, the UDP connect is translated.
    let peer = in_ns(&node.lab.node_netns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.connect(SocketAddrV4::new(VIP, 53)).unwrap();
        s.peer_addr().unwrap()
    });
    assert_eq!(peer, SocketAddr::from((VIP, 53)));
    assert_eq!(stat(&node, Stat::SockLbConnect), 2);

    // An unconnected UDP socket: sendto() the VIP reaches the backend
    // (sendmsg4), and the answer comes from the VIP (recvmsg4).
    let server = udp_echo_server(&node.pod_ns("red"), red, 5353, 1);
    let (from, echoed) = in_ns(&node.lab.node_netns, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        s.send_to(b"query", SocketAddrV4::new(VIP, 53)).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = s.recv_from(&mut buf).expect("the backend's answer");
        (from, buf[..n].to_vec())
    });
    assert_eq!(echoed, b"query");
    assert_eq!(from, SocketAddr::from((VIP, 53)), "recvfrom shows the VIP");
    assert_eq!(server.join().unwrap().len(), 1);
    assert_eq!(stat(&node, Stat::SockLbConnect), 3);
}

#[test]
fn a_vip_without_backends_refuses_the_nodes_connect() {
    let node = snat_node("socklb0", &["red"]);
    node.apply().unwrap();
    let mut maps = node.maps();
    maps.lb_mut()
        .set_frontend(
            frontend_key(VIP, 80, 6),
            Frontend {
                id: 7,
                backends: 0,
                flags: frontend_flags::AFFINITY,
                _pad: 0,
                affinity_timeout_secs: 0,
                maglev_size: 0,
                maglev_gen: 0,
                _pad2: 0,
            },
        )
        .unwrap();
    let err = in_ns(&node.lab.node_netns, || {
        TcpStream::connect_timeout(&SocketAddrV4::new(VIP, 80).into(), Duration::from_secs(3))
            .unwrap_err()
    });
    assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
    assert_eq!(stat(&node, Stat::SockLbNoBackend), 1);
}
