//! `[cluster]` and `[[peers]]`: what validation refuses, with messages
//! that say what to change.

use std::net::Ipv4Addr;

use crate::config::{
    Config, ConfigError,
    cluster::{ClusterConfig, ClusterError, ClusterMode, PeerConfig},
};

fn peer(name: &str, address: [u8; 4], cidr: &str) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        node_address: Ipv4Addr::from(address),
        pod_cidr: cidr.parse().unwrap(),
    }
}

/// The demo (pod CIDR 10.200.0.0/24, uplink 192.168.50.2/24) in cluster
/// 10.200.0.0/16 with two peers.
fn cluster() -> Config {
    let mut c = Config::demo_without_lb();
    c.cluster = Some(ClusterConfig {
        cidr: "10.200.0.0/16".parse().unwrap(),
        mode: ClusterMode::Vxlan,
        vxlan_vni: None,
        vxlan_port: None,
        vxlan_device: None,
        ..ClusterConfig::default()
    });
    c.peers = vec![
        peer("node2", [192, 168, 50, 3], "10.200.1.0/24"),
        peer("node3", [192, 168, 50, 4], "10.200.2.0/24"),
    ];
    c
}

fn refused(c: &Config) -> (ClusterError, String) {
    match c.validate() {
        Err(ConfigError::Cluster(e)) => {
            let msg = e.to_string();
            (e, msg)
        }
        other => panic!("expected a cluster error, got {other:?}"),
    }
}

#[test]
fn a_cluster_with_peers_is_valid_and_survives_toml() {
    let c = cluster();
    c.validate().unwrap();
    let text = c.to_toml_string();
    assert!(
        text.contains("[cluster]") && text.contains("[[peers]]"),
        "{text}"
    );
    assert_eq!(Config::from_toml_str(&text).unwrap(), c);
    let cl = c.cluster.as_ref().unwrap();
    assert_eq!((cl.vni(), cl.port(), cl.device()), (1, 8472, "np-vxlan"));
}

#[test]
fn overlapping_peer_cidrs_are_refused() {
    let mut c = cluster();
    c.peers[1].pod_cidr = "10.200.1.128/25".parse().unwrap();
    let (e, msg) = refused(&c);
    assert!(matches!(e, ClusterError::PeerCidrOverlap { .. }), "{msg}");
    assert!(msg.contains("node3") && msg.contains("node2"), "{msg}");
}

#[test]
fn a_peer_cidr_overlapping_the_nodes_own_is_refused() {
    let mut c = cluster();
    c.peers[0].pod_cidr = "10.200.0.0/23".parse().unwrap();
    let (e, msg) = refused(&c);
    assert!(matches!(e, ClusterError::PeerCidrOverlap { .. }), "{msg}");
    assert!(msg.contains("this node's node.pod_cidr"), "{msg}");
}

#[test]
fn a_peer_cidr_outside_the_cluster_is_refused() {
    let mut c = cluster();
    c.peers[0].pod_cidr = "10.201.1.0/24".parse().unwrap();
    let (e, msg) = refused(&c);
    assert!(matches!(e, ClusterError::PeerCidrOutside { .. }), "{msg}");
}

#[test]
fn a_peer_at_the_nodes_own_address_is_refused() {
    let mut c = cluster();
    c.peers[0].node_address = Ipv4Addr::new(192, 168, 50, 2);
    let (e, msg) = refused(&c);
    assert!(matches!(e, ClusterError::PeerIsSelf { .. }), "{msg}");
}

#[test]
fn duplicate_names_and_addresses_peers_without_cluster_and_bad_vni_are_refused() {
    let mut c = cluster();
    c.peers[1].name = "node2".into();
    assert!(matches!(refused(&c).0, ClusterError::DuplicatePeer { .. }));
    let mut c = cluster();
    c.peers[1].node_address = c.peers[0].node_address;
    assert!(matches!(
        refused(&c).0,
        ClusterError::DuplicatePeerAddress { .. }
    ));
    let mut c = cluster();
    c.cluster = None;
    assert!(matches!(refused(&c).0, ClusterError::PeersWithoutCluster));
    let mut c = cluster();
    c.cluster.as_mut().unwrap().vxlan_vni = Some(1 << 24);
    assert!(matches!(refused(&c).0, ClusterError::Vni { .. }));
    let mut c = cluster();
    c.cluster.as_mut().unwrap().cidr = "10.201.0.0/16".parse().unwrap();
    assert!(matches!(
        refused(&c).0,
        ClusterError::NodeCidrOutside { .. }
    ));
}

