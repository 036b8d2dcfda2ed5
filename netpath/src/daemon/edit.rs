//! One API request turned into the next desired state, before anything is
//! applied: adds refuse duplicates, deletes refuse unknown names, and the
//! result is validated whole ([`Config::validate`]), so that a refused
//! request changes nothing. Pure: no system state is read here.
//!
//! CNI attachments become pods named after their container: `c-` + the
//! first 12 characters of the container id + `-` + a hash of the id and
//! interface, so that two interfaces of one container, or two containers
//! whose ids share a prefix, never share a name; their host side is `npc` +
//! the same hash (11 bytes: Linux allows 15).

use std::{collections::BTreeSet, path::Path};

use super::cluster::ClusterEvent;
use crate::{
    api::{ApiError, AttachmentId, CniAttachment, ErrorKind, Request},
    config::{Config, PodConfig},
    etcd::PeerEvent,
    resolve::POD_IFNAME,
};

/// The desired state after `request`, or why there is none. `Ok(None)`:
/// the request does not edit the desired state (a read, or a conntrack
/// flush).
pub fn edit(current: &Config, request: &Request) -> Result<Option<Config>, ApiError> {
    let mut next = current.clone();
    match request {
        Request::Status
        | Request::Desired
        | Request::PodList
        | Request::ConntrackFlush
        | Request::CniCheck { .. } => return Ok(None),
        Request::Apply { config } => next = replace(current, config)?,
        Request::PodAdd { pod } => {
            if pod.container_id.is_some() {
                return Err(invalid(
                    "container_id is for pods a runtime attaches through netpath-cni; `pod add` \
                     pods are the operator's",
                ));
            }
            add_pod(&mut next, pod.clone())?;
        }
        Request::PodDel { name } => {
            let at = position(&next.pods, |p| &p.name == name)
                .ok_or_else(|| not_found("pod", name, "netpath pod list"))?;
            if let Some(id) = &next.pods[at].container_id {
                return Err(invalid(format!(
                    "pod '{name}' is container {id}'s, attached by its runtime through CNI: \
                     the runtime removes it (CNI DEL)"
                )));
            }
            next.pods.remove(at);
        }
        Request::NodeAdd { .. } | Request::NodeDel { .. } if next.etcd_cluster().is_some() => {
            return Err(invalid(
                "this node's peers come from etcd ([cluster] etcd_endpoints): a node joins by \
                 running its daemon, and leaves with `netpath daemon --cleanup` (or when its \
                 lease runs out)",
            ));
        }
        Request::NodeAdd { peer } => {
            if next.cluster.is_none() {
                return Err(invalid(
                    "this node has no [cluster] section: add one (cidr, mode) with `netpath                      apply -f` before adding peers",
                ));
            }
            if next.peers.iter().any(|p| p.name == peer.name) {
                return Err(exists(&format!("peer node '{}'", peer.name)));
            }
            next.peers.push(peer.clone());
        }
        Request::NodeDel { name } => {
            let at = position(&next.peers, |p| &p.name == name)
                .ok_or_else(|| not_found("peer node", name, "netpath node list"))?;
            next.peers.remove(at);
        }
        Request::RouteAdd { route } => {
            if next.routes.iter().any(|r| r.dst == route.dst) {
                return Err(exists(&format!("a route to {}", route.dst)));
            }
            next.routes.push(route.clone());
        }
        Request::RouteDel { dst } => {
            let at = position(&next.routes, |r| r.dst == *dst)
                .ok_or_else(|| not_found("route to", &dst.to_string(), "netpath route list"))?;
            next.routes.remove(at);
        }
        Request::MasqueradeAdd { rule } => {
            if next.masquerade.contains(rule) {
                return Err(exists("this masquerade rule"));
            }
            next.masquerade.push(rule.clone());
        }
        Request::MasqueradeDel { rule } => {
            let at = position(&next.masquerade, |r| r == rule).ok_or_else(|| {
                not_found(
                    "masquerade rule",
                    &format!("{rule:?}"),
                    "netpath masquerade list",
                )
            })?;
            next.masquerade.remove(at);
        }
        Request::PortForwardAdd { forward } => {
            // Validation refuses overlaps (a wildcard and one address on
            // the same port) with a precise message.
            if next.port_forwards.iter().any(|f| {
                f.proto == forward.proto && f.port == forward.port && f.address == forward.address
            }) {
                return Err(exists(&format!(
                    "a port-forward on {} port {}",
                    forward.proto, forward.port
                )));
            }
            next.port_forwards.push(forward.clone());
        }
        Request::PortForwardDel {
            proto,
            port,
            address,
        } => {
            let at = position(&next.port_forwards, |f| {
                f.proto == *proto && f.port == *port && f.address == *address
            })
            .ok_or_else(|| {
                not_found(
                    "port-forward on",
                    &format!("{proto} port {port}"),
                    "netpath port-forward list",
                )
            })?;
            next.port_forwards.remove(at);
        }
        Request::ServiceAdd { service } => {
            if next.services.iter().any(|s| s.name == service.name) {
                return Err(exists(&format!("service '{}'", service.name)));
            }
            next.services.push(service.clone());
        }
        Request::ServiceDel { name } => {
            let at = position(&next.services, |s| &s.name == name)
                .ok_or_else(|| not_found("service", name, "netpath service list"))?;
            next.services.remove(at);
        }
        Request::CniAdd { attachment } => {
            if let Some(pod) = attached(&next, &attachment.container_id, &attachment.ifname) {
                if pod.netns_path.as_deref() == Some(attachment.netns.as_path()) {
                    // The runtime asked again: the same pod, unchanged.
                    return Ok(Some(next));
                }
                return Err(exists(&format!(
                    "interface {} of container {} (in another namespace)",
                    attachment.ifname, attachment.container_id
                )));
            }
            add_pod(&mut next, cni_pod(attachment))?;
        }
        Request::CniDel {
            container_id,
            ifname,
        } => next
            .pods
            .retain(|p| !is_attachment(p, container_id, ifname)),
        Request::CniGc { valid } => {
            let valid: BTreeSet<&AttachmentId> = valid.iter().collect();
            next.pods.retain(|p| match &p.container_id {
                Some(id) => valid.contains(&AttachmentId {
                    container_id: id.clone(),
                    ifname: p.ifname.clone().unwrap_or_else(|| POD_IFNAME.to_owned()),
                }),
                None => true,
            });
        }
    }
    next.validate()
        .map_err(|e| ApiError::new(ErrorKind::Invalid, e.to_string()))?;
    Ok(Some(next))
}

