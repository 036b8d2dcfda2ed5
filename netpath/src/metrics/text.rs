//! A writer of the Prometheus text exposition format, version 0.0.4: every
//! family once, its `# HELP` and `# TYPE` first, label values escaped
//! (`\`, `"`, newline), values as Prometheus parses them (`+Inf`, `NaN`).
//!
//! Hand-written rather than the `prometheus-client` crate: the daemon
//! builds each scrape from the pinned maps at scrape time (nothing is
//! registered or kept between scrapes), which is all this writer does, and
//! it keeps the dependency tree as it was.

use std::{collections::BTreeSet, fmt::Write as _};

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Counter => "counter",
            Self::Gauge => "gauge",
            Self::Histogram => "histogram",
        }
    }
}

/// One scrape's text, family by family.
#[derive(Default)]
pub struct Exposition {
    out: String,
    families: BTreeSet<String>,
}

/// Label pairs of one sample.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

impl Exposition {
    /// Starts family `name`: its `# HELP` and `# TYPE` lines. A counter's
    /// name must end in `_total`. Each family is written once.
    ///
    /// # Panics
    /// When `name` was started before, or is a counter not named `*_total`
    /// (both are bugs of the caller, caught by the unit tests).
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        assert!(
            self.families.insert(name.to_owned()),
            "metric family {name} written twice"
        );
        assert!(
            kind != Kind::Counter || name.ends_with("_total"),
            "counter {name} must end in _total"
        );
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.as_str());
    }

    /// One sample of the family started last (`name` may carry a
    /// histogram's `_bucket`, `_sum` or `_count` suffix).
    pub fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", format_value(value));
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: Kind, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text.
    pub fn finish(self) -> String {
        self.out
    }
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// A value as the format writes it: integers without a fraction, `+Inf`,
/// `-Inf`, `NaN`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_have_help_type_and_escaped_labels() {
        let mut e = Exposition::default();
        e.family("netpath_x_total", Kind::Counter, "Line one\nback\\slash.");
        e.sample("netpath_x_total", &[("pod", "a\"b\\c\nd")], 3.0);
        e.single("netpath_ratio", Kind::Gauge, "A ratio.", 0.25);
        e.family("netpath_h_seconds", Kind::Histogram, "H.");
        e.sample("netpath_h_seconds_bucket", &[("le", "+Inf")], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP netpath_x_total Line one\\nback\\\\slash.\n\
             # TYPE netpath_x_total counter\n\
             netpath_x_total{pod=\"a\\\"b\\\\c\\nd\"} 3\n\
             # HELP netpath_ratio A ratio.\n\
             # TYPE netpath_ratio gauge\n\
             netpath_ratio 0.25\n\
             # HELP netpath_h_seconds H.\n\
             # TYPE netpath_h_seconds histogram\n\
             netpath_h_seconds_bucket{le=\"+Inf\"} +Inf\n"
        );
    }

    #[test]
    #[should_panic(expected = "written twice")]
    fn a_family_is_written_once() {
        let mut e = Exposition::default();
        e.single("netpath_a", Kind::Gauge, "A.", 1.0);
        e.single("netpath_a", Kind::Gauge, "A.", 1.0);
    }

    #[test]
    #[should_panic(expected = "must end in _total")]
    fn counters_end_in_total() {
        Exposition::default().family("netpath_packets", Kind::Counter, "P.");
    }
}
