//! Port-forwards and services in real namespaces: what an apply writes into
//! the load balancer's maps (stable ids and backend indices, a change
//! touching only its service, rollback), and real TCP/UDP traffic from the
//! LAN host and from pods through the kernel's DNAT (a responder per pod
//! answers with its name), with no iptables or nftables rule anywhere.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::ErrorKind,
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use netpath::{
    config::{L4Proto, PortForwardConfig, ServiceConfig, SessionAffinity, Target},
    conntrack,
    lb::{
        frontends::{self, FrontendState, LbState, Vip},
        inspect,
    },
    render,
    state::StateDir,
};
use netpath_common::frontend_flags;
use tests::{
    harness::{TestNode, run_in_ns},
    responder::{Responder, echo, tcp_name, tcp_open, udp_name},
};

/// The LAN host.
const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The node's address on the uplink.
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// The VIP of the `web` service.
const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Where the responders listen in every pod.
const POD_PORT: u16 = 80;

fn service(name: &str, vip: Ipv4Addr, proto: L4Proto, backends: &[&str]) -> ServiceConfig {
    ServiceConfig {
        name: name.into(),
        vip,
        port: 80,
        proto,
        backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
        target_port: Some(POD_PORT),
        affinity: SessionAffinity::None,
        affinity_timeout: None,
    }
}

fn forward(proto: L4Proto, port: u16, to: &str) -> PortForwardConfig {
    PortForwardConfig {
        proto,
        port,
        address: None,
        to: Target::Pod(to.into()),
        to_port: Some(POD_PORT),
    }
}

/// A lab node with `pods`, a service CIDR, and the LAN host routing it via
/// the node (as a cluster's routers route the service range).
fn lb_node(tag: &str, pods: &[&str]) -> TestNode {
    let mut node = TestNode::new(tag, pods);
    node.config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    run_in_ns(
        &node.lab.lan_netns,
        "ip",
        &["route", "add", "10.96.0.0/16", "via", &NODE.to_string()],
    );
    node
}

/// A responder in each of `pods`.
fn responders(node: &TestNode, pods: &[&str]) -> BTreeMap<String, Responder> {
    pods.iter()
        .map(|p| {
            (
                (*p).to_owned(),
                Responder::start(&node.pod_ns(p), p, POD_PORT),
            )
        })
        .collect()
}

/// What the load balancer's maps hold.
fn lb_state(node: &TestNode) -> LbState {
    frontends::read(node.maps().lb(), frontends::Tables::All).unwrap()
}

fn vip(addr: Ipv4Addr, port: u16, proto: L4Proto) -> Vip {
    Vip { addr, port, proto }
}

/// The frontend of `vip`, with its backends by address.
fn frontend(state: &LbState, vip: Vip) -> &FrontendState {
    state
        .get(&vip)
        .unwrap_or_else(|| panic!("no frontend {vip} in {state:#?}"))
}

/// Neither iptables nor nftables has a rule (or a table) in `ns`.
fn assert_no_netfilter_rules(ns: &str) {
    let iptables = run_in_ns(ns, "iptables-save", &[]);
    let rules: Vec<&str> = iptables
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(rules.is_empty(), "iptables-save in {ns}:\n{iptables}");
    let nft = run_in_ns(ns, "nft", &["list", "ruleset"]);
    assert!(nft.trim().is_empty(), "nft list ruleset in {ns}:\n{nft}");
}

