//! The node the fuzzer runs the programs in: a few pods, the route map (a
//! default route via the LAN host on the uplink, the directly connected LAN,
//! a second uplink without masquerade, the node's own addresses and the pod
//! CIDR to the node's stack), masquerade of the pod CIDR on the uplink, and
//! the settings. [`Node`] is also the model the oracle and the generators
//! read (who is a pod, where a destination is routed, which source is
//! masqueraded).
//!
//! When the maps change (new maps, `_v2` layouts, anti-spoofing data), the
//! seeding is [`Node::seed`]; the rest of the fuzzer reads only [`Node`].

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netpath::datapath::{Datapath, DatapathError, LoadOptions, MapsError};
use netpath_common::{Endpoint, MasqRule, NodeSettings, RouteNextHop};

/// The node's address on the LAN (the NAT address).
pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
/// The LAN host, the default gateway.
pub const LAN_GW: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// The pods' gateway address (answered by the node; not an endpoint).
pub const POD_GW: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The uplink (masquerade on it) and a second uplink without masquerade.
pub const UPLINK: u32 = 20;
pub const UPLINK2: u32 = 30;
/// Pods: 10.200.0.2 ..= 10.200.0.(1 + POD_COUNT).
pub const POD_COUNT: u8 = 6;
/// MTUs of the uplinks (veths with these ifindexes in the run's
/// network namespace, [`Node::make_devices`]): `bpf_check_mtu` finds them,
/// so frames larger than the uplink's MTU get fragmentation needed.
pub const UPLINK_MTU: u32 = 1400;
pub const UPLINK2_MTU: u32 = 1500;

/// How the node is configured for one run.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Size of the connection and reverse NAT tables (set before load).
    pub conntrack_max: u32,
    /// NAT port range (inclusive).
    pub port_min: u16,
    pub port_max: u16,
    /// All connection timeouts zero: every entry is expired at its next
    /// packet, so the stale-entry path runs all the time.
    pub zero_timeouts: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            conntrack_max: 65_536,
            port_min: 40_000,
            port_max: 40_999,
            zero_timeouts: false,
        }
    }
}

/// A route of the model: prefix → egress (`None`: the node's stack).
#[derive(Clone, Copy, Debug)]
pub struct Route {
    pub net: Ipv4Net,
    pub egress: Option<u32>,
    pub via: Ipv4Addr,
}

/// The node as seeded: what the maps hold, in a form the oracle can query.
#[derive(Clone, Debug)]
pub struct Node {
    pub setup: Setup,
    pub pods: Vec<(Ipv4Addr, Endpoint)>,
    pub routes: Vec<Route>,
    /// (egress ifindex, source prefix, NAT address).
    pub masq: Vec<(u32, Ipv4Net, Ipv4Addr)>,
    pub settings: NodeSettings,
}

/// Where a destination is routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Egress {
    Pod(u32),
    Stack,
    Out(u32),
}

fn net(s: &str) -> Ipv4Net {
    s.parse().expect("a valid prefix")
}

impl Node {
    pub fn new(setup: Setup) -> Self {
        let pods = (0..POD_COUNT)
            .map(|i| {
                let last = 2 + i;
                (
                    Ipv4Addr::new(10, 200, 0, last),
                    Endpoint {
                        ifindex: 100 + u32::from(i),
                        flags: 0,
                        pod_mac: [0x02, 0xaa, 0, 0, 0, last],
                        gw_mac: [0x02, 0x99, 0, 0, 0, last],
                    },
                )
            })
            .collect();
        let route = |n: &str, egress: Option<u32>, via: Ipv4Addr| Route {
            net: net(n),
            egress,
            via,
        };
        let routes = vec![
            route("0.0.0.0/0", Some(UPLINK), LAN_GW),
            route("192.168.50.0/24", Some(UPLINK), Ipv4Addr::UNSPECIFIED),
            route("192.168.50.2/32", None, Ipv4Addr::UNSPECIFIED),
            route("10.200.0.0/24", None, Ipv4Addr::UNSPECIFIED),
            route("172.16.0.0/16", Some(UPLINK2), Ipv4Addr::new(172, 16, 0, 1)),
        ];
        let masq = vec![(UPLINK, net("10.200.0.0/24"), NODE)];
        let mut settings = NodeSettings {
            nat_port_min: setup.port_min,
            nat_port_max: setup.port_max,
            gateway: POD_GW.octets(),
            ..NodeSettings::DEFAULT
        };
        if setup.zero_timeouts {
            settings.tcp_syn_timeout = 0;
            settings.tcp_established_timeout = 0;
            settings.tcp_fin_timeout = 0;
            settings.tcp_close_timeout = 0;
            settings.udp_timeout = 0;
            settings.udp_stream_timeout = 0;
            settings.icmp_timeout = 0;
        }
        Self {
            setup,
            pods,
            routes,
            masq,
            settings,
        }
    }

