//! Frame generators and mutators. Every frame is drawn from the seeded
//! [`Rng`], so a seed replays the same sequence (the programs' own
//! randomness, `bpf_get_prandom_u32` for NAT ports, is not replayed: the
//! frames are, and so usually is a finding).
//!
//! Replies and ICMP errors are built from flows the datapath really
//! translated ([`Generator::learn`], fed by the runner with what left the
//! uplink and with the connection table), so that they hit.

use std::net::Ipv4Addr;

use super::{
    frame::{Ipv4View, fix_ip_csum, fix_l4_csum},
    rng::Rng,
    seed::{LAN_GW, NODE, Node, POD_GW},
};
use crate::packet::{
    ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, Ipv4Builder, L4, TCP_ACK, TCP_FIN, TCP_PSH,
    TCP_RST, TCP_SYN, arp_request, ethernet, icmp_echo,
};

/// The program a frame is run through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Prog {
    /// `np_from_pod` (TC ingress on a pod's host-side veth).
    FromPod,
    /// `np_from_uplink` (TC ingress on the uplink).
    FromUplink,
}

/// Weights of the generated kinds, in `Kind` order.
const KIND_WEIGHTS: [u32; 16] = [14, 10, 6, 2, 2, 4, 3, 3, 16, 6, 3, 5, 3, 3, 4, 4];

impl Prog {
    pub fn name(self) -> &'static str {
        match self {
            Prog::FromPod => "np_from_pod",
            Prog::FromUplink => "np_from_uplink",
        }
    }
}

/// What a generator meant to make (before mutation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    PodTcp,
    PodUdp,
    PodEcho,
    PodIcmpOther,
    PodOtherProto,
    PodToPod,
    PodToNode,
    PodSpoofed,
    Reply,
    IcmpErrorReply,
    LanToNode,
    Fragment,
    Options,
    NotIpv4,
    Random,
    /// The fragments of one datagram (from a pod, or a reply on the
    /// uplink), the later ones queued and run after it, now and then out of
    /// order, duplicated or lost.
    FragTrain,
}

/// One frame to run.
#[derive(Clone, Debug)]
pub struct Case {
    pub prog: Prog,
    /// The ingress ifindex (`np_from_pod`: the host-side veth the frame
    /// came in on; source verification checks it).
    pub ingress: u32,
    pub kind: Kind,
    /// Whether a mutator changed the generated frame.
    pub mutated: bool,
    pub frame: Vec<u8>,
}

/// A flow as it left the node: replies go to `nat` from `peer`.
#[derive(Clone, Debug)]
pub struct Translated {
    pub proto: u8,
    pub nat: (Ipv4Addr, u16),
    pub peer: (Ipv4Addr, u16),
    /// The frame as it left the uplink, for ICMP errors to quote.
    pub left: Option<Vec<u8>>,
}

const POOL: usize = 4096;
/// Ports that collide often: with each other across pods, with the NAT
/// range (40000...), and the well-known ones.
const PORTS: [u16; 8] = [1000, 1001, 5555, 40_000, 40_001, 53, 80, 65_535];
const FLAGS: [u8; 9] = [
    TCP_SYN,
    TCP_SYN | TCP_ACK,
    TCP_ACK,
    TCP_FIN | TCP_ACK,
    TCP_RST,
    TCP_RST | TCP_ACK,
    TCP_PSH | TCP_ACK,
    0,
    0xff,
];

pub struct Generator {
    rng: Rng,
    node: Node,
    pool: Vec<Translated>,
    pool_next: usize,
    /// The ingress ifindex of the frame being generated.
    ingress: u32,
    /// Later fragments of a [`Kind::FragTrain`], still to run.
    pending: std::collections::VecDeque<Case>,
    /// Per mille of structured frames that get mutated.
    pub mutate_per_mille: u32,
}

impl Generator {
    pub fn new(seed: u64, node: Node) -> Self {
        Self {
            rng: Rng::new(seed),
            node,
            pool: Vec::with_capacity(POOL),
            pool_next: 0,
            ingress: 0,
            pending: std::collections::VecDeque::new(),
            mutate_per_mille: 250,
        }
    }

    /// Remembers a translated flow, so that replies and errors hit it.
    pub fn learn(&mut self, t: Translated) {
        if self.pool.len() < POOL {
            self.pool.push(t);
        } else {
            self.pool[self.pool_next] = t;
            self.pool_next = (self.pool_next + 1) % POOL;
        }
    }

