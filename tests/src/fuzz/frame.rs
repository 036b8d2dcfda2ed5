//! A tolerant reader of Ethernet + IPv4 frames, for the oracle and the
//! generators: it never panics on garbage and says what it could not read.
//! Checksums are computed from scratch with [`crate::packet`]'s RFC 1071
//! code, independently of the datapath's incremental updates.

use std::net::Ipv4Addr;

use crate::packet::{ETH_P_IP, IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, inet_checksum, l4_checksum};

/// What a frame is, as far as the fuzzer cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ipv4View {
    pub ihl: usize,
    pub tot_len: usize,
    pub ttl: u8,
    pub proto: u8,
    /// Flags and fragment offset word.
    pub frags: u16,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The IPv4 header checksum is right.
    pub ip_csum_ok: bool,
}

impl Ipv4View {
    /// A well-formed IPv4 header that the frame holds entirely (the frame
    /// may be longer: Ethernet padding).
    pub fn parse(frame: &[u8]) -> Option<Self> {
        if frame.len() < 34 || u16::from_be_bytes([frame[12], frame[13]]) != ETH_P_IP {
            return None;
        }
        let ip = &frame[14..];
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        let tot_len = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        if ip[0] >> 4 != 4 || ihl < 20 || tot_len < ihl || ip.len() < tot_len {
            return None;
        }
        Some(Self {
            ihl,
            tot_len,
            ttl: ip[8],
            proto: ip[9],
            frags: u16::from_be_bytes([ip[6], ip[7]]),
            src: Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]),
            dst: Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]),
            ip_csum_ok: inet_checksum(&ip[..ihl]) == 0,
        })
    }

    /// More fragments, or a non-zero offset.
    pub fn is_fragment(&self) -> bool {
        self.frags & 0x3fff != 0
    }

    /// The L4 segment (header and data, as the total length says).
    pub fn segment<'a>(&self, frame: &'a [u8]) -> &'a [u8] {
        &frame[14 + self.ihl..14 + self.tot_len]
    }

    /// Offset of the L4 header in the frame.
    pub fn l4(&self) -> usize {
        14 + self.ihl
    }

    /// The "port" pair of the segment: TCP/UDP ports, ICMP echo
    /// identifier (as source, 0 as destination), when the header is whole.
    pub fn ports(&self, frame: &[u8]) -> Option<(u16, u16)> {
        if self.is_fragment() {
            return None;
        }
        let seg = self.segment(frame);
        match self.proto {
            IPPROTO_TCP if seg.len() >= 20 => Some((be16(seg, 0), be16(seg, 2))),
            IPPROTO_UDP if seg.len() >= 8 => Some((be16(seg, 0), be16(seg, 2))),
            IPPROTO_ICMP if seg.len() >= 8 => Some((be16(seg, 4), 0)),
            _ => None,
        }
    }

    /// The L4 checksum state of a whole (unfragmented) segment.
    pub fn l4_csum(&self, frame: &[u8]) -> L4Csum {
        if self.is_fragment() {
            return L4Csum::NotChecked;
        }
        let seg = self.segment(frame);
        match self.proto {
            IPPROTO_TCP if seg.len() >= 20 && usize::from(seg[12] >> 4) * 4 >= 20 => {
                ok_or_bad(l4_checksum(self.src, self.dst, IPPROTO_TCP, seg) == 0)
            }
            IPPROTO_UDP if seg.len() >= 8 => {
                if seg[6..8] == [0, 0] {
                    L4Csum::None
                } else {
                    ok_or_bad(l4_checksum(self.src, self.dst, IPPROTO_UDP, seg) == 0)
                }
            }
            IPPROTO_ICMP if seg.len() >= 8 => ok_or_bad(inet_checksum(seg) == 0),
            _ => L4Csum::NotChecked,
        }
    }
}

/// An L4 checksum as the fuzzer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4Csum {
    Ok,
    Bad,
    /// UDP without checksum (0).
    None,
    /// Not TCP/UDP/ICMP, a fragment, or a header cut short.
    NotChecked,
}

fn ok_or_bad(ok: bool) -> L4Csum {
    if ok { L4Csum::Ok } else { L4Csum::Bad }
}

pub fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Recomputes the IPv4 header checksum in place (after a mutation), if
/// the header is there.
pub fn fix_ip_csum(frame: &mut [u8]) {
    if frame.len() < 34 {
        return;
    }
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    if ihl < 20 || frame.len() < 14 + ihl {
        return;
    }
    frame[24..26].copy_from_slice(&[0, 0]);
    let c = inet_checksum(&frame[14..14 + ihl]);
    frame[24..26].copy_from_slice(&c.to_be_bytes());
}

/// Recomputes the L4 checksum in place, if the frame is a whole IPv4
/// TCP/UDP/ICMP segment (a zero UDP checksum stays zero).
pub fn fix_l4_csum(frame: &mut [u8]) {
    let Some(v) = Ipv4View::parse(frame) else {
        return;
    };
    if v.is_fragment() {
        return;
    }
    let (l4, end) = (v.l4(), 14 + v.tot_len);
    let at = match v.proto {
        IPPROTO_TCP if end - l4 >= 20 => 16,
        IPPROTO_UDP if end - l4 >= 8 && frame[l4 + 6..l4 + 8] != [0, 0] => 6,
        IPPROTO_ICMP if end - l4 >= 8 => 2,
        _ => return,
    };
    frame[l4 + at..l4 + at + 2].copy_from_slice(&[0, 0]);
    let seg = &frame[l4..end];
    let mut c = match v.proto {
        IPPROTO_ICMP => inet_checksum(seg),
        p => l4_checksum(v.src, v.dst, p, seg),
    };
    if c == 0 && v.proto == IPPROTO_UDP {
        c = 0xffff;
    }
    frame[l4 + at..l4 + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Lower-case hex of a frame, 32 bytes a line.
pub fn hex(frame: &[u8]) -> String {
    let mut s = String::with_capacity(frame.len() * 3);
    for (i, chunk) in frame.chunks(32).enumerate() {
        if i > 0 {
            s.push('\n');
        }
        s.push_str(&format!("{:04x}  ", i * 32));
        for b in chunk {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}
