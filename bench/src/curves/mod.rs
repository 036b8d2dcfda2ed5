//! The cost-growth curves (`--only curves`): the time netpath's program
//! spends on one packet against the size of the state it looks things up
//! in — routes (1 → 100,000), services (1 → 30,000) and connection-table
//! entries (1 → 1,000,000).
//!
//! Each point loads a private copy of the datapath (unpinned, attached
//! nowhere: the machine's interfaces are never touched), fills its maps to
//! N, and runs `np_from_pod` on a crafted pod packet with
//! `BPF_PROG_TEST_RUN`, one run per call: the kernel times the run
//! (`duration`, nanoseconds, around the program only), and the point keeps
//! the distribution over a few thousand calls. One run per call, not the
//! kernel's `repeat`: a repeated run gets the packet the previous run left
//! (already translated), so only the first run would take the path being
//! measured. Every run's verdict is checked: a packet that did not take the
//! path the curve is about (redirected out, translated) stops the group
//! with an error instead of timing a drop.
//!
//! Two figures per point:
//!
//! - **established**: the same 5-tuple again and again once its connection
//!   exists: what every packet after the first pays.
//! - **new connection**: a fresh 5-tuple per run (the source port moves):
//!   the lookups, the connection-table inserts, the NAT port search and, for
//!   services, the frontend and Maglev pick.
//!
//! The classic path's counterparts are not per-packet program times: the
//! kernel FIB (an LC-trie) and nf_conntrack (a hash) do not grow with N
//! either, which the routes and conntrack conditions of the main figures
//! show end to end; iptables' service rules do, and the service-scale group
//! measures that (first-packet latency against N), drawn beside these
//! curves.

pub mod frame;

use std::{net::Ipv4Addr, time::Instant};

use anyhow::{Context as _, Result, bail, ensure};
use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};
use ipnet::Ipv4Net;
use netpath::{
    datapath::{Datapath, LoadOptions, lb_maps::frontend_key},
    lb::maglev::{self, Member},
};
use netpath_common::{
    Backend, BackendKey, Endpoint, Frontend, MasqRule, NodeSettings, RouteNextHop,
    events::MonitorGate,
};
use serde::{Deserialize, Serialize};

use crate::record::Spread;

/// TC verdicts.
const TC_ACT_REDIRECT: u32 = 7;

/// The pods of the node the curves run in (as `tests::node`): A sends,
/// B and C are the services' backends.
const POD_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const POD_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
const POD_C: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 4);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// An ifindex no namespace of the bench has: the program's redirect is
/// only a verdict under `BPF_PROG_TEST_RUN`, never carried out.
const UPLINK_IFINDEX: u32 = 20;
const POD_A_IFINDEX: u32 = 11;

/// The first address of the routes' and the conntrack fill's destinations
/// (11.0.0.0 on: 100,000 /24s reach 12.134.159.0/24).
const FAR: u32 = 0x0b00_0000;
/// The first service VIP (10.96.0.0 on, as Kubernetes' default range).
const VIP_BASE: u32 = 0x0a60_0000;

/// What to measure.
#[derive(Clone, Debug)]
pub struct CurveOptions {
    pub routes: Vec<u64>,
    pub services: Vec<u64>,
    pub conntrack: Vec<u64>,
    /// Timed runs per figure and point.
    pub runs: usize,
}

impl CurveOptions {
    pub fn full() -> Self {
        Self {
            routes: vec![1, 10, 100, 1000, 10_000, 100_000],
            services: vec![1, 10, 100, 1000, 10_000, 30_000],
            conntrack: vec![1, 1000, 10_000, 100_000, 1_000_000],
            runs: 4000,
        }
    }

    pub fn smoke() -> Self {
        Self {
            routes: vec![1, 1000],
            services: vec![1, 100],
            conntrack: vec![1, 1000],
            runs: 200,
        }
    }
}

/// One dimension the state grows in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dimension {
    Routes,
    Services,
    Conntrack,
}

impl Dimension {
    pub const ALL: [Dimension; 3] = [Dimension::Routes, Dimension::Services, Dimension::Conntrack];

    pub fn title(self) -> &'static str {
        match self {
            Dimension::Routes => "routes in the route map",
            Dimension::Services => "services (2 backends each)",
            Dimension::Conntrack => "connection-table entries",
        }
    }

    /// What the measured packet is.
    pub fn packet(self) -> &'static str {
        match self {
            Dimension::Routes => {
                "pod → an address of the last /24 route added (masqueraded out of the uplink)"
            }
            Dimension::Services => "pod → the last service's VIP:80 (DNAT to a pod backend)",
            Dimension::Conntrack => {
                "pod → an address beyond the uplink (masqueraded), with N other masqueraded \
                 connections in the table"
            }
        }
    }
}

