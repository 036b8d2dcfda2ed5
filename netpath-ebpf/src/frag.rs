//! Fragments: a datagram's later fragments carry no L4 header, so they
//! cannot be matched to a connection on their own. When a first fragment
//! (offset 0, more fragments set) is translated, its translation — the new
//! address — is recorded in `frags_v1` under (source, destination, IP id,
//! protocol, direction) as the fragment arrived; the later fragments of the
//! same datagram look it up and get the same address rewrite (the IPv4
//! header and its checksum only: the L4 checksum, which covers the whole
//! datagram, lives in the first fragment and was updated there) and go
//! the same way.
//!
//! Map invariants:
//! - an entry is written only by the walk that translated the datagram's
//!   first fragment, and always overwritten by a newer first fragment with
//!   the same key (the IP id wraps), so it never outlives its datagram by
//!   more than [`FRAG_TIMEOUT_SECS`];
//! - an entry older than [`FRAG_TIMEOUT_SECS`] (Linux's `ipfrag_time`) is
//!   ignored, so an IP id reused much later never inherits a translation;
//! - the map is LRU: under pressure the oldest datagrams lose their entry
//!   and their later fragments are counted drops, never mistranslated.
//!
//! Not handled (counted as `drop_frag_no_first` when the fragment needs a
//! translation): a later fragment that arrives before its first one
//! (netpath does not reassemble or queue), and one whose first fragment was
//! lost. Fragments between pods need no state: they are forwarded at L3
//! like any packet. On an uplink, a later fragment without an entry is the
//! node's own traffic (or nobody's) and goes to the node's stack, which
//! reassembles or drops it.

use netpath_common::{FRAG_TIMEOUT_SECS, FragEntry, FragKey, Stat};

use crate::{conntrack::now, maps::FRAGS, parse::Flow, stats::count};

/// The key of `f`'s datagram in direction `dir` (one of
/// `netpath_common::frag_dir`).
#[inline(always)]
pub fn key(f: &Flow, dir: u8) -> FragKey {
    FragKey {
        saddr: f.saddr,
        daddr: f.daddr,
        id: f.id,
        proto: f.proto,
        dir,
    }
}

/// Whether `f` is a first fragment whose translation must be recorded.
#[inline(always)]
pub fn is_first(f: &Flow) -> bool {
    f.fragment && !f.later_fragment
}

/// Records the translation (`addr`) of first fragment `f`.
#[inline(always)]
pub fn record(f: &Flow, dir: u8, addr: [u8; 4], bytes: u32) -> Result<(), Stat> {
    let entry = FragEntry {
        addr,
        _pad: 0,
        first_ns: now(),
    };
    FRAGS
        .insert(&key(f, dir), &entry, 0)
        .map_err(|_| Stat::DropFragTrackFailed)?;
    count(Stat::FragTracked, bytes);
    Ok(())
}

/// The translation recorded for later fragment `f`'s datagram, if its
/// first fragment passed less than [`FRAG_TIMEOUT_SECS`] ago.
#[inline(always)]
pub fn follow(f: &Flow, dir: u8) -> Option<[u8; 4]> {
    // SAFETY: the value is copied out at once.
    let entry = unsafe { FRAGS.get(&key(f, dir)) }.copied()?;
    let age = now().wrapping_sub(entry.first_ns);
    if age > FRAG_TIMEOUT_SECS * 1_000_000_000 {
        return None;
    }
    Some(entry.addr)
}
