//! Source NAT (masquerade) of pod traffic leaving the node, its reverse on
//! replies, and the translation of the node's own connections that collide
//! with a pod's.
//!
//! # Maps
//!
//! - `conntrack_v2` (LRU hash), the *forward* map: original tuple (as the
//!   pod or the node sent it) → [`CtEntry`] (NAT address and port, state).
//! - `revnat_v2` (plain hash), the *reverse* map: reply tuple (remote → NAT
//!   address and port) → [`RevNat`] (the original source). A reverse entry
//!   is the claim of its external tuple.
//!
//! The reverse map is a plain hash, not an LRU: an LRU evicts behind the
//! datapath's back, so a live connection's claim could vanish and another
//! connection take its tuple (two connections on one tuple), and on a full
//! LRU map even a *failed* `BPF_NOEXIST` insert evicts an entry. A plain hash
//! only loses an entry when someone deletes it, and a full one fails the
//! claim, a counted drop (`drop_nat_table_full`). It is sized larger than the
//! forward map (`maps::revnat_max`) so that reverse entries left behind by
//! forward evictions fit until they are repaired, reclaimed or collected.
//! The forward map stays an LRU: a full table keeps accepting connections by
//! evicting the least recently used one (both directions look their
//! connection up on every packet, so that is the idlest one), and its
//! reverse entry lets a reply re-create it with the same mapping.
//!
//! # Invariants
//!
//! For a forward entry `F` at original tuple `O` with NAT address and port
//! `(a, p)`, let `T = reply_key(O, a, p)`; `F` is *live* while not expired
//! (`NodeSettings::ct_expired`).
//!
//! - **I1 (pairing)**: every live `F` has a reverse entry at `T` that leads
//!   back to `O` (`RevNat::leads_back`) with the same NODE flag. Kept by:
//!   the claim at `T` is made before `F` is inserted; the original-side path
//!   checks it on every packet and re-inserts a missing one
//!   (`nat_repair_reverse`) or, when `T` now belongs to another connection,
//!   gives `O` a new mapping (`nat_conflict`); deletes of reverse entries are
//!   ownership-checked (I4).
//! - **I2 (uniqueness)**: one external tuple belongs to at most one
//!   connection: no two live forward entries have the same `T`. Kept by: a
//!   connection gets `T` only through a claim that found `T` free (inserted
//!   with `BPF_NOEXIST`), already leading back to `O`, or held by an entry
//!   proved dead (I4); and by I1's refusal.
//! - **I3 (race-free creation)**: the forward entry is inserted with
//!   `BPF_NOEXIST`; two CPUs creating one connection end with one mapping:
//!   the loser releases its own claim (only if it still leads back to `O`
//!   and is not the winner's tuple) and uses the winner's entry
//!   (`nat_race_lost`).
//! - **I4 (ownership)**: a reverse entry at `T` is deleted only by (a) its
//!   own connection replacing an expired or re-addressed mapping (it leads
//!   back to `O`), (b) a path that proved it dead: the entry it leads back to
//!   maps to another tuple, or is expired, or is missing for longer than
//!   `REVNAT_ORPHAN_GRACE_NS` (a claim is made just before its forward
//!   insert, so a fresh reverse entry without its forward one is being
//!   born), or (c) the garbage collector under the same rules, re-checked.
//! - **I5 (the node's connections)**: a reverse entry whose tuple a node
//!   connection uses (the node's address, port and peer) is never a pod's
//!   when the node's packet leaves: `np_to_uplink` translates a colliding
//!   node connection to a free port (NODE-flagged forward and reverse
//!   entries, replies passed to the node's stack), and a new pod connection
//!   never claims a tuple a node socket uses (socket lookup) or a node
//!   connection holds (its claim).
//!
//! Reverse entries whose forward entry is missing (an LRU eviction) are not
//! a violation: a reply re-creates the forward entry from them
//! (`nat_repair_forward`), a claim of their tuple reclaims them once past
//! the grace period, and GC collects them.
//!
//! `check_nat_invariants` in `netpath/src/conntrack.rs` checks I1, I2 and
//! the NODE flags over dumped maps (tests and the fuzzer).
//!
//! # Port allocation
//!
//! A new connection keeps its source port when the tuple is free;
//! otherwise [`PORT_TRIES`] ports are drawn at random from the range, each
//! try independent (no run of consecutive ports from one start, whose
//! clustering makes exhaustion appear well before the range is full, as
//! Cilium's `SNAT_COLLISION_RETRIES`). No free port is its own drop reason.

