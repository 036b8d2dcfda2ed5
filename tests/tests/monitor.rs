//! `netpath monitor`, the datapath's live events: the real binary watching
//! a test node while its pods send real traffic (`ping` from a spoofed
//! address, a flood of spoofed frames, a masqueraded ping), and the event
//! points run with `BPF_PROG_TEST_RUN` (the lease, the per-CPU rate limit
//! and the loss counters, exactly).

use std::{
    io::{BufRead as _, BufReader},
    net::Ipv4Addr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use netpath::{
    datapath::{Datapath, PinDir, events::EventMaps},
    monitor::monotonic_ns,
    state::StateDir,
};
use netpath_common::{
    Stat,
    events::{Event, MonitorGate, kind},
};
use serde_json::Value;
use tests::{
    daemon::{bin, netpath_err, netpath_ok},
    harness::{self, TestNode},
    node::{self, LAN, POD_A_IFINDEX, POD_A_MAC, UPLINK_IFINDEX},
    packet::{self, Ipv4Builder, SkbCtx, TC_ACT_SHOT},
};

const SPOOFED: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 77);

/// A running `netpath monitor ARGS`, its stdout lines arriving on a channel.
struct MonitorProc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl MonitorProc {
    /// Starts `netpath monitor --instance INSTANCE -o json ARGS` and waits
    /// until its watch lease is in the instance's map.
    fn start(instance: &str, args: &[&str]) -> Self {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        Self::start_raw(instance, &all)
    }

    /// Starts `netpath monitor --instance INSTANCE ARGS` (text unless ARGS
    /// say otherwise) and waits for its lease (a new one).
    fn start_raw(instance: &str, args: &[&str]) -> Self {
        // A lease of its own: not one a killed monitor left.
        let before = gate(instance);
        let mut child = Command::new(bin("netpath"))
            .args(["monitor", "--instance", instance])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start netpath monitor");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut m = Self { child, lines };
        let deadline = Instant::now() + Duration::from_secs(20);
        while gate(instance).kinds == 0 || gate(instance) == before {
            if let Some(status) = m.child.try_wait().unwrap() {
                panic!("netpath monitor exited ({status}): {}", m.stderr());
            }
            assert!(Instant::now() < deadline, "netpath monitor took no lease");
            thread::sleep(Duration::from_millis(50));
        }
        m
    }

    /// Its stderr (after it exited).
    fn stderr(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
        }
        s
    }

    /// The JSON lines printed within `wait`, until one satisfies `stop`.
    fn collect_until(&self, wait: Duration, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("not one JSON object per line ({e}): {line}"));
            let done = stop(&v);
            out.push(v);
            if done {
                break;
            }
        }
        out
    }

    /// The text lines printed within `wait`, until one contains `until`.
    fn text_until(&self, wait: Duration, until: &str) -> Vec<String> {
        let deadline = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else {
                break;
            };
            let done = line.contains(until);
            out.push(line);
            if done {
                break;
            }
        }
        out
    }

    /// SIGTERM; waits for a clean exit and returns the lines printed
    /// since the last collect.
    fn stop(mut self) -> Vec<Value> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let status = self.child.wait().unwrap();
        let stderr = self.stderr();
        assert!(
            status.success(),
            "netpath monitor exited with {status}: {stderr}"
        );
        self.lines
            .iter()
            .map(|l| serde_json::from_str(&l).unwrap())
            .collect()
    }
}

impl Drop for MonitorProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The instance's watch lease, as its pinned map holds it.
fn gate(instance: &str) -> MonitorGate {
    EventMaps::open_pinned(&PinDir::for_instance(instance))
        .expect("the monitor's pinned maps")
        .control
        .gate()
        .unwrap()
}

/// The host-side interface of `pod`, from the instance's state file.
fn host_ifname(node: &TestNode, pod: &str) -> String {
    StateDir::for_instance(node.instance()).load().unwrap().pods[pod]
        .host_ifname
        .clone()
}

