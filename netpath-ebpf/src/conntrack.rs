//! Connection tracking of translated flows: tuples, the TCP/UDP/ICMP state
//! machines and timestamps, as netfilter has them. Timeouts live in
//! `NodeSettings`; `NodeSettings::ct_expired` is the one expiry rule, shared
//! with the userspace garbage collector.
//!
//! TCP follows netfilter's state table (`nf_conntrack_proto_tcp.c`, without
//! the simultaneous-open state `SYN_SENT2`), with a simplified window check:
//!
//! - a new connection starts with a SYN (`SYN_SENT`), or is picked up
//!   mid-stream from a packet with ACK (`ESTABLISHED` + `PICKUP`: capped at
//!   the 300 s "unacknowledged" timeout until both sides are seen); a first
//!   packet with RST, SYN-ACK or without ACK opens nothing (`drop_ct_invalid`,
//!   netfilter's INVALID);
//! - `SYN_SENT` moves to `SYN_RECV` only on a reply SYN-ACK acknowledging the
//!   SYN, and to `ESTABLISHED` on the original side's ACK after it;
//! - FIN → `FIN_WAIT`; the other side's ACK covering that FIN →
//!   `CLOSE_WAIT`; the other side's FIN → `LAST_ACK`; the ACK covering the
//!   last FIN → `TIME_WAIT`;
//! - a RST closes (`CLOSE`) only when in-window: its sequence number within
//!   the receiver's largest window of the end of what its sender has sent
//!   (per-direction `TcpDir`); in `SYN_SENT` a reply RST must acknowledge
//!   the SYN. A RST out of window is forwarded but changes nothing
//!   (`ct_rst_out_of_window`). A side never seen (pickup) cannot be checked
//!   and is trusted, as netfilter's "be liberal" pickups;
//! - a new SYN from the original side in `TIME_WAIT` or `CLOSE` reopens the
//!   connection (fresh state, same NAT mapping).
//!
//! Windows are taken unscaled (no option parsing): the accepted RST range is
//! narrower than the real window with window scaling, but a RST carries the
//! sender's next sequence number (RFC 5961), which is the tracked end.
//!
//! UDP: `UNREPLIED` → `REPLIED` on a reply; `STREAM` (the 120 s timeout) once
//! a packet passes after a reply more than 2 s after creation (netfilter's
//! `IPS_ASSURED` rule). ICMP echo: one state, 30 s.
//!
//! Entries are updated in place from several CPUs without a lock (netfilter
//! takes a spinlock): two packets of one connection racing can lose a
//! counter increment or a state step, which the next packet repeats.

use aya_ebpf::{helpers::bpf_ktime_get_coarse_ns, programs::TcContext};
use netpath_common::{CtEntry, CtKey, Stat, TcpDir, ct_flags, ct_state};

use crate::parse::{Flow, IPPROTO_ICMP, IPPROTO_TCP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};

/// `last_seen_ns` is refreshed at most this often per connection (and on
/// every state change), so that a busy flow does not write its entry on
/// every packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// A UDP connection with replies becomes a stream after this long.
const UDP_STREAM_AFTER_NS: u64 = 2_000_000_000;

/// Monotonic now (CLOCK_MONOTONIC, at the scheduler tick's resolution).
///
/// The coarse clock reads a value the tick stored, where
/// `bpf_ktime_get_ns` reads the clock source (a paravirtual clock on a
/// VM: tens of nanoseconds per packet). Every use of it counts in seconds
/// (timeouts, [`REFRESH_NS`], the UDP stream delay, fragment and affinity
/// timeouts), where a tick (1 to 10 ms) does not matter; it runs behind
/// userspace's `CLOCK_MONOTONIC` by at most a tick, so an entry's times can
/// never be in userspace's future by more than that.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// The original tuple of a packet a pod sends (ICMP echo: the identifier in
/// `sport`, `dport` 0).
#[inline(always)]
pub fn orig_key(f: &Flow) -> CtKey {
    CtKey {
        saddr: f.saddr,
        daddr: f.daddr,
        sport: f.sport,
        dport: if f.proto == IPPROTO_ICMP { 0 } else { f.dport },
        proto: f.proto,
        _pad: [0; 3],
    }
}

/// The reply tuple of a packet arriving from outside (ICMP echo reply: the
/// identifier in `dport`, `sport` 0).
#[inline(always)]
pub fn reply_key_of(f: &Flow) -> CtKey {
    if f.proto == IPPROTO_ICMP {
        CtKey {
            saddr: f.saddr,
            daddr: f.daddr,
            sport: 0,
            dport: f.sport,
            proto: f.proto,
            _pad: [0; 3],
        }
    } else {
        CtKey {
            saddr: f.saddr,
            daddr: f.daddr,
            sport: f.sport,
            dport: f.dport,
            proto: f.proto,
            _pad: [0; 3],
        }
    }
}

/// The TCP fields the state machine needs, host order. Zero for UDP/ICMP.
#[derive(Clone, Copy, Default)]
pub struct Segment {
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    /// Sequence space the segment takes: payload length, plus one for SYN
    /// and one for FIN.
    pub len: u32,
}

