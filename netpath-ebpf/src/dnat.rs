//! Destination NAT: port-forwards (a node address and port) and services
//! (a VIP and port) to backends, their replies translated back, and the
//! hairpin of a pod reaching a frontend that selects the pod itself.
//!
//! One conntrack for SNAT and DNAT: a destination-translated connection is
//! one entry of `conntrack_v2` at its original tuple, client C:cp →
//! frontend F:fp, with the backend B:bp as `nat_addr`/`nat_port` and the
//! [`ct_flags::DNAT`] flag (and [`ct_flags::HAIRPIN`] when the client is
//! the backend itself). Its reverse entry in `revnat_v2` is at
//! `dnat_reply_key(orig, B, bp, hairpin)`: B:bp → C:cp, or for a hairpin
//! B:bp → gateway:cp (the backend sees the connection coming from the
//! gateway, so its replies come back to the node), holding F:fp with the
//! same DNAT/HAIRPIN flags. `reply_of` gives that tuple from the entry.
//!
//! # Invariants (nat.rs's I1-I4, for DNAT entries)
//!
//! - **D1 (pairing)**: every live DNAT entry has its reverse entry at
//!   `reply_of(orig, entry)`, leading back to it (`RevNat::leads_back`:
//!   the frontend and port) with the same DNAT/HAIRPIN flags. Kept by: the
//!   reverse entry (the claim) is inserted before the forward entry
//!   ([`create`]); every forward packet checks it and re-inserts a missing
//!   one (`nat_repair_reverse`) or, taken by another connection, drops its
//!   own entry and picks again (`nat_conflict`) ([`partner`]).
//! - **D2 (uniqueness)**: one backend reply tuple belongs to one
//!   connection: a claim is made with `BPF_NOEXIST` after a lookup, and a
//!   tuple held by a live connection is `drop_dnat_tuple_taken` (two
//!   frontends leading one client port to one backend), never shared.
//! - **D3 (race-free creation)**: the forward entry is inserted with
//!   `BPF_NOEXIST`; the CPU that loses releases its own claim (only if it
//!   still leads back to the tuple and is not the winner's) and uses the
//!   winner's backend (`nat_race_lost`).
//! - **D4 (ownership)**: a reverse entry is deleted only by its own
//!   connection (expired: [`forward`]) or once proved dead by
//!   `nat::claim_dead` (its connection maps elsewhere, expired, or missing
//!   past the grace period), or when a reply finds it stale ([`reverse`]).
//! - The SNAT paths leave DNAT-flagged reverse entries alone
//!   (`nat::rev_snat`, `icmp::rev_snat_error`, `nat::claim_dead` compares
//!   by `reply_of`), and the DNAT paths leave SNAT entries alone
//!   ([`forward`] returns "not ours" for a connection without the flag).
//!
//! # Walks
//!
//! - [`from_pod_subprog`] (`np_from_pod`, after source verification): a
//!   backend pod's reply → [`reverse`] (source back to F:fp; hairpin:
//!   destination gateway → the client); a packet to a frontend →
//!   [`forward`]; ICMP errors about DNAT connections → `icmp::dnat_error`.
//!   The walk then continues with the translated packet (a local pod is
//!   delivered to, anything else routed, and masqueraded if a rule says
//!   so: a service backend on the LAN).
//! - [`from_uplink_subprog`] (`np_from_uplink`, when no SNAT reply
//!   matched): a LAN client to a frontend → [`forward`] to a local pod only
//!   (`drop_dnat_remote_backend` otherwise: backends off the node are
//!   reachable from pods only).
//!
//! A frontend with no backends is refused: [`REJECT`], and the walk's
//! entry point sends a TCP RST or ICMP port unreachable back
//! ([`crate::reject`]). A TCP packet that is not a SYN and has no entry
//! (entries lost) is picked up: the Maglev pick is a function of the tuple,
//! so it gets the backend its SYN got (`lb.rs`, L1).
//!
//! Known limits: later fragments of a DNAT connection are not translated
//! (they carry no ports); ICMP errors about a hairpinned connection are not
//! translated; TCP and UDP only (an ICMP echo to a VIP is not translated).

use aya_ebpf::{
    bindings::BPF_NOEXIST, btf_maps::PerCpuArray, macros::btf_map, programs::TcContext,
};
use netpath_common::{
    CtEntry, CtKey, Endpoint, Frontend, NodeSettings, RevNat, Stat, ct_flags, dnat_reply_key,
    original_of, reply_of,
};
use network_types::{
    eth::{EthHdr, EtherType},
    ip::Ipv4Hdr,
};