    pub fn next_case(&mut self) -> Case {
        if !self.pending.is_empty() && self.rng.chance(1, 2) {
            let i = if self.rng.chance(1, 8) {
                self.rng.below(self.pending.len())
            } else {
                0
            };
            let case = self.pending.remove(i).expect("in range");
            if self.rng.chance(1, 16) {
                // Duplicated.
                self.pending.push_back(case.clone());
            }
            return case;
        }
        let kind = match self.rng.weighted(&KIND_WEIGHTS) {
            0 => Kind::PodTcp,
            1 => Kind::PodUdp,
            2 => Kind::PodEcho,
            3 => Kind::PodIcmpOther,
            4 => Kind::PodOtherProto,
            5 => Kind::PodToPod,
            6 => Kind::PodToNode,
            7 => Kind::PodSpoofed,
            8 => Kind::Reply,
            9 => Kind::IcmpErrorReply,
            10 => Kind::LanToNode,
            11 => Kind::Fragment,
            12 => Kind::Options,
            13 => Kind::NotIpv4,
            14 => Kind::Random,
            _ => Kind::FragTrain,
        };
        // A frame from a pod comes in on some pod's veth; the generators
        // that make a pod's frame set the sender's.
        self.ingress = self.rng.pick(&self.node.pods).1.ifindex;
        let (prog, mut frame) = self.generate(kind);
        let mut mutated = false;
        if !matches!(kind, Kind::Random) && self.rng.chance(self.mutate_per_mille, 1000) {
            mutated = true;
            self.mutate(&mut frame);
        }
        // BPF_PROG_TEST_RUN wants at most about a page, and at least an
        // Ethernet header plus, for IPv4 and IPv6, the fixed network header
        // (it refuses shorter frames with EINVAL; shorter ones are padded).
        frame.truncate(1600);
        let min = match frame.get(12..14) {
            Some([0x08, 0x00]) => 34,
            Some([0x86, 0xdd]) => 54,
            _ => 14,
        };
        if frame.len() < min {
            frame.resize(min, 0);
        }
        Case {
            prog,
            ingress: self.ingress,
            kind,
            mutated,
            frame,
        }
    }

    fn pod(&mut self) -> Ipv4Addr {
        self.rng.pick(&self.node.pods).0
    }

    fn port(&mut self) -> u16 {
        if self.rng.chance(1, 2) {
            *self.rng.pick(&PORTS)
        } else {
            self.rng.u16()
        }
    }

    /// A destination outside the pods: the LAN, the internet, the second
    /// uplink, and the odd ones a router must not forward.
    fn remote(&mut self) -> Ipv4Addr {
        const R: [Ipv4Addr; 8] = [
            LAN_GW,
            Ipv4Addr::new(192, 168, 50, 10),
            Ipv4Addr::new(192, 168, 50, 77),
            Ipv4Addr::new(8, 8, 8, 8),
            Ipv4Addr::new(1, 1, 1, 1),
            Ipv4Addr::new(172, 16, 5, 5),
            Ipv4Addr::new(93, 184, 216, 34),
            Ipv4Addr::new(192, 168, 50, 255),
        ];
        match self.rng.below(40) {
            0 => Ipv4Addr::BROADCAST,
            1 => Ipv4Addr::new(224, 0, 0, 1),
            2 => Ipv4Addr::new(127, 0, 0, 1),
            3 => Ipv4Addr::new(0, 0, 0, 0),
            4 => Ipv4Addr::from(self.rng.u32()),
            _ => *self.rng.pick(&R),
        }
    }

    fn flags(&mut self) -> u8 {
        if self.rng.chance(1, 2) {
            self.rng.u8()
        } else {
            *self.rng.pick(&FLAGS)
        }
    }

    fn l4(&mut self, proto: u8, sport: u16, dport: u16) -> L4 {
        match proto {
            IPPROTO_TCP => L4::Tcp {
                sport,
                dport,
                flags: self.flags(),
                seq: self.rng.u32(),
                ack: self.rng.u32(),
            },
            IPPROTO_UDP => L4::Udp {
                sport,
                dport,
                csum: !self.rng.chance(1, 8),
            },
            _ => icmp_echo(8, sport, self.rng.u16()),
        }
    }

    fn payload(&mut self) -> Vec<u8> {
        let len = match self.rng.below(10) {
            0 => 0,
            1 => self.rng.range(200, 1400),
            _ => self.rng.range(1, 64),
        };
        let mut p = vec![0; len];
        self.rng.fill(&mut p);
        p
    }

