//! The results of a run: every raw sample ([`Results`], written as JSON by
//! [`json`]), the summary (median and spread per setup, ratios
//! netpath/classic and netpath/limit from per-round pairs), the markdown
//! page ([`markdown`]) and the chart ([`png`]).

pub mod analysis;
pub mod cross_node;
pub mod curves;
pub mod files;
pub mod json;
pub mod markdown;
pub mod png;
pub mod scale;

use std::collections::BTreeMap;

pub use crate::record::{SetupRecord, Spread, now_utc, utc};

use serde::{Deserialize, Serialize};

use crate::{
    condition::Condition,
    figures::{Better, Figure, Values},
    machine::Machine,
    metrics::memory::Memory,
    topology::{Scenario, SetupKind},
};

/// One measurement (or the reason there is none).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub round: usize,
    pub condition: String,
    pub scenario: Scenario,
    pub figure: Figure,
    pub setup: SetupKind,
    /// Metric id → value (units: see the summary rows).
    pub values: Values,
    /// The measurement failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The setup cannot serve this (yet): why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Wall time of the measurement.
    pub seconds: f64,
}

/// One metric of one figure in one scenario and condition, across setups.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SummaryRow {
    pub condition: String,
    pub scenario: Scenario,
    pub figure: Figure,
    pub metric: String,
    pub unit: String,
    pub better: Better,
    pub main: bool,
    /// Per setup; absent when there is no sample.
    pub setups: BTreeMap<SetupKind, Spread>,
    /// Why a setup has no numbers.
    pub missing: BTreeMap<SetupKind, String>,
    /// netpath / classic, from the rounds where both have a value.
    pub netpath_vs_classic: Option<Spread>,
    /// netpath / limit, likewise.
    pub netpath_vs_limit: Option<Spread>,
    /// netpath with XDP / netpath as configured by default (TC only),
    /// likewise.
    #[serde(default)]
    pub xdp_vs_tc: Option<Spread>,
    /// netpath with XDP / classic, likewise (the only netpath figure of the
    /// prefilter, which is XDP's).
    #[serde(default)]
    pub xdp_vs_classic: Option<Spread>,
}

/// What a condition did to each setup before its figures ran.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ConditionPrep {
    /// The setup is not measured under this condition: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conntrack_entries: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes: Option<usize>,
    /// Where the routes went.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routes_installed: Option<String>,
    /// The setup sits this condition out: why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// Per scenario: why it cannot run (probe failed, ...).
    pub scenarios_unavailable: BTreeMap<Scenario, String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConditionRecord {
    pub id: String,
    pub title: String,
    pub condition: Condition,
    pub figures: Vec<Figure>,
    pub setups: BTreeMap<SetupKind, ConditionPrep>,
}

/// The run's parameters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunParams {
    pub smoke: bool,
    pub rounds: usize,
    pub seconds_per_figure: f64,
    pub routes: usize,
    pub conntrack: Vec<u64>,
    /// `debug` or `release`: how the load generators were compiled.
    pub profile: String,
}

/// Everything one run produced.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub schema: u32,
    /// `YYYYMMDDTHHMMSSZ`, the name of the result files.
    pub id: String,
    pub started: String,
    pub finished: String,
    pub command: String,
    pub params: RunParams,
    pub machine: Machine,
    pub setups: BTreeMap<SetupKind, SetupRecord>,
    pub conditions: Vec<ConditionRecord>,
    pub memory: Memory,
    pub samples: Vec<Sample>,
    pub summary: Vec<SummaryRow>,
    pub notes: Vec<String>,
    /// The service-scale group, when it ran (it has its own date and
    /// command: a page may show a run's figures and another's service
    /// scale, see [`Results::merge`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_scale: Option<crate::service_scale::ScaleResults>,
    /// The cost-growth curves, when they ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub curves: Option<crate::curves::CurveResults>,
    /// The cross-node group, when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cross_node: Option<crate::cross_node::XnResults>,
}

/// The version of [`Results`]' layout. 2: the `netpath` setup is the
/// default configuration (XDP off) and `netpath_xdp` the XDP one (in 1,
/// `netpath` was XDP and `netpath_tc` XDP off); the service-scale group.
pub const SCHEMA: u32 = 2;

impl Results {
    /// Reads a results file back (to render it again); a file of schema 1
    /// gets its setups renamed ([`upgrade_v1`]).
    pub fn load(path: &std::path::Path) -> anyhow::Result<Results> {
        use anyhow::Context as _;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let mut v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        if v.get("schema").and_then(serde_json::Value::as_u64) == Some(1) {
            upgrade_v1(&mut v);
        }
        serde_json::from_value(v)
            .with_context(|| format!("{}: not a netpath-bench results file", path.display()))
    }

