//! The run: build every setup, then for each condition prepare the setups,
//! probe every scenario, and measure round after round, each figure on the
//! setups in turn (round-robin, the order rotating), so that slow drifts of
//! the machine hit every setup alike.

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use crate::{
    condition::{Condition, thousands},
    figures::{Figure, MeasureCtx},
    load::{self, flows},
    machine,
    metrics::memory,
    ns::{self, Cleanup, Names},
    report::{ConditionPrep, ConditionRecord, Results, RunParams, Sample, SetupRecord, now_utc},
    topology::{
        Endpoints, Scenario, Setup, SetupKind, classic::Classic, limit::Limit, netpath::Netpath,
    },
};

/// A part of the benchmark that `--only` selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Group {
    /// Every figure at baseline, but the prefilter's.
    Baseline,
    /// The routing condition.
    Routes,
    /// The idle conntrack conditions.
    Conntrack,
    /// The denied-source flood (at baseline).
    Prefilter,
    /// N services in kube-proxy's iptables and nftables modes and netpath
    /// ([`crate::service_scale`]).
    ServiceScale,
    /// Program time per packet against routes, services and connection
    /// entries ([`crate::curves`]).
    Curves,
    /// Pod → pod across two nodes, direct and VXLAN, classic and netpath
    /// ([`crate::cross_node`]).
    CrossNode,
}

impl Group {
    pub const ALL: [Group; 7] = [
        Group::Baseline,
        Group::Routes,
        Group::Conntrack,
        Group::Prefilter,
        Group::ServiceScale,
        Group::Curves,
        Group::CrossNode,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Group::Baseline => "baseline",
            Group::Routes => "routes",
            Group::Conntrack => "conntrack",
            Group::Prefilter => "prefilter",
            Group::ServiceScale => "service-scale",
            Group::Curves => "curves",
            Group::CrossNode => "cross-node",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The groups to run (default: all).
    pub groups: Vec<Group>,
    /// Service counts of the service-scale group.
    pub services: Vec<usize>,
    /// Rounds of the service-scale group (its install and change are
    /// measured once per service count).
    pub scale_rounds: usize,
    /// Seconds per figure and node of the service-scale group.
    pub scale_secs: f64,
    /// The points of the cost-growth curves.
    pub curves: crate::curves::CurveOptions,
    pub smoke: bool,
    pub rounds: usize,
    /// Seconds per figure and setup (iperf3 rounds to whole seconds).
    pub secs: f64,
    /// Routes of the routing scaling condition (0: skip it).
    pub routes: usize,
    /// Idle conntrack entries of the conntrack scaling conditions, in order.
    pub conntrack: Vec<u64>,
    /// Only these setups (default: all three).
    pub setups: Vec<SetupKind>,
    /// Only these figures (default: all).
    pub figures: Option<Vec<Figure>>,
    /// Where the JSON and the PNG go.
    pub results_dir: PathBuf,
    /// The markdown page to (re)write, if any.
    pub docs: Option<PathBuf>,
    /// The command line to quote in the report.
    pub command: String,
}

/// The workspace root (the bench crate's parent directory).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

impl Options {
    /// The full benchmark: 3 rounds of 2 s per figure; the conditions with
    /// 1,000 routes and 1,000 / 100,000 conntrack entries (about 10 minutes
    /// on 2 cores); 1, 1,000, 10,000 and 30,000 services (most of an hour:
    /// iptables-nft takes minutes to load 30,000 services, and as long to
    /// rewrite them for a change).
    pub fn full() -> Self {
        let root = workspace_root();
        Self {
            groups: Group::ALL.to_vec(),
            services: vec![1, 1000, 10_000, 30_000],
            scale_rounds: 3,
            scale_secs: 2.0,
            curves: crate::curves::CurveOptions::full(),
            smoke: false,
            rounds: 3,
            secs: 2.0,
            routes: 1000,
            conntrack: vec![1000, 100_000],
            setups: SetupKind::ALL.to_vec(),
            figures: None,
            results_dir: root.join("bench").join("results"),
            docs: Some(root.join("docs").join("benchmarks.md")),
            command: "cargo xtask bench".into(),
        }
    }

