//! The bench's smoke mode end to end (real namespaces, real traffic, the
//! real datapaths; needs root, as every test of `cargo xtask test`): every
//! figure must produce its numbers for every setup that supports it, and
//! the service-scale group (1 and 100 services) its numbers for kube-proxy's
//! iptables and nftables modes and netpath, and the cost-growth curves
//! theirs, so the harness cannot rot unnoticed. Under a minute.

use std::time::Instant;

use netpath::sys::netns::Netns;
use netpath_bench::{
    Options,
    condition::Condition,
    report::markdown::Files,
    run_and_write,
    service_scale::nodes::Mode,
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
    let took = t.elapsed().as_secs_f64();
    println!("smoke run: {took:.1} s");

    for (kind, s) in &r.setups {
        assert!(s.build_error.is_none(), "{kind:?}: {:?}", s.build_error);
    }
    assert!(!r.conditions.is_empty());
    let mut numbers = 0;
    for cond in &r.conditions {
        for &figure in &cond.figures {
            for scenario in Scenario::ALL {
                for kind in SetupKind::ALL {
                    if figure.applies_to(kind).is_err() || !opts.in_scenario(figure, scenario) {
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
                            matches!(kind, SetupKind::Limit | SetupKind::NetpathXdp)
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
                            // The XDP instance is measured where XDP could
                            // matter: not pod → pod.
                            assert!(
                                (matches!(kind, SetupKind::Netpath | SetupKind::NetpathXdp)
                                    && why.contains("SNAT"))
                                    || (kind == SetupKind::NetpathXdp
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
    let expected = netpath_bench::figures::Figure::ALL
        .iter()
        .filter(|f| {
            f.applies_to(SetupKind::Netpath).is_ok() && opts.in_scenario(**f, Scenario::PodToPod)
        })
        .count();
    assert_eq!(expected, 5, "smoke: 1-stream TCP, RR 1 B, CRR, UDP, BPF");
    assert_eq!(np_pod, expected, "netpath pod → pod baseline figures");
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

    // The main netpath column is the default configuration (XDP off); the
    // prefilter is the XDP instance's.
    assert!(
        r.setups[&SetupKind::Netpath]
            .description
            .iter()
            .any(|l| l.contains("xdp = \"off\""))
    );
    let flood = r
        .row(
            "baseline",
            Scenario::LanToPod,
            netpath_bench::figures::Figure::Prefilter,
            "dropped",
        )
        .expect("a prefilter row");
    assert!(flood.xdp_vs_classic.is_some() && flood.netpath_vs_classic.is_none());

    // The service scale: every node has its numbers at 1 and 100 services.
    let scale = r.service_scale.as_ref().expect("the service-scale group");
    assert_eq!(
        scale.points.iter().map(|p| p.services).collect::<Vec<_>>(),
        [1, 100]
    );
    for p in &scale.points {
        for mode in Mode::ALL {
            let rec = &p.nodes[&mode];
            let what = format!("{} services, {}", p.services, mode.id());
            assert!(rec.error.is_none(), "{what}: {:?}", rec.error);
            assert!(rec.change_error.is_none(), "{what}: {:?}", rec.change_error);
            for m in [
                "connections",
                "connect_p99",
                "transactions",
                "install",
                "change",
                "kernel_memory",
            ] {
                assert!(p.spread(mode, m).is_some(), "{what}: no {m}");
            }
            assert!(
                rec.samples.iter().all(|s| s.error.is_none()),
                "{what}: {rec:?}"
            );
        }
        assert!(p.nodes[&Mode::Netpath].memlock_bytes.unwrap() > 0);
    }

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
        for png in [&written.png, &written.scale_png, &written.curves_png] {
            let bytes = std::fs::read(png.as_ref().expect("a chart")).unwrap();
            assert_eq!(&bytes[1..4], b"PNG");
        }
    }
    let files = Files {
        json: Some(written.json.clone()),
        png: written.png.clone(),
        scale_json: Some(written.json.clone()),
        scale_png: written.scale_png.clone(),
        curves_json: Some(written.json.clone()),
        curves_png: written.curves_png.clone(),
    };
    let page = netpath_bench::report::markdown::render(&r, &dir.join("benchmarks.md"), &files);
    assert!(page.contains("| TCP throughput, 1 stream |"), "{page}");
    assert!(page.contains("## Service scale"), "{page}");
    assert!(page.contains("| 100 | "), "{page}");
    assert!(page.contains("## Cost growth"), "{page}");

    // The cost-growth curves: every dimension at every point of the smoke,
    // each time above the floor of a program that returns at once.
    let curves = r.curves.as_ref().expect("the curves group");
    let floor = curves.floor_ns.expect("the floor").median;
    for d in netpath_bench::curves::Dimension::ALL {
        let c = curves.curve(d).unwrap_or_else(|| panic!("{d:?}: no curve"));
        assert_eq!(c.points.len(), 2, "{d:?}");
        for p in &c.points {
            assert!(
                p.established_ns.median > floor && p.new_ns.median > p.established_ns.median,
                "{d:?} at {}: established {} ns, new {} ns, floor {floor} ns",
                p.n,
                p.established_ns.median,
                p.new_ns.median
            );
        }
    }

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
    // About 50 s on two idle cores; twice that means something got slow.
    assert!(took < 120.0, "the smoke run took {took:.1} s");
}
