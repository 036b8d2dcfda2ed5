//! The live monitor's events (`netpath monitor`): every drop, and on
//! request the trace points (a new masqueraded connection, a frontend's
//! backend choice, a redirect to a local pod), put in a ring buffer.
//!
//! Nothing is emitted unless a monitor holds the watch lease (`monitor_v1`,
//! see `netpath_common::events`): an event point costs one array lookup
//! and one compare while nobody watches. While one does, each CPU emits at
//! most the lease's rate (a token bucket per CPU); an event over the rate
//! or without room in the ring is counted in `events_lost_v1`, by reason,
//! and the packet goes on as it would have.
//!
//! Drops are emitted from the one place every walk's drop ends in
//! ([`crate::stats::drop`]), and from the XDP prefilter's drop: every drop
//! reason is covered, with the headers read again from the packet (the walk
//! that dropped it may have stopped anywhere).

use aya_ebpf::{
    btf_maps::{Array, PerCpuArray, RingBuf},
    helpers::bpf_ktime_get_ns,
    macros::btf_map,
    maps::ring_buf::RingBufEntry,
    programs::{TcContext, XdpContext},
};
use netpath_common::{
    CtKey, Stat,
    events::{EVENTS_BYTES, Event, MonitorGate, TokenBucket, kind, lost},
};
use network_types::{eth::EthHdr, ip::Ipv4Hdr};

/// The events (`BPF_MAP_TYPE_RINGBUF`, [`EVENTS_BYTES`] bytes).
#[btf_map(name = "events_v1")]
pub static EVENTS: RingBuf<Event, { EVENTS_BYTES as usize }> = RingBuf::new();

/// The watch lease, in slot 0 (written by `netpath monitor`).
#[btf_map(name = "monitor_v1")]
pub static MONITOR: Array<MonitorGate, 1> = Array::new();

/// Each CPU's token bucket, in slot 0.
#[btf_map(name = "event_bucket_v1")]
pub static BUCKET: PerCpuArray<TokenBucket, 1> = PerCpuArray::new();

/// Events lost, per CPU, by `netpath_common::events::lost` reason.
#[btf_map(name = "events_lost_v1")]
pub static LOST: PerCpuArray<u64, { lost::COUNT as usize }> = PerCpuArray::new();

const ETH_P_IP: u16 = 0x0800;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
const NS_PER_SEC: u64 = 1_000_000_000;

/// Whether a monitor wants events of `kind` now: what every event point
/// costs, inlined where it stands. The event itself is written by a
/// subprogram of its own (`#[inline(never)]`), straight into the ring (no
/// copy on the stack): its frame adds little to the deepest walk's call
/// chain (the verifier allows 512 bytes for the whole chain).
#[inline(always)]
fn watching(kind: u8) -> bool {
    // An array lookup with a constant index: the verifier inlines it.
    let Some(gate) = MONITOR.get(0) else {
        return false;
    };
    if gate.kinds & (1 << kind) == 0 {
        return false;
    }
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_ns() <= gate.lease_until_ns }
}

/// Counts one lost event under `reason`.
#[inline(always)]
fn count_lost(reason: u32) {
    if let Some(c) = LOST.get_ptr_mut(reason) {
        // SAFETY: a per-CPU slot, written only by this CPU's programs,
        // which are not preempted on it.
        unsafe { *c += 1 };
    }
}

/// Takes a token from this CPU's bucket (refilled at the lease's rate, up
/// to its burst); `false`: over the rate.
#[inline(always)]
fn take_token(gate: &MonitorGate, now: u64) -> bool {
    let rate = u64::from(gate.rate_per_sec);
    if rate == 0 {
        return true;
    }
    let Some(b) = BUCKET.get_ptr_mut(0) else {
        return false;
    };
    let burst = if gate.burst == 0 {
        1
    } else {
        u64::from(gate.burst)
    };
    // SAFETY: a per-CPU slot, as in `count_lost`.
    unsafe {
        let elapsed = now.saturating_sub((*b).last_ns);
        if elapsed >= NS_PER_SEC {
            (*b).tokens = burst;
            (*b).last_ns = now;
        } else {
            // elapsed < 1 s and rate < 2^32: the product fits in 64 bits.
            let add = elapsed * rate / NS_PER_SEC;
            if add > 0 {
                let t = (*b).tokens + add;
                (*b).tokens = if t > burst { burst } else { t };
                (*b).last_ns = now;
            }
        }
        if (*b).tokens == 0 {
            return false;
        }
        (*b).tokens -= 1;
    }
    true
}