#[test]
fn frontends_keep_their_ids_and_a_change_touches_only_its_service() {
    let mut node = lb_node("lbmaps", &["red", "blue", "green"]);
    node.config.services = vec![
        service("web", WEB, L4Proto::Tcp, &["red", "blue", "green"]),
        service("dns", Ipv4Addr::new(10, 96, 0, 53), L4Proto::Udp, &["blue"]),
    ];
    node.config.port_forwards = vec![forward(L4Proto::Tcp, 8080, "blue")];
    node.apply().expect("apply");
    let (red, blue, green) = (
        node.pod_addr("red"),
        node.pod_addr("blue"),
        node.pod_addr("green"),
    );

    let first = lb_state(&node);
    // web, dns, and the forward on the uplink's address and the gateway.
    assert_eq!(first.len(), 4, "{first:#?}");
    let web_vip = vip(WEB, 80, L4Proto::Tcp);
    let web = frontend(&first, web_vip);
    let by_addr: BTreeMap<IpAddr, u32> = web
        .backends
        .iter()
        .map(|(i, a)| (IpAddr::V4(*a.ip()), *i))
        .collect();
    assert_eq!(by_addr.len(), 3);
    for pod in [red, blue, green] {
        let index = by_addr[&IpAddr::V4(pod)];
        let slots = web.maglev.slots().iter().filter(|&&i| i == index).count();
        assert!(slots.abs_diff(509 / 3) <= 2, "{pod}: {slots} of 509 slots");
    }
    for listen in [NODE, node.gateway()] {
        let fwd = frontend(&first, vip(listen, 8080, L4Proto::Tcp));
        assert_eq!(fwd.flags, frontend_flags::PORT_FORWARD);
        assert_eq!(
            fwd.backends.values().next().unwrap().to_string(),
            format!("{blue}:80")
        );
    }
    let ids: BTreeSet<u32> = first.values().map(|f| f.id).collect();
    assert_eq!(ids.len(), 4, "ids are distinct");

    // The same configuration again changes nothing.
    let again = node.apply().expect("second apply");
    assert!(!again.changed(), "{again:?}");
    assert_eq!(lb_state(&node), first);

    // A backend more for web: only web's frontend changes; no program is
    // reloaded; the others' tables, ids and indices stay.
    node.config.services[0]
        .backends
        .push("192.168.50.1:8080".parse().unwrap());
    let report = node.apply().expect("add a backend");
    assert!(!report.programs_loaded, "{report:?}");
    assert_eq!(report.frontends.len(), 1, "{report:?}");
    assert!(report.frontends[0].contains("service web"), "{report:?}");
    let second = lb_state(&node);
    for (v, fe) in &first {
        if *v != web_vip {
            assert_eq!(second.get(v), Some(fe), "{v} changed");
        }
    }
    let web2 = frontend(&second, web_vip);
    assert_eq!(web2.id, web.id);
    for (i, a) in &web.backends {
        assert_eq!(web2.backends.get(i), Some(a), "backend {i} moved");
    }
    assert_eq!(web2.backends.len(), 4);

    // Removing blue from web keeps every slot of the others.
    node.config.services[0].backends.remove(1);
    node.apply().expect("remove a backend");
    let third = lb_state(&node);
    let web3 = frontend(&third, web_vip);
    let blue_index = by_addr[&IpAddr::V4(blue)];
    assert!(!web3.backends.contains_key(&blue_index));
    assert!(!web3.maglev.slots().contains(&blue_index));
    assert_eq!(
        web3.maglev.slots().len(),
        web2.maglev.slots().len(),
        "same size"
    );
    for (slot, (b, a)) in web2
        .maglev
        .slots()
        .iter()
        .zip(web3.maglev.slots())
        .enumerate()
    {
        if *b != blue_index {
            assert_eq!(b, a, "slot {slot} of a remaining backend moved");
        }
    }
    assert_eq!(
        StateDir::for_instance(node.instance())
            .load()
            .unwrap()
            .frontends
            .iter()
            .find(|r| r.service.as_deref() == Some("web"))
            .unwrap()
            .backends
            .len(),
        3
    );

    // Without services and forwards, the maps are empty again.
    node.config.services.clear();
    node.config.port_forwards.clear();
    node.apply().expect("remove everything");
    assert!(lb_state(&node).is_empty());
    assert!(node.maps().lb().backends().unwrap().is_empty());
    assert_no_netfilter_rules(&node.lab.node_netns);
}

/// The generation of each frontend's Maglev table, from the chunk keys (a
/// rewritten table gets the next generation: an unchanged one is a table
/// left untouched). Each frontend has chunks of one generation only: an
/// apply deletes the generation its frontends no longer name.
fn table_ids(node: &TestNode) -> BTreeMap<u32, u16> {
    let mut out = BTreeMap::new();
    for k in node.maps().lb().maglev_keys().unwrap() {
        let had = out.insert(k.frontend, k.generation);
        assert!(
            had.is_none_or(|g| g == k.generation),
            "frontend {} has chunks of generations {had:?} and {}",
            k.frontend,
            k.generation
        );
    }
    out
}

