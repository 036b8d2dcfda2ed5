//! How `netpath monitor` prints an event: one line of text (time, kind,
//! reason, interface, pod, tuple), or one JSON object per line (`-o json`).

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use netpath_common::{
    Stat,
    events::{Event, kind},
};
use serde_json::{Value, json};

use super::names::Names;
use crate::datapath::events::Lost;

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;

/// Turns the programs' `CLOCK_MONOTONIC` stamps into wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Wall-clock time at monotonic 0.
    boot: SystemTime,
}

impl Clock {
    /// The offset between the two clocks, now.
    pub fn now() -> Self {
        let mono = Duration::from_nanos(super::monotonic_ns());
        Self {
            boot: SystemTime::now() - mono,
        }
    }

    /// A clock with a given boot time (tests).
    pub fn at(boot: SystemTime) -> Self {
        Self { boot }
    }

    /// The wall-clock time of a `bpf_ktime_get_ns()` stamp.
    pub fn wall(&self, ktime_ns: u64) -> SystemTime {
        self.boot + Duration::from_nanos(ktime_ns)
    }

    /// `HH:MM:SS.micros` (UTC) of a stamp.
    pub fn time_of_day(&self, ktime_ns: u64) -> String {
        let d = self
            .wall(ktime_ns)
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let s = d.as_secs() % 86_400;
        format!(
            "{:02}:{:02}:{:02}.{:06}",
            s / 3600,
            s / 60 % 60,
            s % 60,
            d.subsec_micros()
        )
    }
}

/// The name of the counter an event carries.
pub fn reason_name(reason: u32) -> &'static str {
    usize::try_from(reason)
        .ok()
        .and_then(|i| Stat::ALL.get(i))
        .map_or("unknown", |s| s.name())
}

/// The protocol's name (`tcp`, `udp`, `icmp`, or its number).
pub fn proto_name(proto: u8) -> String {
    match proto {
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        n => n.to_string(),
    }
}

fn addr(a: [u8; 4]) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

/// The event's tuple in words: `10.0.0.1:80 -> 10.0.0.2:5000 tcp`.
fn tuple(ev: &Event) -> String {
    if ev.proto == 0 && ev.saddr == [0; 4] {
        return match ev.ethertype {
            ETH_P_ARP => "arp".into(),
            ETH_P_IPV6 => "ipv6".into(),
            0 => "(no headers)".into(),
            t => format!("ethertype {t:#06x}"),
        };
    }
    let (s, d) = (addr(ev.saddr), addr(ev.daddr));
    match ev.proto {
        6 | 17 => format!(
            "{s}:{} -> {d}:{} {}",
            ev.sport,
            ev.dport,
            proto_name(ev.proto)
        ),
        1 if ev.icmp_type == 0 || ev.icmp_type == 8 => format!(
            "{s} -> {d} icmp {} id {}",
            if ev.icmp_type == 8 {
                "echo"
            } else {
                "echo-reply"
            },
            ev.sport
        ),
        1 => format!(
            "{s} -> {d} icmp type {} code {}",
            ev.icmp_type, ev.icmp_code
        ),
        p => format!("{s} -> {d} proto {p}"),
    }
}

/// What a trace event translated to, in words (empty for a drop).
fn translated(ev: &Event) -> String {
    match ev.kind {
        kind::TRACE_SNAT => format!(
            " => {}:{} -> {}:{}",
            addr(ev.nat_saddr),
            ev.nat_sport,
            addr(ev.nat_daddr),
            ev.nat_dport
        ),
        kind::TRACE_BACKEND => format!(" => backend {}:{}", addr(ev.nat_daddr), ev.nat_dport),
        _ => String::new(),
    }
}

/// The pod an event is about: the one behind its interface, else the one
/// whose address is its source, else its destination.
fn pod<'a>(ev: &Event, names: &'a Names) -> Option<&'a str> {
    names
        .pod_of_ifindex(ev.ifindex)
        .or_else(|| names.pod_of_addr(addr(ev.saddr)))
        .or_else(|| names.pod_of_addr(addr(ev.daddr)))
}