use aya_ebpf::{
    bindings::{
        __sk_buff, BPF_F_CURRENT_NETNS, BPF_NOEXIST, BPF_TCP_LISTEN, bpf_sock_tuple,
        bpf_sock_tuple__bindgen_ty_1, bpf_sock_tuple__bindgen_ty_1__bindgen_ty_1,
    },
    cty::c_void,
    helpers::{
        bpf_get_prandom_u32, bpf_loop, bpf_sk_lookup_udp, bpf_sk_release, bpf_skc_lookup_tcp,
    },
    programs::TcContext,
};
use aya_ebpf::{btf_maps::PerCpuArray, macros::btf_map};
use netpath_common::{
    CtEntry, CtKey, MasqRule, NodeSettings, REVNAT_ORPHAN_GRACE_NS, RevNat, Stat, ct_flags,
    original_of, reply_key, reply_of,
};

use crate::{
    conntrack::{self, Segment, Verdict, orig_key},
    l3::{l4_addr, set_port},
    maps::{CONNTRACK, REVNAT, SETTINGS},
    parse::{Flow, ICMP_ECHO, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP},
    stats::count,
};

/// Random ports tried from the range after the original one is taken.
const PORT_TRIES: u32 = 32;

/// `-EEXIST`, what a `BPF_NOEXIST` insert of an existing key returns.
const EEXIST: i32 = 17;

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
    let _ = settings;
    let r = snat_out(ctx.skb.skb, f, rule);
    if r >= 0 {
        Ok((r as u32).to_ne_bytes())
    } else {
        // SAFETY: `snat_out` encodes only `Stat` discriminants (see there).
        Err(unsafe { core::mem::transmute::<u32, Stat>((-r - 1) as u32) })
    }
}

/// The body of [`snat`], out of line: its stack frame is not added to the
/// rest of `np_from_pod`'s, which keeps the call chain (with the port
/// allocation's `bpf_loop` callback) within the 512-byte BPF stack. Returns
/// the NAT address as a native-endian `u32`, or `-(reason + 1)`.
#[inline(never)]
fn snat_out(skb: *mut __sk_buff, f: &Flow, rule: &MasqRule) -> i64 {
    let ctx = TcContext::new(skb);
    let settings = SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT);
    let res = (|| {
        let sc = scratch()?;
        // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`); the
        // fields written here are only read from now on.
        let (seg, key) = unsafe {
            (*sc).seg = conntrack::segment(&ctx, f)?;
            (*sc).key = orig_key(f);
            (&(*sc).seg, &(*sc).key)
        };
        let (nat_addr, nat_port) = translate(&ctx, sc, f, seg, key, rule.nat_addr, 0, settings)?;
        set_port(&ctx, f, f.l4 + port_field(f.proto), f.sport, nat_port)?;
        l4_addr(&ctx, f, f.saddr, nat_addr)?;
        Ok::<_, Stat>(nat_addr)
    })();
    match res {
        Ok(addr) => i64::from(u32::from_ne_bytes(addr)),
        Err(stat) => -(stat as i64) - 1,
    }
}

/// Translates a packet of the node's own connection `f` leaving through an
/// uplink (`np_to_uplink`), when it has to be: when the node connection
/// already has a NODE entry, or when a reverse entry holds its tuple (a
/// pod's translated flow, or a stale one). ICMP echo requests of the node
/// are always claimed (with their own identifier when free), so that a pod
/// never takes the identifier of a ping the node has running: echo has no
/// socket to look up. Only the port changes: the node's address is the NAT
/// address.
#[inline(always)]
pub fn node_snat(ctx: &TcContext, f: &Flow, settings: &NodeSettings) -> Result<(), Stat> {
    let sc = scratch()?;
    // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`); the fields
    // written here are only read from now on.
    let key = unsafe {
        (*sc).key = orig_key(f);
        &(*sc).key
    };
    let tracked = match CONNTRACK.get_ptr(key) {
        // SAFETY: read of a map value.
        Some(ct) => (unsafe { (*ct).flags } & ct_flags::NODE) != 0,
        None => false,
    };
    if !tracked
        && f.proto != IPPROTO_ICMP
        // SAFETY: a lookup only; nothing is read.
        && unsafe { REVNAT.get(&reply_key(key, f.saddr, key.sport)) }.is_none()
    {
        // Nothing holds the tuple; a pod never claims it while the node's
        // socket exists (`node_uses`).
        return Ok(());
    }
    // SAFETY: as above.
    let seg = unsafe {
        (*sc).seg = conntrack::segment(ctx, f)?;
        &(*sc).seg
    };
    let (_, nat_port) = translate(ctx, sc, f, seg, key, f.saddr, ct_flags::NODE, settings)?;
    set_port(ctx, f, f.l4 + port_field(f.proto), f.sport, nat_port)
}