/// Runs `ping args` in `ns`; its stdout.
fn ping(ns: &str, args: &[&str]) -> String {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = harness::in_ns(ns, move || Command::new("ping").args(&args).output())
        .expect("run ping (installed by cargo xtask test)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn is_drop_from(v: &Value, src: Ipv4Addr) -> bool {
    v["type"] == "drop" && v["saddr"] == src.to_string()
}

#[test]
fn a_spoofed_ping_shows_in_monitor_json_with_its_reason_pod_and_tuple() {
    let node = TestNode::masqueraded("mon-spoof", &["red"]);
    node.apply().expect("apply");
    let ns = node.pod_ns("red");
    harness::run_in_ns(
        &ns,
        "ip",
        &["addr", "add", &format!("{SPOOFED}/32"), "dev", "eth0"],
    );
    let monitor = MonitorProc::start(node.instance(), &[]);

    let out = ping(
        &ns,
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &SPOOFED.to_string(),
            &LAN.to_string(),
        ],
    );
    assert!(out.contains("0 received"), "spoofed ping answered: {out}");
    let lines = monitor.collect_until(Duration::from_secs(10), |v| is_drop_from(v, SPOOFED));
    let ev = lines
        .iter()
        .find(|v| is_drop_from(v, SPOOFED))
        .unwrap_or_else(|| panic!("no drop event from {SPOOFED}: {lines:?}"));
    assert_eq!(ev["reason"], "drop_spoofed_ip", "{ev}");
    assert_eq!(ev["daddr"], LAN.to_string(), "{ev}");
    assert_eq!(ev["proto"], "icmp", "{ev}");
    assert_eq!(ev["icmp_type"], 8, "an echo request: {ev}");
    assert_eq!(ev["pod"], "red", "{ev}");
    assert_eq!(ev["iface"], host_ifname(&node, "red"), "{ev}");
    assert!(ev["len"].as_u64().unwrap() >= 14 + 20 + 8, "{ev}");

    let rest = monitor.stop();
    assert!(
        rest.iter().any(|v| v["type"] == "lost"),
        "the losses are printed at exit: {rest:?}"
    );
    assert_eq!(
        gate(node.instance()),
        MonitorGate::default(),
        "the lease is cleared when the monitor stops"
    );
}

/// Sends `n` UDP frames from `src` (not the pod's address) out of the
/// pod's `eth0`, with the pod's own MAC, as fast as one packet socket can.
fn flood_spoofed(node: &TestNode, pod: &str, src: Ipv4Addr, n: usize) {
    let ep = node.maps().endpoints().unwrap()[&node.pod_addr(pod)];
    let frame = Ipv4Builder {
        src_mac: ep.pod_mac,
        dst_mac: ep.gw_mac,
        ..Ipv4Builder::udp((src, 5353), (LAN, 9))
    }
    .build();
    harness::in_ns(&node.pod_ns(pod), move || {
        let index = nix::net::if_::if_nametoindex("eth0").expect("ifindex");
        // SAFETY: plain socket syscalls on a descriptor owned by this closure.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW,
                i32::from((libc::ETH_P_ALL as u16).to_be()),
            );
            assert!(
                fd >= 0,
                "packet socket: {}",
                std::io::Error::last_os_error()
            );
            let mut addr: libc::sockaddr_ll = std::mem::zeroed();
            addr.sll_family = libc::AF_PACKET as u16;
            addr.sll_ifindex = index as i32;
            addr.sll_halen = 6;
            addr.sll_addr[..6].copy_from_slice(&frame[..6]);
            for _ in 0..n {
                let sent = libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                );
                assert_eq!(
                    sent,
                    frame.len() as isize,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
            libc::close(fd);
        }
    });
}

#[test]
fn a_flood_of_drops_is_rate_limited_in_the_kernel_and_the_loss_is_counted() {
    const FLOOD: usize = 3000;
    let node = TestNode::masqueraded("mon-flood", &["red"]);
    node.apply().expect("apply");
    let before = netpath::datapath::events::pinned_lost(&PinDir::for_instance(node.instance()))
        .unwrap()
        .expect("the monitor's maps are pinned");
    let monitor = MonitorProc::start(node.instance(), &["--rate", "20", "--burst", "20"]);
    let dropped_before = node.maps().stat(Stat::DropSpoofedIp).unwrap().packets;

    flood_spoofed(&node, "red", SPOOFED, FLOOD);
    let dropped = node.maps().stat(Stat::DropSpoofedIp).unwrap().packets - dropped_before;
    assert_eq!(dropped, FLOOD as u64, "every spoofed frame is dropped");
    // The losses are printed within a second or two (the monitor checks
    // them every second).
    let mut lines = monitor.collect_until(Duration::from_secs(10), |v| {
        v["type"] == "lost" && v["rate_limited"].as_u64().unwrap() > 0
    });
    lines.extend(monitor.stop());

    let events = lines.iter().filter(|v| is_drop_from(v, SPOOFED)).count();
    let lost = lines
        .iter()
        .filter(|v| v["type"] == "lost")
        .map(|v| v["rate_limited"].as_u64().unwrap())
        .max()
        .unwrap_or_else(|| panic!("no lost event printed: {lines:?}"));
    // Two CPUs, a burst of 20 each, 20 more per second: far fewer than the
    // flood. Every event the bucket refused is counted.
    assert!(events >= 1, "some events get through: {lines:?}");
    assert!(
        events <= 200,
        "{events} events of a {FLOOD}-frame flood at 20/s per CPU"
    );
    assert!(
        lost >= (FLOOD - events) as u64,
        "{lost} counted lost, {events} shown, {FLOOD} dropped"
    );
    // `netpath stats` shows the counter too.
    let stats = netpath_ok(&["stats", "--instance", node.instance()]);
    let row = stats
        .lines()
        .find(|l| l.starts_with("events_lost_rate_limit"))
        .unwrap_or_else(|| panic!("no events_lost row in netpath stats:\n{stats}"));
    let shown: u64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(shown >= before.rate_limited + lost, "{row}");
}

