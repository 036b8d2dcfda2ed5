//! Unit tests of [`super`]: the configuration's and the environment's
//! errors, version negotiation, the exact result and error JSON, and the
//! answers that need no daemon (or its absence).

use serde_json::{Value, json};

use super::*;
use crate::api::AttachmentId;

fn conf_json(extra: &Value) -> Vec<u8> {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": "netpath-test",
        "type": "netpath-cni",
        "instance": "demo",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            c.as_object_mut().unwrap().remove(k);
        } else {
            c[k] = v.clone();
        }
    }
    serde_json::to_vec(&c).unwrap()
}

fn parse_err(extra: &Value) -> CniError {
    conf::parse(&conf_json(extra)).expect_err("the configuration should be refused")
}

/// Asserts `e` has `code` and its details name `key`.
fn assert_names(e: &CniError, code: Code, key: &str) {
    assert_eq!(e.code, code, "{e}");
    assert!(e.details.contains(key), "'{key}' not named in: {e}");
}

fn env(vars: &[(&str, &str)]) -> Env {
    Env::from_vars(vars.iter().copied())
}

fn add_env(extra: &[(&str, &str)]) -> Env {
    let mut vars = vec![
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c0ffee"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "/var/run/netns/try1"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    for (k, v) in extra {
        vars.retain(|(name, _)| name != k);
        vars.push((k, v));
    }
    env(&vars)
}

/// An instance no daemon serves (its socket does not exist).
fn nobodys_instance() -> String {
    format!("np-unit-none-{}", std::process::id())
}

// --- the configuration -------------------------------------------------