    /// Every figure once, briefly, small scale (the scaling conditions
    /// with the connection-rate figure only; 1 and 100 services); results
    /// in a temporary directory, no markdown. Under a minute. Without the
    /// cross-node group, which adds 11 s (four setups of two nodes; the
    /// smoke is at about 50 s already): `--smoke --only cross-node` runs
    /// it alone, briefly.
    pub fn smoke() -> Self {
        Self {
            groups: Group::ALL
                .into_iter()
                .filter(|g| *g != Group::CrossNode)
                .collect(),
            services: vec![1, 100],
            scale_rounds: 1,
            scale_secs: 0.2,
            curves: crate::curves::CurveOptions::smoke(),
            smoke: true,
            rounds: 1,
            secs: 0.3,
            routes: 1000,
            conntrack: vec![1000],
            setups: SetupKind::ALL.to_vec(),
            figures: None,
            results_dir: std::env::temp_dir()
                .join(format!("netpath-bench-smoke-{}", std::process::id())),
            docs: None,
            command: "netpath-bench --smoke".into(),
        }
    }

    fn has(&self, g: Group) -> bool {
        self.groups.contains(&g)
    }

    pub fn conditions(&self) -> Vec<Condition> {
        let mut c = Vec::new();
        if self.has(Group::Baseline) || self.has(Group::Prefilter) {
            c.push(Condition::Baseline);
        }
        if self.has(Group::Routes) && self.routes > 0 {
            c.push(Condition::Routes(self.routes));
        }
        if self.has(Group::Conntrack) {
            c.extend(self.conntrack.iter().map(|&n| Condition::Conntrack(n)));
        }
        c
    }

    /// Whether figure `f` runs under `condition`: chosen with `--figures`
    /// (default: all), its group selected, and in smoke mode only the
    /// connection rate under the scaling conditions.
    fn wants(&self, f: Figure, condition: Condition) -> bool {
        let group = match (condition, f) {
            (Condition::Baseline, Figure::Prefilter) => self.has(Group::Prefilter),
            (Condition::Baseline, _) => self.has(Group::Baseline),
            _ => !self.smoke || f == Figure::Crr,
        };
        group && self.figures.as_ref().is_none_or(|fs| fs.contains(&f))
    }

    /// Whether figure `f` runs in `scenario`: where it applies; in smoke
    /// mode the 4-stream TCP and 1 KiB request/response figures only at pod
    /// → LAN (their loads are the 1-stream and 1 B ones', and iperf3 runs
    /// at least a second).
    pub fn in_scenario(&self, f: Figure, scenario: Scenario) -> bool {
        f.applies_in(scenario)
            && (!self.smoke
                || !matches!(f, Figure::Tcp4 | Figure::Rr1k)
                || scenario == Scenario::PodToLan)
    }

    /// The cross-node group's options: the run's rounds and seconds.
    pub fn cross_node(&self) -> crate::cross_node::XnOptions {
        crate::cross_node::XnOptions {
            rounds: self.rounds,
            secs: self.secs,
            settle: Duration::from_millis(if self.smoke { 10 } else { 50 }),
            command: self.command.clone(),
        }
    }

