//! The connection table from userspace: listing it (what `conntrack -L`
//! shows for netfilter), collecting expired and orphaned entries, and
//! checking the NAT invariants over a dump.
//!
//! The datapath keeps two maps: `conntrack_v2` (LRU), keyed by the tuple
//! the pod (or the node) sent (original direction), and `revnat_v2` (plain
//! hash), keyed by the tuple the replies carry (remote → NAT address and
//! port), which says where a reply belongs and is the claim of that
//! external tuple. Their invariants (I1 pairing, I2 one tuple per
//! connection, I3 race-free creation, I4 ownership-checked deletes, I5 the
//! node's own connections) are written in `netpath-ebpf/src/nat.rs`;
//! [`check_nat_invariants`] checks the ones a dump can show.
//!
//! [`gc`] deletes expired connections with their reverse entries and
//! reverse entries nothing owns, and repairs a live connection whose
//! reverse entry is missing (or, when its tuple belongs to another
//! connection, deletes it so that its next packet gets a new mapping). The
//! datapath changes the maps while GC runs, so every delete is decided on a
//! fresh read of the entries involved, not on the snapshot: an entry is
//! deleted only if it is still there, unchanged, and still expired or
//! unowned. The maps are read with a bounded walk of their keys
//! (`datapath::maps`), which neither loops nor repeats on a churning LRU
//! map.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds, the clock of
//! `bpf_ktime_get_ns()` ([`now_ns`]).

use std::{
    collections::HashMap,
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netpath_common::{
    CtEntry, CtKey, FrontendKey, NodeSettings, REVNAT_ORPHAN_GRACE_NS, RevNat, ct_flags, ct_state,
    original_of, reply_of,
};

/// The flags that say how to read a connection's mapping: its reverse
/// entry must carry the same ones.
const KIND: u8 = ct_flags::NODE | ct_flags::DNAT | ct_flags::HAIRPIN;

/// The reverse entry connection `e` at `orig` owns: the original source
/// for a source translation, the frontend for a destination translation
/// (`RevNat::leads_back`).
fn reverse_of(orig: &CtKey, e: &CtEntry, now_ns: u64) -> RevNat {
    let (addr, port) = if e.flags & ct_flags::DNAT != 0 {
        (orig.daddr, orig.dport)
    } else {
        (orig.saddr, orig.sport)
    };
    RevNat {
        addr,
        port,
        flags: e.flags & KIND,
        _pad: 0,
        created_ns: now_ns,
    }
}

use crate::datapath::{MapsError, NodeMaps};

/// IP protocol numbers the connection table holds.
pub mod proto {
    pub use netpath_common::proto::{ICMP, TCP, UDP};

    /// `tcp`, `udp`, `icmp`, or the number.
    pub fn name(proto: u8) -> String {
        netpath_common::proto::name(proto).map_or_else(|| proto.to_string(), str::to_owned)
    }
}

/// The current `CLOCK_MONOTONIC` time in nanoseconds (the clock of
/// `bpf_ktime_get_ns()`, and so of [`CtEntry::last_seen_ns`]).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`; CLOCK_MONOTONIC
    // always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// One tracked connection, joined with its reverse NAT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// The tuple the pod sent (source: the pod).
    pub orig: CtKey,
    pub entry: CtEntry,
    /// The tuple replies carry (remote → NAT address and port).
    pub reply: CtKey,
    /// The reverse NAT entry for [`Connection::reply`], when it exists and
    /// leads back to this connection's pod.
    pub revnat: Option<RevNat>,
    /// Time since the connection was created, at the time of listing.
    pub age: Duration,
    /// Time left before the entry expires (zero once expired).
    pub expires_in: Duration,
    /// Whether the entry is idle past its state's timeout.
    pub expired: bool,
}