/// One line of text, as `cilium monitor` prints: time, kind, reason,
/// interface, pod, tuple, length.
pub fn text(ev: &Event, names: &Names, clock: &Clock) -> String {
    let iface = names
        .iface(ev.ifindex)
        .map_or_else(|| format!("if{}", ev.ifindex), str::to_owned);
    let mut s = format!(
        "{} {:<8} {:<24} {iface}",
        clock.time_of_day(ev.ktime_ns),
        kind::name(ev.kind),
        reason_name(ev.reason),
    );
    if let Some(p) = pod(ev, names) {
        let _ = write!(s, " pod {p}");
    }
    let _ = write!(s, ": {}{} ({} bytes)", tuple(ev), translated(ev), ev.len);
    s
}

/// One JSON object (without a newline).
pub fn json(ev: &Event, names: &Names, clock: &Clock) -> String {
    let wall = clock
        .wall(ev.ktime_ns)
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let mut v = json!({
        "type": kind::name(ev.kind),
        "time": wall.as_secs_f64(),
        "ktime_ns": ev.ktime_ns,
        "reason": reason_name(ev.reason),
        "ifindex": ev.ifindex,
        "iface": names.iface(ev.ifindex),
        "pod": pod(ev, names),
        "ethertype": ev.ethertype,
        "proto": proto_name(ev.proto),
        "saddr": addr(ev.saddr).to_string(),
        "daddr": addr(ev.daddr).to_string(),
        "sport": ev.sport,
        "dport": ev.dport,
        "len": ev.len,
    });
    if ev.proto == 1 {
        v["icmp_type"] = json!(ev.icmp_type);
        v["icmp_code"] = json!(ev.icmp_code);
    }
    if matches!(ev.kind, kind::TRACE_SNAT | kind::TRACE_BACKEND) {
        v["nat_saddr"] = json!(addr(ev.nat_saddr).to_string());
        v["nat_sport"] = json!(ev.nat_sport);
        v["nat_daddr"] = json!(addr(ev.nat_daddr).to_string());
        v["nat_dport"] = json!(ev.nat_dport);
    }
    v.to_string()
}

/// Events lost since the monitor started: a line of text, or a JSON
/// object of type `lost`.
pub fn lost(lost: &Lost, as_json: bool) -> String {
    if as_json {
        let v: Value = json!({
            "type": "lost",
            "rate_limited": lost.rate_limited,
            "ring_full": lost.ring_full,
        });
        v.to_string()
    } else {
        format!(
            "lost {} events since start: {} over the rate limit, {} with the ring buffer full",
            lost.total(),
            lost.rate_limited,
            lost.ring_full
        )
    }
}

/// `netpath stats`: the events the programs could not hand to a monitor,
/// as two more rows of its table (nothing without the monitor's maps).
pub fn lost_rows(lost: Option<&Lost>) -> String {
    lost.map_or_else(String::new, |l| {
        format!(
            "{:<24} {:>12}\n{:<24} {:>12}\n",
            "events_lost_rate_limit", l.rate_limited, "events_lost_ring_full", l.ring_full
        )
    })
}