/// The connection of original tuple `key` (owned by a pod, or by the node
/// when `owner` is [`ct_flags::NODE`]) translated to `nat_addr`: its NAT
/// address and port, after the partner check (I1), or a new mapping.
/// Updates the state with the packet.
#[expect(
    clippy::too_many_arguments,
    reason = "inlined eBPF helper; a struct would only be rebuilt on the stack"
)]
#[inline(always)]
fn translate(
    ctx: &TcContext,
    sc: *mut NatScratch,
    f: &Flow,
    seg: &Segment,
    key: &CtKey,
    nat_addr: [u8; 4],
    owner: u8,
    settings: &NodeSettings,
) -> Result<([u8; 4], u16), Stat> {
    let now = conntrack::now();
    if let Some(ct) = CONNTRACK.get_ptr_mut(key) {
        // SAFETY: fields copied out of the map value; the in-place updates
        // below go through the pointer again.
        let (cur_addr, cur_port, cur_flags, expired) = unsafe {
            (
                (*ct).nat_addr,
                (*ct).nat_port,
                (*ct).flags,
                settings.ct_expired(&*ct, now),
            )
        };
        // SAFETY: the per-CPU scratch slot; `rkey` is not written again
        // while this reference is used.
        let rkey = unsafe {
            (*sc).rkey = reply_key(key, cur_addr, cur_port);
            &(*sc).rkey
        };
        let same_mapping = cur_addr == nat_addr && cur_flags & ct_flags::NODE == owner;
        if same_mapping && !expired {
            match partner(ctx, sc, key, rkey, owner, now) {
                Partner::Ok => {
                    // SAFETY: in-place update of a map value; see the
                    // conntrack module on concurrent updates.
                    note(
                        unsafe { conntrack::update(&mut *ct, f, seg, false, now) },
                        ctx,
                    );
                    return Ok((nat_addr, cur_port));
                }
                Partner::Full => {
                    // Without its claim the entry may not live (I1).
                    let _ = CONNTRACK.remove(key);
                    return Err(Stat::DropNatTableFull);
                }
                Partner::Taken => {
                    // Another connection holds our tuple: never share it
                    // (I2); this connection gets a new mapping below.
                    count(Stat::NatConflict, ctx.len());
                    let _ = CONNTRACK.remove(key);
                }
            }
        } else {
            // Expired, or the masquerade address changed. Our claim is ours
            // to keep or release (I4 a).
            // SAFETY: read of a map value.
            let ours = matches!(unsafe { REVNAT.get(rkey) }, Some(r) if r.leads_back(key));
            if ours && same_mapping {
                // The connection comes back after expiring, with its claim
                // in place: a fresh entry, same port. Two CPUs doing this
                // write the same mapping.
                // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`).
                let e = unsafe { &mut (*sc).entry };
                conntrack::open(e, f, seg, false, (nat_addr, cur_port), owner, now)?;
                note(conntrack::update(e, f, seg, false, now), ctx);
                let _ = CONNTRACK.insert(key, e, 0);
                count(new_stat(owner), ctx.len());
                return Ok((nat_addr, cur_port));
            }
            if ours {
                let _ = REVNAT.remove(rkey);
            }
            let _ = CONNTRACK.remove(key);
        }
    }
    create(ctx, sc, f, seg, key, nat_addr, owner, settings, now)
}