use crate::{
    conntrack::{self, Segment, Verdict, orig_key, reply_key_of},
    endpoint, icmp,
    l3::{l4_addr, rewrite, set_port, word32},
    lb,
    maps::{CONNTRACK, REVNAT, SETTINGS},
    nat,
    parse::{self, Flow, IPPROTO_TCP, IPPROTO_UDP, Ipv4Packet, TCP_RST},
    router::{self, Destination},
    source,
    stats::count,
};

/// What the DNAT subprograms return: not a DNAT packet (the walk goes on
/// untouched).
pub const NONE: i32 = 0;
/// Translated toward its backend (the new destination is [`target`]).
pub const FORWARD: i32 = 1;
/// A backend's reply (or an ICMP error about a connection) translated
/// toward the client (the new destination is [`target`]).
pub const REVERSE: i32 = 2;
/// A frontend without backends: the walk's entry point refuses the packet
/// ([`crate::reject`]).
pub const REJECT: i32 = 3;
/// Dropped; the reason is in the subprogram's `stat`.
pub const DROP: i32 = -1;

/// `-EEXIST`, what a `BPF_NOEXIST` insert of an existing key returns.
const EEXIST: i32 = 17;

/// The flags that say how to read a connection entry's mapping.
const KIND: u8 = ct_flags::NODE | ct_flags::DNAT | ct_flags::HAIRPIN;

/// IPv4 source and destination address offsets in the frame.
pub const IP_SADDR: usize = EthHdr::LEN + 12;
pub const IP_DADDR: usize = EthHdr::LEN + 16;
/// The IPv4 header checksum's offset in the frame.
const IP_CHECK: usize = EthHdr::LEN + 10;

/// DNAT on a packet from a pod (source already verified). A BPF
/// subprogram: its frame is not added to the walk's (512-byte stack).
#[inline(never)]
pub fn from_pod_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    let code = match from_pod(ctx) {
        Ok(code) => code,
        Err(s) => {
            *stat = s;
            DROP
        }
    };
    if let Ok(sc) = scratch() {
        // SAFETY: the per-CPU scratch slot (see `DNAT_SCRATCH`).
        unsafe { (*sc).code = code };
    }
    code
}

/// What [`from_pod_subprog`] did to this packet ([`NONE`], [`FORWARD`],
/// [`REVERSE`]): read where the walk needs it rather than kept in its
/// stack frame, which is at the 512-byte limit's edge.
#[inline(always)]
pub fn code() -> i32 {
    match scratch() {
        // SAFETY: the per-CPU scratch slot, written for this packet.
        Ok(sc) => unsafe { (*sc).code },
        Err(_) => NONE,
    }
}

#[inline(always)]
fn from_pod(ctx: &TcContext) -> Result<i32, Stat> {
    let Some(f) = flow_of(ctx) else {
        return Ok(NONE);
    };
    // Only a packet that passes the walk's checks: source verification
    // (the pod's address and MAC) and a routable destination. Anything
    // else is left untouched for the walk to drop or pass.
    let Ok(smac) = parse::src_mac(ctx) else {
        return Ok(NONE);
    };
    let Ok(src) = source::verify_ipv4(ctx, f.saddr, smac) else {
        return Ok(NONE);
    };
    if !matches!(router::destination(f.daddr), Destination::Unicast) {
        return Ok(NONE);
    }
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot (see `DNAT_SCRATCH`).
    unsafe { (*sc).src = src };
    // An expiring TTL is answered by the router, untranslated, before any
    // state is made.
    if f.ttl <= 1 {
        return Ok(NONE);
    }
    match f.proto {
        IPPROTO_TCP | IPPROTO_UDP => {}
        _ if icmp::is_error(&f) => {
            if let Some(to) = icmp::dnat_error(ctx, &f, icmp::TOWARD_CLIENT)? {
                set_target(to)?;
                return Ok(REVERSE);
            }
            if let Some(to) = icmp::dnat_error(ctx, &f, icmp::TOWARD_BACKEND)? {
                set_target(to)?;
                return Ok(FORWARD);
            }
            return Ok(NONE);
        }
        _ => return Ok(NONE),
    }
    if reverse(ctx, &f)? {
        return Ok(REVERSE);
    }
    forward(ctx, &f, true)
}

