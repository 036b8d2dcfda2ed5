use std::path::PathBuf;

use super::*;
use crate::config::RouteConfig;

fn demo() -> Config {
    Config::demo()
}

fn attachment(id: &str, ifname: &str, netns: &str) -> CniAttachment {
    CniAttachment {
        container_id: id.into(),
        ifname: ifname.into(),
        netns: PathBuf::from(netns),
        address: None,
    }
}

fn kind(r: Result<Option<Config>, ApiError>) -> ErrorKind {
    r.expect_err("the edit must be refused").kind
}

#[test]
fn reads_edit_nothing() {
    for r in [Request::Status, Request::PodList, Request::ConntrackFlush] {
        assert_eq!(edit(&demo(), &r).unwrap(), None);
    }
}

#[test]
fn a_pod_is_added_once_and_deleted_by_name() {
    let add = Request::PodAdd {
        pod: PodConfig::named("web"),
    };
    let next = edit(&demo(), &add).unwrap().unwrap();
    assert_eq!(next.pods.last().unwrap().name, "web");
    assert_eq!(kind(edit(&next, &add)), ErrorKind::Exists);
    let del = Request::PodDel { name: "web".into() };
    assert_eq!(edit(&next, &del).unwrap().unwrap(), demo());
    assert_eq!(kind(edit(&demo(), &del)), ErrorKind::NotFound);
}

#[test]
fn an_invalid_result_is_refused_whole() {
    let mut pod = PodConfig::named("web");
    pod.address = Some("10.9.9.9".parse().unwrap());
    let err = edit(&demo(), &Request::PodAdd { pod }).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert!(err.message.contains("10.9.9.9"), "{}", err.message);
    // A pod a service names cannot go.
    let err = edit(&demo(), &Request::PodDel { name: "red".into() }).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid, "{}", err.message);
}

#[test]
fn routes_are_keyed_by_destination() {
    let route = RouteConfig {
        dst: "192.168.70.0/24".parse().unwrap(),
        via: Some("192.168.50.1".parse().unwrap()),
        dev: None,
    };
    let add = Request::RouteAdd {
        route: route.clone(),
    };
    let next = edit(&demo(), &add).unwrap().unwrap();
    assert_eq!(next.routes, vec![route]);
    assert_eq!(kind(edit(&next, &add)), ErrorKind::Exists);
    let del = Request::RouteDel {
        dst: "192.168.70.0/24".parse().unwrap(),
    };
    assert!(edit(&next, &del).unwrap().unwrap().routes.is_empty());
}

#[test]
fn cni_pods_are_named_after_their_container_and_interface() {
    let a = attachment("0123456789abcdef0123", "eth0", "/var/run/netns/cni-1");
    let b = attachment("0123456789abcdef0123", "net1", "/var/run/netns/cni-1");
    let (pa, pb) = (cni_pod(&a), cni_pod(&b));
    assert!(pa.name.starts_with("c-0123456789ab-"), "{}", pa.name);
    assert_ne!(pa.name, pb.name);
    assert_ne!(pa.host_ifname, pb.host_ifname);
    assert!(pa.host_ifname.as_ref().unwrap().len() <= 15);
    let next = edit(
        &demo(),
        &Request::CniAdd {
            attachment: a.clone(),
        },
    )
    .unwrap()
    .unwrap();
    assert_eq!(attached(&next, &a.container_id, "eth0"), Some(&pa));
    // The same ADD again is the same pod; from another namespace, refused.
    let again = edit(
        &next,
        &Request::CniAdd {
            attachment: a.clone(),
        },
    );
    assert_eq!(again.unwrap().unwrap(), next);
    let mut moved = a.clone();
    moved.netns = "/var/run/netns/cni-2".into();
    assert_eq!(
        kind(edit(&next, &Request::CniAdd { attachment: moved })),
        ErrorKind::Exists
    );
    // `pod del` leaves it to the runtime.
    let del = Request::PodDel {
        name: pa.name.clone(),
    };
    assert_eq!(kind(edit(&next, &del)), ErrorKind::Invalid);
}

