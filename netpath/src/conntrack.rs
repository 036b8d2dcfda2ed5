//! The connection table from userspace: listing it (what `conntrack -L`
//! shows for netfilter) and collecting expired entries.
//!
//! The datapath keeps two LRU maps: `conntrack_v1`, keyed by the tuple the
//! pod sent (original direction), and `revnat_v1`, keyed by the tuple the
//! replies carry (remote → NAT address and port), which says which pod a
//! reply belongs to. The datapath treats an entry idle for longer than its
//! state's timeout as gone and replaces it when the flow comes back; the
//! LRU evicts entries when a table is full. [`gc`] deletes expired entries
//! (with their reverse entries) and reverse entries whose connection is
//! gone, so that idle flows do not hold NAT ports until eviction.
//!
//! Times are `CLOCK_MONOTONIC` nanoseconds, the clock of
//! `bpf_ktime_get_ns()` ([`now_ns`]).

use std::{
    collections::{HashMap, HashSet},
    fmt::Write as _,
    net::{Ipv4Addr, SocketAddrV4},
    time::Duration,
};

use netpath_common::{CtEntry, CtKey, NodeSettings, RevNat, ct_state, reply_key};

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
        let timeout_ns = u64::from(settings.ct_timeout_secs(entry.state)) * 1_000_000_000;
        let deadline = entry.last_seen_ns.saturating_add(timeout_ns);
        Self {
            orig,
            entry,
            reply: reply_key(&orig, entry.nat_addr, entry.nat_port),
            revnat: None,
            age: Duration::from_nanos(now_ns.saturating_sub(entry.created_ns)),
            expires_in: Duration::from_nanos(deadline.saturating_sub(now_ns)),
            expired: settings.ct_expired(entry.state, entry.last_seen_ns, now_ns),
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

    /// The source the connection has outside the node.
    pub fn nat(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::from(self.entry.nat_addr), self.entry.nat_port)
    }

    /// `ESTABLISHED`, `SYN_SENT`, `UNREPLIED`, ...
    pub fn state(&self) -> &'static str {
        ct_state::name(self.entry.state)
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
            c.revnat = revnat.get(&c.reply).filter(|r| leads_back(r, &k)).copied();
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
    /// Reverse entries deleted because their connection was gone.
    pub orphans: usize,
    /// Connections left in the table.
    pub remaining: usize,
}

/// Deletes the connections that expired at `now_ns` and their reverse
/// entries, and reverse entries whose connection is gone (evicted by the
/// LRU, or replaced with another mapping).
///
/// The reverse map is read before the connection table: the datapath
/// creates a connection's entry before its reverse entry, so a reverse
/// entry seen first whose connection is missing afterwards is an orphan,
/// not a connection being born.
pub fn gc(maps: &mut NodeMaps, now_ns: u64) -> Result<GcReport, MapsError> {
    let settings = maps.settings()?;
    let revnat: HashMap<CtKey, RevNat> = maps.revnat()?.into_iter().collect();
    let conntrack: HashMap<CtKey, CtEntry> = maps.conntrack()?.into_iter().collect();
    let mut report = GcReport::default();
    // Reply tuples of the connections that stay.
    let mut live: HashSet<CtKey> = HashSet::new();
    for (key, entry) in &conntrack {
        let reply = reply_key(key, entry.nat_addr, entry.nat_port);
        if settings.ct_expired(entry.state, entry.last_seen_ns, now_ns) {
            maps.remove_conntrack(key)?;
            if revnat.get(&reply).is_some_and(|r| leads_back(r, key)) {
                maps.remove_revnat(&reply)?;
            }
            report.removed += 1;
        } else {
            live.insert(reply);
        }
    }
    for (reply, rev) in &revnat {
        if live.contains(reply) {
            continue;
        }
        let orig = original_of(reply, rev);
        let expired_and_removed = conntrack.get(&orig).is_some_and(|e| {
            reply_key(&orig, e.nat_addr, e.nat_port) == *reply
                && settings.ct_expired(e.state, e.last_seen_ns, now_ns)
        });
        if !expired_and_removed {
            maps.remove_revnat(reply)?;
            report.orphans += 1;
        }
    }
    report.remaining = conntrack.len() - report.removed;
    Ok(report)
}

/// Whether a reverse entry leads back to the pod side of `orig`.
fn leads_back(rev: &RevNat, orig: &CtKey) -> bool {
    rev.addr == orig.saddr && rev.port == orig.sport
}

/// The original tuple a reverse entry was made for.
fn original_of(reply: &CtKey, rev: &RevNat) -> CtKey {
    CtKey {
        saddr: rev.addr,
        daddr: reply.saddr,
        sport: rev.port,
        dport: reply.sport,
        proto: reply.proto,
        _pad: [0; 3],
    }
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
        }
    }

    #[test]
    fn a_reverse_entry_maps_back_to_its_original() {
        for k in [key(41000, 8080, proto::TCP), key(777, 0, proto::ICMP)] {
            let reply = reply_key(&k, [192, 168, 50, 2], 40000);
            let rev = RevNat {
                addr: k.saddr,
                port: k.sport,
                _pad: 0,
            };
            assert_eq!(original_of(&reply, &rev), k);
            assert!(leads_back(&rev, &k));
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
        tcp.revnat = Some(RevNat {
            addr: tcp.orig.saddr,
            port: tcp.orig.sport,
            _pad: 0,
        });
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
}