/// A new connection: validate its first packet, claim a tuple, insert the
/// forward entry with `BPF_NOEXIST` (I3).
#[expect(
    clippy::too_many_arguments,
    reason = "inlined eBPF helper; a struct would only be rebuilt on the stack"
)]
#[inline(always)]
fn create(
    ctx: &TcContext,
    sc: *mut NatScratch,
    f: &Flow,
    seg: &Segment,
    key: &CtKey,
    nat_addr: [u8; 4],
    owner: u8,
    settings: &NodeSettings,
    now: u64,
) -> Result<([u8; 4], u16), Stat> {
    // Check the packet can open a connection before claiming anything.
    // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`).
    conntrack::open(
        unsafe { &mut (*sc).entry },
        f,
        seg,
        false,
        (nat_addr, 0),
        owner,
        now,
    )?;
    let port = allocate(ctx, sc, key, nat_addr, owner, settings, now)?;
    // SAFETY: as above; `allocate` is done with the slot's request.
    let e = unsafe { &mut (*sc).entry };
    e.nat_port = port;
    note(conntrack::update(e, f, seg, false, now), ctx);
    if CONNTRACK.insert(key, e, u64::from(BPF_NOEXIST)).is_ok() {
        count(new_stat(owner), ctx.len());
        crate::events::trace_snat(ctx, new_stat(owner), key, nat_addr, port);
        return Ok((nat_addr, port));
    }
    // Another CPU created the connection first (or the insert failed).
    // SAFETY: the per-CPU scratch slot; `rkey` is free again here.
    let mine = unsafe {
        (*sc).rkey = reply_key(key, nat_addr, port);
        &(*sc).rkey
    };
    let Some(w) = CONNTRACK.get_ptr_mut(key) else {
        release(key, mine);
        return Err(Stat::DropNatTableFull);
    };
    // SAFETY: read of a map value.
    let (w_addr, w_port) = unsafe { ((*w).nat_addr, (*w).nat_port) };
    if w_addr != nat_addr || w_port != port {
        release(key, mine);
    }
    count(Stat::NatRaceLost, ctx.len());
    // SAFETY: in-place update of a map value.
    note(
        unsafe { conntrack::update(&mut *w, f, seg, false, now) },
        ctx,
    );
    Ok((w_addr, w_port))
}

/// Releases the claim at `rkey` if it still leads back to `key` (I3, I4).
#[inline(always)]
fn release(key: &CtKey, rkey: &CtKey) {
    // SAFETY: read of a map value.
    if matches!(unsafe { REVNAT.get(rkey) }, Some(r) if r.leads_back(key)) {
        let _ = REVNAT.remove(rkey);
    }
}

#[inline(always)]
fn new_stat(owner: u8) -> Stat {
    if owner & ct_flags::NODE != 0 {
        Stat::NodeNatNew
    } else {
        Stat::SnatNew
    }
}

/// Counts what [`conntrack::update`] noticed.
#[inline(always)]
fn note(v: Verdict, ctx: &TcContext) {
    if v == Verdict::RstOutOfWindow {
        count(Stat::CtRstOutOfWindow, ctx.len());
    }
}

/// The state of a live connection's claim.
enum Partner {
    /// Leads back to the connection (or was re-inserted).
    Ok,
    /// Held by another connection.
    Taken,
    /// Missing, and the reverse map is full.
    Full,
}

/// Checks (and repairs) the reverse entry of the live connection `key`
/// whose tuple is `rkey` (I1).
#[inline(always)]
fn partner(
    ctx: &TcContext,
    sc: *mut NatScratch,
    key: &CtKey,
    rkey: &CtKey,
    owner: u8,
    now: u64,
) -> Partner {
    // SAFETY: read of a map value.
    match unsafe { REVNAT.get(rkey) } {
        Some(r) if r.leads_back(key) && r.flags & (ct_flags::NODE | ct_flags::DNAT) == owner => {
            return Partner::Ok;
        }
        Some(_) => return Partner::Taken,
        None => {}
    }
    // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`).
    let rev = unsafe {
        (*sc).req.rev = RevNat {
            addr: key.saddr,
            port: key.sport,
            flags: owner,
            _pad: 0,
            created_ns: now,
        };
        &(*sc).req.rev
    };
    match REVNAT.insert(rkey, rev, u64::from(BPF_NOEXIST)) {
        Ok(()) => {
            count(Stat::NatRepairReverse, ctx.len());
            Partner::Ok
        }
        Err(e) if e == -EEXIST => {
            // Re-inserted by another CPU for this connection, or taken.
            // SAFETY: read of a map value.
            match unsafe { REVNAT.get(rkey) } {
                Some(r) if r.leads_back(key) => Partner::Ok,
                _ => Partner::Taken,
            }
        }
        Err(_) => Partner::Full,
    }
}

