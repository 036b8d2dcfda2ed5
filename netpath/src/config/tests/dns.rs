//! Unit tests of `[node.dns]`: parsing, the TOML round trip, the value
//! `DesiredNode` carries, and every check of `DnsConfig::validate`.

use super::*;

const DNS: &str = r#"
[node]
name = "demo"
pod_cidr = "10.200.0.0/24"

[node.dns]
nameservers = ["192.168.50.1", "1.1.1.1"]
search = ["cluster.local", "svc.cluster.local"]
options = ["ndots:5", "timeout:2"]

[[pods]]
name = "red"
"#;

fn with_dns(dns: DnsConfig) -> Config {
    let mut c = Config::demo_without_lb();
    c.node.dns = Some(dns);
    c
}

fn one_server() -> DnsConfig {
    DnsConfig {
        nameservers: vec![addr("192.168.50.1")],
        ..DnsConfig::default()
    }
}

#[test]
fn parses_and_resolves() {
    let c = Config::from_toml_str(DNS).unwrap();
    let dns = c.node.dns.as_ref().unwrap();
    assert_eq!(dns.nameservers, [addr("192.168.50.1"), addr("1.1.1.1")]);
    assert_eq!(dns.search, ["cluster.local", "svc.cluster.local"]);
    assert_eq!(dns.options, ["ndots:5", "timeout:2"]);
    assert_eq!(DesiredNode::resolve(&c).dns.as_ref(), Some(dns));

    // Search and options may be left out; no section means no DNS.
    let c = Config::from_toml_str(
        "[node]\nname = \"n\"\npod_cidr = \"10.1.0.0/24\"\n[node.dns]\nnameservers = [\"10.0.0.53\"]\n",
    )
    .unwrap();
    assert_eq!(
        c.node.dns,
        Some(DnsConfig {
            nameservers: vec![addr("10.0.0.53")],
            ..DnsConfig::default()
        })
    );
    assert_eq!(DesiredNode::resolve(&Config::demo()).dns, None);
}

#[test]
fn round_trips_through_toml() {
    let c = Config::from_toml_str(DNS).unwrap();
    let text = c.to_toml_string();
    assert!(text.contains("[node.dns]"), "{text}");
    assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");

    // Empty lists are not written; no section, no table.
    let c = with_dns(one_server());
    let text = c.to_toml_string();
    assert!(
        !text.contains("search") && !text.contains("options"),
        "{text}"
    );
    assert_eq!(Config::from_toml_str(&text).unwrap(), c, "{text}");
    assert!(!Config::demo().to_toml_string().contains("dns"));
}

#[test]
fn unknown_keys_are_errors() {
    let err = Config::from_toml_str(&DNS.replace("options =", "option =")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("option"), "{err}");
    let err = Config::from_toml_str(&DNS.replace("\"1.1.1.1\"", "\"dns.google\"")).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
}

#[test]
fn nameservers_one_to_three() {
    let err = fails(
        &with_dns(DnsConfig::default()),
        &["[node.dns]", "nameservers"],
    );
    assert!(matches!(err, ConfigError::DnsNoNameserver), "{err}");

    let mut dns = one_server();
    dns.nameservers = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"]
        .map(addr)
        .to_vec();
    let err = fails(
        &with_dns(dns.clone()),
        &["4 nameservers", "at most 3", "MAXNS"],
    );
    assert!(
        matches!(err, ConfigError::DnsTooManyNameservers { count: 4 }),
        "{err}"
    );
    dns.nameservers.pop();
    with_dns(dns).validate().unwrap();
}

#[test]
fn nameserver_must_be_unicast() {
    for (bad, why) in [
        ("0.0.0.0", "0.0.0.0/8"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.251", "multicast"),
        ("127.0.0.53", "loopback"),
        ("240.0.0.1", "reserved"),
    ] {
        let mut dns = one_server();
        dns.nameservers.push(addr(bad));
        let err = fails(&with_dns(dns), &["nameserver", bad, why, "unicast"]);
        assert!(matches!(err, ConfigError::DnsNameserver { .. }), "{err}");
    }
}

#[test]
fn search_domains() {
    let mut dns = one_server();
    dns.search = (1..=7).map(|i| format!("d{i}.example")).collect();
    let err = fails(&with_dns(dns.clone()), &["7 search domains", "at most 6"]);
    assert!(
        matches!(err, ConfigError::DnsTooManySearchDomains { count: 7 }),
        "{err}"
    );
    dns.search.pop();
    with_dns(dns).validate().unwrap();

    for (bad, why) in [
        ("", "is empty"),
        ("cluster.local.", "trailing dot"),
        ("a..b", "empty label"),
        (".local", "empty label"),
        ("svc cluster", "' '"),
        ("under_score.example", "'_'"),
        ("-bad.example", "'-'"),
        ("bad-.example", "'-'"),
    ] {
        let mut dns = one_server();
        dns.search = vec!["ok.example".into(), bad.into()];
        let err = fails(&with_dns(dns), &["search domain", &format!("{bad:?}"), why]);
        assert!(matches!(err, ConfigError::DnsSearchDomain { .. }), "{err}");
    }
    let mut dns = one_server();
    dns.search = vec![format!("{}.example", "x".repeat(64))];
    fails(&with_dns(dns), &["64 characters", "at most 63"]);
    let mut dns = one_server();
    dns.search = vec![vec!["x".repeat(60); 5].join(".")];
    fails(&with_dns(dns), &["304 characters", "at most 253"]);
}

#[test]
fn search_list_at_most_256_characters() {
    // Six domains of 42 characters and five spaces: 257.
    let domain = |i: usize| format!("{i}{}", ".a".repeat(20) + "b");
    let mut dns = one_server();
    dns.search = (0..6).map(domain).collect();
    assert_eq!(dns.search[0].len(), 42);
    let err = fails(&with_dns(dns.clone()), &["257 characters", "at most 256"]);
    assert!(
        matches!(err, ConfigError::DnsSearchTooLong { len: 257 }),
        "{err}"
    );
    dns.search[5] = "5.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.ab".into();
    with_dns(dns).validate().unwrap();
}

#[test]
fn options_are_single_words() {
    for (bad, why) in [
        ("", "is empty"),
        ("ndots: 5", "' '"),
        ("ndots:5\nnameserver", "'\\n'"),
    ] {
        let mut dns = one_server();
        dns.options = vec!["rotate".into(), bad.into()];
        let err = fails(&with_dns(dns), &["option", why, "ndots:5"]);
        assert!(matches!(err, ConfigError::DnsOption { .. }), "{err}");
    }
    let mut dns = one_server();
    dns.options = vec!["ndots:5".into(), "timeout:2".into(), "edns0".into()];
    with_dns(dns).validate().unwrap();
}