    /// The service-scale group's options.
    pub fn scale(&self) -> crate::service_scale::ScaleOptions {
        crate::service_scale::ScaleOptions {
            services: self.services.clone(),
            rounds: self.scale_rounds,
            secs: self.scale_secs,
            command: self.command.clone(),
        }
    }
}

/// The setups of a run; torn down when dropped (errors, panics, Ctrl-C).
struct Setups(Vec<Box<dyn Setup>>);

impl Drop for Setups {
    fn drop(&mut self) {
        for s in self.0.iter_mut().rev() {
            s.teardown();
        }
    }
}

/// Probe timeout: a reachable endpoint answers in microseconds.
const PROBE: Duration = Duration::from_secs(2);

/// Runs the benchmark and returns every sample and the summary.
pub fn run(opts: &Options) -> Result<Results> {
    if opts.rounds == 0
        || opts.secs.is_nan()
        || opts.secs <= 0.0
        || opts.scale_rounds == 0
        || opts.scale_secs.is_nan()
        || opts.scale_secs <= 0.0
    {
        bail!("rounds and seconds must be positive");
    }
    if opts.routes > crate::topology::MAX_SCALE_ROUTES {
        bail!(
            "at most {} routes (the /24s of 172.16.0.0/12)",
            crate::topology::MAX_SCALE_ROUTES
        );
    }
    let swept = ns::sweep_stale();
    for s in &swept {
        println!("bench: removed a leftover of an earlier run: {s}");
    }
    let names = Names::for_this_process();
    let _cleanup = Cleanup::new(names.clone());
    let (started, id) = now_utc();
    let mut results = Results {
        schema: crate::report::SCHEMA,
        id,
        started,
        finished: String::new(),
        command: opts.command.clone(),
        params: RunParams {
            smoke: opts.smoke,
            rounds: opts.rounds,
            seconds_per_figure: opts.secs,
            routes: opts.routes,
            conntrack: opts.conntrack.clone(),
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            }
            .into(),
        },
        machine: machine::info(),
        setups: BTreeMap::new(),
        conditions: Vec::new(),
        memory: Default::default(),
        samples: Vec::new(),
        summary: Vec::new(),
        service_scale: None,
        curves: None,
        cross_node: None,
        notes: swept
            .iter()
            .map(|s| format!("removed a leftover of an earlier run: {s}"))
            .collect(),
    };

    let conditions = opts.conditions();
    let mut all: Vec<Box<dyn Setup>> = Vec::new();
    for kind in SetupKind::ALL {
        if opts.setups.contains(&kind) && !conditions.is_empty() {
            all.push(match kind {
                SetupKind::Limit => Box::new(Limit::new(&names)),
                SetupKind::Classic => Box::new(Classic::new(&names)),
                SetupKind::Netpath | SetupKind::NetpathXdp => Box::new(Netpath::new(&names, kind)),
            });
        }
    }
    let mut setups = Setups(all);
    let mut broken: HashMap<SetupKind, String> = HashMap::new();
    for s in &mut setups.0 {
        ns::check_stop()?;
        let kind = s.kind();
        let t = Instant::now();
        let res = s.build();
        let build_error = res.err().map(|e| format!("{e:#}"));
        match &build_error {
            None => println!(
                "bench: built {} in {:.1} s",
                kind.id(),
                t.elapsed().as_secs_f64()
            ),
            Some(e) => {
                eprintln!("bench: building {} failed: {e}", kind.id());
                broken.insert(kind, format!("building the setup failed: {e}"));
                s.teardown();
            }
        }
        results.setups.insert(
            kind,
            SetupRecord {
                description: s.describe(),
                build_error,
            },
        );
    }
    if let Some(np) = setups
        .0
        .iter()
        .find(|s| s.kind() == SetupKind::Netpath && !broken.contains_key(&s.kind()))
    {
        results.memory = memory::collect(&np.bpf_pins().maps);
    } else if !conditions.is_empty() {
        results.memory = memory::collect(&[] as &[PathBuf]);
    }