/// Offset of the translated "port" in the L4 header: the source/destination
/// port of TCP and UDP are at 0/2; the ICMP echo identifier is at 4.
#[inline(always)]
fn port_field(proto: u8) -> usize {
    if proto == IPPROTO_ICMP { 4 } else { 0 }
}

/// What a claim of one tuple found.
#[derive(PartialEq, Eq)]
enum Claim {
    Claimed,
    Taken,
    Full,
}

/// What a port allocation needs: it lives in the per-CPU scratch slot,
/// where [`try_port`], the `bpf_loop` callback, reads it.
#[repr(C)]
pub struct AllocReq {
    key: CtKey,
    /// The reverse entry to claim with (the original source, owner flags).
    rev: RevNat,
    nat_addr: [u8; 4],
    port_min: u16,
    port_max: u16,
    now: u64,
}

/// The per-CPU scratch slot of the NAT path (`NAT_SCRATCH`).
#[repr(C)]
pub struct NatScratch {
    /// A connection entry being built.
    pub entry: CtEntry,
    req: AllocReq,
    /// The packet's original tuple and TCP fields.
    key: CtKey,
    seg: Segment,
    /// The connection's reply tuple.
    rkey: CtKey,
    /// The tuple a port claim looks at, and the connection a reverse entry
    /// there leads back to ([`claim`], [`dead`]).
    claim_rkey: CtKey,
    claim_owner: CtKey,
}

/// This CPU's scratch slot.
#[inline(always)]
fn scratch() -> Result<*mut NatScratch, Stat> {
    // Slot 0 of a one-slot per-CPU array always exists.
    NAT_SCRATCH.get_ptr_mut(0).ok_or(Stat::DropNatScratch)
}

/// [`try_port`]'s result for a full reverse map.
const ALLOC_FULL: i64 = -1;
/// [`try_port`]'s result when no port of the range was free.
const ALLOC_NO_PORT: i64 = -2;

/// Claims a NAT port for `key`: its own source port when free, else up to
/// [`PORT_TRIES`] random ports of the range.
#[expect(
    clippy::too_many_arguments,
    reason = "inlined eBPF helper; a struct would only be rebuilt on the stack"
)]
#[inline(always)]
fn allocate(
    ctx: &TcContext,
    sc: *mut NatScratch,
    key: &CtKey,
    nat_addr: [u8; 4],
    owner: u8,
    s: &NodeSettings,
    now: u64,
) -> Result<u16, Stat> {
    // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`).
    let req = unsafe { &mut (*sc).req };
    req.key = *key;
    req.rev = RevNat {
        addr: key.saddr,
        port: key.sport,
        flags: owner,
        _pad: 0,
        created_ns: now,
    };
    req.nat_addr = nat_addr;
    req.port_min = s.nat_port_min;
    req.port_max = s.nat_port_max;
    req.now = now;
    let mut state = PortLoop {
        skb: ctx.skb.skb,
        result: ALLOC_NO_PORT,
    };
    // Try 0 is the connection's own port, then [`PORT_TRIES`] random ones.
    // In `bpf_loop` the verifier checks one try, not every try unrolled.
    // SAFETY: `try_port` has bpf_loop's callback signature and `state`
    // outlives the call.
    unsafe {
        bpf_loop(
            PORT_TRIES + 1,
            try_port as *mut c_void,
            (&raw mut state).cast(),
            0,
        )
    };
    match state.result {
        port @ 0.. => Ok(port as u16),
        ALLOC_FULL => Err(Stat::DropNatTableFull),
        _ if owner & ct_flags::NODE != 0 => Err(Stat::DropNodeNatNoPort),
        _ => Err(Stat::DropSnatNoPort),
    }
}

/// The state [`try_port`] shares with [`allocate`] (on the latter's stack,
/// as `bpf_loop` wants).
#[repr(C)]
struct PortLoop {
    skb: *mut __sk_buff,
    /// The port claimed, or [`ALLOC_FULL`] / [`ALLOC_NO_PORT`].
    result: i64,
}