    /// These results with the groups `newer` measured taken from it: its
    /// service scale if it has one, its figures if it has any (with its
    /// setups, memory, date and command). How a page shows a full run and
    /// a later `--only service-scale` run together.
    #[must_use]
    pub fn merge(mut self, newer: Results) -> Results {
        let scale = newer.service_scale.clone();
        let curves = newer.curves.clone();
        let cross_node = newer.cross_node.clone();
        if !newer.conditions.is_empty() {
            let keep = self.service_scale.take();
            let keep_curves = self.curves.take();
            let keep_cross_node = self.cross_node.take();
            self = Results {
                service_scale: keep,
                curves: keep_curves,
                cross_node: keep_cross_node,
                ..newer
            };
        }
        if cross_node.is_some() {
            self.cross_node = cross_node;
        }
        if scale.is_some() {
            self.service_scale = scale;
        }
        if curves.is_some() {
            self.curves = curves;
        }
        self
    }

    /// Fills [`Results::summary`] from the samples.
    pub fn summarize(&mut self) {
        self.summary = summarize(&self.conditions, &self.samples);
    }

    /// The summary row of a metric.
    pub fn row(
        &self,
        condition: &str,
        scenario: Scenario,
        figure: Figure,
        metric: &str,
    ) -> Option<&SummaryRow> {
        self.summary.iter().find(|r| {
            r.condition == condition
                && r.scenario == scenario
                && r.figure == figure
                && r.metric == metric
        })
    }
}

/// Schema 1 → 2: the XDP instance was `netpath` and the TC-only one
/// `netpath_tc`; now `netpath` is the default configuration (TC only) and
/// `netpath_xdp` the XDP one. Renames every setup key and sample setup,
/// except pod → pod samples: schema 1 measured pod → pod on the XDP
/// instance only, whose XDP program that path never crosses (the same
/// datapath as TC only, it said), so those numbers are the default
/// configuration's and stay `netpath`. The summary is recomputed anyway.
pub fn upgrade_v1(v: &mut serde_json::Value) {
    use serde_json::Value;
    fn rename(s: &str) -> Option<&'static str> {
        match s {
            "netpath" => Some("netpath_xdp"),
            "netpath_tc" => Some("netpath"),
            _ => None,
        }
    }
    fn rename_keys(obj: &mut Value) {
        if let Value::Object(m) = obj {
            let old = std::mem::take(m);
            for (k, val) in old {
                m.insert(rename(&k).map_or(k, str::to_owned), val);
            }
        }
    }
    if let Some(setups) = v.get_mut("setups") {
        rename_keys(setups);
    }
    if let Some(Value::Array(conds)) = v.get_mut("conditions") {
        for c in conds {
            if let Some(setups) = c.get_mut("setups") {
                rename_keys(setups);
            }
        }
    }
    if let Some(Value::Array(samples)) = v.get_mut("samples") {
        for s in samples {
            let pod_to_pod = s.get("scenario").and_then(Value::as_str) == Some("pod_to_pod");
            if let Some(Value::String(setup)) = s.get_mut("setup") {
                let new = match (pod_to_pod, setup.as_str()) {
                    (true, "netpath") => Some("netpath"),
                    (true, "netpath_tc") => Some("netpath_xdp"),
                    (_, other) => rename(other),
                };
                if let Some(new) = new {
                    *setup = new.to_owned();
                }
            }
        }
    }
    v["summary"] = Value::Array(Vec::new());
    v["schema"] = Value::from(SCHEMA);
}

