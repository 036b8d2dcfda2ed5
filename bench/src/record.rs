//! The plain records every group of the bench writes into its results,
//! and how they are written: [`Spread`] (median and spread of samples),
//! [`SetupRecord`] (what a setup was), UTC timestamps, and numbers with
//! about three significant digits. A leaf: the groups (figures, service
//! scale, curves, cross-node) and the report all use it, and it uses
//! nothing of theirs.

use serde::{Deserialize, Serialize};

use crate::condition::thousands;

/// Median and spread of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub p25: f64,
    pub p75: f64,
    pub n: usize,
}

impl Spread {
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            // Linear interpolation between closest ranks.
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Some(Spread {
            median: q(0.5),
            min: v[0],
            max: v[v.len() - 1],
            p25: q(0.25),
            p75: q(0.75),
            n: v.len(),
        })
    }
}

/// What a setup was: how it is wired, or why it could not be built.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetupRecord {
    pub description: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build_error: Option<String>,
}

/// `YYYY-MM-DDTHH:MM:SSZ` and `YYYYMMDDTHHMMSSZ` of a Unix time.
pub fn utc(unix: u64) -> (String, String) {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let (hh, mm, ss) = (secs / 3600, secs / 60 % 60, secs % 60);
    (
        format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}Z"),
        format!("{y:04}{m:02}{d:02}T{hh:02}{mm:02}{ss:02}Z"),
    )
}

/// Now, as [`utc`].
pub fn now_utc() -> (String, String) {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc(unix)
}

/// A number with about three significant digits.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".into();
    }
    let a = v.abs();
    if a >= 10_000.0 {
        let r = v.round();
        let s = thousands(r.abs() as u64);
        if r < 0.0 { format!("-{s}") } else { s }
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else if a == 0.0 {
        "0".into()
    } else {
        format!("{v:.3}")
    }
}

/// A table cell of a spread: `median [min–max]`, or the median alone when
/// the two ends print alike; `n/a` without samples.
pub fn cell(s: Option<Spread>) -> String {
    match s {
        None => "n/a".into(),
        Some(s) if num(s.min) == num(s.max) => num(s.median),
        Some(s) => format!("{} [{}–{}]", num(s.median), num(s.min), num(s.max)),
    }
}

/// A table cell of a ratio: bold `median [min–max]` to two decimals, or the
/// bold median alone when the two ends print alike; `—` without samples.
pub fn ratio_cell(s: Option<Spread>) -> String {
    let r = |x: f64| format!("{x:.2}");
    match s {
        None => "—".into(),
        Some(s) if r(s.min) == r(s.max) => format!("**{}**", r(s.median)),
        Some(s) => format!("**{}** [{}–{}]", r(s.median), r(s.min), r(s.max)),
    }
}
