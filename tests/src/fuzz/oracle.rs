//! The per-frame oracle: what a program may do with one frame, judged from
//! the input, the verdict and the output alone (the map invariants are
//! [`super::invariants`]).
//!
//! `BPF_PROG_TEST_RUN` does not say where a redirect goes; the target is
//! inferred: a frame whose destination is a local pod goes to that pod
//! (its MACs must be that pod's), any other redirected frame from a pod
//! leaves through the egress the route model ([`Node::egress`]) gives for
//! its destination.
//!
//! Checks (the `check` names in findings):
//! - `verdict`: one of TC_ACT_OK, TC_ACT_SHOT, TC_ACT_REDIRECT;
//! - `pass-modified`: a frame handed to the node's stack is untouched;
//! - `redirect-not-ipv4`, `redirect-bad-target`: only well-formed IPv4 is
//!   redirected, to a pod or to an egress the routes give;
//! - `length`, `padding`, `ip-options`: the frame keeps its length, bytes
//!   after the IP total length (Ethernet padding) and its IP options;
//! - `ttl`: decremented by one, and never forwarded with TTL ≤ 1;
//! - `ipv4-checksum`, `l4-checksum`: valid on output when valid on input
//!   (computed from scratch; a zero UDP checksum may stay zero);
//! - `masquerade`: a frame leaving through an egress whose masquerade rule
//!   covers its source leaves with the NAT address, never a pod address;
//!   without a rule the source is unchanged;
//! - `pod-macs`: delivered to a pod with that pod's MAC and its gateway MAC;
//! - `uplink-target`: `np_from_uplink` redirects only replies to a NAT
//!   address, and only to a pod;
//! - `icmp-quote`: an ICMP error delivered to a pod quotes the pod's own
//!   address, with a valid quoted IPv4 checksum when it was valid;
//! - `martian`: no limited broadcast, multicast, loopback, 0.0.0.0/8 or
//!   240.0.0.0/4 destination (or source) is forwarded (a Linux router
//!   drops them);
//! - `spoofed`: a pod's IPv4 or ARP frame that is not dropped has the
//!   source address and MAC of the pod behind the veth it came in on;
//!   `pod-ethertype`: anything else a pod sends is dropped;
//! - `icmp-answer`: an ICMP error the gateway sends back to a pod (time
//!   exceeded for TTL ≤ 1, fragmentation needed with the egress MTU for a
//!   DF frame larger than it) is due, allowed (not about an error, a later
//!   fragment, a multicast or broadcast destination) and equal byte for
//!   byte to one built independently, with both checksums right;
//! - `mtu`: no frame larger than the egress MTU leaves (netpath does not
//!   fragment).

use std::net::Ipv4Addr;

use super::{
    frame::{Ipv4View, L4Csum, be16},
    generate::{Prog, Translated},
    seed::{Egress, Node},
};
use crate::packet::{
    ETH_P_ARP, ETH_P_IP, IPPROTO_ICMP, Ipv4Builder, L4, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT,
    inet_checksum,
};

/// One broken check.
#[derive(Clone, Debug)]
pub struct Violation {
    pub check: &'static str,
    pub detail: String,
}

fn v(check: &'static str, detail: String) -> Violation {
    Violation { check, detail }
}

/// Where a frame went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Dropped,
    Passed,
    ToPod(Ipv4Addr),
    Out(u32),
    /// A verdict or target the oracle could not place (a violation says
    /// why).
    Unknown,
}

/// A reply `np_from_uplink` delivered to a pod: the invariant checker
/// looks its connection up.
#[derive(Clone, Debug)]
pub struct Delivered {
    pub proto: u8,
    /// Reply tuple as it arrived: peer → NAT address and port.
    pub peer: (Ipv4Addr, u16),
    pub nat: (Ipv4Addr, u16),
    /// Where it went: the pod and port.
    pub pod: (Ipv4Addr, u16),
}

/// The oracle's judgement of one frame.
#[derive(Debug)]
pub struct Judgement {
    pub outcome: Outcome,
    pub violations: Vec<Violation>,
    /// A flow that left the uplink translated (for the generators).
    pub translated: Option<Translated>,
    /// A reply delivered to a pod (not an ICMP error).
    pub delivered: Option<Delivered>,
}

