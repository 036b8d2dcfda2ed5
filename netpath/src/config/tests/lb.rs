//! Unit tests of the port-forward and service sections: parsing, defaults,
//! the round trip, and every check of `Config::check_lb`.

use super::*;

const LB: &str = r#"
[node]
name = "demo"
pod_cidr = "10.200.0.0/24"
service_cidr = "10.96.0.0/16"

[node.uplink]
name = "uplink0"
address = "192.168.50.2/24"

[[pods]]
name = "red"

[[pods]]
name = "blue"

[[port_forwards]]
proto = "tcp"
port = 8080
to = "blue"
to_port = 80

[[port_forwards]]
proto = "udp"
port = 5353
address = "192.168.50.2"
to = "192.168.50.1:53"

[[services]]
name = "web"
vip = "10.96.0.10"
port = 80
proto = "tcp"
backends = ["red", "blue", "192.168.50.1:8080"]
target_port = 8000
affinity = "client_ip"
"#;

fn lb() -> Config {
    Config::from_toml_str(LB).unwrap()
}

fn forward(port: u16, address: Option<&str>, to: &str) -> PortForwardConfig {
    PortForwardConfig {
        proto: L4Proto::Tcp,
        port,
        address: address.map(addr),
        to: to.parse().unwrap(),
        to_port: None,
    }
}

fn service(name: &str, vip: &str, port: u16, backends: &[&str]) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        vip: addr(vip),
        port,
        proto: L4Proto::Tcp,
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        target_port: None,
        affinity: SessionAffinity::None,
        affinity_timeout: None,
    }
}

fn lb_err(c: &Config, mentions: &[&str]) -> LbError {
    match fails(c, mentions) {
        ConfigError::Lb(e) => e,
        e => panic!("not a load balancer error: {e}"),
    }
}

#[test]
fn forwards_and_services_parse_with_their_defaults() {
    let c = lb();
    assert_eq!(c.node.service_cidr, Some(cidr("10.96.0.0/16")));
    let [tcp, udp] = &c.port_forwards[..] else {
        panic!("two forwards")
    };
    assert_eq!(
        (tcp.proto, tcp.port, tcp.address),
        (L4Proto::Tcp, 8080, None)
    );
    assert_eq!(tcp.to, Target::Pod("blue".into()));
    assert_eq!(tcp.target_port(), 80);
    assert_eq!(udp.to, Target::Address("192.168.50.1:53".parse().unwrap()));
    assert_eq!(udp.target_port(), 53);
    assert_eq!(forward(8080, None, "red").target_port(), 8080);

    let web = &c.services[0];
    assert_eq!(web.backends.len(), 3);
    assert_eq!(web.backend_port(&web.backends[0]), 8000);
    assert_eq!(web.backend_port(&web.backends[2]), 8080);
    assert_eq!(web.affinity, SessionAffinity::ClientIp);
    assert_eq!(web.affinity_timeout_secs(), DEFAULT_AFFINITY_TIMEOUT);
    assert_eq!(
        service("x", "10.96.0.1", 80, &[]).affinity_timeout_secs(),
        0
    );
}

#[test]
fn forwards_and_services_round_trip_through_toml() {
    let c = lb();
    let text = c.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
    assert!(text.contains("to = \"192.168.50.1:53\""), "{text}");
    assert!(text.contains("affinity = \"client_ip\""), "{text}");
    // No forward, no service: no section in the output.
    let text = Config::demo_without_lb().to_toml_string();
    assert!(
        !text.contains("port_forwards") && !text.contains("services"),
        "{text}"
    );
}

#[test]
fn unknown_keys_and_protocols_are_parse_errors() {
    for (bad, mention) in [
        (LB.replace("proto = \"udp\"", "proto = \"sctp\""), "sctp"),
        (LB.replace("to_port = 80", "to_prot = 80"), "to_prot"),
        (
            LB.replace("affinity = \"client_ip\"", "affinity = \"sticky\""),
            "sticky",
        ),
    ] {
        let err = Config::from_toml_str(&bad).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains(mention), "{err}");
    }
}

#[test]
fn a_node_port_inside_the_snat_range_is_refused() {
    let mut c = lb();
    c.port_forwards[0].port = 40000;
    let e = lb_err(&c, &["entry 1", "40000", "32768-60999", "outside"]);
    assert!(matches!(e, LbError::NodePortInNatRange { port: 40000, .. }));
    // The range's edges are inside too; moving the range fixes it.
    c.port_forwards[0].port = 32768;
    lb_err(&c, &["32768"]);
    c.nat.port_range = "40001-60999".parse().unwrap();
    c.port_forwards[0].port = 40000;
    c.validate().unwrap();
}

