//! A fuzzer of the TC programs: millions of generated, mutated and random
//! frames through `np_from_pod` and `np_from_uplink` with
//! `BPF_PROG_TEST_RUN`, on maps seeded like a node, checking
//! - every frame against the oracle ([`oracle`]: verdicts, checksums,
//!   masquerade, targets);
//! - after every batch, the connection-table invariants ([`invariants`])
//!   and that the counters add up ([`counters`]).
//!
//! Modules, one concern each, so that a change of the datapath touches one:
//! [`rng`] (deterministic PRNG), [`seed`] (the node and its maps),
//! [`generate`] (generators and mutators), [`frame`] (tolerant frame reader,
//! checksums from scratch), [`oracle`], [`invariants`], [`counters`].
//!
//! The short run is `tests/tests/fuzz.rs` (inside `cargo xtask test`); the
//! long one `cargo xtask fuzz -- --frames 10000000 --seed N`
//! (`tests/src/bin/netpath-fuzz.rs`). Both need root.

pub mod counters;
pub mod frame;
pub mod generate;
pub mod invariants;
pub mod oracle;
pub mod rng;
pub mod seed;

use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use generate::{Case, Generator, Kind, Prog, Translated};
use oracle::Violation;
use seed::{Node, Setup};

use crate::packet::{
    SkbCtx, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, try_test_run, try_test_run_ctx,
};

/// Where a tolerated check is tolerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Wherever it breaks (map checks have no frame).
    Anywhere,
    /// Frames `np_from_pod` ran.
    FromPod,
    /// ICMP errors (type 3, 11, 12) `np_from_uplink` ran.
    IcmpErrorsFromUplink,
}

/// A check known to break on the current code: counted and reported, it
/// does not fail the run. Every tolerance names the bug, so that it is
/// removed when the bug is fixed.
#[derive(Clone, Debug)]
pub struct Tolerated {
    pub check: &'static str,
    pub scope: Scope,
    pub reason: &'static str,
}

/// One fuzzing run.
#[derive(Clone, Debug)]
pub struct Config {
    /// A name for the run (file names, summary).
    pub label: String,
    pub seed: u64,
    pub frames: u64,
    /// Frames between two map/counter checks.
    pub batch: u64,
    pub setup: Setup,
    /// Checks that do not fail this run (known bugs).
    pub tolerated: Vec<Tolerated>,
    /// Empty both tables (as a garbage collector would, pairs together)
    /// once they hold more than this many entries: a run meant to check
    /// the invariants without LRU eviction stays below the table size.
    /// `None`: never (eviction happens once the table is full).
    pub flush_above: Option<usize>,
    /// Examples kept per check.
    pub examples: usize,
    /// Where findings are saved.
    pub out_dir: PathBuf,
    /// Print a line per this many batches (0: never).
    pub progress_every: u64,
}

impl Config {
    pub fn new(label: &str, seed: u64, frames: u64, setup: Setup) -> Self {
        let flush_above = Some(setup.conntrack_max as usize / 2);
        Self {
            label: label.into(),
            seed,
            frames,
            batch: 10_000,
            setup,
            tolerated: Vec::new(),
            flush_above,
            examples: 5,
            out_dir: default_out_dir(),
            progress_every: 0,
        }
    }
}

/// `<target>/fuzz` (`CARGO_TARGET_DIR` when set).
pub fn default_out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(
            || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"),
            PathBuf::from,
        )
        .join("fuzz")
}

/// An example of a broken check.
#[derive(Clone, Debug)]
pub struct Example {
    pub batch: u64,
    /// Index of the frame in the run (map checks: the batch's last).
    pub frame_no: u64,
    pub detail: String,
    /// The frame, for per-frame checks.
    pub frame: Option<FrameRecord>,
}

#[derive(Clone, Debug)]
pub struct FrameRecord {
    pub prog: Prog,
    pub kind: Kind,
    pub mutated: bool,
    pub verdict: u32,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

/// All occurrences of one broken check.
#[derive(Clone, Debug)]
pub struct Finding {
    pub check: &'static str,
    pub count: u64,
    /// Why it is tolerated (a known bug), if it is.
    pub known: Option<&'static str>,
    pub examples: Vec<Example>,
}

/// What a run did and found.
#[derive(Debug, Default)]
pub struct Report {
    pub label: String,
    pub seed: u64,
    pub frames: u64,
    pub elapsed: Duration,
    /// Frames BPF_PROG_TEST_RUN refused (not run).
    pub rejected: u64,
    /// (program, verdict name) → frames.
    pub verdicts: BTreeMap<(Prog, &'static str), u64>,
    /// kind → [redirect, pass, drop].
    pub kinds: BTreeMap<Kind, [u64; 3]>,
    pub findings: BTreeMap<&'static str, Finding>,
    /// Final counter values.
    pub counters: counters::Counts,
    pub flushes: u64,
    pub max_conntrack: usize,
    pub max_revnat: usize,
    /// Where findings were saved, if any.
    pub saved: Option<PathBuf>,
    /// Whether the run had its own network namespace.
    pub own_netns: bool,
}

impl Report {
    /// Findings that fail the run.
    pub fn failures(&self) -> impl Iterator<Item = &Finding> {
        self.findings.values().filter(|f| f.known.is_none())
    }

