//! `netpath daemon`: one node (instance) kept as its desired state says,
//! and the local API that changes that state.
//!
//! * The desired state is a [`Config`], persisted at
//!   `/run/netpath/<instance>/desired.toml` after every change that
//!   applied. At start, that file (when an earlier daemon left one) is the
//!   desired state; otherwise the `--config` file is. SIGHUP (and `netpath
//!   apply -f`) replace it with a file's content.
//! * The API ([`crate::api`]) listens on `/run/netpath/<instance>/api.sock`.
//!   Changes are serialized: each is edited ([`edit`]), validated,
//!   applied by the reconciler (which undoes its own steps on failure) and
//!   only then persisted, so a refused or failed request changes nothing.
//!   Reads answer from the last applied state without waiting.
//! * Every `[conntrack] gc_interval` seconds the connection table is
//!   collected (skipped while a change is being applied).
//! * SIGINT/SIGTERM stop the daemon; SIGKILL does too. Either way the
//!   datapath stays: programs, maps and links are pinned, pods keep their
//!   connectivity and connections, and the next daemon adopts them (an
//!   unchanged object is not reloaded, conntrack is kept).
//!   `netpath daemon --cleanup` removes everything the instance built.
//!
//! * With `[cluster] etcd_endpoints`, the daemon joins etcd before the
//!   first apply (the lease gives the node's pod CIDR) and follows the
//!   peers etcd holds, each change through the same serialized path as the
//!   API's ([`cluster`]).
//!
//! One daemon per instance: it holds `daemon.lock` (`flock`) in the state
//! directory while it runs.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use log::{debug, error, info, warn};
use tokio::sync::{Mutex, mpsc};

use crate::metrics::RequestResult::{Applied, Failed, Refused, Unchanged};
use crate::{
    api::{ApiError, ErrorKind, Request, socket_path},
    config::{Config, ConfigError},
    conntrack::{self, GcReport},
    datapath::{MapsError, NodeMaps, PinDir},
    reconcile::{self, ApplyReport, ReconcileError},
    state::StateDir,
    sys::file::write_atomic,
};

pub mod cluster;
pub mod edit;
mod serve;

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
    /// Another daemon holds the instance.
    #[error(
        "another netpath daemon already serves instance '{instance}' (it holds {}); stop it \
         first (`systemctl stop netpath` or kill it), or give this node another node.name",
        lock.display()
    )]
    AlreadyRunning { instance: String, lock: PathBuf },
    /// The persisted desired state cannot be read.
    #[error(
        "the desired state {} of instance '{instance}' is unreadable: {source}; fix it, or \
         remove it to start from the --config file",
        path.display()
    )]
    Desired {
        instance: String,
        path: PathBuf,
        source: Box<ConfigError>,
    },
    /// etcd refused or could not be reached (the daemon does not start
    /// without its lease: see [`cluster`]).
    #[error(transparent)]
    Etcd(#[from] crate::etcd::EtcdError),
    /// The etcd client's thread ended before it joined.
    #[error("the etcd client's thread stopped before joining (see the log above)")]
    EtcdThread,
    /// The uplink could not be brought up to reach etcd.
    #[error(transparent)]
    Netlink(#[from] crate::sys::netlink::NetlinkError),
    /// The node's namespace (where etcd is reached from).
    #[error(transparent)]
    Netns(#[from] crate::sys::netns::NetnsError),
    /// The kept desired state's pod CIDR is not the leased one.
    #[error(
        "instance '{instance}' kept pod CIDR {kept} (its pods' addresses are in it), but etcd \
         leased it {leased}: its reservation in etcd is gone or names another CIDR. Restore \
         the reservation, or start the node anew (`netpath daemon --cleanup --instance \
         {instance}` removes its pods, then start the daemon)"
    )]
    LeaseDiffers {
        instance: String,
        kept: ipnet::Ipv4Net,
        leased: ipnet::Ipv4Net,
    },
    /// A file or the socket of the state directory.
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
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

fn log_gc(instance: &str, r: Result<GcReport, MapsError>) {
    match r {
        Ok(r) if r.removed + r.orphans > 0 => info!(
            "conntrack gc: removed {} expired connections and {} orphaned reverse entries; {} \
             remain",
            r.removed, r.orphans, r.remaining
        ),
        Ok(r) => debug!("conntrack gc: nothing expired; {} connections", r.remaining),
        Err(e) => warn!("conntrack gc of instance {instance} failed: {e}"),
    }
}

/// Collects expired connections of `instance` every `interval` until an
/// event arrives, and returns it (a closed channel is [`Event::Stop`]).
/// The demo's loop; the daemon has its own, which also serves the API.
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
            _ = ticks.tick() => log_gc(instance, gc_once(instance)),
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
        "instance {instance}: applied (created {:?}, recreated {:?}, deleted {:?}, programs \
         loaded: {}, np_from_uplink attached to {:?}, detached from {:?}, frontends {:?})",
        r.created,
        r.recreated,
        r.deleted,
        r.programs_loaded,
        r.uplinks_attached,
        r.uplinks_detached,
        r.frontends
    );
}

