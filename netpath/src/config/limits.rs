//! The limits and reserved names of a configuration. A leaf of `config`.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The longest instance or pod name, in bytes.
pub const MAX_NAME_LEN: usize = 32;

/// The interface inside a pod when `ifname` does not name another.
pub const POD_IFNAME: &str = "eth0";
/// The longest Linux interface name, in bytes (`IFNAMSIZ` - 1).
pub const MAX_IFNAME_LEN: usize = 15;
/// The longest pod CIDR prefix: a /30 still holds one pod besides the gateway.
pub const MAX_POD_PREFIX_LEN: u8 = 30;
/// The longest network namespace name, in bytes (a file name under `/run/netns`).
pub const MAX_NETNS_LEN: usize = 255;
/// What a pod's default host-side interface name starts with.
pub const HOST_IFNAME_PREFIX: &str = "np-";
/// The device in the node namespace that holds the gateway address (a veth
/// whose peer is `np0-peer`); no pod or uplink may use this name. (The
/// controller creates it.)
pub const GATEWAY_IFNAME: &str = "np0";
/// The peer of [`GATEWAY_IFNAME`]; reserved as well.
pub const GATEWAY_PEER_IFNAME: &str = "np0-peer";
/// The smallest connection table `[conntrack] max_entries` allows.
pub const MIN_CONNTRACK_ENTRIES: u32 = 1024;
/// The largest connection table `[conntrack] max_entries` allows (16 Mi
/// entries; each costs about 100 bytes in the table and its reverse map).
pub const MAX_CONNTRACK_ENTRIES: u32 = 1 << 24;
/// The most routes (declared, plus the default route) the route map holds.
pub const MAX_ROUTES: usize = netpath_common::maps::ROUTES_MAX as usize;
/// The most masquerade rules the masquerade map holds.
pub const MAX_MASQUERADE: usize = netpath_common::maps::MASQ_MAX as usize;

/// Address ranges a pod CIDR must not overlap, and why.
pub(super) const SPECIAL_RANGES: &[(Ipv4Net, &str)] = &[
    (net(0, 0, 0, 0, 8), "\"this network\""),
    (net(127, 0, 0, 0, 8), "loopback"),
    (net(224, 0, 0, 0, 4), "multicast"),
    (net(240, 0, 0, 0, 4), "reserved (and limited broadcast)"),
];

pub(super) const fn net(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}
