//! Unit tests of [`super`]: every derived value, and the pod namespace's
//! state-file form.

use super::*;

#[test]
fn demo_config_resolves_with_every_default_filled_in() {
    let d = DesiredNode::resolve(&Config::demo());
    assert_eq!(d.instance, "demo");
    assert_eq!(d.gateway, Ipv4Addr::new(10, 200, 0, 1));
    assert_eq!(d.pods.len(), 2);
    assert_eq!(d.pods[0].netns, PodNetns::Owned("demo-red".into()));
    assert_eq!(d.pods[0].host_ifname, "np-red");
    assert_eq!(d.pods[0].ifname, POD_IFNAME);
    assert_eq!(d.pods[1].address, None);
    assert_eq!(
        d.routes,
        [DesiredRoute {
            dst: Ipv4Net::default(),
            via: Some(Ipv4Addr::new(192, 168, 50, 1)),
            dev: "uplink0".into(),
        }]
    );
    assert_eq!(
        d.masquerade,
        [DesiredMasquerade {
            source: "10.200.0.0/24".parse().unwrap(),
            out: "uplink0".into(),
            address: None,
        }]
    );
    assert_eq!(d.settings.fib_ifindex, 0);
    assert_eq!(d.node_settings(9).fib_ifindex, 9);
    assert_eq!(
        d.node_settings(9).tcp_syn_timeout,
        NodeSettings::DEFAULT.tcp_syn_timeout
    );
    assert_eq!(d.gc_interval, Duration::from_secs(10));
    assert_eq!(d.netns_label(), "netpath-demo-node");
    assert_eq!(netns_label(None), "the current namespace");
}

#[test]
fn pod_netns_keeps_the_state_file_format() {
    let owned = PodNetns::Owned("demo-red".into());
    assert_eq!(serde_json::to_string(&owned).unwrap(), "\"demo-red\"");
    let back: PodNetns = serde_json::from_str("\"demo-red\"").unwrap();
    assert_eq!(back, owned);
    let given = PodNetns::Given {
        path: "/proc/42/ns/net".into(),
    };
    let text = serde_json::to_string(&given).unwrap();
    assert_eq!(text, r#"{"path":"/proc/42/ns/net"}"#);
    assert_eq!(serde_json::from_str::<PodNetns>(&text).unwrap(), given);
    assert!(owned.is_owned() && !given.is_owned());
    assert_eq!(given.to_string(), "/proc/42/ns/net");
    assert_eq!(owned.path(), Path::new("/run/netns/demo-red"));
}

#[test]
fn pods_get_the_uplinks_mtu_or_ethernets() {
    let d = DesiredNode::resolve(&Config::demo_without_lb());
    assert!(d.uplink.is_some());
    assert_eq!(d.pod_mtu(Some(1400)), 1400);
    assert_eq!(d.pod_mtu(Some(9000)), 9000);
    assert_eq!(d.pod_mtu(None), DEFAULT_POD_MTU);
    let no_uplink = DesiredNode { uplink: None, ..d };
    assert_eq!(no_uplink.pod_mtu(Some(1400)), 1500);
}

#[test]
fn forwards_and_services_resolve_into_frontends() {
    use crate::lb::frontends::{NodeAddresses, Owner, SpecError, specs};
    use netpath_common::frontend_flags;
    let mut c = Config::demo_without_lb();
    c.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    let text = c.to_toml_string()
        + r#"
[[port_forwards]]
proto = "tcp"
port = 8080
to = "blue"
to_port = 80

[[services]]
name = "web"
vip = "10.96.0.10"
port = 80
proto = "udp"
backends = ["red", "192.168.50.1:5353"]
affinity = "client_ip"
affinity_timeout = 60
"#;
    let c = Config::from_toml_str(&text).unwrap();
    let d = DesiredNode::resolve(&c);
    assert!(d.has_frontends());
    assert_eq!(d.port_forwards[0].to.to_string(), "blue:80");
    assert_eq!(d.services[0].backends[0].port, 80);
    assert_eq!(d.services[0].affinity_timeout, Some(60));

    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    let addrs = NodeAddresses {
        pods: [
            ("red".into(), ip("10.200.0.2")),
            ("blue".into(), ip("10.200.0.3")),
        ]
        .into(),
        wildcard: vec![ip("192.168.50.2"), ip("10.200.0.1")],
    };
    let fes = specs(&d, &addrs).unwrap();
    // The forward listens on the uplink's address and the gateway.
    let listen: Vec<String> = fes.iter().map(|f| f.vip.to_string()).collect();
    assert_eq!(
        listen,
        [
            "192.168.50.2:8080/tcp",
            "10.200.0.1:8080/tcp",
            "10.96.0.10:80/udp"
        ]
    );
    assert_eq!(fes[0].flags, frontend_flags::PORT_FORWARD);
    assert_eq!(fes[0].backends[0].address.to_string(), "10.200.0.3:80");
    assert_eq!(fes[0].owner, Owner::PortForward(1));
    assert_eq!(fes[2].flags, frontend_flags::AFFINITY);
    assert_eq!(fes[2].affinity_timeout_secs, 60);
    assert_eq!(fes[2].backends[1].label, "192.168.50.1:5353");

    let none = NodeAddresses {
        wildcard: Vec::new(),
        ..addrs
    };
    assert!(matches!(
        specs(&d, &none),
        Err(SpecError::NoWildcardAddress { .. })
    ));
}