/// The kernel ids of the monitor's pinned maps.
fn event_map_ids(instance: &str) -> Vec<u32> {
    let pins = PinDir::for_instance(instance);
    netpath::datapath::events::MAPS
        .iter()
        .map(|m| {
            aya::maps::MapData::from_pin(pins.map(m))
                .and_then(|d| d.info())
                .unwrap_or_else(|e| panic!("pinned map {m}: {e}"))
                .id()
        })
        .collect()
}

#[test]
fn only_one_monitor_reads_an_instance_and_a_missing_one_is_explained() {
    let node = TestNode::new("mon-busy", &["red"]);
    node.apply().expect("apply");
    // The monitor's maps are pinned with the others and kept by an apply
    // (a recreated ring would cut off a running monitor).
    let ids = event_map_ids(node.instance());
    node.apply().expect("second apply");
    assert_eq!(event_map_ids(node.instance()), ids);
    let first = MonitorProc::start(node.instance(), &[]);
    let err = netpath_err(&["monitor", "--instance", node.instance()]);
    assert!(err.contains("already watches"), "{err}");
    first.stop();
    let err = netpath_err(&[
        "monitor",
        "--instance",
        &format!("{}-none", node.instance()),
    ]);
    assert!(
        err.contains("no datapath pinned") && err.contains("apply"),
        "{err}"
    );
}

#[test]
fn trace_events_show_the_masquerade_and_the_redirect_back_to_the_pod() {
    let node = TestNode::masqueraded("mon-trace", &["red"]);
    node.apply().expect("apply");
    let pod = node.pod_addr("red");
    let monitor = MonitorProc::start(node.instance(), &["--type", "trace", "--pod", "red"]);
    let out = ping(
        &node.pod_ns("red"),
        &["-n", "-c", "1", "-W", "2", &LAN.to_string()],
    );
    assert!(out.contains("1 received"), "masqueraded ping: {out}");
    let lines = monitor.collect_until(Duration::from_secs(10), |v| v["type"] == "redirect");
    let snat = lines
        .iter()
        .find(|v| v["type"] == "snat")
        .unwrap_or_else(|| panic!("no snat event: {lines:?}"));
    assert_eq!(snat["saddr"], pod.to_string(), "{snat}");
    assert_eq!(snat["daddr"], LAN.to_string(), "{snat}");
    assert_eq!(
        snat["nat_saddr"], "192.168.50.2",
        "the uplink's address: {snat}"
    );
    assert_eq!(snat["reason"], "snat_new", "{snat}");
    let redirect = lines
        .iter()
        .find(|v| v["type"] == "redirect")
        .unwrap_or_else(|| panic!("no redirect event: {lines:?}"));
    assert_eq!(
        redirect["daddr"],
        pod.to_string(),
        "the reply, translated: {redirect}"
    );
    assert_eq!(redirect["iface"], host_ifname(&node, "red"), "{redirect}");
    assert!(
        lines.iter().all(|v| v["type"] != "drop"),
        "--type trace shows no drops: {lines:?}"
    );
    monitor.stop();
}

#[test]
fn the_text_output_is_one_line_per_drop_with_reason_interface_pod_and_tuple() {
    let node = TestNode::masqueraded("mon-text", &["red"]);
    node.apply().expect("apply");
    let ns = node.pod_ns("red");
    harness::run_in_ns(
        &ns,
        "ip",
        &["addr", "add", &format!("{SPOOFED}/32"), "dev", "eth0"],
    );
    let monitor = MonitorProc::start_raw(node.instance(), &["--proto", "icmp"]);
    ping(
        &ns,
        &[
            "-n",
            "-c",
            "1",
            "-W",
            "1",
            "-I",
            &SPOOFED.to_string(),
            &LAN.to_string(),
        ],
    );
    let lines = monitor.text_until(Duration::from_secs(10), "drop_spoofed_ip");
    let line = lines
        .iter()
        .find(|l| l.contains("drop_spoofed_ip"))
        .unwrap_or_else(|| panic!("no drop line: {lines:?}"));
    let iface = host_ifname(&node, "red");
    assert!(
        line.contains(&format!("{iface} pod red: {SPOOFED} -> {LAN} icmp echo id")),
        "{line}"
    );
    assert!(line.split_whitespace().nth(1) == Some("drop"), "{line}");
    drop(monitor);
}

