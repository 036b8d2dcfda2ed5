//! Links, addresses, routes and neighbours of one network namespace, over
//! rtnetlink.
//!
//! A netlink socket belongs to the network namespace of the thread that
//! created it, whatever thread uses it later. [`Netlink::connect`] therefore
//! opens the socket on a thread inside the target namespace (with
//! [`Netns::run`]) and then drives it from the caller's tokio runtime, so one
//! process can hold connections to many namespaces at once without any of
//! its threads changing namespace.
//!
//! Every method says which `ip` command it matches. Only IPv4 is handled.

use std::{
    io,
    net::{IpAddr, Ipv4Addr},
    os::fd::{AsFd, AsRawFd},
};

use futures::TryStreamExt;
use ipnet::Ipv4Net;
use netlink_packet_route::{
    AddressFamily,
    address::{AddressAttribute, AddressMessage},
    link::{
        InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo as NlLinkInfo, LinkMessage,
    },
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteHeader, RouteMessage, RouteProtocol,
        RouteScope, RouteType,
    },
};
use rtnetlink::{LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder};

use netpath_common::mac::Mac;

use super::netns::{Netns, NetnsError};

/// Errors of netlink requests. Their messages say what was asked, in which
/// namespace and on which interface, and for the common errnos what to do.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error(
        "no tokio runtime: netlink connections are driven by the caller's tokio \
         runtime, call Netlink::connect from inside one"
    )]
    NoRuntime,
    #[error("entering network namespace {ns} to open a netlink socket failed: {source}")]
    Netns { ns: String, source: Box<NetnsError> },
    #[error("opening a netlink socket in network namespace {ns} failed: {source}")]
    Connect { ns: String, source: io::Error },
    #[error("{what} failed: {}", describe(.source))]
    Request {
        /// What was asked and in which namespace, e.g.
        /// `add veth np-red <-> eth0 (peer in network namespace pod1) in
        /// network namespace node1`.
        what: String,
        source: rtnetlink::Error,
    },
    #[error("{what} not found")]
    NotFound { what: String },
}

impl NetlinkError {
    /// The errno of a failed request (positive, e.g. `libc::EEXIST`), if the
    /// kernel returned one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request { source, .. } => rtnetlink_errno(source),
            NetlinkError::Connect { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

fn rtnetlink_errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(msg) => msg.code.map(|c| c.get().abs()),
        _ => None,
    }
}

const CONNECTION_CLOSED: &str = "the netlink connection is closed (did the tokio runtime \
     that Netlink::connect ran on shut down?)";

/// The errno text of a failed request plus what to do about it.
fn describe(e: &rtnetlink::Error) -> String {
    let Some(errno) = rtnetlink_errno(e) else {
        return match e {
            rtnetlink::Error::RequestFailed => CONNECTION_CLOSED.to_owned(),
            e => e.to_string(),
        };
    };
    let hint = match errno {
        libc::EEXIST => {
            "; it already exists: delete it first (`ip link del`, `ip addr del`, \
             `ip route del`), use a replace operation, or pick another name"
        }
        libc::EPERM | libc::EACCES => {
            "; this needs CAP_NET_ADMIN over the namespace (run netpath as root)"
        }
        libc::ENODEV => {
            "; no such interface: it was deleted or moved to another namespace, \
             look it up again by name (`ip link show`)"
        }
        libc::ENETUNREACH => {
            "; the gateway is not on a connected subnet: add an address covering \
             it to the interface first, or mark the route onlink"
        }
        libc::EADDRNOTAVAIL => {
            "; the source address is not assigned to an interface in this namespace"
        }
        libc::EOPNOTSUPP => {
            "; the kernel does not support it (for a link type: its driver, e.g. \
             CONFIG_VETH or CONFIG_DUMMY, is not built in or its module not loaded)"
        }
        _ => "",
    };
    format!("{}{hint}", io::Error::from_raw_os_error(errno))
}

