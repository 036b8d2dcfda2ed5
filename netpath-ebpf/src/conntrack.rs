//! Connection tracking of translated flows: tuples, the TCP/UDP/ICMP state
//! machine and timestamps. Timeouts live in `NodeSettings` (the same rule,
//! `NodeSettings::ct_expired`, drives the userspace garbage collector).

use aya_ebpf::helpers::bpf_ktime_get_ns;
use netpath_common::{CtEntry, CtKey, ct_flags, ct_state};

use crate::parse::{
    Flow, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN,
};

/// `last_seen_ns` is refreshed at most this often per connection, so that a
/// busy flow does not write its entry on every packet.
const REFRESH_NS: u64 = 1_000_000_000;

/// Monotonic now (CLOCK_MONOTONIC).
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_ns() }
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

/// The state of a new connection opened by `f`. A TCP packet without SYN
/// is picked up mid-stream as established (as netfilter's
/// `nf_conntrack_tcp_loose` does by default).
#[inline(always)]
pub fn initial_state(f: &Flow) -> u8 {
    match f.proto {
        IPPROTO_TCP if f.tcp_flags & TCP_RST != 0 => ct_state::TCP_CLOSE,
        IPPROTO_TCP if f.tcp_flags & (TCP_SYN | TCP_ACK) == TCP_SYN => ct_state::TCP_SYN_SENT,
        IPPROTO_TCP => ct_state::TCP_ESTABLISHED,
        IPPROTO_UDP => ct_state::UDP_UNREPLIED,
        _ => ct_state::ICMP,
    }
}

/// Updates `ct` for a packet `f` in the original (`reply == false`) or
/// reply direction.
#[inline(always)]
pub fn update(ct: &mut CtEntry, f: &Flow, reply: bool, now: u64) {
    let old_state = ct.state;
    if reply {
        ct.packets_reply += 1;
        ct.flags |= ct_flags::SEEN_REPLY;
    } else {
        ct.packets_orig += 1;
    }
    match f.proto {
        IPPROTO_TCP => {
            let flags = f.tcp_flags;
            if flags & TCP_RST != 0 {
                ct.state = ct_state::TCP_CLOSE;
            } else if flags & TCP_SYN != 0 && !reply && ct.state >= ct_state::TCP_TIME_WAIT {
                // A new connection reusing the tuple of a closed one.
                ct.state = ct_state::TCP_SYN_SENT;
                ct.flags = 0;
            } else if flags & TCP_FIN != 0 {
                ct.flags |= if reply {
                    ct_flags::FIN_REPLY
                } else {
                    ct_flags::FIN_ORIG
                };
                ct.state = if ct.flags & (ct_flags::FIN_ORIG | ct_flags::FIN_REPLY)
                    == ct_flags::FIN_ORIG | ct_flags::FIN_REPLY
                {
                    ct_state::TCP_TIME_WAIT
                } else {
                    ct_state::TCP_FIN_WAIT
                };
            } else if ct.state == ct_state::TCP_SYN_SENT && reply && flags & TCP_ACK != 0 {
                ct.state = ct_state::TCP_ESTABLISHED;
            }
        }
        IPPROTO_UDP => {
            if reply {
                ct.state = ct_state::UDP_REPLIED;
            }
        }
        _ => {}
    }
    if ct.state != old_state || now.wrapping_sub(ct.last_seen_ns) > REFRESH_NS {
        ct.last_seen_ns = now;
    }
}
