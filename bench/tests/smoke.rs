//! The bench's smoke mode end to end (real namespaces, real traffic, the
//! real datapaths; needs root, as every test of `cargo xtask test`): every
//! figure must produce its numbers for every setup that supports it, so the
//! harness cannot rot unnoticed. About 30 s.

use std::time::Instant;

use netpath::sys::netns::Netns;
use netpath_bench::{
    Options,
    condition::Condition,
    run_and_write,
    topology::{Scenario, SetupKind},
};

#[test]
fn smoke_run_measures_every_figure() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the bench needs root (run the tests with `cargo xtask test`)"
    );
    let dir = std::env::temp_dir().join(format!("netpath-bench-test-{}", std::process::id()));
    let opts = Options {
        results_dir: dir.clone(),
        ..Options::smoke()
    };
    let t = Instant::now();
    let (r, written) = run_and_write(&opts).expect("the smoke run");
    println!("smoke run: {:.1} s", t.elapsed().as_secs_f64());

    for (kind, s) in &r.setups {
        assert!(s.build_error.is_none(), "{kind:?}: {:?}", s.build_error);
    }
    assert!(!r.conditions.is_empty());
    let mut numbers = 0;
    for cond in &r.conditions {
        for &figure in &cond.figures {
            for scenario in Scenario::ALL {
                for kind in SetupKind::ALL {
                    if figure.applies_to(kind).is_err() || !figure.applies_in(scenario) {
                        continue;
                    }
                    let what = format!(
                        "{} / {} / {} / {}",
                        cond.id,
                        scenario.id(),
                        figure.id(),
                        kind.id()
                    );
                    let prep = &cond.setups[&kind];
                    if let Some(why) = &prep.skipped {
                        assert!(
                            matches!(kind, SetupKind::Limit | SetupKind::NetpathTc)
                                && cond.condition != Condition::Baseline,
                            "{what}: skipped: {why}"
                        );
                        continue;
                    }
                    let samples: Vec<_> = r
                        .samples
                        .iter()
                        .filter(|s| {
                            s.condition == cond.id
                                && s.scenario == scenario
                                && s.figure == figure
                                && s.setup == kind
                        })
                        .collect();
                    assert_eq!(samples.len(), opts.rounds, "{what}: samples");
                    for s in samples {
                        if let Some(why) = &s.unavailable {
                            // Only netpath may lack numbers, only for want of
                            // SNAT (pod → LAN, and the conntrack entries that
                            // come from flows through it).
                            // The TC-only instance is measured where XDP
                            // could matter: not pod → pod.
                            assert!(
                                (kind == SetupKind::Netpath && why.contains("SNAT"))
                                    || (kind == SetupKind::NetpathTc
                                        && scenario == Scenario::PodToPod),
                                "{what}: unavailable: {why}"
                            );
                            continue;
                        }
                        assert!(s.error.is_none(), "{what}: error: {:?}", s.error);
                        for m in figure.metrics() {
                            let v = s.values.get(m.id);
                            assert!(
                                v.is_some_and(|v| v.is_finite()),
                                "{what}: metric {} is {v:?}",
                                m.id
                            );
                        }
                        numbers += 1;
                    }
                }
            }
        }
    }
    // netpath's pod → pod path exists today: it must have every baseline
    // figure (the loop above accepts "SNAT" only as a reason).
    let np_pod = r
        .samples
        .iter()
        .filter(|s| {
            s.condition == "baseline"
                && s.scenario == Scenario::PodToPod
                && s.setup == SetupKind::Netpath
                && !s.values.is_empty()
        })
        .count();
    assert_eq!(np_pod, 7, "netpath pod → pod baseline figures");
    assert!(numbers > 40, "{numbers} samples with numbers");

    // The summary has ratios where both sides have numbers.
    let row = r
        .summary
        .iter()
        .find(|x| {
            x.condition == "baseline"
                && x.scenario == Scenario::PodToPod
                && x.metric == "throughput"
        })
        .expect("a throughput row");
    assert!(row.netpath_vs_classic.is_some() && row.netpath_vs_limit.is_some());

    // Memory: netpath's maps and the conntrack figures.
    assert!(!r.memory.netpath_maps.is_empty(), "{:?}", r.memory.errors);
    assert!(r.memory.netpath_ct_bytes_per_entry.is_some());

    // The files.
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&written.json).unwrap()).unwrap();
    assert_eq!(
        json["samples"].as_array().map(Vec::len),
        Some(r.samples.len())
    );
    if std::path::Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").exists() {
        let png = written.png.as_ref().expect("a chart");
        let bytes = std::fs::read(png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
    }
    let page = netpath_bench::report::markdown::render(
        &r,
        &dir.join("benchmarks.md"),
        &written.json,
        written.png.as_deref(),
    );
    assert!(page.contains("| TCP throughput, 1 stream |"), "{page}");

    // Nothing left behind.
    let prefix = format!("npb-{}-", std::process::id());
    let left: Vec<String> = Netns::list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(
        !std::path::Path::new(&format!(
            "{}/npb-{}",
            netpath::datapath::PIN_ROOT,
            std::process::id()
        ))
        .exists(),
        "pins left"
    );
    std::fs::remove_dir_all(&dir).ok();
}