/// An interface, as `ip link show` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkInfo {
    pub index: u32,
    pub name: String,
    /// All zeros for interfaces without an Ethernet address.
    pub mac: [u8; 6],
    /// `IFF_UP`: administratively up (`ip link set dev X up`), whether or
    /// not it has a carrier.
    pub up: bool,
    /// `IFLA_INFO_KIND`: "veth", "dummy", "bridge", ...; `None` for
    /// interfaces without one (lo, physical NICs).
    pub kind: Option<String>,
    pub mtu: u32,
}

/// An IPv4 route of the main table, as `ip -4 route show table main` prints
/// it. Multipath routes show up with neither `gateway` nor `oif`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix; host bits are cleared when the route is written.
    pub dst: Ipv4Net,
    /// `via GW`
    pub gateway: Option<Ipv4Addr>,
    /// `dev IFINDEX`
    pub oif: Option<u32>,
    /// `src SRC` (preferred source address)
    pub src: Option<Ipv4Addr>,
    /// `scope link` (otherwise `scope global`). Unlike `ip route`, a route
    /// without a gateway does not get `scope link` unless this says so.
    pub scope_link: bool,
    /// `onlink`: the gateway is reachable on `oif` without a connected route.
    pub onlink: bool,
}

/// An IPv4 neighbour (ARP) entry, as `ip -4 neigh show dev X` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Neighbour {
    pub ip: Ipv4Addr,
    /// `lladdr`; `None` while unresolved.
    pub mac: Option<[u8; 6]>,
    /// `nud permanent`
    pub permanent: bool,
}

/// An rtnetlink connection into one network namespace.
///
/// Cloning is cheap and shares the connection; the connection task ends
/// when the last clone is dropped.
#[derive(Debug, Clone)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    ns: String,
}

