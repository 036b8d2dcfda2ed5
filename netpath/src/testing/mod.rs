//! Test-only machinery, behind the `testing` cargo feature (the tests and
//! the benchmarks enable it; the shipped `netpath` binary is built without
//! it): a routed lab for route tests, and the one way the tests and the
//! benchmarks drive async netpath code from sync code ([`block_on`]) and
//! run code inside a namespace ([`in_netns`], [`spawn_in_netns`], on top of
//! [`Netns::run`] and [`Netns::spawn`]). With the feature, the
//! reconciler's failpoints (`NETPATH_FAILPOINT`) are live.

use std::{future::Future, thread};

use crate::sys::netns::{Netns, NetnsError};

mod routed_lab;

pub use routed_lab::{RoutedLab, UPLINK1};

/// Runs a future to completion on a private current-thread runtime on
/// another thread, so that it can be called from sync code, async code or
/// `Drop` (each call gets its own netlink connections).
pub fn block_on<F: Future + Send>(fut: F) -> F::Output
where
    F::Output: Send,
{
    thread::scope(|s| {
        s.spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime")
                .block_on(fut)
        })
        .join()
        .expect("block_on thread panicked")
    })
}

/// Runs `f` on a thread inside the named namespace `ns` and returns its
/// result ([`Netns::run`]).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    Netns::open(ns)?.run(f)
}

/// Starts `f` on a new thread named `thread_name` inside the named
/// namespace `ns` ([`Netns::spawn`]).
pub fn spawn_in_netns<T: Send + 'static>(
    ns: &str,
    thread_name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<thread::JoinHandle<Result<T, NetnsError>>, NetnsError> {
    Netns::open(ns)?.spawn(thread_name, f)
}
