//! `netpath top`: the busiest pods (packets per second, both ways) and the
//! drop reasons by rate, refreshed, read from the pins like `netpath
//! stats` (so it works without a daemon). Plain text with ANSI clearing
//! between frames on a terminal; `--once` prints one frame (rates over one
//! interval) for scripts.

use std::{fmt::Write as _, time::Duration};

use netpath_common::{Counter, Stat};

use super::pods::{PodTraffic, Traffic, pod_traffic};
use crate::{
    datapath::{MapsError, NodeMaps, PinDir},
    state::StateDir,
};

/// The counters `top` compares between frames.
#[derive(Debug, Clone)]
pub struct Sample {
    pub pods: Vec<PodTraffic>,
    pub stats: Vec<(Stat, Counter)>,
}

/// Reads a sample of `instance`.
pub fn sample(instance: &str) -> Result<Sample, MapsError> {
    let maps = NodeMaps::open_pinned(&PinDir::for_instance(instance))?;
    let pods = StateDir::for_instance(instance)
        .load()
        .map(|s| s.pods)
        .unwrap_or_default();
    Ok(Sample {
        pods: pod_traffic(&maps, &pods)?,
        stats: maps.stats()?,
    })
}

#[expect(clippy::cast_precision_loss, reason = "rates for display")]
fn rate(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

/// Rows shown per table.
pub const ROWS: usize = 10;

/// One frame: rates between `before` and `now`, `elapsed` apart.
pub fn frame(instance: &str, before: &Sample, now: &Sample, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let zero = Traffic::default();
    let mut rows: Vec<(f64, f64, f64, f64, &PodTraffic)> = now
        .pods
        .iter()
        .map(|p| {
            let t = p.traffic.unwrap_or_default();
            let b = before
                .pods
                .iter()
                .find(|q| q.ifindex == p.ifindex)
                .and_then(|q| q.traffic)
                .unwrap_or(zero);
            (
                rate(t.rx_packets, b.rx_packets, secs),
                rate(t.tx_packets, b.tx_packets, secs),
                rate(t.rx_bytes, b.rx_bytes, secs),
                rate(t.tx_bytes, b.tx_bytes, secs),
                p,
            )
        })
        .collect();
    rows.sort_by(|a, b| {
        (b.0 + b.1)
            .total_cmp(&(a.0 + a.1))
            .then_with(|| a.4.name.cmp(&b.4.name))
    });
    let mut s = format!(
        "netpath top — instance {instance}, rates over {secs:.1}s\n\n{:<24} {:<15} {:>9} {:>9} \
         {:>11} {:>11} {:>10} {:>10} {:>8}\n",
        "POD", "ADDRESS", "RX-PPS", "TX-PPS", "RX-B/S", "TX-B/S", "RX-PKTS", "TX-PKTS", "DROPPED"
    );
    for (rx, tx, rxb, txb, p) in rows.iter().take(ROWS) {
        let t = p.traffic.unwrap_or_default();
        let counted = if p.traffic.is_some() {
            ""
        } else {
            "  (not counted)"
        };
        let _ = writeln!(
            s,
            "{:<24} {:<15} {rx:>9.1} {tx:>9.1} {rxb:>11.0} {txb:>11.0} {:>10} {:>10} {:>8}{counted}",
            p.name,
            p.address.to_string(),
            t.rx_packets,
            t.tx_packets,
            t.tx_dropped
        );
    }
    if rows.is_empty() {
        s.push_str("(no pods)\n");
    }
    let mut drops: Vec<(f64, Stat, u64)> = now
        .stats
        .iter()
        .filter(|(st, c)| st.is_drop() && c.packets > 0)
        .map(|(st, c)| {
            let b = before
                .stats
                .iter()
                .find(|(x, _)| x == st)
                .map_or(0, |(_, c)| c.packets);
            (rate(c.packets, b, secs), *st, c.packets)
        })
        .collect();
    drops.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.2.cmp(&a.2)));
    let _ = write!(
        s,
        "\n{:<32} {:>9} {:>12}\n",
        "DROP REASON", "PER-SEC", "TOTAL"
    );
    for (r, st, total) in drops.iter().take(ROWS) {
        let _ = writeln!(s, "{:<32} {r:>9.1} {total:>12}", st.name());
    }
    if drops.is_empty() {
        s.push_str("(no drops)\n");
    }
    s
}

/// `netpath pod list`'s rows: the daemon's pods with their counters from
/// the pins (no counters when the pins cannot be read).
pub fn pod_rows_of(instance: &str, pods: Vec<crate::api::PodInfo>) -> Vec<super::pods::PodRow> {
    let traffic = sample(instance).map(|s| s.pods).unwrap_or_default();
    super::pods::pod_rows(pods, &traffic)
}

/// Why `netpath top` stopped.
#[derive(Debug, thiserror::Error)]
pub enum TopError {
    #[error("--interval must be between 0.1 and 3600 seconds, not {0}")]
    Interval(f64),
    #[error(transparent)]
    Maps(#[from] MapsError),
}

/// Runs `netpath top` on `instance`: frames every `interval` seconds,
/// one with `once`, `iterations` of them if given, else until Ctrl-C.
pub async fn run(
    instance: &str,
    interval: f64,
    once: bool,
    iterations: Option<u64>,
) -> Result<(), TopError> {
    use std::io::{IsTerminal as _, Write as _};
    if !(0.1..=3600.0).contains(&interval) {
        return Err(TopError::Interval(interval));
    }
    let every = Duration::from_secs_f64(interval);
    let frames = if once { Some(1) } else { iterations };
    let clear = frames.is_none() && std::io::stdout().is_terminal();
    let mut before = sample(instance)?;
    let mut at = std::time::Instant::now();
    let mut shown = 0u64;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
        let now = sample(instance)?;
        let elapsed = at.elapsed();
        at = std::time::Instant::now();
        let text = frame(instance, &before, &now, elapsed);
        let mut out = std::io::stdout().lock();
        if clear {
            let _ = write!(out, "\x1b[H\x1b[2J");
        } else if shown > 0 {
            let _ = writeln!(out);
        }
        let _ = write!(out, "{text}");
        let _ = out.flush();
        before = now;
        shown += 1;
        if frames.is_some_and(|n| shown >= n) {
            return Ok(());
        }
    }
}
