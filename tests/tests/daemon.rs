//! The node daemon as an operator meets it: a `netpath daemon` process for
//! a lab node, driven by the `netpath` CLI (pod, route, masquerade,
//! port-forward and service verbs, `apply -f`, `status`, `conntrack`),
//! and restarted, even with SIGKILL, under a live TCP connection.

use std::{net::Ipv4Addr, process::Command, thread};

use netpath::{api::PodInfo, config::Config, sys::netns::Netns};
use serde_json::Value;
use tests::{
    daemon::{DaemonProc, netpath, netpath_err, netpath_ok},
    harness::{TestNode, ping, pod, tcp_connect, tcp_echo_server_concurrent, tcp_exchange},
};

fn pods(instance: &str) -> Vec<PodInfo> {
    serde_json::from_str(&netpath_ok(&["pod", "list", "-i", instance, "-o", "json"]))
        .expect("pod list -o json is JSON")
}

fn pod_named<'a>(pods: &'a [PodInfo], name: &str) -> &'a PodInfo {
    pods.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no pod {name} in {pods:?}"))
}

#[test]
fn pods_are_added_listed_and_deleted_through_the_cli() {
    let node = TestNode::new("dpod", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();

    let out = netpath_ok(&["pod", "add", "b", "-i", i]);
    assert!(out.contains("b"), "{out}");
    let list = pods(i);
    assert_eq!(list.len(), 2, "{list:?}");
    assert!(list.iter().all(|p| p.healthy), "{list:?}");
    let b = pod_named(&list, "b");
    assert!(b.mac.is_some() && b.host_mac.is_some());
    // The new pod is on the datapath: a reaches it.
    assert_eq!(ping(&node.pod_ns("a"), b.address, 2), 2);

    // Errors say what is wrong and change nothing.
    let before = pods(i);
    let err = netpath_err(&["pod", "add", "b", "-i", i]);
    assert!(err.contains("pod 'b' exists already"), "{err}");
    let err = netpath_err(&["pod", "del", "nosuch", "-i", i]);
    assert!(err.contains("no pod 'nosuch'"), "{err}");
    let err = netpath_err(&["pod", "add", "c", "--address", "10.9.9.9", "-i", i]);
    assert!(err.contains("10.9.9.9"), "{err}");
    let err = netpath_err(&["pod", "add", "Bad_Name", "-i", i]);
    assert!(err.contains("Bad_Name"), "{err}");
    assert_eq!(pods(i), before);
    assert!(!Netns::exists(&format!("{i}-c")));

    netpath_ok(&["pod", "del", "b", "-i", i]);
    assert_eq!(pods(i).len(), 1);
    assert!(!Netns::exists(&format!("{i}-b")));
}

#[test]
fn two_clients_at_once_both_get_their_pod() {
    let node = TestNode::new("dtwo", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance().to_owned();
    let adders: Vec<_> = ["c1", "c2", "c3"]
        .into_iter()
        .map(|name| {
            let i = i.clone();
            thread::spawn(move || netpath(&["pod", "add", name, "-i", &i]))
        })
        .collect();
    for a in adders {
        let out = a.join().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let list = pods(&i);
    assert_eq!(list.len(), 4, "{list:?}");
    let mut addrs: Vec<Ipv4Addr> = list.iter().map(|p| p.address).collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 4, "each pod has its own address: {list:?}");
    assert!(list.iter().all(|p| p.healthy));
}

#[test]
fn routes_masquerade_forwards_and_services_through_the_cli() {
    let mut node = TestNode::new("dobj", &["a", "b"]);
    node.config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();

    netpath_ok(&[
        "route",
        "add",
        "192.168.70.0/24",
        "--via",
        "192.168.50.1",
        "-i",
        i,
    ]);
    let routes: Value =
        serde_json::from_str(&netpath_ok(&["route", "list", "-i", i, "-o", "json"])).unwrap();
    assert_eq!(routes[0]["dst"], "192.168.70.0/24");
    let err = netpath_err(&["route", "add", "192.168.70.0/24", "-i", i]);
    assert!(err.contains("exists already"), "{err}");
    netpath_ok(&["route", "del", "192.168.70.0/24", "-i", i]);
    assert_eq!(netpath_ok(&["route", "list", "-i", i]).trim(), "no routes");

    netpath_ok(&["masquerade", "add", "-i", i]);
    let out = netpath_ok(&["masquerade", "list", "-i", i]);
    assert!(
        out.contains("-s 10.200.0.0/24 -o uplink0 -j MASQUERADE"),
        "{out}"
    );
    // The pods now reach the LAN host behind the node's address.
    let lan = node.lab.lan_addr.addr();
    assert_eq!(ping(&node.pod_ns("a"), lan, 2), 2);
    netpath_ok(&["masquerade", "del", "-i", i]);
    assert_eq!(ping(&node.pod_ns("a"), lan, 1), 0);

    netpath_ok(&[
        "port-forward",
        "add",
        "--port",
        "8080",
        "--to",
        "b",
        "--to-port",
        "80",
        "-i",
        i,
    ]);
    let pf: Value = serde_json::from_str(&netpath_ok(&[
        "port-forward",
        "list",
        "-i",
        i,
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(!pf.as_array().unwrap().is_empty(), "{pf}");
    let err = netpath_err(&[
        "port-forward",
        "add",
        "--port",
        "8080",
        "--to",
        "a",
        "-i",
        i,
    ]);
    assert!(err.contains("exists already"), "{err}");

    netpath_ok(&[
        "service",
        "add",
        "web",
        "--vip",
        "10.96.0.10",
        "--port",
        "80",
        "--backend",
        "a",
        "--backend",
        "b",
        "-i",
        i,
    ]);
    let svc: Value =
        serde_json::from_str(&netpath_ok(&["service", "list", "-i", i, "-o", "json"])).unwrap();
    assert!(svc.to_string().contains("10.96.0.10"), "{svc}");
    // A pod a service names cannot go while the service holds it.
    let err = netpath_err(&["pod", "del", "a", "-i", i]);
    assert!(err.contains('a'), "{err}");
    netpath_ok(&["service", "del", "web", "-i", i]);
    netpath_ok(&["port-forward", "del", "--port", "8080", "-i", i]);
    let pf: Value = serde_json::from_str(&netpath_ok(&[
        "port-forward",
        "list",
        "-i",
        i,
        "-o",
        "json",
    ]))
    .unwrap();
    assert!(pf.as_array().unwrap().is_empty(), "{pf}");

    let st: Value = serde_json::from_str(&netpath_ok(&["status", "-i", i, "-o", "json"])).unwrap();
    assert_eq!(st["pods"], 2);
    assert_eq!(st["pods_healthy"], 2);
}

#[test]
fn apply_f_adds_removes_and_changes_and_a_bad_file_changes_nothing() {
    let node = TestNode::new("dapply", &["a", "b"]);
    let daemon = DaemonProc::start(&node);
    let i = node.instance();
    let a_before = pod_named(&pods(i), "a").clone();

    let mut next: Config = node.config.clone();
    next.pods.retain(|p| p.name == "a");
    next.pods.push(pod("c"));
    let mut fixed = pod("d");
    fixed.address = Some("10.200.0.77".parse().unwrap());
    next.pods.push(fixed);
    let file = std::env::temp_dir().join(format!("{i}-next.toml"));
    std::fs::write(&file, next.to_toml_string()).unwrap();
    netpath_ok(&["apply", "-f", file.to_str().unwrap()]);
    let list = pods(i);
    let names: Vec<&str> = list.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["a", "c", "d"], "{list:?}");
    assert_eq!(pod_named(&list, "d").address.to_string(), "10.200.0.77");
    // a is untouched: same address, same host side.
    assert_eq!(pod_named(&list, "a"), &a_before);
    assert!(!Netns::exists(&format!("{i}-b")));

    // One error in the file: nothing changes.
    let mut bad = next.clone();
    bad.pods.push(pod("e"));
    bad.pods[0].address = Some("10.200.0.77".parse().unwrap()); // d's
    std::fs::write(&file, bad.to_toml_string()).unwrap();
    let err = netpath_err(&["apply", "-f", file.to_str().unwrap()]);
    assert!(err.contains("10.200.0.77"), "{err}");
    assert_eq!(pods(i), list);
    assert!(!Netns::exists(&format!("{i}-e")));
    // The daemon kept the applied state on disk.
    let kept = std::fs::read_to_string(netpath::daemon::desired_file(i)).unwrap();
    assert_eq!(Config::from_toml_str(&kept).unwrap(), next);
    drop(daemon);
    let _ = std::fs::remove_file(file);
}

#[test]
fn verbs_without_a_daemon_say_how_to_start_one() {
    let node = TestNode::new("dnone", &["a"]);
    node.apply().unwrap();
    let i = node.instance();
    for verb in [
        &["pod", "list", "-i", i][..],
        &["pod", "add", "x", "-i", i],
        &["status", "-i", i],
        &["conntrack", "flush", "-i", i],
    ] {
        let err = netpath_err(verb);
        assert!(
            err.contains(&format!("no netpath daemon serves instance '{i}'"))
                && err.contains("netpath daemon --config"),
            "{verb:?}: {err}"
        );
    }
    // Reading the pins needs no daemon.
    netpath_ok(&["stats", "-i", i, "-o", "json"]);
    netpath_ok(&["conntrack", "list", "-i", i]);
}

/// The ids of the programs pinned under the instance, by pin (`bpftool`).
fn pinned_program_ids(instance: &str) -> Vec<(String, u64)> {
    let dir = format!("/sys/fs/bpf/netpath/{instance}/progs");
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
        let path = entry.unwrap().path();
        let out = Command::new("bpftool")
            .args(["-j", "prog", "show", "pinned"])
            .arg(&path)
            .output()
            .expect("bpftool (installed by cargo xtask test)");
        assert!(out.status.success(), "bpftool on {}", path.display());
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        ids.push((path.display().to_string(), v["id"].as_u64().unwrap()));
    }
    ids.sort();
    assert!(!ids.is_empty(), "no programs pinned in {dir}");
    ids
}

#[test]
fn a_connection_survives_a_daemon_sigkill_and_restart() {
    let node = TestNode::masqueraded("dkill", &["a"]);
    let mut daemon = DaemonProc::start(&node);
    let i = node.instance().to_owned();
    let lan = node.lab.lan_addr.addr();
    let server = tcp_echo_server_concurrent(&node.lab.lan_netns, lan, 9100, 1);
    let mut conn = tcp_connect(&node.pod_ns("a"), lan, 9100, None).expect("connect");
    assert_eq!(tcp_exchange(&mut conn, b"before").unwrap(), b"before");
    let programs = pinned_program_ids(&i);
    let conns_before: Value =
        serde_json::from_str(&netpath_ok(&["conntrack", "list", "-i", &i, "-o", "json"])).unwrap();
    assert_eq!(conns_before.as_array().unwrap().len(), 1, "{conns_before}");

    daemon.kill();
    // No daemon: the pinned datapath carries the connection on.
    assert_eq!(tcp_exchange(&mut conn, b"during").unwrap(), b"during");
    let err = netpath_err(&["status", "-i", &i]);
    assert!(err.contains("no netpath daemon"), "{err}");

    daemon.restart();
    assert_eq!(tcp_exchange(&mut conn, b"after").unwrap(), b"after");
    // Adopted, not reloaded: the same program ids, the same connection
    // (same NAT port) in the table.
    assert_eq!(pinned_program_ids(&i), programs);
    let st: Value = serde_json::from_str(&netpath_ok(&["status", "-i", &i, "-o", "json"])).unwrap();
    assert_eq!(st["programs_loaded_at_start"], false, "{st}");
    let conns_after: Value =
        serde_json::from_str(&netpath_ok(&["conntrack", "list", "-i", &i, "-o", "json"])).unwrap();
    assert_eq!(conns_after[0]["nat"], conns_before[0]["nat"]);
    assert_eq!(conns_after[0]["source"], conns_before[0]["source"]);

    // A clean stop (SIGTERM) leaves it flowing too.
    assert!(
        daemon.stop(),
        "the daemon exits 0 on SIGTERM:\n{}",
        daemon.log()
    );
    assert_eq!(tcp_exchange(&mut conn, b"stopped").unwrap(), b"stopped");
    assert!(!netpath::api::socket_path(&i).exists());
    drop(conn);
    let peers = server.join().unwrap();
    assert_eq!(peers.len(), 1);
    let log = daemon.log();
    assert!(log.contains("adopted from their pins"), "{log}");
}

#[test]
fn conntrack_flush_through_the_daemon_empties_the_table() {
    let node = TestNode::masqueraded("dflush", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();
    assert_eq!(ping(&node.pod_ns("a"), node.lab.lan_addr.addr(), 1), 1);
    let list: Value =
        serde_json::from_str(&netpath_ok(&["conntrack", "list", "-i", i, "-o", "json"])).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let out = netpath_ok(&["conntrack", "flush", "-i", i]);
    assert!(out.contains("flushed 1 connections"), "{out}");
    let list: Value =
        serde_json::from_str(&netpath_ok(&["conntrack", "list", "-i", i, "-o", "json"])).unwrap();
    assert!(list.as_array().unwrap().is_empty(), "{list}");
    // Traffic starts anew.
    assert_eq!(ping(&node.pod_ns("a"), node.lab.lan_addr.addr(), 1), 1);
}

#[test]
fn a_second_daemon_for_the_same_instance_is_refused() {
    let node = TestNode::new("dtwice", &[]);
    let daemon = DaemonProc::start(&node);
    let out = Command::new(tests::daemon::bin("netpath"))
        .args(["daemon", "--config"])
        .arg(&daemon.config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already serves instance"), "{err}");
    // The first one still answers.
    netpath_ok(&["status", "-i", node.instance()]);
}

#[test]
fn a_malformed_request_gets_an_error_and_the_daemon_carries_on() {
    use std::io::{BufRead as _, BufReader, Write as _};
    let node = TestNode::new("dbad", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let socket = netpath::api::socket_path(node.instance());
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the API socket is root's only");
    for garbage in ["not json\n", "{\"op\":\"pod_explode\"}\n", "\n"] {
        let mut s = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        s.write_all(garbage.as_bytes()).unwrap();
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).unwrap();
        let v: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["error"]["kind"], "bad_request", "{garbage:?}: {reply}");
    }
    // A client that connects and says nothing does not block the others.
    let _silent = std::os::unix::net::UnixStream::connect(&socket).unwrap();
    assert_eq!(pods(node.instance()).len(), 1);
}

#[test]
fn daemon_cleanup_removes_everything_the_instance_built() {
    let mut node = TestNode::new("dclean", &["a", "b"]);
    node.config.node.dns = Some(netpath::config::DnsConfig {
        nameservers: vec!["192.168.50.1".parse().unwrap()],
        search: Vec::new(),
        options: Vec::new(),
    });
    let mut daemon = DaemonProc::start(&node);
    let i = node.instance().to_owned();
    netpath_ok(&["pod", "add", "c", "-i", &i]);
    assert!(daemon.stop());
    let etc = std::path::Path::new("/etc/netns").join(format!("{i}-c"));
    assert!(etc.join("resolv.conf").exists());
    let out = netpath_ok(&["daemon", "--cleanup", "--instance", &i]);
    assert!(out.contains("removed 3 pods"), "{out}");
    for pod in ["a", "b", "c"] {
        assert!(
            !Netns::exists(&format!("{i}-{pod}")),
            "{pod}'s namespace is left"
        );
    }
    assert!(!etc.exists(), "{} is left", etc.display());
    assert!(!netpath::datapath::PinDir::for_instance(&i).exists());
    assert!(!std::path::Path::new("/run/netpath").join(&i).exists());
    // Nothing left to clean: a second cleanup is a no-op.
    netpath_ok(&["daemon", "--cleanup", "--instance", &i]);
}