impl Connection {
    fn new(orig: CtKey, entry: CtEntry, settings: &NodeSettings, now_ns: u64) -> Self {
        let timeout_ns = u64::from(settings.ct_timeout_of(&entry)) * 1_000_000_000;
        let deadline = entry.last_seen_ns.saturating_add(timeout_ns);
        Self {
            orig,
            entry,
            reply: reply_of(&orig, &entry, settings.gateway),
            revnat: None,
            age: Duration::from_nanos(now_ns.saturating_sub(entry.created_ns)),
            expires_in: Duration::from_nanos(deadline.saturating_sub(now_ns)),
            expired: settings.ct_expired(&entry, now_ns),
        }
    }

    /// `tcp`, `udp`, `icmp`.
    pub fn proto(&self) -> String {
        proto::name(self.orig.proto)
    }

    /// The pod's address and port (for ICMP echo, the identifier).
    pub fn source(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.orig.saddr), self.orig.sport)
    }

    /// The remote address and port (0 for ICMP).
    pub fn destination(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.orig.daddr), self.orig.dport)
    }

    /// The source the connection has outside the node; for a destination
    /// translation ([`Connection::is_dnat`]), the backend.
    pub fn nat(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.entry.nat_addr), self.entry.nat_port)
    }

    /// `ESTABLISHED`, `SYN_SENT`, `UNREPLIED`, ...
    pub fn state(&self) -> &'static str {
        ct_state::name(self.entry.state)
    }

    /// Whether this is a destination translation (a service or a
    /// port-forward): the destination is the frontend, [`Connection::nat`]
    /// the backend.
    pub fn is_dnat(&self) -> bool {
        self.entry.flags & ct_flags::DNAT != 0
    }

    /// Whether the connection carries traffic now: TCP established, or UDP
    /// (and ICMP) not expired.
    pub fn is_established(&self) -> bool {
        !self.expired
            && (self.orig.proto != proto::TCP || self.entry.state == ct_state::TCP_ESTABLISHED)
    }
}

/// Every tracked connection at `now_ns`, oldest first.
pub fn list_at(maps: &NodeMaps, now_ns: u64) -> Result<Vec<Connection>, MapsError> {
    let settings = maps.settings()?;
    let revnat: HashMap<CtKey, RevNat> = maps.revnat()?.into_iter().collect();
    let mut out: Vec<Connection> = maps
        .conntrack()?
        .into_iter()
        .map(|(k, e)| {
            let mut c = Connection::new(k, e, &settings, now_ns);
            c.revnat = revnat.get(&c.reply).filter(|r| r.leads_back(&k)).copied();
            c
        })
        .collect();
    out.sort_by_key(|c| (c.entry.created_ns, c.orig.saddr, c.orig.sport));
    Ok(out)
}

/// Every tracked connection, now.
pub fn list(maps: &NodeMaps) -> Result<Vec<Connection>, MapsError> {
    list_at(maps, now_ns())
}

/// What one garbage collection did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired connections deleted (each with its reverse entry).
    pub removed: usize,
    /// Reverse entries deleted because nothing owns them (their connection
    /// is gone, or maps to another tuple), and live connections deleted
    /// because another connection holds their tuple.
    pub orphans: usize,
    /// Live connections whose missing reverse entry was re-inserted.
    pub repaired: usize,
    /// Connections left in the table.
    pub remaining: usize,
}