#[test]
fn port_zero_is_refused_everywhere() {
    let mut c = lb();
    c.port_forwards[0].port = 0;
    assert!(matches!(
        lb_err(&c, &["entry 1", "port is 0"]),
        LbError::PortZero { field: "port", .. }
    ));
    let mut c = lb();
    c.port_forwards[0].to_port = Some(0);
    lb_err(&c, &["to_port is 0"]);
    let mut c = lb();
    c.port_forwards[1].to = "192.168.50.1:0".parse().unwrap();
    lb_err(&c, &["entry 2", "backend's port is 0"]);
    let mut c = lb();
    c.services[0].port = 0;
    lb_err(&c, &["service 'web'", "port is 0"]);
    let mut c = lb();
    c.services[0].target_port = Some(0);
    lb_err(&c, &["service 'web'", "target_port is 0"]);
}

#[test]
fn duplicate_forwards_are_refused() {
    // Same proto, port and address.
    let mut c = lb();
    c.port_forwards[1] = forward(9000, Some("192.168.50.2"), "red");
    c.port_forwards
        .push(forward(9000, Some("192.168.50.2"), "blue"));
    let e = lb_err(&c, &["entry 3", "entry 2", "192.168.50.2:9000"]);
    assert!(matches!(e, LbError::DuplicateForward { .. }));
    // A wildcard overlaps an explicit address, either order.
    let mut c = lb();
    c.port_forwards
        .push(forward(8080, Some("192.168.50.2"), "red"));
    lb_err(&c, &["entry 3", "entry 1"]);
    let mut c = lb();
    c.port_forwards[1] = forward(9000, Some("192.168.50.2"), "red");
    c.port_forwards.push(forward(9000, None, "blue"));
    lb_err(&c, &["entry 3", "every node address"]);
    // Another protocol, or another address, is fine.
    let mut c = lb();
    c.port_forwards.push(PortForwardConfig {
        proto: L4Proto::Udp,
        ..forward(8080, None, "red")
    });
    c.port_forwards
        .push(forward(9000, Some("192.168.50.2"), "red"));
    c.port_forwards
        .push(forward(9000, Some("10.200.0.1"), "red"));
    c.validate().unwrap();
}

#[test]
fn forward_targets_and_addresses_are_checked() {
    let mut c = lb();
    c.port_forwards[0].to = Target::Pod("green".into());
    let e = lb_err(&c, &["entry 1", "'green'", "[[pods]]"]);
    assert!(matches!(e, LbError::UnknownPod { .. }));

    let mut c = lb();
    c.port_forwards[1].to_port = Some(53);
    assert!(matches!(
        lb_err(&c, &["entry 2", "to_port", "192.168.50.1:53"]),
        LbError::ToPortWithAddress { .. }
    ));

    for (bad, why) in [
        ("127.0.0.1", "loopback"),
        ("10.200.0.7", "pod CIDR"),
        ("10.96.0.1", "service_cidr"),
        ("224.0.0.1", "multicast"),
    ] {
        let mut c = lb();
        c.port_forwards[1].address = Some(addr(bad));
        let e = lb_err(&c, &["entry 2", bad, why]);
        assert!(matches!(e, LbError::ForwardAddress { .. }), "{e}");
    }
    // The pods' gateway is a node address: forwards may listen there.
    let mut c = lb();
    c.port_forwards[1].address = Some(addr("10.200.0.1"));
    c.validate().unwrap();

    let mut c = lb();
    c.port_forwards[1].to = "0.0.0.0:53".parse().unwrap();
    assert!(matches!(
        lb_err(&c, &["0.0.0.0:53", "this network"]),
        LbError::TargetAddress { .. }
    ));
}

#[test]
fn the_service_cidr_must_be_free() {
    let mut c = lb();
    c.node.service_cidr = Some(cidr("10.96.0.1/16"));
    assert!(matches!(
        lb_err(&c, &["10.96.0.1/16", "10.96.0.0/16"]),
        LbError::ServiceCidrNotNetwork { .. }
    ));
    for (bad, mention) in [
        ("10.200.0.0/16", "the pod CIDR 10.200.0.0/24"),
        ("10.200.0.128/25", "the pod CIDR"),
        ("192.168.0.0/16", "uplink0"),
        ("127.0.0.0/8", "loopback"),
    ] {
        let mut c = lb();
        c.node.service_cidr = Some(cidr(bad));
        c.services.clear();
        let e = lb_err(&c, &["node.service_cidr", bad, mention]);
        assert!(
            matches!(
                e,
                LbError::ServiceCidrOverlaps { .. } | LbError::ServiceCidrSpecial { .. }
            ),
            "{e}"
        );
    }
    // A route to part of it.
    let mut c = lb();
    c.routes.push(RouteConfig {
        dst: cidr("10.96.4.0/24"),
        via: Some(addr("192.168.50.1")),
        dev: None,
    });
    lb_err(&c, &["the route to 10.96.4.0/24"]);
    // A default route covers everything and is fine.
    let mut c = lb();
    c.node.uplink.as_mut().unwrap().gateway = Some(addr("192.168.50.1"));
    c.validate().unwrap();
}