/// One point of a curve: N, and the program's time per packet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurvePoint {
    pub n: u64,
    /// ns per run, an established connection's packet.
    pub established_ns: Spread,
    /// ns per run, a new connection's first packet.
    pub new_ns: Spread,
    /// Seconds it took to fill the maps to N.
    pub fill_secs: f64,
}

/// One dimension's curve.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Curve {
    pub dimension: Dimension,
    pub points: Vec<CurvePoint>,
}

/// The group's results.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CurveResults {
    pub started: String,
    pub finished: String,
    pub runs: usize,
    /// ns per run of a program that returns at once (`np_to_uplink` on a
    /// forwarded packet: one context read): the timing's own floor, in
    /// every figure.
    #[serde(default)]
    pub floor_ns: Option<Spread>,
    pub curves: Vec<Curve>,
    /// What the observability features cost the established SNAT packet.
    #[serde(default)]
    pub overheads: Vec<Overhead>,
    #[serde(default)]
    pub notes: Vec<String>,
}

/// A feature's cost: the same packet with it off and on, measured in
/// alternating blocks so that drift hits both alike.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Overhead {
    /// What is switched, e.g. "per-pod counters".
    pub what: String,
    pub off_ns: Spread,
    pub on_ns: Spread,
}

impl Overhead {
    /// on / off, medians.
    pub fn ratio(&self) -> f64 {
        if self.off_ns.median > 0.0 {
            self.on_ns.median / self.off_ns.median
        } else {
            f64::NAN
        }
    }
}

impl CurveResults {
    pub fn curve(&self, d: Dimension) -> Option<&Curve> {
        self.curves.iter().find(|c| c.dimension == d)
    }
}

/// Runs every curve.
pub fn run(opts: &CurveOptions) -> Result<CurveResults> {
    let started = crate::record::now_utc().0;
    let floor_ns = floor(opts.runs)?;
    println!(
        "  curves floor (a program that returns at once): {:.0} ns",
        floor_ns.median
    );
    let floor_ns = Some(floor_ns);
    let mut curves = Vec::new();
    for d in Dimension::ALL {
        let ns = match d {
            Dimension::Routes => &opts.routes,
            Dimension::Services => &opts.services,
            Dimension::Conntrack => &opts.conntrack,
        };
        let mut points = Vec::new();
        for &n in ns {
            if crate::ns::stopped() {
                bail!("interrupted");
            }
            let p = point(d, n, opts.runs).with_context(|| format!("{d:?} at {n}"))?;
            println!(
                "  curves {:<9} N = {:>9}: established {:>6.0} ns, new connection {:>6.0} ns (filled in {:.1} s)",
                format!("{d:?}").to_lowercase(),
                n,
                p.established_ns.median,
                p.new_ns.median,
                p.fill_secs
            );
            points.push(p);
        }
        curves.push(Curve {
            dimension: d,
            points,
        });
    }
    Ok(CurveResults {
        started,
        finished: crate::record::now_utc().0,
        runs: opts.runs,
        floor_ns,
        curves,
        overheads: overheads(opts.runs)?,
        notes: Vec::new(),
    })
}

/// The observability features' cost on the established SNAT packet (pod A
/// → an address beyond the uplink): `[node] pod_counters` off and on, and
/// `netpath monitor` attached but idle (its watch lease held for drops,
/// none happening) against no monitor.
fn overheads(runs: usize) -> Result<Vec<Overhead>> {
    let mut dp = node(netpath_common::maps::CONNTRACK_DEFAULT_MAX)?;
    dp.maps().sync_routes(&routes(0))?;
    let f = packet(Dimension::Conntrack, 1, 7, 0);
    let mut out = vec![0u8; 2048];
    let settings = |on: bool| NodeSettings {
        nat_port_min: 1024,
        nat_port_max: 65535,
        gateway: GATEWAY.octets(),
        flags: if on {
            netpath_common::node_flags::POD_COUNTERS
        } else {
            0
        },
        ..NodeSettings::DEFAULT
    };
    // The first run makes the connection.
    run_once(dp.from_pod_program(), &f, &mut out)?;
    let block = (runs / 10).max(1);
    // Alternating blocks of runs with `switch(false)` and `switch(true)`.
    let mut ab = |dp: &mut Datapath,
                  switch: &mut dyn FnMut(&mut Datapath, bool) -> Result<()>|
     -> Result<(Spread, Spread)> {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for i in 0..20 {
            let enabled = i % 2 == 1;
            switch(dp, enabled)?;
            let v = if enabled { &mut on } else { &mut off };
            for _ in 0..block {
                let (verdict, ns) = run_once(dp.from_pod_program(), &f, &mut out)?;
                ensure!(
                    verdict == TC_ACT_REDIRECT,
                    "the established packet got verdict {verdict}, not a redirect"
                );
                v.push(ns);
            }
        }
        Ok((
            Spread::of(&off).context("no samples")?,
            Spread::of(&on).context("no samples")?,
        ))
    };
    let mut found = Vec::new();
    let (off_ns, on_ns) = ab(&mut dp, &mut |dp, on| {
        dp.maps().set_settings(settings(on))?;
        Ok(())
    })?;
    found.push(Overhead {
        what: "per-pod counters (`[node] pod_counters`)".into(),
        off_ns,
        on_ns,
    });
    // The monitor: counters as by default, the lease held or not.
    dp.maps().set_settings(settings(true))?;
    let mut events = dp.event_maps()?;
    let (off_ns, on_ns) = ab(&mut dp, &mut |_, on| {
        let gate = if on {
            MonitorGate {
                lease_until_ns: netpath::monitor::monotonic_ns() + 3_600_000_000_000,
                kinds: netpath_common::events::kind::DROP_MASK,
                rate_per_sec: 5000,
                burst: 5000,
                _pad: 0,
            }
        } else {
            MonitorGate::default()
        };
        events.control.set_gate(&gate)?;
        Ok(())
    })?;
    found.push(Overhead {
        what: "`netpath monitor` attached, idle (watching drops; none happen)".into(),
        off_ns,
        on_ns,
    });
    for o in &found {
        println!(
            "  curves overhead: {}: {:.0} ns off, {:.0} ns on ({:.3} ×)",
            o.what,
            o.off_ns.median,
            o.on_ns.median,
            o.ratio()
        );
    }
    Ok(found)
}

