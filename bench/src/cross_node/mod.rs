//! The cross-node group (`--only cross-node`): pod on node A → pod on node
//! B over a bridged LAN that routes no pod CIDR, four ways side by side in
//! one run ([`XnKind`]): the classic routed cluster (a kernel route per
//! peer), the classic overlay (flannel's VXLAN device), netpath's direct
//! routing and netpath's VXLAN overlay. The loads are the datapath
//! figures' own ([`FIGURES`]: TCP throughput with one stream,
//! request/response of 1 byte, the connection rate, UDP 64 B), measured
//! round-robin as the runner does (the order rotating per round and
//! figure). [`wiring`] says how each setup is built.

pub mod wiring;

use std::{
    collections::BTreeMap,
    thread,
    time::{Duration, Instant},
};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::{
    figures::{Figure, MeasureCtx, Values},
    load,
    ns::{self, Names},
    record::{SetupRecord, Spread, now_utc},
    topology::Endpoints,
};

use wiring::Wiring;

/// The figures of the group, in report order.
pub const FIGURES: [Figure; 4] = [Figure::Tcp1, Figure::Rr1, Figure::Crr, Figure::Udp64];

/// One way of connecting pods on two nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XnKind {
    /// Kernel routes to the peer's pod CIDR via its node address (a routed
    /// cluster without overlay).
    ClassicDirect,
    /// A kernel VXLAN device with the peer's neighbour and FDB entries, as
    /// flannel's `vxlan` backend writes them.
    ClassicVxlan,
    /// netpath, `[cluster] mode = "direct"`.
    NetpathDirect,
    /// netpath, `[cluster] mode = "vxlan"`.
    NetpathVxlan,
}

impl XnKind {
    pub const ALL: [XnKind; 4] = [
        XnKind::ClassicDirect,
        XnKind::ClassicVxlan,
        XnKind::NetpathDirect,
        XnKind::NetpathVxlan,
    ];

    pub fn id(self) -> &'static str {
        match self {
            XnKind::ClassicDirect => "classic_direct",
            XnKind::ClassicVxlan => "classic_vxlan",
            XnKind::NetpathDirect => "netpath_direct",
            XnKind::NetpathVxlan => "netpath_vxlan",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            XnKind::ClassicDirect => "classic direct",
            XnKind::ClassicVxlan => "classic VXLAN (flannel)",
            XnKind::NetpathDirect => "netpath direct",
            XnKind::NetpathVxlan => "netpath VXLAN",
        }
    }

    /// The namespace tag (`npb-<pid>-<tag>-...`).
    fn tag(self) -> &'static str {
        match self {
            XnKind::ClassicDirect => "xcd",
            XnKind::ClassicVxlan => "xcv",
            XnKind::NetpathDirect => "xnd",
            XnKind::NetpathVxlan => "xnv",
        }
    }

    pub fn is_netpath(self) -> bool {
        matches!(self, XnKind::NetpathDirect | XnKind::NetpathVxlan)
    }

    /// The classic setup of the same mode (the denominator of the ratio).
    pub fn classic_of(self) -> XnKind {
        match self {
            XnKind::NetpathDirect | XnKind::ClassicDirect => XnKind::ClassicDirect,
            XnKind::NetpathVxlan | XnKind::ClassicVxlan => XnKind::ClassicVxlan,
        }
    }
}

/// What the group runs.
#[derive(Clone, Debug)]
pub struct XnOptions {
    pub rounds: usize,
    /// Seconds per figure and setup.
    pub secs: f64,
    /// Pause between measurements.
    pub settle: Duration,
    pub command: String,
}

/// One measurement (or why there is none).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XnSample {
    pub round: usize,
    pub setup: XnKind,
    pub figure: Figure,
    pub values: Values,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    pub seconds: f64,
}

/// The group's results (they have their own date and command: a page may
/// show them beside another run's figures).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct XnResults {
    pub started: String,
    pub finished: String,
    pub command: String,
    pub rounds: usize,
    pub seconds_per_figure: f64,
    pub setups: BTreeMap<XnKind, SetupRecord>,
    pub samples: Vec<XnSample>,
    pub notes: Vec<String>,
}