/// Collects the connection table at `now_ns`:
///
/// - an expired connection is deleted, then its reverse entry if that
///   still leads back to it and the connection was not re-created
///   meanwhile;
/// - a live connection whose reverse entry is missing gets it back
///   (`BPF_NOEXIST`, as the datapath claims); if its tuple belongs to
///   another connection, it is deleted (its next packet gets a new mapping);
/// - a reverse entry is deleted when the connection it leads back to maps
///   to another tuple, or is missing and the entry is older than
///   `REVNAT_ORPHAN_GRACE_NS` (younger ones are being created).
///
/// Every decision is re-checked on a fresh read just before its delete:
/// the datapath may have refreshed, re-created or replaced the entries
/// since the dump. What remains is a race of microseconds between that read
/// and the delete, which the datapath's own checks repair (a connection
/// whose reverse entry vanished re-inserts it on its next packet).
pub fn gc(maps: &mut NodeMaps, now_ns: u64) -> Result<GcReport, MapsError> {
    let settings = maps.settings()?;
    let conntrack = maps.conntrack()?;
    let revnat = maps.revnat()?;
    let mut report = GcReport::default();
    let mut deleted = 0;
    for (key, entry) in &conntrack {
        let reply = reply_of(key, entry, settings.gateway);
        // Re-read: act only on the entry as it is now.
        if maps.conntrack_entry(key)? != Some(*entry) {
            continue;
        }
        if settings.ct_expired(entry, now_ns) {
            maps.remove_conntrack(key)?;
            deleted += 1;
            report.removed += 1;
            // Its claim, if still its own and not re-adopted by a
            // re-created connection.
            let owned = maps
                .revnat_entry(&reply)?
                .is_some_and(|r| r.leads_back(key));
            if owned && maps.conntrack_entry(key)?.is_none() {
                maps.remove_revnat(&reply)?;
            }
            continue;
        }
        match maps.revnat_entry(&reply)? {
            Some(r) if r.leads_back(key) => {}
            Some(_) => {
                // Another connection holds the tuple (I2): this one must
                // not use it. Re-checked: the entry is unchanged.
                if maps.conntrack_entry(key)? == Some(*entry) {
                    maps.remove_conntrack(key)?;
                    deleted += 1;
                    report.orphans += 1;
                }
            }
            None => {
                let rev = reverse_of(key, entry, now_ns);
                if maps.claim_revnat(reply, rev)? {
                    report.repaired += 1;
                }
            }
        }
    }
    for (reply, rev) in &revnat {
        if !orphaned(maps, reply, rev, &settings, now_ns)? {
            continue;
        }
        // Re-read both entries now.
        if maps.revnat_entry(reply)? != Some(*rev)
            || !orphaned(maps, reply, rev, &settings, now_ns)?
        {
            continue;
        }
        maps.remove_revnat(reply)?;
        report.orphans += 1;
    }
    report.remaining = conntrack.len() - deleted;
    Ok(report)
}

/// What [`purge_address`] deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PurgeReport {
    /// Connections whose original source was the address.
    pub connections: usize,
    /// Reverse entries that led back to the address.
    pub reverse: usize,
}

/// Deletes every connection whose original source is `addr` (or, for a
/// destination translation, whose backend is `addr`) and every reverse
/// entry that leads back to `addr` (or comes from it as a backend): what a
/// deleted pod leaves, so
/// that the next pod given its address inherits none of it (issue 8,
/// item 7). Called once the pod's interface is gone (no packet of it can
/// re-create an entry).
///
/// Ownership-checked (I4): the node's own connections (`NODE`) are never
/// touched, a reverse entry is deleted only if, on a fresh read, it still
/// leads back to `addr`, and a connection only if it is still there with
/// that source. The reverse entries go first: a reply arriving in between
/// then finds no reverse entry (and is not delivered: the pod's endpoint is
/// already gone) rather than one whose connection it could re-create.
pub fn purge_address(maps: &mut NodeMaps, addr: Ipv4Addr) -> Result<PurgeReport, MapsError> {
    let addr = addr.octets();
    let mut report = PurgeReport::default();
    // The client of the connection a reverse entry leads back to (for a
    // source translation, the entry's own address; for a destination
    // translation, in its key), or for a destination translation the
    // backend whose replies it matches.
    let client_is = |reply: &CtKey, r: &RevNat| {
        r.flags & ct_flags::NODE == 0
            && (original_of(reply, r).saddr == addr
                || (r.flags & ct_flags::DNAT != 0 && reply.saddr == addr))
    };
    for (reply, rev) in &maps.revnat()? {
        if !client_is(reply, rev) {
            continue;
        }
        // Re-read: delete only if it still leads back to `addr`.
        if maps
            .revnat_entry(reply)?
            .is_some_and(|r| client_is(reply, &r))
        {
            maps.remove_revnat(reply)?;
            report.reverse += 1;
        }
    }
    for (orig, entry) in &maps.conntrack()? {
        let backend = entry.flags & ct_flags::DNAT != 0 && entry.nat_addr == addr;
        if !(orig.saddr == addr || backend) || entry.flags & ct_flags::NODE != 0 {
            continue;
        }
        if maps.conntrack_entry(orig)?.is_some() {
            maps.remove_conntrack(orig)?;
            report.connections += 1;
        }
    }
    Ok(report)
}