/// Reads the TCP fields of `f` (sequence, acknowledgement, window, payload
/// length from the IPv4 total length and the data offset). A TCP packet too
/// short for its 20-byte header is dropped as truncated.
#[inline(always)]
pub fn segment(ctx: &TcContext, f: &Flow) -> Result<Segment, Stat> {
    if f.proto != IPPROTO_TCP {
        return Ok(Segment::default());
    }
    let hdr: [u8; 16] = ctx.load(f.l4).map_err(|_| Stat::DropTruncated)?;
    // The IPv4 total length is at offset 2 of the IPv4 header (at 14).
    let tot: [u8; 2] = ctx.load(16).map_err(|_| Stat::DropTruncated)?;
    let ip_payload = u32::from(u16::from_be_bytes(tot)).saturating_sub((f.l4 - 14) as u32);
    let doff = u32::from(hdr[12] >> 4) * 4;
    let flags = hdr[13];
    let mut len = ip_payload.saturating_sub(doff);
    if flags & TCP_SYN != 0 {
        len += 1;
    }
    if flags & TCP_FIN != 0 {
        len += 1;
    }
    Ok(Segment {
        flags,
        seq: u32::from_be_bytes([hdr[4], hdr[5], hdr[6], hdr[7]]),
        ack: u32::from_be_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
        win: u16::from_be_bytes([hdr[14], hdr[15]]),
        len,
    })
}

/// `a` is at or after `b` in sequence space (RFC 1982).
#[inline(always)]
fn after_eq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

/// Writes into `e` the entry of a connection whose first packet `f`/`seg`
/// was seen in direction `reply` (`false`: the original side opens it;
/// `true`: a reply re-creates a connection entry from its reverse entry),
/// before that packet is applied with [`update`]. A TCP packet that cannot
/// open a connection is `Err(DropCtInvalid)`. (`e` is the per-CPU scratch
/// entry: a `CtEntry` on the stack would not fit the 512-byte BPF stack.)
#[inline(always)]
pub fn open(
    e: &mut CtEntry,
    f: &Flow,
    seg: &Segment,
    reply: bool,
    nat: ([u8; 4], u16),
    flags: u8,
    now: u64,
) -> Result<(), Stat> {
    let (state, pickup) = match f.proto {
        IPPROTO_TCP => {
            let fl = seg.flags;
            if fl & TCP_RST != 0 && !reply {
                return Err(Stat::DropCtInvalid);
            }
            if !reply && fl & (TCP_SYN | TCP_ACK) == TCP_SYN {
                (ct_state::TCP_SYN_SENT, 0)
            } else if reply || (fl & TCP_SYN == 0 && fl & TCP_ACK != 0) {
                // Mid-stream: the original side's ACK (netfilter's loose
                // pickup), or any reply to a connection whose entry was
                // evicted (its reverse entry proves the mapping).
                (ct_state::TCP_ESTABLISHED, ct_flags::PICKUP)
            } else {
                return Err(Stat::DropCtInvalid);
            }
        }
        crate::parse::IPPROTO_UDP => (ct_state::UDP_UNREPLIED, 0),
        _ => (ct_state::ICMP, 0),
    };
    e.nat_addr = nat.0;
    e.nat_port = nat.1;
    e.state = state;
    e.flags = flags | pickup;
    e.created_ns = now;
    e.last_seen_ns = now;
    e.packets_orig = 0;
    e.packets_reply = 0;
    e.tcp = [TcpDir::default(); 2];
    Ok(())
}

/// What [`update`] made of a packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Applied (possibly without a state change).
    Ok,
    /// A TCP RST outside the tracked window: forwarded, state unchanged.
    RstOutOfWindow,
}

