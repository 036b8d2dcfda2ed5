//! The pods' gateway: `np0`, one end of the veth pair `np0` / `np0-peer`
//! in the node namespace, holding the gateway address so that the node
//! answers for it (pods never ARP for it: their neighbour entry is static).
//!
//! A veth rather than a dummy device because not every kernel has the dummy
//! driver (this project's CI kernel does not); Cilium's `cilium_host` /
//! `cilium_net` pair plays the same role.

use std::net::Ipv4Addr;

use super::{
    error::StepError,
    node::{GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, Node},
    undo::Undo,
};
use crate::sys::netlink::{Netlink, NetlinkError};

/// Whether the gateway device `np0` exists, is up and holds the gateway.
pub async fn gateway_ok(nl: &Netlink, gateway: Ipv4Addr) -> Result<bool, NetlinkError> {
    let Some(link) = nl.link_by_name(GATEWAY_IFNAME).await? else {
        return Ok(false);
    };
    Ok(link.up && nl.addresses(link.index).await?.contains(&(gateway, 32)))
}

/// `ip link add np0 type veth peer name np0-peer; ip addr add GW/32 dev np0;
/// ip link set np0 up; ip link set np0-peer up`
pub async fn ensure_gateway(
    node: &Node,
    gateway: Ipv4Addr,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let nl = &node.nl;
    if nl.link_by_name(GATEWAY_IFNAME).await?.is_none() {
        nl.add_veth(GATEWAY_IFNAME, GATEWAY_PEER_IFNAME, &node.netns)
            .await?;
        undo.push(Undo::DeleteLink {
            ifname: GATEWAY_IFNAME.into(),
        });
    }
    for name in [GATEWAY_PEER_IFNAME, GATEWAY_IFNAME] {
        let link = nl
            .link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::NotFound {
                what: format!("{name} right after creating it"),
            })?;
        if name == GATEWAY_IFNAME {
            nl.add_address(link.index, gateway, 32).await?;
        }
        nl.set_up(link.index).await?;
    }
    Ok(())
}

/// `ip link del np0` (takes `np0-peer` with it); nothing if it is gone.
pub async fn delete_gateway(nl: &Netlink) -> Result<(), NetlinkError> {
    if let Some(link) = nl.link_by_name(GATEWAY_IFNAME).await? {
        nl.delete_link(link.index).await?;
    }
    Ok(())
}
