//! Cluster membership through etcd, the way flannel's and Calico's subnet
//! managers keep it: each node leases a pod CIDR out of the cluster range
//! with an etcd transaction, publishes its node address under that lease,
//! and watches the others'.
//!
//! # Keys (under a prefix, `/netpath/<cluster name>` by default)
//!
//! - `subnets/<a.b.c.d>-<len>` → [`SubnetRecord`] (the node's name and
//!   address), attached to the node's **lease**: while the node's daemon
//!   keeps the lease alive the subnet is its; when the daemon dies, etcd
//!   deletes the key after the lease's TTL and every watcher sees the
//!   node go.
//! - `nodes/<name>` → [`NodeRecord`] (the node's pod CIDR), **without** a
//!   lease: the node's reservation, so that a restarted node takes the
//!   same CIDR back even after its lease expired (its pods keep their
//!   addresses). Other nodes never allocate a subnet another node has
//!   reserved.
//!
//! # Invariants
//!
//! - **E1 (one owner)**: a subnet key is created only by a transaction
//!   whose guard is "the key does not exist" (`create_revision == 0`), so
//!   two nodes racing for one subnet cannot both win: the loser's
//!   transaction fails and it tries the next subnet.
//! - **E2 (sticky)**: the reservation `nodes/<name>` is written in the same
//!   transaction as the first subnet key, guarded by its own revision, so
//!   a node holds at most one reservation; a join first tries the reserved
//!   subnet, and takes it back whether its old lease expired (the key is
//!   absent) or still runs (the key names this node: a quick restart).
//! - **E3 (leases, not stops)**: a daemon that stops keeps its lease until
//!   the TTL runs out and never revokes it on a normal stop (its datapath
//!   keeps forwarding while it restarts); only [`Membership::leave`] (a
//!   node removed for good) revokes it at once.

mod records;

use std::{collections::BTreeMap, net::Ipv4Addr, time::Duration};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    WatchOptions,
};
use ipnet::Ipv4Net;
use tokio::{sync::watch, task::JoinHandle};

pub use records::{NodeRecord, SubnetRecord, subnet_key_name, subnet_of_key_name};

/// Transactions a join tries before it gives up on a busy cluster (each
/// failed one means another node took a subnet meanwhile).
const JOIN_ATTEMPTS: usize = 64;

/// What can go wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No etcd answered at the endpoints.
    #[error(
        "cannot reach etcd at {endpoints}: {source} (is etcd running and listening there? \
         set [cluster] etcd_endpoints)"
    )]
    Connect {
        endpoints: String,
        #[source]
        source: etcd_client::Error,
    },
    /// A request failed.
    #[error("etcd {op} failed: {source}")]
    Op {
        op: &'static str,
        #[source]
        source: etcd_client::Error,
    },
    /// The pod CIDR length does not fit the cluster range.
    #[error(
        "pod CIDRs of /{prefix_len} cannot be carved out of the cluster range {cluster}: \
         use a length between /{} and /30",
        cluster.prefix_len()
    )]
    BadPrefix { cluster: Ipv4Net, prefix_len: u8 },
    /// Every subnet is leased or reserved.
    #[error(
        "no free pod CIDR left in {cluster}: all {count} /{prefix_len} subnets are leased or \
         reserved by other nodes (widen the cluster range, or remove the reservations of \
         nodes that are gone: `nodes/<name>` under {prefix})"
    )]
    Exhausted {
        cluster: Ipv4Net,
        prefix_len: u8,
        count: u64,
        prefix: String,
    },
    /// The cluster kept changing under the join.
    #[error("gave up after {attempts} transactions: other nodes took every subnet tried")]
    Contention { attempts: usize },
    /// A record in etcd is not what netpath writes.
    #[error("etcd key {key}: {why}")]
    BadRecord { key: String, why: String },
}

fn op(op: &'static str) -> impl FnOnce(etcd_client::Error) -> EtcdError {
    move |source| EtcdError::Op { op, source }
}

/// A node of the cluster as etcd holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub name: String,
    pub address: Ipv4Addr,
    pub pod_cidr: Ipv4Net,
}

/// What the watch reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    /// A node leased (or re-leased) its pod CIDR.
    Up(Peer),
    /// A node's lease ended: its pod CIDR is no longer routed to it.
    Down { name: String, pod_cidr: Ipv4Net },
}

/// A connection to the cluster's etcd.
#[derive(Clone)]
pub struct Registry {
    client: Client,
    prefix: String,
}

