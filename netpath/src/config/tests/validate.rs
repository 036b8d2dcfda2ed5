//! Unit tests of [`Config::validate`] and [`Config::check_overlaps`].

use super::*;
use crate::ipam::AddressError;

#[test]
fn invalid_names() {
    for bad in ["", "Demo", "-x", "a_b", "a b", &"x".repeat(33)] {
        let mut c = Config::demo_without_lb();
        c.node.name = bad.into();
        let err = fails(&c, &["node.name", &format!("'{bad}'")]);
        assert!(matches!(err, ConfigError::InvalidName { .. }));

        let mut c = Config::demo_without_lb();
        c.pods[1].name = bad.into();
        c.pods[1].host_ifname = Some("np-x".into());
        let err = fails(&c, &["pod name", &format!("'{bad}'")]);
        assert!(matches!(err, ConfigError::InvalidName { .. }));
    }
    let mut c = Config::demo_without_lb();
    c.node.name = "x".repeat(32);
    c.pods[0].name = "0-a".repeat(10);
    c.pods[0].host_ifname = Some("np-long".into());
    c.validate().unwrap();
}

#[test]
fn invalid_netns() {
    for bad in ["", ".", "..", "a/b", "a b", "a\nb"] {
        let mut c = Config::demo_without_lb();
        c.node.netns = Some(bad.into());
        let err = fails(&c, &["node.netns", &format!("'{bad}'")]);
        assert!(matches!(err, ConfigError::InvalidNetns { .. }));
    }
    let mut c = Config::demo_without_lb();
    c.node.pod_netns_prefix = Some("a/".into());
    let err = fails(&c, &["node.pod_netns_prefix", "'a/'"]);
    assert!(matches!(err, ConfigError::InvalidNetns { .. }));
}

#[test]
fn pod_netns_must_not_be_the_node() {
    let mut c = Config::demo_without_lb();
    c.node.netns = Some("demo-red".into());
    let err = fails(&c, &["pod 'red'", "'demo-red'"]);
    assert!(matches!(err, ConfigError::NetnsIsNode { .. }));
}

#[test]
fn ifname_too_long_default() {
    let mut c = Config::demo_without_lb();
    c.pods.push(pod("averyveryverylongpod"));
    let err = c.validate().unwrap_err();
    assert!(matches!(err, ConfigError::IfnameTooLong { len: 23, .. }));
    assert_eq!(
        err.to_string(),
        "pod 'averyveryverylongpod': host interface name 'np-averyveryverylongpod' is 23 \
             bytes; Linux allows at most 15. Use a pod name of at most 12 bytes or set \
             host_ifname."
    );
    // 12 bytes fit; setting host_ifname fixes it too.
    c.pods[2].name = "abcdefghijkl".into();
    c.validate().unwrap();
    c.pods[2].name = "averyveryverylongpod".into();
    c.pods[2].host_ifname = Some("np-long".into());
    c.validate().unwrap();
}

#[test]
fn ifname_too_long_explicit_and_uplink() {
    let mut c = Config::demo_without_lb();
    c.pods[0].host_ifname = Some("a-sixteen-bytes!".into());
    let err = fails(
        &c,
        &["pod 'red'", "'a-sixteen-bytes!'", "16 bytes", "host_ifname"],
    );
    assert!(matches!(err, ConfigError::IfnameTooLong { .. }));

    let mut c = Config::demo_without_lb();
    c.node.uplink.as_mut().unwrap().name = "uplink-with-long-name".into();
    let err = fails(&c, &["node.uplink", "'uplink-with-long-name'", "21 bytes"]);
    assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
}

#[test]
fn invalid_ifnames() {
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a:b",
        "a b",
        "a\tb",
        "lo",
        GATEWAY_IFNAME,
    ] {
        let mut c = Config::demo_without_lb();
        c.pods[1].host_ifname = Some(bad.into());
        let err = fails(&c, &["pod 'blue'", &format!("'{bad}'")]);
        assert!(matches!(err, ConfigError::InvalidIfname { .. }), "{err}");

        let mut c = Config::demo_without_lb();
        c.node.uplink.as_mut().unwrap().name = bad.into();
        let err = fails(&c, &["node.uplink", &format!("'{bad}'")]);
        assert!(matches!(err, ConfigError::InvalidIfname { .. }), "{err}");
    }
}

#[test]
fn duplicate_pod() {
    let mut c = Config::demo_without_lb();
    c.pods.push(pod("red"));
    let err = fails(&c, &["'red'"]);
    assert!(matches!(err, ConfigError::DuplicatePod { .. }));
}

