//! The service-scale group: N ClusterIP services of two endpoints each
//! (N = 1, 1,000, 10,000, 30,000), as kube-proxy's iptables mode, its
//! nftables mode and netpath hold them, built side by side ([`nodes`]).
//!
//! For each N the three nodes are built anew, the N services installed in
//! one go (timed; the kernel's memory before and after), then round after
//! round, the setups in turn (the order rotating), the LAN host opens new
//! connections to the *last* service (the worst case for iptables, whose
//! `KUBE-SERVICES` chain is tried rule by rule for every first packet:
//! connection rate, and each `connect()`'s time, the first packet's way
//! through the datapath and back) and exchanges 1-byte requests on one
//! established connection (which the rules no longer see: a control that
//! should not move with N); last, one service (the middle one) gets another
//! endpoint, timed ([`load`] has the servers and clients, [`rules`] the
//! rules).

pub mod load;
pub mod nodes;
pub mod rules;

use std::{
    collections::BTreeMap,
    net::SocketAddrV4,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use self::nodes::{KubeNode, Mode, NetpathNode, ScaleNode};
use crate::{
    condition::thousands,
    figures::{Better, Values},
    metrics::memory,
    ns::{self, Names},
    record::{Spread, num},
};

/// What the group runs.
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// The service counts, in order.
    pub services: Vec<usize>,
    pub rounds: usize,
    /// Seconds per figure and node.
    pub secs: f64,
    pub command: String,
}

/// A load of the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScaleFigure {
    /// New connections to the last service ([`load::connections`]).
    Connections,
    /// Request/response on one connection ([`load::request_response`]).
    RequestResponse,
}

impl ScaleFigure {
    pub const ALL: [ScaleFigure; 2] = [ScaleFigure::Connections, ScaleFigure::RequestResponse];

    pub fn id(self) -> &'static str {
        match self {
            ScaleFigure::Connections => "connections",
            ScaleFigure::RequestResponse => "request_response",
        }
    }
}

/// One run of a load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleSample {
    pub round: usize,
    pub figure: ScaleFigure,
    pub values: Values,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One node at one service count.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScaleRecord {
    /// Building, installing or reaching the last service failed: why (no
    /// figures then).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Seconds to install every service in one go.
    pub install_seconds: Option<f64>,
    /// What was installed.
    pub objects: Option<String>,
    /// Seconds to change one service.
    pub change_seconds: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub change_error: Option<String>,
    /// The kernel's memory after the install minus before
    /// ([`memory::kernel_bytes`]).
    pub kernel_memory_bytes: Option<i64>,
    /// netpath: `bytes_memlock` of the load-balancer maps and tables.
    pub memlock_bytes: Option<u64>,
    pub samples: Vec<ScaleSample>,
}

/// Every node at one service count.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScalePoint {
    pub services: usize,
    pub nodes: BTreeMap<Mode, ScaleRecord>,
}

/// Everything the group measured.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ScaleResults {
    /// `YYYYMMDDTHHMMSSZ`, its files' name (`<id>.json`,
    /// `<id>-service-scale.png`).
    pub id: String,
    pub started: String,
    pub finished: String,
    pub command: String,
    pub rounds: usize,
    pub seconds_per_figure: f64,
    /// `iptables --version`, `nft --version`.
    pub tools: String,
    pub nodes: BTreeMap<Mode, Vec<String>>,
    pub points: Vec<ScalePoint>,
    pub notes: Vec<String>,
}

/// One number the report shows per service count and node.
#[derive(Clone, Copy, Debug)]
pub struct ScaleMetric {
    pub id: &'static str,
    pub title: &'static str,
    pub unit: &'static str,
    pub better: Better,
}

const fn metric(
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    better: Better,
) -> ScaleMetric {
    ScaleMetric {
        id,
        title,
        unit,
        better,
    }
}