/// Deletes every tracked connection of pods and frontends, like
/// `conntrack -F`: reverse entries first (a reply arriving in between finds
/// nothing to follow rather than half a connection), then the connections.
/// Entries flagged `NODE` (the node's own flows, which reserve their tuples
/// against masquerade, I4) are kept: dropping one would let a pod's flow
/// claim a tuple the node's live connection still uses. The next packet of
/// a flushed connection starts it anew (its original port when free).
pub fn flush(maps: &mut NodeMaps) -> Result<PurgeReport, MapsError> {
    let mut report = PurgeReport::default();
    for (reply, rev) in &maps.revnat()? {
        if rev.flags & ct_flags::NODE == 0 {
            maps.remove_revnat(reply)?;
            report.reverse += 1;
        }
    }
    for (orig, entry) in &maps.conntrack()? {
        if entry.flags & ct_flags::NODE == 0 {
            maps.remove_conntrack(orig)?;
            report.connections += 1;
        }
    }
    Ok(report)
}

/// Deletes the connections to frontend `frontend` that were translated to
/// `backend` (`None`: to any backend): what a backend leaving a service (or
/// a removed frontend) leaves behind. The connections of the frontend's
/// other backends, and every source translation, are not touched.
///
/// For each connection, on fresh reads: its reverse entry first (if it
/// still leads back to it), then the connection (if still translated to
/// that backend), then the reverse entry once more (a packet of the
/// connection in between may have repaired it). The reverse entry goes
/// first so that a reply of the backend arriving in between finds nothing
/// to follow, rather than a reverse entry from which the datapath would
/// repair the connection.
pub fn purge_backend(
    maps: &mut NodeMaps,
    frontend: FrontendKey,
    backend: Option<SocketAddrV4>,
) -> Result<PurgeReport, MapsError> {
    purge_backends(maps, &[(frontend, backend)])
}

/// [`purge_backend`] of every (frontend, backend) pair of `which`, in one
/// walk of the connection table (an apply that removes many services
/// walks it once, not once per service).
pub fn purge_backends(
    maps: &mut NodeMaps,
    which: &[(FrontendKey, Option<SocketAddrV4>)],
) -> Result<PurgeReport, MapsError> {
    if which.is_empty() {
        return Ok(PurgeReport::default());
    }
    let gateway = maps.settings()?.gateway;
    let mut wanted: std::collections::HashMap<([u8; 4], u16, u8), Vec<Option<SocketAddrV4>>> =
        std::collections::HashMap::new();
    for (f, b) in which {
        wanted
            .entry((f.addr, f.port, f.proto))
            .or_default()
            .push(*b);
    }
    let matches = |orig: &CtKey, e: &CtEntry| {
        e.flags & ct_flags::DNAT != 0
            && wanted
                .get(&(orig.daddr, orig.dport, orig.proto))
                .is_some_and(|backends| {
                    backends.iter().any(|backend| {
                        backend
                            .is_none_or(|b| e.nat_addr == b.ip().octets() && e.nat_port == b.port())
                    })
                })
    };
    let mut report = PurgeReport::default();
    for (orig, entry) in &maps.conntrack()? {
        if !matches(orig, entry) {
            continue;
        }
        let reply = reply_of(orig, entry, gateway);
        let mut drop_reverse = |maps: &mut NodeMaps| -> Result<(), MapsError> {
            if maps
                .revnat_entry(&reply)?
                .is_some_and(|r| r.flags & ct_flags::DNAT != 0 && r.leads_back(orig))
            {
                maps.remove_revnat(&reply)?;
                report.reverse += 1;
            }
            Ok(())
        };
        drop_reverse(maps)?;
        if maps
            .conntrack_entry(orig)?
            .is_some_and(|e| matches(orig, &e))
        {
            maps.remove_conntrack(orig)?;
            report.connections += 1;
        }
        drop_reverse(maps)?;
    }
    Ok(report)
}