    fn packet(&mut self, src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Ipv4Builder {
        let proto = match l4 {
            L4::Tcp { .. } => IPPROTO_TCP,
            L4::Udp { .. } => IPPROTO_UDP,
            L4::Icmp { .. } => IPPROTO_ICMP,
            L4::Raw => self.rng.u8(),
        };
        let mut b = Ipv4Builder::new(src, dst);
        b.proto = proto;
        b.l4 = l4;
        b.payload = self.payload();
        b.id = self.rng.u16();
        b.frags = if self.rng.chance(1, 2) { 0x4000 } else { 0 };
        b.ttl = match self.rng.below(20) {
            0 => 0,
            1 => 1,
            2 => 2,
            3 => 255,
            _ => 64,
        };
        b
    }

    fn pod_packet(&mut self, proto: u8, dst: Ipv4Addr) -> Ipv4Builder {
        let src = self.pod();
        let (sport, dport) = (self.port(), self.port());
        let l4 = self.l4(proto, sport, dport);
        let mut b = self.packet(src, dst, l4);
        let ep = *self.node.pod(src).expect("a pod");
        b.src_mac = ep.pod_mac;
        b.dst_mac = ep.gw_mac;
        self.ingress = ep.ifindex;
        b
    }

    fn generate(&mut self, kind: Kind) -> (Prog, Vec<u8>) {
        let pod = Prog::FromPod;
        match kind {
            Kind::PodTcp => {
                let dst = self.remote();
                (pod, self.pod_packet(IPPROTO_TCP, dst).build())
            }
            Kind::PodUdp => {
                let dst = self.remote();
                (pod, self.pod_packet(IPPROTO_UDP, dst).build())
            }
            Kind::PodEcho => {
                let dst = self.remote();
                (pod, self.pod_packet(IPPROTO_ICMP, dst).build())
            }
            Kind::PodIcmpOther => {
                let dst = self.remote();
                let mut b = self.pod_packet(IPPROTO_ICMP, dst);
                let mut rest = [0; 4];
                self.rng.fill(&mut rest);
                let ty = if self.rng.chance(1, 2) {
                    *self.rng.pick(&[0, 3, 5, 11, 12, 13])
                } else {
                    self.rng.u8()
                };
                b.l4 = L4::Icmp {
                    ty,
                    code: self.rng.u8() % 16,
                    rest,
                };
                (pod, b.build())
            }
            Kind::PodOtherProto => {
                let dst = self.remote();
                let mut b = self.pod_packet(IPPROTO_UDP, dst);
                b.l4 = L4::Raw;
                b.proto = *self.rng.pick(&[0, 2, 4, 41, 47, 50, 132, 255]);
                (pod, b.build())
            }
            Kind::PodToPod => {
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let dst = self.pod();
                (pod, self.pod_packet(proto, dst).build())
            }
            Kind::PodToNode => {
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let dst = *self.rng.pick(&[
                    NODE,
                    POD_GW,
                    Ipv4Addr::new(10, 200, 0, 200),
                    Ipv4Addr::new(10, 200, 0, 255),
                ]);
                (pod, self.pod_packet(proto, dst).build())
            }
            Kind::PodSpoofed => {
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let dst = self.remote();
                let mut b = self.pod_packet(proto, dst);
                match self.rng.below(3) {
                    // A source address that is not the pod's.
                    0 => {
                        b.src = match self.rng.below(6) {
                            0 => Ipv4Addr::new(192, 168, 50, 77),
                            1 => NODE,
                            2 => Ipv4Addr::new(10, 200, 0, 200),
                            3 => Ipv4Addr::UNSPECIFIED,
                            4 => self.pod(),
                            _ => Ipv4Addr::from(self.rng.u32()),
                        }
                    }
                    // The pod's address from another MAC.
                    1 => {
                        b.src_mac = if self.rng.chance(1, 2) {
                            self.rng.pick(&self.node.pods).1.pod_mac
                        } else {
                            [0x02, 0x66, 0, 0, 0, self.rng.u8()]
                        }
                    }
                    // The pod's own frame, on another pod's veth.
                    _ => self.ingress = self.rng.pick(&self.node.pods).1.ifindex,
                }
                (pod, b.build())
            }
            Kind::Reply => (Prog::FromUplink, self.reply()),
            Kind::IcmpErrorReply => (Prog::FromUplink, self.icmp_error()),
            Kind::LanToNode => {
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let (sport, dport) = (self.port(), self.port());
                let l4 = self.l4(proto, sport, dport);
                let src = self.remote();
                let dst = if self.rng.chance(3, 4) {
                    NODE
                } else {
                    self.pod()
                };
                (Prog::FromUplink, self.packet(src, dst, l4).build())
            }
            Kind::Fragment => {
                let (prog, mut f) = if self.rng.chance(1, 2) {
                    let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                    let dst = self.remote();
                    (pod, self.pod_packet(proto, dst).build())
                } else {
                    (Prog::FromUplink, self.reply())
                };
                if f.len() >= 34 {
                    let frags: u16 = if self.rng.chance(1, 2) {
                        0x2000
                    } else {
                        (self.rng.u16() & 0x3fff).max(1)
                    };
                    f[20..22].copy_from_slice(&frags.to_be_bytes());
                    fix_ip_csum(&mut f);
                }
                (prog, f)
            }
            Kind::Options => {
                let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
                let dst = self.remote();
                let mut b = self.pod_packet(proto, dst);
                let len = self.rng.range(1, 40);
                b.options = match self.rng.below(3) {
                    0 => vec![1; len],
                    1 => {
                        // Record route with room for a few addresses.
                        let n = 3 + 4 * self.rng.range(1, 9);
                        let mut o = vec![7, n as u8, 4];
                        o.resize(n, 0);
                        o
                    }
                    _ => {
                        let mut o = vec![0; len];
                        self.rng.fill(&mut o);
                        o
                    }
                };
                if self.rng.chance(1, 3) {
                    let reply = self.reply();
                    return (Prog::FromUplink, with_options(&reply, &b.options));
                }
                (pod, b.build())
            }
            Kind::NotIpv4 => {
                let prog = if self.rng.chance(1, 2) {
                    pod
                } else {
                    Prog::FromUplink
                };
                let f = match self.rng.below(4) {
                    0 => {
                        // Mostly the pod's own ARP, sometimes another's.
                        let (addr, ep) = *self.rng.pick(&self.node.pods);
                        if self.rng.chance(3, 4) {
                            self.ingress = ep.ifindex;
                        }
                        arp_request(ep.pod_mac, addr, POD_GW)
                    }
                    1 => {
                        // IPv6 with a random payload.
                        let mut f = ethernet([0x33; 6], [0x02; 6], 0x86dd);
                        let mut p = vec![0; self.rng.range(0, 80)];
                        self.rng.fill(&mut p);
                        if let Some(b) = p.first_mut() {
                            *b = 0x60;
                        }
                        f.extend_from_slice(&p);
                        f
                    }
                    2 => {
                        // An 802.1Q-tagged IPv4 packet.
                        let dst = self.remote();
                        let inner = self.pod_packet(IPPROTO_UDP, dst).build();
                        let mut f = inner[..12].to_vec();
                        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
                        f.extend_from_slice(&inner[12..]);
                        f
                    }
                    _ => {
                        let mut f = ethernet([0xff; 6], [0x02; 6], self.rng.u16());
                        let mut p = vec![0; self.rng.range(0, 60)];
                        self.rng.fill(&mut p);
                        f.extend_from_slice(&p);
                        f
                    }
                };
                (prog, f)
            }
            Kind::FragTrain => self.frag_train(),
            Kind::Random => {
                let prog = if self.rng.chance(1, 2) {
                    pod
                } else {
                    Prog::FromUplink
                };
                let mut f = vec![0; self.rng.range(14, 200)];
                self.rng.fill(&mut f);
                if self.rng.chance(3, 4) {
                    f[12..14].copy_from_slice(&ETH_P_IP.to_be_bytes());
                    if f.len() > 14 && self.rng.chance(2, 3) {
                        f[14] = 0x45;
                        if f.len() >= 18 && self.rng.chance(1, 2) {
                            let tot = (f.len() - 14) as u16;
                            f[16..18].copy_from_slice(&tot.to_be_bytes());
                        }
                        // From a pod, mostly as the pod behind the veth
                        // (past source verification, into the parser).
                        if prog == pod && f.len() >= 34 && self.rng.chance(3, 4) {
                            let ingress = self.ingress;
                            let (addr, ep) = self
                                .node
                                .pods
                                .iter()
                                .find(|(_, e)| e.ifindex == ingress)
                                .copied()
                                .expect("the ingress is a pod's");
                            f[6..12].copy_from_slice(&ep.pod_mac);
                            f[26..30].copy_from_slice(&addr.octets());
                        }
                        fix_ip_csum(&mut f);
                    }
                }
                (prog, f)
            }
        }
    }

    /// A datagram of 16 to 1,500 bytes of payload, split at 1 to 3 offsets
    /// (multiples of 8): the first fragment is returned, the later ones are
    /// queued (one now and then lost).
    fn frag_train(&mut self) -> (Prog, Vec<u8>) {
        let (prog, mut b, src_mac, dst_mac) = if self.rng.chance(1, 2) {
            let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
            let dst = self.remote();
            let b = self.pod_packet(proto, dst);
            let (s, d) = (b.src_mac, b.dst_mac);
            (Prog::FromPod, b, s, d)
        } else {
            let Some(t) =
                (!self.pool.is_empty()).then(|| self.pool[self.rng.below(self.pool.len())].clone())
            else {
                return (Prog::FromUplink, self.reply());
            };
            let l4 = match t.proto {
                IPPROTO_ICMP => icmp_echo(0, t.nat.1, self.rng.u16()),
                p => self.l4(p, t.peer.1, t.nat.1),
            };
            let mut b = self.packet(t.peer.0, t.nat.0, l4);
            b.ttl = b.ttl.max(2);
            (
                Prog::FromUplink,
                b,
                [0x02, 0x50, 0, 0, 0, 1],
                [0x02, 0x50, 0, 0, 0, 2],
            )
        };
        b.src_mac = src_mac;
        b.dst_mac = dst_mac;
        b.frags = 0;
        let mut payload = vec![0; self.rng.range(16, 1500)];
        self.rng.fill(&mut payload);
        b.payload = payload;
        let frame = b.build();
        let Some(v) = Ipv4View::parse(&frame) else {
            return (prog, frame);
        };
        let seg = v.tot_len - v.ihl;
        let mut at: Vec<usize> = (0..self.rng.range(1, 3))
            .map(|_| 8 * self.rng.range(1, (seg - 1) / 8))
            .filter(|&a| a < seg)
            .collect();
        at.sort_unstable();
        at.dedup();
        if at.is_empty() {
            return (prog, frame);
        }
        let mut frags = crate::packet::fragment(&frame, &at).into_iter();
        let first = frags.next().expect("a first fragment");
        for f in frags {
            if self.rng.chance(1, 16) {
                continue; // lost
            }
            self.pending.push_back(Case {
                prog,
                ingress: self.ingress,
                kind: Kind::FragTrain,
                mutated: false,
                frame: f,
            });
        }
        (prog, first)
    }

    /// A reply to a translated flow (or, when none is known yet or now and
    /// then, to a random port of the node).
    fn reply(&mut self) -> Vec<u8> {
        if self.pool.is_empty() || self.rng.chance(1, 10) {
            let proto = *self.rng.pick(&[IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMP]);
            let (sport, dport) = (self.port(), self.port());
            let mut l4 = self.l4(proto, sport, dport);
            if let L4::Icmp { ty, .. } = &mut l4 {
                *ty = 0;
            }
            let src = self.remote();
            return self.packet(src, NODE, l4).build();
        }
        let t = self.pool[self.rng.below(self.pool.len())].clone();
        let l4 = match t.proto {
            IPPROTO_ICMP => icmp_echo(0, t.nat.1, self.rng.u16()),
            p => {
                let mut l4 = self.l4(p, t.peer.1, t.nat.1);
                if let L4::Tcp { flags, .. } = &mut l4
                    && self.rng.chance(1, 2)
                {
                    *flags = *self
                        .rng
                        .pick(&[TCP_SYN | TCP_ACK, TCP_ACK, TCP_FIN | TCP_ACK]);
                }
                l4
            }
        };
        let mut b = self.packet(t.peer.0, t.nat.0, l4);
        b.ttl = b.ttl.max(2);
        b.src_mac = [0x02, 0x50, 0, 0, 0, 1];
        b.dst_mac = [0x02, 0x50, 0, 0, 0, 2];
        b.build()
    }

    /// An ICMP error (unreachable, time exceeded, parameter problem) from
    /// the peer or a router, quoting a packet as it left the node.
    fn icmp_error(&mut self) -> Vec<u8> {
        let known: Vec<usize> = (0..self.pool.len())
            .filter(|&i| self.pool[i].left.is_some())
            .collect();
        let quoted = if known.is_empty() {
            let dst = self.remote();
            let mut f = self.pod_packet(IPPROTO_UDP, dst).build();
            f[26..30].copy_from_slice(&NODE.octets());
            fix_ip_csum(&mut f);
            f
        } else {
            let i = *self.rng.pick(&known);
            self.pool[i].left.clone().expect("filtered")
        };
        let v = Ipv4View::parse(&quoted);
        let ip = &quoted[14..];
        let quote_len = match (self.rng.below(4), &v) {
            (0, Some(v)) => v.tot_len.min(548),
            (1, Some(v)) => v.ihl + 4,
            (_, Some(v)) => v.ihl + 8,
            _ => ip.len().min(28),
        }
        .min(ip.len());
        let (ty, code) = match self.rng.below(4) {
            0 => (11, 0),
            1 => (12, 0),
            2 => (3, 4),
            _ => (3, self.rng.u8() % 16),
        };
        let mut rest = [0; 4];
        if (ty, code) == (3, 4) {
            rest[2..].copy_from_slice(&1400u16.to_be_bytes());
        }
        let from = if self.rng.chance(1, 2) {
            v.as_ref().map_or(LAN_GW, |v| v.dst)
        } else {
            LAN_GW
        };
        let mut b = Ipv4Builder::icmp(from, NODE, L4::Icmp { ty, code, rest });
        b.payload = ip[..quote_len].to_vec();
        b.id = self.rng.u16();
        b.build()
    }

    /// 1 to 3 mutations, then (often) checksums made right again so that
    /// the oracle judges the datapath's own rewrites of the mutated frame.
    fn mutate(&mut self, f: &mut Vec<u8>) {
        for _ in 0..self.rng.range(1, 3) {
            let l4 = Ipv4View::parse(f).map_or(34, |v| v.l4());
            match self.rng.below(6) {
                0 => {
                    let at = self.rng.below(f.len().min(96));
                    f[at] ^= 1 << self.rng.below(8);
                }
                1 | 2 => {
                    // A header field at its offset: version/IHL, total
                    // length, flags/fragment offset, TTL, protocol, ports,
                    // TCP data offset and flags, ICMP type.
                    let offsets = [
                        14,
                        16,
                        17,
                        20,
                        21,
                        22,
                        23,
                        l4,
                        l4 + 1,
                        l4 + 2,
                        l4 + 3,
                        l4 + 12,
                        l4 + 13,
                    ];
                    let at = *self.rng.pick(&offsets);
                    if at < f.len() {
                        f[at] = match self.rng.below(6) {
                            0 => 0,
                            1 => 1,
                            2 => 0xff,
                            3 => 0x80,
                            4 => f[at].wrapping_add(1),
                            _ => self.rng.u8(),
                        };
                    }
                }
                3 => {
                    let len = self.rng.range(14.min(f.len()), f.len());
                    f.truncate(len);
                }
                4 => {
                    let mut more = vec![0; self.rng.range(1, 64)];
                    if self.rng.chance(1, 2) {
                        self.rng.fill(&mut more);
                    }
                    f.extend_from_slice(&more);
                }
                _ => {
                    // The total length is made to match the frame (after a
                    // truncation or extension).
                    if f.len() >= 18 {
                        let tot = (f.len() - 14) as u16;
                        f[16..18].copy_from_slice(&tot.to_be_bytes());
                    }
                }
            }
        }
        if self.rng.chance(3, 5) {
            fix_ip_csum(f);
        }
        if self.rng.chance(2, 5) {
            fix_l4_csum(f);
        }
    }
}

/// `frame` with IPv4 options inserted (header length, total length and
/// checksum fixed; the L4 checksum does not cover the IP header).
fn with_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    let Some(v) = Ipv4View::parse(frame) else {
        return frame.to_vec();
    };
    let mut opts = options.to_vec();
    opts.resize(opts.len().div_ceil(4) * 4, 0);
    if v.ihl + opts.len() > 60 {
        return frame.to_vec();
    }
    let mut f = frame[..14 + v.ihl].to_vec();
    f.extend_from_slice(&opts);
    f.extend_from_slice(&frame[14 + v.ihl..]);
    f[14] = 0x40 | ((v.ihl + opts.len()) / 4) as u8;
    let tot = (v.tot_len + opts.len()) as u16;
    f[16..18].copy_from_slice(&tot.to_be_bytes());
    fix_ip_csum(&mut f);
    f
}