/// The report's tables, in order.
pub const METRICS: [ScaleMetric; 9] = [
    metric(
        "connections",
        "new connections to the last service",
        "1/s",
        Better::Higher,
    ),
    metric(
        "connect_p50",
        "first-packet latency (connect()) p50",
        "µs",
        Better::Lower,
    ),
    metric(
        "connect_p99",
        "first-packet latency (connect()) p99",
        "µs",
        Better::Lower,
    ),
    metric(
        "cpu_per_connection",
        "cpu per connection",
        "µs",
        Better::Lower,
    ),
    metric(
        "transactions",
        "request/response on an established connection",
        "1/s",
        Better::Higher,
    ),
    metric("rr_p99", "request/response p99", "µs", Better::Lower),
    metric(
        "install",
        "time to install every service",
        "s",
        Better::Lower,
    ),
    metric("change", "time to change one service", "s", Better::Lower),
    metric(
        "kernel_memory",
        "kernel memory of the services",
        "MB",
        Better::Lower,
    ),
];

impl ScalePoint {
    /// Per round, the value of `metric` on `mode` (the install, change and
    /// memory metrics have one, as round 0).
    pub fn values(&self, mode: Mode, metric: &str) -> BTreeMap<usize, f64> {
        let Some(r) = self.nodes.get(&mode) else {
            return BTreeMap::new();
        };
        let one = |v: Option<f64>| v.map(|v| (0, v)).into_iter().collect();
        match metric {
            "install" => one(r.install_seconds),
            "change" => one(r.change_seconds),
            #[expect(clippy::cast_precision_loss, reason = "bytes to MB, shown to 3 digits")]
            "kernel_memory" => one(r.kernel_memory_bytes.map(|b| b as f64 / 1e6)),
            #[expect(clippy::cast_precision_loss, reason = "bytes to MB, shown to 3 digits")]
            "memlock" => one(r.memlock_bytes.map(|b| b as f64 / 1e6)),
            _ => r
                .samples
                .iter()
                .filter_map(|s| s.values.get(metric).map(|v| (s.round, *v)))
                .collect(),
        }
    }

    /// Median [min–max] of `metric` on `mode`.
    pub fn spread(&self, mode: Mode, metric: &str) -> Option<Spread> {
        Spread::of(&self.values(mode, metric).into_values().collect::<Vec<_>>())
    }

    /// `num` / `den` of `metric`, per round where both have a positive
    /// value (a memory delta can be negative: memory freed elsewhere
    /// meanwhile; no ratio then).
    pub fn ratio(&self, num: Mode, den: Mode, metric: &str) -> Option<Spread> {
        let d = self.values(den, metric);
        let r: Vec<f64> = self
            .values(num, metric)
            .iter()
            .filter(|(_, n)| **n > 0.0)
            .filter_map(|(round, n)| d.get(round).filter(|x| **x > 0.0).map(|x| n / x))
            .collect();
        Spread::of(&r)
    }

    /// Why `mode` has no number for `metric`, if it has none.
    pub fn missing(&self, mode: Mode, metric: &str) -> Option<String> {
        let r = self.nodes.get(&mode)?;
        if let Some(e) = &r.error {
            return Some(e.clone());
        }
        if metric == "change" {
            return r.change_error.clone();
        }
        r.samples.iter().find_map(|s| s.error.clone())
    }
}

/// Probe timeout: a reachable service answers in microseconds (the first
/// packet through 30,000 iptables rules in milliseconds).
const PROBE: Duration = Duration::from_secs(5);

/// The nodes of one service count; torn down when dropped.
struct Nodes(Vec<Box<dyn ScaleNode>>);

impl Drop for Nodes {
    fn drop(&mut self) {
        for n in self.0.iter_mut().rev() {
            n.teardown();
        }
    }
}

