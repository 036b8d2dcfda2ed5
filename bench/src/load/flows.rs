//! Idle connections for the conntrack scaling figures: real UDP flows from a
//! pod to the LAN host through the node's SNAT, one datagram each, with
//! distinct source ports × destination ports, so that the datapath under
//! test (netfilter's conntrack, or netpath's conntrack map) creates one
//! entry per flow, exactly as live traffic would. Nothing listens on those
//! ports; the flows just stay idle.

use std::{
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};

use super::check_target;
use crate::{ns, topology::Endpoints};

/// Destination ports per source socket.
pub const PORTS_PER_SOCKET: u16 = 1000;
/// The first destination port of the idle flows.
pub const FIRST_PORT: u16 = 40_000;
/// Source ports of the idle flows: each socket takes the next one.
static NEXT_SOURCE_PORT: AtomicU16 = AtomicU16::new(10_000);
const LAST_SOURCE_PORT: u16 = 19_000;
/// Datagrams sent between short pauses (so no queue overflows).
const BURST: usize = 256;

/// Sends one datagram on each of `n` new flows from the client to the
/// server address. Bounded: `n` datagrams and 60 s.
pub fn open(ep: &Endpoints, n: u64) -> Result<()> {
    check_target(ep.server_addr)?;
    let addr = ep.server_addr;
    ns::in_ns(&ep.client_ns, move || -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut left = n;
        let mut in_burst = 0;
        while left > 0 {
            // A source port never used before: new tuples even when called
            // again for a larger table.
            let s = loop {
                let sport = NEXT_SOURCE_PORT.fetch_add(1, Ordering::Relaxed);
                if sport >= LAST_SOURCE_PORT {
                    bail!("out of source ports for idle flows");
                }
                if let Ok(s) = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, sport)) {
                    break s;
                }
            };
            let k = left.min(u64::from(PORTS_PER_SOCKET)) as u16;
            for p in 0..k {
                // ECONNREFUSED from an earlier ICMP error is harmless.
                let _ = s.send_to(b"idle", SocketAddrV4::new(addr, FIRST_PORT + p));
                in_burst += 1;
                if in_burst == BURST {
                    in_burst = 0;
                    thread::sleep(Duration::from_micros(500));
                }
            }
            left -= u64::from(k);
            if Instant::now() > deadline {
                bail!("opening {n} idle flows took over 60 s");
            }
            ns::check_stop()?;
        }
        Ok(())
    })?
}