/// Keeps the flow the uplink walk parsed for [`from_uplink_subprog`] (in
/// this CPU's scratch slot: passed on the stack it would cost the frame
/// room the two halves of the walk do not have).
#[inline(always)]
pub fn stash_flow(f: &Flow) -> Result<(), Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot (see `DNAT_SCRATCH`).
    unsafe { (*sc).flow = *f };
    Ok(())
}

/// DNAT on a packet from an uplink that no SNAT reply matched (its flow
/// as the walk parsed it: [`stash_flow`]). A BPF subprogram, as
/// [`from_pod_subprog`].
#[inline(never)]
pub fn from_uplink_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    let res = (|| {
        let sc = scratch()?;
        // SAFETY: the per-CPU scratch slot, stashed for this packet; the
        // DNAT path never writes `flow`.
        let f = unsafe { &(*sc).flow };
        if f.later_fragment || f.ttl <= 1 {
            return Ok(NONE);
        }
        match f.proto {
            IPPROTO_TCP | IPPROTO_UDP => forward(ctx, f, false),
            _ if icmp::is_error(f) => match icmp::dnat_error(ctx, f, icmp::TOWARD_BACKEND)? {
                Some(to) => {
                    set_target(to)?;
                    Ok(FORWARD)
                }
                None => Ok(NONE),
            },
            _ => Ok(NONE),
        }
    })();
    match res {
        Ok(code) => code,
        Err(s) => {
            *stat = s;
            DROP
        }
    }
}

/// The pod the translated packet came from, verified before DNAT changed
/// its source ([`from_pod_subprog`]).
#[inline(always)]
pub fn source() -> Result<Endpoint, Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot, written for this packet.
    Ok(unsafe { (*sc).src })
}

/// Reverse DNAT of a reply the uplink walk translated back to its pod
/// already (source NAT: the pod reached a service backend off the node
/// through masquerade), on its stashed flow ([`stash_flow`]): [`REVERSE`]
/// when the source became the frontend, [`NONE`] when it is no DNAT
/// reply. A BPF subprogram, as [`from_pod_subprog`].
#[inline(never)]
pub fn reverse_subprog(ctx: &TcContext, stat: &mut Stat) -> i32 {
    let res = (|| {
        let sc = scratch()?;
        // SAFETY: the per-CPU scratch slot, stashed for this packet; the
        // DNAT path never writes `flow`.
        let f = unsafe { &(*sc).flow };
        if reverse(ctx, f)? {
            Ok(REVERSE)
        } else {
            Ok(NONE)
        }
    })();
    match res {
        Ok(code) => code,
        Err(s) => {
            *stat = s;
            DROP
        }
    }
}

/// Where the last translated packet goes (the backend, or the client of a
/// reply), as the subprogram left it in this CPU's scratch slot.
#[inline(always)]
pub fn target() -> Result<[u8; 4], Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot, written for this packet.
    Ok(unsafe { (*sc).target })
}

/// Sets [`target`] (the uplink walk: the pod a reply was translated to).
#[inline(always)]
pub fn set_target(addr: [u8; 4]) -> Result<(), Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot (see `DNAT_SCRATCH`).
    unsafe { (*sc).target = addr };
    Ok(())
}

