//! The socket load balancer: cgroup `sock_addr` hooks on the root cgroup
//! v2, for the node's own processes reaching a frontend (a service VIP).
//!
//! - `connect4` / `sendmsg4`: a socket connecting (or sending a datagram)
//!   to a frontend gets a backend's address and port instead, picked with
//!   the frontend's Maglev table; the choice is remembered in
//!   `sock_revnat_v1` (socket cookie and backend → frontend). No packet is
//!   ever translated: no conntrack entry, no NAT port, and TC on the pods'
//!   veths (which never sees the node's own stack) is not needed.
//! - `recvmsg4` / `getpeername4`: a backend's address shown to such a
//!   socket (a datagram's source, the connected peer) is replaced by the
//!   frontend it asked for, so the application sees only the VIP.
//!
//! The hooks are attached to the root cgroup, which every namespace shares:
//! they act only on sockets of the node namespace
//! (`bpf_get_netns_cookie` = `NodeSettings::netns_cookie`, written by
//! userspace; 0: nowhere), so other namespaces and the machine itself are
//! untouched.
//!
//! Choices:
//! - The Maglev slot is picked with [`netpath_common::lb::flow_hash`] over
//!   the socket cookie and the frontend (the source port is not known at
//!   `connect()`, so the datapath's tuple hash cannot be used): each socket
//!   hashes on its own, so the node's connections spread over the backends
//!   as the pods' do. A frontend with ClientIP affinity hashes the frontend
//!   alone (client 0, port 0): every connection of the node (one client)
//!   then goes to the same backend while the backends stay.
//! - Port-forwards (`frontend_flags::PORT_FORWARD`) are not translated: they
//!   forward packets arriving at a node address (`iptables -t nat
//!   PREROUTING`); the node's own connections to its own address reach its
//!   own listeners, as without netpath.
//! - A frontend without backends: `connect()` and `sendmsg()` fail with
//!   `EPERM` (a cgroup hook can only refuse, not pick the errno),
//!   counted `sock_lb_no_backend`; a missing table or backend (a frontend
//!   being updated) is refused the same way, counted
//!   `drop_lb_backend_missing`.

use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie},
    programs::SockAddrContext,
};
use netpath_common::{
    BackendKey, CtKey, FrontendKey, NodeSettings, Stat, frontend_flags,
    sock::{SockRevKey, SockRevNat},
};

use crate::{
    lb,
    maps::{BACKENDS, FRONTENDS, SETTINGS, SOCK_REVNAT},
    parse::{IPPROTO_TCP, IPPROTO_UDP},
    stats::count,
};

/// What a `sock_addr` hook returns to let the call proceed (1) or refuse
/// it with `EPERM` (0).
const ALLOW: i32 = 1;
const REFUSE: i32 = 0;

const AF_INET: u32 = 2;

/// Whether the socket belongs to the node namespace.
#[inline(always)]
fn in_node_netns(ctx: &SockAddrContext) -> bool {
    let want = SETTINGS
        .get(0)
        .unwrap_or(&NodeSettings::DEFAULT)
        .netns_cookie;
    // SAFETY: helper call on the context the kernel handed us.
    want != 0 && unsafe { bpf_get_netns_cookie(ctx.sock_addr.cast()) } == want
}

/// `connect4` and `sendmsg4`: a frontend's address becomes a backend's.
#[inline(always)]
pub fn try_sock_connect(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reads of context fields every `sock_addr` hook may read
    // (4-byte loads, as the verifier requires).
    let (family, ip, port_be, proto) = unsafe {
        (
            (*sa).user_family,
            (*sa).user_ip4,
            (*sa).user_port,
            (*sa).protocol,
        )
    };
    let proto = match proto {
        p if p == u32::from(IPPROTO_TCP) => IPPROTO_TCP,
        p if p == u32::from(IPPROTO_UDP) => IPPROTO_UDP,
        _ => return ALLOW,
    };
    if family != AF_INET {
        return ALLOW;
    }
    // `user_ip4` holds the address in network order, `user_port` the port
    // in network order in its low 16 bits.
    let addr = ip.to_ne_bytes();
    let port = u16::from_be(port_be as u16);
    let key = FrontendKey {
        addr,
        port,
        proto,
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    let Some(fe) = (unsafe { FRONTENDS.get(&key) }).copied() else {
        return ALLOW;
    };
    if fe.flags & frontend_flags::PORT_FORWARD != 0 {
        return ALLOW;
    }
    if fe.backends == 0 {
        count(Stat::SockLbNoBackend, 0);
        return REFUSE;
    }
    // SAFETY: helper call on the context the kernel handed us.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) };
    let hash_of = if fe.flags & frontend_flags::AFFINITY != 0 {
        0
    } else {
        cookie
    };
    let hash = netpath_common::lb::flow_hash(&CtKey {
        saddr: (hash_of as u32).to_ne_bytes(),
        daddr: addr,
        sport: (hash_of >> 32) as u16,
        dport: port,
        proto,
        _pad: [0; 3],
    });
    // A table swapped meanwhile gives the old or the new one's slot (L4).
    let Some(index) = lb::maglev_index(&fe, &key, hash) else {
        count(Stat::DropLbBackendMissing, 0);
        return REFUSE;
    };
    let bkey = BackendKey {
        frontend: fe.id,
        index,
    };
    // SAFETY: the value is copied out at once.
    let Some(be) = (unsafe { BACKENDS.get(&bkey) }).copied() else {
        count(Stat::DropLbBackendMissing, 0);
        return REFUSE;
    };
    let rkey = SockRevKey {
        cookie,
        backend: be.addr,
        port: be.port,
        _pad: 0,
    };
    let rev = SockRevNat {
        frontend: addr,
        port,
        _pad: 0,
    };
    // A full LRU map evicts; the insert fails only on arguments. Without
    // the entry the socket would see the backend: not worth refusing.
    let _ = SOCK_REVNAT.insert(&rkey, &rev, 0);
    // SAFETY: writes of the fields `connect4`/`sendmsg4` may write.
    unsafe {
        (*sa).user_ip4 = u32::from_ne_bytes(be.addr);
        (*sa).user_port = u32::from(be.port.to_be());
    }
    count(Stat::SockLbConnect, 0);
    ALLOW
}

/// `recvmsg4` and `getpeername4`: a backend's address this socket got from
/// a frontend becomes the frontend's again.
#[inline(always)]
pub fn try_sock_peer(ctx: &SockAddrContext) -> i32 {
    if !in_node_netns(ctx) {
        return ALLOW;
    }
    let sa = ctx.sock_addr;
    // SAFETY: reads of context fields these hooks may read.
    let (family, ip, port_be) = unsafe { ((*sa).user_family, (*sa).user_ip4, (*sa).user_port) };
    if family != AF_INET {
        return ALLOW;
    }
    let key = SockRevKey {
        // SAFETY: helper call on the context the kernel handed us.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock_addr.cast()) },
        backend: ip.to_ne_bytes(),
        port: u16::from_be(port_be as u16),
        _pad: 0,
    };
    // SAFETY: the value is copied out at once.
    if let Some(rev) = unsafe { SOCK_REVNAT.get(&key) }.copied() {
        // SAFETY: writes of the fields these hooks may write.
        unsafe {
            (*sa).user_ip4 = u32::from_ne_bytes(rev.frontend);
            (*sa).user_port = u32::from(rev.port.to_be());
        }
    }
    ALLOW
}
