//! `[node.metrics]`: where the daemon serves its Prometheus metrics.
//!
//! ```toml
//! [node.metrics]
//! listen = "127.0.0.1:9487"   # the default; "" turns the endpoint off
//! ```
//!
//! The default address is loopback: the metrics name every pod and its
//! traffic, so exposing them beyond the node is a decision the operator
//! writes down (`listen = "0.0.0.0:9487"`, or a node address). The port is
//! one that none of the usual node agents takes (node_exporter 9100,
//! CoreDNS 9153, kube-proxy 10249, Cilium 9962-9964).

use std::{fmt, net::SocketAddr};

use serde::{Deserialize, Serialize};

/// The default listen address of the metrics endpoint.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9487";

/// The `[node.metrics]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// `"ADDRESS:PORT"` to serve `GET /metrics` on, or `""` for no endpoint.
    #[serde(default = "default_listen")]
    pub listen: MetricsListen,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
        }
    }
}

fn default_listen() -> MetricsListen {
    MetricsListen::At(DEFAULT_LISTEN.parse().expect("a valid socket address"))
}

/// Where the metrics endpoint listens: `""` (off) or a socket address,
/// checked when the configuration is parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum MetricsListen {
    /// No endpoint.
    Off,
    /// `GET /metrics` on this TCP address.
    At(SocketAddr),
}

impl TryFrom<String> for MetricsListen {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::Off);
        }
        s.parse().map(Self::At).map_err(|e| {
            format!(
                "node.metrics.listen {s:?} is not ADDRESS:PORT ({e}); write e.g. \
                 \"{DEFAULT_LISTEN}\", or \"\" to turn the metrics endpoint off"
            )
        })
    }
}

impl From<MetricsListen> for String {
    fn from(l: MetricsListen) -> String {
        l.to_string()
    }
}

impl fmt::Display for MetricsListen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => Ok(()),
            Self::At(a) => write!(f, "{a}"),
        }
    }
}

/// The address the metrics endpoint of a node with `metrics` listens on;
/// `None` when it is off. No section: the default address.
pub fn listen_address(metrics: Option<&MetricsConfig>) -> Option<SocketAddr> {
    match metrics.map_or_else(default_listen, |m| m.listen) {
        MetricsListen::Off => None,
        MetricsListen::At(a) => Some(a),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_parses_an_address_or_nothing() {
        let parse = |s: &str| MetricsListen::try_from(s.to_owned());
        assert_eq!(parse(""), Ok(MetricsListen::Off));
        assert_eq!(
            parse("127.0.0.1:9999"),
            Ok(MetricsListen::At("127.0.0.1:9999".parse().unwrap()))
        );
        let err = parse("localhost").unwrap_err();
        assert!(err.contains("node.metrics.listen"), "{err}");
        assert_eq!(listen_address(None), Some(DEFAULT_LISTEN.parse().unwrap()));
        let off = MetricsConfig {
            listen: MetricsListen::Off,
        };
        assert_eq!(listen_address(Some(&off)), None);
    }
}