/// The flow of the packet, if it is untagged IPv4 with a sound header, not
/// a later fragment, and a readable L4 header (anything else is not
/// DNAT's: the walk parses it, counts and decides). The checks are
/// `parse::parse_ipv4`'s, without its counters: the walk's own parse
/// counts the packet's properties once.
#[inline(always)]
pub fn flow_of(ctx: &TcContext) -> Option<Flow> {
    const LEN: usize = EthHdr::LEN + Ipv4Hdr::LEN;
    if parse::vlan_tagged(ctx) {
        return None;
    }
    if ctx.data() + LEN > ctx.data_end() && ctx.skb.pull_data(LEN as u32).is_err() {
        return None;
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    // Verifier: proves [data, data + LEN) is inside the packet.
    if data + LEN > end {
        return None;
    }
    let eth = data as *mut EthHdr;
    let ip = (data + EthHdr::LEN) as *mut Ipv4Hdr;
    // SAFETY: both headers were bounds-checked just above.
    let (ether_type, vihl, tot_len, proto) = unsafe {
        (
            (*eth).ether_type,
            (*ip).vihl,
            usize::from(u16::from_be_bytes((*ip).tot_len)),
            (*ip).proto,
        )
    };
    let len = ctx.len() as usize;
    let ihl_bytes = usize::from(vihl & 0x0f) * 4;
    // BIG TCP: a TCP GSO packet may carry total length 0.
    // SAFETY: reading a field of the context the kernel handed us.
    let tot_len = if tot_len == 0 && proto == IPPROTO_TCP && unsafe { (*ctx.skb.skb).gso_size } != 0
    {
        len.saturating_sub(EthHdr::LEN)
    } else {
        tot_len
    };
    if ether_type != EtherType::Ipv4 as u16
        || vihl >> 4 != 4
        || ihl_bytes < Ipv4Hdr::LEN
        || tot_len < ihl_bytes
        || len < EthHdr::LEN + tot_len
    {
        return None;
    }
    let pkt = Ipv4Packet {
        eth,
        ip,
        ihl_bytes,
        tot_len,
    };
    let f = parse::flow(ctx, &pkt).ok()?;
    if f.later_fragment {
        return None;
    }
    Some(f)
}

#[inline(always)]
fn settings() -> &'static NodeSettings {
    SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT)
}

/// A backend's reply `f`: if a DNAT reverse entry holds its tuple and its
/// connection maps there, the source becomes the frontend (hairpin: the
/// destination, the gateway, becomes the client) and the connection is
/// updated; a missing connection is re-created from the reverse entry
/// (`nat_repair_forward`), a stale reverse entry deleted (D4).
#[inline(always)]
fn reverse(ctx: &TcContext, f: &Flow) -> Result<bool, Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot; `rkey` is written once here.
    let rkey = unsafe {
        (*sc).rkey = reply_key_of(f);
        &(*sc).rkey
    };
    // SAFETY: the value is copied out at once.
    let Some(rev) = (unsafe { REVNAT.get(rkey) }).copied() else {
        return Ok(false);
    };
    if rev.flags & ct_flags::DNAT == 0 {
        return Ok(false);
    }
    let s = settings();
    // SAFETY: the per-CPU scratch slot; `key` and `seg` are written once.
    let (orig, seg) = unsafe {
        (*sc).key = original_of(rkey, &rev);
        (*sc).seg = conntrack::segment(ctx, f)?;
        (&(*sc).key, &(*sc).seg)
    };
    let now = conntrack::now();
    match CONNTRACK.get_ptr_mut(orig) {
        Some(ct) => {
            // SAFETY: fields read from the map value.
            let (maps_here, expired) = unsafe {
                (
                    reply_of(orig, &*ct, s.gateway) == *rkey
                        && (*ct).flags & KIND == rev.flags & KIND,
                    s.ct_expired(&*ct, now),
                )
            };
            if !maps_here {
                // The connection it leads back to has another backend:
                // the entry is stale (D4).
                let _ = REVNAT.remove(rkey);
                count(Stat::NatStaleReverse, ctx.len());
                return Ok(false);
            }
            if expired {
                // Over: its own next packet, or GC, cleans up.
                return Ok(false);
            }
            // SAFETY: in-place update of a map value (see conntrack.rs on
            // concurrent updates).
            note(
                unsafe { conntrack::update(&mut *ct, f, seg, true, now) },
                ctx,
            );
        }
        None => {
            // SAFETY: the per-CPU scratch slot.
            let e = unsafe { &mut (*sc).entry };
            let flags = rev.flags & (ct_flags::DNAT | ct_flags::HAIRPIN);
            if conntrack::open(e, f, seg, true, (rkey.saddr, rkey.sport), flags, now).is_err() {
                return Ok(false);
            }
            note(conntrack::update(e, f, seg, true, now), ctx);
            if CONNTRACK.insert(orig, e, u64::from(BPF_NOEXIST)).is_ok() {
                count(Stat::NatRepairForward, ctx.len());
            } else {
                // Re-created meanwhile by another CPU: it must map here.
                // SAFETY: read of a map value.
                match unsafe { CONNTRACK.get(orig) } {
                    Some(w) if reply_of(orig, w, s.gateway) == *rkey => {}
                    _ => return Ok(false),
                }
            }
        }
    }
    let hairpin = rev.flags & ct_flags::HAIRPIN != 0;
    let client = orig.saddr;
    set_port(ctx, f, f.l4, f.sport, rev.port)?;
    l4_addr(ctx, f, f.saddr, rev.addr)?;
    ip_addr(ctx, IP_SADDR, f.saddr, rev.addr)?;
    if hairpin {
        l4_addr(ctx, f, f.daddr, client)?;
        ip_addr(ctx, IP_DADDR, f.daddr, client)?;
    }
    set_target(if hairpin { client } else { f.daddr })?;
    Ok(true)
}