/// `netpath stats -o json`: the counters' object with `events_lost`
/// (`{"rate_limited": N, "ring_full": M}`) added.
pub fn with_lost_json(stats_json: &str, lost: Option<&Lost>) -> String {
    let Some(lost) = lost else {
        return stats_json.to_owned();
    };
    let mut v: Value = serde_json::from_str(stats_json).unwrap_or_else(|_| json!({}));
    v["events_lost"] = json!(lost);
    crate::render::pretty(&v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        n.add_pod("red", Ipv4Addr::new(10, 200, 0, 2), Some(7), "np-red");
        n
    }

    fn clock() -> Clock {
        // Monotonic 0 at 2026-01-01T00:00:00Z.
        Clock::at(UNIX_EPOCH + Duration::from_secs(1_767_225_600))
    }

    fn spoofed_ping() -> Event {
        Event {
            ktime_ns: 3_723_000_001_000,
            kind: kind::DROP,
            proto: 1,
            icmp_type: 8,
            reason: Stat::DropSpoofedIp as u32,
            ifindex: 7,
            len: 98,
            saddr: [192, 168, 50, 77],
            daddr: [192, 168, 50, 1],
            sport: 4242,
            ethertype: 0x0800,
            ..Event::default()
        }
    }

    #[test]
    fn a_drop_reads_as_one_line() {
        assert_eq!(
            text(&spoofed_ping(), &names(), &clock()),
            "01:02:03.000001 drop     drop_spoofed_ip          np-red pod red: \
             192.168.50.77 -> 192.168.50.1 icmp echo id 4242 (98 bytes)"
        );
    }

    #[test]
    fn a_drop_as_json_has_reason_interface_pod_and_tuple() {
        let v: Value = serde_json::from_str(&json(&spoofed_ping(), &names(), &clock())).unwrap();
        assert_eq!(v["type"], "drop");
        assert_eq!(v["reason"], "drop_spoofed_ip");
        assert_eq!(v["iface"], "np-red");
        assert_eq!(v["pod"], "red");
        assert_eq!(v["saddr"], "192.168.50.77");
        assert_eq!(v["daddr"], "192.168.50.1");
        assert_eq!(v["proto"], "icmp");
        assert_eq!(v["icmp_type"], 8);
        assert_eq!(v["sport"], 4242);
        assert!(v.get("nat_saddr").is_none());
    }

    #[test]
    fn a_backend_choice_shows_the_backend() {
        let ev = Event {
            kind: kind::TRACE_BACKEND,
            reason: Stat::DnatNew as u32,
            proto: 6,
            icmp_type: 0,
            saddr: [10, 200, 0, 2],
            daddr: [10, 96, 0, 10],
            sport: 40000,
            dport: 80,
            nat_saddr: [10, 200, 0, 2],
            nat_sport: 40000,
            nat_daddr: [10, 200, 0, 3],
            nat_dport: 8080,
            ..spoofed_ping()
        };
        let line = text(&ev, &names(), &clock());
        assert!(
            line.contains("10.200.0.2:40000 -> 10.96.0.10:80 tcp => backend 10.200.0.3:8080"),
            "{line}"
        );
        let v: Value = serde_json::from_str(&json(&ev, &names(), &clock())).unwrap();
        assert_eq!(v["type"], "backend");
        assert_eq!(v["nat_daddr"], "10.200.0.3");
    }

    #[test]
    fn frames_without_ipv4_and_unknown_interfaces_still_read() {
        let arp = Event {
            proto: 0,
            saddr: [0; 4],
            daddr: [0; 4],
            ethertype: ETH_P_ARP,
            ifindex: 42,
            reason: Stat::DropSpoofedArp as u32,
            ..spoofed_ping()
        };
        let line = text(&arp, &Names::default(), &clock());
        assert!(
            line.contains("drop_spoofed_arp") && line.contains("if42: arp"),
            "{line}"
        );
        assert_eq!(reason_name(u32::MAX), "unknown");
    }

    #[test]
    fn stats_show_lost_events_when_the_maps_exist() {
        let l = Lost {
            rate_limited: 9,
            ring_full: 0,
        };
        assert!(lost_rows(Some(&l)).contains("events_lost_rate_limit"));
        assert!(lost_rows(None).is_empty());
        let v: Value =
            serde_json::from_str(&with_lost_json(r#"{"fwd_local_pod": {}}"#, Some(&l))).unwrap();
        assert_eq!(v["events_lost"]["rate_limited"], 9);
        assert!(v.get("fwd_local_pod").is_some());
    }

    #[test]
    fn lost_events_read_in_text_and_json() {
        let l = Lost {
            rate_limited: 3,
            ring_full: 1,
        };
        assert!(lost(&l, false).starts_with("lost 4 events"));
        let v: Value = serde_json::from_str(&lost(&l, true)).unwrap();
        assert_eq!(v["type"], "lost");
        assert_eq!(v["rate_limited"], 3);
    }
}