/// One try of [`allocate`] (a `bpf_loop` callback) on the request in the
/// scratch slot: try 0 claims the connection's own port, the others a
/// random port of the range. 1 stops the loop, 0 goes on.
extern "C" fn try_port(index: u64, state: *mut c_void) -> i64 {
    let state: *mut PortLoop = state.cast();
    let Some(sc) = NAT_SCRATCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: `state` is allocate's `PortLoop` (bpf_loop passes it
    // through); `sc` the per-CPU scratch slot, filled by `allocate`.
    unsafe {
        let req = &(*sc).req;
        let ctx = TcContext::new((*state).skb);
        let (port, own_socket_ok) = if index == 0 {
            // The node's own socket uses its own port: not a collision
            // for the node's connection.
            (req.key.sport, req.rev.flags & ct_flags::NODE != 0)
        } else {
            let min = u32::from(req.port_min);
            let span = u32::from(req.port_max).saturating_sub(min) + 1;
            ((min + bpf_get_prandom_u32() % span) as u16, false)
        };
        match claim(&ctx, sc, port, own_socket_ok) {
            Claim::Claimed => {
                if index != 0 {
                    count(Stat::SnatPortChanged, ctx.len());
                }
                (*state).result = i64::from(port);
                1
            }
            Claim::Full => {
                (*state).result = ALLOC_FULL;
                1
            }
            Claim::Taken => 0,
        }
    }
}

/// Claims `port` for `req.key` by inserting its reverse entry with
/// `BPF_NOEXIST`, after looking it up: an entry that already leads back to
/// the key is ours (its forward entry was evicted, or another CPU is
/// creating the same connection), one proved dead is reclaimed (I4 b). A
/// port the node's own sockets use towards the same peer is never claimed,
/// unless `own_socket_ok` (the node's connection keeping its own port).
#[inline(always)]
fn claim(ctx: &TcContext, sc: *mut NatScratch, port: u16, own_socket_ok: bool) -> Claim {
    // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`): the
    // request is only read here, `claim_rkey` written once before use.
    let (req, rkey) = unsafe {
        let req = &(*sc).req;
        (*sc).claim_rkey = reply_key(&req.key, req.nat_addr, port);
        (req, &(*sc).claim_rkey)
    };
    let key = &req.key;
    if !own_socket_ok && node_uses(ctx, rkey) {
        return Claim::Taken;
    }
    // SAFETY: read of a map value; `r` is not used after the remove.
    if let Some(r) = unsafe { REVNAT.get(rkey) } {
        if r.leads_back(key) && r.flags == req.rev.flags {
            return Claim::Claimed;
        }
        if !dead(sc, rkey, r, req.now) {
            return Claim::Taken;
        }
        let _ = REVNAT.remove(rkey);
    }
    match REVNAT.insert(rkey, &req.rev, u64::from(BPF_NOEXIST)) {
        Ok(()) => Claim::Claimed,
        Err(e) if e == -EEXIST => {
            // SAFETY: read of a map value.
            match unsafe { REVNAT.get(rkey) } {
                Some(r) if r.leads_back(key) && r.flags == req.rev.flags => Claim::Claimed,
                _ => Claim::Taken,
            }
        }
        Err(_) => Claim::Full,
    }
}

/// Whether the reverse entry `r` at `rkey` is proved dead (I4 b): the
/// connection it leads back to maps to another tuple or has expired, or is
/// missing and the entry is past its grace period.
#[inline(always)]
fn dead(sc: *mut NatScratch, rkey: &CtKey, r: &RevNat, now: u64) -> bool {
    // SAFETY: the per-CPU scratch slot; `claim_owner` is only used here.
    let owner = unsafe { &mut (*sc).claim_owner };
    claim_dead(owner, rkey, r, now)
}

/// [`dead`] for any claim, source or destination translated (the DNAT
/// path's claims use it too): `owner` is scratch space for the original
/// tuple `r` leads back to. The connection there must map to `rkey` by
/// [`reply_of`] (which knows DNAT and hairpin tuples) with the same NODE
/// and DNAT flags, and be live; or, missing, `r` must be past its grace
/// period.
#[inline(always)]
pub fn claim_dead(owner: &mut CtKey, rkey: &CtKey, r: &RevNat, now: u64) -> bool {
    let s = SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT);
    *owner = original_of(rkey, r);
    let owner: &CtKey = owner;
    const KIND: u8 = ct_flags::NODE | ct_flags::DNAT | ct_flags::HAIRPIN;
    // SAFETY: read of a map value.
    match unsafe { CONNTRACK.get(owner) } {
        Some(e) => {
            reply_of(owner, e, s.gateway) != *rkey
                || e.flags & KIND != r.flags & KIND
                || s.ct_expired(e, now)
        }
        None => now > r.created_ns && now - r.created_ns > REVNAT_ORPHAN_GRACE_NS,
    }
}