/// A packet `f` from a client (a pod when `from_pod`, else the uplink's
/// network): its DNAT connection's backend, checked against its reverse
/// entry (D1), or for a frontend a new connection; "not ours" when `f`
/// is neither.
#[inline(always)]
fn forward(ctx: &TcContext, f: &Flow, from_pod: bool) -> Result<i32, Stat> {
    let sc = scratch()?;
    let s = settings();
    // SAFETY: the per-CPU scratch slot; `key` is written once here.
    let key = unsafe {
        (*sc).key = orig_key(f);
        &(*sc).key
    };
    let now = conntrack::now();
    if let Some(ct) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: fields copied out of the map value.
        let (flags, b, bp, expired) = unsafe {
            (
                (*ct).flags,
                (*ct).nat_addr,
                (*ct).nat_port,
                s.ct_expired(&*ct, now),
            )
        };
        if flags & ct_flags::DNAT == 0 {
            // A source-translated connection of this tuple (a frontend
            // added while it ran): not ours.
            return Ok(NONE);
        }
        // SAFETY: the per-CPU scratch slot; `rkey` is written once here.
        let rkey = unsafe {
            (*sc).rkey = reply_of(key, &*ct, s.gateway);
            &(*sc).rkey
        };
        let kind = flags & (ct_flags::DNAT | ct_flags::HAIRPIN);
        if expired {
            // Ours to release (D4), then a new pick below.
            release(key, rkey);
            let _ = CONNTRACK.remove(key);
        } else {
            match partner(ctx, key, rkey, kind, now) {
                Partner::Ok => {
                    if !from_pod && endpoint::lookup(b).is_none() {
                        return Err(Stat::DropDnatRemoteBackend);
                    }
                    // SAFETY: the per-CPU scratch slot.
                    let seg = unsafe {
                        (*sc).seg = conntrack::segment(ctx, f)?;
                        &(*sc).seg
                    };
                    // SAFETY: in-place update of a map value.
                    note(
                        unsafe { conntrack::update(&mut *ct, f, seg, false, now) },
                        ctx,
                    );
                    translate_forward(ctx, f, b, bp, flags & ct_flags::HAIRPIN != 0, s)?;
                    return Ok(FORWARD);
                }
                Partner::Full => {
                    // Without its claim the entry may not live (D1).
                    let _ = CONNTRACK.remove(key);
                    return Err(Stat::DropNatTableFull);
                }
                Partner::Taken => {
                    // Never share the tuple (D2): pick again below.
                    count(Stat::NatConflict, ctx.len());
                    let _ = CONNTRACK.remove(key);
                }
            }
        }
    }
    let Some(fe) = lb::frontend(key) else {
        return Ok(NONE);
    };
    if fe.backends == 0 {
        // Refused, never a black hole; a RST is never answered.
        if f.proto == IPPROTO_TCP && f.tcp_flags & TCP_RST != 0 {
            return Err(Stat::DropNoBackend);
        }
        return Ok(REJECT);
    }
    create(ctx, sc, f, &fe, from_pod, s, now)
}

