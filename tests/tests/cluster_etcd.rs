//! Three nodes that know each other only through etcd: real `netpath
//! daemon` processes (`tests/src/daemon.rs`) on the bridged LAN of
//! `tests/src/cluster.rs`, and Debian's etcd on the LAN's bridge address
//! (`tests/src/etcd.rs`), which the nodes reach over their uplinks. No
//! node is configured with a pod CIDR or a peer: each leases its CIDR and
//! learns the others from etcd. Checked: distinct CIDRs, ping/TCP/UDP
//! between pods of different nodes with the senders' own addresses (direct
//! routing and VXLAN), a SIGKILLed daemon's routes withdrawn by its peers
//! once its lease expires (and nothing else), its restart taking the same
//! CIDR back, SIGTERM keeping the lease, `netpath daemon --cleanup`
//! leaving at once, a service on one node balanced over pods of the two
//! others with the client's address kept, and no iptables rule and
//! `ip_forward` = 0 anywhere.

use std::{
    collections::BTreeSet,
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use ipnet::Ipv4Net;
use netpath::{
    api::{Request, client::Client},
    config::{Config, cluster::ClusterMode},
    etcd::{JoinOptions, Registry},
};
use serde_json::Value;
use tests::{
    cluster::{CLUSTER_CIDR, Cluster, ClusterNode},
    daemon::{DaemonProc, netpath, netpath_ok},
    etcd::EtcdServer,
    harness::{
        in_ns, ping, run_in_ns, tcp_echo_server, tcp_roundtrip, udp_echo_server, udp_roundtrip,
    },
};

/// The lease TTL of the tests' nodes: a dead node's routes go this long
/// after its daemon (plus etcd's expiry granularity).
const TTL_SECS: u32 = 3;

/// The LAN's bridge address, where etcd listens.
const ETCD_ADDR: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);

/// A running etcd cluster of three nodes. Fields drop in order: the
/// daemons first, then etcd, then the lab (which destroys the instances).
struct EtcdLab {
    daemons: Vec<DaemonProc>,
    etcd: EtcdServer,
    c: Cluster,
}

impl EtcdLab {
    /// The lab in `mode`, one pod `a` per node, etcd on the LAN, and the
    /// three daemons started one after the other.
    fn start(tag: &str, mode: ClusterMode) -> Self {
        Self::start_with(tag, mode, |_| {})
    }

    /// [`EtcdLab::start`], with `tweak` applied to the lab's configurations
    /// before the daemons start.
    fn start_with(tag: &str, mode: ClusterMode, tweak: impl FnOnce(&mut Cluster)) -> Self {
        let mut c = Cluster::new(tag, 3, mode, &["a"]);
        tweak(&mut c);
        let etcd = EtcdServer::start(&c.lan_netns, ETCD_ADDR);
        c.use_etcd(&etcd.endpoint(), TTL_SECS);
        let daemons = c
            .nodes
            .iter()
            .map(|n| DaemonProc::start_config(&n.config))
            .collect();
        let lab = Self { daemons, etcd, c };
        for i in 0..3 {
            lab.wait_peers(i, 2, "every node learns the two others from etcd");
        }
        lab
    }

    fn node(&self, i: usize) -> &ClusterNode {
        &self.c.nodes[i]
    }

    /// The daemon's desired state (with its leased pod CIDR).
    fn desired(&self, i: usize) -> Config {
        Client::new(self.node(i).instance())
            .call(&Request::Desired)
            .expect("the daemon answers")
    }

    fn pod_cidr(&self, i: usize) -> Ipv4Net {
        self.desired(i).node.pod_cidr
    }