/// Median/spread per setup and per-round ratios, in report order.
pub fn summarize(conditions: &[ConditionRecord], samples: &[Sample]) -> Vec<SummaryRow> {
    let mut rows = Vec::new();
    for cond in conditions {
        for scenario in Scenario::ALL {
            for &figure in &cond.figures {
                let of = |setup: SetupKind| {
                    samples.iter().filter(move |s| {
                        s.condition == cond.id
                            && s.scenario == scenario
                            && s.figure == figure
                            && s.setup == setup
                    })
                };
                // Every metric the figure declares, then any extra ones the
                // samples carry.
                let mut metrics: Vec<(String, String, Better, bool)> = figure
                    .metrics()
                    .iter()
                    .map(|m| (m.id.to_owned(), m.unit.to_owned(), m.better, m.main))
                    .collect();
                for s in samples
                    .iter()
                    .filter(|s| s.condition == cond.id && s.figure == figure)
                {
                    for k in s.values.keys() {
                        if !metrics.iter().any(|m| &m.0 == k) {
                            metrics.push((k.clone(), String::new(), Better::Higher, false));
                        }
                    }
                }
                for (metric, unit, better, main) in metrics {
                    let by_round = |setup: SetupKind| -> BTreeMap<usize, f64> {
                        of(setup)
                            .filter_map(|s| s.values.get(&metric).map(|v| (s.round, *v)))
                            .collect()
                    };
                    let mut setups = BTreeMap::new();
                    let mut missing = BTreeMap::new();
                    for kind in SetupKind::ALL {
                        let vals: Vec<f64> = by_round(kind).into_values().collect();
                        if let Some(sp) = Spread::of(&vals) {
                            setups.insert(kind, sp);
                        } else if let Some(why) =
                            of(kind).find_map(|s| s.unavailable.clone().or_else(|| s.error.clone()))
                        {
                            missing.insert(kind, why);
                        }
                    }
                    let ratio_of = |num: SetupKind, den: SetupKind| {
                        let np = by_round(num);
                        let d = by_round(den);
                        let r: Vec<f64> = np
                            .iter()
                            .filter_map(|(round, n)| {
                                d.get(round).filter(|x| **x != 0.0).map(|x| n / x)
                            })
                            .collect();
                        Spread::of(&r)
                    };
                    rows.push(SummaryRow {
                        condition: cond.id.clone(),
                        scenario,
                        figure,
                        metric: metric.clone(),
                        unit,
                        better,
                        main,
                        netpath_vs_classic: ratio_of(SetupKind::Netpath, SetupKind::Classic),
                        netpath_vs_limit: ratio_of(SetupKind::Netpath, SetupKind::Limit),
                        xdp_vs_tc: ratio_of(SetupKind::NetpathXdp, SetupKind::Netpath),
                        xdp_vs_classic: ratio_of(SetupKind::NetpathXdp, SetupKind::Classic),
                        setups,
                        missing,
                    });
                }
            }
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread() {
        let s = Spread::of(&[3.0, 1.0, 2.0, f64::NAN]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!((s.p25, s.p75), (1.5, 2.5));
        let s = Spread::of(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0).0, "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400).0, "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_767_225_599).1, "20251231T235959Z");
    }

    fn sample(round: usize, setup: SetupKind, v: Option<f64>) -> Sample {
        Sample {
            round,
            condition: "baseline".into(),
            scenario: Scenario::PodToPod,
            figure: Figure::Crr,
            setup,
            values: v
                .map(|v| [("connections".to_owned(), v)].into())
                .unwrap_or_default(),
            error: None,
            unavailable: v.is_none().then(|| "nope".to_owned()),
            seconds: 1.0,
        }
    }

    #[test]
    fn schema_1_results_get_their_setups_renamed() {
        let mut v = serde_json::json!({
            "schema": 1,
            "setups": {"netpath": {"description": ["xdp"]}, "netpath_tc": {"description": ["tc"]}, "classic": {"description": []}},
            "conditions": [{"setups": {"netpath": {}, "netpath_tc": {}}}],
            "samples": [
                {"setup": "netpath", "scenario": "lan_to_pod"},
                {"setup": "netpath_tc", "scenario": "lan_to_pod"},
                {"setup": "limit", "scenario": "lan_to_pod"},
                {"setup": "netpath", "scenario": "pod_to_pod"},
                {"setup": "netpath_tc", "scenario": "pod_to_pod"}
            ],
            "summary": [{"anything": 1}]
        });
        upgrade_v1(&mut v);
        assert_eq!(v["schema"], 2);
        assert_eq!(v["setups"]["netpath_xdp"]["description"][0], "xdp");
        assert_eq!(v["setups"]["netpath"]["description"][0], "tc");
        assert!(v["setups"].get("netpath_tc").is_none());
        assert!(v["conditions"][0]["setups"].get("netpath_xdp").is_some());
        let setups: Vec<&str> = v["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["setup"].as_str().unwrap())
            .collect();
        assert_eq!(
            setups,
            ["netpath_xdp", "netpath", "limit", "netpath", "netpath_xdp"],
            "pod → pod was the XDP instance's only, and it never crosses XDP"
        );
        assert_eq!(v["summary"], serde_json::json!([]));
    }

    #[test]
    fn ratios_pair_rounds() {
        let cond = ConditionRecord {
            id: "baseline".into(),
            title: "baseline".into(),
            condition: Condition::Baseline,
            figures: vec![Figure::Crr],
            setups: BTreeMap::new(),
        };
        let samples = vec![
            sample(0, SetupKind::Limit, Some(100.0)),
            sample(0, SetupKind::Classic, Some(50.0)),
            sample(0, SetupKind::Netpath, Some(75.0)),
            sample(1, SetupKind::Limit, Some(200.0)),
            sample(1, SetupKind::Classic, Some(100.0)),
            sample(1, SetupKind::Netpath, Some(100.0)),
        ];
        let rows = summarize(std::slice::from_ref(&cond), &samples);
        let row = rows
            .iter()
            .find(|r| r.scenario == Scenario::PodToPod && r.metric == "connections")
            .unwrap();
        let vc = row.netpath_vs_classic.unwrap();
        assert_eq!((vc.min, vc.max, vc.median), (1.0, 1.5, 1.25));
        let vl = row.netpath_vs_limit.unwrap();
        assert_eq!((vl.min, vl.max), (0.5, 0.75));
        assert_eq!(row.setups[&SetupKind::Classic].median, 75.0);

        let samples = vec![
            sample(0, SetupKind::Classic, Some(50.0)),
            sample(0, SetupKind::Netpath, None),
        ];
        let rows = summarize(&[cond], &samples);
        let row = rows
            .iter()
            .find(|r| r.scenario == Scenario::PodToPod && r.metric == "connections")
            .unwrap();
        assert!(row.netpath_vs_classic.is_none());
        assert_eq!(row.missing[&SetupKind::Netpath], "nope");
    }
}