    pub fn failed(&self) -> bool {
        self.failures().next().is_some()
    }

    pub fn frames_per_second(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The summary: frames, rate, verdicts, findings with an example each.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "fuzz {}: seed {} ({:#x}): {} frames in {:.1} s ({:.0} frames/s){}",
            self.label,
            self.seed,
            self.seed,
            self.frames,
            self.elapsed.as_secs_f64(),
            self.frames_per_second(),
            if self.own_netns {
                ""
            } else {
                " [in the caller's network namespace]"
            }
        );
        let _ = writeln!(
            s,
            "  tables: max {} connections, {} reverse entries; {} flushes; {} frames refused by \
             BPF_PROG_TEST_RUN",
            self.max_conntrack, self.max_revnat, self.flushes, self.rejected
        );
        let _ = write!(s, "  verdicts:");
        for ((prog, verdict), n) in &self.verdicts {
            let _ = write!(s, " {}/{verdict}={n}", prog.name());
        }
        let _ = writeln!(s);
        let _ = write!(s, "  by kind [redirect/pass/drop]:");
        for (kind, [r, p, d]) in &self.kinds {
            let _ = write!(s, " {kind:?}={r}/{p}/{d}");
        }
        let _ = writeln!(s);
        let _ = write!(s, "  counters:");
        for (name, (p, _)) in self.counters.iter().filter(|(_, (p, _))| *p > 0) {
            let _ = write!(s, " {name}={p}");
        }
        let _ = writeln!(s);
        if self.findings.is_empty() {
            let _ = writeln!(s, "  findings: none");
        }
        for f in self.findings.values() {
            let _ = writeln!(
                s,
                "  FINDING {}{}: {} occurrence(s)",
                f.check,
                f.known
                    .map(|r| format!(" (tolerated in this run, known bug: {r})"))
                    .unwrap_or_default(),
                f.count
            );
            for e in f.examples.iter().take(2) {
                let _ = writeln!(
                    s,
                    "    batch {} frame {}: {}",
                    e.batch, e.frame_no, e.detail
                );
                if let Some(r) = &e.frame {
                    let _ = writeln!(
                        s,
                        "      {} {:?}{} verdict {}\n      in:\n{}\n      out:\n{}",
                        r.prog.name(),
                        r.kind,
                        if r.mutated { " (mutated)" } else { "" },
                        verdict_name(r.verdict),
                        indent(&frame::hex(&r.input)),
                        indent(&frame::hex(&r.output))
                    );
                }
            }
        }
        if let Some(p) = &self.saved {
            let _ = writeln!(s, "  saved: {}", p.display());
        }
        s
    }
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("        {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn verdict_name(v: u32) -> &'static str {
    match v {
        TC_ACT_OK => "ok",
        TC_ACT_SHOT => "shot",
        TC_ACT_REDIRECT => "redirect",
        _ => "other",
    }
}

/// The run could not be carried out (not a finding).
#[derive(Debug, thiserror::Error)]
pub enum FuzzError {
    #[error(transparent)]
    Seed(#[from] seed::SeedError),
    #[error(transparent)]
    Tables(#[from] invariants::TablesError),
    #[error("cannot read the counters: {0}")]
    Counters(#[from] netpath::datapath::MapsError),
    #[error("cannot save the findings under {path}: {source}")]
    Save { path: PathBuf, source: io::Error },
    #[error("the fuzzing thread panicked")]
    Panicked,
}

/// Runs `cfg` in a thread of its own network namespace (the programs'
/// socket lookups then see no socket of the machine), or in the caller's
/// when a namespace cannot be made.
pub fn run(cfg: &Config) -> Result<Report, FuzzError> {
    let cfg = cfg.clone();
    std::thread::spawn(move || {
        let own_netns = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).is_ok();
        run_here(&cfg, own_netns)
    })
    .join()
    .map_err(|_| FuzzError::Panicked)?
}

/// A frame run through one program.
type Frame = (Prog, Vec<u8>);

struct Run<'a> {
    cfg: &'a Config,
    report: Report,
    seen: HashSet<String>,
    batch_frames: Vec<Frame>,
    save_batches: Vec<(u64, Vec<Frame>)>,
}

impl Run<'_> {
    /// Why `check` is tolerated on `frame`, if it is.
    fn tolerated(&self, check: &str, frame: Option<&FrameRecord>) -> Option<&'static str> {
        self.cfg
            .tolerated
            .iter()
            .find(|t| {
                t.check == check
                    && match (t.scope, frame) {
                        (Scope::Anywhere, _) => true,
                        (Scope::FromPod, Some(r)) => r.prog == Prog::FromPod,
                        (Scope::IcmpErrorsFromUplink, Some(r)) => {
                            r.prog == Prog::FromUplink && is_icmp_error(&r.input)
                        }
                        _ => false,
                    }
            })
            .map(|t| t.reason)
    }