/// The floor: `np_to_uplink` on a packet with an ingress device returns at
/// its first check (forwarded traffic is not the node's own).
fn floor(runs: usize) -> Result<Spread> {
    let dp = node(netpath_common::maps::CONNTRACK_DEFAULT_MAX)?;
    let f = frame::udp(POD_A, 7, LAN, 9, 18);
    let mut out = vec![0u8; 2048];
    let mut v = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (verdict, ns) = run_once(dp.to_uplink_program(), &f, &mut out)?;
        ensure!(
            verdict == 0,
            "np_to_uplink on a forwarded packet: verdict {verdict}, not TC_ACT_OK"
        );
        v.push(ns);
    }
    Spread::of(&v).context("no floor samples")
}

/// The node of the curves: pods A, B and C, the gateway, a default route
/// via the LAN host out of the uplink, masquerade of the pod CIDR out of it.
fn node(conntrack_max: u32) -> Result<Datapath> {
    let mut dp = Datapath::load(LoadOptions {
        conntrack_max,
        log_level: 0,
        ..LoadOptions::default()
    })
    .context("load netpath's eBPF object (a private copy, attached nowhere)")?;
    let maps = dp.maps();
    for (addr, ifindex, last) in [(POD_A, POD_A_IFINDEX, 2u8), (POD_B, 12, 3), (POD_C, 13, 4)] {
        maps.upsert_endpoint(
            addr,
            Endpoint {
                ifindex,
                flags: 0,
                pod_mac: [0x02, 0xaa, 0, 0, 0, last],
                gw_mac: [0x02, 0x99, 0, 0, 0, last],
            },
        )?;
    }
    maps.set_settings(NodeSettings {
        nat_port_min: 1024,
        nat_port_max: 65535,
        gateway: GATEWAY.octets(),
        ..NodeSettings::DEFAULT
    })?;
    maps.sync_masq(&[(
        "10.200.0.0/24".parse()?,
        MasqRule {
            ifindex: UPLINK_IFINDEX,
            nat_addr: NODE.octets(),
        },
    )])?;
    Ok(dp)
}

/// The node's routes: the default route, and `extra` /24s from 11.0.0.0 on.
fn routes(extra: u64) -> Vec<(Ipv4Net, RouteNextHop)> {
    let hop = RouteNextHop {
        ifindex: UPLINK_IFINDEX,
        via: LAN.octets(),
    };
    let mut r = vec![(Ipv4Net::default(), hop)];
    r.extend((0..extra).map(|i| {
        let net = Ipv4Addr::from(FAR + (u32::try_from(i).unwrap_or(u32::MAX) << 8));
        (Ipv4Net::new(net, 24).unwrap_or_default(), hop)
    }));
    r
}