    // Reachability, once: a scenario that fails here stays unavailable.
    let mut reach: HashMap<(SetupKind, Scenario), Result<Endpoints, String>> = HashMap::new();
    for s in &setups.0 {
        for scenario in Scenario::ALL {
            let kind = s.kind();
            let r = match broken.get(&kind) {
                Some(why) => Err(why.clone()),
                None => s.endpoints(scenario).and_then(|ep| {
                    load::probe(&ep, PROBE)
                        .map(|()| ep)
                        .map_err(|e| unreachable(kind, scenario, &format!("{e:#}")))
                }),
            };
            if let Err(why) = &r {
                println!("bench: {} {}: no numbers: {why}", kind.id(), scenario.id());
            }
            reach.insert((kind, scenario), r);
        }
    }

    let mut flows_opened: HashMap<SetupKind, u64> = HashMap::new();
    for condition in conditions {
        ns::check_stop()?;
        let figures: Vec<Figure> = crate::figures::for_condition(condition)
            .iter()
            .copied()
            .filter(|f| opts.wants(*f, condition))
            .collect();
        let mut record = ConditionRecord {
            id: condition.id(),
            title: condition.title(),
            condition,
            figures: figures.clone(),
            setups: BTreeMap::new(),
        };
        println!("bench: condition {}", record.title);
        for s in &mut setups.0 {
            let kind = s.kind();
            let prep = match (broken.get(&kind), s.applies(condition)) {
                (_, Err(why)) => ConditionPrep {
                    skipped: Some(why),
                    ..Default::default()
                },
                (Some(why), _) => ConditionPrep {
                    unavailable: Some(why.clone()),
                    ..Default::default()
                },
                (None, Ok(())) => prepare(condition, s.as_mut(), &reach, &mut flows_opened),
            };
            if let Some(why) = prep.skipped.as_ref().or(prep.unavailable.as_ref()) {
                println!("bench:   {}: sits this one out: {why}", kind.id());
            }
            record.setups.insert(kind, prep);
        }
        // Re-probe what worked (a condition must not break a datapath).
        let mut avail: HashMap<(SetupKind, Scenario), Result<Endpoints, String>> = HashMap::new();
        for s in &setups.0 {
            let kind = s.kind();
            let prep = record.setups.get_mut(&kind).expect("recorded above");
            for scenario in Scenario::ALL {
                let r = if let Some(why) = &prep.unavailable {
                    Err(why.clone())
                } else {
                    match &reach[&(kind, scenario)] {
                        Err(why) => Err(why.clone()),
                        Ok(ep) => load::probe(ep, PROBE).map(|()| ep.clone()).map_err(|e| {
                            format!(
                                "unreachable under this condition: {}",
                                unreachable(kind, scenario, &format!("{e:#}"))
                            )
                        }),
                    }
                };
                if let Err(why) = &r {
                    prep.scenarios_unavailable.insert(scenario, why.clone());
                }
                avail.insert((kind, scenario), r);
            }
        }

        let kinds: Vec<SetupKind> = setups
            .0
            .iter()
            .map(|s| s.kind())
            .filter(|k| record.setups[k].skipped.is_none())
            .collect();
        for round in 0..opts.rounds {
            for scenario in Scenario::ALL {
                for (fi, &figure) in figures.iter().enumerate() {
                    let mut order = kinds.clone();
                    let len = order.len().max(1);
                    order.rotate_left((round + fi) % len);
                    for kind in order {
                        ns::check_stop()?;
                        if figure.applies_to(kind).is_err() || !opts.in_scenario(figure, scenario) {
                            continue;
                        }
                        let s = setups
                            .0
                            .iter()
                            .find(|s| s.kind() == kind)
                            .expect("kind from setups");
                        let sample = measure(
                            &record.id,
                            round,
                            scenario,
                            figure,
                            s.as_ref(),
                            &avail[&(kind, scenario)],
                            opts,
                        )?;
                        progress(&record.id, opts.rounds, &sample);
                        results.samples.push(sample);
                    }
                }
            }
        }

        if let Condition::Routes(_) = condition {
            for s in &mut setups.0 {
                if let Err(e) = s.remove_routes() {
                    results
                        .notes
                        .push(format!("{}: removing the routes: {e:#}", s.kind().id()));
                }
            }
        }
        results.conditions.push(record);
    }

