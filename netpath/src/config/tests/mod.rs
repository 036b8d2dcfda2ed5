//! Unit tests of [`super`]: parsing, defaults, the TOML round trip.

use super::*;
use crate::resolve::DesiredNode;
use ipnet::Ipv4Net;
use netpath_common::NodeSettings;

mod cluster;
mod dns;
mod lb;
mod validate;

/// The route table of a configuration as (dst, via, dev).
fn route_table(c: &Config) -> Vec<(Ipv4Net, Option<Ipv4Addr>, String)> {
    DesiredNode::resolve(c)
        .routes
        .into_iter()
        .map(|r| (r.dst, r.via, r.dev))
        .collect()
}

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn pod(name: &str) -> PodConfig {
    PodConfig::named(name)
}

/// Validates `config` and returns the error's message, checking that it
/// mentions every string in `mentions`.
fn fails(config: &Config, mentions: &[&str]) -> ConfigError {
    let err = config
        .validate()
        .expect_err("the configuration should be invalid");
    let msg = err.to_string();
    for m in mentions {
        assert!(msg.contains(m), "{msg:?} does not mention {m:?}");
    }
    err
}

const FULL: &str = r#"
[node]
name = "demo"
netns = "netpath-demo-node"
pod_cidr = "10.200.0.0/24"
gateway = "10.200.0.1"
pod_netns_prefix = "demo-"

[node.uplink]
name = "uplink0"
address = "192.168.50.2/24"

[[pods]]
name = "red"
address = "10.200.0.10"
host_ifname = "np-red"

[[pods]]
name = "blue"
"#;

#[test]
fn parses_the_full_example() {
    let c = Config::from_toml_str(FULL).unwrap();
    assert_eq!(c.node.name, "demo");
    assert_eq!(c.node.netns.as_deref(), Some("netpath-demo-node"));
    assert_eq!(c.node.pod_cidr, cidr("10.200.0.0/24"));
    assert_eq!(c.gateway(), addr("10.200.0.1"));
    let uplink = c.node.uplink.as_ref().unwrap();
    assert_eq!(uplink.name, "uplink0");
    assert_eq!(uplink.address, Some(cidr("192.168.50.2/24")));
    assert_eq!(c.pods.len(), 2);
    assert_eq!(c.pods[0].address, Some(addr("10.200.0.10")));
    assert_eq!(c.pods[1], pod("blue"));
}

#[test]
fn minimal_config_and_defaults() {
    let c = Config::from_toml_str(
        "[node]\nname = \"n1\"\npod_cidr = \"10.1.2.0/24\"\n\n[[pods]]\nname = \"web\"\n",
    )
    .unwrap();
    assert_eq!(c.node.netns, None);
    assert_eq!(c.node.uplink, None);
    assert_eq!(c.gateway(), addr("10.1.2.1"));
    assert_eq!(c.pod_netns(&c.pods[0]), "n1-web");
    assert_eq!(Config::host_ifname(&c.pods[0]), "np-web");

    let c = Config::from_toml_str("[node]\nname = \"n1\"\npod_cidr = \"10.1.2.0/24\"\n").unwrap();
    assert!(c.pods.is_empty());
}

#[test]
fn explicit_prefix_and_ifname() {
    let mut c = Config::demo_without_lb();
    c.node.pod_netns_prefix = Some("x.".into());
    c.pods[0].host_ifname = Some("veth-red".into());
    c.validate().unwrap();
    assert_eq!(c.pod_netns(&c.pods[0]), "x.red");
    assert_eq!(Config::host_ifname(&c.pods[0]), "veth-red");
    c.node.pod_netns_prefix = Some(String::new());
    c.validate().unwrap();
    assert_eq!(c.pod_netns(&c.pods[1]), "blue");
}

#[test]
fn toml_round_trip() {
    for c in [
        Config::from_toml_str(FULL).unwrap(),
        Config::demo(),
        Config::demo_without_lb(),
    ] {
        let text = c.to_toml_string();
        assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
    }
    let mut bare = Config::demo_without_lb();
    bare.pods.clear();
    bare.masquerade.clear();
    bare.node.uplink = None;
    bare.node.netns = None;
    let text = bare.to_toml_string();
    for section in ["pods", "routes", "masquerade", "nat", "conntrack"] {
        assert!(!text.contains(section), "{text}");
    }
    assert_eq!(Config::from_toml_str(&text).unwrap(), bare);
}