impl XnResults {
    fn by_round(&self, kind: XnKind, figure: Figure, metric: &str) -> BTreeMap<usize, f64> {
        self.samples
            .iter()
            .filter(|s| s.setup == kind && s.figure == figure)
            .filter_map(|s| s.values.get(metric).map(|v| (s.round, *v)))
            .collect()
    }

    /// Median and spread of a metric of one setup.
    pub fn spread(&self, kind: XnKind, figure: Figure, metric: &str) -> Option<Spread> {
        let v: Vec<f64> = self.by_round(kind, figure, metric).into_values().collect();
        Spread::of(&v)
    }

    /// `num / den` from the rounds where both have a value.
    pub fn ratio(&self, num: XnKind, den: XnKind, figure: Figure, metric: &str) -> Option<Spread> {
        let n = self.by_round(num, figure, metric);
        let d = self.by_round(den, figure, metric);
        let r: Vec<f64> = n
            .iter()
            .filter_map(|(round, x)| d.get(round).filter(|y| **y != 0.0).map(|y| x / y))
            .collect();
        Spread::of(&r)
    }

    /// Why a setup has no number for a figure (its first error or reason).
    pub fn missing(&self, kind: XnKind, figure: Figure) -> Option<&str> {
        self.samples
            .iter()
            .filter(|s| s.setup == kind && s.figure == figure)
            .find_map(|s| s.unavailable.as_deref().or(s.error.as_deref()))
    }
}

/// The setups, torn down when dropped (errors, panics, Ctrl-C).
struct Built(Vec<Wiring>);

impl Drop for Built {
    fn drop(&mut self) {
        for w in self.0.iter().rev() {
            w.teardown();
        }
    }
}

/// Builds the four setups, probes them, measures every figure round after
/// round, and tears everything down.
pub fn run(opts: &XnOptions, names: &Names) -> Result<XnResults> {
    println!("netpath-bench: cross-node, pod on node 1 → pod on node 2");
    let started = now_utc().0;
    let mut results = XnResults {
        started,
        finished: String::new(),
        command: opts.command.clone(),
        rounds: opts.rounds,
        seconds_per_figure: opts.secs,
        setups: BTreeMap::new(),
        samples: Vec::new(),
        notes: Vec::new(),
    };
    let mut built = Built(Vec::new());
    let mut endpoints: BTreeMap<XnKind, Result<Endpoints, String>> = BTreeMap::new();
    for kind in XnKind::ALL {
        ns::check_stop()?;
        let w = Wiring::new(names, kind);
        let t = Instant::now();
        let res = w.build();
        built.0.push(w.clone());
        let ep = match res {
            Ok(server_addr) => {
                println!(
                    "bench: built {} in {:.1} s",
                    kind.id(),
                    t.elapsed().as_secs_f64()
                );
                let ep = Endpoints {
                    client_ns: w.pods[0].clone(),
                    server_ns: w.pods[1].clone(),
                    server_addr,
                    forward: None,
                };
                load::probe(&ep, Duration::from_secs(2))
                    .map(|()| ep)
                    .map_err(|e| format!("unreachable: {e:#}"))
            }
            Err(e) => Err(format!("building the setup failed: {e:#}")),
        };
        if let Err(why) = &ep {
            println!("bench: {} cross-node: no numbers: {why}", kind.id());
        }
        results.setups.insert(
            kind,
            SetupRecord {
                description: w.describe(),
                build_error: ep.as_ref().err().cloned(),
            },
        );
        endpoints.insert(kind, ep);
    }
    for round in 0..opts.rounds {
        for (fi, &figure) in FIGURES.iter().enumerate() {
            let mut order = XnKind::ALL.to_vec();
            order.rotate_left((round + fi) % XnKind::ALL.len());
            for kind in order {
                ns::check_stop()?;
                let sample = measure(round, kind, figure, &endpoints[&kind], opts)?;
                progress(opts.rounds, &sample);
                results.samples.push(sample);
            }
        }
    }
    drop(built);
    results.finished = now_utc().0;
    Ok(results)
}