/// A new connection to frontend `fe`: validate its first packet, pick a
/// backend, claim the reply tuple, insert the forward entry (D1-D3), and
/// translate the packet.
#[inline(always)]
fn create(
    ctx: &TcContext,
    sc: *mut DnatScratch,
    f: &Flow,
    fe: &Frontend,
    from_pod: bool,
    s: &NodeSettings,
    now: u64,
) -> Result<i32, Stat> {
    // SAFETY: the per-CPU scratch slot; each field is written once here
    // and only read after.
    let (key, seg, e) = unsafe {
        (*sc).seg = conntrack::segment(ctx, f)?;
        (&(*sc).key, &(*sc).seg, &mut (*sc).entry)
    };
    // Can the packet open a connection at all? (Before any claim.)
    conntrack::open(e, f, seg, false, ([0; 4], 0), ct_flags::DNAT, now)?;
    let (be, affine) = lb::pick(fe, key, now)?;
    if !from_pod && endpoint::lookup(be.addr).is_none() {
        return Err(Stat::DropDnatRemoteBackend);
    }
    let hairpin = from_pod && be.addr == key.saddr;
    if hairpin && s.gateway == [0; 4] {
        // No gateway to put as the source: the pod would answer itself.
        return Err(Stat::DropRewriteFailed);
    }
    let kind = if hairpin {
        ct_flags::DNAT | ct_flags::HAIRPIN
    } else {
        ct_flags::DNAT
    };
    // SAFETY: the per-CPU scratch slot.
    let rkey = unsafe {
        (*sc).rkey = dnat_reply_key(key, be.addr, be.port, hairpin.then_some(s.gateway));
        &(*sc).rkey
    };
    claim(sc, key, rkey, kind, now)?;
    e.nat_addr = be.addr;
    e.nat_port = be.port;
    e.flags |= kind;
    note(conntrack::update(e, f, seg, false, now), ctx);
    if CONNTRACK.insert(key, e, u64::from(BPF_NOEXIST)).is_ok() {
        let len = ctx.len();
        count(Stat::DnatNew, len);
        crate::events::trace_backend(ctx, key, be.addr, be.port);
        if affine {
            count(Stat::LbAffinityHit, len);
        }
        if hairpin {
            count(Stat::DnatHairpin, len);
        }
        translate_forward(ctx, f, be.addr, be.port, hairpin, s)?;
        return Ok(FORWARD);
    }
    // Another CPU created the connection first (D3).
    let Some(w) = CONNTRACK.get_ptr_mut(key) else {
        release(key, rkey);
        return Err(Stat::DropNatTableFull);
    };
    // SAFETY: fields read from the map value.
    let (w_flags, w_addr, w_port, same) = unsafe {
        (
            (*w).flags,
            (*w).nat_addr,
            (*w).nat_port,
            reply_of(key, &*w, s.gateway) == *rkey,
        )
    };
    if !same {
        release(key, rkey);
    }
    if w_flags & ct_flags::DNAT == 0 {
        return Err(Stat::DropDnatTupleTaken);
    }
    if !from_pod && endpoint::lookup(w_addr).is_none() {
        return Err(Stat::DropDnatRemoteBackend);
    }
    count(Stat::NatRaceLost, ctx.len());
    // SAFETY: in-place update of a map value.
    note(
        unsafe { conntrack::update(&mut *w, f, seg, false, now) },
        ctx,
    );
    translate_forward(ctx, f, w_addr, w_port, w_flags & ct_flags::HAIRPIN != 0, s)?;
    Ok(FORWARD)
}

/// Claims the reply tuple `rkey` for DNAT connection `key` (D2): an entry
/// already leading back to it is ours, one proved dead is reclaimed (D4),
/// a live one is `drop_dnat_tuple_taken`.
#[inline(always)]
fn claim(sc: *mut DnatScratch, key: &CtKey, rkey: &CtKey, kind: u8, now: u64) -> Result<(), Stat> {
    // SAFETY: read of a map value; `r` is not used after the remove.
    if let Some(r) = unsafe { REVNAT.get(rkey) } {
        if r.leads_back(key) && r.flags == kind {
            return Ok(());
        }
        // SAFETY: the per-CPU scratch slot; `owner` is only used here.
        if !nat::claim_dead(unsafe { &mut (*sc).owner }, rkey, r, now) {
            return Err(Stat::DropDnatTupleTaken);
        }
        let _ = REVNAT.remove(rkey);
    }
    let rev = RevNat {
        addr: key.daddr,
        port: key.dport,
        flags: kind,
        _pad: 0,
        created_ns: now,
    };
    match REVNAT.insert(rkey, &rev, u64::from(BPF_NOEXIST)) {
        Ok(()) => Ok(()),
        Err(e) if e == -EEXIST => {
            // SAFETY: read of a map value.
            match unsafe { REVNAT.get(rkey) } {
                Some(r) if r.leads_back(key) && r.flags == kind => Ok(()),
                _ => Err(Stat::DropDnatTupleTaken),
            }
        }
        Err(_) => Err(Stat::DropNatTableFull),
    }
}

/// Releases the claim at `rkey` if it still leads back to DNAT connection
/// `key` (D3, D4).
#[inline(always)]
fn release(key: &CtKey, rkey: &CtKey) {
    // SAFETY: read of a map value.
    if matches!(unsafe { REVNAT.get(rkey) }, Some(r) if r.flags & ct_flags::DNAT != 0 && r.leads_back(key))
    {
        let _ = REVNAT.remove(rkey);
    }
}

