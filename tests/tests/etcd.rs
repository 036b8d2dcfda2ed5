//! Cluster membership through a real etcd (Debian's `etcd-server`, started
//! inside a namespace the test made): pod CIDRs leased with transactions,
//! never twice; a node whose daemon dies disappears from the watch once its
//! lease expires, and takes the same CIDR back when it returns; a full
//! range and an unreachable etcd are clear errors.

use std::{net::Ipv4Addr, time::Duration};

use ipnet::Ipv4Net;
use netpath::{
    etcd::{EtcdError, JoinOptions, Membership, PeerEvent, Registry},
    sys::netns::Netns,
};
use tests::{etcd::EtcdServer, harness};

/// A namespace of its own for one test's etcd and clients; deleted when
/// dropped.
struct Ns(String);

impl Ns {
    fn new(tag: &str) -> Self {
        let name = harness::unique(tag);
        rt().block_on(Netns::create(&name))
            .expect("create the namespace");
        Self(name)
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = rt().block_on(Netns::delete(&self.0));
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `f` on a runtime whose sockets live in namespace `ns`.
fn in_ns<T: Send>(ns: &str, f: impl AsyncFnOnce() -> T + Send) -> T {
    harness::in_ns(ns, move || rt().block_on(f()))
}

fn cluster() -> Ipv4Net {
    "10.244.0.0/16".parse().unwrap()
}

fn opts(node: &str, last: u8, ttl_secs: u64) -> JoinOptions {
    JoinOptions {
        node: node.into(),
        address: Ipv4Addr::new(192, 168, 77, last),
        cluster: cluster(),
        prefix_len: 24,
        ttl: Duration::from_secs(ttl_secs),
    }
}

async fn registry(etcd: &str, prefix: &str) -> Registry {
    Registry::connect(&[etcd.to_owned()], prefix)
        .await
        .expect("connect to the test's etcd")
}

#[test]
fn three_nodes_racing_lease_three_distinct_pod_cidrs_and_see_each_other() {
    let ns = Ns::new("etcd3");
    let etcd = EtcdServer::start(&ns.0, Ipv4Addr::LOCALHOST);
    let ep = etcd.endpoint();
    in_ns(&ns.0, async || {
        // Three registries (three daemons), joining at the same moment.
        let regs = [
            registry(&ep, "/netpath/race").await,
            registry(&ep, "/netpath/race").await,
            registry(&ep, "/netpath/race").await,
        ];
        let o = [opts("n1", 11, 10), opts("n2", 12, 10), opts("n3", 13, 10)];
        let (a, b, c) = tokio::join!(
            regs[0].join(&o[0]),
            regs[1].join(&o[1]),
            regs[2].join(&o[2])
        );
        let ms: Vec<Membership> = vec![a.unwrap(), b.unwrap(), c.unwrap()];
        let cidrs: Vec<Ipv4Net> = ms.iter().map(|m| m.pod_cidr).collect();
        for (i, x) in cidrs.iter().enumerate() {
            assert!(cluster().contains(x) && x.prefix_len() == 24, "{x}");
            for y in &cidrs[i + 1..] {
                assert_ne!(x, y, "two nodes got the same pod CIDR: {cidrs:?}");
            }
        }
        let (peers, _) = regs[0].peers().await.unwrap();
        let mut seen: Vec<(String, Ipv4Addr, Ipv4Net)> = peers
            .into_iter()
            .map(|p| (p.name, p.address, p.pod_cidr))
            .collect();
        seen.sort();
        assert_eq!(
            seen,
            vec![
                ("n1".into(), Ipv4Addr::new(192, 168, 77, 11), cidrs[0]),
                ("n2".into(), Ipv4Addr::new(192, 168, 77, 12), cidrs[1]),
                ("n3".into(), Ipv4Addr::new(192, 168, 77, 13), cidrs[2]),
            ]
        );
        assert!(ms.iter().all(Membership::is_alive));
    });
}

#[test]
fn a_dead_nodes_lease_expires_its_peers_see_it_go_and_its_restart_takes_the_same_cidr() {
    let ns = Ns::new("etcdx");
    let etcd = EtcdServer::start(&ns.0, Ipv4Addr::LOCALHOST);
    let ep = etcd.endpoint();
    in_ns(&ns.0, async || {
        let reg = registry(&ep, "/netpath/expiry").await;
        let a = reg.join(&opts("a", 1, 30)).await.unwrap();
        let b = reg.join(&opts("b", 2, 2)).await.unwrap();
        let b_cidr = b.pod_cidr;
        assert_ne!(a.pod_cidr, b_cidr);

        // Node a watches from what it read.
        let (peers, rev) = reg.peers().await.unwrap();
        assert_eq!(peers.len(), 2);
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let watcher = reg.clone();
        let w = tokio::spawn(async move { watcher.watch(rev, tx).await });

        // b's daemon dies: no revoke, no more keep-alives (E3). Kept alive
        // meanwhile, a short lease outlives its TTL.
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(b.is_alive(), "kept alive past its 2 s TTL");
        let died = std::time::Instant::now();
        drop(b);
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("b's lease expired within 10 s")
            .expect("the watch goes on");
        assert_eq!(
            ev,
            PeerEvent::Down {
                name: "b".into(),
                pod_cidr: b_cidr
            }
        );
        let after = died.elapsed();
        assert!(
            after >= Duration::from_secs(1),
            "gone after {after:?}: the lease's TTL, not at once"
        );
        let (peers, _) = reg.peers().await.unwrap();
        assert_eq!(
            peers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            ["a"]
        );

        // A third node now does not get b's CIDR (b reserved it) ...
        let c = reg.join(&opts("c", 3, 30)).await.unwrap();
        assert_ne!(c.pod_cidr, b_cidr);
        // ... and b's restart takes it back.
        let b2 = reg.join(&opts("b", 2, 30)).await.unwrap();
        assert_eq!(b2.pod_cidr, b_cidr, "the restarted node's pod CIDR");
        let mut ups = Vec::new();
        while ups.len() < 2 {
            let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("the watch reports the joins")
                .expect("the watch goes on");
            if let PeerEvent::Up(p) = ev {
                ups.push((p.name, p.pod_cidr));
            }
        }
        assert_eq!(ups, [("c".into(), c.pod_cidr), ("b".into(), b_cidr)]);

        // A node removed for good leaves at once, reservation and all.
        b2.leave("b").await.unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("the leave is seen at once")
            .unwrap();
        assert!(
            matches!(ev, PeerEvent::Down { ref name, .. } if name == "b"),
            "{ev:?}"
        );
        w.abort();
        drop((a, c));
    });
}

#[test]
fn a_full_cluster_range_is_refused_with_what_to_do() {
    let ns = Ns::new("etcdf");
    let etcd = EtcdServer::start(&ns.0, Ipv4Addr::LOCALHOST);
    let ep = etcd.endpoint();
    in_ns(&ns.0, async || {
        let reg = registry(&ep, "/netpath/full").await;
        let small = |node: &str, last: u8| JoinOptions {
            cluster: "10.244.0.0/23".parse().unwrap(),
            ..opts(node, last, 30)
        };
        let _a = reg.join(&small("a", 1)).await.unwrap();
        let _b = reg.join(&small("b", 2)).await.unwrap();
        let err = match reg.join(&small("c", 3)).await {
            Err(e) => e,
            Ok(m) => panic!("a third /24 out of a /23: {}", m.pod_cidr),
        };
        assert!(matches!(err, EtcdError::Exhausted { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(
            msg.contains("10.244.0.0/23") && msg.contains("widen the cluster range"),
            "{msg}"
        );
        let bad = reg
            .join(&JoinOptions {
                prefix_len: 8,
                ..opts("d", 4, 30)
            })
            .await;
        assert!(
            matches!(bad, Err(EtcdError::BadPrefix { .. })),
            "{:?}",
            bad.err()
        );
    });
}

#[test]
fn an_unreachable_etcd_says_where_it_looked_and_what_to_set() {
    let ns = Ns::new("etcdu");
    in_ns(&ns.0, async || {
        // Nothing listens in this namespace.
        let Err(err) = Registry::connect(&["http://127.0.0.1:2379".into()], "/netpath/x").await
        else {
            panic!("connected to nothing")
        };
        let msg = err.to_string();
        assert!(
            msg.contains("cannot reach etcd at http://127.0.0.1:2379")
                && msg.contains("etcd_endpoints"),
            "{msg}"
        );
    });
}