/// How a node joins.
#[derive(Clone, Debug)]
pub struct JoinOptions {
    pub node: String,
    pub address: Ipv4Addr,
    /// The cluster range the pod CIDRs are carved from.
    pub cluster: Ipv4Net,
    /// The length of each node's pod CIDR (e.g. 24).
    pub prefix_len: u8,
    /// The lease's time to live: how long after a node's daemon died its
    /// peers withdraw its routes.
    pub ttl: Duration,
}

/// A node's lease on its pod CIDR, kept alive while this value lives.
/// Dropping it stops the keep-alive without revoking the lease (E3): the
/// subnet goes when the TTL runs out.
pub struct Membership {
    pub pod_cidr: Ipv4Net,
    lease: i64,
    registry: Registry,
    keeper: JoinHandle<()>,
    alive: watch::Receiver<bool>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.keeper.abort();
    }
}

impl Membership {
    /// The lease id.
    pub fn lease(&self) -> i64 {
        self.lease
    }

    /// False once etcd said the lease is gone (it expired while the node
    /// could not reach etcd): the node must join again.
    pub fn is_alive(&self) -> bool {
        *self.alive.borrow()
    }

    /// Leaves the cluster at once: revokes the lease (the subnet key goes,
    /// watchers see the node down) and removes the reservation.
    pub async fn leave(self, node: &str) -> Result<(), EtcdError> {
        let mut client = self.registry.client.clone();
        client
            .lease_revoke(self.lease)
            .await
            .map_err(op("lease revoke"))?;
        client
            .delete(self.registry.node_key(node), None)
            .await
            .map_err(op("delete"))?;
        Ok(())
    }
}

impl Registry {
    /// Connects to etcd at `endpoints` (`http://host:port`), keys under
    /// `prefix` (e.g. `/netpath/prod`).
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self, EtcdError> {
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(Duration::from_secs(5));
        let mut client = Client::connect(endpoints, Some(opts))
            .await
            .map_err(|source| EtcdError::Connect {
                endpoints: endpoints.join(","),
                source,
            })?;
        // `connect` is lazy about the first request: make one, so that an
        // unreachable etcd is an error here.
        client.status().await.map_err(|source| EtcdError::Connect {
            endpoints: endpoints.join(","),
            source,
        })?;
        Ok(Self {
            client,
            prefix: prefix.trim_end_matches('/').to_owned(),
        })
    }

    fn subnets_prefix(&self) -> String {
        format!("{}/subnets/", self.prefix)
    }

    fn subnet_key(&self, net: Ipv4Net) -> String {
        format!("{}{}", self.subnets_prefix(), subnet_key_name(net))
    }

    fn nodes_prefix(&self) -> String {
        format!("{}/nodes/", self.prefix)
    }

    fn node_key(&self, name: &str) -> String {
        format!("{}{name}", self.nodes_prefix())
    }

    /// Leases a pod CIDR for `o.node` (E1, E2) and keeps the lease alive
    /// until the [`Membership`] is dropped.
    pub async fn join(&self, o: &JoinOptions) -> Result<Membership, EtcdError> {
        if o.prefix_len < o.cluster.prefix_len() || o.prefix_len > 30 {
            return Err(EtcdError::BadPrefix {
                cluster: o.cluster,
                prefix_len: o.prefix_len,
            });
        }
        let mut client = self.client.clone();
        let ttl = i64::try_from(o.ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let lease = client
            .lease_grant(ttl, None)
            .await
            .map_err(op("lease grant"))?
            .id();
        let record = SubnetRecord {
            node: o.node.clone(),
            address: o.address,
        }
        .to_json();
        let with_lease = || Some(PutOptions::new().with_lease(lease));
        let node_key = self.node_key(&o.node);

        for _ in 0..JOIN_ATTEMPTS {
            // The node's reservation, if any (E2).
            let reserved = client
                .get(node_key.as_str(), None)
                .await
                .map_err(op("get"))?;
            let reservation = match reserved.kvs().first() {
                Some(kv) => Some((
                    NodeRecord::from_json(&node_key, kv.value())?,
                    kv.mod_revision(),
                )),
                None => None,
            };
            if let Some((res, _)) = &reservation
                && o.cluster.contains(&res.pod_cidr)
                && res.pod_cidr.prefix_len() == o.prefix_len
            {
                let key = self.subnet_key(res.pod_cidr);
                // Free (the old lease expired), or still ours (a restart
                // before it did): take it under the new lease.
                let free = Txn::new()
                    .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key.as_str(), record.as_str(), with_lease())]);
                if client.txn(free).await.map_err(op("txn"))?.succeeded() {
                    return Ok(self.keep(lease, res.pod_cidr, ttl));
                }
                let now = client.get(key.as_str(), None).await.map_err(op("get"))?;
                if let Some(kv) = now.kvs().first()
                    && SubnetRecord::from_json(&key, kv.value())?.node == o.node
                {
                    let ours = Txn::new()
                        .when([Compare::mod_revision(
                            key.as_str(),
                            CompareOp::Equal,
                            kv.mod_revision(),
                        )])
                        .and_then([TxnOp::put(key.as_str(), record.as_str(), with_lease())]);
                    if client.txn(ours).await.map_err(op("txn"))?.succeeded() {
                        return Ok(self.keep(lease, res.pod_cidr, ttl));
                    }
                    continue;
                }
                // Taken by another node (its reservation was not honoured,
                // e.g. written by hand): pick a new one below.
            }