impl Netlink {
    /// Opens an rtnetlink connection into `ns` (what `ip -n NS ...` talks
    /// through).
    ///
    /// The socket is created on a thread inside `ns` (see [`Netns::run`]),
    /// registered with the caller's tokio runtime, and the connection task is
    /// spawned on that runtime, so this must be called from inside a tokio
    /// runtime (multi-thread or current-thread) and the returned handle is
    /// only usable while that runtime runs.
    pub async fn connect(ns: &Netns) -> Result<Netlink, NetlinkError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| NetlinkError::NoRuntime)?;
        let (conn, handle, _unsolicited) = ns
            .run(|| {
                let _in_runtime = rt.enter();
                rtnetlink::new_connection()
            })
            .map_err(|source| NetlinkError::Netns {
                ns: ns.to_string(),
                source: Box::new(source),
            })?
            .map_err(|source| NetlinkError::Connect {
                ns: ns.to_string(),
                source,
            })?;
        rt.spawn(conn);
        Ok(Netlink {
            handle,
            ns: ns.to_string(),
        })
    }

    /// The underlying rtnetlink handle, for requests this type does not wrap.
    pub fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// `ip link show dev NAME`; `Ok(None)` if there is no such interface.
    pub async fn link_by_name(&self, name: &str) -> Result<Option<LinkInfo>, NetlinkError> {
        let req = self.handle.link().get().match_name(name);
        self.one_link(req, || format!("look up interface {name}"))
            .await
    }

    /// `ip link show` of the interface with index `index`; `Ok(None)` if
    /// there is none.
    pub async fn link_by_index(&self, index: u32) -> Result<Option<LinkInfo>, NetlinkError> {
        let req = self.handle.link().get().match_index(index);
        self.one_link(req, || format!("look up interface with ifindex {index}"))
            .await
    }

    async fn one_link(
        &self,
        req: rtnetlink::LinkGetRequest,
        what: impl FnOnce() -> String,
    ) -> Result<Option<LinkInfo>, NetlinkError> {
        match req.execute().try_next().await {
            Ok(msg) => Ok(msg.map(|m| link_info(&m))),
            Err(e) if rtnetlink_errno(&e) == Some(libc::ENODEV) => Ok(None),
            Err(source) => Err(self.err(&what(), source)),
        }
    }

    /// `ip link show`: every interface of the namespace.
    pub async fn links(&self) -> Result<Vec<LinkInfo>, NetlinkError> {
        self.handle
            .link()
            .get()
            .execute()
            .map_ok(|m| link_info(&m))
            .try_collect()
            .await
            .map_err(|source| self.err("list interfaces", source))
    }

    /// `ip link add NAME type veth peer name PEER netns PEER_NS`: a veth
    /// pair whose `NAME` end is in this namespace and whose `PEER` end is
    /// created directly inside `peer_ns` (`IFLA_NET_NS_FD` on the peer), so
    /// the peer never exists under its name in this namespace. Both ends are
    /// down. `peer_ns` may be this namespace.
    pub async fn add_veth(
        &self,
        name: &str,
        peer: &str,
        peer_ns: &Netns,
    ) -> Result<(), NetlinkError> {
        self.add_veth_mtu(name, peer, peer_ns, None).await
    }

    /// [`Netlink::add_veth`] with both ends given `mtu` (`ip link add NAME
    /// mtu MTU type veth peer name PEER mtu MTU netns NS`); `None` keeps the
    /// kernel's default (1500).
    pub async fn add_veth_mtu(
        &self,
        name: &str,
        peer: &str,
        peer_ns: &Netns,
        mtu: Option<u32>,
    ) -> Result<(), NetlinkError> {
        // The fd is read when the kernel parses the request, which happens
        // before this future completes, while `peer_ns` is still borrowed.
        let mut peer_msg = LinkUnspec::new_with_name(peer).setns_by_fd(peer_ns.as_fd().as_raw_fd());
        let mut builder =
            LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth).name(name);
        if let Some(mtu) = mtu {
            peer_msg = peer_msg.mtu(mtu);
            builder = builder.mtu(mtu);
        }
        let msg = builder
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg.build())))
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| {
                self.err(
                    &format!("add veth {name} <-> {peer} (peer in network namespace {peer_ns})"),
                    source,
                )
            })
    }

    /// `ip link add NAME mtu MTU type vxlan external dstport PORT nolearning`:
    /// a VXLAN device in collect-metadata mode (the datapath sets every
    /// packet's remote end and VNI with the tunnel key), down.
    pub async fn add_vxlan_external(
        &self,
        name: &str,
        port: u16,
        mtu: u32,
    ) -> Result<(), NetlinkError> {
        let msg = LinkMessageBuilder::<rtnetlink::LinkVxlan>::new(name)
            .port(port)
            .collect_metadata(true)
            .learning(false)
            .mtu(mtu)
            .build();
        self.handle
            .link()
            .add(msg)
            .execute()
            .await
            .map_err(|source| {
                self.err(
                    &format!("add vxlan device {name} (external, dstport {port}, mtu {mtu})"),
                    source,
                )
            })
    }

    /// `ip link add NAME type bridge; ip link set NAME up`: a Linux bridge
    /// (a learning switch), up; returns its ifindex. The multi-node demo's
    /// LAN is one.
    pub async fn add_bridge(&self, name: &str) -> Result<u32, NetlinkError> {
        self.handle
            .link()
            .add(rtnetlink::LinkBridge::new(name).build())
            .execute()
            .await
            .map_err(|source| self.err(&format!("add bridge {name}"), source))?;
        let link = self
            .link_by_name(name)
            .await?
            .ok_or_else(|| NetlinkError::NotFound {
                what: format!(
                    "bridge {name} right after creating it, in network namespace {}",
                    self.ns
                ),
            })?;
        Ok(link.index)
    }

    /// `ip link set dev X master BRIDGE`: plugs the interface into a
    /// bridge (or any controller device).
    pub async fn set_controller(&self, index: u32, controller: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .controller(controller)
            .build();
        let res = self.handle.link().change(msg).execute().await;
        self.on_dev(res, index, |dev| {
            format!("plug {dev} into the bridge of ifindex {controller}")
        })
        .await
    }

    /// `ip link set dev IFINDEX netns NS`: moves the interface into `ns`
    /// (where it gets a new ifindex if its own is taken, and is down).
    pub async fn move_to_netns(&self, index: u32, ns: &Netns) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_fd().as_raw_fd())
            .build();
        let res = self.handle.link().change(msg).execute().await;
        self.on_dev(res, index, |dev| {
            format!("move {dev} to network namespace {ns}")
        })
        .await
    }

    /// `ip link set dev X mtu MTU`
    pub async fn set_mtu(&self, index: u32, mtu: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).mtu(mtu).build();
        let res = self.handle.link().change(msg).execute().await;
        self.on_dev(res, index, |dev| format!("set the mtu of {dev} to {mtu}"))
            .await
    }

    /// `ip link set dev X up`
    pub async fn set_up(&self, index: u32) -> Result<(), NetlinkError> {
        let msg = LinkUnspec::new_with_index(index).up().build();
        let res = self.handle.link().change(msg).execute().await;
        self.on_dev(res, index, |dev| format!("set {dev} up")).await
    }

    /// `ip link del dev X`. `Ok(())` if there is no such interface. Deleting
    /// either end of a veth pair deletes both.
    pub async fn delete_link(&self, index: u32) -> Result<(), NetlinkError> {
        match self.handle.link().del(index).execute().await {
            Err(e) if rtnetlink_errno(&e) == Some(libc::ENODEV) => Ok(()),
            res => {
                self.on_dev(res, index, |dev| format!("delete interface {dev}"))
                    .await
            }
        }
    }

    /// `ip addr add ADDR/PREFIX dev X`. `Ok(())` if exactly that address
    /// with that prefix length is already on the interface.
    pub async fn add_address(
        &self,
        index: u32,
        addr: Ipv4Addr,
        prefix_len: u8,
    ) -> Result<(), NetlinkError> {
        let res = self
            .handle
            .address()
            .add(index, IpAddr::V4(addr), prefix_len)
            .execute()
            .await;
        if let Err(e) = &res
            && rtnetlink_errno(e) == Some(libc::EEXIST)
            && self
                .addresses(index)
                .await
                .is_ok_and(|addrs| addrs.contains(&(addr, prefix_len)))
        {
            return Ok(());
        }
        self.on_dev(res, index, |dev| {
            format!("add address {addr}/{prefix_len} to {dev}")
        })
        .await
    }

    /// `ip addr add ADDR dev IFNAME; ip link set IFNAME up` (the address is
    /// idempotent, see [`Netlink::add_address`]); returns the ifindex.
    /// [`NetlinkError::NotFound`] if there is no such interface.
    pub async fn address_up(&self, ifname: &str, addr: Ipv4Net) -> Result<u32, NetlinkError> {
        let link = self
            .link_by_name(ifname)
            .await?
            .ok_or_else(|| NetlinkError::NotFound {
                what: format!("interface {ifname} in network namespace {}", self.ns),
            })?;
        self.add_address(link.index, addr.addr(), addr.prefix_len())
            .await?;
        self.set_up(link.index).await?;
        Ok(link.index)
    }

    /// `ip -4 addr show dev X`: `(address, prefix length)` of each IPv4
    /// address of the interface.
    pub async fn addresses(&self, index: u32) -> Result<Vec<(Ipv4Addr, u8)>, NetlinkError> {
        let mut req = self.handle.address().get().set_link_index_filter(index);
        req.message_mut().header.family = AddressFamily::Inet;
        let msgs: Vec<AddressMessage> = match req.execute().try_collect().await {
            Ok(msgs) => msgs,
            Err(source) => {
                return Err(self.err(
                    &format!("list addresses of {}", self.dev(index).await),
                    source,
                ));
            }
        };
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.index == index)
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address; IFA_ADDRESS is
                // the peer's on point-to-point links.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                let address = || {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                        _ => None,
                    })
                };
                local.or_else(address).map(|ip| (ip, m.header.prefix_len))
            })
            .collect())
    }

    /// `ip route replace DST [via GW] [dev OIF] [src SRC] [scope link]
    /// [onlink]` in the main table (protocol static).
    pub async fn replace_route(&self, route: &Route) -> Result<(), NetlinkError> {
        self.handle
            .route()
            .add(route_message(route, false))
            .replace()
            .execute()
            .await
            .map_err(|source| self.err(&format!("replace route {}", describe_route(route)), source))
    }

    /// `ip route del DST [via GW] [dev OIF] [src SRC] [scope link]` in the
    /// main table; the fields that are set must match. `Ok(())` if there is
    /// no such route (or its interface is gone).
    pub async fn delete_route(&self, route: &Route) -> Result<(), NetlinkError> {
        match self
            .handle
            .route()
            .del(route_message(route, true))
            .execute()
            .await
        {
            Ok(()) => Ok(()),
            Err(e)
                if matches!(
                    rtnetlink_errno(&e),
                    Some(libc::ESRCH | libc::ENOENT | libc::ENODEV)
                ) =>
            {
                Ok(())
            }
            Err(source) => {
                Err(self.err(&format!("delete route {}", describe_route(route)), source))
            }
        }
    }

    /// `ip -4 route show table main`: its unicast routes.
    pub async fn routes(&self) -> Result<Vec<Route>, NetlinkError> {
        let msgs: Vec<RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(|source| self.err("list IPv4 routes", source))?;
        Ok(msgs.iter().filter_map(parse_route).collect())
    }

    /// `ip neigh replace IP lladdr MAC dev X nud permanent`
    pub async fn replace_neighbour(
        &self,
        index: u32,
        ip: Ipv4Addr,
        mac: [u8; 6],
    ) -> Result<(), NetlinkError> {
        let res = self
            .handle
            .neighbours()
            .add(index, IpAddr::V4(ip))
            .link_layer_address(&mac)
            .state(NeighbourState::Permanent)
            .replace()
            .execute()
            .await;
        self.on_dev(res, index, |dev| {
            format!("replace neighbour {ip} lladdr {} on {dev}", Mac(mac))
        })
        .await
    }

    /// `ip neigh del IP dev X`. `Ok(())` if there is no such entry.
    pub async fn delete_neighbour(&self, index: u32, ip: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        match self.handle.neighbours().del(msg).execute().await {
            Err(e) if matches!(rtnetlink_errno(&e), Some(libc::ENOENT | libc::ENODEV)) => Ok(()),
            res => {
                self.on_dev(res, index, |dev| format!("delete neighbour {ip} on {dev}"))
                    .await
            }
        }
    }

    /// `ip -4 neigh show dev X`
    pub async fn neighbours(&self, index: u32) -> Result<Vec<Neighbour>, NetlinkError> {
        let msgs: Vec<NeighbourMessage> = match self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Inet)
            .execute()
            .try_collect()
            .await
        {
            Ok(msgs) => msgs,
            Err(source) => {
                return Err(self.err(
                    &format!("list neighbours of {}", self.dev(index).await),
                    source,
                ));
            }
        };
        Ok(msgs
            .iter()
            .filter(|m| m.header.family == AddressFamily::Inet && m.header.ifindex == index)
            .filter_map(|m| {
                let ip = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                    _ => None,
                })?;
                let mac = m.attributes.iter().find_map(|a| match a {
                    NeighbourAttribute::LinkLayerAddress(l) => l.as_slice().try_into().ok(),
                    _ => None,
                });
                Some(Neighbour {
                    ip,
                    mac,
                    permanent: m.header.state == NeighbourState::Permanent,
                })
            })
            .collect())
    }

    fn err(&self, what: &str, source: rtnetlink::Error) -> NetlinkError {
        NetlinkError::Request {
            what: format!("{what} in network namespace {}", self.ns),
            source,
        }
    }

    /// Maps a failed request on interface `index` to an error naming the
    /// interface (looked up only on failure).
    async fn on_dev<T>(
        &self,
        res: Result<T, rtnetlink::Error>,
        index: u32,
        what: impl FnOnce(&str) -> String,
    ) -> Result<T, NetlinkError> {
        match res {
            Ok(v) => Ok(v),
            Err(source) => Err(self.err(&what(&self.dev(index).await), source)),
        }
    }

    /// `NAME (ifindex N)`, or `ifindex N` if the interface cannot be found.
    async fn dev(&self, index: u32) -> String {
        match self.link_by_index(index).await {
            Ok(Some(link)) => format!("{} (ifindex {index})", link.name),
            _ => format!("ifindex {index}"),
        }
    }
}