/// Judges `output` and `verdict` of `prog` on `input`, which came in on
/// `ingress` (for `np_from_pod`: a pod's veth).
pub fn judge(
    node: &Node,
    prog: Prog,
    ingress: u32,
    input: &[u8],
    verdict: u32,
    output: &[u8],
) -> Judgement {
    let mut j = Judgement {
        outcome: Outcome::Unknown,
        violations: Vec::new(),
        translated: None,
        delivered: None,
    };
    if prog == Prog::FromPod && verdict != TC_ACT_SHOT {
        source_verified(node, ingress, input, &mut j.violations);
    }
    match verdict {
        TC_ACT_SHOT => j.outcome = Outcome::Dropped,
        TC_ACT_OK => {
            j.outcome = Outcome::Passed;
            if input != output {
                j.violations.push(v(
                    "pass-modified",
                    format!(
                        "{} passed the frame to the stack but changed it",
                        prog.name()
                    ),
                ));
            }
        }
        TC_ACT_REDIRECT => redirected(node, prog, input, output, &mut j),
        other => j
            .violations
            .push(v("verdict", format!("{} returned {other}", prog.name()))),
    }
    j
}

/// `spoofed`, `pod-ethertype`: what a pod's frame that was not dropped
/// must be.
fn source_verified(node: &Node, ingress: u32, input: &[u8], vs: &mut Vec<Violation>) {
    let Some((addr, ep)) = node.pod_at(ingress) else {
        vs.push(v(
            "spoofed",
            format!("a frame on ifindex {ingress}, no pod's veth, was not dropped"),
        ));
        return;
    };
    let (pod, mac) = (addr.octets(), ep.pod_mac);
    let ethertype = input.get(12..14).map(|b| be16(b, 0));
    let ok = match ethertype {
        Some(ETH_P_IP) => input.len() >= 34 && input[26..30] == pod && input[6..12] == mac,
        Some(ETH_P_ARP) => {
            input.len() >= 42 && input[28..32] == pod && input[22..28] == mac && input[6..12] == mac
        }
        other => {
            vs.push(v(
                "pod-ethertype",
                format!("a pod's frame of ethertype {other:x?} was not dropped"),
            ));
            return;
        }
    };
    if !ok {
        vs.push(v(
            "spoofed",
            format!(
                "a frame on pod {addr}'s veth (ifindex {ingress}) not from its address and MAC \
                 was not dropped"
            ),
        ));
    }
}

/// The ICMP error (`ty`, `code`, `rest`) the gateway sends pod `pod` about
/// `input` (parsed as `i`), built independently of the datapath: the
/// offending IPv4 header and the first 8 bytes of its payload quoted (RFC
/// 792; the IP total length bounds the quote, not the frame), TOS 0xc0, id
/// 0, TTL 64, no DF, from the gateway's MAC to the pod's.
fn answer(
    node: &Node,
    i: &Ipv4View,
    input: &[u8],
    ty: u8,
    code: u8,
    rest: [u8; 4],
) -> Option<Vec<u8>> {
    // Not a pod: `spoofed` reports it.
    let ep = node.pod(i.src)?;
    let quote = &input[14..14 + i.ihl + (i.tot_len - i.ihl).min(8)];
    let mut b = Ipv4Builder::icmp(
        Ipv4Addr::from(node.settings.gateway),
        i.src,
        L4::Icmp { ty, code, rest },
    );
    b.tos = 0xc0;
    b.ttl = 64;
    b.id = 0;
    b.frags = 0;
    b.dst_mac = ep.pod_mac;
    b.src_mac = ep.gw_mac;
    b.payload = quote.to_vec();
    Some(b.build())
}