/// Runs the group.
pub fn run(opts: &ScaleOptions, names: &Names) -> Result<ScaleResults> {
    let (started, id) = crate::record::now_utc();
    let mut out = ScaleResults {
        id,
        started,
        finished: String::new(),
        command: opts.command.clone(),
        rounds: opts.rounds,
        seconds_per_figure: opts.secs,
        tools: tools(),
        nodes: BTreeMap::new(),
        points: Vec::new(),
        notes: Vec::new(),
    };
    for &n in &opts.services {
        ns::check_stop()?;
        println!("bench: service scale: {} services", thousands(n as u64));
        let point = run_point(n, opts, names, &mut out)?;
        out.points.push(point);
    }
    out.finished = crate::record::now_utc().0;
    Ok(out)
}

/// `iptables --version; nft --version`.
fn tools() -> String {
    let version = |p: &str| {
        std::process::Command::new(p)
            .arg("--version")
            .output()
            .ok()
            .map_or_else(
                || format!("{p}: not found"),
                |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
            )
    };
    format!("{}; {}", version("iptables"), version("nft"))
}

/// Builds the nodes, installs `n` services, measures, changes one, tears
/// down.
fn run_point(
    n: usize,
    opts: &ScaleOptions,
    names: &Names,
    out: &mut ScaleResults,
) -> Result<ScalePoint> {
    let mut nodes = Nodes(vec![
        Box::new(KubeNode::new(names, Mode::Iptables)),
        Box::new(KubeNode::new(names, Mode::Nftables)),
        Box::new(NetpathNode::new(names)),
    ]);
    let mut records: BTreeMap<Mode, ScaleRecord> = BTreeMap::new();
    let mut services: BTreeMap<Mode, Vec<rules::Service>> = BTreeMap::new();
    let mut backends = Vec::new();
    for node in &mut nodes.0 {
        ns::check_stop()?;
        let mode = node.mode();
        let mut rec = ScaleRecord::default();
        match prepare(node.as_mut(), n, &mut rec) {
            Ok((svcs, servers)) => {
                services.insert(mode, svcs);
                backends.push(servers);
            }
            Err(e) => {
                let why = format!("{e:#}");
                println!("bench:   {}: no numbers: {why}", mode.id());
                rec.error = Some(why);
            }
        }
        out.nodes.entry(mode).or_insert_with(|| node.describe());
        records.insert(mode, rec);
    }
    let target = nodes::vip(n.saturating_sub(1));
    let dst = SocketAddrV4::new(target, nodes::SERVICE_PORT);
    let live: Vec<usize> = (0..nodes.0.len())
        .filter(|&i| records[&nodes.0[i].mode()].error.is_none())
        .collect();
    for round in 0..opts.rounds {
        for (fi, figure) in ScaleFigure::ALL.into_iter().enumerate() {
            let mut order = live.clone();
            if !order.is_empty() {
                let len = order.len();
                order.rotate_left((round + fi) % len);
            }
            for i in order {
                ns::check_stop()?;
                let node = &nodes.0[i];
                let sample = measure(figure, round, &node.client_ns(), dst, opts.secs);
                progress(n, round, opts.rounds, node.mode(), &sample);
                if let Some(r) = records.get_mut(&node.mode()) {
                    r.samples.push(sample);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // One service changes: the middle one (another than the one the loads
    // use, unless there is only one).
    let which = n / 2;
    for i in live {
        ns::check_stop()?;
        let node = &mut nodes.0[i];
        let mode = node.mode();
        let Some(svcs) = services.get(&mode) else {
            continue;
        };
        let Some(old) = svcs.get(which) else {
            continue;
        };
        let new = nodes::changed(old);
        let rec = records.get_mut(&mode).expect("recorded above");
        match node.change(svcs, which, &new).and_then(|secs| {
            load::probe(&node.client_ns(), dst, PROBE)?;
            Ok(secs)
        }) {
            Ok(secs) => {
                println!(
                    "bench:   {}: changed one service of {} in {secs:.3} s",
                    mode.id(),
                    thousands(n as u64)
                );
                rec.change_seconds = Some(secs);
            }
            Err(e) => rec.change_error = Some(format!("{e:#}")),
        }
    }
    drop(backends);
    drop(nodes);
    Ok(ScalePoint {
        services: n,
        nodes: records,
    })
}

/// Builds `node`, starts the backend servers, installs `n` services
/// (timed, the kernel's memory around it) and reaches the last one.
fn prepare(
    node: &mut dyn ScaleNode,
    n: usize,
    rec: &mut ScaleRecord,
) -> Result<(Vec<rules::Service>, load::Backends)> {
    let mode = node.mode();
    let t = Instant::now();
    node.build()?;
    let servers = load::Backends::start(
        &node.pod_namespaces(),
        &[nodes::SERVICE_PORT, nodes::OTHER_PORT],
    )?;
    let svcs = nodes::services(n, node.pod_addresses()?);
    let before = memory::kernel_bytes()?;
    let installed = node.install(&svcs)?;
    let after = memory::kernel_bytes()?;
    rec.install_seconds = Some(installed.seconds);
    rec.objects = Some(installed.objects.clone());
    rec.kernel_memory_bytes =
        Some(i64::try_from(after).unwrap_or(i64::MAX) - i64::try_from(before).unwrap_or(0));
    if let Some(m) = node.memlock() {
        rec.memlock_bytes = Some(m?);
    }
    let last = SocketAddrV4::new(nodes::vip(n.saturating_sub(1)), nodes::SERVICE_PORT);
    load::probe(&node.client_ns(), last, PROBE)?;
    println!(
        "bench:   {}: {} installed in {:.3} s ({}; {:.1} s with the build)",
        mode.id(),
        thousands(n as u64),
        installed.seconds,
        installed.objects,
        t.elapsed().as_secs_f64()
    );
    Ok((svcs, servers))
}

fn measure(
    figure: ScaleFigure,
    round: usize,
    client_ns: &str,
    dst: SocketAddrV4,
    secs: f64,
) -> ScaleSample {
    let mut values = Values::new();
    let res = match figure {
        ScaleFigure::Connections => load::connections(client_ns, dst, secs).map(|r| {
            values.insert("connections".into(), r.conn_per_s);
            values.insert("connect_p50".into(), r.connect_p50_us);
            values.insert("connect_p99".into(), r.connect_p99_us);
            values.insert("cpu_per_connection".into(), r.cpu_us_per_conn);
            #[expect(clippy::cast_precision_loss, reason = "a count of failures")]
            values.insert("failed_connections".into(), r.errors as f64);
        }),
        ScaleFigure::RequestResponse => load::request_response(client_ns, dst, secs).map(|r| {
            values.insert("transactions".into(), r.tps);
            values.insert("rr_p50".into(), r.p50_us);
            values.insert("rr_p99".into(), r.p99_us);
        }),
    };
    ScaleSample {
        round,
        figure,
        values,
        error: res.err().map(|e| format!("{e:#}")),
    }
}

fn progress(n: usize, round: usize, rounds: usize, mode: Mode, s: &ScaleSample) {
    let head = format!(
        "[services_{n} {}/{rounds}] {} {}",
        round + 1,
        s.figure.id(),
        mode.id()
    );
    match (&s.error, s.figure) {
        (Some(e), _) => println!("{head}: ERROR {e}"),
        (None, ScaleFigure::Connections) => println!(
            "{head}: {} conn/s, connect p99 {} µs",
            num(s.values.get("connections").copied().unwrap_or(f64::NAN)),
            num(s.values.get("connect_p99").copied().unwrap_or(f64::NAN))
        ),
        (None, ScaleFigure::RequestResponse) => println!(
            "{head}: {} transactions/s",
            num(s.values.get("transactions").copied().unwrap_or(f64::NAN))
        ),
    }
}