#[test]
fn demo_validates() {
    let c = Config::demo();
    c.validate().unwrap();
    assert_eq!(c.node.name, "demo");
    assert_eq!(c.node.netns.as_deref(), Some("netpath-demo-node"));
    assert_eq!(c.gateway(), addr("10.200.0.1"));
    assert_eq!(c.pod_netns(&c.pods[0]), "demo-red");
    assert_eq!(Config::host_ifname(&c.pods[1]), "np-blue");
    let names: Vec<_> = c.pods.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["red", "blue"]);
    assert!(c.pods.iter().all(|p| p.address.is_none()));
}

#[test]
fn unknown_keys_are_errors() {
    for (text, key) in [
        (FULL.replace("gateway =", "gatway ="), "gatway"),
        (
            FULL.replace(
                "[[pods]]\nname = \"blue\"",
                "[[pods]]\nname = \"blue\"\nip = \"1.2.3.4\"",
            ),
            "ip",
        ),
        (
            FULL.replace("[node.uplink]", "[node.uplink]\nmtu = 1500"),
            "mtu",
        ),
        (format!("{FULL}\n[extra]\nx = 1\n"), "extra"),
    ] {
        let err = Config::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("<string>") && msg.contains(key), "{msg}");
    }
}

#[test]
fn parse_errors() {
    let err =
        Config::from_toml_str("[node]\nname = \"a\"\npod_cidr = \"fd00::/64\"\n").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    let err = Config::from_toml_str("[node]\nname = \"a\"\n").unwrap_err();
    assert!(err.to_string().contains("pod_cidr"), "{err}");
    let err = Config::from_toml_str("not toml at all [").unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn load_names_the_path() {
    let dir = std::env::temp_dir().join(format!("netpath-config-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();

    let missing = dir.join("missing.toml");
    let err = Config::load(&missing).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }));
    assert!(err.to_string().contains("missing.toml"), "{err}");

    let bad = dir.join("bad.toml");
    fs::write(&bad, "[node]\nname = 5\n").unwrap();
    let err = Config::load(&bad).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("bad.toml"), "{err}");

    let good = dir.join("good.toml");
    fs::write(&good, Config::demo_without_lb().to_toml_string()).unwrap();
    assert_eq!(Config::load(&good).unwrap(), Config::demo_without_lb());

    fs::remove_dir_all(&dir).unwrap();
}

const ROUTED: &str = r#"
[node]
name = "edge"
pod_cidr = "10.200.0.0/24"

[node.uplink]
name = "uplink0"
address = "192.168.50.2/24"
gateway = "192.168.50.1"

[[routes]]
dst = "192.168.70.0/24"
via = "192.168.60.1"
dev = "uplink1"

[[routes]]
dst = "192.168.2.0/24"
via = "192.168.50.6"

[[routes]]
dst = "172.16.0.0/12"
dev = "eth9"

[[masquerade]]

[[masquerade]]
source = "10.200.0.128/25"
out = "uplink1"
address = "192.168.60.2"

[nat]
port_range = "20000-29999"

[conntrack]
max_entries = 4096
tcp_fin_timeout = 1
gc_interval = 2
"#;

#[test]
fn routes_masquerade_nat_and_conntrack_parse() {
    let c = Config::from_toml_str(ROUTED).unwrap();
    assert_eq!(
        c.node.uplink.as_ref().unwrap().gateway,
        Some(addr("192.168.50.1"))
    );
    assert_eq!(
        route_table(&c),
        vec![
            (
                cidr("0.0.0.0/0"),
                Some(addr("192.168.50.1")),
                "uplink0".into()
            ),
            (
                cidr("192.168.70.0/24"),
                Some(addr("192.168.60.1")),
                "uplink1".into()
            ),
            (
                cidr("192.168.2.0/24"),
                Some(addr("192.168.50.6")),
                "uplink0".into()
            ),
            (cidr("172.16.0.0/12"), None, "eth9".into()),
        ]
    );
    assert_eq!(c.masquerade_source(&c.masquerade[0]), cidr("10.200.0.0/24"));
    assert_eq!(c.masquerade_out(&c.masquerade[0]), Some("uplink0"));
    assert_eq!(c.masquerade_out(&c.masquerade[1]), Some("uplink1"));
    assert_eq!(c.masquerade[1].address, Some(addr("192.168.60.2")));
    assert_eq!(
        c.nat.port_range,
        PortRange {
            min: 20000,
            max: 29999
        }
    );
    assert_eq!(c.conntrack.max_entries, 4096);
    assert_eq!(c.conntrack.tcp_fin_timeout, 1);
    assert_eq!(c.conntrack.gc_interval, 2);
    // Keys left out keep netfilter's defaults.
    let s = DesiredNode::resolve(&c).node_settings(7);
    assert_eq!(s.fib_ifindex, 7);
    assert_eq!((s.nat_port_min, s.nat_port_max), (20000, 29999));
    assert_eq!(s.tcp_fin_timeout, 1);
    assert_eq!(s.tcp_syn_timeout, NodeSettings::DEFAULT.tcp_syn_timeout);
    assert_eq!(s.udp_timeout, NodeSettings::DEFAULT.udp_timeout);

    let text = c.to_toml_string();
    assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
}