/// Where the desired state of `instance` is persisted.
pub fn desired_file(instance: &str) -> PathBuf {
    StateDir::for_instance(instance).root().join("desired.toml")
}

/// One running node: its desired state and what serializes changes to it.
pub struct Daemon {
    instance: String,
    config_file: Option<PathBuf>,
    /// The desired state as last applied (what reads answer from).
    desired: RwLock<Config>,
    /// Held by one change (or one GC) at a time.
    changes: Mutex<()>,
    started: Instant,
    programs_loaded_at_start: bool,
    /// Reconciles and requests, for the metrics endpoint.
    metrics: Arc<crate::metrics::DaemonMetrics>,
}

impl Daemon {
    /// The desired state as last applied.
    pub fn desired(&self) -> Config {
        self.desired.read().expect("never poisoned").clone()
    }

    /// Edits, validates, applies and persists one change (see the module
    /// documentation). Returns the apply's report and the new state.
    async fn change(&self, request: &Request) -> Result<(ApplyReport, Config), ApiError> {
        self.change_by(|current| edit::edit(current, request), true)
            .await
    }

    /// [`Daemon::change`] for any edit of the desired state (an API
    /// request, or a peer reported by etcd); `count`: whether it is an API
    /// request for the metrics.
    async fn change_by(
        &self,
        edit: impl FnOnce(&Config) -> Result<Option<Config>, ApiError>,
        count: bool,
    ) -> Result<(ApplyReport, Config), ApiError> {
        let _turn = self.changes.lock().await;
        let current = self.desired();
        let m = &self.metrics;
        let request = |r| {
            if count {
                m.request(r);
            }
        };
        let edited = edit(&current).inspect_err(|_| request(Refused));
        let Some(next) = edited? else {
            request(Unchanged);
            return Ok((ApplyReport::default(), current));
        };
        let began = Instant::now();
        let applied = reconcile::apply(&next).await;
        m.reconciled(began.elapsed(), applied.is_ok());
        request(if applied.is_ok() { Applied } else { Failed });
        let report = applied
            .map_err(|e| ApiError::new(ErrorKind::Failed, format!("{e}; nothing was changed")))?;
        if let Err(e) = persist(&next) {
            // The node has the new state but the file the old: put the node
            // back, so that a restart finds what the file says.
            error!("daemon: {e}; rolling the node back");
            if let Err(back) = reconcile::apply(&current).await {
                error!("daemon: rolling back failed too: {back}");
            }
            return Err(ApiError::new(
                ErrorKind::Failed,
                format!("{e}; the change was rolled back"),
            ));
        }
        *self.desired.write().expect("never poisoned") = next.clone();
        log_report(&self.instance, &report);
        Ok((report, next))
    }
}

