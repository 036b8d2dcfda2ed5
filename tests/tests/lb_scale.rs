//! A measurement, not a check of timing (ignored by default; run it with
//! `cargo test -p tests --features netpath/testing --test lb_scale --
//! --ignored --nocapture`): how long the reconciler takes to install
//! 30,000 services of two backends each on a fresh node, and to change one
//! of them, through the real apply (plan against the pinned maps, then
//! the map updates). It asserts only what the apply must have done.

use std::{
    net::Ipv4Addr,
    os::fd::{AsFd as _, AsRawFd as _},
    time::Instant,
};

use netpath::config::{L4Proto, ServiceConfig, SessionAffinity};
use tests::harness::TestNode;

/// Services installed.
const SERVICES: u32 = 30_000;

fn service(i: u32, backends: &[&str]) -> ServiceConfig {
    ServiceConfig {
        name: format!("s{i}"),
        // 10.96.0.0/16 holds 65,536 VIPs.
        vip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i),
        port: 80,
        proto: L4Proto::Tcp,
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        target_port: Some(80),
        affinity: SessionAffinity::None,
        affinity_timeout: None,
    }
}

/// `SUnreclaim` of `/proc/meminfo`, kB (where the kernel's slab objects
/// for map elements are counted).
fn unreclaimable_kb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("SUnreclaim:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
#[ignore = "a measurement of 30,000 services (about a minute); run with --ignored"]
fn thirty_thousand_services_install_and_one_changes() {
    let mut node = TestNode::new("lbscale", &["red", "blue", "green"]);
    node.config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    // The pods and the programs first, so that the timed applies are the
    // services' alone.
    node.apply().expect("the node");
    node.config.services = (0..SERVICES)
        .map(|i| service(i, &["red", "blue"]))
        .collect();
    let slab = unreclaimable_kb();
    let start = Instant::now();
    let report = node.apply().expect("install 30,000 services");
    let install = start.elapsed();
    let slab = unreclaimable_kb().saturating_sub(slab);
    assert_eq!(report.frontends.len(), SERVICES as usize);
    // What a plan reads of the maps, part by part.
    let maps = node.maps();
    let start = Instant::now();
    let n = maps.lb().frontends().unwrap().len();
    let t_frontends = start.elapsed();
    let start = Instant::now();
    let b = maps.lb().backends().unwrap().len();
    let t_backends = start.elapsed();
    println!(
        "read {n} frontends {:.3} s, {b} backends {:.3} s",
        t_frontends.as_secs_f64(),
        t_backends.as_secs_f64()
    );
    let start = Instant::now();
    let k = maps.lb().maglev_keys().unwrap().len();
    let t_keys = start.elapsed();
    let start = Instant::now();
    let state =
        netpath::lb::frontends::read(maps.lb(), netpath::lb::frontends::Tables::Unread).unwrap();
    println!(
        "{k} chunk keys {:.3} s; the whole read of {} frontends {:.3} s",
        t_keys.as_secs_f64(),
        state.len(),
        start.elapsed().as_secs_f64()
    );
    drop(maps);
    let pins = netpath::datapath::PinDir::for_instance(node.instance());
    for name in [
        netpath_common::maps::FRONTENDS,
        netpath_common::maps::BACKENDS,
        netpath_common::maps::MAGLEV,
    ] {
        let m = aya::maps::MapData::from_pin(pins.map(name)).unwrap();
        let info =
            std::fs::read_to_string(format!("/proc/self/fdinfo/{}", m.fd().as_fd().as_raw_fd()))
                .unwrap();
        let memlock = info
            .lines()
            .find_map(|l| l.strip_prefix("memlock:"))
            .unwrap()
            .trim()
            .to_owned();
        println!("{name}: bytes_memlock {memlock}");
    }
    println!("SUnreclaim grew by {slab} kB during the install (machine-wide)");
    let last = SERVICES as usize - 1;
    node.config.services[last] = service(SERVICES - 1, &["red", "green"]);
    let start = Instant::now();
    let report = node.apply().expect("change one service");
    let change = start.elapsed();
    assert_eq!(report.frontends.len(), 1, "{:?}", report.frontends);
    println!(
        "{SERVICES} services of 2 backends: install {:.2} s, one change {:.3} s",
        install.as_secs_f64(),
        change.as_secs_f64()
    );
}
