//! `netpath daemon`: apply a configuration, then keep the node that way:
//! collect expired connections every `[conntrack] gc_interval` seconds,
//! re-apply the (re-read) file on SIGHUP, stop on SIGINT or SIGTERM.
//!
//! Stopping leaves the datapath in place: programs, maps and links are
//! pinned, so pods keep their connectivity (and their connections) while
//! no daemon runs; the next `apply` or daemon picks them up. `netpath
//! destroy` removes them.

use std::{path::Path, time::Duration};

use log::{debug, error, info, warn};
use tokio::sync::mpsc;

use crate::{
    config::{Config, ConfigError},
    conntrack::{self, GcReport},
    datapath::{MapsError, NodeMaps, PinDir},
    reconcile::{self, ApplyReport, ReconcileError},
};

/// What makes the daemon leave its GC loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Re-read the configuration file and apply it (SIGHUP).
    Reload,
    /// Stop, leaving the datapath in place (SIGINT, SIGTERM).
    Stop,
}

/// Why the daemon could not start.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Reconcile(#[from] ReconcileError),
    #[error("cannot watch {signal}: {source}")]
    Signal {
        signal: &'static str,
        source: std::io::Error,
    },
}

/// Forwards SIGHUP as [`Event::Reload`] and SIGINT/SIGTERM as
/// [`Event::Stop`]. Must be called inside a tokio runtime.
pub fn signal_events() -> Result<mpsc::Receiver<Event>, DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let watch = |kind: SignalKind, name: &'static str| {
        signal(kind).map_err(|source| DaemonError::Signal {
            signal: name,
            source,
        })
    };
    let mut hup = watch(SignalKind::hangup(), "SIGHUP")?;
    let mut int = watch(SignalKind::interrupt(), "SIGINT")?;
    let mut term = watch(SignalKind::terminate(), "SIGTERM")?;
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = hup.recv() => Event::Reload,
                _ = int.recv() => Event::Stop,
                _ = term.recv() => Event::Stop,
            };
            if tx.send(event).await.is_err() || event == Event::Stop {
                break;
            }
        }
    });
    Ok(rx)
}

/// One garbage collection of an instance's connection table.
pub fn gc_once(instance: &str) -> Result<GcReport, MapsError> {
    let mut maps = NodeMaps::open_pinned(&PinDir::for_instance(instance))?;
    conntrack::gc(&mut maps, conntrack::now_ns())
}

/// Collects expired connections of `instance` every `interval` until an
/// event arrives, and returns it (a closed channel is [`Event::Stop`]).
pub async fn gc_until_event(
    instance: &str,
    interval: Duration,
    events: &mut mpsc::Receiver<Event>,
) -> Event {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            event = events.recv() => return event.unwrap_or(Event::Stop),
            _ = ticks.tick() => match gc_once(instance) {
                Ok(r) if r.removed + r.orphans > 0 => info!(
                    "conntrack gc: removed {} expired connections and {} orphaned reverse \
                     entries; {} remain",
                    r.removed, r.orphans, r.remaining
                ),
                Ok(r) => debug!("conntrack gc: nothing expired; {} connections", r.remaining),
                Err(e) => warn!("conntrack gc of instance {instance} failed: {e}"),
            },
        }
    }
}

/// The GC interval of a configuration.
pub fn gc_interval(config: &Config) -> Duration {
    Duration::from_secs(u64::from(config.conntrack.gc_interval))
}

fn log_report(instance: &str, r: &ApplyReport) {
    if !r.changed() {
        info!("instance {instance}: nothing to change");
        return;
    }
    info!(
        "instance {instance}: applied (created {:?}, recreated {:?}, deleted {:?}, \
         np_from_uplink attached to {:?}, detached from {:?})",
        r.created, r.recreated, r.deleted, r.uplinks_attached, r.uplinks_detached
    );
}

/// Runs the daemon: applies the file at `path` (an error here is returned),
/// then collects garbage and handles `events` until [`Event::Stop`]. A
/// reload that fails (unreadable or invalid file, failed apply) is logged
/// and the daemon carries on with what it had.
pub async fn run(path: &Path, mut events: mpsc::Receiver<Event>) -> Result<(), DaemonError> {
    let mut config = Config::load(path)?;
    let report = reconcile::apply(&config).await?;
    log_report(&config.node.name, &report);
    info!(
        "daemon: instance {} up; conntrack gc every {}s; SIGHUP re-applies {}",
        config.node.name,
        config.conntrack.gc_interval,
        path.display()
    );
    loop {
        match gc_until_event(&config.node.name, gc_interval(&config), &mut events).await {
            Event::Stop => {
                info!(
                    "daemon: stopping; the datapath of instance {} stays in place (pinned)",
                    config.node.name
                );
                return Ok(());
            }
            Event::Reload => {
                info!("daemon: re-reading {}", path.display());
                let new = match Config::load(path) {
                    Ok(new) => new,
                    Err(e) => {
                        error!("daemon: reload failed, keeping the running configuration: {e}");
                        continue;
                    }
                };
                if new.node.name != config.node.name {
                    error!(
                        "daemon: reload failed: node.name changed from {} to {}; a daemon \
                         serves one instance: restart it to switch",
                        config.node.name, new.node.name
                    );
                    continue;
                }
                match reconcile::apply(&new).await {
                    Ok(report) => {
                        log_report(&new.node.name, &report);
                        config = new;
                    }
                    Err(e) => error!("daemon: re-apply failed: {e}"),
                }
            }
        }
    }
}