/// `icmp-answer`: judges a frame `np_from_pod` turned into an ICMP error
/// back to its pod.
fn judge_answer(node: &Node, i: &Ipv4View, input: &[u8], output: &[u8], j: &mut Judgement) {
    j.outcome = Outcome::ToPod(i.src);
    let vs = &mut j.violations;
    let seg = i.segment(input);
    let is_error = i.proto == IPPROTO_ICMP
        && seg
            .first()
            .is_some_and(|t| matches!(t, 3 | 4 | 5 | 11 | 12));
    if i.frags & 0x1fff != 0 || i.dst.octets()[0] >= 224 || is_error {
        vs.push(v(
            "icmp-answer",
            format!(
                "answered a frame no ICMP error may answer (to {}, proto {}, fragment word \
                 {:#06x})",
                i.dst, i.proto, i.frags
            ),
        ));
    }
    let forwarded = !matches!(node.egress(i.dst), Egress::Stack);
    let (ty, code, rest) = if i.ttl <= 1 && forwarded {
        (11, 0, [0; 4])
    } else {
        let mtu = match node.egress(i.dst) {
            Egress::Out(ifindex) => node.mtu(ifindex),
            _ => None,
        };
        match mtu {
            Some(mtu) if i.frags & 0x4000 != 0 && input.len() > mtu as usize + 14 => {
                let m = (mtu as u16).to_be_bytes();
                (3, 4, [0, 0, m[0], m[1]])
            }
            _ => {
                vs.push(v(
                    "icmp-answer",
                    format!(
                        "answered a frame to {} (TTL {}, {} bytes, fragment word {:#06x}) that \
                         needed no answer",
                        i.dst,
                        i.ttl,
                        input.len(),
                        i.frags
                    ),
                ));
                return;
            }
        }
    };
    let Some(want) = answer(node, i, input, ty, code, rest) else {
        return;
    };
    if output != want {
        vs.push(v(
            "icmp-answer",
            format!(
                "ICMP {ty}/{code} to {} differs from the one built independently:\n      want:\n{}",
                i.src,
                super::frame::hex(&want)
            ),
        ));
    }
    // Checksums from scratch, whatever the comparison said.
    if output.len() < 42 || inet_checksum(&output[14..34]) != 0 {
        vs.push(v(
            "icmp-answer",
            "IPv4 header checksum of the answer".into(),
        ));
    } else if inet_checksum(&output[34..]) != 0 {
        vs.push(v("icmp-answer", "ICMP checksum of the answer".into()));
    }
}

