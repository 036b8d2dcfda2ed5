//! The demo that `cargo xtask run` starts: built, usable, and removed
//! without a trace.

use netpath::{datapath::PinDir, demo, render, sys::netns::Netns};
use tests::harness::{block_on, ping};

#[test]
fn the_demo_builds_red_and_blue_that_reach_each_other_and_cleans_up() {
    let (lab, config) = demo::lab_and_config();
    let report = block_on(demo::up(&lab, &config)).expect("demo up");
    let result = std::panic::catch_unwind(|| {
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
    });
    block_on(demo::clean(&lab, &config)).expect("demo clean");
    for ns in [&lab.node_netns, &lab.lan_netns, &"demo-red".to_string()] {
        assert!(!Netns::exists(ns), "{ns} left behind");
    }
    assert!(!PinDir::for_instance(&config.node.name).exists());
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