#[test]
fn nat_and_conntrack_defaults_are_netfilters() {
    let c = Config::from_toml_str(FULL).unwrap();
    let mut want = NodeSettings::DEFAULT;
    want.fib_ifindex = 3;
    want.gateway = c.gateway().octets();
    assert_eq!(DesiredNode::resolve(&c).node_settings(3), want);
    assert_eq!(
        c.conntrack.max_entries,
        netpath_common::maps::CONNTRACK_DEFAULT_MAX
    );
    assert_eq!(c.conntrack.gc_interval, 10);
    assert!(c.routes.is_empty() && c.masquerade.is_empty());
}

#[test]
fn demo_masquerades_through_the_uplink_and_routes_by_default() {
    let c = Config::demo();
    assert_eq!(
        route_table(&c),
        vec![(
            cidr("0.0.0.0/0"),
            Some(addr("192.168.50.1")),
            "uplink0".into()
        )]
    );
    assert_eq!(c.masquerade.len(), 1);
    assert_eq!(c.masquerade_source(&c.masquerade[0]), c.node.pod_cidr);
    assert_eq!(c.masquerade_out(&c.masquerade[0]), Some("uplink0"));
}

#[test]
fn new_sections_reject_unknown_keys() {
    for (text, key) in [
        (
            ROUTED.replace("dev = \"eth9\"", "dev = \"eth9\"\nmetric = 5"),
            "metric",
        ),
        (
            ROUTED.replace("out = \"uplink1\"", "out = \"uplink1\"\nto = 1"),
            "to",
        ),
        (ROUTED.replace("[nat]", "[nat]\nports = 1"), "ports"),
        (
            ROUTED.replace("[conntrack]", "[conntrack]\ntcp_timeout = 1"),
            "tcp_timeout",
        ),
        (
            ROUTED.replace("gateway = \"192.168.50.1\"", "gw = \"192.168.50.1\""),
            "gw",
        ),
    ] {
        let err = Config::from_toml_str(&text).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains(key), "{err}");
    }
}

#[test]
fn port_range_syntax() {
    assert_eq!(
        "1000-2000".parse(),
        Ok(PortRange {
            min: 1000,
            max: 2000
        })
    );
    assert_eq!(
        "5000".parse(),
        Ok(PortRange {
            min: 5000,
            max: 5000
        })
    );
    for bad in ["", "a-b", "1-", "70000-80000", "1-2-3"] {
        let err = bad.parse::<PortRange>().unwrap_err();
        assert!(err.contains("MIN-MAX"), "{err}");
    }
    let err = Config::from_toml_str(&ROUTED.replace("20000-29999", "20000-x")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("MIN-MAX"), "{err}");
}

#[test]
fn invalid_port_ranges() {
    let mut c = Config::demo_without_lb();
    c.nat.port_range = PortRange {
        min: 40000,
        max: 30000,
    };
    let err = fails(&c, &["nat.port_range 40000-30000", "MIN is above MAX"]);
    assert!(matches!(err, ConfigError::InvalidPortRange { .. }));
    c.nat.port_range = PortRange { min: 0, max: 30000 };
    fails(&c, &["0-30000", "port 0"]);
    c.nat.port_range = PortRange { min: 5, max: 5 };
    c.validate().unwrap();
}

#[test]
fn conntrack_limits() {
    for bad in [0, MIN_CONNTRACK_ENTRIES - 1, MAX_CONNTRACK_ENTRIES + 1] {
        let mut c = Config::demo_without_lb();
        c.conntrack.max_entries = bad;
        let err = fails(&c, &["conntrack.max_entries", &bad.to_string(), "1024"]);
        assert!(matches!(err, ConfigError::ConntrackSize { .. }));
    }
    let mut c = Config::demo_without_lb();
    c.conntrack.udp_stream_timeout = 0;
    let err = fails(&c, &["conntrack.udp_stream_timeout", "at least 1"]);
    assert!(matches!(err, ConfigError::ZeroSeconds { .. }));
    let mut c = Config::demo_without_lb();
    c.conntrack.gc_interval = 0;
    fails(&c, &["conntrack.gc_interval"]);
}

#[test]
fn the_shipped_node_example_is_valid() {
    let c = Config::from_toml_str(include_str!("../../../../deploy/node.toml")).unwrap();
    assert_eq!(c.node.name, "node1");
    assert!(c.node.uplink.as_ref().unwrap().address.is_none());
    assert_eq!(c.masquerade.len(), 1);
}
