//! Source NAT (masquerade) of pod traffic leaving the node, and its reverse
//! on replies. A connection keeps its source port when that port is free
//! for the destination; otherwise a port from the configured range is taken,
//! with a bounded number of tries. A port is claimed by inserting its
//! reverse entry with `BPF_NOEXIST`, so two CPUs never claim the same one.

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_NOEXIST, BPF_TCP_LISTEN, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    helpers::{bpf_get_prandom_u32, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp},
    programs::TcContext,
};
use netpath_common::{CtEntry, CtKey, MasqRule, NodeSettings, RevNat, Stat, reply_key};

use crate::{
    conntrack::{self, orig_key},
    l3::{l4_addr, set_port},
    maps::{CONNTRACK, REVNAT},
    parse::{Flow, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    stats::count,
};

/// Ports tried from the range after the original one is taken.
const PORT_TRIES: u32 = 32;

/// Whether netpath can translate `f` (TCP, UDP, ICMP echo request), or
/// why not.
#[inline(always)]
fn translatable(f: &Flow) -> Result<(), Stat> {
    if f.later_fragment {
        // No L4 header in later fragments: they follow their first
        // fragment's translation (`frag.rs`) and never reach here.
        return Err(Stat::DropNatFragment);
    }
    match f.proto {
        IPPROTO_TCP | IPPROTO_UDP => Ok(()),
        IPPROTO_ICMP if f.icmp_type == ICMP_ECHO => Ok(()),
        _ => Err(Stat::DropNatProto),
    }
}

/// Translates the source of `f` per `rule`: finds or creates its connection,
/// rewrites the port and the L4 checksum, and returns the new source address
/// for [`crate::l3::rewrite_headers`] to write.
#[inline(always)]
pub fn snat(
    ctx: &TcContext,
    f: &Flow,
    rule: &MasqRule,
    settings: &NodeSettings,
) -> Result<[u8; 4], Stat> {
    translatable(f)?;
    let key = orig_key(f);
    let now = conntrack::now();
    let nat_port = match CONNTRACK.get_ptr_mut(&key) {
        // SAFETY: the entry is updated in place; a concurrent update of the
        // same connection from another CPU can at worst lose a counter
        // increment or a state change that the next packet repeats.
        Some(ct)
            if unsafe {
                (*ct).nat_addr == rule.nat_addr
                    && !settings.ct_expired((*ct).state, (*ct).last_seen_ns, now)
            } =>
        unsafe {
            conntrack::update(&mut *ct, f, false, now);
            (*ct).nat_port
        },
        stale => {
            if let Some(ct) = stale {
                // SAFETY: read of a map value.
                let (addr, port) = unsafe { ((*ct).nat_addr, (*ct).nat_port) };
                let _ = REVNAT.remove(reply_key(&key, addr, port));
            }
            let port = allocate(ctx, &key, rule.nat_addr, settings)?;
            let mut ct = CtEntry {
                nat_addr: rule.nat_addr,
                nat_port: port,
                state: conntrack::initial_state(f),
                flags: 0,
                created_ns: now,
                last_seen_ns: now,
                packets_orig: 0,
                packets_reply: 0,
            };
            conntrack::update(&mut ct, f, false, now);
            if CONNTRACK.insert(&key, &ct, 0).is_err() {
                let _ = REVNAT.remove(reply_key(&key, rule.nat_addr, port));
                return Err(Stat::DropSnatNoPort);
            }
            count(Stat::SnatNew, ctx.len());
            port
        }
    };
    set_port(ctx, f, f.l4 + port_field(f.proto), f.sport, nat_port)?;
    l4_addr(ctx, f, f.saddr, rule.nat_addr)?;
    Ok(rule.nat_addr)
}

/// Offset of the translated "port" in the L4 header: the source/destination
/// port of TCP and UDP are at 0/2; the ICMP echo identifier is at 4.
#[inline(always)]
fn port_field(proto: u8) -> usize {
    if proto == IPPROTO_ICMP { 4 } else { 0 }
}

/// Claims a NAT port for `key`: its own source port when free, else up to
/// [`PORT_TRIES`] ports of the range from a random start.
#[inline(always)]
fn allocate(
    ctx: &TcContext,
    key: &CtKey,
    nat_addr: [u8; 4],
    s: &NodeSettings,
) -> Result<u16, Stat> {
    let rev = RevNat {
        addr: key.saddr,
        port: key.sport,
        _pad: 0,
    };
    if claim(ctx, key, nat_addr, key.sport, &rev) {
        return Ok(key.sport);
    }
    let min = u32::from(s.nat_port_min);
    let span = u32::from(s.nat_port_max).saturating_sub(min) + 1;
    // SAFETY: helper without arguments.
    let start = unsafe { bpf_get_prandom_u32() } % span;
    for i in 0..PORT_TRIES {
        if i >= span {
            break;
        }
        let port = (min + (start + i) % span) as u16;
        if claim(ctx, key, nat_addr, port, &rev) {
            count(Stat::SnatPortChanged, ctx.len());
            return Ok(port);
        }
    }
    Err(Stat::DropSnatNoPort)
}

/// Claims `port` for `key` by inserting its reverse entry; an existing entry
/// that already points at the same pod address and port is ours (its
/// forward entry was evicted or expired). A port the node's own sockets use
/// towards the same peer is never claimed.
#[inline(always)]
fn claim(ctx: &TcContext, key: &CtKey, nat_addr: [u8; 4], port: u16, rev: &RevNat) -> bool {
    let rkey = reply_key(key, nat_addr, port);
    if node_uses(ctx, &rkey) {
        return false;
    }
    if REVNAT.insert(&rkey, rev, u64::from(BPF_NOEXIST)).is_ok() {
        return true;
    }
    // SAFETY: read of a map value.
    matches!(unsafe { REVNAT.get(&rkey) }, Some(r) if r.addr == rev.addr && r.port == rev.port)
}

/// Whether a socket of the node would receive the reply tuple `rkey`: the
/// node's own connection to the same peer from the same address and port
/// (netfilter sees the node's connections in its table; the datapath asks
/// the socket table, once per new connection). Listening TCP sockets do not
/// count: replies to a translated flow never reach them. ICMP echo has no
/// socket lookup; its identifiers are not checked.
#[inline(always)]
fn node_uses(ctx: &TcContext, rkey: &CtKey) -> bool {
    let mut tuple = bpf_sock_tuple {
        __bindgen_anon_1: bpf_sock_tuple__bindgen_ty_1 {
            ipv4: bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1 {
                saddr: u32::from_ne_bytes(rkey.saddr),
                daddr: u32::from_ne_bytes(rkey.daddr),
                sport: rkey.sport.to_be(),
                dport: rkey.dport.to_be(),
            },
        },
    };
    let size = core::mem::size_of::<bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1>() as u32;
    let skb = ctx.skb.skb.cast();
    // SAFETY: `tuple` is a valid IPv4 tuple on the stack and `size` its
    // size; every socket the helpers return is released below.
    unsafe {
        match rkey.proto {
            IPPROTO_TCP => {
                let sk =
                    bpf_skc_lookup_tcp(skb, &raw mut tuple, size, BPF_F_CURRENT_NETNS as u64, 0);
                if sk.is_null() {
                    return false;
                }
                let listening = (*sk).state == BPF_TCP_LISTEN;
                bpf_sk_release(sk.cast());
                !listening
            }
            IPPROTO_UDP => {
                let sk =
                    bpf_sk_lookup_udp(skb, &raw mut tuple, size, BPF_F_CURRENT_NETNS as u64, 0);
                if sk.is_null() {
                    return false;
                }
                bpf_sk_release(sk.cast());
                true
            }
            _ => false,
        }
    }
}

/// Reverse-translates a reply `f` arriving on an uplink, if it belongs to a
/// translated connection: rewrites the destination port and the L4
/// checksum back to the pod's and updates the connection. Returns the pod's
/// address (the new destination, for [`crate::l3::rewrite_headers`]).
#[inline(always)]
pub fn rev_snat(ctx: &TcContext, f: &Flow) -> Result<Option<[u8; 4]>, Stat> {
    let rkey = conntrack::reply_key_of(f);
    // SAFETY: the value is copied out at once.
    let Some(rev) = (unsafe { REVNAT.get(&rkey) }).copied() else {
        return Ok(None);
    };
    let orig = CtKey {
        saddr: rev.addr,
        daddr: f.saddr,
        sport: rev.port,
        dport: rkey.sport,
        proto: f.proto,
        _pad: [0; 3],
    };
    if let Some(ct) = CONNTRACK.get_ptr_mut(&orig) {
        // SAFETY: in-place update of a map value, as in `snat`.
        unsafe { conntrack::update(&mut *ct, f, true, conntrack::now()) };
    }
    let port_off = if f.proto == IPPROTO_ICMP {
        f.l4 + 4
    } else {
        f.l4 + 2
    };
    let old_port = if f.proto == IPPROTO_ICMP {
        f.sport
    } else {
        f.dport
    };
    set_port(ctx, f, port_off, old_port, rev.port)?;
    l4_addr(ctx, f, f.daddr, rev.addr)?;
    Ok(Some(rev.addr))
}
