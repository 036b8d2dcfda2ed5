//! One pod: creating it, deleting it, checking that it is whole. Each
//! function works on one pod, so a CNI ADD or DEL (or a daemon's `pod add`)
//! can run it without planning the whole node again.
//!
//! What a pod is, in `ip` terms (pod `red`, address 10.200.0.2, gateway
//! 10.200.0.1, in node namespace NODE):
//!
//! ```text
//! ip netns add demo-red                      (only for a namespace netpath owns)
//! /etc/netns/demo-red/{resolv.conf,hosts}    (likewise, with [node.dns]; see `dns`)
//! ip -n NODE link add np-red mtu MTU type veth peer name eth0 mtu MTU netns demo-red
//!                                            (MTU: the uplink's, else 1500)
//! ip -n demo-red addr add 10.200.0.2/32 dev eth0 ; ip -n demo-red link set eth0 up
//! ip -n demo-red route add 10.200.0.1 dev eth0 scope link
//! ip -n demo-red route add default via 10.200.0.1 dev eth0 onlink
//! ip -n demo-red neigh replace 10.200.0.1 lladdr <np-red MAC> dev eth0 nud permanent
//! ip -n NODE link set np-red up
//! ip -n NODE route replace 10.200.0.2/32 dev np-red scope link src 10.200.0.1
//! ip -n NODE neigh replace 10.200.0.2 lladdr <eth0 MAC> dev np-red nud permanent
//! (tcx ingress link of np_from_pod on np-red, endpoint map entry for 10.200.0.2)
//! ```

use std::{collections::BTreeMap, net::Ipv4Addr};

use ipnet::Ipv4Net;
use netpath_common::Endpoint;

use super::{dns::write_pod_files, error::StepError, failpoint::failpoint, node::Node, undo::Undo};
use crate::{
    conntrack::{self, PurgeReport},
    datapath::{Datapath, NodeMaps, PinDir, remove_pin},
    resolve::PodNetns,
    state::PodState,
    sys::{
        etc_netns::{EtcFiles, EtcNetns},
        netlink::{Netlink, NetlinkError, Route},
        netns::Netns,
    },
};

/// Whether every piece of a built pod is still there: its namespace, its
/// host-side interface (with the pod's MTU), its pinned link and its
/// endpoint (with that interface's index).
pub async fn pod_healthy(
    node: &Node,
    endpoints: &BTreeMap<Ipv4Addr, Endpoint>,
    pod: &PodState,
) -> Result<bool, NetlinkError> {
    if !pod.netns.exists() || !node.pins.ingress_link(&pod.host_ifname).exists() {
        return Ok(false);
    }
    let Some(link) = node.nl.link_by_name(&pod.host_ifname).await? else {
        return Ok(false);
    };
    if link.mtu != pod.mtu {
        return Ok(false);
    }
    Ok(endpoints
        .get(&pod.address)
        .is_some_and(|ep| ep.ifindex == link.index))
}