    drop(setups);
    if opts.has(Group::ServiceScale) && !opts.services.is_empty() {
        let scale = crate::service_scale::run(&opts.scale(), &names)?;
        results.notes.extend(scale.notes.iter().cloned());
        results.service_scale = Some(scale);
    }
    if opts.has(Group::CrossNode) {
        let xn = crate::cross_node::run(&opts.cross_node(), &names)?;
        results.notes.extend(xn.notes.iter().cloned());
        results.cross_node = Some(xn);
    }
    if opts.has(Group::Curves) {
        println!("netpath-bench: cost-growth curves (BPF_PROG_TEST_RUN of np_from_pod)");
        let curves = crate::curves::run(&opts.curves)?;
        results.notes.extend(curves.notes.iter().cloned());
        results.curves = Some(curves);
    }
    results.finished = now_utc().0;
    results.summarize();
    Ok(results)
}

/// Why a scenario has no numbers when its probe fails.
fn unreachable(kind: SetupKind, scenario: Scenario, err: &str) -> String {
    if matches!(kind, SetupKind::Netpath | SetupKind::NetpathXdp) && scenario == Scenario::PodToLan
    {
        format!(
            "{} (a TCP connect from pod red to the LAN host failed: {err})",
            crate::topology::netpath::NO_SNAT
        )
    } else {
        format!("unreachable: {err}")
    }
}

/// Puts one setup in the state a condition asks for.
fn prepare(
    condition: Condition,
    s: &mut dyn Setup,
    reach: &HashMap<(SetupKind, Scenario), Result<Endpoints, String>>,
    flows_opened: &mut HashMap<SetupKind, u64>,
) -> ConditionPrep {
    let kind = s.kind();
    let mut prep = ConditionPrep::default();
    match condition {
        Condition::Baseline => {}
        Condition::Routes(n) => match s.add_routes(n) {
            Ok(how) => {
                prep.routes = Some(n);
                prep.routes_installed = Some(how);
            }
            Err(why) => prep.unavailable = Some(why),
        },
        Condition::Conntrack(n) => {
            if let Err(why) = s.prepare_conntrack() {
                prep.unavailable = Some(why);
                return prep;
            }
            // The entries come from flows through the SNAT.
            let ep = match &reach[&(kind, Scenario::PodToLan)] {
                Ok(ep) => ep.clone(),
                Err(why) => {
                    prep.unavailable = Some(format!(
                        "idle conntrack entries are real flows through the SNAT, and pod → LAN \
                         has none: {why}"
                    ));
                    return prep;
                }
            };
            match fill_conntrack(s, &ep, n, flows_opened.entry(kind).or_default()) {
                Ok(count) => prep.conntrack_entries = Some(count),
                Err(why) => prep.unavailable = Some(why),
            }
        }
    }
    prep
}

/// Opens idle flows until `n` were opened in this setup (the earlier
/// conditions' flows count), topping up while the table holds fewer than
/// `n` entries (a datagram lost on the way); returns the table's count,
/// which includes whatever else it tracks (e.g. TIME_WAIT entries of the
/// connection-rate figure).
fn fill_conntrack(s: &dyn Setup, ep: &Endpoints, n: u64, opened: &mut u64) -> Result<u64, String> {
    let t = Instant::now();
    let mut want = n.saturating_sub(*opened);
    let mut count = 0;
    for _ in 0..3 {
        if want > 0 {
            flows::open(ep, want).map_err(|e| format!("opening idle flows: {e:#}"))?;
            *opened += want;
            thread::sleep(Duration::from_millis(300));
        }
        count = s.conntrack_count()?;
        want = n.saturating_sub(count);
        if want == 0 {
            break;
        }
    }
    println!(
        "bench:   {}: {} conntrack entries ({} idle flows opened, {:.1} s)",
        s.kind().id(),
        thousands(count),
        thousands(*opened),
        t.elapsed().as_secs_f64()
    );
    if count < n * 9 / 10 {
        return Err(format!(
            "{} idle UDP flows through the node left only {} entries in its conntrack table",
            thousands(*opened),
            thousands(count)
        ));
    }
    Ok(count)
}