#[test]
fn a_monitor_whose_reader_goes_away_stops_and_clears_its_lease() {
    let node = TestNode::new("mon-pipe", &["red"]);
    node.apply().expect("apply");
    let mut monitor = MonitorProc::start(node.instance(), &[]);
    // `netpath monitor | head -1` after head exited: the reader closes.
    let (tx, rx) = mpsc::channel();
    drop(std::mem::replace(&mut monitor.lines, rx));
    drop(tx);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = monitor.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the monitor outlived its reader");
        thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "{status}: {}", monitor.stderr());
    assert_eq!(gate(node.instance()), MonitorGate::default());
}

#[test]
fn a_killed_monitor_leaves_a_lease_that_runs_out_and_the_next_one_starts() {
    let node = TestNode::new("mon-kill", &["red"]);
    node.apply().expect("apply");
    let mut monitor = MonitorProc::start(node.instance(), &[]);
    monitor.child.kill().unwrap();
    monitor.child.wait().unwrap();
    let left = gate(node.instance());
    assert_ne!(left.kinds, 0, "SIGKILL leaves the lease in place");
    let now = monotonic_ns();
    assert!(
        left.lease_until_ns <= now + 5_000_000_000,
        "it runs out within 5 s: {} ns left",
        left.lease_until_ns.saturating_sub(now)
    );
    // The lock died with it: a new monitor starts at once.
    MonitorProc::start(node.instance(), &[]).stop();
}

#[test]
fn a_service_backend_choice_is_a_trace_event_with_the_backend() {
    use netpath::config::{L4Proto, ServiceConfig, SessionAffinity};
    use tests::responder::{Responder, tcp_name};
    const WEB: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
    let mut node = TestNode::new("mon-svc", &["red", "blue"]);
    node.config.node.service_cidr = Some("10.96.0.0/16".parse().unwrap());
    node.config.services = vec![ServiceConfig {
        name: "web".into(),
        vip: WEB,
        port: 80,
        proto: L4Proto::Tcp,
        backends: vec!["blue".parse().unwrap()],
        target_port: Some(8080),
        affinity: SessionAffinity::None,
        affinity_timeout: None,
    }];
    node.apply().expect("apply");
    let _blue = Responder::start(&node.pod_ns("blue"), "blue", 8080);
    let monitor = MonitorProc::start(
        node.instance(),
        &["--type", "trace", "--addr", &WEB.to_string()],
    );
    assert_eq!(tcp_name(&node.pod_ns("red"), WEB, 80).unwrap(), "blue");
    let lines = monitor.collect_until(Duration::from_secs(10), |v| v["type"] == "backend");
    let ev = lines
        .iter()
        .find(|v| v["type"] == "backend")
        .unwrap_or_else(|| panic!("no backend event: {lines:?}"));
    assert_eq!(ev["saddr"], node.pod_addr("red").to_string(), "{ev}");
    assert_eq!(
        (&ev["daddr"], &ev["dport"]),
        (&Value::from(WEB.to_string()), &Value::from(80))
    );
    assert_eq!(ev["nat_daddr"], node.pod_addr("blue").to_string(), "{ev}");
    assert_eq!(ev["nat_dport"], 8080, "{ev}");
    assert_eq!(ev["reason"], "dnat_new", "{ev}");
    assert_eq!(ev["pod"], "red", "{ev}");
    monitor.stop();
}

// ------------------------------------------------ BPF_PROG_TEST_RUN level

/// A frame from pod A with a source address that is not its own.
fn spoofed_frame() -> Vec<u8> {
    Ipv4Builder {
        src_mac: POD_A_MAC,
        ..Ipv4Builder::udp((SPOOFED, 4000), (LAN, 53))
    }
    .build()
}

fn drain(maps: &mut EventMaps) -> Vec<Event> {
    let mut out = Vec::new();
    while let Some(item) = maps.ring.next() {
        assert_eq!(item.len(), size_of::<Event>());
        // SAFETY: the programs write whole `Event`s.
        out.push(unsafe { item.as_ptr().cast::<Event>().read_unaligned() });
    }
    out
}