fn redirected(node: &Node, prog: Prog, input: &[u8], output: &[u8], j: &mut Judgement) {
    let (Some(i), Some(o)) = (Ipv4View::parse(input), Ipv4View::parse(output)) else {
        j.violations.push(v(
            "redirect-not-ipv4",
            "a frame that is not well-formed IPv4 (in or out) was redirected".into(),
        ));
        return;
    };
    if prog == Prog::FromPod
        && o.src == Ipv4Addr::from(node.settings.gateway)
        && o.proto == IPPROTO_ICMP
    {
        judge_answer(node, &i, input, output, j);
        return;
    }
    let vs = &mut j.violations;
    if input.len() != output.len() {
        vs.push(v(
            "length",
            format!("{} bytes in, {} out", input.len(), output.len()),
        ));
        return;
    }
    let end = 14 + i.tot_len;
    if input[end..] != output[end..] {
        vs.push(v(
            "padding",
            format!(
                "bytes after the IP total length ({} of {}) changed",
                i.tot_len,
                input.len() - 14
            ),
        ));
    }
    if i.ihl != o.ihl || input[34..14 + i.ihl] != output[34..14 + o.ihl] {
        vs.push(v("ip-options", "IP options changed".into()));
    }
    if i.ttl <= 1 || o.ttl != i.ttl - 1 {
        vs.push(v("ttl", format!("TTL {} in, {} out", i.ttl, o.ttl)));
    }
    if i.ip_csum_ok && !o.ip_csum_ok {
        vs.push(v(
            "ipv4-checksum",
            "valid IPv4 header checksum in, invalid out".into(),
        ));
    }
    let (ic, oc) = (i.l4_csum(input), o.l4_csum(output));
    let l4_broken = match ic {
        L4Csum::Ok => oc != L4Csum::Ok,
        L4Csum::None => !matches!(oc, L4Csum::None | L4Csum::Ok),
        _ => false,
    };
    if l4_broken {
        vs.push(v(
            "l4-checksum",
            format!("proto {} checksum {ic:?} in, {oc:?} out", i.proto),
        ));
    }
    for (what, a) in [("destination", o.dst), ("source", o.src)] {
        if martian(a) {
            vs.push(v(
                "martian",
                format!("forwarded with {what} {a}, which a router never forwards"),
            ));
        }
    }

    if let Some(ep) = node.pod(o.dst) {
        j.outcome = Outcome::ToPod(o.dst);
        if output[0..6] != ep.pod_mac || output[6..12] != ep.gw_mac {
            vs.push(v(
                "pod-macs",
                format!("delivered to {} without its MACs", o.dst),
            ));
        }
    }
    match prog {
        Prog::FromPod => {
            if j.outcome == Outcome::Unknown {
                match node.egress(i.dst) {
                    Egress::Out(ifindex) => {
                        j.outcome = Outcome::Out(ifindex);
                        if let Some(mtu) = node.mtu(ifindex)
                            && input.len() > mtu as usize + 14
                        {
                            vs.push(v(
                                "mtu",
                                format!(
                                    "a {}-byte frame left ifindex {ifindex} (MTU {mtu})",
                                    input.len()
                                ),
                            ));
                        }
                    }
                    e => vs.push(v(
                        "redirect-bad-target",
                        format!("redirected towards {}, which is routed to {e:?}", i.dst),
                    )),
                }
            }
            if o.dst != i.dst {
                vs.push(v(
                    "redirect-bad-target",
                    format!("destination changed from {} to {}", i.dst, o.dst),
                ));
            }
            match j.outcome {
                Outcome::Out(ifindex) => match node.masquerade(ifindex, i.src) {
                    Some(nat) if o.src != nat => vs.push(v(
                        "masquerade",
                        format!(
                            "{} leaves ifindex {ifindex} as {}, not the NAT address {nat}",
                            i.src, o.src
                        ),
                    )),
                    None if o.src != i.src => vs.push(v(
                        "masquerade",
                        format!("source {} rewritten to {} without a rule", i.src, o.src),
                    )),
                    Some(nat) => {
                        if let Some((sport, dport)) = o.ports(output) {
                            j.translated = Some(Translated {
                                proto: o.proto,
                                nat: (nat, sport),
                                peer: (o.dst, dport),
                                left: Some(output.to_vec()),
                            });
                        }
                    }
                    None => {}
                },
                _ => {
                    if o.src != i.src {
                        vs.push(v(
                            "masquerade",
                            format!("pod to pod, source {} rewritten to {}", i.src, o.src),
                        ));
                    }
                }
            }
        }
        Prog::FromUplink => {
            let Outcome::ToPod(pod) = j.outcome else {
                vs.push(v(
                    "uplink-target",
                    format!("redirected to {}, not a pod", o.dst),
                ));
                return;
            };
            if !node.is_nat_addr(i.dst) {
                vs.push(v(
                    "uplink-target",
                    format!("a frame to {} (not a NAT address) went to pod {pod}", i.dst),
                ));
            }
            if o.src != i.src {
                vs.push(v(
                    "uplink-target",
                    format!("source changed from {} to {}", i.src, o.src),
                ));
            }
            let seg = o.segment(output);
            // A later fragment's payload is no ICMP header.
            if o.proto == IPPROTO_ICMP
                && o.frags & 0x1fff == 0
                && seg.len() >= 8
                && matches!(seg[0], 3 | 11 | 12)
            {
                icmp_quote(&i.segment(input)[8..], &seg[8..], pod, vs);
            } else if let (Some((isport, idport)), Some((osport, odport))) =
                (i.ports(input), o.ports(output))
            {
                // ICMP echo reply: the identifier is the "port" (first of
                // the pair) on both sides.
                let (nat_port, pod_port, peer_port) = if o.proto == IPPROTO_ICMP {
                    (isport, osport, 0)
                } else {
                    (idport, odport, isport)
                };
                j.delivered = Some(Delivered {
                    proto: o.proto,
                    peer: (i.src, peer_port),
                    nat: (i.dst, nat_port),
                    pod: (pod, pod_port),
                });
            }
        }
    }
}

/// The quoted IPv4 header of an ICMP error delivered to `pod`.
fn icmp_quote(qin: &[u8], qout: &[u8], pod: Ipv4Addr, vs: &mut Vec<Violation>) {
    if qout.len() < 20 || qout[0] >> 4 != 4 {
        return;
    }
    let ihl = usize::from(qout[0] & 0x0f) * 4;
    if ihl < 20 || qout.len() < ihl {
        return;
    }
    let src = Ipv4Addr::new(qout[12], qout[13], qout[14], qout[15]);
    if src != pod {
        vs.push(v(
            "icmp-quote",
            format!("error delivered to {pod} quotes source {src}"),
        ));
    }
    if inet_checksum(&qin[..ihl]) == 0 && inet_checksum(&qout[..ihl]) != 0 {
        vs.push(v(
            "icmp-quote",
            format!(
                "quoted IPv4 header checksum valid in, invalid out ({:#06x})",
                be16(qout, 10)
            ),
        ));
    }
}

/// Addresses a router never forwards to or from (RFC 1812 5.3.7, Linux's
/// martian checks): 0.0.0.0/8, 127.0.0.0/8, multicast (224.0.0.0/4),
/// reserved 240.0.0.0/4 and limited broadcast.
pub fn martian(a: Ipv4Addr) -> bool {
    a.octets()[0] == 0 || a.is_loopback() || a.octets()[0] >= 224
}
