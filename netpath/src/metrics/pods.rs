//! Per-pod traffic as operators read it: the counters of `pod_stats_v1`
//! (summed over CPUs) joined with the pods' names from the instance's
//! state file, for `netpath pod list`, `netpath top` and the metrics.

use std::{fmt::Write as _, net::Ipv4Addr};

use netpath_common::pod_stats::PodCounters;
use serde::{Deserialize, Serialize};

use crate::{
    api::PodInfo,
    datapath::{MapsError, NodeMaps},
    state::PodState,
};

/// One pod's traffic through the datapath.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Traffic {
    /// Frames the datapath delivered into the pod, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the pod sent, and their bytes.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Of the frames the pod sent, those the datapath dropped.
    pub tx_dropped: u64,
}

impl From<PodCounters> for Traffic {
    fn from(c: PodCounters) -> Self {
        Self {
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            tx_packets: c.tx_packets,
            tx_bytes: c.tx_bytes,
            tx_dropped: c.tx_dropped,
        }
    }
}

/// A local pod and its traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodTraffic {
    /// The pod's name (its address when the state file does not name it).
    pub name: String,
    pub address: Ipv4Addr,
    /// The host-side veth's ifindex (the counters' key).
    pub ifindex: u32,
    /// `None`: the pod has no counters (being created, or counting was
    /// never set up for it).
    pub traffic: Option<Traffic>,
}

/// Every endpoint of the node with its counters, named from `pods` (the
/// instance's state), sorted by name.
pub fn pod_traffic(
    maps: &NodeMaps,
    pods: &std::collections::BTreeMap<String, PodState>,
) -> Result<Vec<PodTraffic>, MapsError> {
    let counters = maps.pod_counters()?;
    let mut out: Vec<PodTraffic> = maps
        .endpoints()?
        .into_iter()
        .map(|(address, ep)| PodTraffic {
            name: pods
                .iter()
                .find(|(_, p)| p.address == address)
                .map_or_else(|| address.to_string(), |(n, _)| n.clone()),
            address,
            ifindex: ep.ifindex,
            traffic: counters.get(&ep.ifindex).copied().map(Traffic::from),
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A row of `netpath pod list`: the daemon's view of the pod and, when the
/// pins could be read, its counters (`-o json`: the `traffic` object).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRow {
    #[serde(flatten)]
    pub pod: PodInfo,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traffic: Option<Traffic>,
}

/// The rows of `pods`, with the counters of `traffic` by address.
pub fn pod_rows(pods: Vec<PodInfo>, traffic: &[PodTraffic]) -> Vec<PodRow> {
    pods.into_iter()
        .map(|pod| PodRow {
            traffic: traffic
                .iter()
                .find(|t| t.address == pod.address)
                .and_then(|t| t.traffic),
            pod,
        })
        .collect()
}

/// `netpath pod list`: the pods and their counters.
pub fn render_pod_list(rows: &[PodRow]) -> String {
    let mut s = format!(
        "{:<24} {:<15} {:<8} {:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  NETNS\n",
        "POD",
        "ADDRESS",
        "STATE",
        "HOST-IF",
        "RX-PKTS",
        "RX-BYTES",
        "TX-PKTS",
        "TX-BYTES",
        "DROPPED"
    );
    for r in rows {
        let p = &r.pod;
        let state = if p.healthy { "ok" } else { "BROKEN" };
        let mut netns = p.netns.clone();
        if let Some(id) = &p.container_id {
            let _ = write!(netns, " (container {id})");
        }
        let n =
            |f: fn(&Traffic) -> u64| r.traffic.as_ref().map_or("-".into(), |t| f(t).to_string());
        let _ = writeln!(
            s,
            "{:<24} {:<15} {:<8} {:<15} {:>10} {:>12} {:>10} {:>12} {:>8}  {netns}",
            p.name,
            p.address.to_string(),
            state,
            p.host_ifname,
            n(|t| t.rx_packets),
            n(|t| t.rx_bytes),
            n(|t| t.tx_packets),
            n(|t| t.tx_bytes),
            n(|t| t.tx_dropped),
        );
    }
    s
}