    /// Loads a private (unpinned) copy of the object and fills its maps.
    pub fn seed(&self) -> Result<Datapath, SeedError> {
        let mut dp = Datapath::load(LoadOptions {
            conntrack_max: self.setup.conntrack_max,
            ..LoadOptions::default()
        })?;
        let maps = dp.maps();
        for (addr, ep) in &self.pods {
            maps.upsert_endpoint(*addr, *ep)?;
        }
        let routes: Vec<_> = self
            .routes
            .iter()
            .map(|r| {
                (
                    r.net,
                    RouteNextHop {
                        ifindex: r.egress.unwrap_or(0),
                        via: r.via.octets(),
                    },
                )
            })
            .collect();
        maps.sync_routes(&routes)?;
        let masq: Vec<_> = self
            .masq
            .iter()
            .map(|(ifindex, net, nat)| {
                (
                    *net,
                    MasqRule {
                        ifindex: *ifindex,
                        nat_addr: nat.octets(),
                    },
                )
            })
            .collect();
        maps.sync_masq(&masq)?;
        maps.set_settings(self.settings)?;
        Ok(dp)
    }

    /// Creates the uplinks as veths with their ifindexes and MTUs
    /// in the calling thread's network namespace (a namespace of the run's
    /// own: `ip` inherits it).
    pub fn make_devices(&self) -> Result<(), SeedError> {
        for (ifindex, mtu) in [(UPLINK, UPLINK_MTU), (UPLINK2, UPLINK2_MTU)] {
            // A veth pair (the kernel may lack the dummy driver); the peer
            // takes the next ifindex.
            let (name, mtu) = (format!("npfz{ifindex}"), mtu.to_string());
            let args = [
                "link",
                "add",
                &name,
                "index",
                &ifindex.to_string(),
                "mtu",
                &mtu,
                "type",
                "veth",
                "peer",
                "name",
                &format!("{name}p"),
                "index",
                &(ifindex + 1).to_string(),
                "mtu",
                &mtu,
            ]
            .map(str::to_owned);
            let out = std::process::Command::new("ip")
                .args(&args)
                .output()
                .map_err(|e| SeedError::Device {
                    cmd: format!("ip {}", args.join(" ")),
                    detail: e.to_string(),
                })?;
            if !out.status.success() {
                return Err(SeedError::Device {
                    cmd: format!("ip {}", args.join(" ")),
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
                });
            }
        }
        Ok(())
    }

    /// The MTU of egress `ifindex`, if the node has that device.
    pub fn mtu(&self, ifindex: u32) -> Option<u32> {
        match ifindex {
            UPLINK => Some(UPLINK_MTU),
            UPLINK2 => Some(UPLINK2_MTU),
            _ => None,
        }
    }

    /// The pod behind host-side veth `ifindex`.
    pub fn pod_at(&self, ifindex: u32) -> Option<(Ipv4Addr, &Endpoint)> {
        self.pods
            .iter()
            .find(|(_, e)| e.ifindex == ifindex)
            .map(|(a, e)| (*a, e))
    }

    pub fn pod(&self, addr: Ipv4Addr) -> Option<&Endpoint> {
        self.pods.iter().find(|(a, _)| *a == addr).map(|(_, e)| e)
    }

    /// Where the datapath sends a packet to `dst` that a pod sent.
    pub fn egress(&self, dst: Ipv4Addr) -> Egress {
        if let Some(ep) = self.pod(dst) {
            return Egress::Pod(ep.ifindex);
        }
        let best = self
            .routes
            .iter()
            .filter(|r| r.net.contains(&dst))
            .max_by_key(|r| r.net.prefix_len());
        match best.and_then(|r| r.egress) {
            Some(ifindex) => Egress::Out(ifindex),
            None => Egress::Stack,
        }
    }

    /// The NAT address for `src` leaving through `egress`, when a
    /// masquerade rule covers it.
    pub fn masquerade(&self, egress: u32, src: Ipv4Addr) -> Option<Ipv4Addr> {
        self.masq
            .iter()
            .filter(|(i, n, _)| *i == egress && n.contains(&src))
            .max_by_key(|(_, n, _)| n.prefix_len())
            .map(|(_, _, nat)| *nat)
    }

    /// Whether `addr` is a NAT address of some rule.
    pub fn is_nat_addr(&self, addr: Ipv4Addr) -> bool {
        self.masq.iter().any(|(_, _, nat)| *nat == addr)
    }

    /// Whether `port` can be a NAT port chosen from the range.
    pub fn in_port_range(&self, port: u16) -> bool {
        (self.setup.port_min..=self.setup.port_max).contains(&port)
    }
}

/// Loading or seeding the datapath failed.
#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("cannot load the eBPF object (run as root): {0}")]
    Load(#[from] DatapathError),
    #[error("cannot seed the maps: {0}")]
    Maps(#[from] MapsError),
    #[error(
        "cannot create the uplink device ({cmd}): {detail}; the fuzzer needs root and iproute2"
    )]
    Device { cmd: String, detail: String },
}
