//! Observability: the daemon's Prometheus endpoint, per-pod traffic, and
//! `netpath top`.
//!
//! - [`text`]: the Prometheus text format (0.0.4) writer.
//! - [`collect`]: one scrape, read from the instance's pins (counters,
//!   per-pod traffic, table fill, SNAT port use) and the daemon's own
//!   figures ([`DaemonMetrics`]: reconcile durations and errors, requests).
//! - [`serve`]: `GET /metrics` over HTTP/1.1 on `[node.metrics] listen`.
//! - [`pods`]: per-pod counters joined with pod names (`netpath pod list`).
//! - [`top`]: `netpath top`, the busiest pods and drop reasons, refreshed.
//!
//! Everything is read from the pins at the time it is asked for: nothing
//! is cached, so a scrape without a daemon's own figures (or `netpath top`
//! without a daemon) sees the datapath as it is.

pub mod collect;
pub mod pods;
pub mod serve;
pub mod text;
pub mod top;

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds (seconds) of the reconcile duration histogram's buckets.
pub const RECONCILE_BUCKETS: [f64; 10] = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// How a request to change the desired state ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestResult {
    /// Applied (the node changed, or already was as asked).
    Applied,
    /// Nothing to change (the request asked for what is).
    Unchanged,
    /// Refused before anything changed (invalid, unknown name, duplicate).
    Refused,
    /// The apply failed and was rolled back.
    Failed,
}

impl RequestResult {
    /// Every result, in label order.
    pub const ALL: [Self; 4] = [Self::Applied, Self::Unchanged, Self::Refused, Self::Failed];

    /// The `result` label.
    pub const fn label(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Unchanged => "unchanged",
            Self::Refused => "refused",
            Self::Failed => "failed",
        }
    }
}

/// What only the daemon knows: its reconciles and requests. Lock-free, shared
/// by the API tasks and the metrics endpoint.
#[derive(Debug, Default)]
pub struct DaemonMetrics {
    /// Per bucket of [`RECONCILE_BUCKETS`] (not cumulative), then `+Inf`.
    buckets: [AtomicU64; RECONCILE_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
    errors: AtomicU64,
    requests: [AtomicU64; 4],
}

impl DaemonMetrics {
    /// One reconcile (an apply of the desired state) took `took`; `ok`
    /// when it succeeded.
    pub fn reconciled(&self, took: Duration, ok: bool) {
        let secs = took.as_secs_f64();
        let i = RECONCILE_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(RECONCILE_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.count.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// One request to change the desired state ended with `r`.
    pub fn request(&self, r: RequestResult) {
        let i = RequestResult::ALL.iter().position(|&x| x == r).unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Cumulative bucket counts (`le` ascending, `+Inf` last), the sum in
    /// seconds and the count of reconciles.
    pub fn reconcile_histogram(&self) -> (Vec<u64>, f64, u64) {
        let mut acc = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                acc += b.load(Ordering::Relaxed);
                acc
            })
            .collect();
        #[expect(
            clippy::cast_precision_loss,
            reason = "microseconds of reconciles fit f64"
        )]
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, sum, self.count.load(Ordering::Relaxed))
    }

    /// Reconciles that failed.
    pub fn reconcile_errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Requests that ended with `r`.
    pub fn requests(&self, r: RequestResult) -> u64 {
        let i = RequestResult::ALL.iter().position(|&x| x == r).unwrap_or(0);
        self.requests[i].load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_histogram_is_cumulative() {
        let m = DaemonMetrics::default();
        m.reconciled(Duration::from_millis(5), true);
        m.reconciled(Duration::from_millis(300), false);
        m.reconciled(Duration::from_secs(60), true);
        let (buckets, sum, count) = m.reconcile_histogram();
        assert_eq!(buckets, vec![1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]);
        assert!((sum - 60.305).abs() < 1e-6, "{sum}");
        assert_eq!(count, 3);
        assert_eq!(m.reconcile_errors(), 1);
        m.request(RequestResult::Refused);
        assert_eq!(m.requests(RequestResult::Refused), 1);
        assert_eq!(m.requests(RequestResult::Applied), 0);
    }
}
