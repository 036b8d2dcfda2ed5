//! The daemon's membership of an etcd cluster (`[cluster] etcd_endpoints`):
//! join before the first apply, follow the peers, keep the lease.
//!
//! * **Where**: etcd is reached from the node's namespace (`node.netns`,
//!   where its uplink is), so the client runs on a thread of its own that
//!   entered that namespace, with its own runtime; the daemon hears from it
//!   through channels.
//! * **Start**: bring the uplink's address up (the first apply would;
//!   etcd is reached through it), connect and [join](Registry::join) as `node.name` with the
//!   uplink's address, *before* anything is applied, so that the node's
//!   pod CIDR is the leased one (a restart takes its reservation back: the
//!   same CIDR, and the pods keep their addresses). A kept desired state
//!   whose pod CIDR differs from the lease is refused (C1 in
//!   [`crate::config::cluster`]). Then the peers etcd holds become the
//!   desired state's peers (this node excluded), and a watch follows them
//!   from the revision they were read at.
//! * **etcd unreachable at start**: the daemon refuses to start with the
//!   error. It cannot know its pod CIDR on a first start, and on a restart
//!   its datapath keeps forwarding from the pins while it is down; the
//!   service manager's restart (`Restart=on-failure` in
//!   `deploy/netpath.service`) is the backoff, and each failure is logged.
//! * **Running**: each watch event is one change through the daemon's
//!   serialized change path ([`super::Daemon`]), applied as a diff (only
//!   that peer's entries change). A broken watch (etcd restarted, the
//!   revision compacted) reads the peers again and resumes from there: the
//!   full list is applied as one diff, so nothing missed is kept.
//! * **Lease lost** ([`Membership::is_alive`] false: etcd expired it while
//!   the node could not reach it): the daemon joins again, logging it as an
//!   error; the reservation gives the same CIDR back.
//! * **Stop** (SIGTERM, SIGKILL): nothing is revoked (E3 in
//!   [`crate::etcd`]); peers withdraw this node's routes when the lease
//!   runs out, unless the daemon is back before. `netpath daemon --cleanup`
//!   leaves the cluster ([`leave`]).

use std::time::Duration;

use ipnet::Ipv4Net;
use log::{error, info, warn};
use tokio::sync::{mpsc, oneshot};

use super::DaemonError;
use crate::{
    config::{Config, cluster::PeerConfig},
    etcd::{EtcdError, JoinOptions, Membership, Peer, PeerEvent, Registry},
    sys::{
        netlink::Netlink,
        netns::{Netns, NetnsError},
    },
};

/// How long a broken watch waits before reading the peers again.
const RESYNC_DELAY: Duration = Duration::from_secs(1);

/// What the daemon hears from etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// One node up or down.
    Peer(PeerEvent),
    /// The whole list, read again after the watch broke.
    Resync(Vec<Peer>),
}

/// The node's link to etcd while the daemon runs: the events, and the
/// membership thread, which stops (without revoking: E3) when this is
/// dropped.
pub struct EtcdLink {
    /// The events, in etcd's order.
    pub events: mpsc::Receiver<ClusterEvent>,
    _stop: oneshot::Sender<()>,
}

/// A peer of the desired state from etcd's record.
pub fn peer_config(p: &Peer) -> PeerConfig {
    PeerConfig {
        name: p.name.clone(),
        node_address: p.address,
        pod_cidr: p.pod_cidr,
    }
}

/// The peers of `node` among `peers`: itself excluded, sorted by name.
pub fn others(node: &str, peers: &[Peer]) -> Vec<PeerConfig> {
    let mut out: Vec<PeerConfig> = peers
        .iter()
        .filter(|p| p.name != node)
        .map(peer_config)
        .collect();
    out.sort();
    out
}