/// `netpath apply -f`: `config` replaces the desired state, except the
/// pods runtimes attached (they are theirs) unless `config` holds them,
/// and, with etcd, the leased pod CIDR and etcd's peers (C1, C2 in
/// [`crate::config::cluster`]); the etcd settings themselves change only
/// with a restart (the daemon joined with them).
fn replace(current: &Config, config: &Config) -> Result<Config, ApiError> {
    if config.node.name != current.node.name {
        return Err(invalid(format!(
            "the file is for instance '{}', but this daemon serves '{}'; pass --instance {} to \
             reach that daemon, or fix node.name",
            config.node.name, current.node.name, config.node.name
        )));
    }
    let mut next = config.clone();
    let etcd = |c: &Config| {
        c.etcd_cluster().map(|cl| {
            (
                cl.cidr,
                cl.etcd_settings().0.to_vec(),
                cl.etcd_settings().1.to_owned(),
                cl.node_cidr_len(),
                cl.lease_ttl(),
            )
        })
    };
    if etcd(current) != etcd(config) {
        return Err(invalid(
            "the file changes [cluster]'s cidr or etcd settings, which this daemon joined etcd \
             with: restart the daemon to change them (systemctl restart netpath)",
        ));
    }
    if current.etcd_cluster().is_some() {
        config.check_file().map_err(|e| invalid(e.to_string()))?;
        if !config.node.pod_cidr_is_unset() && config.node.pod_cidr != current.node.pod_cidr {
            return Err(invalid(format!(
                "node.pod_cidr {} is not the pod CIDR this node leased from etcd, {}; omit \
                 node.pod_cidr (the lease decides it)",
                config.node.pod_cidr, current.node.pod_cidr
            )));
        }
        next.node.pod_cidr = current.node.pod_cidr;
        next.peers.clone_from(&current.peers);
    }
    for pod in current.pods.iter().filter(|p| p.container_id.is_some()) {
        if !next.pods.iter().any(|p| p.name == pod.name) {
            next.pods.push(pod.clone());
        }
    }
    Ok(next)
}