fn link_info(msg: &LinkMessage) -> LinkInfo {
    let mut info = LinkInfo {
        index: msg.header.index,
        name: String::new(),
        mac: [0; 6],
        up: msg.header.flags.contains(LinkFlags::Up),
        kind: None,
        mtu: 0,
    };
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(name) => info.name.clone_from(name),
            LinkAttribute::Address(addr) => {
                if let Ok(mac) = addr.as_slice().try_into() {
                    info.mac = mac;
                }
            }
            LinkAttribute::Mtu(mtu) => info.mtu = *mtu,
            LinkAttribute::LinkInfo(infos) => {
                info.kind = infos.iter().find_map(|i| match i {
                    NlLinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                });
            }
            _ => {}
        }
    }
    info
}

fn route_message(route: &Route, delete: bool) -> RouteMessage {
    let dst = route.dst.trunc();
    let mut b =
        RouteMessageBuilder::<Ipv4Addr>::new().destination_prefix(dst.addr(), dst.prefix_len());
    if let Some(gw) = route.gateway {
        b = b.gateway(gw);
    }
    if let Some(oif) = route.oif {
        b = b.output_interface(oif);
    }
    if let Some(src) = route.src {
        b = b.pref_source(src);
    }
    if route.onlink {
        b = b.onlink();
    }
    if delete {
        // Like `ip route del`: match any protocol and type, and any scope
        // unless one is given.
        b = b
            .protocol(RouteProtocol::Unspec)
            .kind(RouteType::Unspec)
            .scope(if route.scope_link {
                RouteScope::Link
            } else {
                RouteScope::NoWhere
            });
    } else if route.scope_link {
        b = b.scope(RouteScope::Link);
    }
    b.build()
}