/// The state of a live DNAT connection's claim.
enum Partner {
    Ok,
    Taken,
    Full,
}

/// Checks (and repairs) the reverse entry of live DNAT connection `key`
/// at `rkey` (D1).
#[inline(always)]
fn partner(ctx: &TcContext, key: &CtKey, rkey: &CtKey, kind: u8, now: u64) -> Partner {
    // SAFETY: read of a map value.
    match unsafe { REVNAT.get(rkey) } {
        Some(r) if r.leads_back(key) && r.flags & KIND == kind => return Partner::Ok,
        Some(_) => return Partner::Taken,
        None => {}
    }
    let rev = RevNat {
        addr: key.daddr,
        port: key.dport,
        flags: kind,
        _pad: 0,
        created_ns: now,
    };
    match REVNAT.insert(rkey, &rev, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            count(Stat::NatRepairReverse, ctx.len());
            Partner::Ok
        }
        // SAFETY: read of a map value.
        Err(e) if e == -EEXIST => match unsafe { REVNAT.get(rkey) } {
            Some(r) if r.leads_back(key) && r.flags & KIND == kind => Partner::Ok,
            _ => Partner::Taken,
        },
        Err(_) => Partner::Full,
    }
}

/// Rewrites `f` toward backend `b:bp`: destination port, address, the L4
/// checksum (pseudo-header) and the IPv4 checksum; for a hairpin the
/// source becomes the gateway too. The TTL is left to the walk.
#[inline(always)]
fn translate_forward(
    ctx: &TcContext,
    f: &Flow,
    b: [u8; 4],
    bp: u16,
    hairpin: bool,
    s: &NodeSettings,
) -> Result<(), Stat> {
    set_port(ctx, f, f.l4 + 2, f.dport, bp)?;
    l4_addr(ctx, f, f.daddr, b)?;
    ip_addr(ctx, IP_DADDR, f.daddr, b)?;
    if hairpin {
        l4_addr(ctx, f, f.saddr, s.gateway)?;
        ip_addr(ctx, IP_SADDR, f.saddr, s.gateway)?;
    }
    set_target(b)
}

/// Replaces the IPv4 address at `at` (the source or destination field)
/// and updates the header checksum; the L4 checksum is the caller's.
#[inline(always)]
pub fn ip_addr(ctx: &TcContext, at: usize, old: [u8; 4], new: [u8; 4]) -> Result<(), Stat> {
    if old == new {
        return Ok(());
    }
    rewrite(ctx.l3_csum_replace(IP_CHECK, word32(old), word32(new), 4))?;
    rewrite(ctx.store(at, &new, 0))
}

/// Counts what [`conntrack::update`] noticed.
#[inline(always)]
fn note(v: Verdict, ctx: &TcContext) {
    if v == Verdict::RstOutOfWindow {
        count(Stat::CtRstOutOfWindow, ctx.len());
    }
}

/// Per-CPU scratch space of the DNAT path: a connection entry being built
/// and the tuples it looks at, too large for the walk's stack. The program
/// runs to completion on its CPU (softirq), so nothing interleaves.
#[repr(C)]
pub struct DnatScratch {
    entry: CtEntry,
    /// The packet's original tuple (client → frontend).
    key: CtKey,
    /// The connection's reply tuple (backend → client or gateway).
    rkey: CtKey,
    /// The connection a claim's reverse entry leads back to.
    owner: CtKey,
    seg: Segment,
    /// Where the translated packet goes ([`target`]).
    target: [u8; 4],
    /// The pod a packet from a pod came from ([`source`]).
    src: Endpoint,
    /// [`from_pod_subprog`]'s result for this packet ([`code`]).
    code: i32,
    /// The uplink walk's flow ([`stash_flow`]).
    flow: Flow,
}

#[inline(always)]
fn scratch() -> Result<*mut DnatScratch, Stat> {
    // Slot 0 of a one-slot per-CPU array always exists.
    DNAT_SCRATCH.get_ptr_mut(0).ok_or(Stat::DropNatScratch)
}

/// The DNAT path's per-CPU scratch slot ([`DnatScratch`]). Not pinned.
#[btf_map(name = "dnat_scratch")]
pub static DNAT_SCRATCH: PerCpuArray<DnatScratch, 1> = PerCpuArray::new();