/// A zeroed event of `kind` for `reason` (a `Stat` index) on `ifindex`,
/// stamped now, reserved in the ring: `None` (and counted lost) over the
/// rate or when the ring is full. The caller fills and submits it.
#[inline(always)]
fn reserve(kind: u8, reason: u32, ifindex: u32, len: u32) -> Option<RingBufEntry<Event>> {
    let gate = MONITOR.get(0)?;
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if !take_token(gate, now) {
        count_lost(lost::RATE_LIMITED);
        return None;
    }
    let Some(mut entry) = EVENTS.reserve(0) else {
        count_lost(lost::RING_FULL);
        return None;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` is the reserved entry, `size_of::<Event>()` bytes of
    // ring memory that only this program writes until it submits it.
    unsafe {
        core::ptr::write_bytes(ev, 0, 1);
        (*ev).ktime_ns = now;
        (*ev).kind = kind;
        (*ev).reason = reason;
        (*ev).ifindex = ifindex;
        (*ev).len = len;
    }
    Some(entry)
}

/// Fills the tuple of `ev` from an IPv4 header (`ip`, its fixed 20 bytes)
/// and the first 4 bytes after it (`l4`, when the packet has them).
///
/// # Safety
///
/// `ev` points to a reserved entry.
#[inline(always)]
unsafe fn fill_tuple(ev: *mut Event, ip: &[u8; 20], l4: Option<[u8; 4]>) {
    // SAFETY: the caller's.
    unsafe {
        (*ev).proto = ip[9];
        (*ev).saddr = [ip[12], ip[13], ip[14], ip[15]];
        (*ev).daddr = [ip[16], ip[17], ip[18], ip[19]];
        let Some(l4) = l4 else { return };
        match ip[9] {
            IPPROTO_TCP | IPPROTO_UDP => {
                (*ev).sport = u16::from_be_bytes([l4[0], l4[1]]);
                (*ev).dport = u16::from_be_bytes([l4[2], l4[3]]);
            }
            IPPROTO_ICMP => {
                (*ev).icmp_type = l4[0];
                (*ev).icmp_code = l4[1];
            }
            _ => {}
        }
    }
}

/// Whether the L4 header of this IPv4 header is in the packet: not a
/// later fragment.
#[inline(always)]
fn has_l4(ip: &[u8; 20]) -> bool {
    u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0
}

/// Fills the tuple of `ev` from the packet of a TC program, read with
/// `bpf_skb_load_bytes` (bounds checked at run time by the helper: a
/// truncated packet leaves fields at 0). Read in small pieces: this runs
/// in a subprogram called from the deepest walk, whose stack is nearly
/// all used.
///
/// # Safety
///
/// `ev` points to a reserved entry.
#[inline(always)]
unsafe fn fill_from_skb(ctx: &TcContext, ev: *mut Event) {
    let Ok(ethertype) = ctx.load::<[u8; 2]>(12) else {
        return;
    };
    let ethertype = u16::from_be_bytes(ethertype);
    // SAFETY: the caller's.
    unsafe { (*ev).ethertype = ethertype };
    if ethertype != ETH_P_IP {
        return;
    }
    // Version/IHL ... protocol, then the two addresses.
    let Ok(head) = ctx.load::<[u8; 10]>(EthHdr::LEN) else {
        return;
    };
    let Ok(addrs) = ctx.load::<[u8; 8]>(EthHdr::LEN + 12) else {
        return;
    };
    let proto = head[9];
    // SAFETY: the caller's.
    unsafe {
        (*ev).proto = proto;
        (*ev).saddr = [addrs[0], addrs[1], addrs[2], addrs[3]];
        (*ev).daddr = [addrs[4], addrs[5], addrs[6], addrs[7]];
    }
    if u16::from_be_bytes([head[6], head[7]]) & 0x1fff != 0 {
        return; // a later fragment: no L4 header
    }
    let l4_at = EthHdr::LEN + usize::from(head[0] & 0x0f) * 4;
    let Ok(l4) = ctx.load::<[u8; 8]>(l4_at) else {
        return;
    };
    // SAFETY: the caller's.
    unsafe {
        match proto {
            IPPROTO_TCP | IPPROTO_UDP => {
                (*ev).sport = u16::from_be_bytes([l4[0], l4[1]]);
                (*ev).dport = u16::from_be_bytes([l4[2], l4[3]]);
            }
            IPPROTO_ICMP => {
                (*ev).icmp_type = l4[0];
                (*ev).icmp_code = l4[1];
                if l4[0] == 0 || l4[0] == 8 {
                    // Echo: the identifier follows type, code, checksum.
                    (*ev).sport = u16::from_be_bytes([l4[4], l4[5]]);
                }
            }
            _ => {}
        }
    }
}

/// A drop by a TC program: the event, when a monitor watches drops.
#[inline(always)]
pub fn tc_drop(ctx: &TcContext, reason: Stat) {
    if watching(kind::DROP) {
        tc_drop_event(ctx, reason as u32);
    }
}

#[inline(never)]
fn tc_drop_event(ctx: &TcContext, reason: u32) {
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(mut entry) = reserve(kind::DROP, reason, ifindex, ctx.len()) else {
        return;
    };
    // SAFETY: the reserved entry.
    unsafe { fill_from_skb(ctx, entry.as_mut_ptr()) };
    entry.submit(0);
}

/// A drop by the XDP program: the event, when a monitor watches drops.
#[inline(always)]
pub fn xdp_drop(ctx: &XdpContext, reason: Stat) {
    if watching(kind::DROP) {
        xdp_drop_event(ctx, reason as u32);
    }
}

#[inline(never)]
fn xdp_drop_event(ctx: &XdpContext, reason: u32) {
    let (start, end) = (ctx.data(), ctx.data_end());
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some(mut entry) = reserve(kind::DROP, reason, ifindex, (end - start) as u32) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // Verifier: the Ethernet header and the fixed IPv4 header lie inside
    // the frame.
    if start + EthHdr::LEN + Ipv4Hdr::LEN <= end {
        // SAFETY: bounds-checked just above; `ev` is the reserved entry.
        unsafe {
            let ethertype = u16::from_be_bytes(*((start + 12) as *const [u8; 2]));
            (*ev).ethertype = ethertype;
            if ethertype == ETH_P_IP {
                let ip = *((start + EthHdr::LEN) as *const [u8; 20]);
                let l4_at = start + EthHdr::LEN + usize::from(ip[0] & 0x0f) * 4;
                // Verifier: the first 4 bytes of the L4 header lie inside
                // the frame.
                let l4 = if has_l4(&ip) && l4_at + 4 <= end {
                    Some(*(l4_at as *const [u8; 4]))
                } else {
                    None
                };
                fill_tuple(ev, &ip, l4);
            }
        }
    }
    entry.submit(0);
}

/// A trace event about connection `key`; `meta` is the kind (bits 16-23)
/// and the reason (a `Stat` index, bits 0-15); `(addr, port)` is the new
/// source (SNAT) or destination (a backend). Five arguments: a
/// subprogram takes no more.
#[inline(never)]
fn conn_event(ctx: &TcContext, meta: u32, key: &CtKey, addr: [u8; 4], port: u16) {
    let kind = (meta >> 16) as u8;
    // SAFETY: reading a field of the context the kernel handed us.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(mut entry) = reserve(kind, meta & 0xffff, ifindex, ctx.len()) else {
        return;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: the reserved entry.
    unsafe {
        (*ev).ethertype = ETH_P_IP;
        (*ev).proto = key.proto;
        (*ev).saddr = key.saddr;
        (*ev).daddr = key.daddr;
        (*ev).sport = key.sport;
        (*ev).dport = key.dport;
        if kind == kind::TRACE_SNAT {
            (*ev).nat_saddr = addr;
            (*ev).nat_sport = port;
            (*ev).nat_daddr = key.daddr;
            (*ev).nat_dport = key.dport;
        } else {
            (*ev).nat_saddr = key.saddr;
            (*ev).nat_sport = key.sport;
            (*ev).nat_daddr = addr;
            (*ev).nat_dport = port;
        }
    }
    entry.submit(0);
}

/// Trace: a new masqueraded connection `key`, its source now
/// `nat_addr:nat_port`.
#[inline(always)]
pub fn trace_snat(ctx: &TcContext, reason: Stat, key: &CtKey, nat_addr: [u8; 4], nat_port: u16) {
    if watching(kind::TRACE_SNAT) {
        let meta = (u32::from(kind::TRACE_SNAT) << 16) | reason as u32;
        conn_event(ctx, meta, key, nat_addr, nat_port);
    }
}

/// Trace: a new connection `key` to a frontend got backend `addr:port`.
#[inline(always)]
pub fn trace_backend(ctx: &TcContext, key: &CtKey, addr: [u8; 4], port: u16) {
    if watching(kind::TRACE_BACKEND) {
        let meta = (u32::from(kind::TRACE_BACKEND) << 16) | Stat::DnatNew as u32;
        conn_event(ctx, meta, key, addr, port);
    }
}

/// Trace: a packet redirected to the local pod behind `ifindex`. The
/// headers are read as they are after the rewrite.
#[inline(always)]
pub fn trace_redirect(ctx: &TcContext, reason: Stat, ifindex: u32) {
    if watching(kind::TRACE_REDIRECT) {
        redirect_event(ctx, reason as u32, ifindex);
    }
}

#[inline(never)]
fn redirect_event(ctx: &TcContext, reason: u32, ifindex: u32) {
    let Some(mut entry) = reserve(kind::TRACE_REDIRECT, reason, ifindex, ctx.len()) else {
        return;
    };
    // SAFETY: the reserved entry.
    unsafe { fill_from_skb(ctx, entry.as_mut_ptr()) };
    entry.submit(0);
}