/// Whether the reverse entry `rev` at `reply` is owned by nothing, from a
/// fresh read of the connection it leads back to. (A connection that maps
/// here but expired owns it until the first loop deletes both.)
fn orphaned(
    maps: &NodeMaps,
    reply: &CtKey,
    rev: &RevNat,
    settings: &NodeSettings,
    now_ns: u64,
) -> Result<bool, MapsError> {
    let orig = original_of(reply, rev);
    Ok(match maps.conntrack_entry(&orig)? {
        Some(e) => {
            reply_of(&orig, &e, settings.gateway) != *reply || e.flags & KIND != rev.flags & KIND
        }
        None => now_ns.saturating_sub(rev.created_ns) > REVNAT_ORPHAN_GRACE_NS,
    })
}

/// A broken NAT invariant (see `netpath-ebpf/src/nat.rs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// I1: a live connection has no reverse entry.
    MissingReverse { orig: CtKey, reply: CtKey },
    /// I1: a live connection's reverse entry leads to another original
    /// source, or has another NODE flag.
    ReverseElsewhere {
        orig: CtKey,
        reply: CtKey,
        rev: RevNat,
    },
    /// I2: two live connections have the same external tuple.
    SharedTuple { reply: CtKey, a: CtKey, b: CtKey },
    /// A connection translated to a port outside the NAT range that is not
    /// its own source port.
    PortOutOfRange { orig: CtKey, nat_port: u16 },
    /// A node connection translated to another address than its own.
    NodeAddress { orig: CtKey },
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Violation::MissingReverse { orig, reply } => {
                write!(f, "I1: live {orig:?} has no reverse entry at {reply:?}")
            }
            Violation::ReverseElsewhere { orig, reply, rev } => write!(
                f,
                "I1: the reverse entry {rev:?} at {reply:?} does not lead back to live {orig:?}"
            ),
            Violation::SharedTuple { reply, a, b } => {
                write!(f, "I2: {a:?} and {b:?} share the external tuple {reply:?}")
            }
            Violation::PortOutOfRange { orig, nat_port } => write!(
                f,
                "{orig:?} is translated to port {nat_port}, outside the NAT range and not its own"
            ),
            Violation::NodeAddress { orig } => {
                write!(
                    f,
                    "node connection {orig:?} is translated to another address"
                )
            }
        }
    }
}

/// Checks the NAT invariants a dump of both maps can show at `now_ns`
/// (I1 pairing, I2 one tuple per connection, ports inside the range or the
/// connection's own, node connections keeping their address). A
/// destination-translated connection (DNAT: original tuple client →
/// frontend, the backend as its NAT address and port) pairs with the
/// reverse entry at its backend's reply tuple (`reply_of`: backend →
/// client, or → gateway for a hairpin) holding the frontend with the same
/// DNAT/HAIRPIN flags; its port is the backend's, not from the range. Reverse
/// entries without a live connection are not violations (an LRU eviction
/// leaves them; replies repair them, claims and GC reclaim them).
///
/// The dump must be quiescent (no program running meanwhile), as in
/// `BPF_PROG_TEST_RUN` tests and the fuzzer: a concurrent creation is
/// briefly a connection without its reverse entry.
pub fn check_nat_invariants(
    conntrack: &[(CtKey, CtEntry)],
    revnat: &[(CtKey, RevNat)],
    settings: &NodeSettings,
    now_ns: u64,
) -> Vec<Violation> {
    let revnat: HashMap<CtKey, RevNat> = revnat.iter().copied().collect();
    let mut owners: HashMap<CtKey, CtKey> = HashMap::new();
    let mut out = Vec::new();
    for (orig, e) in conntrack {
        if settings.ct_expired(e, now_ns) {
            continue;
        }
        let reply = reply_of(orig, e, settings.gateway);
        match revnat.get(&reply) {
            None => out.push(Violation::MissingReverse { orig: *orig, reply }),
            Some(r) if !r.leads_back(orig) || r.flags & KIND != e.flags & KIND => {
                out.push(Violation::ReverseElsewhere {
                    orig: *orig,
                    reply,
                    rev: *r,
                });
            }
            Some(_) => {}
        }
        if let Some(other) = owners.insert(reply, *orig) {
            out.push(Violation::SharedTuple {
                reply,
                a: other,
                b: *orig,
            });
        }
        // A destination translation's port is the backend's.
        let in_range = (settings.nat_port_min..=settings.nat_port_max).contains(&e.nat_port);
        // A destination translation's port is its backend's.
        if e.flags & ct_flags::DNAT == 0 && !in_range && e.nat_port != orig.sport {
            out.push(Violation::PortOutOfRange {
                orig: *orig,
                nat_port: e.nat_port,
            });
        }
        if e.flags & ct_flags::NODE != 0 && e.nat_addr != orig.saddr {
            out.push(Violation::NodeAddress { orig: *orig });
        }
    }
    out
}