#[test]
fn duplicate_ifnames() {
    let mut c = Config::demo_without_lb();
    c.pods[1].host_ifname = Some("np-red".into());
    let err = fails(&c, &["'np-red'", "pod 'red'", "pod 'blue'"]);
    assert!(matches!(err, ConfigError::DuplicateIfname { .. }));

    let mut c = Config::demo_without_lb();
    c.pods[0].host_ifname = Some("uplink0".into());
    let err = fails(&c, &["'uplink0'", "node.uplink", "pod 'red'"]);
    assert!(matches!(err, ConfigError::DuplicateIfname { .. }));
}

#[test]
fn duplicate_address() {
    let mut c = Config::demo_without_lb();
    c.pods[0].address = Some(addr("10.200.0.7"));
    c.pods[1].address = Some(addr("10.200.0.7"));
    let err = fails(&c, &["10.200.0.7", "'red'", "'blue'"]);
    assert!(matches!(err, ConfigError::DuplicateAddress { .. }));
}

#[test]
fn address_outside_cidr() {
    let mut c = Config::demo_without_lb();
    c.pods[0].address = Some(addr("10.0.1.7"));
    let err = c.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod 'red': address 10.0.1.7 is outside the pod CIDR 10.200.0.0/24; pick an address \
             inside it or omit `address` to let IPAM choose"
    );
}

#[test]
fn address_reserved() {
    for (a, why) in [
        ("10.200.0.0", "network address"),
        ("10.200.0.255", "broadcast address"),
        ("10.200.0.1", "gateway"),
    ] {
        let mut c = Config::demo_without_lb();
        c.pods[1].address = Some(addr(a));
        let err = fails(&c, &["pod 'blue'", a, why]);
        assert!(
            matches!(err, ConfigError::Address(AddressError::Reserved { why: w, .. }) if w == why)
        );
    }
    // A non-default gateway is reserved; the default one is then free.
    let mut c = Config::demo_without_lb();
    c.node.gateway = Some(addr("10.200.0.254"));
    c.pods[0].address = Some(addr("10.200.0.1"));
    c.validate().unwrap();
    c.pods[1].address = Some(addr("10.200.0.254"));
    fails(&c, &["10.200.0.254", "gateway"]);
}

#[test]
fn gateway_errors() {
    let mut c = Config::demo_without_lb();
    c.node.gateway = Some(addr("10.9.9.9"));
    let err = fails(&c, &["10.9.9.9", "10.200.0.0/24"]);
    assert!(matches!(err, ConfigError::GatewayOutsideCidr { .. }));

    for (g, why) in [("10.200.0.0", "network"), ("10.200.0.255", "broadcast")] {
        c.node.gateway = Some(addr(g));
        let err = fails(&c, &[g, why]);
        assert!(matches!(err, ConfigError::GatewayReserved { .. }));
    }
}

#[test]
fn cidr_errors() {
    let mut c = Config::demo_without_lb();
    c.pods.truncate(1);
    c.node.pod_cidr = cidr("10.200.0.0/31");
    let err = fails(&c, &["10.200.0.0/31", "30"]);
    assert!(matches!(err, ConfigError::PrefixTooLong { .. }));

    c.node.pod_cidr = cidr("10.200.0.0/30");
    c.validate().unwrap();

    c.node.pod_cidr = cidr("10.200.0.5/24");
    let err = fails(&c, &["10.200.0.5/24", "10.200.0.0/24"]);
    assert!(matches!(err, ConfigError::CidrNotNetwork { .. }));

    for (bad, range) in [
        ("127.1.0.0/16", "127.0.0.0/8"),
        ("224.0.0.0/24", "224.0.0.0/4"),
        ("255.255.255.0/24", "240.0.0.0/4"),
    ] {
        c.node.pod_cidr = cidr(bad);
        let err = fails(&c, &[bad, range]);
        assert!(matches!(err, ConfigError::CidrSpecial { .. }), "{err}");
    }
    // 0.0.0.0/0 is what a left-out pod CIDR reads as (for etcd to lease).
    c.node.pod_cidr = cidr("0.0.0.0/0");
    let err = fails(
        &c,
        &["node.pod_cidr is missing", "0.0.0.0/0", "etcd_endpoints"],
    );
    assert!(
        matches!(
            err,
            ConfigError::Cluster(crate::config::cluster::ClusterError::PodCidrMissing)
        ),
        "{err}"
    );
}

