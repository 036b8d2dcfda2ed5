//! Counter accounting: every frame a program runs on ends in exactly one
//! terminal counter, and the verdict matches the counter's class.
//!
//! Which counter is terminal, and for which verdict, is [`class`]: one
//! table, an exhaustive `match` over `netpath_common::Stat`, so that a new
//! counter does not compile until it is classified here. Names mostly
//! follow `fwd_*` (TC_ACT_REDIRECT), `pass_*` (TC_ACT_OK), `drop_*`
//! (TC_ACT_SHOT); the exceptions are the router's answers
//! (`reply_time_exceeded`, `reply_frag_needed`: the packet is turned into
//! an ICMP error and redirected back into the pod, so they end the walk
//! with TC_ACT_REDIRECT). Every other counter (`snat_new`, `frag_tracked`,
//! `mtu_unchecked`, ...) records a property and may count a frame any
//! number of times.

use std::collections::BTreeMap;

use netpath::datapath::{Datapath, MapsError};
use netpath_common::Stat;

use super::oracle::Violation;
use crate::packet::{TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT};

/// A counter's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Terminal, the walk ended with TC_ACT_REDIRECT.
    Redirect,
    /// Terminal, TC_ACT_OK (handed to the node's stack).
    Pass,
    /// Terminal, TC_ACT_SHOT.
    Drop,
    /// A side counter: a property of a frame, not its verdict.
    Info,
}

/// The class of every counter (the one table).
pub fn class(stat: Stat) -> Class {
    use Class::*;
    match stat {
        Stat::FwdLocalPod | Stat::FwdRouted | Stat::FwdRevNat => Redirect,
        // The router's answers: the frame becomes an ICMP error redirected
        // back into the pod.
        Stat::ReplyTimeExceeded | Stat::ReplyFragNeeded => Redirect,
        // DNAT: delivered to a backend, a reply sent back, a refusal
        // (RST / ICMP port unreachable) redirected back to the client.
        Stat::FwdDnat | Stat::FwdRevDnat | Stat::ReplyNoBackend => Redirect,
        // XDP verdicts (the fuzzer runs only the TC programs): a redirect,
        // or the packet left to TC.
        Stat::XdpFwdRevSnat | Stat::XdpFwdDnat => Redirect,
        Stat::XdpPass | Stat::XdpRedirectFailed => Pass,
        // Several nodes: routed to a peer, delivered from one, encapsulated;
        // `tunnel_decap` counts every decapsulated packet before its verdict.
        Stat::FwdToPeer | Stat::FwdFromPeer | Stat::TunnelEncap => Redirect,
        Stat::TunnelDecap => Info,
        Stat::DropTunnelEncap | Stat::DropTunnelDecap => Drop,
        Stat::PassToHost
        | Stat::PassNotIpv4
        | Stat::PassFibLocal
        | Stat::PassUplink
        | Stat::PassUplinkVlan
        // np_to_uplink's verdict (the fuzzer does not run that program).
        | Stat::NodePass => Pass,
        Stat::DropTruncated
        | Stat::DropBadIpHeader
        | Stat::DropTtlExceeded
        | Stat::DropRewriteFailed
        | Stat::DropFibUnreachable
        | Stat::DropSnatNoPort
        | Stat::DropNatFragment
        | Stat::DropNatProto
        | Stat::DropRevNatNoPod
        | Stat::DropTooBig
        | Stat::DropTooBigNoDf
        | Stat::DropFragNoFirst
        | Stat::DropFragTrackFailed
        | Stat::DropSpoofedIp
        | Stat::DropSpoofedMac
        | Stat::DropSpoofedArp
        | Stat::DropPodIpv6
        | Stat::DropPodEthertype
        | Stat::DropPodVlan
        | Stat::DropL4Truncated
        | Stat::DropMartian
        | Stat::DropCtInvalid
        | Stat::DropNatTableFull
        | Stat::DropNatScratch
        | Stat::DropNodeNatNoPort
        | Stat::DropNoBackend
        | Stat::DropLbBackendMissing
        | Stat::DropDnatTupleTaken
        | Stat::DropDnatRemoteBackend
        | Stat::DropXdpPrefilter => Drop,
        Stat::Ipv4Options
        | Stat::Ipv4Fragment
        | Stat::Ipv4BigTcp
        | Stat::RouteMapHit
        | Stat::RouteFibHit
        | Stat::RouteNeighResolve
        | Stat::SnatNew
        | Stat::SnatPortChanged
        | Stat::IcmpErrorRevNat
        | Stat::MtuUnchecked
        | Stat::FragTracked
        | Stat::FragFollowed
        | Stat::NatRepairReverse
        | Stat::NatRepairForward
        | Stat::NatConflict
        | Stat::NatStaleReverse
        | Stat::NatRaceLost
        | Stat::CtRstOutOfWindow
        | Stat::NodeNatNew
        | Stat::DnatNew
        | Stat::LbAffinityHit
        | Stat::DnatHairpin
        | Stat::IcmpErrorDnat
        // The socket hooks count connections, not frames.
        | Stat::SockLbConnect
        | Stat::SockLbNoBackend => Info,
    }
}

