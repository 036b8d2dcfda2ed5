//! `netpath demo --nodes 3` as `cargo xtask run -- --nodes 3` starts it:
//! the real binary, a daemon per node, pods on different nodes reaching
//! each other through the datapath (directly routed, or through the VXLAN
//! overlay), and Ctrl-C removing every namespace, pin and state directory.
//! Each test gives the demo its own name prefix (`--name`), so these tests
//! run beside each other and beside the two-pod demo.

use std::{
    fs::File,
    net::Ipv4Addr,
    path::PathBuf,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use netpath::{
    api::PodInfo,
    datapath::{NodeMaps, PinDir},
    state::StateDir,
    sys::netns::Netns,
};
use netpath_common::Stat;
use tests::{
    daemon::{bin, netpath, netpath_ok},
    harness::{ping, run_in_ns, unique},
};

fn pods(instance: &str) -> Vec<PodInfo> {
    serde_json::from_str(&netpath_ok(&[
        "pod",
        "list",
        "--instance",
        instance,
        "-o",
        "json",
    ]))
    .expect("pod list -o json")
}

fn address(instance: &str, pod: &str) -> Ipv4Addr {
    pods(instance)
        .iter()
        .find(|p| p.name == pod)
        .unwrap_or_else(|| panic!("no pod {pod} on {instance}"))
        .address
}

fn stat(instance: &str, stat: Stat) -> u64 {
    NodeMaps::open_pinned(&PinDir::for_instance(instance))
        .expect("pinned maps")
        .stat(stat)
        .expect("stats")
        .packets
}

/// Starts `netpath demo --nodes 3 --name PREFIX EXTRA...`, waits for its
/// three daemons, runs `check`, then sends SIGINT and checks that nothing
/// of the demo is left and that it exited 0 (after `check`'s panic, if
/// any, is re-raised).
fn with_running_demo(tag: &str, extra: &[&str], check: impl FnOnce(&str, &str)) {
    let prefix = unique(tag);
    let dir = std::env::temp_dir().join(format!("{prefix}-out"));
    std::fs::create_dir_all(&dir).unwrap();
    let (out_path, err_path): (PathBuf, PathBuf) = (dir.join("stdout"), dir.join("stderr"));
    let child = Command::new(bin("netpath"))
        .args(["demo", "--nodes", "3", "--name", &prefix])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start netpath demo --nodes 3");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let instances: Vec<String> = (1..=3).map(|i| format!("{prefix}-n{i}")).collect();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let deadline = Instant::now() + Duration::from_secs(90);
        for instance in &instances {
            while !netpath(&["status", "--instance", instance])
                .status
                .success()
            {
                assert!(
                    Instant::now() < deadline,
                    "the daemon of {instance} never answered; stderr: {}",
                    std::fs::read_to_string(&err_path).unwrap_or_default()
                );
                thread::sleep(Duration::from_millis(200));
            }
        }
        let printed = std::fs::read_to_string(&out_path).unwrap();
        check(&prefix, &printed);
    }));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let mut child = child;
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let mut left: Vec<String> = Netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    for instance in &instances {
        if PinDir::for_instance(instance).exists() {
            left.push(format!("pins of {instance}"));
        }
        if StateDir::for_instance(instance).root().exists() {
            left.push(format!("state of {instance}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(status.success(), "netpath demo exited {status}: {stderr}");
}

/// What both modes must show: the commands printed name this demo's
/// namespaces; red on node 1 pings red on node 2; an HTTP request from red
/// on node 1 is answered by blue on node 3, which sees red's own address
/// (no masquerade inside the cluster); the LAN has no route to any pod
/// CIDR; node 1 lists both peers as programmed, in `mode`.
fn pods_reach_each_other_across_nodes(prefix: &str, printed: &str, mode: &str) {
    let (n1, n2, n3) = (
        format!("{prefix}-n1"),
        format!("{prefix}-n2"),
        format!("{prefix}-n3"),
    );
    let red1 = format!("{n1}-red");
    let red2_addr = address(&n2, "red");
    assert!(
        printed.contains(&format!("ip netns exec {red1} ping -c 3 {red2_addr}")),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("node list --instance {n1}")),
        "{printed}"
    );
    assert_eq!(
        ping(&red1, red2_addr, 3),
        3,
        "red on node 1 -> red on node 2"
    );
    let blue3 = address(&n3, "blue");
    let answer = run_in_ns(
        &red1,
        "curl",
        &["-s", "--max-time", "5", &format!("http://{blue3}:80/")],
    );
    let red1_addr = address(&n1, "red");
    assert!(
        answer.starts_with(&format!("hello from blue@{n3} "))
            && answer.contains(&format!("you are {red1_addr}:")),
        "curl red on node 1 -> blue on node 3: {answer:?}"
    );
    let routes = run_in_ns(&format!("{prefix}-lan"), "ip", &["-4", "route"]);
    assert!(
        !routes.contains("10.244."),
        "the LAN routes a pod CIDR: {routes}"
    );
    let peers: serde_json::Value = serde_json::from_str(&netpath_ok(&[
        "node",
        "list",
        "--instance",
        &n1,
        "-o",
        "json",
    ]))
    .expect("node list -o json");
    let peers = peers.as_array().expect("a list of peers");
    let mut names: Vec<&str> = peers.iter().filter_map(|p| p["name"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, [n2.as_str(), n3.as_str()], "{peers:?}");
    for p in peers {
        assert_eq!(p["state"], "programmed", "{p}");
        assert_eq!(p["mode"], mode, "{p}");
    }
}

#[test]
fn the_three_node_demo_routes_pods_across_nodes_directly_and_ctrl_c_removes_it() {
    with_running_demo("dnd", &[], |prefix, printed| {
        assert!(printed.contains("direct routing"), "{printed}");
        pods_reach_each_other_across_nodes(prefix, printed, "direct");
        let n1 = format!("{prefix}-n1");
        assert!(stat(&n1, Stat::FwdToPeer) >= 3, "routed to the peers");
        assert_eq!(stat(&n1, Stat::TunnelEncap), 0, "nothing encapsulated");
    });
}

#[test]
fn the_three_node_demo_with_the_vxlan_overlay_encapsulates_across_nodes_and_ctrl_c_removes_it() {
    with_running_demo("dnv", &["--overlay", "vxlan"], |prefix, printed| {
        assert!(printed.contains("VXLAN overlay"), "{printed}");
        pods_reach_each_other_across_nodes(prefix, printed, "vxlan");
        let n1 = format!("{prefix}-n1");
        assert!(stat(&n1, Stat::TunnelEncap) >= 3, "encapsulated");
        assert_eq!(
            stat(&n1, Stat::FwdToPeer),
            0,
            "nothing routed unencapsulated"
        );
        assert!(stat(&format!("{prefix}-n3"), Stat::TunnelDecap) >= 1);
        let details = run_in_ns(&n1, "ip", &["-d", "link", "show", "np-vxlan"]);
        assert!(details.contains("external"), "{details}");
    });
}