fn parse_route(msg: &RouteMessage) -> Option<Route> {
    let h = &msg.header;
    if h.address_family != AddressFamily::Inet || h.kind != RouteType::Unicast {
        return None;
    }
    let table = msg
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(h.table));
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let mut route = Route {
        dst: Ipv4Net::new(Ipv4Addr::UNSPECIFIED, h.destination_prefix_length).ok()?,
        gateway: None,
        oif: None,
        src: None,
        scope_link: h.scope == RouteScope::Link,
        onlink: h.flags.contains(RouteFlags::Onlink),
    };
    for attr in &msg.attributes {
        match attr {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => {
                route.dst = Ipv4Net::new(*ip, h.destination_prefix_length).ok()?;
            }
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => route.gateway = Some(*ip),
            RouteAttribute::Oif(oif) => route.oif = Some(*oif),
            RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => route.src = Some(*ip),
            _ => {}
        }
    }
    Some(route)
}

fn describe_route(route: &Route) -> String {
    let mut s = route.dst.to_string();
    if let Some(gw) = route.gateway {
        s += &format!(" via {gw}");
    }
    if let Some(oif) = route.oif {
        s += &format!(" dev ifindex {oif}");
    }
    if let Some(src) = route.src {
        s += &format!(" src {src}");
    }
    if route.scope_link {
        s += " scope link";
    }
    if route.onlink {
        s += " onlink";
    }
    s
}