fn measure(
    round: usize,
    setup: XnKind,
    figure: Figure,
    ep: &Result<Endpoints, String>,
    opts: &XnOptions,
) -> Result<XnSample> {
    let mut sample = XnSample {
        round,
        setup,
        figure,
        values: Values::new(),
        error: None,
        unavailable: None,
        seconds: 0.0,
    };
    let ep = match ep {
        Ok(ep) => ep,
        Err(why) => {
            sample.unavailable = Some(why.clone());
            return Ok(sample);
        }
    };
    let ctx = MeasureCtx {
        secs: opts.secs,
        progs: Vec::new(),
        setup: None,
    };
    let t = Instant::now();
    let res = figure.measure(ep, &ctx);
    sample.seconds = t.elapsed().as_secs_f64();
    match res {
        Ok(values) => sample.values = values,
        Err(e) => {
            ns::check_stop()?;
            sample.error = Some(format!("{e:#}"));
        }
    }
    thread::sleep(opts.settle);
    Ok(sample)
}

fn progress(rounds: usize, s: &XnSample) {
    let head = format!(
        "[cross-node {}/{rounds}] {} {}",
        s.round + 1,
        s.figure.id(),
        s.setup.id()
    );
    if s.unavailable.is_some() {
        println!("{head}: n/a");
    } else if let Some(e) = &s.error {
        println!("{head}: ERROR {e}");
    } else {
        let m = s.figure.main_metric();
        let v = s.values.get(m.id).copied().unwrap_or(f64::NAN);
        println!(
            "{head}: {} {} {} ({:.1} s)",
            m.id,
            crate::record::num(v),
            m.unit,
            s.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(round: usize, setup: XnKind, v: f64) -> XnSample {
        XnSample {
            round,
            setup,
            figure: Figure::Crr,
            values: [("connections".to_owned(), v)].into(),
            error: None,
            unavailable: None,
            seconds: 1.0,
        }
    }

    #[test]
    fn netpath_is_compared_with_the_classic_setup_of_its_own_mode() {
        assert_eq!(XnKind::NetpathVxlan.classic_of(), XnKind::ClassicVxlan);
        assert_eq!(XnKind::NetpathDirect.classic_of(), XnKind::ClassicDirect);
        let r = XnResults {
            started: String::new(),
            finished: String::new(),
            command: String::new(),
            rounds: 2,
            seconds_per_figure: 1.0,
            setups: BTreeMap::new(),
            samples: vec![
                sample(0, XnKind::ClassicVxlan, 100.0),
                sample(0, XnKind::NetpathVxlan, 150.0),
                sample(1, XnKind::ClassicVxlan, 200.0),
                sample(1, XnKind::NetpathVxlan, 200.0),
            ],
            notes: Vec::new(),
        };
        let ratio = r
            .ratio(
                XnKind::NetpathVxlan,
                XnKind::ClassicVxlan,
                Figure::Crr,
                "connections",
            )
            .unwrap();
        assert_eq!((ratio.min, ratio.max, ratio.median), (1.0, 1.5, 1.25));
        assert!(
            r.spread(XnKind::NetpathDirect, Figure::Crr, "connections")
                .is_none()
        );
    }

    #[test]
    fn names_are_the_benchs_own_and_distinct() {
        let names = Names {
            prefix: "npb-4242".into(),
        };
        let mut all = Vec::new();
        for kind in XnKind::ALL {
            let w = Wiring::new(&names, kind);
            for ns in w.namespaces() {
                assert!(ns::check_ours(&ns).is_ok(), "{ns}");
                all.push(ns);
            }
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        let w = Wiring::new(&names, XnKind::NetpathVxlan);
        let c = w.netpath_config(1);
        c.validate().unwrap();
        assert_eq!(c.node.name, "npb-4242-xnv-n1");
        assert_eq!(c.pod_netns(&c.pods[0]), "npb-4242-xnv-n1-pod");
        assert_eq!(c.peers[0].name, "npb-4242-xnv-n2");
    }
}