#[test]
fn two_thousand_services_apply_at_once_and_a_change_to_one_touches_only_its_entries() {
    let mut node = lb_node("lbmany", &["red", "blue", "green"]);
    node.config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    node.config.services = (0..2000_u32)
        .map(|i| {
            let vip = Ipv4Addr::from(u32::from(WEB) + i);
            service(&format!("s{i}"), vip, L4Proto::Tcp, &["red", "blue"])
        })
        .collect();
    let report = node.apply().expect("apply 2,000 services");
    assert_eq!(report.frontends.len(), 2000);
    let before = lb_state(&node);
    let tables = table_ids(&node);
    assert_eq!(before.len(), 2000);
    assert_eq!(tables.len(), 2000);
    for fe in before.values() {
        assert_eq!(fe.maglev.slots().len(), 251, "two backends: 251 slots");
    }

    // The last service swaps blue for green.
    let last_vip = vip(Ipv4Addr::from(u32::from(WEB) + 1999), 80, L4Proto::Tcp);
    node.config.services[1999].backends = vec!["red".parse().unwrap(), "green".parse().unwrap()];
    let report = node.apply().expect("change one service");
    assert_eq!(report.frontends.len(), 1, "{:?}", report.frontends);
    assert!(report.frontends[0].contains("service s1999"), "{report:?}");
    let after = lb_state(&node);
    let tables_after = table_ids(&node);
    for (v, fe) in &before {
        if *v == last_vip {
            continue;
        }
        assert_eq!(after.get(v), Some(fe), "{v} changed");
        assert_eq!(
            tables_after[&fe.id], tables[&fe.id],
            "{v}: its table was rewritten"
        );
    }
    let last = frontend(&after, last_vip);
    assert_ne!(tables_after[&last.id], tables[&last.id], "a new table");
    let green = node.pod_addr("green");
    assert!(last.backends.values().any(|b| *b.ip() == green));

    // Traffic reaches the changed service's new backend.
    let _pods = responders(&node, &["red", "green"]);
    let seen: BTreeSet<String> = (0..20)
        .map(|_| tcp_name(&node.lab.lan_netns, last_vip.addr, 80).expect("TCP to s1999"))
        .collect();
    assert_eq!(seen, ["green".to_owned(), "red".to_owned()].into());
}

#[test]
fn a_failure_midway_rolls_the_frontends_back() {
    let mut node = lb_node("lbrollback", &["red", "blue"]);
    node.config.services = vec![
        service("web", WEB, L4Proto::Tcp, &["red"]),
        service("db", Ipv4Addr::new(10, 96, 0, 20), L4Proto::Tcp, &["blue"]),
    ];
    node.apply().expect("apply");
    let before = lb_state(&node);
    let records = StateDir::for_instance(node.instance())
        .load()
        .unwrap()
        .frontends;

    // web gets blue, db loses blue and gets red, a new service appears;
    // the failure comes after db's (the second frontend's) steps.
    node.config.services[0]
        .backends
        .push("blue".parse().unwrap());
    node.config.services[1].backends = vec!["red".parse().unwrap()];
    node.config.services.push(service(
        "new",
        Ipv4Addr::new(10, 96, 0, 30),
        L4Proto::Udp,
        &["red"],
    ));
    let failpoint = format!(
        "lb:{}:{}",
        node.instance(),
        vip(Ipv4Addr::new(10, 96, 0, 20), 80, L4Proto::Tcp)
    );
    // SAFETY: the value names this test's instance, so concurrent tests
    // that read the variable are unaffected.
    unsafe { std::env::set_var("NETPATH_FAILPOINT", &failpoint) };
    let err = node.apply().expect_err("failpoint");
    // SAFETY: as for set_var above.
    unsafe { std::env::remove_var("NETPATH_FAILPOINT") };
    assert!(err.to_string().contains("rolled back"), "{err}");
    assert_eq!(lb_state(&node), before, "the maps are as before the apply");
    assert_eq!(
        StateDir::for_instance(node.instance())
            .load()
            .unwrap()
            .frontends,
        records
    );

    // The same apply without the failure goes through.
    node.apply().expect("apply again");
    let after = lb_state(&node);
    assert_eq!(after.len(), 3);
    assert_eq!(
        frontend(&after, vip(WEB, 80, L4Proto::Tcp)).id,
        frontend(&before, vip(WEB, 80, L4Proto::Tcp)).id
    );
}

#[test]
fn a_port_forward_reaches_the_pod_with_the_clients_address() {
    let mut node = lb_node("pfwd", &["red", "blue"]);
    node.config.port_forwards = vec![
        forward(L4Proto::Tcp, 8080, "blue"),
        forward(L4Proto::Udp, 8080, "blue"),
    ];
    node.apply().expect("apply");
    let pods = responders(&node, &["red", "blue"]);
    let lan = node.lab.lan_netns.clone();

    assert_eq!(tcp_name(&lan, NODE, 8080).expect("TCP"), "blue");
    assert_eq!(udp_name(&lan, NODE, 8080).expect("UDP"), "blue");
    let seen: BTreeSet<IpAddr> = pods["blue"]
        .peers()
        .iter()
        .map(std::net::SocketAddr::ip)
        .collect();
    assert_eq!(
        seen,
        BTreeSet::from([IpAddr::V4(LAN)]),
        "the client's address"
    );
    assert!(pods["red"].peers().is_empty());
    // A pod reaches the forward too, on the gateway's address.
    assert_eq!(
        tcp_name(&node.pod_ns("red"), node.gateway(), 8080).expect("from red"),
        "blue"
    );
    assert_no_netfilter_rules(&node.lab.node_netns);
}