    /// Records `v`; returns whether it fails the run.
    fn record(
        &mut self,
        v: Violation,
        batch: u64,
        frame_no: u64,
        frame: Option<FrameRecord>,
    ) -> bool {
        // Map checks see a broken entry again at every batch: count it once.
        if frame.is_none() && !self.seen.insert(format!("{}{}", v.check, v.detail)) {
            return false;
        }
        let known = self.tolerated(v.check, frame.as_ref());
        // One finding per check and tolerance: a tolerated occurrence does
        // not hide one that is not.
        let key = if known.is_some() {
            tolerated_key(v.check)
        } else {
            v.check
        };
        let f = self.report.findings.entry(key).or_insert(Finding {
            check: v.check,
            count: 0,
            known,
            examples: Vec::new(),
        });
        f.count += 1;
        if f.examples.len() < self.cfg.examples {
            f.examples.push(Example {
                batch,
                frame_no,
                detail: v.detail,
                frame,
            });
        }
        known.is_none()
    }
}

/// `frag-follow` for a redirected frame: a translated later fragment got
/// its datagram's recorded translation.
fn later_fragment_followed(
    tables: &invariants::Tables,
    prog: Prog,
    input: &[u8],
    output: &[u8],
) -> Option<Violation> {
    let (i, o) = (
        frame::Ipv4View::parse(input)?,
        frame::Ipv4View::parse(output)?,
    );
    if i.frags & 0x1fff == 0 {
        return None;
    }
    match prog {
        Prog::FromPod if o.src != i.src => {
            tables.check_followed(input, netpath_common::frag_dir::FROM_POD, o.src)
        }
        Prog::FromUplink => {
            tables.check_followed(input, netpath_common::frag_dir::FROM_UPLINK, o.dst)
        }
        _ => None,
    }
}

/// Whether `frame` is an IPv4 ICMP error (destination unreachable, time
/// exceeded, parameter problem).
fn is_icmp_error(frame: &[u8]) -> bool {
    frame::Ipv4View::parse(frame).is_some_and(|v| {
        let seg = v.segment(frame);
        v.proto == crate::packet::IPPROTO_ICMP
            && v.frags & 0x1fff == 0
            && !seg.is_empty()
            && matches!(seg[0], 3 | 11 | 12)
    })
}

/// The finding name of a tolerated check.
fn tolerated_key(check: &'static str) -> &'static str {
    // Leaked once per check name (a handful per process).
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<BTreeMap<&'static str, &'static str>>> = OnceLock::new();
    let mut keys = KEYS
        .get_or_init(Default::default)
        .lock()
        .expect("not poisoned");
    keys.entry(check)
        .or_insert_with(|| Box::leak(format!("{check} [tolerated]").into_boxed_str()))
}

fn run_here(cfg: &Config, own_netns: bool) -> Result<Report, FuzzError> {
    let node = Node::new(cfg.setup.clone());
    if own_netns {
        node.make_devices()?;
    }
    let mut dp = node.seed()?;
    let mut tables = invariants::Tables::open(&dp)?;
    let mut generator = Generator::new(cfg.seed, node.clone());
    let mut run = Run {
        cfg,
        report: Report {
            label: cfg.label.clone(),
            seed: cfg.seed,
            own_netns,
            ..Report::default()
        },
        seen: HashSet::new(),
        batch_frames: Vec::new(),
        save_batches: Vec::new(),
    };
    let mut out = Vec::with_capacity(2048);
    let start = Instant::now();
    let mut frame_no = 0u64;
    let mut batch = 0u64;
    while frame_no < cfg.frames {
        let before = counters::read(&mut dp)?;
        let mut ran = counters::Ran::default();
        run.batch_frames.clear();
        let n = cfg.batch.min(cfg.frames - frame_no);
        for _ in 0..n {
            let Case {
                prog,
                ingress,
                kind,
                mutated,
                frame,
            } = generator.next_case();
            let p = match prog {
                Prog::FromPod => dp.from_pod_program(),
                Prog::FromUplink => dp.from_uplink_program(),
            };
            let probe = match prog {
                Prog::FromPod => tables.probe(&frame),
                Prog::FromUplink => None,
            };
            let ran_ok = match prog {
                Prog::FromPod => try_test_run_ctx(p, &frame, SkbCtx::ingress(ingress), &mut out),
                Prog::FromUplink => try_test_run(p, &frame, &mut out),
            };
            let Ok(verdict) = ran_ok else {
                run.report.rejected += 1;
                continue;
            };
            frame_no += 1;
            ran.add(verdict, frame.len());
            *run.report
                .verdicts
                .entry((prog, verdict_name(verdict)))
                .or_default() += 1;
            let slot = match verdict {
                TC_ACT_REDIRECT => 0,
                TC_ACT_OK => 1,
                _ => 2,
            };
            run.report.kinds.entry(kind).or_default()[slot] += 1;

            let j = oracle::judge(&node, prog, ingress, &frame, verdict, &out);
            let mut vs = j.violations;
            if verdict == TC_ACT_REDIRECT
                && let Some(v) = later_fragment_followed(&tables, prog, &frame, &out)
            {
                vs.push(v);
            }
            if let Some(d) = &j.delivered
                && let Some(v) = tables.check_delivered(d)
            {
                vs.push(v);
            }
            if verdict == TC_ACT_SHOT
                && let Some(v) = probe.as_ref().and_then(|p| tables.check_dropped(p))
            {
                vs.push(v);
            }
            if let Some(t) = j.translated {
                generator.learn(t);
            }
            for v in vs {
                let rec = FrameRecord {
                    prog,
                    kind,
                    mutated,
                    verdict,
                    input: frame.clone(),
                    output: out.clone(),
                };
                run.record(v, batch, frame_no - 1, Some(rec));
            }
            run.batch_frames.push((prog, frame));
        }

        // After the batch: counters, then the tables.
        let after = counters::read(&mut dp)?;
        let mut broken = false;
        for v in counters::check(&before, &after, &ran) {
            broken |= run.record(v, batch, frame_no.saturating_sub(1), None);
        }
        let snap = tables.dump()?;
        run.report.max_conntrack = run.report.max_conntrack.max(snap.conntrack.len());
        run.report.max_revnat = run.report.max_revnat.max(snap.revnat.len());
        for v in invariants::check(&node, &snap) {
            broken |= run.record(v, batch, frame_no.saturating_sub(1), None);
        }
        if broken && run.save_batches.len() < 3 {
            run.save_batches
                .push((batch, std::mem::take(&mut run.batch_frames)));
        }
        // Replies to older flows too, not only to the latest ones.
        for (i, (k, e)) in snap.conntrack.iter().enumerate() {
            if i % 16 == 0 {
                generator.learn(Translated {
                    proto: k.proto,
                    nat: (e.nat_addr.into(), e.nat_port),
                    peer: (
                        k.daddr.into(),
                        if k.proto == crate::packet::IPPROTO_ICMP {
                            0
                        } else {
                            k.dport
                        },
                    ),
                    left: None,
                });
            }
        }
        if let Some(limit) = cfg.flush_above
            && snap.conntrack.len().max(snap.revnat.len()) > limit
        {
            tables.flush(&snap);
            run.report.flushes += 1;
        }
        batch += 1;
        if cfg.progress_every > 0 && batch.is_multiple_of(cfg.progress_every) {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "fuzz {}: {frame_no} frames, {:.0}/s, {} connections, findings: {}",
                cfg.label,
                frame_no as f64 / secs,
                snap.conntrack.len(),
                run.report
                    .findings
                    .values()
                    .map(|f| format!("{}={}", f.check, f.count))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            let _ = io::stdout().flush();
        }
    }
    run.report.elapsed = start.elapsed();
    run.report.frames = frame_no;
    run.report.counters = counters::read(&mut dp)?;
    if !run.report.findings.is_empty() {
        run.report.saved = Some(save(&run)?);
    }
    Ok(run.report)
}

/// Saves the findings: `<label>-<seed>.txt` (every example, hex) and
/// `<label>-<seed>.pcap` (the example frames as they went in, then the
/// whole batches in which a map or counter check broke), for replay and
/// Wireshark.
fn save(run: &Run<'_>) -> Result<PathBuf, FuzzError> {
    let dir = &run.cfg.out_dir;
    let err = |path: &Path| {
        let path = path.to_owned();
        move |source| FuzzError::Save { path, source }
    };
    fs::create_dir_all(dir).map_err(err(dir))?;
    let base = dir.join(format!("{}-{}", run.cfg.label, run.cfg.seed));
    let txt = base.with_extension("txt");
    let mut s = run.report.summary();
    let mut pcap = Pcap::new();
    for f in run.report.findings.values() {
        let _ = writeln!(s, "\n== {} ({} occurrences)", f.check, f.count);
        for e in &f.examples {
            let _ = writeln!(s, "batch {} frame {}: {}", e.batch, e.frame_no, e.detail);
            if let Some(r) = &e.frame {
                let _ = writeln!(
                    s,
                    "{} {:?}{} verdict {}\nin:\n{}\nout:\n{}",
                    r.prog.name(),
                    r.kind,
                    if r.mutated { " (mutated)" } else { "" },
                    verdict_name(r.verdict),
                    frame::hex(&r.input),
                    frame::hex(&r.output)
                );
                pcap.add(&r.input);
            }
        }
    }
    for (batch, frames) in &run.save_batches {
        let _ = writeln!(
            s,
            "\n== batch {batch}: its {} frames follow the examples in the pcap",
            frames.len()
        );
        for (_, f) in frames {
            pcap.add(f);
        }
    }
    fs::write(&txt, s).map_err(err(&txt))?;
    let p = base.with_extension("pcap");
    fs::write(&p, pcap.0).map_err(err(&p))?;
    Ok(txt)
}

/// A minimal pcap (Ethernet) writer.
struct Pcap(Vec<u8>);

impl Pcap {
    fn new() -> Self {
        let mut b = Vec::new();
        b.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&4u16.to_le_bytes());
        b.extend_from_slice(&0i32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&65_535u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        Self(b)
    }

    fn add(&mut self, frame: &[u8]) {
        let n = self.0.len() as u32;
        self.0.extend_from_slice(&n.to_le_bytes()); // ts: a running number
        self.0.extend_from_slice(&0u32.to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0
            .extend_from_slice(&(frame.len() as u32).to_le_bytes());
        self.0.extend_from_slice(frame);
    }
}

/// Bugs of the current programs that the fuzzer found, tolerated (counted
/// and reported, not failing) until they are fixed. Remove an entry when
/// its fix lands; `netpath-fuzz --strict` ignores this list.
///
/// Fixed and enforced since (entries removed): `martian` (martian
/// destinations from pods dropped or passed to the node, martian sources on
/// the uplink never delivered), `padding` and `l4-checksum` on ICMP errors
/// (no L4 field read or written beyond the IP total length),
/// `dropped-but-tracked` (a truncated L4 header is refused by the parser,
/// before NAT), `uplink-target` (an ICMP error is translated only when
/// addressed to the NAT address its quote names). What remains tolerated
/// is the forward/reverse pairing in [`preset`] (issue 8 item 1, nat.rs).
pub fn known_bugs() -> Vec<Tolerated> {
    Vec::new()
}

/// The node configurations, by name: `default` (tables with room: every
/// invariant holds), `tiny-ports` (4 NAT ports: exhaustion),
/// `zero-timeouts` (every connection stale at its next packet),
/// `lru-eviction` (128-entry tables: eviction all the time). Known bugs
/// ([`known_bugs`], and the pairing checks under eviction) are tolerated.
pub fn preset(name: &str, seed: u64, frames: u64) -> Option<Config> {
    let mut cfg = match name {
        "default" => Config::new(name, seed, frames, Setup::default()),
        "tiny-ports" => Config::new(
            name,
            seed,
            frames,
            Setup {
                port_min: 40_000,
                port_max: 40_003,
                ..Setup::default()
            },
        ),
        "zero-timeouts" => Config::new(
            name,
            seed,
            frames,
            Setup {
                zero_timeouts: true,
                port_min: 40_000,
                port_max: 40_063,
                ..Setup::default()
            },
        ),
        "lru-eviction" => {
            let mut cfg = Config::new(
                name,
                seed,
                frames,
                Setup {
                    conntrack_max: 128,
                    ..Setup::default()
                },
            );
            cfg.flush_above = None;
            cfg.batch = 1_000;
            cfg
        }
        _ => return None,
    };
    cfg.tolerated.extend(known_bugs());
    Some(cfg)
}

/// Every preset's name.
pub const PRESETS: [&str; 4] = ["default", "tiny-ports", "zero-timeouts", "lru-eviction"];