fn watch(maps: &mut EventMaps, rate: u32, burst: u32) {
    maps.control
        .set_gate(&MonitorGate {
            lease_until_ns: monotonic_ns() + 60_000_000_000,
            kinds: kind::DROP_MASK,
            rate_per_sec: rate,
            burst,
            _pad: 0,
        })
        .unwrap();
}

fn run_spoofed(dp: &Datapath, n: usize) {
    for _ in 0..n {
        let (verdict, _) = packet::test_run_ctx(
            dp.from_pod_program(),
            &spoofed_frame(),
            SkbCtx::ingress(POD_A_IFINDEX),
        );
        assert_eq!(verdict, TC_ACT_SHOT);
    }
}

#[test]
fn prog_a_drop_is_an_event_only_while_a_lease_runs_and_the_rate_is_enforced_per_cpu() {
    let mut dp = node::datapath(UPLINK_IFINDEX);
    let mut maps = dp.event_maps().expect("the monitor's maps");

    // Nobody watches: the drop is counted, no event, nothing lost.
    run_spoofed(&dp, 3);
    assert!(drain(&mut maps).is_empty());
    assert_eq!(maps.control.lost().unwrap().total(), 0);

    // A lease: the drop is an event with its reason, interface and tuple.
    watch(&mut maps, 0, 0);
    run_spoofed(&dp, 1);
    let events = drain(&mut maps);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = events[0];
    assert_eq!(ev.kind, kind::DROP);
    assert_eq!(ev.reason, Stat::DropSpoofedIp as u32);
    // (`ifindex` is the skb's device: loopback under BPF_PROG_TEST_RUN;
    // the tests in real namespaces check the pod's interface.)
    assert_eq!(ev.ethertype, 0x0800);
    assert_eq!((ev.proto, ev.sport, ev.dport), (17, 4000, 53));
    assert_eq!(ev.saddr, SPOOFED.octets());
    assert_eq!(ev.daddr, LAN.octets());
    assert_eq!(ev.len as usize, spoofed_frame().len());
    assert!(ev.ktime_ns > 0 && ev.ktime_ns <= monotonic_ns());

    // A rate of 1 per second, burst 1: one event per CPU, the rest lost
    // and counted as rate limited.
    watch(&mut maps, 1, 1);
    run_spoofed(&dp, 50);
    let shown = drain(&mut maps).len();
    let lost = maps.control.lost().unwrap();
    let cpus = aya::util::nr_cpus().unwrap();
    assert!(
        shown >= 1 && shown <= cpus,
        "{shown} events at 1/s on {cpus} CPUs"
    );
    assert_eq!(lost.rate_limited + shown as u64, 50, "{lost:?}");
    assert_eq!(lost.ring_full, 0);

    // An expired lease: nothing again.
    maps.control
        .set_gate(&MonitorGate {
            lease_until_ns: monotonic_ns() - 1,
            kinds: kind::DROP_MASK,
            ..MonitorGate::default()
        })
        .unwrap();
    run_spoofed(&dp, 3);
    assert!(drain(&mut maps).is_empty());
    assert_eq!(maps.control.lost().unwrap(), lost);
}

#[test]
fn prog_an_xdp_prefilter_drop_is_an_event_with_its_tuple() {
    use aya::programs::{TestRun as _, TestRunOptions};
    let mut dp = node::datapath(UPLINK_IFINDEX);
    dp.maps()
        .lb_mut()
        .sync_prefilter(&[(
            "192.168.50.0/28".parse().unwrap(),
            netpath_common::DenyRule { id: 1 },
        )])
        .unwrap();
    let mut maps = dp.event_maps().expect("the monitor's maps");
    watch(&mut maps, 0, 0);
    let frame = Ipv4Builder::tcp((LAN, 40000), (node::NODE, 22), packet::TCP_SYN).build();
    let mut out = vec![0u8; frame.len() + 256];
    let res = dp
        .xdp_uplink_program()
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    assert_eq!(res.return_value, 1, "XDP_DROP");
    let events = drain(&mut maps);
    assert_eq!(events.len(), 1, "{events:?}");
    let ev = events[0];
    assert_eq!(ev.kind, kind::DROP);
    assert_eq!(ev.reason, Stat::DropXdpPrefilter as u32);
    assert_eq!((ev.saddr, ev.daddr), (LAN.octets(), node::NODE.octets()));
    assert_eq!((ev.proto, ev.sport, ev.dport), (6, 40000, 22));
    assert_eq!(ev.len as usize, frame.len());
}