            // A new subnet: the first that is neither leased nor reserved.
            let taken = self.taken(&mut client).await?;
            let Some(net) = first_free(o.cluster, o.prefix_len, &taken) else {
                return Err(EtcdError::Exhausted {
                    cluster: o.cluster,
                    prefix_len: o.prefix_len,
                    count: subnet_count(o.cluster, o.prefix_len),
                    prefix: self.prefix.clone(),
                });
            };
            let key = self.subnet_key(net);
            let node_guard = match &reservation {
                Some((_, rev)) => Compare::mod_revision(node_key.as_str(), CompareOp::Equal, *rev),
                None => Compare::create_revision(node_key.as_str(), CompareOp::Equal, 0),
            };
            let claim = Txn::new()
                .when([
                    Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                    node_guard,
                ])
                .and_then([
                    TxnOp::put(key.as_str(), record.as_str(), with_lease()),
                    TxnOp::put(
                        node_key.as_str(),
                        NodeRecord { pod_cidr: net }.to_json(),
                        None,
                    ),
                ]);
            if client.txn(claim).await.map_err(op("txn"))?.succeeded() {
                return Ok(self.keep(lease, net, ttl));
            }
            // Another node won that subnet (E1), or our reservation moved:
            // read again and retry.
        }
        let _ = client.lease_revoke(lease).await;
        Err(EtcdError::Contention {
            attempts: JOIN_ATTEMPTS,
        })
    }

    /// Removes `node` from the cluster without its [`Membership`] (another
    /// process's: `netpath daemon --cleanup`): revokes the lease of every
    /// subnet key naming it (watchers see it down at once) and deletes its
    /// reservation. Returns the pod CIDRs it held; none is fine.
    pub async fn forget(&self, node: &str) -> Result<Vec<Ipv4Net>, EtcdError> {
        let mut client = self.client.clone();
        let subnets = client
            .get(self.subnets_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(op("get"))?;
        let mut released = Vec::new();
        for kv in subnets.kvs() {
            let peer = self.peer_of(kv.key(), kv.value())?;
            if peer.name != node {
                continue;
            }
            if kv.lease() == 0 {
                client.delete(kv.key(), None).await.map_err(op("delete"))?;
            } else {
                client
                    .lease_revoke(kv.lease())
                    .await
                    .map_err(op("lease revoke"))?;
            }
            released.push(peer.pod_cidr);
        }
        let reservation = client
            .delete(
                self.node_key(node),
                Some(etcd_client::DeleteOptions::new().with_prev_key()),
            )
            .await
            .map_err(op("delete"))?;
        for kv in reservation.prev_kvs() {
            let cidr = NodeRecord::from_json(&self.node_key(node), kv.value())?.pod_cidr;
            if !released.contains(&cidr) {
                released.push(cidr);
            }
        }
        Ok(released)
    }

    /// Every subnet leased or reserved, by anyone.
    async fn taken(&self, client: &mut Client) -> Result<Vec<Ipv4Net>, EtcdError> {
        let mut out = Vec::new();
        let subnets = client
            .get(self.subnets_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(op("get"))?;
        for kv in subnets.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let name = key.trim_start_matches(&self.subnets_prefix());
            out.push(
                subnet_of_key_name(name).ok_or_else(|| EtcdError::BadRecord {
                    key: key.clone(),
                    why: "not a subnet key (a.b.c.d-len)".into(),
                })?,
            );
        }
        let nodes = client
            .get(self.nodes_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(op("get"))?;
        for kv in nodes.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            out.push(NodeRecord::from_json(&key, kv.value())?.pod_cidr);
        }
        Ok(out)
    }

    /// Starts the keep-alive of `lease` (every third of the TTL).
    fn keep(&self, lease: i64, pod_cidr: Ipv4Net, ttl: i64) -> Membership {
        let (tx, rx) = watch::channel(true);
        let mut client = self.client.clone();
        let period = Duration::from_millis(u64::try_from(ttl).unwrap_or(1) * 1000 / 3);
        let keeper = tokio::spawn(async move {
            let Ok((mut keeper, mut stream)) = client.lease_keep_alive(lease).await else {
                let _ = tx.send(false);
                return;
            };
            loop {
                if keeper.keep_alive().await.is_err() {
                    // etcd unreachable: try again next period; the lease
                    // may still be alive when it comes back.
                    tokio::time::sleep(period).await;
                    match client.lease_keep_alive(lease).await {
                        Ok((k, s)) => {
                            keeper = k;
                            stream = s;
                        }
                        Err(_) => continue,
                    }
                    continue;
                }
                match stream.message().await {
                    Ok(Some(resp)) if resp.ttl() <= 0 => {
                        // Expired: the subnet is gone; the node must join
                        // again.
                        let _ = tx.send(false);
                        return;
                    }
                    _ => {}
                }
                tokio::time::sleep(period).await;
            }
        });
        Membership {
            pod_cidr,
            lease,
            registry: self.clone(),
            keeper,
            alive: rx,
        }
    }

    /// Every node with a live lease, and the revision they were read at
    /// (to watch from).
    pub async fn peers(&self) -> Result<(Vec<Peer>, i64), EtcdError> {
        let mut client = self.client.clone();
        let resp = client
            .get(self.subnets_prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(op("get"))?;
        let revision = resp
            .header()
            .map_or(0, etcd_client::ResponseHeader::revision);
        let mut peers = Vec::new();
        for kv in resp.kvs() {
            peers.push(self.peer_of(kv.key(), kv.value())?);
        }
        Ok((peers, revision))
    }

    fn peer_of(&self, key: &[u8], value: &[u8]) -> Result<Peer, EtcdError> {
        let key = String::from_utf8_lossy(key).into_owned();
        let name = key.trim_start_matches(&self.subnets_prefix());
        let pod_cidr = subnet_of_key_name(name).ok_or_else(|| EtcdError::BadRecord {
            key: key.clone(),
            why: "not a subnet key (a.b.c.d-len)".into(),
        })?;
        let r = SubnetRecord::from_json(&key, value)?;
        Ok(Peer {
            name: r.node,
            address: r.address,
            pod_cidr,
        })
    }

    /// Watches the subnets from `revision` on (exclusive of what
    /// [`Registry::peers`] read at it), sending each change on `tx` until
    /// the receiver is dropped or the watch fails.
    pub async fn watch(
        &self,
        revision: i64,
        tx: tokio::sync::mpsc::Sender<PeerEvent>,
    ) -> Result<(), EtcdError> {
        let mut client = self.client.clone();
        let opts = WatchOptions::new()
            .with_prefix()
            .with_prev_key()
            .with_start_revision(revision + 1);
        let mut stream = client
            .watch(self.subnets_prefix(), Some(opts))
            .await
            .map_err(op("watch"))?;
        // Who held each subnet, for deletes that carry no value.
        let mut holders: BTreeMap<Ipv4Net, String> = BTreeMap::new();
        while let Some(resp) = stream.message().await.map_err(op("watch"))? {
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let event = match ev.event_type() {
                    EventType::Put => {
                        let p = self.peer_of(kv.key(), kv.value())?;
                        holders.insert(p.pod_cidr, p.name.clone());
                        PeerEvent::Up(p)
                    }
                    EventType::Delete => {
                        let key = String::from_utf8_lossy(kv.key()).into_owned();
                        let name = key.trim_start_matches(&self.subnets_prefix());
                        let Some(pod_cidr) = subnet_of_key_name(name) else {
                            continue;
                        };
                        let node = match ev.prev_kv() {
                            Some(prev) => SubnetRecord::from_json(&key, prev.value())
                                .map(|r| r.node)
                                .unwrap_or_default(),
                            None => holders.remove(&pod_cidr).unwrap_or_default(),
                        };
                        PeerEvent::Down {
                            name: node,
                            pod_cidr,
                        }
                    }
                };
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

/// How many /`len` subnets `cluster` holds.
pub fn subnet_count(cluster: Ipv4Net, len: u8) -> u64 {
    1u64 << (len - cluster.prefix_len())
}

/// The first /`len` subnet of `cluster` that overlaps nothing in `taken`,
/// in address order.
pub fn first_free(cluster: Ipv4Net, len: u8, taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let subnets = cluster.subnets(len).ok()?;
    subnets.into_iter().find(|s| {
        !taken
            .iter()
            .any(|t| t.contains(&s.network()) || s.contains(&t.network()))
    })
}

#[cfg(test)]
mod tests;
