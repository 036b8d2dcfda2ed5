//! `netpath demo` (what `cargo xtask run` starts): the classic two-namespace
//! exercise, `red` and `blue`, wired by netpath inside a lab node namespace
//! with a LAN host behind its uplink. The pods reach the LAN host through
//! the datapath's masquerade (the LAN host has no route to the pods), and
//! the node's kernel forwards nothing and has no iptables rule. [`lab`]
//! builds the node and LAN host namespaces (the tests and the benchmarks
//! use it too); [`crate::render::demo`] says what was built.

use crate::{
    config::Config,
    reconcile::{self, ApplyReport, ReconcileError},
    sys::preflight::{self, PreflightError},
};

pub mod lab;

use lab::{Lab, LabError};

/// The demo's node namespace.
pub const NODE_NETNS: &str = "netpath-demo-node";
/// The demo's LAN host namespace.
pub const LAN_NETNS: &str = "netpath-demo-lan";

/// Errors of the demo.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error(transparent)]
    Preflight(#[from] PreflightError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
}

/// The demo's lab and configuration.
pub fn lab_and_config() -> (Lab, Config) {
    let config = Config::demo();
    let lab = Lab::new(NODE_NETNS, LAN_NETNS);
    (lab, config)
}

/// Removes whatever an earlier demo left behind (a crashed run).
pub async fn clean(lab: &Lab, config: &Config) -> Result<(), DemoError> {
    reconcile::destroy(&config.node.name).await?;
    lab.destroy().await;
    Ok(())
}

/// Builds the demo: the lab, then the pods through `apply`.
pub async fn up(lab: &Lab, config: &Config) -> Result<ApplyReport, DemoError> {
    preflight::check()?;
    clean(lab, config).await?;
    lab.create().await?;
    match reconcile::apply(config).await {
        Ok(report) => Ok(report),
        Err(e) => {
            let _ = clean(lab, config).await;
            Err(e.into())
        }
    }
}