/// Packets and bytes of every counter.
pub type Counts = BTreeMap<&'static str, (u64, u64)>;

pub fn read(dp: &mut Datapath) -> Result<Counts, MapsError> {
    Ok(dp
        .maps()
        .stats()?
        .into_iter()
        .map(|(s, c)| (s.name(), (c.packets, c.bytes)))
        .collect())
}

/// What a batch did, as the fuzzer saw it.
#[derive(Clone, Debug, Default)]
pub struct Ran {
    pub frames: u64,
    pub bytes: u64,
    pub redirect: u64,
    pub pass: u64,
    pub drop: u64,
}

impl Ran {
    pub fn add(&mut self, verdict: u32, len: usize) {
        self.frames += 1;
        self.bytes += len as u64;
        match verdict {
            TC_ACT_REDIRECT => self.redirect += 1,
            TC_ACT_OK => self.pass += 1,
            TC_ACT_SHOT => self.drop += 1,
            _ => {}
        }
    }
}

/// Compares the counters' movement between `before` and `after` with what
/// ran.
pub fn check(before: &Counts, after: &Counts, ran: &Ran) -> Vec<Violation> {
    let mut sums = BTreeMap::<&str, (u64, u64)>::new();
    for stat in Stat::ALL {
        let c = class(*stat);
        if c == Class::Info {
            continue;
        }
        let name = stat.name();
        let (p0, b0) = before.get(name).copied().unwrap_or_default();
        let (p1, b1) = after.get(name).copied().unwrap_or_default();
        let key = match c {
            Class::Redirect => "redirect",
            Class::Pass => "pass",
            _ => "drop",
        };
        let e = sums.entry(key).or_default();
        e.0 += p1 - p0;
        e.1 += b1 - b0;
    }
    let get = |k: &str| sums.get(k).copied().unwrap_or_default();
    let mut out = Vec::new();
    let packets = get("redirect").0 + get("pass").0 + get("drop").0;
    let bytes = get("redirect").1 + get("pass").1 + get("drop").1;
    if packets != ran.frames {
        out.push(Violation {
            check: "counters-total",
            detail: format!(
                "{} frames ran, the terminal counters (counters::class) moved by {packets}",
                ran.frames
            ),
        });
    }
    if bytes != ran.bytes {
        out.push(Violation {
            check: "counters-bytes",
            detail: format!(
                "{} bytes ran, the terminal counters moved by {bytes}",
                ran.bytes
            ),
        });
    }
    for (key, n) in [
        ("redirect", ran.redirect),
        ("pass", ran.pass),
        ("drop", ran.drop),
    ] {
        if get(key).0 != n {
            out.push(Violation {
                check: "counters-verdict",
                detail: format!(
                    "{n} frames got verdict {key}, its counters moved by {}",
                    get(key).0
                ),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The table agrees with the datapath's own notion of a drop, and the
    /// prefixes mean what they say.
    #[test]
    fn the_table_agrees_with_the_names() {
        for s in Stat::ALL {
            assert_eq!(class(*s) == Class::Drop, s.is_drop(), "{}", s.name());
            let name = s.name();
            if name.starts_with("fwd_") || name.starts_with("reply_") {
                assert_eq!(class(*s), Class::Redirect, "{name}");
            }
            if name.starts_with("pass_") {
                assert_eq!(class(*s), Class::Pass, "{name}");
            }
        }
    }
}