/// The namespace etcd is reached from: the node's.
fn node_netns(config: &Config) -> Result<Netns, NetnsError> {
    match &config.node.netns {
        Some(name) => Netns::open(name),
        None => Netns::current(),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Joins etcd when `config` says so, before anything is applied: fills in
/// the leased pod CIDR and etcd's peers, and starts following them.
/// `Ok(None)`: the node has no etcd.
pub async fn join(config: &mut Config) -> Result<Option<EtcdLink>, DaemonError> {
    let Some(cluster) = config.etcd_cluster().cloned() else {
        return Ok(None);
    };
    let node = config.node.name.clone();
    let (uplink, uplink_net) = config
        .node
        .uplink
        .as_ref()
        .and_then(|u| Some((u.name.clone(), u.address?)))
        .ok_or(crate::config::cluster::ClusterError::EtcdWithoutUplinkAddress)
        .map_err(crate::config::ConfigError::from)?;
    let address = uplink_net.addr();
    // etcd is reached over the uplink: its address must be there before
    // the first apply, which assigns it the same way (idempotent).
    let ns = node_netns(config)?;
    Netlink::connect(&ns)
        .await?
        .address_up(&uplink, uplink_net)
        .await?;
    let options = JoinOptions {
        node: node.clone(),
        address,
        cluster: cluster.cidr,
        prefix_len: cluster.node_cidr_len(),
        ttl: cluster.lease_ttl(),
    };
    let (ready_tx, ready_rx) = oneshot::channel();
    let (tx, events) = mpsc::channel(64);
    let (stop, stopped) = oneshot::channel();
    let endpoints = cluster.etcd_endpoints.clone();
    let prefix = cluster.etcd_prefix().to_owned();
    let member_options = options.clone();
    ns.spawn("netpath-etcd", move || match runtime() {
        Ok(rt) => rt.block_on(member(
            &endpoints,
            &prefix,
            member_options,
            ready_tx,
            tx,
            stopped,
        )),
        Err(e) => error!("daemon: cannot start the etcd thread's runtime: {e}"),
    })?;
    let Ok(joined) = ready_rx.await else {
        return Err(DaemonError::EtcdThread);
    };
    let (leased, lease, peers, revision) = joined?;
    let link = EtcdLink {
        events,
        _stop: stop,
    };
    if !config.node.pod_cidr_is_unset() && config.node.pod_cidr != leased {
        // Dropping the link stops the keep-alive and keeps the
        // reservation; the new lease runs out by itself.
        return Err(DaemonError::LeaseDiffers {
            instance: node,
            kept: config.node.pod_cidr,
            leased,
        });
    }
    info!(
        "daemon: joined the cluster in etcd ({}, prefix {}) as {node} at {address}: pod CIDR \
         {leased} (lease {lease:x}, TTL {}s)",
        cluster.etcd_endpoints.join(","),
        cluster.etcd_prefix(),
        options.ttl.as_secs()
    );
    config.node.pod_cidr = leased;
    config.peers = others(&node, &peers);
    info!(
        "daemon: {} peers in etcd at revision {revision}: {}",
        config.peers.len(),
        config
            .peers
            .iter()
            .map(|p| format!("{} {} via {}", p.name, p.pod_cidr, p.node_address))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(Some(link))
}

/// What the membership thread reports once joined: the leased pod CIDR,
/// the lease, the peers and the revision they were read at.
type Joined = Result<(Ipv4Net, i64, Vec<Peer>, i64), EtcdError>;

/// The membership thread's work (inside the node's namespace): join, read
/// the peers, report them on `ready`, then follow the peers on `tx` and
/// keep the lease until `stop` fires or is dropped.
async fn member(
    endpoints: &[String],
    prefix: &str,
    options: JoinOptions,
    ready: oneshot::Sender<Joined>,
    tx: mpsc::Sender<ClusterEvent>,
    mut stop: oneshot::Receiver<()>,
) {
    let joined = async {
        let registry = Registry::connect(endpoints, prefix).await?;
        let membership = registry.join(&options).await?;
        let (peers, revision) = registry.peers().await?;
        Ok::<_, EtcdError>((registry, membership, peers, revision))
    }
    .await;
    let (registry, membership, peers, revision) = match joined {
        Ok(j) => j,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let report = (membership.pod_cidr, membership.lease(), peers, revision);
    if ready.send(Ok(report)).is_err() {
        return;
    }
    let follower = tokio::spawn(follow(registry.clone(), revision, tx));
    let mut keeper = Keeper {
        registry,
        options,
        membership,
    };
    let mut ticks = tokio::time::interval(keeper.check_every());
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticks.tick() => keeper.keep().await,
        }
    }
    follower.abort();
    // `keeper.membership` drops here: the keep-alive stops, the lease is
    // not revoked (E3).
}

/// Watches the peers from `revision` on, forever: a broken watch reads the
/// whole list again ([`ClusterEvent::Resync`]) and resumes after it.
async fn follow(registry: Registry, mut revision: i64, tx: mpsc::Sender<ClusterEvent>) {
    loop {
        let (etx, mut erx) = mpsc::channel(64);
        let watcher = {
            let registry = registry.clone();
            tokio::spawn(async move { registry.watch(revision, etx).await })
        };
        while let Some(event) = erx.recv().await {
            if tx.send(ClusterEvent::Peer(event)).await.is_err() {
                watcher.abort();
                return;
            }
        }
        match watcher.await {
            Ok(Ok(())) => warn!("daemon: the etcd watch ended; reading the peers again"),
            Ok(Err(e)) => warn!("daemon: the etcd watch failed: {e}; reading the peers again"),
            Err(e) => warn!("daemon: the etcd watch task ended: {e}; reading the peers again"),
        }
        loop {
            tokio::time::sleep(RESYNC_DELAY).await;
            match registry.peers().await {
                Ok((peers, at)) => {
                    revision = at;
                    if tx.send(ClusterEvent::Resync(peers)).await.is_err() {
                        return;
                    }
                    break;
                }
                Err(e) => warn!("daemon: cannot read the peers from etcd: {e}; trying again"),
            }
        }
    }
}

/// The lease, joined again when lost.
struct Keeper {
    registry: Registry,
    options: JoinOptions,
    membership: Membership,
}

impl Keeper {
    /// Joins again if etcd expired the lease; logs loudly.
    async fn keep(&mut self) {
        if self.membership.is_alive() {
            return;
        }
        let was = self.membership.pod_cidr;
        error!(
            "daemon: LOST the etcd lease of {} on {was} (etcd expired it while this node could \
             not reach it): peers have withdrawn this node's routes; joining again",
            self.options.node
        );
        match self.registry.join(&self.options).await {
            Ok(m) if m.pod_cidr == was => {
                info!(
                    "daemon: joined again with {was} (lease {:x}); peers route it here again",
                    m.lease()
                );
                self.membership = m;
            }
            Ok(m) => {
                error!(
                    "daemon: joined again, but etcd leased {} instead of {was} (the reservation \
                     nodes/{} was removed); the pods keep their addresses in {was}, which peers \
                     no longer route here: re-create this node (`netpath daemon --cleanup`, \
                     then start it)",
                    m.pod_cidr, self.options.node
                );
                self.membership = m;
            }
            Err(e) => error!("daemon: joining again failed: {e}; trying again"),
        }
    }

    /// How often [`Keeper::keep`] looks: a third of the TTL.
    fn check_every(&self) -> Duration {
        (self.options.ttl / 3).max(Duration::from_millis(500))
    }
}

/// `netpath daemon --cleanup`: `config`'s node leaves etcd (its lease is
/// revoked, its reservation deleted), when it uses etcd; from the node's
/// namespace, as the daemon reaches etcd.
pub fn leave(config: &Config) -> Result<(), DaemonError> {
    let Some(cluster) = config.etcd_cluster() else {
        return Ok(());
    };
    let node = config.node.name.clone();
    let released = node_netns(config)?.run(|| {
        let rt = runtime().map_err(|_| DaemonError::EtcdThread)?;
        rt.block_on(async {
            let registry =
                Registry::connect(&cluster.etcd_endpoints, cluster.etcd_prefix()).await?;
            Ok::<_, DaemonError>(registry.forget(&node).await?)
        })
    })??;
    info!("node {node} left the cluster in etcd (released {released:?})");
    Ok(())
}