/// Updates `ct` for a packet `f`/`seg` in the original (`reply == false`)
/// or reply direction.
#[inline(always)]
pub fn update(ct: &mut CtEntry, f: &Flow, seg: &Segment, reply: bool, now: u64) -> Verdict {
    let old_state = ct.state;
    let mut verdict = Verdict::Ok;
    let seen_bit = if reply {
        ct_flags::SEEN_REPLY
    } else {
        ct_flags::SEEN_ORIG
    };
    match f.proto {
        IPPROTO_TCP => {
            if seg.flags & TCP_SYN != 0
                && seg.flags & TCP_ACK == 0
                && !reply
                && (ct.state == ct_state::TCP_TIME_WAIT || ct.state == ct_state::TCP_CLOSE)
            {
                // A new connection reusing the tuple of a closed one: fresh
                // state, the NAT mapping (and the node, DNAT and hairpin
                // flags, which say how to read it) kept.
                ct.state = ct_state::TCP_SYN_SENT;
                ct.flags &= ct_flags::NODE | ct_flags::DNAT | ct_flags::HAIRPIN;
                ct.created_ns = now;
                ct.packets_orig = 0;
                ct.packets_reply = 0;
                ct.tcp = [TcpDir::default(); 2];
            } else if seg.flags & TCP_RST != 0 {
                if rst_in_window(ct, seg, reply) {
                    ct.state = ct_state::TCP_CLOSE;
                } else {
                    verdict = Verdict::RstOutOfWindow;
                }
            } else {
                tcp_transition(ct, seg, reply);
            }
            if seg.flags & TCP_RST == 0 {
                track(ct, seg, reply);
            }
        }
        crate::parse::IPPROTO_UDP => {
            let replied = reply || ct.flags & ct_flags::SEEN_REPLY != 0;
            ct.state = if !replied {
                ct_state::UDP_UNREPLIED
            } else if ct.state == ct_state::UDP_STREAM
                || now.wrapping_sub(ct.created_ns) > UDP_STREAM_AFTER_NS
            {
                ct_state::UDP_STREAM
            } else {
                ct_state::UDP_REPLIED
            };
        }
        _ => {}
    }
    ct.flags |= seen_bit;
    if reply {
        ct.packets_reply += 1;
    } else {
        ct.packets_orig += 1;
    }
    if ct.state != old_state || now.wrapping_sub(ct.last_seen_ns) > REFRESH_NS {
        ct.last_seen_ns = now;
    }
    verdict
}

/// Records the sequence space and window of a segment sent by one side.
#[inline(always)]
fn track(ct: &mut CtEntry, seg: &Segment, reply: bool) {
    let seen = ct.flags
        & if reply {
            ct_flags::SEEN_REPLY
        } else {
            ct_flags::SEEN_ORIG
        }
        != 0;
    let d = &mut ct.tcp[usize::from(reply)];
    let end = seg.seq.wrapping_add(seg.len);
    if !seen || after_eq(end, d.end) {
        d.end = end;
    }
    let win = u32::from(seg.win).max(1);
    if win > d.max_win {
        d.max_win = win;
    }
}

/// Whether a RST sent by the `reply` side is in-window (see the module
/// documentation).
#[inline(always)]
fn rst_in_window(ct: &CtEntry, seg: &Segment, reply: bool) -> bool {
    let (sender_seen, receiver) = if reply {
        (ct.flags & ct_flags::SEEN_REPLY != 0, ct.tcp[0])
    } else {
        (ct.flags & ct_flags::SEEN_ORIG != 0, ct.tcp[1])
    };
    if ct.state == ct_state::TCP_SYN_SENT && reply {
        // "Connection refused": must acknowledge the SYN.
        return seg.flags & TCP_ACK != 0 && seg.ack == ct.tcp[0].end;
    }
    if !sender_seen {
        return true;
    }
    let sender = ct.tcp[usize::from(reply)];
    let win = receiver.max_win.max(1);
    seg.seq.wrapping_sub(sender.end.wrapping_sub(win)) <= win.saturating_mul(2)
}

/// netfilter's state table for a non-RST segment (and not a reopening
/// SYN). Anything the table calls invalid or ignored leaves the state as it
/// is (the packet is still translated and forwarded).
#[inline(always)]
fn tcp_transition(ct: &mut CtEntry, seg: &Segment, reply: bool) {
    use ct_state::*;
    let fl = seg.flags;
    let (fin_mine, fin_other) = if reply {
        (ct_flags::FIN_REPLY, ct_flags::FIN_ORIG)
    } else {
        (ct_flags::FIN_ORIG, ct_flags::FIN_REPLY)
    };
    // The end of the other side's sequence space: an ACK at or after it
    // acknowledges everything the other side sent (its FIN included).
    let other_end = ct.tcp[usize::from(!reply)].end;
    let acks_other = fl & TCP_ACK != 0 && after_eq(seg.ack, other_end);
    let s = ct.state;
    if fl & TCP_SYN != 0 {
        if fl & TCP_ACK != 0 && reply && s == TCP_SYN_SENT && seg.ack == ct.tcp[0].end {
            ct.state = TCP_SYN_RECV;
        }
        // A retransmitted SYN in SYN_SENT, or a SYN mid-connection: ignored.
        return;
    }
    if fl & TCP_FIN != 0 {
        ct.flags |= fin_mine;
        ct.state = match s {
            TCP_SYN_RECV | TCP_ESTABLISHED => TCP_FIN_WAIT,
            TCP_FIN_WAIT | TCP_CLOSE_WAIT if ct.flags & fin_other != 0 => TCP_LAST_ACK,
            // A FIN retransmitted by the side that closed first.
            other => other,
        };
        return;
    }
    if fl & TCP_ACK != 0 {
        ct.state = match s {
            TCP_SYN_RECV if !reply => TCP_ESTABLISHED,
            // The other side acknowledges the FIN: it may still send.
            TCP_FIN_WAIT if ct.flags & fin_other != 0 && acks_other => TCP_CLOSE_WAIT,
            // The last FIN acknowledged.
            TCP_LAST_ACK if ct.flags & fin_other != 0 && acks_other => TCP_TIME_WAIT,
            other => other,
        };
    }
}