/// Builds `pod` (see the module documentation), pushing the undo of each
/// step; attaches `np_from_pod` of `dp` to its host side. `etc`: the
/// `/etc/netns/<netns>/` files of a namespace netpath owns
/// ([`super::dns::pod_files`]; `None` writes none).
pub async fn create_pod(
    node: &Node,
    dp: &mut Datapath,
    gateway: Ipv4Addr,
    pod: &PodState,
    etc: Option<&EtcFiles>,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let nl = &node.nl;
    let pod_ns = match &pod.netns {
        // ip netns add POD
        PodNetns::Owned(name) => {
            let ns = Netns::create(name).await?;
            undo.push(Undo::DeleteNetns(name.clone()));
            // mkdir /etc/netns/POD; resolv.conf and hosts in it
            if etc.is_some() {
                write_pod_files(name, etc, undo)?;
            }
            ns
        }
        PodNetns::Given { path } => Netns::open_path(path)?,
    };
    // ip link add HOST type veth peer name eth0 netns POD
    nl.add_veth_mtu(&pod.host_ifname, &pod.ifname, &pod_ns, Some(pod.mtu))
        .await?;
    undo.push(Undo::DeleteLink {
        ifname: pod.host_ifname.clone(),
    });
    let host = nl
        .link_by_name(&pod.host_ifname)
        .await?
        .ok_or_else(|| NetlinkError::NotFound {
            what: format!("{} right after creating it", pod.host_ifname),
        })?;

    let pod_nl = Netlink::connect(&pod_ns).await?;
    let inner = pod_nl
        .link_by_name(&pod.ifname)
        .await?
        .ok_or_else(|| NetlinkError::NotFound {
            what: format!("{} in {}", pod.ifname, pod.netns),
        })?;
    pod_nl.add_address(inner.index, pod.address, 32).await?;
    pod_nl.set_up(inner.index).await?;
    let gw_net = Ipv4Net::new(gateway, 32).expect("/32 is valid");
    pod_nl
        .replace_route(&Route {
            dst: gw_net,
            gateway: None,
            oif: Some(inner.index),
            src: None,
            scope_link: true,
            onlink: false,
        })
        .await?;
    pod_nl
        .replace_route(&Route {
            dst: Ipv4Net::default(),
            gateway: Some(gateway),
            oif: Some(inner.index),
            src: None,
            scope_link: false,
            onlink: true,
        })
        .await?;
    pod_nl
        .replace_neighbour(inner.index, gateway, host.mac)
        .await?;

    nl.set_up(host.index).await?;
    nl.replace_route(&Route {
        dst: Ipv4Net::new(pod.address, 32).expect("/32 is valid"),
        gateway: None,
        oif: Some(host.index),
        src: Some(gateway),
        scope_link: true,
        onlink: false,
    })
    .await?;
    nl.replace_neighbour(host.index, pod.address, inner.mac)
        .await?;

    dp.attach_from_pod(&node.netns, &pod.host_ifname)?;
    undo.push(Undo::Unpin(pod.host_ifname.clone()));
    dp.maps().upsert_endpoint(
        pod.address,
        Endpoint {
            ifindex: host.index,
            flags: 0,
            pod_mac: inner.mac,
            gw_mac: host.mac,
        },
    )?;
    undo.push(Undo::RemoveEndpoint(pod.address));
    failpoint(&format!("create-pod:{}", pod.netns))
}

/// Removes `pod`: its endpoint, its pinned link, its host-side interface
/// (which takes the pod side with it), its connections and reverse NAT
/// entries (a pod given its address later inherits none of them) and, if
/// netpath owns it, its namespace and the files netpath wrote in
/// `/etc/netns/<netns>/` (the directory too, once empty). What cannot be reached is skipped: no maps (`maps` is
/// `None`), or no node namespace any more (`nl` is `None`). A namespace
/// netpath was given is never deleted.
pub async fn delete_pod(
    nl: Option<&Netlink>,
    maps: Option<&mut NodeMaps>,
    pins: &PinDir,
    pod: &PodState,
) -> Result<(), StepError> {
    let mut maps = maps;
    if let Some(maps) = maps.as_deref_mut() {
        maps.remove_endpoint(pod.address)?;
    }
    remove_pin(&pins.ingress_link(&pod.host_ifname))?;
    if let Some(nl) = nl
        && let Some(link) = nl.link_by_name(&pod.host_ifname).await?
    {
        // ip link del HOST (takes the pod side with it)
        nl.delete_link(link.index).await?;
    }
    if let Some(maps) = maps {
        // After the interface: no packet of the pod can re-create an entry.
        let purged = conntrack::purge_address(maps, pod.address)?;
        if purged != PurgeReport::default() {
            log::info!(
                "pod at {}: {} connections and {} reverse NAT entries removed",
                pod.address,
                purged.connections,
                purged.reverse
            );
        }
    }
    if let PodNetns::Owned(name) = &pod.netns {
        // ip netns del POD; rm /etc/netns/POD/{resolv.conf,hosts} if netpath's
        Netns::delete(name).await?;
        EtcNetns::new(name)?.remove_ours()?;
    }
    Ok(())
}