#[test]
fn services_are_checked() {
    let mut c = lb();
    c.node.service_cidr = None;
    assert!(matches!(
        lb_err(&c, &["'web'", "service_cidr"]),
        LbError::ServicesWithoutCidr { .. }
    ));

    let mut c = lb();
    c.services[0].vip = addr("10.97.0.1");
    assert!(matches!(
        lb_err(&c, &["'web'", "10.97.0.1", "outside", "10.96.0.0/16"]),
        LbError::VipOutsideCidr { .. }
    ));
    let mut c = lb();
    c.services[0].vip = addr("10.96.0.0");
    lb_err(&c, &["network address"]);

    let mut c = lb();
    c.services.push(service("web", "10.96.0.11", 80, &[]));
    assert!(matches!(
        lb_err(&c, &["'web'", "more than once"]),
        LbError::DuplicateService { .. }
    ));

    let mut c = lb();
    c.services.push(service("web2", "10.96.0.10", 80, &[]));
    assert!(matches!(
        lb_err(&c, &["'web2'", "'web'", "10.96.0.10:80/tcp"]),
        LbError::DuplicateFrontend { .. }
    ));
    // The same VIP on another port or protocol is another frontend.
    let mut c = lb();
    c.services.push(service("web2", "10.96.0.10", 443, &[]));
    c.services.push(ServiceConfig {
        proto: L4Proto::Udp,
        ..service("web3", "10.96.0.10", 80, &[])
    });
    c.validate().unwrap();

    let mut c = lb();
    c.services[0].backends.push(Target::Pod("green".into()));
    lb_err(&c, &["service 'web'", "'green'"]);

    let mut c = lb();
    c.services[0].backends.push(Target::Pod("red".into()));
    assert!(matches!(
        lb_err(&c, &["'web'", "red", "twice"]),
        LbError::DuplicateBackend { .. }
    ));

    let mut c = lb();
    c.services[0].name = "Web".into();
    assert!(matches!(
        fails(&c, &["service name", "'Web'"]),
        ConfigError::InvalidName { .. }
    ));
}

#[test]
fn a_service_holds_at_most_65535_backends() {
    let mut c = lb();
    c.services[0].backends = (0..=MAX_SERVICE_BACKENDS)
        .map(|i| {
            let i = u32::try_from(i).unwrap();
            Target::Address(std::net::SocketAddrV4::new(
                Ipv4Addr::from(0xc0a8_0000 + i + 256),
                80,
            ))
        })
        .collect();
    let e = lb_err(&c, &["'web'", "65536 backends", "65535"]);
    assert!(matches!(e, LbError::TooManyBackends { .. }));
    c.services[0].backends.pop();
    c.validate().unwrap();
}

#[test]
fn affinity_timeouts_are_checked() {
    let mut c = lb();
    c.services[0].affinity_timeout = Some(0);
    lb_err(&c, &["'web'", "affinity_timeout 0", "86400"]);
    c.services[0].affinity_timeout = Some(86_401);
    lb_err(&c, &["86401"]);
    c.services[0].affinity_timeout = Some(60);
    c.validate().unwrap();
    assert_eq!(c.services[0].affinity_timeout_secs(), 60);
    c.services[0].affinity = SessionAffinity::None;
    lb_err(&c, &["without affinity", "client_ip"]);
}

#[test]
fn thirty_thousand_services_validate_and_more_frontends_than_the_maps_hold_are_refused() {
    use netpath_common::maps::FRONTENDS_MAX;
    let mut c = lb();
    c.node.service_cidr = Some(cidr("10.96.0.0/15"));
    let many = |n: u32| -> Vec<ServiceConfig> {
        (0..n)
            .map(|i| {
                let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 1)) + i);
                service(&format!("s{i}"), &vip.to_string(), 80, &["red", "blue"])
            })
            .collect()
    };
    c.services = many(30_000);
    let t = std::time::Instant::now();
    c.validate().unwrap();
    assert!(t.elapsed().as_secs() < 10, "validation is not quadratic");
    // The two forwards are three frontends (one listens on every node
    // address: the uplink's and the gateway): 65,533 services fill the map.
    c.services = many(FRONTENDS_MAX - 3);
    c.validate().unwrap();
    c.services = many(FRONTENDS_MAX - 2);
    let e = lb_err(
        &c,
        &[
            "65537 frontends (services and port-forward addresses)",
            "at most 65536",
            "remove some",
        ],
    );
    assert!(matches!(e, LbError::TooMany { .. }));
}