/// The desired state after etcd reported `event` (a peer up or down, or
/// the whole list again), for node `current.node.name`: only the peers
/// change, validated whole. `Ok(None)`: nothing changes (this node's own
/// lease, or a peer already as reported).
pub fn peer_event(current: &Config, event: &ClusterEvent) -> Result<Option<Config>, ApiError> {
    let me = current.node.name.as_str();
    let mut next = current.clone();
    match event {
        ClusterEvent::Peer(PeerEvent::Up(p)) => {
            if p.name == me {
                return Ok(None);
            }
            // A node that re-leased under another CIDR, or a CIDR that
            // changed hands: the old entries go.
            next.peers
                .retain(|q| q.name != p.name && q.pod_cidr != p.pod_cidr);
            next.peers.push(super::cluster::peer_config(p));
            next.peers.sort();
        }
        ClusterEvent::Peer(PeerEvent::Down { name, pod_cidr }) => {
            if name == me {
                return Ok(None);
            }
            next.peers.retain(|q| q.pod_cidr != *pod_cidr);
        }
        ClusterEvent::Resync(peers) => next.peers = super::cluster::others(me, peers),
    }
    if next.peers == current.peers {
        return Ok(None);
    }
    next.validate()
        .map_err(|e| ApiError::new(ErrorKind::Invalid, e.to_string()))?;
    Ok(Some(next))
}

fn add_pod(next: &mut Config, pod: PodConfig) -> Result<(), ApiError> {
    if next.pods.iter().any(|p| p.name == pod.name) {
        return Err(exists(&format!("pod '{}'", pod.name)));
    }
    next.pods.push(pod);
    Ok(())
}

/// The pod of a CNI attachment, if the desired state holds it.
pub fn attached<'a>(config: &'a Config, container_id: &str, ifname: &str) -> Option<&'a PodConfig> {
    config
        .pods
        .iter()
        .find(|p| is_attachment(p, container_id, ifname))
}

fn is_attachment(pod: &PodConfig, container_id: &str, ifname: &str) -> bool {
    pod.container_id.as_deref() == Some(container_id)
        && pod.ifname.as_deref().unwrap_or(POD_IFNAME) == ifname
}

/// The pod a CNI `ADD` asks for.
pub fn cni_pod(a: &CniAttachment) -> PodConfig {
    let hash = attachment_hash(&a.container_id, &a.ifname);
    let prefix: String = a
        .container_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(12)
        .collect();
    PodConfig {
        name: format!("c-{prefix}-{hash:08x}"),
        address: a.address,
        host_ifname: Some(format!("npc{hash:08x}")),
        netns_path: Some(Path::new(&a.netns).to_path_buf()),
        ifname: Some(a.ifname.clone()),
        container_id: Some(a.container_id.clone()),
    }
}

/// FNV-1a (32 bits) of `container_id`, a NUL and `ifname`.
fn attachment_hash(container_id: &str, ifname: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes().chain([0]).chain(ifname.bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

fn position<T>(items: &[T], pred: impl Fn(&T) -> bool) -> Option<usize> {
    items.iter().position(pred)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorKind::Invalid, message)
}

fn exists(what: &str) -> ApiError {
    ApiError::new(
        ErrorKind::Exists,
        format!("{what} exists already; delete it first to change it"),
    )
}

fn not_found(what: &str, name: &str, list: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotFound,
        format!("there is no {what} '{name}' (`{list}` shows what there is)"),
    )
}

#[cfg(test)]
mod tests;
