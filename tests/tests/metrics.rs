//! Observability as an operator meets it: the daemon's Prometheus endpoint
//! (parsed strictly as the text format), per-pod counters that equal what
//! the pods sent (ICMP echoes counted exactly, and against the pod's own
//! `eth0` counters), `netpath pod list -o json`, `netpath top --once`, and
//! the `[node] pod_counters` switch.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use netpath::config::metrics::{MetricsConfig, MetricsListen};
use serde_json::Value;
use tests::{
    daemon::{DaemonProc, netpath_ok},
    harness::{TestNode, ping, run_in_ns},
};

/// A free TCP port on loopback (bound, read and released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral port")
        .port()
}

/// `GET path` on `addr`: (status line, headers, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("read the response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a header and a body");
    let (status, headers) = head.split_once("\r\n").unwrap_or((head, ""));
    (status.to_owned(), headers.to_owned(), body.to_owned())
}

/// One sample: family, full name, labels.
type Series = (String, BTreeMap<String, String>);

/// Parses Prometheus text strictly: every sample's family has `# HELP` and
/// `# TYPE` before it, each family once, counters end in `_total`,
/// histogram samples are `_bucket` (with `le`), `_sum`, `_count`, no
/// series twice, every value a number. Returns value by series.
fn parse_strict(text: &str) -> BTreeMap<Series, f64> {
    let mut help = BTreeSet::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').expect("HELP name text");
            assert!(!text.is_empty(), "empty HELP for {name}");
            assert!(help.insert(name.to_owned()), "HELP of {name} twice");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "type {kind}"
            );
            assert!(help.contains(name), "TYPE before HELP for {name}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "TYPE of {name} twice"
            );
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("value {v:?} in {line:?}")),
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.strip_suffix('}').expect("closing brace"))),
            None => (series, BTreeMap::new()),
        };
        assert!(
            name.starts_with("netpath_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "name {name}"
        );
        let family = if types.contains_key(name) {
            name.to_owned()
        } else {
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or_else(|| panic!("sample {name} of no declared family"));
            assert_eq!(
                types.get(base).map(String::as_str),
                Some("histogram"),
                "{name}"
            );
            if name.ends_with("_bucket") {
                assert!(labels.contains_key("le"), "{line}");
            }
            base.to_owned()
        };
        assert!(types.contains_key(&family), "{family} has no TYPE");
        assert!(
            out.insert((name.to_owned(), labels), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {key} is quoted");
        let mut value = String::new();
        loop {
            match chars.next().expect("closing quote") {
                '\\' => match chars.next().expect("escaped char") {
                    'n' => value.push('\n'),
                    c @ ('\\' | '"') => value.push(c),
                    c => panic!("bad escape \\{c}"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        assert!(
            out.insert(key.clone(), value).is_none(),
            "label {key} twice"
        );
        match chars.next() {
            None | Some(',') => {}
            Some(c) => panic!("unexpected {c:?} after a label"),
        }
    }
    out
}

/// Value of `name{labels}` (0 when absent, as a counter not yet seen).
fn get(m: &BTreeMap<Series, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    m.get(&(name.to_owned(), labels)).copied().unwrap_or(0.0)
}

fn scrape(addr: SocketAddr) -> BTreeMap<Series, f64> {
    let (status, headers, body) = http_get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK", "{body}");
    assert!(
        headers.contains("Content-Type: text/plain; version=0.0.4"),
        "{headers}"
    );
    parse_strict(&body)
}

/// (tx packets, tx bytes) of `eth0` in pod namespace `ns`, as the kernel
/// counts them.
fn eth0_tx(ns: &str) -> (f64, f64) {
    let out = run_in_ns(ns, "ip", &["-s", "-j", "link", "show", "eth0"]);
    let v: Value = serde_json::from_str(&out).expect("ip -j is JSON");
    let tx = &v[0]["stats64"]["tx"];
    (
        tx["packets"].as_f64().expect("tx packets"),
        tx["bytes"].as_f64().expect("tx bytes"),
    )
}

fn with_metrics(node: &mut TestNode) -> SocketAddr {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    node.config.node.metrics = Some(MetricsConfig {
        listen: MetricsListen::At(addr),
    });
    addr
}

#[test]
fn metrics_are_prometheus_text_and_pod_counters_equal_what_was_sent() {
    let mut node = TestNode::masqueraded("metr", &["a", "b"]);
    let addr = with_metrics(&mut node);
    let daemon = DaemonProc::start(&node);
    let i = node.instance().to_owned();
    let a_ns = node.pod_ns("a");
    let (a_addr, b_addr) = (
        node.pod_addr("a").to_string(),
        node.pod_addr("b").to_string(),
    );
    let a = [("pod", "a"), ("address", a_addr.as_str())];
    let b = [("pod", "b"), ("address", b_addr.as_str())];

    // Not found and not allowed are answered, not hung up on.
    assert_eq!(http_get(addr, "/").0, "HTTP/1.1 404 Not Found");

    let before = scrape(addr);
    assert_eq!(get(&before, "netpath_datapath_up", &[]), 1.0);
    assert_eq!(get(&before, "netpath_pod_counters_enabled", &[]), 1.0);
    assert!(get(&before, "netpath_reconcile_duration_seconds_count", &[]) >= 1.0);
    // Every table has a capacity.
    for map in [
        "conntrack",
        "nat",
        "endpoints",
        "pod_stats",
        "frontends",
        "backends",
    ] {
        assert!(
            get(&before, "netpath_map_max_entries", &[("map", map)]) > 0.0,
            "{map}"
        );
    }
    assert_eq!(
        get(&before, "netpath_map_entries", &[("map", "endpoints")]),
        2.0
    );
    assert_eq!(
        get(&before, "netpath_map_entries", &[("map", "pod_stats")]),
        2.0
    );
    let a_eth0_before = eth0_tx(&a_ns);

    // a → b: 5 echoes and 5 replies, each delivered by the datapath.
    assert_eq!(ping(&a_ns, node.pod_addr("b"), 5), 5);
    // a → LAN host through masquerade: 4 echoes, 4 replies via np_from_uplink.
    assert_eq!(ping(&a_ns, node.lab.lan_addr.addr(), 4), 4);
    // a → a martian destination: 3 echoes, each dropped (drop_martian).
    assert_eq!(ping(&a_ns, Ipv4Addr::new(240, 0, 0, 1), 3), 0);

    // The pod's own eth0 and the counters are read together: retried when
    // a packet of the pod's own (ARP) fell between the two reads.
    let (after, a_eth0_after) = (0..3)
        .map(|_| {
            let m = scrape(addr);
            let e = eth0_tx(&a_ns);
            (m, e)
        })
        .find(|(m, e)| {
            get(m, "netpath_pod_tx_packets_total", &a)
                - get(&before, "netpath_pod_tx_packets_total", &a)
                == e.0 - a_eth0_before.0
        })
        .expect("a's tx counter equals what its eth0 sent (three reads)");
    let d = |name: &str, labels: &[(&str, &str)]| {
        get(&after, name, labels) - get(&before, name, labels)
    };

    // Exactly the echoes: b received a's 5 requests, a the 5 + 4 replies.
    assert_eq!(d("netpath_pod_rx_packets_total", &b), 5.0);
    assert_eq!(d("netpath_pod_rx_packets_total", &a), 9.0);
    // a sent at least its 12 echoes (and whatever ARP it needed), every
    // byte of them as its eth0 counted; 3 were dropped.
    assert!(d("netpath_pod_tx_packets_total", &a) >= 12.0);
    assert_eq!(
        d("netpath_pod_tx_bytes_total", &a),
        a_eth0_after.1 - a_eth0_before.1,
        "tx bytes as eth0 counts them"
    );
    // Its 3 martians were dropped; so may be the IPv6 a new pod sends
    // (drop_pod_ipv6): every drop of the window is some pod's.
    assert!(d("netpath_pod_tx_dropped_total", &a) >= 3.0);
    let all_drops: f64 = after
        .keys()
        .filter(|(n, _)| n == "netpath_drop_packets_total")
        .map(|(n, l)| {
            let l: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            d(n, &l)
        })
        .sum();
    assert_eq!(
        d("netpath_pod_tx_dropped_total", &a) + d("netpath_pod_tx_dropped_total", &b),
        all_drops
    );
    assert!(d("netpath_pod_tx_packets_total", &b) >= 5.0);
    // An echo frame is at least Ethernet + IPv4 + ICMP headers.
    assert!(d("netpath_pod_rx_bytes_total", &b) >= 5.0 * 42.0);

    // Node-wide counters moved with the same traffic.
    assert!(
        d(
            "netpath_verdict_packets_total",
            &[("verdict", "fwd_local_pod")]
        ) >= 10.0
    );
    assert!(
        d(
            "netpath_verdict_packets_total",
            &[("verdict", "fwd_routed")]
        ) >= 4.0
    );
    assert!(
        d(
            "netpath_verdict_packets_total",
            &[("verdict", "fwd_revnat")]
        ) >= 4.0
    );
    assert_eq!(
        d("netpath_drop_packets_total", &[("reason", "drop_martian")]),
        3.0
    );
    assert!(d("netpath_datapath_events_total", &[("event", "snat_new")]) >= 1.0);
    // The monitor's losses are exported (nobody watched: none).
    for reason in ["rate_limit", "ring_full"] {
        assert_eq!(
            get(
                &after,
                "netpath_monitor_lost_events_total",
                &[("reason", reason)]
            ),
            0.0,
            "{reason}"
        );
    }

    // The masqueraded echo holds a connection and an ICMP id on the uplink.
    assert!(get(&after, "netpath_map_entries", &[("map", "conntrack")]) >= 1.0);
    assert!(get(&after, "netpath_map_fill_ratio", &[("map", "conntrack")]) > 0.0);
    let uplink = node.lab.node_addr.addr().to_string();
    let snat = [("address", uplink.as_str()), ("proto", "icmp")];
    assert!(get(&after, "netpath_snat_ports_in_use", &snat) >= 1.0);
    assert!(get(&after, "netpath_snat_busiest_destination_ports", &snat) >= 1.0);
    assert_eq!(
        get(&after, "netpath_snat_port_range_size", &[]),
        f64::from(60999 - 32768 + 1)
    );

    // `netpath pod list -o json` carries the same counters.
    let list: Value =
        serde_json::from_str(&netpath_ok(&["pod", "list", "-i", &i, "-o", "json"])).unwrap();
    let row = |name: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {list}"))
            .clone()
    };
    assert_eq!(
        row("b")["traffic"]["rx_packets"].as_f64(),
        Some(get(&after, "netpath_pod_rx_packets_total", &b))
    );
    assert_eq!(
        row("a")["traffic"]["tx_dropped"].as_f64(),
        Some(get(&after, "netpath_pod_tx_dropped_total", &a))
    );
    let table = netpath_ok(&["pod", "list", "-i", &i]);
    assert!(
        table.contains("RX-PKTS") && table.contains("DROPPED"),
        "{table}"
    );

    // `netpath top --once`: both pods and the drop reason, from the pins.
    let top = netpath_ok(&["top", "-i", &i, "--once", "--interval", "0.2"]);
    let pod_line = |name: &str| {
        top.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no line for {name} in\n{top}"))
            .to_owned()
    };
    let a_line = pod_line("a");
    let rx_total = get(&after, "netpath_pod_rx_packets_total", &a);
    assert!(a_line.contains(&format!(" {rx_total} ")), "{a_line}\n{top}");
    pod_line("b");
    assert!(top.contains("drop_martian"), "{top}");

    // The daemon's own figures: one applied request, one refused.
    netpath_ok(&["pod", "add", "c", "-i", &i]);
    let out = tests::daemon::netpath(&["pod", "add", "c", "-i", &i]);
    assert!(!out.status.success());
    let m = scrape(addr);
    assert_eq!(
        get(&m, "netpath_apply_requests_total", &[("result", "applied")]),
        1.0
    );
    assert_eq!(
        get(&m, "netpath_apply_requests_total", &[("result", "refused")]),
        1.0
    );
    assert_eq!(
        get(&m, "netpath_reconcile_duration_seconds_count", &[]),
        get(&before, "netpath_reconcile_duration_seconds_count", &[]) + 1.0
    );
    assert_eq!(get(&m, "netpath_reconcile_errors_total", &[]), 0.0);
    // A new pod starts from zero; a deleted one takes its counters along.
    let c_addr = node.pod_addr("c").to_string();
    let c = [("pod", "c"), ("address", c_addr.as_str())];
    assert!(get(&m, "netpath_pod_tx_packets_total", &c) <= 2.0);
    assert_eq!(get(&m, "netpath_map_entries", &[("map", "pod_stats")]), 3.0);
    netpath_ok(&["pod", "del", "c", "-i", &i]);
    let m = scrape(addr);
    assert_eq!(get(&m, "netpath_map_entries", &[("map", "pod_stats")]), 2.0);
    assert!(
        !m.keys()
            .any(|(_, l)| l.get("pod").is_some_and(|p| p == "c"))
    );
    drop(daemon);
}

#[test]
fn pod_counters_off_count_nothing_and_say_so() {
    let mut node = TestNode::new("meoff", &["a", "b"]);
    node.config.node.pod_counters = Some(false);
    let addr = with_metrics(&mut node);
    let _daemon = DaemonProc::start(&node);
    let before = scrape(addr);
    assert_eq!(get(&before, "netpath_pod_counters_enabled", &[]), 0.0);
    assert_eq!(ping(&node.pod_ns("a"), node.pod_addr("b"), 3), 3);
    let after = scrape(addr);
    let b_addr = node.pod_addr("b").to_string();
    let b = [("pod", "b"), ("address", b_addr.as_str())];
    // The entries exist (so turning counting on needs no pod change) ...
    assert_eq!(
        get(&after, "netpath_map_entries", &[("map", "pod_stats")]),
        2.0
    );
    // ... but the datapath does not add to them; node-wide counters move.
    assert_eq!(get(&after, "netpath_pod_rx_packets_total", &b), 0.0);
    assert!(
        get(
            &after,
            "netpath_verdict_packets_total",
            &[("verdict", "fwd_local_pod")]
        ) - get(
            &before,
            "netpath_verdict_packets_total",
            &[("verdict", "fwd_local_pod")]
        ) >= 6.0
    );
}