#[test]
fn a_service_spreads_over_its_three_backends() {
    let mut node = lb_node("svc3", &["red", "blue", "green"]);
    node.config.services = vec![
        service("web", WEB, L4Proto::Tcp, &["red", "blue", "green"]),
        service("webu", WEB, L4Proto::Udp, &["red", "blue", "green"]),
    ];
    node.apply().expect("apply");
    let _pods = responders(&node, &["red", "blue", "green"]);
    let lan = node.lab.lan_netns.clone();

    let mut tcp = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for _ in 0..60 {
        tcp.insert(tcp_name(&lan, WEB, 80).expect("TCP to the VIP"));
        udp.insert(udp_name(&lan, WEB, 80).expect("UDP to the VIP"));
        if tcp.len() == 3 && udp.len() == 3 {
            break;
        }
    }
    let all: BTreeSet<String> = ["red", "blue", "green"].map(str::to_owned).into();
    assert_eq!(tcp, all);
    assert_eq!(udp, all);
    assert_no_netfilter_rules(&node.lab.node_netns);
}

#[test]
fn a_pod_reaches_a_service_that_selects_itself() {
    let mut node = lb_node("hairpin", &["red", "blue"]);
    node.config.services = vec![
        service("self", WEB, L4Proto::Tcp, &["red"]),
        service("selfu", WEB, L4Proto::Udp, &["red"]),
    ];
    node.apply().expect("apply");
    let _pods = responders(&node, &["red", "blue"]);
    let red = node.pod_ns("red");
    for _ in 0..5 {
        assert_eq!(tcp_name(&red, WEB, 80).expect("hairpin TCP"), "red");
        assert_eq!(udp_name(&red, WEB, 80).expect("hairpin UDP"), "red");
    }
    // And another pod reaches it as well.
    assert_eq!(tcp_name(&node.pod_ns("blue"), WEB, 80).unwrap(), "red");
}

#[test]
fn a_service_without_backends_refuses_at_once() {
    let mut node = lb_node("svcempty", &["red"]);
    node.config.services = vec![
        service("empty", WEB, L4Proto::Tcp, &[]),
        service("emptyu", WEB, L4Proto::Udp, &[]),
    ];
    node.apply().expect("apply");
    let lan = node.lab.lan_netns.clone();
    for ns in [lan, node.pod_ns("red")] {
        let start = Instant::now();
        let err = tcp_name(&ns, WEB, 80).expect_err("no backend");
        let took = start.elapsed();
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{ns}: {err}");
        assert!(
            took < Duration::from_millis(100),
            "{ns}: refused after {took:?}"
        );
        let err = udp_name(&ns, WEB, 80).expect_err("no backend");
        assert_eq!(err.kind(), ErrorKind::ConnectionRefused, "{ns}: {err}");
    }
}

#[test]
fn removing_a_backend_keeps_the_other_connections() {
    let mut node = lb_node("svcremove", &["red", "blue", "green"]);
    node.config.services = vec![service("web", WEB, L4Proto::Tcp, &["red", "blue", "green"])];
    node.apply().expect("apply");
    let _pods = responders(&node, &["red", "blue", "green"]);
    let lan = node.lab.lan_netns.clone();

    // One open connection to each backend.
    let mut open = BTreeMap::new();
    for _ in 0..60 {
        let (s, name) = tcp_open(&lan, WEB, 80).expect("connect");
        open.entry(name).or_insert(s);
        if open.len() == 3 {
            break;
        }
    }
    assert_eq!(open.len(), 3, "not every backend answered");
    for s in open.values_mut() {
        assert_eq!(echo(s, b"before").unwrap(), b"before");
    }
    // `netpath service list` counts one established flow (at least) per
    // backend, named after its pod.
    let maps = node.maps();
    let records = StateDir::for_instance(node.instance())
        .load()
        .unwrap()
        .frontends;
    let views = inspect::frontends(&lb_state(&node), &records, &conntrack::list(&maps).unwrap());
    let web = &views[0];
    assert_eq!(web.service.as_deref(), Some("web"));
    for b in &web.backends {
        assert!(open.contains_key(&b.target), "{b:?}");
        assert!(b.flows >= 1, "{b:?}");
    }
    let table = render::services(&views);
    assert!(table.contains("web") && table.contains("green"), "{table}");

    node.config.services[0].backends = vec!["red".parse().unwrap(), "green".parse().unwrap()];
    node.apply().expect("remove blue");

    for name in ["red", "green"] {
        let s = open.get_mut(name).unwrap();
        assert_eq!(echo(s, b"after").expect(name), b"after", "{name}");
    }
    let blue = open.get_mut("blue").unwrap();
    let err = echo(blue, b"after").expect_err("blue's connection is gone");
    assert_eq!(err.kind(), ErrorKind::ConnectionReset, "{err}");
    // New connections go to the two that remain.
    for _ in 0..10 {
        let name = tcp_name(&lan, WEB, 80).unwrap();
        assert!(name == "red" || name == "green", "{name}");
    }
}