#[test]
fn cni_del_is_idempotent_and_gc_keeps_the_listed() {
    let a = attachment("aaa", "eth0", "/var/run/netns/a");
    let b = attachment("bbb", "eth0", "/var/run/netns/b");
    let mut c = demo();
    for x in [&a, &b] {
        c = edit(
            &c,
            &Request::CniAdd {
                attachment: x.clone(),
            },
        )
        .unwrap()
        .unwrap();
    }
    let del = Request::CniDel {
        container_id: "aaa".into(),
        ifname: "eth0".into(),
    };
    let once = edit(&c, &del).unwrap().unwrap();
    assert!(attached(&once, "aaa", "eth0").is_none());
    assert_eq!(edit(&once, &del).unwrap().unwrap(), once);

    let gc = Request::CniGc {
        valid: vec![AttachmentId {
            container_id: "aaa".into(),
            ifname: "eth0".into(),
        }],
    };
    let after = edit(&c, &gc).unwrap().unwrap();
    assert!(attached(&after, "aaa", "eth0").is_some());
    assert!(attached(&after, "bbb", "eth0").is_none());
    // Pods of the configuration are not the runtime's: GC leaves them.
    assert!(after.pods.iter().any(|p| p.name == "red"));
}

#[test]
fn apply_replaces_all_but_the_runtimes_pods() {
    let a = attachment("aaa", "eth0", "/var/run/netns/a");
    let with_cni = edit(&demo(), &Request::CniAdd { attachment: a })
        .unwrap()
        .unwrap();
    let mut file = Config::demo_without_lb();
    file.pods.retain(|p| p.name == "red");
    let next = edit(
        &with_cni,
        &Request::Apply {
            config: Box::new(file),
        },
    )
    .unwrap()
    .unwrap();
    let names: Vec<&str> = next.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 2);
    assert_eq!(names[0], "red");
    assert!(names[1].starts_with("c-aaa-"));
    assert!(next.services.is_empty());

    let mut other = Config::demo();
    other.node.name = "other".into();
    let err = edit(
        &demo(),
        &Request::Apply {
            config: Box::new(other),
        },
    )
    .unwrap_err();
    assert!(err.message.contains("--instance other"), "{}", err.message);
}

#[test]
fn node_add_and_del_edit_the_peers() {
    use crate::config::cluster::{ClusterConfig, ClusterMode, PeerConfig};
    let peer = PeerConfig {
        name: "node2".into(),
        node_address: "192.168.50.3".parse().unwrap(),
        pod_cidr: "10.200.1.0/24".parse().unwrap(),
    };
    let add = Request::NodeAdd { peer: peer.clone() };
    // Without [cluster], refused.
    assert_eq!(kind(edit(&demo(), &add)), ErrorKind::Invalid);
    let mut base = demo();
    base.cluster = Some(ClusterConfig {
        cidr: "10.200.0.0/16".parse().unwrap(),
        mode: ClusterMode::Direct,
        vxlan_vni: None,
        vxlan_port: None,
        vxlan_device: None,
        ..ClusterConfig::default()
    });
    let next = edit(&base, &add).unwrap().unwrap();
    assert_eq!(next.peers, vec![peer]);
    assert_eq!(kind(edit(&next, &add)), ErrorKind::Exists);
    let del = Request::NodeDel {
        name: "node2".into(),
    };
    assert_eq!(edit(&next, &del).unwrap().unwrap().peers, Vec::new());
    assert_eq!(kind(edit(&base, &del)), ErrorKind::NotFound);
}

/// The demo as an etcd node that leased 10.200.0.0/24 and knows node2.
fn etcd_node() -> Config {
    use crate::config::cluster::{ClusterConfig, PeerConfig};
    let mut c = demo();
    c.cluster = Some(ClusterConfig {
        cidr: "10.200.0.0/16".parse().unwrap(),
        etcd_endpoints: vec!["http://192.168.50.1:2379".into()],
        ..ClusterConfig::default()
    });
    c.peers = vec![PeerConfig {
        name: "node2".into(),
        node_address: "192.168.50.3".parse().unwrap(),
        pod_cidr: "10.200.1.0/24".parse().unwrap(),
    }];
    c
}