/// `5s`, `2m05s`, `3h07m`, `4d02h`.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn endpoint(proto: u8, addr: [u8; 4], port: u16) -> String {
    let addr = Ipv4Addr::from(addr);
    match proto {
        proto::ICMP if port == 0 => addr.to_string(),
        proto::ICMP => format!("{addr} id {port}"),
        _ => format!("{addr}:{port}"),
    }
}

/// The table `netpath conntrack list` prints, one connection a line.
pub fn format_table(conns: &[Connection]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5}  {:<23}   {:<21}  {:<21}  {:<11}  {:>7}  {:>10}  PKTS orig/reply",
        "PROTO", "ORIGINAL (pod)", "DEST", "NAT", "STATE", "AGE", "EXPIRES-IN"
    );
    for c in conns {
        let p = c.orig.proto;
        let expires = if c.expired {
            "expired".to_owned()
        } else {
            format_duration(c.expires_in)
        };
        let mut line = format!(
            "{:<5}  {:<23} → {:<21}  {:<21}  {:<11}  {:>7}  {:>10}  {}/{}",
            c.proto(),
            endpoint(p, c.orig.saddr, c.orig.sport),
            endpoint(p, c.orig.daddr, c.orig.dport),
            endpoint(p, c.entry.nat_addr, c.entry.nat_port),
            c.state(),
            format_duration(c.age),
            expires,
            c.entry.packets_orig,
            c.entry.packets_reply,
        );
        if c.revnat.is_none() {
            line.push_str("  [no reverse entry]");
        }
        let _ = writeln!(s, "{line}");
    }
    let _ = write!(s, "{} connections", conns.len());
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use netpath_common::reply_key;

    fn key(sport: u16, dport: u16, proto: u8) -> CtKey {
        CtKey {
            saddr: [10, 200, 0, 2],
            daddr: [192, 168, 50, 1],
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    fn entry(state: u8, last_seen_s: u64) -> CtEntry {
        CtEntry {
            nat_addr: [192, 168, 50, 2],
            nat_port: 40000,
            state,
            flags: 0,
            created_ns: 1_000_000_000,
            last_seen_ns: last_seen_s * 1_000_000_000,
            packets_orig: 3,
            packets_reply: 2,
            tcp: Default::default(),
        }
    }

    fn rev_of(k: &CtKey) -> RevNat {
        RevNat {
            addr: k.saddr,
            port: k.sport,
            flags: 0,
            _pad: 0,
            created_ns: 0,
        }
    }

    #[test]
    fn a_reverse_entry_maps_back_to_its_original() {
        for k in [key(41000, 8080, proto::TCP), key(777, 0, proto::ICMP)] {
            let reply = reply_key(&k, [192, 168, 50, 2], 40000);
            let rev = rev_of(&k);
            assert_eq!(original_of(&reply, &rev), k);
            assert!(rev.leads_back(&k));
        }
    }

    #[test]
    fn connection_times_and_fields() {
        let s = NodeSettings::DEFAULT;
        let now = 20 * 1_000_000_000;
        let c = Connection::new(
            key(41000, 8080, proto::TCP),
            entry(ct_state::TCP_CLOSE, 15),
            &s,
            now,
        );
        assert_eq!(c.age, Duration::from_secs(19));
        assert_eq!(c.expires_in, Duration::from_secs(5));
        assert!(!c.expired);
        assert_eq!(c.state(), "CLOSE");
        assert_eq!(c.proto(), "tcp");
        assert_eq!(c.source().to_string(), "10.200.0.2:41000");
        assert_eq!(c.destination().to_string(), "192.168.50.1:8080");
        assert_eq!(c.nat().to_string(), "192.168.50.2:40000");
        assert_eq!(c.reply.saddr, [192, 168, 50, 1]);
        assert_eq!((c.reply.sport, c.reply.dport), (8080, 40000));

        let c = Connection::new(
            key(41000, 8080, proto::TCP),
            entry(ct_state::TCP_CLOSE, 5),
            &s,
            now,
        );
        assert!(c.expired);
        assert_eq!(c.expires_in, Duration::ZERO);
    }

    #[test]
    fn table_is_readable() {
        let s = NodeSettings::DEFAULT;
        let now = 100 * 1_000_000_000;
        let mut tcp = Connection::new(
            key(41000, 8080, proto::TCP),
            entry(ct_state::TCP_ESTABLISHED, 99),
            &s,
            now,
        );
        tcp.revnat = Some(rev_of(&tcp.orig));
        let icmp = Connection::new(key(777, 0, proto::ICMP), entry(ct_state::ICMP, 10), &s, now);
        let text = format_table(&[tcp, icmp]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("PROTO") && lines[0].contains("EXPIRES-IN"),
            "{text}"
        );
        let words: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            words[..5],
            [
                "tcp",
                "10.200.0.2:41000",
                "→",
                "192.168.50.1:8080",
                "192.168.50.2:40000"
            ],
            "{text}"
        );
        assert!(lines[1].contains("192.168.50.2:40000"), "{text}");
        assert!(
            lines[1].contains("ESTABLISHED") && lines[1].contains("3/2"),
            "{text}"
        );
        assert!(!lines[1].contains("no reverse entry"), "{text}");
        assert!(lines[2].contains("10.200.0.2 id 777"), "{text}");
        assert!(lines[2].contains("→ 192.168.50.1 "), "{text}");
        assert!(lines[2].contains("192.168.50.2 id 40000"), "{text}");
        assert!(
            lines[2].contains("expired") && lines[2].contains("[no reverse entry]"),
            "{text}"
        );
        assert_eq!(lines[3], "2 connections");
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(Duration::from_secs(5)), "5s");
        assert_eq!(format_duration(Duration::from_secs(125)), "2m05s");
        assert_eq!(
            format_duration(Duration::from_secs(3 * 3600 + 7 * 60)),
            "3h07m"
        );
        assert_eq!(format_duration(Duration::from_secs(432_000)), "5d00h");
    }

    #[test]
    fn monotonic_clock_moves_forward() {
        let a = now_ns();
        let b = now_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn the_invariant_checker_finds_each_broken_invariant() {
        let s = NodeSettings {
            nat_port_min: 40000,
            nat_port_max: 40009,
            ..NodeSettings::DEFAULT
        };
        let now = 100 * 1_000_000_000;
        let nat = [192, 168, 50, 2];
        let a = key(5555, 80, proto::TCP);
        let mut ea = entry(ct_state::TCP_ESTABLISHED, 99);
        ea.nat_port = 5555;
        let ra = reply_key(&a, nat, 5555);
        let ok_ct = vec![(a, ea)];
        let ok_rev = vec![(ra, rev_of(&a))];
        assert_eq!(check_nat_invariants(&ok_ct, &ok_rev, &s, now), vec![]);
        // An orphan reverse entry is fine.
        let orphan = reply_key(&key(6000, 80, proto::TCP), nat, 40001);
        let mut revs = ok_rev.clone();
        revs.push((orphan, rev_of(&key(6000, 80, proto::TCP))));
        assert_eq!(check_nat_invariants(&ok_ct, &revs, &s, now), vec![]);
        // I1: missing, or leading elsewhere.
        assert!(matches!(
            check_nat_invariants(&ok_ct, &[], &s, now)[..],
            [Violation::MissingReverse { .. }]
        ));
        let b = CtKey {
            saddr: [10, 200, 0, 3],
            ..a
        };
        assert!(matches!(
            check_nat_invariants(&ok_ct, &[(ra, rev_of(&b))], &s, now)[..],
            [Violation::ReverseElsewhere { .. }]
        ));
        // I2: b shares a's tuple.
        let mut two = ok_ct.clone();
        two.push((b, ea));
        let v = check_nat_invariants(&two, &ok_rev, &s, now);
        assert!(
            v.iter().any(|v| matches!(v, Violation::SharedTuple { .. })),
            "{v:?}"
        );
        // A port neither own nor in range.
        let mut bad = ea;
        bad.nat_port = 7777;
        let v = check_nat_invariants(
            &[(a, bad)],
            &[(reply_key(&a, nat, 7777), rev_of(&a))],
            &s,
            now,
        );
        assert!(matches!(v[..], [Violation::PortOutOfRange { .. }]), "{v:?}");
        assert!(v[0].to_string().contains("7777"));
        // Expired connections are not checked.
        let old = entry(ct_state::TCP_CLOSE, 1);
        assert_eq!(check_nat_invariants(&[(a, old)], &[], &s, now), vec![]);
    }

    #[test]
    fn the_invariant_checker_pairs_a_dnat_connection_with_its_backends_reply_tuple() {
        let s = NodeSettings {
            nat_port_min: 40000,
            nat_port_max: 40009,
            gateway: [10, 200, 0, 1],
            ..NodeSettings::DEFAULT
        };
        let now = 100 * 1_000_000_000;
        // LAN client → the node's port-forward 8080 → pod 10.200.0.3:80.
        let orig = CtKey {
            saddr: [192, 168, 50, 1],
            daddr: [192, 168, 50, 2],
            sport: 5555,
            dport: 8080,
            proto: proto::TCP,
            _pad: [0; 3],
        };
        let mut e = entry(ct_state::TCP_ESTABLISHED, 99);
        (e.nat_addr, e.nat_port, e.flags) = ([10, 200, 0, 3], 80, ct_flags::DNAT);
        let reply = netpath_common::dnat_reply_key(&orig, e.nat_addr, 80, None);
        let rev = RevNat {
            addr: orig.daddr,
            port: orig.dport,
            flags: ct_flags::DNAT,
            _pad: 0,
            created_ns: 0,
        };
        let ct = [(orig, e)];
        // The backend's port 80 is outside the NAT range: not a violation.
        assert_eq!(check_nat_invariants(&ct, &[(reply, rev)], &s, now), vec![]);
        assert!(matches!(
            check_nat_invariants(&ct, &[], &s, now)[..],
            [Violation::MissingReverse { .. }]
        ));
        // A reverse entry without the DNAT flag is another connection's.
        let snat_rev = RevNat { flags: 0, ..rev };
        assert!(matches!(
            check_nat_invariants(&ct, &[(reply, snat_rev)], &s, now)[..],
            [Violation::ReverseElsewhere { .. }]
        ));
        // A hairpin pairs with the reply to the gateway.
        let hp = CtKey {
            saddr: [10, 200, 0, 3],
            daddr: [10, 96, 0, 10],
            ..orig
        };
        let mut he = e;
        he.flags = ct_flags::DNAT | ct_flags::HAIRPIN;
        let hreply = netpath_common::dnat_reply_key(&hp, hp.saddr, 80, Some(s.gateway));
        let hrev = RevNat {
            addr: hp.daddr,
            port: hp.dport,
            flags: he.flags,
            ..rev
        };
        assert_eq!(
            check_nat_invariants(&[(hp, he)], &[(hreply, hrev)], &s, now),
            vec![]
        );
        assert_eq!(reverse_of(&hp, &he, 0), hrev);
    }
}