#[test]
fn a_good_configuration_parses_with_its_own_keys() {
    let c = conf::parse(&conf_json(&json!({
        "dns": {"nameservers": ["10.200.0.1"], "search": ["demo.local"], "options": ["ndots:2"]},
    })))
    .unwrap();
    assert_eq!(c.cni_version, Version::V1_1_0);
    assert_eq!(c.name, "netpath-test");
    assert_eq!(c.plugin_type, "netpath-cni");
    assert_eq!(c.instance, "demo");
    let dns = c.dns.unwrap();
    assert_eq!(dns.nameservers, ["10.200.0.1"]);
    assert_eq!(dns.search, ["demo.local"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(dns.domain, None);
    assert_eq!(c.ip, None);
    assert!(c.prev_result.is_none() && c.valid_attachments.is_none());
}

#[test]
fn stdin_that_is_not_json_is_a_decode_error() {
    let e = conf::parse(b"{\"cniVersion\": \"1.1.0\", ").unwrap_err();
    assert_eq!(e.code, Code::Decode, "{e}");
    assert!(e.details.contains("not JSON"), "{e}");
    let e = conf::parse(b"[1, 2]").unwrap_err();
    assert_eq!(e.code, Code::Decode, "{e}");
    assert!(e.details.contains("a list, not a JSON object"), "{e}");
    let e = conf::parse(b"").unwrap_err();
    assert_eq!(e.code, Code::Decode, "{e}");
}

#[test]
fn a_missing_or_wrong_key_is_code_7_naming_it() {
    assert_names(
        &parse_err(&json!({"cniVersion": null})),
        Code::InvalidConfig,
        "\"cniVersion\" of the network configuration is missing",
    );
    assert_names(
        &parse_err(&json!({"cniVersion": 1})),
        Code::InvalidConfig,
        "\"cniVersion\"",
    );
    assert_names(
        &parse_err(&json!({"name": null})),
        Code::InvalidConfig,
        "\"name\" of the network configuration is missing",
    );
    assert_names(
        &parse_err(&json!({"name": "-net"})),
        Code::InvalidConfig,
        "\"name\"",
    );
    assert_names(
        &parse_err(&json!({"name": "my net"})),
        Code::InvalidConfig,
        "contains ' '",
    );
    assert_names(
        &parse_err(&json!({"type": 7})),
        Code::InvalidConfig,
        "\"type\" of the network configuration is a number, not a string",
    );
    let e = parse_err(&json!({"instance": null}));
    assert_names(&e, Code::InvalidConfig, "\"instance\"");
    assert!(e.details.contains("node.name"), "says what to put: {e}");
    assert_names(
        &parse_err(&json!({"instance": "Demo"})),
        Code::InvalidConfig,
        "\"instance\"",
    );
    assert_names(
        &parse_err(&json!({"instance": "../etc"})),
        Code::InvalidConfig,
        "\"instance\"",
    );
    assert_names(
        &parse_err(&json!({"dns": {"nameserver": ["10.0.0.1"]}})),
        Code::InvalidConfig,
        "\"dns\"",
    );
    assert_names(
        &parse_err(&json!({"dns": {"nameservers": ["ns1.example"]}})),
        Code::InvalidConfig,
        "\"dns.nameservers\"",
    );
    assert_names(
        &parse_err(&json!({"runtimeConfig": {"ips": ["10.200.0.9/24", "10.200.0.10/24"]}})),
        Code::InvalidConfig,
        "\"runtimeConfig.ips\" of the network configuration holds 2 addresses",
    );
    assert_names(
        &parse_err(&json!({"runtimeConfig": {"ips": ["fd00::5/64"]}})),
        Code::InvalidConfig,
        "IPv6",
    );
    assert_names(
        &parse_err(&json!({"runtimeConfig": {"ips": "10.200.0.9"}})),
        Code::InvalidConfig,
        "\"runtimeConfig.ips\" of the network configuration is a string, not a list",
    );
    assert_names(
        &parse_err(&json!({"args": {"cni": {"ips": ["10.200.0.300"]}}})),
        Code::InvalidConfig,
        "\"args.cni.ips\"",
    );
    assert_names(
        &parse_err(&json!({"prevResult": []})),
        Code::InvalidConfig,
        "\"prevResult\"",
    );
    assert_names(
        &parse_err(&json!({"cni.dev/valid-attachments": [{"containerID": "a"}]})),
        Code::InvalidConfig,
        "\"cni.dev/valid-attachments\"",
    );
}

#[test]
fn errors_after_the_version_are_printed_in_it() {
    let bytes =
        serde_json::to_vec(&json!({"cniVersion": "0.4.0", "name": "n", "type": "t"})).unwrap();
    let e = conf::parse(&bytes).unwrap_err();
    assert_eq!(e.version, Some(Version::V0_4_0));
    let printed: Value = serde_json::from_str(&e.to_json()).unwrap();
    assert_eq!(printed["cniVersion"], "0.4.0");
}

#[test]
fn the_fixed_address_comes_from_runtime_config_then_args() {
    let both = conf::parse(&conf_json(&json!({
        "runtimeConfig": {"ips": ["10.200.0.9/24"]},
        "args": {"cni": {"ips": ["10.200.0.10"]}},
    })))
    .unwrap();
    assert_eq!(both.ip, Some("10.200.0.9".parse().unwrap()));
    let args = conf::parse(&conf_json(&json!({
        "runtimeConfig": {"portMappings": []},
        "args": {"cni": {"ips": ["10.200.0.10"], "labels": []}, "other": 1},
    })))
    .unwrap();
    assert_eq!(args.ip, Some("10.200.0.10".parse().unwrap()));
}

#[test]
fn valid_attachments_parse_and_null_means_none_is_valid() {
    let c = conf::parse(&conf_json(&json!({
        "cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}],
    })))
    .unwrap();
    assert_eq!(
        c.valid_attachments,
        Some(vec![AttachmentId {
            container_id: "abc".into(),
            ifname: "eth0".into()
        }])
    );
    // Go's nil list is null: no attachment is valid.
    let raw = br#"{"cniVersion":"1.1.0","name":"n","type":"t","instance":"demo","cni.dev/valid-attachments":null}"#;
    assert_eq!(
        conf::parse(raw).unwrap().valid_attachments,
        Some(Vec::new())
    );
    let legacy = br#"{"cniVersion":"1.1.0","name":"n","type":"t","instance":"demo","cni.dev/attachments":[{"containerID":"x","ifname":"net1"}]}"#;
    assert_eq!(
        conf::parse(legacy).unwrap().valid_attachments.unwrap()[0].ifname,
        "net1"
    );
}

#[test]
fn prev_addresses_are_those_of_our_interface() {
    let prev = json!({
        "interfaces": [
            {"name": "npc1"},
            {"name": "eth0", "sandbox": "/var/run/netns/a"},
            {"name": "net1", "sandbox": "/var/run/netns/a"},
        ],
        "ips": [
            {"address": "10.200.0.5/32", "interface": 1},
            {"address": "192.168.9.2/24", "interface": 2},
        ],
    });
    let prev = prev.as_object().unwrap();
    assert_eq!(
        conf::prev_addresses(prev, "eth0", "/var/run/netns/a").unwrap(),
        Some(vec!["10.200.0.5/32".to_owned()])
    );
    assert_eq!(
        conf::prev_addresses(prev, "eth0", "/var/run/netns/b").unwrap(),
        None
    );
    assert_eq!(
        conf::prev_addresses(prev, "eth1", "/var/run/netns/a").unwrap(),
        None
    );
}

// --- the environment ---------------------------------------------------

#[test]
fn a_missing_or_unknown_command_is_code_4() {
    let e = run(&env(&[]), b"{}").unwrap_err();
    assert_names(&e, Code::InvalidEnv, "CNI_COMMAND is not set");
    let e = run(&env(&[("CNI_COMMAND", "UPDATE")]), b"{}").unwrap_err();
    assert_names(&e, Code::InvalidEnv, "CNI_COMMAND is \"UPDATE\"");
    // Empty is missing.
    let e = run(&env(&[("CNI_COMMAND", "")]), b"{}").unwrap_err();
    assert_names(&e, Code::InvalidEnv, "CNI_COMMAND is not set");
}

#[test]
fn add_and_check_need_the_netns_del_does_not() {
    let bare = env(&[("CNI_CONTAINERID", "c1"), ("CNI_IFNAME", "eth0")]);
    for command in [Command::Add, Command::Check] {
        let e = bare.attachment(command).unwrap_err();
        assert_names(&e, Code::InvalidEnv, "CNI_NETNS");
        assert!(e.details.starts_with(&format!("{command} needs")), "{e}");
    }
    let del = bare.attachment(Command::Del).unwrap();
    assert_eq!(del.container_id, "c1");
    assert_eq!(del.netns, None);
    // DEL with a namespace that is no path: not used, not refused.
    let odd = env(&[
        ("CNI_CONTAINERID", "c1"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_NETNS", "gone"),
    ]);
    assert!(odd.attachment(Command::Del).is_ok());
    assert_names(
        &odd.attachment(Command::Add).unwrap_err(),
        Code::InvalidEnv,
        "CNI_NETNS \"gone\" is not an absolute path",
    );
}

#[test]
fn every_missing_variable_is_named_at_once() {
    let e = env(&[]).attachment(Command::Add).unwrap_err();
    assert_names(
        &e,
        Code::InvalidEnv,
        "ADD needs CNI_CONTAINERID, CNI_IFNAME, CNI_NETNS, which are not set",
    );
}

#[test]
fn bad_container_ids_and_interface_names_are_code_4() {
    for (id, why) in [
        ("-x", "must start"),
        ("a/b", "contains '/'"),
        ("a b", "contains ' '"),
    ] {
        let e = add_env(&[("CNI_CONTAINERID", id)])
            .attachment(Command::Add)
            .unwrap_err();
        assert_names(&e, Code::InvalidEnv, "CNI_CONTAINERID");
        assert!(e.details.contains(why), "{e}");
    }
    for (name, why) in [
        ("eth0-that-is-too-long", "is 21 bytes"),
        ("eth:0", "contains ':'"),
        ("lo", "not a name"),
    ] {
        let e = add_env(&[("CNI_IFNAME", name)])
            .attachment(Command::Add)
            .unwrap_err();
        assert_names(&e, Code::InvalidEnv, "CNI_IFNAME");
        assert!(e.details.contains(why), "{e}");
    }
}

#[test]
fn cni_args_give_ip_and_ignore_other_keys() {
    let a = add_env(&[(
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;IP=10.200.0.42/24",
    )])
    .attachment(Command::Add)
    .unwrap();
    assert_eq!(a.ip, Some("10.200.0.42".parse().unwrap()));
    let e = add_env(&[("CNI_ARGS", "IP")])
        .attachment(Command::Add)
        .unwrap_err();
    assert_names(
        &e,
        Code::InvalidEnv,
        "CNI_ARGS has \"IP\", which is not KEY=VALUE",
    );
    let e = add_env(&[("CNI_ARGS", "IP=10.0.0.1/40")])
        .attachment(Command::Add)
        .unwrap_err();
    assert_names(&e, Code::InvalidEnv, "prefix length \"40\"");
    let e = add_env(&[("CNI_ARGS", "IP=fd00::1")])
        .attachment(Command::Add)
        .unwrap_err();
    assert_names(&e, Code::InvalidEnv, "IPv6");
}

#[test]
fn gc_needs_cni_path() {
    let stdin = conf_json(&json!({"cni.dev/valid-attachments": []}));
    let e = run(&env(&[("CNI_COMMAND", "GC")]), &stdin).unwrap_err();
    assert_names(&e, Code::InvalidEnv, "CNI_PATH is not set");
}

#[test]
fn gc_without_the_valid_attachments_is_refused() {
    let stdin = conf_json(&json!({"instance": nobodys_instance()}));
    let e = run(
        &env(&[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")]),
        &stdin,
    )
    .unwrap_err();
    assert_names(&e, Code::InvalidConfig, "\"cni.dev/valid-attachments\"");
}

// --- versions ----------------------------------------------------------

#[test]
fn version_echoes_the_requested_version_and_lists_all() {
    let out = run(
        &env(&[("CNI_COMMAND", "VERSION")]),
        br#"{"cniVersion":"0.4.0"}"#,
    )
    .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        json!({
            "cniVersion": "0.4.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        })
    );
    for stdin in [&b""[..], b"  \n", b"{}"] {
        let out = run(&env(&[("CNI_COMMAND", "VERSION")]), stdin).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["cniVersion"], "1.1.0", "for stdin {stdin:?}");
    }
    let e = run(&env(&[("CNI_COMMAND", "VERSION")]), b"{nope").unwrap_err();
    assert_eq!(e.code, Code::Decode, "{e}");
}

#[test]
fn an_unknown_version_is_code_1_listing_the_supported_ones() {
    for v in ["0.2.0", "1.2.0", "2.0.0", "1.1"] {
        let e = parse_err(&json!({"cniVersion": v}));
        assert_eq!(e.code, Code::IncompatibleVersion, "{v}: {e}");
        assert!(
            e.details.contains("0.3.0, 0.3.1, 0.4.0, 1.0.0, 1.1.0"),
            "{e}"
        );
    }
}

#[test]
fn commands_newer_than_the_configuration_are_code_1() {
    for (command, version, first) in [
        ("CHECK", "0.3.1", "0.4.0"),
        ("CHECK", "0.3.0", "0.4.0"),
        ("STATUS", "1.0.0", "1.1.0"),
        ("GC", "0.4.0", "1.1.0"),
    ] {
        let stdin = conf_json(&json!({"cniVersion": version}));
        let e = run(&add_env(&[("CNI_COMMAND", command)]), &stdin).unwrap_err();
        assert_eq!(
            e.code,
            Code::IncompatibleVersion,
            "{command} {version}: {e}"
        );
        assert!(
            e.details
                .contains(&format!("{command} came with CNI {first}")),
            "{e}"
        );
        assert_eq!(e.version, Some(Version::parse(version).unwrap()));
    }
}

#[test]
fn version_ordering_and_command_support() {
    assert!(Version::V0_3_1 < Version::V0_4_0 && Version::V1_0_0 < Version::V1_1_0);
    assert!(Version::V0_3_0.allows(Command::Add).is_ok());
    assert!(Version::V0_3_0.allows(Command::Del).is_ok());
    assert!(Version::V0_4_0.allows(Command::Check).is_ok());
    assert!(Version::V1_0_0.allows(Command::Gc).is_err());
    assert!(Version::V1_1_0.allows(Command::Status).is_ok());
}

// --- results and errors ------------------------------------------------

fn pod_info() -> PodInfo {
    PodInfo {
        name: "c-c0ffee-1a2b3c4d".into(),
        address: "10.200.0.5".parse().unwrap(),
        gateway: "10.200.0.1".parse().unwrap(),
        netns: "/var/run/netns/try1".into(),
        host_ifname: "npc1a2b3c4d".into(),
        ifname: "eth0".into(),
        mtu: 1500,
        mac: Some("02:00:00:00:00:05".into()),
        host_mac: Some("02:00:00:00:00:01".into()),
        container_id: Some("c0ffee".into()),
        healthy: true,
        dns: None,
    }
}

fn dns() -> Dns {
    Dns {
        nameservers: vec!["10.200.0.1".into()],
        domain: None,
        search: vec!["demo.local".into()],
        options: Vec::new(),
    }
}

#[test]
fn the_1_1_0_result_is_exactly_the_spec_shape() {
    let r = CniResult::for_pod(&pod_info(), "/var/run/netns/try1", Some(dns()));
    let expected = r#"{
  "cniVersion": "1.1.0",
  "interfaces": [
    {
      "name": "npc1a2b3c4d",
      "mac": "02:00:00:00:00:01",
      "mtu": 1500
    },
    {
      "name": "eth0",
      "mac": "02:00:00:00:00:05",
      "mtu": 1500,
      "sandbox": "/var/run/netns/try1"
    }
  ],
  "ips": [
    {
      "address": "10.200.0.5/32",
      "gateway": "10.200.0.1",
      "interface": 1
    }
  ],
  "routes": [
    {
      "dst": "0.0.0.0/0",
      "gw": "10.200.0.1"
    }
  ],
  "dns": {
    "nameservers": [
      "10.200.0.1"
    ],
    "search": [
      "demo.local"
    ]
  }
}"#;
    assert_eq!(r.to_json(Version::V1_1_0), expected);
}

#[test]
fn the_0_4_0_result_has_ip_versions_and_no_mtu() {
    let r = CniResult::for_pod(&pod_info(), "/var/run/netns/try1", None);
    let v: Value = serde_json::from_str(&r.to_json(Version::V0_4_0)).unwrap();
    assert_eq!(
        v,
        json!({
            "cniVersion": "0.4.0",
            "interfaces": [
                {"name": "npc1a2b3c4d", "mac": "02:00:00:00:00:01"},
                {"name": "eth0", "mac": "02:00:00:00:00:05", "sandbox": "/var/run/netns/try1"},
            ],
            "ips": [
                {"version": "4", "address": "10.200.0.5/32", "gateway": "10.200.0.1", "interface": 1},
            ],
            "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}],
        })
    );
    let v: Value = serde_json::from_str(&r.to_json(Version::V1_0_0)).unwrap();
    assert_eq!(v["cniVersion"], "1.0.0");
    assert_eq!(
        v["ips"][0].get("version"),
        None,
        "1.0.0 removed ips[].version"
    );
    assert_eq!(v["interfaces"][1].get("mtu"), None, "mtu came with 1.1.0");
}

#[test]
fn a_previous_result_is_passed_on_with_ours_appended() {
    let prev = json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "tap0", "sandbox": "/var/run/netns/try1"}],
        "ips": [{"address": "192.168.7.2/24", "interface": 0}],
        "dns": {"nameservers": ["192.168.7.1"]},
    });
    let r = CniResult::for_pod(&pod_info(), "/var/run/netns/try1", None);
    let v: Value =
        serde_json::from_str(&r.merged_json(Version::V1_0_0, prev.as_object().unwrap())).unwrap();
    assert_eq!(v["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(v["interfaces"][2]["name"], "eth0");
    assert_eq!(v["ips"][0]["address"], "192.168.7.2/24");
    assert_eq!(
        v["ips"][1],
        json!({"address": "10.200.0.5/32", "gateway": "10.200.0.1", "interface": 2})
    );
    assert_eq!(
        v["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}])
    );
    assert_eq!(
        v["dns"],
        json!({"nameservers": ["192.168.7.1"]}),
        "kept: ours had none"
    );
}

#[test]
fn the_node_dns_converts_to_a_result_dns() {
    let node: crate::config::DnsConfig = toml::from_str(
        "nameservers = [\"192.168.50.1\"]\nsearch = [\"lan\"]\noptions = [\"ndots:5\"]",
    )
    .unwrap();
    assert_eq!(
        Dns::from(&node),
        Dns {
            nameservers: vec!["192.168.50.1".into()],
            domain: None,
            search: vec!["lan".into()],
            options: vec!["ndots:5".into()],
        }
    );
}

#[test]
fn the_error_json_is_the_spec_shape() {
    let e = CniError::env("CNI_NETNS", "is not set").in_version(Version::V1_0_0);
    assert_eq!(
        e.to_json(),
        r#"{
  "cniVersion": "1.0.0",
  "code": 4,
  "msg": "invalid environment variables",
  "details": "CNI_NETNS is not set"
}"#
    );
    // Before a version is known: the newest.
    let v: Value = serde_json::from_str(&CniError::new(Code::Decode, "x").to_json()).unwrap();
    assert_eq!(v["cniVersion"], "1.1.0");
    assert_eq!(v["code"], 6);
}

// --- no daemon ---------------------------------------------------------

#[test]
fn without_a_daemon_add_del_and_gc_say_try_again_and_status_says_unavailable() {
    let stdin = conf_json(&json!({
        "instance": nobodys_instance(),
        "cni.dev/valid-attachments": [],
    }));
    for command in ["ADD", "DEL", "GC"] {
        let e = run(&add_env(&[("CNI_COMMAND", command)]), &stdin).unwrap_err();
        assert_eq!(e.code, Code::TryAgainLater, "{command}: {e}");
        assert!(e.details.contains(&nobodys_instance()), "{e}");
        assert!(e.details.contains("\"instance\""), "says what to fix: {e}");
    }
    let e = run(&add_env(&[("CNI_COMMAND", "STATUS")]), &stdin).unwrap_err();
    assert_eq!(e.code, Code::NotAvailable, "{e}");
    assert_eq!(e.code.number(), 50);
}

#[test]
fn check_needs_a_previous_result() {
    let stdin = conf_json(&json!({"instance": nobodys_instance()}));
    let e = run(&add_env(&[("CNI_COMMAND", "CHECK")]), &stdin).unwrap_err();
    assert_names(&e, Code::InvalidConfig, "\"prevResult\"");
}

#[test]
fn add_without_netns_is_code_4_before_asking_the_daemon() {
    let stdin = conf_json(&json!({"instance": nobodys_instance()}));
    let e = run(&add_env(&[("CNI_NETNS", "")]), &stdin).unwrap_err();
    assert_names(&e, Code::InvalidEnv, "CNI_NETNS");
}

// --- the shipped examples ----------------------------------------------

#[test]
fn the_example_configurations_parse_and_agree() {
    let single = conf::parse(include_bytes!("../../../examples/cni/netpath.conf")).unwrap();
    assert_eq!(single.instance, "demo", "the demo's instance");
    // A runtime gives the plugin its object from the list, with the
    // list's name and version copied in.
    let list: Value =
        serde_json::from_str(include_str!("../../../examples/cni/10-netpath.conflist")).unwrap();
    let mut plugin = list["plugins"][0].clone();
    plugin["name"] = list["name"].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    assert_eq!(plugin["type"], "netpath-cni");
    let from_list = conf::parse(&serde_json::to_vec(&plugin).unwrap()).unwrap();
    assert_eq!(from_list, single, "netpath.conf is the conflist's plugin");
}