#[test]
fn cidr_exhausted() {
    let mut c = Config::demo_without_lb();
    c.node.pod_cidr = cidr("10.200.0.0/30");
    let err = fails(&c, &["10.200.0.0/30", "room for 1", "2 are configured"]);
    assert!(matches!(
        err,
        ConfigError::CidrExhausted {
            capacity: 1,
            wanted: 2,
            ..
        }
    ));
}

#[test]
fn cidr_overlaps_uplink_statically() {
    let mut c = Config::demo_without_lb();
    c.node.uplink.as_mut().unwrap().address = Some(cidr("10.200.0.77/16"));
    let err = fails(&c, &["10.200.0.0/24", "10.200.0.0/16", "uplink0"]);
    assert!(matches!(err, ConfigError::CidrOverlapsUplink { .. }));
}

#[test]
fn check_overlaps() {
    let c = Config::demo_without_lb();
    let ok = [
        ("uplink0".to_owned(), cidr("192.168.50.2/24")),
        ("eth9".to_owned(), cidr("10.201.0.1/24")),
        // netpath's own devices carry pod-CIDR addresses.
        (GATEWAY_IFNAME.to_owned(), cidr("10.200.0.1/32")),
        ("np-red".to_owned(), cidr("10.200.0.1/32")),
    ];
    c.check_overlaps(&ok).unwrap();
    c.check_overlaps(&[]).unwrap();

    let err = c
        .check_overlaps(&[("uplink0".into(), cidr("10.200.0.9/8"))])
        .unwrap_err();
    assert!(matches!(err, ConfigError::CidrOverlapsUplink { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("10.0.0.0/8") && msg.contains("uplink0"),
        "{msg}"
    );

    let err = c
        .check_overlaps(&[("eth1".into(), cidr("10.200.0.128/25"))])
        .unwrap_err();
    assert!(matches!(err, ConfigError::CidrOverlapsInterface { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("10.200.0.128/25") && msg.contains("eth1"),
        "{msg}"
    );
}

fn route(dst: &str, via: Option<&str>, dev: Option<&str>) -> RouteConfig {
    RouteConfig {
        dst: cidr(dst),
        via: via.map(addr),
        dev: dev.map(Into::into),
    }
}

#[test]
fn uplink_gateway_errors() {
    let set = |g: &str| {
        let mut c = Config::demo_without_lb();
        c.node.uplink.as_mut().unwrap().gateway = Some(addr(g));
        c
    };
    let err = fails(
        &set("192.168.51.1"),
        &["192.168.51.1", "192.168.50.0/24", "uplink0"],
    );
    assert!(matches!(err, ConfigError::GatewayOffLink { .. }));
    for (g, why) in [
        ("192.168.50.2", "own address"),
        ("192.168.50.255", "broadcast"),
        ("192.168.50.0", "network address"),
        ("10.200.0.9", "pod CIDR"),
        ("127.0.0.1", "loopback"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "this network"),
    ] {
        let err = fails(&set(g), &["node.uplink.gateway", g, why]);
        assert!(matches!(err, ConfigError::UnusableAddress { .. }), "{err}");
    }
    // Without an address the network is unknown: checked at apply time.
    let mut c = set("192.168.51.1");
    c.node.uplink.as_mut().unwrap().address = None;
    c.validate().unwrap();
}

#[test]
fn route_errors() {
    let with = |r: RouteConfig| {
        let mut c = Config::demo_without_lb();
        c.routes.push(r);
        c
    };
    let err = fails(
        &with(route("192.168.2.9/24", Some("192.168.50.6"), None)),
        &["route dst 192.168.2.9/24", "192.168.2.0/24"],
    );
    assert!(matches!(err, ConfigError::PrefixNotNetwork { .. }));

    for inside in ["10.200.0.0/24", "10.200.0.128/25", "10.200.0.7/32"] {
        let err = fails(
            &with(route(inside, Some("192.168.50.6"), None)),
            &[inside, "inside the pod CIDR 10.200.0.0/24"],
        );
        assert!(matches!(err, ConfigError::RouteInsidePodCidr { .. }));
    }
    // A route that holds the pod CIDR is fine: local pods win.
    with(route("10.0.0.0/8", Some("192.168.50.6"), None))
        .validate()
        .unwrap();

    // The default route is already the uplink gateway's.
    let err = fails(
        &with(route("0.0.0.0/0", Some("192.168.50.6"), None)),
        &["0.0.0.0/0", "node.uplink.gateway", "[[routes]] entry 1"],
    );
    assert!(matches!(err, ConfigError::DuplicateRoute { .. }));
    let mut c = with(route("192.168.2.0/24", Some("192.168.50.6"), None));
    c.routes.push(route("192.168.2.0/24", None, Some("eth1")));
    let err = fails(&c, &["192.168.2.0/24", "entry 1", "entry 2"]);
    assert!(matches!(err, ConfigError::DuplicateRoute { .. }));
    // Nested prefixes are not duplicates.
    c.routes[1].dst = cidr("192.168.2.0/25");
    c.validate().unwrap();

    let err = fails(
        &with(route("192.168.2.0/24", None, None)),
        &["neither via nor dev"],
    );
    assert!(matches!(err, ConfigError::RouteNeedsViaOrDev { .. }));

    let err = fails(
        &with(route("192.168.2.0/24", Some("192.168.51.6"), None)),
        &["via 192.168.51.6", "192.168.50.0/24", "uplink0"],
    );
    assert!(matches!(err, ConfigError::RouteViaOffLink { .. }));
    // Another dev's networks are only known at apply time.
    with(route("192.168.2.0/24", Some("192.168.51.6"), Some("eth1")))
        .validate()
        .unwrap();

    for (via, why) in [("10.200.0.5", "pod CIDR"), ("255.255.255.255", "broadcast")] {
        let err = fails(
            &with(route("192.168.2.0/24", Some(via), Some("eth1"))),
            &["route to 192.168.2.0/24: via", via, why],
        );
        assert!(matches!(err, ConfigError::UnusableAddress { .. }));
    }

    let err = fails(
        &with(route("192.168.2.0/24", None, Some("a-very-long-ifname"))),
        &[
            "route to 192.168.2.0/24",
            "dev 'a-very-long-ifname'",
            "18 bytes",
        ],
    );
    assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
    let err = fails(
        &with(route("192.168.2.0/24", None, Some("np0"))),
        &["route to 192.168.2.0/24", "'np0'"],
    );
    assert!(matches!(err, ConfigError::InvalidIfname { .. }));
    let err = fails(
        &with(route("192.168.2.0/24", None, Some("np0-peer"))),
        &["'np0-peer'", "gateway device pair"],
    );
    assert!(matches!(err, ConfigError::InvalidIfname { .. }));
    let err = fails(
        &with(route("192.168.2.0/24", None, Some("np-red"))),
        &["'np-red'", "pod 'red'"],
    );
    assert!(matches!(err, ConfigError::IfnameIsPod { .. }));

    let mut c = with(route("192.168.2.0/24", Some("192.168.50.6"), None));
    c.node.uplink = None;
    c.masquerade.clear();
    let err = fails(&c, &["route to 192.168.2.0/24", "dev", "[node.uplink]"]);
    assert!(matches!(err, ConfigError::NoInterface { .. }));
}

#[test]
fn too_many_routes() {
    let mut c = Config::demo_without_lb();
    c.routes = (0..MAX_ROUTES as u32)
        .map(|i| RouteConfig {
            dst: Ipv4Net::new(Ipv4Addr::from(0x0b00_0000 + (i << 8)), 24).unwrap(),
            via: None,
            dev: Some("eth1".into()),
        })
        .collect();
    // With the uplink's default route, one too many.
    let err = fails(&c, &["131073 routes", "131072"]);
    assert!(matches!(err, ConfigError::TooMany { .. }));
    c.node.uplink.as_mut().unwrap().gateway = None;
    c.validate().unwrap();
}

fn masq(source: Option<&str>, out: Option<&str>, address: Option<&str>) -> MasqueradeConfig {
    MasqueradeConfig {
        source: source.map(cidr),
        out: out.map(Into::into),
        address: address.map(addr),
    }
}

#[test]
fn masquerade_errors() {
    let with = |m: MasqueradeConfig| {
        let mut c = Config::demo_without_lb();
        c.masquerade = vec![m];
        c
    };
    let err = fails(
        &with(masq(Some("10.200.0.1/24"), None, None)),
        &["masquerade source 10.200.0.1/24", "10.200.0.0/24"],
    );
    assert!(matches!(err, ConfigError::PrefixNotNetwork { .. }));

    let err = fails(
        &with(masq(Some("10.9.0.0/16"), None, None)),
        &["10.9.0.0/16", "does not overlap the pod CIDR 10.200.0.0/24"],
    );
    assert!(matches!(err, ConfigError::MasqueradeOutsidePodCidr { .. }));
    // A prefix holding the pod CIDR, or part of it, is fine.
    with(masq(Some("10.0.0.0/8"), None, None))
        .validate()
        .unwrap();
    with(masq(Some("10.200.0.0/25"), None, None))
        .validate()
        .unwrap();

    let err = fails(
        &with(masq(None, Some("uplink-number-one"), None)),
        &[
            "masquerade rule for 10.200.0.0/24",
            "out 'uplink-number-one'",
            "17 bytes",
        ],
    );
    assert!(matches!(err, ConfigError::IfnameTooLong { .. }));
    let err = fails(&with(masq(None, Some("np-blue"), None)), &["pod 'blue'"]);
    assert!(matches!(err, ConfigError::IfnameIsPod { .. }));
    let err = fails(&with(masq(None, Some("a/b"), None)), &["out 'a/b'"]);
    assert!(matches!(err, ConfigError::InvalidIfname { .. }));

    let mut c = with(masq(None, None, None));
    c.masquerade
        .push(masq(Some("10.200.0.0/24"), Some("uplink0"), None));
    let err = fails(&c, &["10.200.0.0/24", "uplink0", "keep one"]);
    assert!(matches!(err, ConfigError::DuplicateMasquerade { .. }));
    // One source out of two interfaces is fine.
    c.masquerade[1].out = Some("uplink1".into());
    c.validate().unwrap();
    c.masquerade[1].source = Some(cidr("10.200.0.0/25"));
    c.validate().unwrap();

    for (a, why) in [("10.200.0.9", "pod CIDR"), ("239.1.1.1", "multicast")] {
        let err = fails(
            &with(masq(None, None, Some(a))),
            &["masquerade rule for 10.200.0.0/24: address", a, why],
        );
        assert!(matches!(err, ConfigError::UnusableAddress { .. }));
    }

    let mut c = with(masq(None, None, None));
    c.node.uplink = None;
    let err = fails(
        &c,
        &["masquerade rule for 10.200.0.0/24", "out", "[node.uplink]"],
    );
    assert!(matches!(err, ConfigError::NoInterface { .. }));
    c.masquerade[0].out = Some("eth1".into());
    c.validate().unwrap();
}

#[test]
fn validation_order_is_deterministic() {
    // Several problems: the first pod's comes first.
    let mut c = Config::demo_without_lb();
    c.pods[0].address = Some(addr("1.2.3.4"));
    c.pods[1].host_ifname = Some("lo".into());
    for _ in 0..3 {
        assert!(matches!(
            c.validate().unwrap_err(),
            ConfigError::Address(AddressError::OutsideCidr { .. })
        ));
    }
}

#[test]
fn xdp_mode_and_deny_sources_are_read_and_checked() {
    let base = Config::demo_without_lb().to_toml_string();
    let with = |extra: &str| base.replacen("[node]\n", &format!("[node]\n{extra}\n"), 1);
    let c = Config::from_toml_str(&with(
        "xdp = \"generic\"\ndeny_sources = [\"203.0.113.0/24\", \"198.51.100.7/32\"]",
    ))
    .unwrap();
    assert_eq!(c.node.xdp, Some(crate::config::XdpMode::Generic));
    assert_eq!(c.node.deny_sources.len(), 2);
    assert_eq!(Config::from_toml_str(&c.to_toml_string()).unwrap(), c);
    assert_eq!(
        Config::demo_without_lb().node.xdp,
        None,
        "default: off (XDP costs more than it saves on a veth uplink)"
    );
    let err = Config::from_toml_str(&with("deny_sources = [\"203.0.113.0/24\"]")).unwrap_err();
    assert!(
        matches!(err, ConfigError::DenyWithoutXdp { count: 1 }),
        "a deny list needs XDP: {err}"
    );
    assert!(
        err.to_string().contains("set node.xdp = \"native\""),
        "{err}"
    );

    let err = Config::from_toml_str(&with("xdp = \"fast\"")).unwrap_err();
    assert!(err.to_string().contains("unknown variant `fast`"), "{err}");
    let err = Config::from_toml_str(&with("deny_sources = [\"203.0.113.300/24\"]")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let err = Config::from_toml_str(&with(
        "xdp = \"native\"\ndeny_sources = [\"203.0.113.9/24\"]",
    ))
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "node.deny_sources entry 203.0.113.9/24 has host bits set; write its network \
         address, 203.0.113.0/24"
    );
}