    /// `netpath node list -o json` of node `i`: (name, pod CIDR, source,
    /// state) per peer.
    fn node_list(&self, i: usize) -> Vec<(String, Ipv4Net, String, String)> {
        let out = netpath_ok(&[
            "node",
            "list",
            "--instance",
            self.node(i).instance(),
            "-o",
            "json",
        ]);
        let rows: Vec<Value> = serde_json::from_str(&out).expect("JSON rows");
        rows.iter()
            .map(|r| {
                (
                    r["name"].as_str().unwrap().to_owned(),
                    r["pod_cidr"].as_str().unwrap().parse().unwrap(),
                    r["source"].as_str().unwrap().to_owned(),
                    r["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Waits (up to 20 s) until node `i` lists exactly `count` peers, all
    /// from etcd and programmed in its peer map.
    fn wait_peers(
        &self,
        i: usize,
        count: usize,
        why: &str,
    ) -> Vec<(String, Ipv4Net, String, String)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let rows = self.node_list(i);
            if rows.len() == count && rows.iter().all(|r| r.2 == "etcd" && r.3 == "programmed") {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "{why}: node {} lists {rows:?}\n{}",
                i + 1,
                self.daemons[i].log()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The peer names node `i` lists.
    fn peer_names(&self, i: usize) -> BTreeSet<String> {
        self.node_list(i).into_iter().map(|r| r.0).collect()
    }

    /// A registry on etcd, from the LAN namespace.
    fn registry<T: Send>(&self, f: impl AsyncFnOnce(Registry) -> T + Send) -> T {
        let endpoint = self.etcd.endpoint();
        in_ns(&self.c.lan_netns, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let r = Registry::connect(&[endpoint], "/netpath/default")
                    .await
                    .expect("connect to etcd");
                f(r).await
            })
        })
    }

    /// The node names with a live lease in etcd.
    fn leased(&self) -> BTreeSet<String> {
        self.registry(async |r| r.peers().await.expect("peers").0)
            .into_iter()
            .map(|p| p.name)
            .collect()
    }
}

/// No iptables or nftables rule and `ip_forward` = 0 in the node's
/// namespace.
fn assert_no_netfilter_no_forwarding(node: &ClusterNode) {
    let ns = &node.netns;
    let forward = in_ns(ns, || {
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").expect("read ip_forward")
    });
    assert_eq!(forward.trim(), "0", "ip_forward on {}", node.instance());
    let rules = run_in_ns(ns, "iptables-save", &[]);
    assert!(
        !rules.lines().any(|l| l.starts_with("-A")),
        "iptables rules on {}: {rules}",
        node.instance()
    );
    let ruleset = run_in_ns(ns, "nft", &["list", "ruleset"]);
    assert!(
        !ruleset.contains("chain"),
        "nftables ruleset on {}: {ruleset}",
        node.instance()
    );
}

/// Ping, TCP and UDP from node 1's pod to the pods of nodes 2 and 3, each
/// server seeing the client pod's own address; and from node 3 to node 2.
fn pods_talk_across_nodes(c: &Cluster, base_port: u16) {
    let (n1, n2, n3) = (&c.nodes[0], &c.nodes[1], &c.nodes[2]);
    let a = n1.pod_addr("a");
    for (i, far) in [(2u16, n2), (3, n3)] {
        let dst = far.pod_addr("a");
        assert_eq!(ping(&n1.pod_ns("a"), dst, 3), 3, "ping node 1 -> node {i}");
        let port = base_port + i;
        let server = tcp_echo_server(&far.pod_ns("a"), dst, port, 1);
        let reply = tcp_roundtrip(&n1.pod_ns("a"), dst, port, b"hello over tcp".to_vec())
            .expect("TCP across nodes");
        assert_eq!(reply, b"hello over tcp");
        let peers = server.join().unwrap();
        assert_eq!(peers[0].ip(), a, "the TCP server on node {i} sees the pod");
        let server = udp_echo_server(&far.pod_ns("a"), dst, port, 1);
        let reply = udp_roundtrip(&n1.pod_ns("a"), dst, port, b"hello over udp".to_vec())
            .expect("UDP across nodes");
        assert_eq!(reply, b"hello over udp");
        let peers = server.join().unwrap();
        assert_eq!(peers[0].ip(), a, "the UDP server on node {i} sees the pod");
    }
    assert_eq!(ping(&n3.pod_ns("a"), n2.pod_addr("a"), 2), 2, "node 3 -> 2");
}

/// Each node leased a distinct /24 of the cluster CIDR, its pod's address
/// is inside it, and every other node routes it to the node's address.
fn assert_distinct_leases(lab: &EtcdLab) {
    let cluster: Ipv4Net = CLUSTER_CIDR.parse().unwrap();
    let cidrs: Vec<Ipv4Net> = (0..3).map(|i| lab.pod_cidr(i)).collect();
    let distinct: BTreeSet<Ipv4Net> = cidrs.iter().copied().collect();
    assert_eq!(distinct.len(), 3, "distinct pod CIDRs: {cidrs:?}");
    for (i, cidr) in cidrs.iter().enumerate() {
        assert!(cluster.contains(cidr) && cidr.prefix_len() == 24, "{cidr}");
        assert!(
            cidr.contains(&lab.node(i).pod_addr("a")),
            "node {}'s pod in {cidr}",
            i + 1
        );
        for j in (0..3).filter(|j| *j != i) {
            let seen = lab.node_list(j);
            let row = seen
                .iter()
                .find(|r| r.0 == lab.node(i).instance())
                .unwrap_or_else(|| panic!("node {} lists node {}: {seen:?}", j + 1, i + 1));
            assert_eq!(row.1, *cidr);
        }
    }
}

#[test]
fn etcd_direct_three_daemons_lease_distinct_cidrs_and_their_pods_talk_with_own_addresses() {
    let lab = EtcdLab::start("etd", ClusterMode::Direct);
    assert_distinct_leases(&lab);
    pods_talk_across_nodes(&lab.c, 7100);
    for node in &lab.c.nodes {
        assert_no_netfilter_no_forwarding(node);
    }
    // The kept desired state has the leased CIDR and no peers (etcd is
    // their source, read again at every start).
    let kept =
        std::fs::read_to_string(netpath::daemon::desired_file(lab.node(0).instance())).unwrap();
    assert!(
        kept.contains(&format!("pod_cidr = \"{}\"", lab.pod_cidr(0))),
        "{kept}"
    );
    assert!(!kept.contains("[[peers]]"), "{kept}");
}

#[test]
fn etcd_vxlan_three_daemons_lease_distinct_cidrs_and_their_pods_talk_with_own_addresses() {
    let lab = EtcdLab::start("etv", ClusterMode::Vxlan);
    assert_distinct_leases(&lab);
    pods_talk_across_nodes(&lab.c, 7200);
    let n1 = lab.node(0);
    assert!(
        n1.maps()
            .stat(netpath_common::Stat::TunnelEncap)
            .unwrap()
            .packets
            >= 10
    );
    for node in &lab.c.nodes {
        assert_no_netfilter_no_forwarding(node);
    }
}

#[test]
fn a_killed_daemon_is_withdrawn_after_its_lease_and_nothing_else_then_returns_with_its_cidr() {
    let mut lab = EtcdLab::start("etk", ClusterMode::Direct);
    let n3_cidr = lab.pod_cidr(2);
    let n3_name = lab.node(2).instance().to_owned();
    let n3_pod = lab.node(2).pod_addr("a");
    let n2_pod = lab.node(1).pod_addr("a");
    assert_eq!(ping(&lab.node(0).pod_ns("a"), n3_pod, 1), 1);
    let before = lab.node(0).peer_map().entries().unwrap();
    let routes_before = lab.node(0).maps().routes().unwrap();
    let masq_before = lab.node(0).maps().masq().unwrap();
    let endpoints_before = lab.node(0).maps().endpoints().unwrap();

    // SIGKILL: nothing revoked; the lease runs out after TTL_SECS.
    let killed = Instant::now();
    lab.daemons[2].kill();
    let rows = lab.wait_peers(0, 1, "node 1 withdraws node 3 once its lease expires");
    assert!(
        killed.elapsed() >= Duration::from_secs(u64::from(TTL_SECS) - 1),
        "withdrawn after {:?}: before the lease could expire",
        killed.elapsed()
    );
    assert_eq!(rows[0].0, lab.node(1).instance());
    lab.wait_peers(1, 1, "node 2 withdraws node 3 too");
    let after = lab.node(0).peer_map().entries().unwrap();
    let expected: Vec<_> = before
        .iter()
        .filter(|(n, _)| *n != n3_cidr)
        .copied()
        .collect();
    assert_eq!(
        after, expected,
        "only node 3's entry left node 1's peer map"
    );
    assert_eq!(lab.node(0).maps().routes().unwrap(), routes_before);
    assert_eq!(lab.node(0).maps().masq().unwrap(), masq_before);
    assert_eq!(lab.node(0).maps().endpoints().unwrap(), endpoints_before);
    assert_eq!(
        ping(&lab.node(0).pod_ns("a"), n2_pod, 2),
        2,
        "node 2 still reached"
    );
    assert_eq!(
        ping(&lab.node(0).pod_ns("a"), n3_pod, 1),
        0,
        "node 3 no longer routed"
    );

    // The restart takes the same CIDR back (its reservation); the pod keeps
    // its address and is reached again.
    lab.daemons[2].restart();
    assert_eq!(lab.pod_cidr(2), n3_cidr);
    assert_eq!(lab.node(2).pod_addr("a"), n3_pod);
    lab.wait_peers(0, 2, "node 1 routes node 3 again");
    // Node 2 too: the replies of node 3's pings to node 2 go back by it.
    lab.wait_peers(1, 2, "node 2 routes node 3 again");
    lab.wait_peers(2, 2, "node 3 learns its peers again");
    assert!(lab.peer_names(0).contains(&n3_name));
    assert_eq!(
        ping(&lab.node(0).pod_ns("a"), n3_pod, 2),
        2,
        "node 3 reached again"
    );
    pods_talk_across_nodes(&lab.c, 7300);
    for node in &lab.c.nodes {
        assert_no_netfilter_no_forwarding(node);
    }
}

#[test]
fn sigterm_keeps_the_lease_and_daemon_cleanup_leaves_the_cluster_at_once() {
    let mut lab = EtcdLab::start("etc", ClusterMode::Direct);
    let n2_name = lab.node(1).instance().to_owned();
    let n2_cidr = lab.pod_cidr(1);
    // SIGTERM revokes nothing (E3): etcd still holds node 2's lease right
    // after the daemon exited.
    assert!(lab.daemons[1].stop(), "a clean stop");
    assert!(
        lab.leased().contains(&n2_name),
        "the lease outlives a SIGTERM"
    );
    assert!(lab.peer_names(0).contains(&n2_name));

    // --cleanup revokes the lease (the peers withdraw it before the TTL
    // could run out) and removes the reservation.
    let began = Instant::now();
    let out = netpath(&["daemon", "--cleanup", "--instance", &n2_name]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!lab.leased().contains(&n2_name), "the lease is revoked");
    lab.wait_peers(0, 1, "node 1 withdraws node 2 as soon as it left");
    assert!(!lab.peer_names(0).contains(&n2_name));
    assert!(began.elapsed() < Duration::from_secs(u64::from(TTL_SECS) * 3));
    // The reservation is gone: a new node takes the freed CIDR (the first
    // free one of the range).
    let newcomer = lab.registry(async |r| {
        r.join(&JoinOptions {
            node: "newcomer".into(),
            address: Ipv4Addr::new(192, 168, 50, 99),
            cluster: CLUSTER_CIDR.parse().unwrap(),
            prefix_len: 24,
            ttl: Duration::from_secs(2),
        })
        .await
        .expect("join")
        .pod_cidr
    });
    assert_eq!(newcomer, n2_cidr, "node 2's reservation was removed");
}

#[test]
fn static_peers_a_pod_cidr_of_another_length_and_an_unreachable_etcd_are_refused() {
    let mut c = Cluster::new("etr", 1, ClusterMode::Direct, &["a"]);
    c.use_etcd("http://192.168.50.1:2379", TTL_SECS);
    let node = &mut c.nodes[0];
    node.config
        .peers
        .push(netpath::config::cluster::PeerConfig {
            name: "other".into(),
            node_address: Ipv4Addr::new(192, 168, 50, 50),
            pod_cidr: "10.244.9.0/24".parse().unwrap(),
        });
    let file = std::env::temp_dir().join(format!("{}-static.toml", node.instance()));
    std::fs::write(&file, node.config.to_toml_string()).unwrap();
    let err = tests::daemon::netpath_err(&["validate", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("[[peers]] and [cluster] etcd_endpoints together"),
        "{err}"
    );
    // A pod CIDR that no lease can be (a /25 where etcd leases /24s).
    node.config.peers.clear();
    node.config.node.pod_cidr = "10.244.3.0/25".parse().unwrap();
    std::fs::write(&file, node.config.to_toml_string()).unwrap();
    let err = tests::daemon::netpath_err(&["validate", "-f", file.to_str().unwrap()]);
    assert!(
        err.contains("node.pod_cidr 10.244.3.0/25 is not a /24"),
        "{err}"
    );
    node.config.node.pod_cidr = netpath::config::cluster::UNSET_POD_CIDR;
    // etcd unreachable (nothing listens on the LAN): the daemon refuses to
    // start, saying where it looked.
    std::fs::write(&file, node.config.to_toml_string()).unwrap();
    let out = netpath(&["daemon", "--config", file.to_str().unwrap()]);
    let _ = std::fs::remove_file(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cannot reach etcd at http://192.168.50.1:2379"),
        "{err}"
    );
}

/// A service on node 1 whose backends are the pods of nodes 2 and 3. The
/// client pod's connection is translated (DNAT) on node 1 and routed to the
/// backend's node unchanged: the backend sees the client pod's own address
/// and replies to it, which the cluster routes back to node 1, where the
/// reverse translation (the VIP as the source again) happens. No SNAT is
/// needed on the way back, because the reply's destination (the client pod)
/// lives on the node that did the DNAT; a client outside the cluster would
/// need the service's node to masquerade it, or the reply would bypass the
/// reverse translation.
#[test]
fn a_service_on_one_node_balances_over_pods_of_two_other_nodes_keeping_the_client_address() {
    use netpath::config::{L4Proto, ServiceConfig, SessionAffinity, Target};
    use tests::responder::{Responder, tcp_name};
    let lab = EtcdLab::start_with("ets", ClusterMode::Direct, |c| {
        c.nodes[0].config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    });
    let (n1, n2, n3) = (lab.node(0), lab.node(1), lab.node(2));
    let r2 = Responder::start(&n2.pod_ns("a"), "backend-n2", 8080);
    let r3 = Responder::start(&n3.pod_ns("a"), "backend-n3", 8080);
    let vip = Ipv4Addr::new(10, 96, 0, 10);
    let backend =
        |n: &ClusterNode| Target::Address(std::net::SocketAddrV4::new(n.pod_addr("a"), 8080));
    let service = ServiceConfig {
        name: "web".into(),
        vip,
        port: 80,
        proto: L4Proto::Tcp,
        backends: vec![backend(n2), backend(n3)],
        target_port: None,
        affinity: SessionAffinity::None,
        affinity_timeout: None,
    };
    let _: Value = Client::new(n1.instance())
        .call(&Request::ServiceAdd { service })
        .expect("add the service on node 1");
    let mut answered = BTreeSet::new();
    for _ in 0..16 {
        answered.insert(tcp_name(&n1.pod_ns("a"), vip, 80).expect("a connection to the VIP"));
    }
    let both: BTreeSet<String> = ["backend-n2", "backend-n3"].map(String::from).into();
    assert_eq!(
        answered, both,
        "Maglev spreads 16 connections over both nodes' backends"
    );
    let client = n1.pod_addr("a");
    for (r, which) in [(&r2, "node 2"), (&r3, "node 3")] {
        let seen = r.peers();
        assert!(!seen.is_empty(), "{which}'s backend was connected to");
        assert!(
            seen.iter().all(|p| p.ip() == client),
            "{which}'s backend sees the client pod's own address: {seen:?}"
        );
    }
    for node in &lab.c.nodes {
        assert_no_netfilter_no_forwarding(node);
    }
}