#[test]
fn a_service_cidr_on_a_node_network_is_refused_before_anything_changes() {
    let mut node = lb_node("svccidr", &["red"]);
    node.config.services = vec![service("web", WEB, L4Proto::Tcp, &["red"])];
    let ns = node.lab.node_netns.clone();
    run_in_ns(
        &ns,
        "ip",
        &[
            "link", "add", "dummy0", "type", "veth", "peer", "name", "dummy1",
        ],
    );
    run_in_ns(&ns, "ip", &["addr", "add", "10.96.5.1/24", "dev", "dummy0"]);
    let err = node
        .apply()
        .expect_err("the service CIDR is a node network");
    let msg = err.to_string();
    assert!(
        msg.contains("10.96.0.0/16") && msg.contains("dummy0") && msg.contains("10.96.5.0/24"),
        "{msg}"
    );
    node.assert_nothing_built();
}

#[test]
fn an_upgrade_that_recreates_the_lb_maps_keeps_established_connections_and_refills_them() {
    // An older version's load balancer: its maps' pins are gone from this
    // version's names (as `frontends_v2`, `maglev_v2`, ... are), its
    // programs still run on them, and the next apply loads a new object.
    let mut node = lb_node("lbupgrade", &["red", "blue"]);
    node.config.services = vec![service("web", WEB, L4Proto::Tcp, &["red", "blue"])];
    node.apply().expect("apply");
    let _pods = responders(&node, &["red", "blue"]);
    let lan = node.lab.lan_netns.clone();
    let mut open = BTreeMap::new();
    for _ in 0..60 {
        let (s, name) = tcp_open(&lan, WEB, 80).expect("connect");
        open.entry(name).or_insert(s);
        if open.len() == 2 {
            break;
        }
    }
    assert_eq!(open.len(), 2, "not every backend answered");
    let pins = netpath::datapath::PinDir::for_instance(node.instance());
    for name in [
        netpath_common::maps::FRONTENDS,
        netpath_common::maps::BACKENDS,
        netpath_common::maps::MAGLEV,
        netpath_common::maps::AFFINITY,
    ] {
        std::fs::remove_file(pins.map(name)).expect("unpin");
    }
    // A stale map of the old layout, and a program pin gone (a new object
    // to load, as a new version's hash is).
    let stale = aya::maps::HashMap::<aya::maps::MapData, u32, u32>::create(4, 0).unwrap();
    stale.pin(pins.map("maglev_v2")).unwrap();
    std::fs::remove_file(pins.prog(netpath_common::progs::FROM_POD)).unwrap();

    let report = node.apply().expect("the upgrade's apply");
    assert!(report.programs_loaded, "{report:?}");
    assert_eq!(
        report.unchanged,
        ["red", "blue"],
        "no pod is recreated for maps of a new layout: {report:?}"
    );
    assert!(!pins.map("maglev_v2").exists(), "the stale pin is removed");
    // The new maps hold the service again, its table whole.
    let state = lb_state(&node);
    let web = frontend(&state, vip(WEB, 80, L4Proto::Tcp));
    assert_eq!(web.backends.len(), 2);
    assert_eq!(web.maglev.slots().len(), 251);
    // Established connections stay with their backends; new ones reach both.
    for (name, s) in &mut open {
        assert_eq!(echo(s, b"after").expect(name), b"after", "{name}");
    }
    let seen: BTreeSet<String> = (0..20)
        .map(|_| tcp_name(&lan, WEB, 80).expect("a new connection"))
        .collect();
    assert_eq!(seen, ["blue".to_owned(), "red".to_owned()].into());
}
