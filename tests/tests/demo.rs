//! The demo that `cargo xtask run` starts: built, usable, and removed
//! without a trace.

use std::{
    process::{Command, Stdio},
    sync::Mutex,
    thread,
    time::{Duration, Instant},
};

use netpath::{api::PodInfo, datapath::PinDir, demo, render, sys::netns::Netns};
use tests::{
    daemon::{bin, netpath, netpath_ok},
    harness::{block_on, ping, run_in_ns},
};

/// The demo's names are fixed: its tests take turns.
static DEMO: Mutex<()> = Mutex::new(());

/// `ip netns exec NS curl -s --max-time 3 URL`, as the demo prints it.
fn curl(ns: &str, url: &str) -> String {
    run_in_ns(ns, "curl", &["-s", "--max-time", "3", url])
}

#[test]
fn the_demo_builds_red_and_blue_that_reach_each_other_and_cleans_up() {
    let _turn = DEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (lab, config) = demo::lab_and_config();
    let report = block_on(demo::up(&lab, &config)).expect("demo up");
    let responders = block_on(demo::serve(&lab, &config, &report)).map_err(|e| e.to_string());
    // The responders' threads are joined on drop, inside or after the
    // closure; nothing observes them half-updated.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _responders = responders.expect("the pods' HTTP responders");
        let text = render::demo(&lab, &config, &report);
        assert!(text.contains("bpftool map dump pinned"), "{text}");
        assert!(text.contains("conntrack list --instance demo"), "{text}");
        assert!(text.contains("ping -c 3 192.168.50.1"), "{text}");
        let red_ns = config.pod_netns(&config.pods[0]);
        let blue = report.addresses["blue"];
        assert_eq!(ping(&red_ns, blue, 2), 2, "red -> blue");
        assert_eq!(
            ping(&lab.node_netns, report.addresses["red"], 1),
            1,
            "node -> red"
        );
        // The LAN host has no route to the pods: only the masquerade
        // brings the replies back.
        assert_eq!(ping(&red_ns, lab.lan_addr.addr(), 2), 2, "red -> LAN host");

        // The classic port-forward: the LAN host reaches blue through the
        // node's address, and blue sees the LAN host's own address.
        assert!(text.contains("curl -s http://192.168.50.2:8080/"), "{text}");
        let lan = &lab.lan_netns;
        let answer = curl(lan, "http://192.168.50.2:8080/");
        assert!(
            answer.starts_with("hello from blue") && answer.contains("you are 192.168.50.1:"),
            "port-forward: {answer:?}"
        );
        // The service, from the LAN host, a pod and the node itself: each
        // answer names red or blue, and over enough connections both.
        assert!(text.contains("curl -s http://10.96.0.10:80/"), "{text}");
        let mut seen = std::collections::BTreeSet::new();
        for ns in [lan.as_str(), red_ns.as_str(), lab.node_netns.as_str()] {
            for _ in 0..8 {
                let answer = curl(ns, "http://10.96.0.10:80/");
                let pod = answer
                    .strip_prefix("hello from ")
                    .and_then(|r| r.split(' ').next())
                    .unwrap_or_else(|| panic!("service from {ns}: {answer:?}"));
                seen.insert(pod.to_owned());
            }
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            ["blue", "red"],
            "both backends answer"
        );
    }));
    block_on(demo::clean(&lab, &config)).expect("demo clean");
    for ns in [&lab.node_netns, &lab.lan_netns, &"demo-red".to_string()] {
        assert!(!Netns::exists(ns), "{ns} left behind");
    }
    assert!(!PinDir::for_instance(&config.node.name).exists());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// `cargo xtask run` runs `netpath demo`: a daemon serves the demo's
/// instance, so `netpath pod add web --instance demo` adds a pod to the
/// running demo; Ctrl-C (SIGINT) removes everything.
#[test]
fn the_running_demo_takes_a_pod_from_the_cli_and_ctrl_c_removes_it() {
    let _turn = DEMO
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let child = Command::new(bin("netpath"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netpath demo");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    let result = std::panic::catch_unwind(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !netpath(&["status", "--instance", "demo"]).status.success() {
            assert!(
                Instant::now() < deadline,
                "the demo's daemon never answered"
            );
            thread::sleep(Duration::from_millis(200));
        }
        netpath_ok(&["pod", "add", "web", "--instance", "demo"]);
        let pods: Vec<PodInfo> = serde_json::from_str(&netpath_ok(&[
            "pod",
            "list",
            "--instance",
            "demo",
            "-o",
            "json",
        ]))
        .unwrap();
        let web = pods
            .iter()
            .find(|p| p.name == "web")
            .expect("web is listed");
        assert!(web.healthy, "{web:?}");
        assert_eq!(ping("demo-red", web.address, 2), 2, "red -> web");
    });
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let out = child.wait_with_output().unwrap();
    for ns in [
        "netpath-demo-node",
        "netpath-demo-lan",
        "demo-red",
        "demo-web",
    ] {
        assert!(!Netns::exists(ns), "{ns} left behind");
    }
    assert!(!PinDir::for_instance("demo").exists());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
    assert!(
        out.status.success(),
        "netpath demo exited {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