/// Writes the desired state to [`desired_file`]; with etcd, without the
/// peers (C2 in [`crate::config::cluster`]: etcd is their source, read
/// again at every start), but with the leased pod CIDR (C1: the next start
/// checks the lease against it).
fn persist(config: &Config) -> Result<(), DaemonError> {
    let path = desired_file(&config.node.name);
    let mut kept = config.clone();
    if kept.etcd_cluster().is_some() {
        kept.peers.clear();
    }
    write_atomic(&path, kept.to_toml_string().as_bytes()).map_err(|e| DaemonError::Io {
        what: "write the desired state to",
        path,
        source: e.source,
    })
}

/// The persisted desired state of `instance`, if a daemon left one.
fn load_desired(instance: &str) -> Result<Option<Config>, DaemonError> {
    let path = desired_file(instance);
    if !path.exists() {
        return Ok(None);
    }
    Config::load(&path)
        .map(Some)
        .map_err(|source| DaemonError::Desired {
            instance: instance.to_owned(),
            path,
            source: Box::new(source),
        })
}

/// Takes `daemon.lock` of `instance` without waiting.
fn lock_instance(instance: &str) -> Result<nix::fcntl::Flock<fs::File>, DaemonError> {
    let dir = StateDir::for_instance(instance);
    let path = dir.root().join("daemon.lock");
    let io = |what, source| DaemonError::Io {
        what,
        path: path.clone(),
        source,
    };
    fs::create_dir_all(dir.root()).map_err(|e| io("create the directory of", e))?;
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| io("open", e))?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            DaemonError::AlreadyRunning {
                instance: instance.to_owned(),
                lock: path.clone(),
            }
        } else {
            io("lock", e.into())
        }
    })
}

/// Runs the daemon of the node `path` configures until [`Event::Stop`]:
/// applies its desired state (an error here is returned), then serves the
/// API, collects garbage and handles `events`. A reload that fails is
/// logged and the daemon carries on with what it had.
pub async fn run(path: &Path, events: mpsc::Receiver<Event>) -> Result<(), DaemonError> {
    let file = Config::load(path)?;
    serve_node(file, Some(path), events).await
}

/// [`run`] for a configuration that may have no file (the demo's): SIGHUP
/// then has nothing to re-read.
pub async fn serve_node(
    file: Config,
    path: Option<&Path>,
    mut events: mpsc::Receiver<Event>,
) -> Result<(), DaemonError> {
    let shown = path.map_or_else(|| "(no file)".to_owned(), |p| p.display().to_string());
    let instance = file.node.name.clone();
    let _lock = lock_instance(&instance)?;
    let desired = match load_desired(&instance)? {
        Some(kept) => {
            if kept.node != file.node {
                warn!(
                    "daemon: {} differs from the desired state that instance {instance} kept in \
                     {}; the kept state wins (SIGHUP or `netpath apply -f {}` applies the file)",
                    shown,
                    desired_file(&instance).display(),
                    shown
                );
            }
            info!(
                "daemon: resuming instance {instance} from {}",
                desired_file(&instance).display()
            );
            kept
        }
        None => file,
    };
    let mut desired = desired;
    // Before the first apply: the pod CIDR is the lease's (C1).
    let mut etcd = cluster::join(&mut desired).await?;
    let metrics = Arc::new(crate::metrics::DaemonMetrics::default());
    let began = Instant::now();
    let applied = reconcile::apply(&desired).await;
    metrics.reconciled(began.elapsed(), applied.is_ok());
    let report = applied?;
    log_report(&instance, &report);
    persist(&desired)?;
    serve_metrics(&desired, &metrics).await;
    let listener = serve::bind(&socket_path(&instance))?;
    let gc_every = gc_interval(&desired);
    let daemon = Arc::new(Daemon {
        instance: instance.clone(),
        config_file: path.map(Path::to_path_buf),
        desired: RwLock::new(desired),
        changes: Mutex::new(()),
        started: Instant::now(),
        programs_loaded_at_start: report.programs_loaded,
        metrics,
    });
    info!(
        "daemon: instance {instance} up (programs {}); API on {}; conntrack gc every {}s; \
         SIGHUP re-applies {}",
        if report.programs_loaded {
            "loaded"
        } else {
            "adopted from their pins"
        },
        socket_path(&instance).display(),
        gc_every.as_secs(),
        shown
    );
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + gc_every, gc_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(event) = next_cluster_event(etcd.as_mut()) => peer_change(&daemon, &event).await,
            event = events.recv() => match event.unwrap_or(Event::Stop) {
                Event::Stop => break,
                Event::Reload => match path {
                    Some(path) => reload(&daemon, path).await,
                    None => warn!("daemon: SIGHUP, but there is no file to re-read; use `netpath apply -f`"),
                },
            },
            _ = ticks.tick() => {
                // A change in progress purges what it must itself; the
                // next tick collects the rest.
                if let Ok(_turn) = daemon.changes.try_lock() {
                    log_gc(&instance, gc_once(&instance));
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let daemon = Arc::clone(&daemon);
                    tokio::spawn(async move { serve::connection(&daemon, stream).await });
                }
                Err(e) => warn!("daemon: accept on the API socket failed: {e}"),
            },
        }
    }
    // Wait for a change in flight, so that its state is persisted.
    let _turn = daemon.changes.lock().await;
    let _ = fs::remove_file(socket_path(&instance));
    info!("daemon: stopping; the datapath of instance {instance} stays in place (pinned)");
    Ok(())
}

