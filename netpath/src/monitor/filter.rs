//! Which events `netpath monitor` shows: by kind, pod, address, protocol
//! and port. The kernel emits every event of the kinds asked for (within
//! the rate); these filters choose among them.

use std::net::Ipv4Addr;

use netpath_common::events::{Event, kind};

use super::names::Names;

/// Which kinds of events to ask the programs for (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kinds {
    /// Every drop (the default; what costs nothing extra on a healthy
    /// node).
    #[default]
    Drop,
    /// The trace events only: new masqueraded connections, backend
    /// choices, redirects to local pods.
    Trace,
    /// Both.
    All,
}

impl Kinds {
    /// The kinds bits of the watch lease.
    pub fn mask(self) -> u32 {
        match self {
            Self::Drop => kind::DROP_MASK,
            Self::Trace => kind::TRACE_MASK,
            Self::All => kind::DROP_MASK | kind::TRACE_MASK,
        }
    }
}

/// An IP protocol to match (`--proto tcp|udp|icmp|NUMBER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proto(pub u8);

/// A `--proto` that names no protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown protocol '{0}': use tcp, udp, icmp or an IP protocol number (0-255)")]
pub struct BadProto(pub String);

impl std::str::FromStr for Proto {
    type Err = BadProto;

    fn from_str(s: &str) -> Result<Self, BadProto> {
        match s.to_ascii_lowercase().as_str() {
            "tcp" => Ok(Self(6)),
            "udp" => Ok(Self(17)),
            "icmp" => Ok(Self(1)),
            n => n.parse().map(Self).map_err(|_| BadProto(s.to_owned())),
        }
    }
}

/// The filters; every one given must match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Events of this pod: on its interface, or with its address as
    /// source or destination.
    pub pod: Option<String>,
    /// Events with this address anywhere in the tuple (translated tuple
    /// included).
    pub addr: Option<Ipv4Addr>,
    pub proto: Option<Proto>,
    /// Events with this port anywhere in the tuple.
    pub port: Option<u16>,
}

impl Filter {
    /// Whether `ev` passes every filter (`names` says which pod an
    /// interface or an address is).
    pub fn matches(&self, ev: &Event, names: &Names) -> bool {
        if let Some(p) = self.proto
            && ev.proto != p.0
        {
            return false;
        }
        if let Some(port) = self.port
            && ![ev.sport, ev.dport, ev.nat_sport, ev.nat_dport].contains(&port)
        {
            return false;
        }
        if let Some(addr) = self.addr {
            let a = addr.octets();
            if ![ev.saddr, ev.daddr, ev.nat_saddr, ev.nat_daddr].contains(&a) {
                return false;
            }
        }
        if let Some(pod) = &self.pod {
            let mine = |n: Option<&str>| n == Some(pod.as_str());
            if !(mine(names.pod_of_ifindex(ev.ifindex))
                || mine(names.pod_of_addr(ev.saddr.into()))
                || mine(names.pod_of_addr(ev.daddr.into()))
                || mine(names.pod_of_addr(ev.nat_daddr.into())))
            {
                return false;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Names {
        let mut n = Names::default();
        n.add_pod("red", Ipv4Addr::new(10, 200, 0, 2), Some(7), "np-red");
        n.add_pod("blue", Ipv4Addr::new(10, 200, 0, 3), Some(8), "np-blue");
        n
    }

    fn spoofed() -> Event {
        Event {
            kind: kind::DROP,
            proto: 17,
            ifindex: 7,
            saddr: [192, 168, 50, 77],
            daddr: [192, 168, 50, 1],
            sport: 4000,
            dport: 53,
            ..Event::default()
        }
    }

    #[test]
    fn no_filter_matches_everything() {
        assert!(Filter::default().matches(&spoofed(), &names()));
    }

    #[test]
    fn a_pod_matches_by_its_interface_or_its_address() {
        let f = Filter {
            pod: Some("red".into()),
            ..Filter::default()
        };
        assert!(f.matches(&spoofed(), &names()), "red's interface");
        let blue = Filter {
            pod: Some("blue".into()),
            ..Filter::default()
        };
        assert!(!blue.matches(&spoofed(), &names()));
        let to_blue = Event {
            ifindex: 99,
            daddr: [10, 200, 0, 3],
            ..spoofed()
        };
        assert!(blue.matches(&to_blue, &names()), "blue's address");
    }

    #[test]
    fn address_protocol_and_port_must_all_match() {
        let n = names();
        let f = Filter {
            addr: Some(Ipv4Addr::new(192, 168, 50, 77)),
            proto: Some("udp".parse().unwrap()),
            port: Some(53),
            pod: None,
        };
        assert!(f.matches(&spoofed(), &n));
        for wrong in [
            Filter {
                port: Some(54),
                ..f.clone()
            },
            Filter {
                proto: Some("tcp".parse().unwrap()),
                ..f.clone()
            },
            Filter {
                addr: Some(Ipv4Addr::new(10, 0, 0, 1)),
                ..f.clone()
            },
        ] {
            assert!(!wrong.matches(&spoofed(), &n), "{wrong:?}");
        }
    }

    #[test]
    fn protocols_parse_by_name_or_number() {
        assert_eq!("ICMP".parse(), Ok(Proto(1)));
        assert_eq!("132".parse(), Ok(Proto(132)));
        let err = "sctpx".parse::<Proto>().unwrap_err();
        assert!(err.to_string().contains("use tcp, udp, icmp"));
    }

    #[test]
    fn kinds_ask_for_drops_by_default_and_trace_only_when_asked() {
        assert_eq!(Kinds::default().mask(), kind::DROP_MASK);
        assert_eq!(Kinds::Trace.mask() & kind::DROP_MASK, 0);
        assert_eq!(Kinds::All.mask(), kind::DROP_MASK | kind::TRACE_MASK);
    }
}