/// N services, VIP i at 10.96.0.0 + i port 80/UDP, backends B:80 and C:80.
fn fill_services(dp: &mut Datapath, n: u64) -> Result<()> {
    let members = [
        Member {
            name: format!("{POD_B}:80"),
            index: 1,
        },
        Member {
            name: format!("{POD_C}:80"),
            index: 2,
        },
    ];
    let table = maglev::table(&members);
    let lb = dp.maps().lb_mut();
    let ids: Vec<u32> = (1..=u32::try_from(n)?).collect();
    for &id in &ids {
        let vip = Ipv4Addr::from(VIP_BASE + id - 1);
        for (index, pod) in [(1, POD_B), (2, POD_C)] {
            lb.set_backend(
                BackendKey {
                    frontend: id,
                    index,
                },
                Backend {
                    addr: pod.octets(),
                    port: 80,
                    flags: 0,
                    _pad: 0,
                },
            )?;
        }
        let key = frontend_key(vip, 80, frame::IPPROTO_UDP);
        lb.set_frontend(
            key,
            Frontend {
                id,
                backends: 2,
                flags: 0,
                _pad: 0,
                affinity_timeout_secs: 0,
                maglev_size: 0,
                maglev_gen: 0,
                _pad2: 0,
            },
        )?;
        lb.swap_maglev(&key, &table)?;
    }
    Ok(())
}

/// One run of `prog` on `frame` as pod A sends it; the verdict and the
/// kernel's time for the run.
fn run_once(prog: &SchedClassifier, frame: &[u8], out: &mut [u8]) -> Result<(u32, f64)> {
    let ctx = frame::skb_ctx(POD_A_IFINDEX);
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(out),
            ctx_in: Some(&ctx),
            ..Default::default()
        })
        .context("BPF_PROG_TEST_RUN of np_from_pod")?;
    #[expect(
        clippy::cast_precision_loss,
        reason = "nanoseconds of one run: far below 2^52"
    )]
    Ok((res.return_value, res.duration.as_nanos() as f64))
}

/// The packet of dimension `d` from pod A's source port `sport`, to
/// destination number `dst` (the conntrack fill spreads its connections
/// over destinations: one NAT address has 64,512 ports per destination).
fn packet(d: Dimension, n: u64, sport: u16, dst: u32) -> Vec<u8> {
    let daddr = match d {
        Dimension::Routes => {
            Ipv4Addr::from(FAR + (u32::try_from(n.saturating_sub(1)).unwrap_or(0) << 8) + 5)
        }
        Dimension::Services => Ipv4Addr::from(VIP_BASE + u32::try_from(n).unwrap_or(1) - 1),
        Dimension::Conntrack => Ipv4Addr::from(FAR + dst),
    };
    let dport = if d == Dimension::Services { 80 } else { 9 };
    frame::udp(POD_A, sport, daddr, dport, 18)
}

/// Fills dimension `d` to `n` and measures it.
fn point(d: Dimension, n: u64, runs: usize) -> Result<CurvePoint> {
    let ct_max = match d {
        // Room for the fill, the timed connections, and slack.
        Dimension::Conntrack => u32::try_from(n + n / 4 + 65_536)?,
        _ => netpath_common::maps::CONNTRACK_DEFAULT_MAX,
    };
    let mut dp = node(ct_max)?;
    let fill = Instant::now();
    dp.maps()
        .sync_routes(&routes(if d == Dimension::Routes { n } else { 0 }))?;
    if d == Dimension::Services {
        fill_services(&mut dp, n)?;
    }
    let mut out = vec![0u8; 2048];
    if d == Dimension::Conntrack {
        // N real masqueraded connections, made by the program itself.
        for i in 0..n.saturating_sub(1) {
            let (dst, port) = (u32::try_from(i / 60_000)? + 1, 1024 + (i % 60_000) as u16);
            let f = packet(d, n, port, dst);
            let (verdict, _) = run_once(dp.from_pod_program(), &f, &mut out)?;
            ensure!(
                verdict == TC_ACT_REDIRECT,
                "filling the connection table: connection {i} got verdict {verdict}, not a redirect"
            );
        }
    }
    let fill_secs = fill.elapsed().as_secs_f64();

    let prog = dp.from_pod_program();
    // Established: the first run makes the connection.
    let est = packet(d, n, 7, 0);
    let mut established = Vec::with_capacity(runs);
    for i in 0..=runs {
        let (verdict, ns) = run_once(prog, &est, &mut out)?;
        ensure!(
            verdict == TC_ACT_REDIRECT,
            "the established packet got verdict {verdict}, not a redirect"
        );
        if i > 0 {
            established.push(ns);
        }
    }
    // New connections: a fresh source port each (on destination 0, which
    // the fill never used).
    let mut new = Vec::with_capacity(runs);
    for i in 0..runs {
        let f = packet(d, n, 10_000 + u16::try_from(i % 50_000)?, 0);
        let (verdict, ns) = run_once(prog, &f, &mut out)?;
        ensure!(
            verdict == TC_ACT_REDIRECT,
            "a new connection's packet got verdict {verdict}, not a redirect"
        );
        new.push(ns);
    }
    Ok(CurvePoint {
        n,
        established_ns: Spread::of(&established).context("no established samples")?,
        new_ns: Spread::of(&new).context("no new-connection samples")?,
        fill_secs,
    })
}