/// The next event from etcd; never ready without etcd.
async fn next_cluster_event(link: Option<&mut cluster::EtcdLink>) -> Option<cluster::ClusterEvent> {
    match link {
        Some(link) => link.events.recv().await,
        None => std::future::pending().await,
    }
}

/// One peer change reported by etcd, through the serialized change path.
async fn peer_change(daemon: &Daemon, event: &cluster::ClusterEvent) {
    info!("daemon: etcd: {event:?}");
    match daemon
        .change_by(|current| edit::peer_event(current, event), false)
        .await
    {
        Ok((report, _)) if report.changed() => {}
        Ok(_) => debug!("daemon: etcd event changed nothing"),
        Err(e) => error!("daemon: applying what etcd reported ({event:?}) failed: {e}"),
    }
}

/// `netpath daemon --cleanup`: leaves the cluster in etcd (when the
/// instance's kept desired state uses it: lease revoked, reservation
/// removed), then removes what the instance built. etcd unreachable stops
/// it before anything is removed (`netpath destroy` removes the node
/// without leaving etcd).
pub async fn cleanup(instance: &str) -> Result<Vec<String>, DaemonError> {
    if let Some(kept) = load_desired(instance)? {
        cluster::leave(&kept)?;
    }
    Ok(reconcile::destroy(instance).await?)
}

/// Starts the metrics endpoint of `config`'s `[node.metrics]` (see
/// [`crate::metrics`]); a failure to bind is logged and the daemon carries
/// on without it (the datapath and the API do not depend on it). The
/// address is read at start: a changed `listen` needs a restart.
async fn serve_metrics(config: &Config, metrics: &Arc<crate::metrics::DaemonMetrics>) {
    let Some(addr) = crate::config::metrics::listen_address(config.node.metrics.as_ref()) else {
        info!("daemon: metrics endpoint off ([node.metrics] listen = \"\")");
        return;
    };
    let instance = config.node.name.clone();
    match crate::metrics::serve::spawn(addr, instance, Arc::clone(metrics)).await {
        Ok(at) => info!("daemon: metrics on http://{at}/metrics"),
        Err(e) => error!("daemon: {e}"),
    }
}

/// SIGHUP: the file replaces the desired state, as `netpath apply -f`.
async fn reload(daemon: &Daemon, path: &Path) {
    info!("daemon: re-reading {}", path.display());
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            error!("daemon: reload failed, keeping the running configuration: {e}");
            return;
        }
    };
    let request = Request::Apply {
        config: Box::new(config),
    };
    if let Err(e) = daemon.change(&request).await {
        error!("daemon: re-apply failed, keeping the running configuration: {e}");
    }
}