/// The demo in an etcd cluster 10.200.0.0/16: no pod CIDR, no peers.
fn etcd_cluster() -> Config {
    let mut c = cluster();
    c.peers.clear();
    c.node.pod_cidr = crate::config::cluster::UNSET_POD_CIDR;
    let cl = c.cluster.as_mut().unwrap();
    cl.etcd_endpoints = vec!["http://192.168.50.1:2379".into()];
    c
}

#[test]
fn with_etcd_the_pod_cidr_may_be_left_out_and_survives_toml_left_out() {
    let c = etcd_cluster();
    c.validate().unwrap();
    let text = c.to_toml_string();
    assert!(!text.contains("pod_cidr"), "{text}");
    assert!(text.contains("etcd_endpoints"), "{text}");
    let back = Config::from_toml_str(&text).unwrap();
    assert_eq!(back, c);
    assert!(back.node.pod_cidr_is_unset());
    let cl = back.cluster.as_ref().unwrap();
    assert_eq!(
        (
            cl.etcd_prefix(),
            cl.node_cidr_len(),
            cl.lease_ttl().as_secs()
        ),
        ("/netpath/default", 24, 10)
    );
}

#[test]
fn without_etcd_a_missing_pod_cidr_is_refused_saying_what_to_do() {
    let mut c = etcd_cluster();
    c.cluster.as_mut().unwrap().etcd_endpoints.clear();
    let (e, msg) = refused(&c);
    assert!(matches!(e, ClusterError::PodCidrMissing), "{msg}");
    assert!(msg.contains("etcd_endpoints"), "{msg}");
}

#[test]
fn with_etcd_static_peers_and_a_pod_cidr_of_another_length_are_refused_in_a_file() {
    let mut c = etcd_cluster();
    c.peers
        .push(peer("node2", [192, 168, 50, 3], "10.200.1.0/24"));
    let err = Config::from_toml_str(&c.to_toml_string()).unwrap_err();
    assert!(
        matches!(err, ConfigError::Cluster(ClusterError::StaticPeersWithEtcd)),
        "{err}"
    );
    let mut c = etcd_cluster();
    c.node.pod_cidr = "10.200.4.0/23".parse().unwrap();
    let err = Config::from_toml_str(&c.to_toml_string()).unwrap_err();
    assert!(err.to_string().contains("is not a /24"), "{err}");
    // The leased length is accepted (the daemon's kept state).
    c.node.pod_cidr = "10.200.4.0/24".parse().unwrap();
    Config::from_toml_str(&c.to_toml_string()).unwrap();
}

#[test]
fn bad_etcd_settings_are_refused() {
    let mut c = etcd_cluster();
    c.cluster.as_mut().unwrap().etcd_endpoints = vec!["192.168.50.1:2379".into()];
    assert!(matches!(refused(&c).0, ClusterError::EtcdEndpoint { .. }));
    let mut c = etcd_cluster();
    c.cluster.as_mut().unwrap().etcd_prefix = Some("netpath".into());
    assert!(matches!(refused(&c).0, ClusterError::EtcdPrefix { .. }));
    let mut c = etcd_cluster();
    c.cluster.as_mut().unwrap().node_cidr_len = Some(15);
    assert!(matches!(refused(&c).0, ClusterError::NodeCidrLen { .. }));
    let mut c = etcd_cluster();
    c.cluster.as_mut().unwrap().lease_ttl_secs = Some(0);
    assert!(matches!(refused(&c).0, ClusterError::LeaseTtl { .. }));
    let mut c = etcd_cluster();
    c.node.uplink.as_mut().unwrap().address = None;
    c.masquerade.clear();
    assert!(matches!(
        refused(&c).0,
        ClusterError::EtcdWithoutUplinkAddress
    ));
}
