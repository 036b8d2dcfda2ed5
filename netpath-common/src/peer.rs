//! Several nodes: the peer map [`MAP`] (`peers_v1`), an LPM trie from a
//! pod CIDR to where its pods live ([`PeerKey`] → [`Peer`]), read by
//! `np_from_pod` for every packet no local pod takes, and by
//! `np_from_uplink` / `np_from_tunnel` for packets from remote pods.
//!
//! # The map's invariants
//!
//! - **P1 — written by userspace only**, as a diff of the desired peers
//!   against the map (adding or removing a peer touches that peer's entry
//!   only); the datapath only reads it. Empty when the node has no
//!   `[cluster]`: then nothing changes for any packet.
//! - **P2 — one cluster entry**: the cluster CIDR itself, with no flag
//!   ([`peer_flags::CLUSTER`] = 0): a destination inside the cluster that
//!   no peer owns is routed as any other packet, but never masqueraded
//!   (pod → pod traffic keeps the real source, as ip-masq-agent's
//!   non-masquerade CIDRs).
//! - **P3 — the node's own pod CIDR** is an entry with
//!   [`peer_flags::LOCAL`]: an address of it that no local pod holds goes
//!   to the node's stack (never out to a peer, never masqueraded).
//! - **P4 — peers' pod CIDRs** carry [`peer_flags::NODE`] and the peer's
//!   node address; validation guarantees that they lie inside the cluster
//!   CIDR and overlap neither each other nor the node's own pod CIDR, so
//!   the longest match of a remote pod's address is its node's entry.
//! - **P5 — the overlay**: with [`peer_flags::VXLAN`], `tunnel_ifindex` is
//!   the node's VXLAN device (collect-metadata mode) and `vni` the VNI the
//!   tunnel key carries; without it both are 0 and the packet is routed
//!   unchanged to the node address (direct routing).

/// Name of the map (and of its pin).
pub const MAP: &str = "peers_v1";

/// Size of the map: the cluster entry, the node's own entry and its peers.
pub const MAX: u32 = 4096;

/// TC ingress on the node's VXLAN device: decapsulated packets from peers.
pub const PROG_FROM_TUNNEL: &str = "np_from_tunnel";

/// The VXLAN overhead on IPv4: outer IPv4 (20), UDP (8), VXLAN (8) and the
/// inner Ethernet header (14). The pods' MTU leaves room for it.
pub const VXLAN_OVERHEAD: u32 = 50;

/// Flags of a [`Peer`] entry.
pub mod peer_flags {
    /// The cluster CIDR: inside the cluster, never masqueraded (no flag).
    pub const CLUSTER: u32 = 0;
    /// A peer node's pod CIDR: sent to `node_addr`.
    pub const NODE: u32 = 1;
    /// With [`NODE`]: encapsulated in VXLAN to `node_addr`.
    pub const VXLAN: u32 = 2;
    /// The node's own pod CIDR: to the node's stack when no pod holds the
    /// address.
    pub const LOCAL: u32 = 4;
}

/// Key data of the peer LPM trie: the destination (or source) address.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub addr: [u8; 4],
}

/// Where the pods of a prefix live (see the module's invariants).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// The peer node's address (the next hop, or the tunnel's remote end).
    pub node_addr: [u8; 4],
    /// The VXLAN device with [`peer_flags::VXLAN`], else 0.
    pub tunnel_ifindex: u32,
    /// The VNI with [`peer_flags::VXLAN`], else 0.
    pub vni: u32,
    /// [`peer_flags`].
    pub flags: u32,
}

impl Peer {
    /// Whether the entry is a peer node's pod CIDR.
    #[must_use]
    pub const fn is_node(&self) -> bool {
        self.flags & peer_flags::NODE != 0
    }
}

#[cfg(feature = "user")]
// SAFETY: plain `#[repr(C)]` data with no padding and no pointers.
unsafe impl aya::Pod for PeerKey {}
#[cfg(feature = "user")]
// SAFETY: as above.
unsafe impl aya::Pod for Peer {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<PeerKey>(), 4);
        assert_eq!(core::mem::size_of::<Peer>(), 16);
    }
}
