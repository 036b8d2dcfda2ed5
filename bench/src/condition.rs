//! The state the datapaths are in while the figures run, and how numbers
//! are written (a leaf: the figures, the topologies and the report all use
//! it).

use serde::{Deserialize, Serialize};

/// The state the datapaths are in while the figures run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Just the two pods.
    Baseline,
    /// This many extra routes in the node.
    Routes(usize),
    /// This many idle conntrack entries (real UDP flows through the SNAT).
    Conntrack(u64),
}

impl Condition {
    pub fn id(self) -> String {
        match self {
            Condition::Baseline => "baseline".into(),
            Condition::Routes(n) => format!("routes_{n}"),
            Condition::Conntrack(n) => format!("conntrack_{n}"),
        }
    }

    pub fn title(self) -> String {
        match self {
            Condition::Baseline => "baseline".into(),
            Condition::Routes(n) => format!("{} routes in the node", thousands(n as u64)),
            Condition::Conntrack(n) => format!("{} idle conntrack entries", thousands(n)),
        }
    }
}

/// 100000 → "100,000".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names() {
        assert_eq!(Condition::Conntrack(100_000).id(), "conntrack_100000");
        assert_eq!(
            Condition::Conntrack(100_000).title(),
            "100,000 idle conntrack entries"
        );
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