fn etcd_peer(name: &str, last: u8, cidr: &str) -> crate::etcd::Peer {
    crate::etcd::Peer {
        name: name.into(),
        address: std::net::Ipv4Addr::new(192, 168, 50, last),
        pod_cidr: cidr.parse().unwrap(),
    }
}

#[test]
fn etcd_events_edit_only_the_peers_and_ignore_this_node() {
    use super::super::cluster::ClusterEvent;
    use crate::etcd::PeerEvent;
    let base = etcd_node();
    let up = ClusterEvent::Peer(PeerEvent::Up(etcd_peer("node3", 4, "10.200.2.0/24")));
    let next = peer_event(&base, &up).unwrap().unwrap();
    let names: Vec<&str> = next.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node2", "node3"]);
    let mut without_peers = next.clone();
    without_peers.peers = base.peers.clone();
    assert_eq!(without_peers, base, "nothing but the peers changed");
    // The same again, and this node's own lease: nothing to change.
    assert_eq!(peer_event(&next, &up).unwrap(), None);
    let me = ClusterEvent::Peer(PeerEvent::Up(etcd_peer("demo", 2, "10.200.0.0/24")));
    assert_eq!(peer_event(&base, &me).unwrap(), None);
    // node2 re-leased elsewhere: its old entry goes.
    let moved = ClusterEvent::Peer(PeerEvent::Up(etcd_peer("node2", 3, "10.200.5.0/24")));
    let m = peer_event(&base, &moved).unwrap().unwrap();
    assert_eq!(m.peers.len(), 1);
    assert_eq!(m.peers[0].pod_cidr.to_string(), "10.200.5.0/24");
    // Down by pod CIDR.
    let down = ClusterEvent::Peer(PeerEvent::Down {
        name: "node2".into(),
        pod_cidr: "10.200.1.0/24".parse().unwrap(),
    });
    assert!(peer_event(&base, &down).unwrap().unwrap().peers.is_empty());
    // A resync replaces the list (this node excluded).
    let resync = ClusterEvent::Resync(vec![
        etcd_peer("demo", 2, "10.200.0.0/24"),
        etcd_peer("node4", 5, "10.200.3.0/24"),
    ]);
    let r = peer_event(&base, &resync).unwrap().unwrap();
    let names: Vec<&str> = r.peers.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["node4"]);
    // A peer overlapping this node's CIDR is refused, nothing changes.
    let bad = ClusterEvent::Peer(PeerEvent::Up(etcd_peer("rogue", 9, "10.200.0.0/24")));
    assert_eq!(kind(peer_event(&base, &bad)), ErrorKind::Invalid);
}

#[test]
fn with_etcd_node_add_and_del_are_refused_and_apply_keeps_the_lease_and_peers() {
    let base = etcd_node();
    let del = Request::NodeDel {
        name: "node2".into(),
    };
    let err = edit(&base, &del).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Invalid);
    assert!(err.message.contains("come from etcd"), "{}", err.message);
    // A file without pod CIDR or peers: the leased CIDR and etcd's peers
    // stay.
    let mut file = base.clone();
    file.node.pod_cidr = crate::config::cluster::UNSET_POD_CIDR;
    file.peers.clear();
    file.conntrack.gc_interval = 20;
    let apply = |c: &Config| Request::Apply {
        config: Box::new(c.clone()),
    };
    let next = edit(&base, &apply(&file)).unwrap().unwrap();
    assert_eq!(next.node.pod_cidr, base.node.pod_cidr);
    assert_eq!(next.peers, base.peers);
    assert_eq!(next.conntrack.gc_interval, 20);
    // Another pod CIDR, static peers, changed etcd settings: refused.
    let mut other = file.clone();
    other.node.pod_cidr = "10.200.7.0/24".parse().unwrap();
    assert!(
        edit(&base, &apply(&other))
            .unwrap_err()
            .message
            .contains("leased from etcd")
    );
    let mut other = file.clone();
    other.peers = base.peers.clone();
    assert!(
        edit(&base, &apply(&other))
            .unwrap_err()
            .message
            .contains("[[peers]]")
    );
    let mut other = file.clone();
    other.cluster.as_mut().unwrap().lease_ttl_secs = Some(30);
    assert!(
        edit(&base, &apply(&other))
            .unwrap_err()
            .message
            .contains("restart the daemon")
    );
}