/// Whether a socket of the node would receive the reply tuple `rkey`: the
/// node's own connection to the same peer from the same address and port
/// (netfilter sees the node's connections in its table; the datapath asks
/// the socket table, once per new connection). Listening TCP sockets do not
/// count: replies to a translated flow never reach them. ICMP echo has no
/// socket lookup: the node's pings are claimed by `np_to_uplink` instead.
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
/// translated connection: checks the connection entry (I1, from the reply
/// side), rewrites the destination port and the L4 checksum back to the
/// original ones and updates the connection. Returns the pod's address (the
/// new destination, for [`crate::l3::rewrite_headers`]), or `None` when the
/// packet is not a pod's: no translation, a stale one (deleted), or a node
/// connection's (translated back here, then left to the node's stack).
#[inline(always)]
pub fn rev_snat(ctx: &TcContext, f: &Flow) -> Result<Option<[u8; 4]>, Stat> {
    let rkey = conntrack::reply_key_of(f);
    // SAFETY: the value is copied out at once.
    let Some(rev) = (unsafe { REVNAT.get(&rkey) }).copied() else {
        return Ok(None);
    };
    if rev.flags & ct_flags::DNAT != 0 {
        // A destination-translated connection's claim: `dnat.rs` owns it.
        return Ok(None);
    }
    let settings = SETTINGS.get(0).unwrap_or(&NodeSettings::DEFAULT);
    let seg = conntrack::segment(ctx, f)?;
    let orig = original_of(&rkey, &rev);
    let now = conntrack::now();
    let node = rev.flags & ct_flags::NODE;
    match CONNTRACK.get_ptr_mut(&orig) {
        Some(ct) => {
            // SAFETY: fields copied out of the map value.
            let (cur_addr, cur_port, cur_flags, expired) = unsafe {
                (
                    (*ct).nat_addr,
                    (*ct).nat_port,
                    (*ct).flags,
                    settings.ct_expired(&*ct, now),
                )
            };
            if reply_key(&orig, cur_addr, cur_port) != rkey || cur_flags & ct_flags::NODE != node {
                // The connection this entry leads back to has another
                // mapping: the entry is stale (I4 b).
                let _ = REVNAT.remove(&rkey);
                count(Stat::NatStaleReverse, ctx.len());
                return Ok(None);
            }
            if expired {
                // The connection is over: the reply is not part of it. Its
                // own next packet, or GC, cleans up.
                return Ok(None);
            }
            // SAFETY: in-place update of a map value, as in `translate`.
            note(
                unsafe { conntrack::update(&mut *ct, f, &seg, true, now) },
                ctx,
            );
        }
        None => {
            // The connection entry was evicted: re-create it from its
            // reverse entry, same mapping (I1 from the reply side).
            let sc = scratch()?;
            // SAFETY: the per-CPU scratch slot (see `NAT_SCRATCH`).
            let e = unsafe { &mut (*sc).entry };
            if conntrack::open(e, f, &seg, true, (rkey.daddr, rkey.dport), node, now).is_err() {
                return Ok(None);
            }
            note(conntrack::update(e, f, &seg, true, now), ctx);
            if CONNTRACK.insert(&orig, e, u64::from(BPF_NOEXIST)).is_ok() {
                count(Stat::NatRepairForward, ctx.len());
            } else {
                // Re-created meanwhile by another CPU: it must map here.
                // SAFETY: read of a map value.
                match unsafe { CONNTRACK.get(&orig) } {
                    Some(w) if reply_key(&orig, w.nat_addr, w.nat_port) == rkey => {}
                    _ => return Ok(None),
                }
            }
        }
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
    if node != 0 {
        // The node's connection: only the port was translated.
        return Ok(None);
    }
    l4_addr(ctx, f, f.daddr, rev.addr)?;
    Ok(Some(rev.addr))
}

/// Per-CPU scratch space of the NAT path (`nat.rs`): a new connection
/// entry and the port allocation request, too large for the 512-byte BPF
/// stack next to the rest of the walk. A program runs to completion on its
/// CPU with bottom halves off (TC ingress in softirq, TC egress under
/// `rcu_read_lock_bh`), so no other user of the slot interleaves.
#[btf_map(name = "nat_scratch")]
pub static NAT_SCRATCH: PerCpuArray<NatScratch, 1> = PerCpuArray::new();