fn measure(
    condition: &str,
    round: usize,
    scenario: Scenario,
    figure: Figure,
    s: &dyn Setup,
    ep: &Result<Endpoints, String>,
    opts: &Options,
) -> Result<Sample> {
    let mut sample = Sample {
        round,
        condition: condition.to_owned(),
        scenario,
        figure,
        setup: s.kind(),
        values: Default::default(),
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
        progs: s.bpf_pins().progs,
        setup: Some(s),
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
    // Let sockets and queues settle between measurements.
    thread::sleep(Duration::from_millis(if opts.smoke { 10 } else { 50 }));
    Ok(sample)
}

fn progress(condition: &str, rounds: usize, s: &Sample) {
    let head = format!(
        "[{condition} {}/{rounds}] {} {} {}",
        s.round + 1,
        s.scenario.id(),
        s.figure.id(),
        s.setup.id()
    );
    if s.unavailable.is_some() {
        // The reason was printed once, when the scenario or condition lost it.
        println!("{head}: n/a");
    } else if let Some(e) = &s.error {
        println!("{head}: ERROR {e}");
    } else {
        let m = s.figure.main_metric();
        let v = s.values.get(m.id).copied().unwrap_or(f64::NAN);
        println!(
            "{head}: {} {} {} ({:.1} s)",
            m.id,
            crate::report::markdown::num(v),
            m.unit,
            s.seconds
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_groups() {
        let mut o = Options::full();
        assert_eq!(
            o.conditions(),
            [
                Condition::Baseline,
                Condition::Routes(1000),
                Condition::Conntrack(1000),
                Condition::Conntrack(100_000)
            ]
        );
        assert!(
            o.has(Group::CrossNode),
            "the full run has the cross-node group"
        );
        o.groups = vec![Group::ServiceScale];
        assert!(
            o.conditions().is_empty(),
            "service scale alone builds no setup"
        );
        o.groups = vec![Group::CrossNode];
        assert!(
            o.conditions().is_empty(),
            "cross-node alone builds none of the single-node setups"
        );
        o.groups = vec![Group::Prefilter];
        assert_eq!(o.conditions(), [Condition::Baseline]);
        assert!(o.wants(Figure::Prefilter, Condition::Baseline));
        assert!(!o.wants(Figure::Crr, Condition::Baseline));
        o.groups = vec![Group::Baseline, Group::Routes];
        assert_eq!(
            o.conditions(),
            [Condition::Baseline, Condition::Routes(1000)]
        );
        assert!(!o.wants(Figure::Prefilter, Condition::Baseline));
        assert!(o.wants(Figure::Tcp4, Condition::Baseline));
        assert!(o.wants(Figure::Udp64, Condition::Routes(1000)));
        // Smoke: the scaling conditions with the connection rate only, the
        // 4-stream and 1 KiB figures at pod → LAN only.
        let s = Options::smoke();
        assert!(!s.has(Group::CrossNode), "the smoke stays under a minute");
        assert!(s.wants(Figure::Crr, Condition::Conntrack(1000)));
        assert!(!s.wants(Figure::Udp64, Condition::Conntrack(1000)));
        assert!(s.in_scenario(Figure::Tcp4, Scenario::PodToLan));
        assert!(!s.in_scenario(Figure::Tcp4, Scenario::PodToPod));
        assert!(o.in_scenario(Figure::Tcp4, Scenario::PodToPod));
        assert_eq!(s.services, [1, 100]);
    }
}
