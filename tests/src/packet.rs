//! Building test packets byte by byte, running them through a program
//! with `BPF_PROG_TEST_RUN`, and checking their checksums.

use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TestRun as _, TestRunOptions};

/// TC verdicts.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;
pub const TC_ACT_REDIRECT: u32 = 7;

/// Runs `prog` once on `frame` with `BPF_PROG_TEST_RUN`; returns the
/// verdict and the packet as the program left it.
pub fn test_run(prog: &SchedClassifier, frame: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

/// What a test run's `struct __sk_buff` context carries besides the
/// packet: the fields `BPF_PROG_TEST_RUN` lets a test set for a TC program
/// (`convert___skb_to_skb` in the kernel's `net/bpf/test_run.c`; every other
/// field must be zero).
#[derive(Clone, Copy, Debug, Default)]
pub struct SkbCtx {
    /// `skb->skb_iif`, read by programs as `__sk_buff.ingress_ifindex`: the
    /// device the packet arrived on.
    pub ingress_ifindex: u32,
    /// `skb_shinfo(skb)->gso_size` and `gso_segs`: a GSO packet.
    pub gso_size: u32,
    pub gso_segs: u32,
}

impl SkbCtx {
    /// The context of a packet that arrived on `ifindex`.
    pub fn ingress(ifindex: u32) -> Self {
        Self {
            ingress_ifindex: ifindex,
            ..Self::default()
        }
    }

    /// `struct __sk_buff` (UAPI `linux/bpf.h`, 192 bytes) with these fields
    /// at their offsets.
    fn to_bytes(self) -> [u8; 192] {
        const INGRESS_IFINDEX: usize = 36;
        const GSO_SEGS: usize = 164;
        const GSO_SIZE: usize = 176;
        let mut b = [0u8; 192];
        b[INGRESS_IFINDEX..INGRESS_IFINDEX + 4]
            .copy_from_slice(&self.ingress_ifindex.to_ne_bytes());
        b[GSO_SEGS..GSO_SEGS + 4].copy_from_slice(&self.gso_segs.to_ne_bytes());
        b[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&self.gso_size.to_ne_bytes());
        b
    }
}

/// Runs `prog` once on `frame` with `ctx` as its `__sk_buff` context;
/// returns the verdict and the packet as the program left it.
pub fn test_run_ctx(prog: &SchedClassifier, frame: &[u8], ctx: SkbCtx) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; frame.len() + 256];
    let ctx_in = ctx.to_bytes();
    let res = prog
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: Some(&ctx_in),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// RFC 1071 checksum of `data`.
pub fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The L4 header [`Ipv4Builder::build`] writes in front of the payload,
/// with its checksum computed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    /// No header: `payload` is the whole IP payload.
    Raw,
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
    },
    /// `csum: false` sends a zero checksum ("none", allowed for UDP/IPv4).
    Udp { sport: u16, dport: u16, csum: bool },
    /// An ICMP header: type, code and the 4-byte rest (echo: id, sequence).
    Icmp { ty: u8, code: u8, rest: [u8; 4] },
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

/// An ICMP echo request (8) or reply (0) header.
pub fn icmp_echo(ty: u8, id: u16, seq: u16) -> L4 {
    let mut rest = [0u8; 4];
    rest[..2].copy_from_slice(&id.to_be_bytes());
    rest[2..].copy_from_slice(&seq.to_be_bytes());
    L4::Icmp { ty, code: 0, rest }
}

/// The TCP/UDP checksum of `segment` (header with a zero checksum field,
/// and data) between `src` and `dst`.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::with_capacity(12 + segment.len());
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.push(0);
    pseudo.push(proto);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    pseudo.extend_from_slice(segment);
    inet_checksum(&pseudo)
}

/// Whether the TCP/UDP/ICMP checksum of an Ethernet + IPv4 frame is right
/// (a zero UDP checksum counts as right: "no checksum").
pub fn l4_checksum_ok(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let proto = frame[23];
    let seg = &frame[14 + ihl..14 + total];
    let src = Ipv4Addr::new(frame[26], frame[27], frame[28], frame[29]);
    let dst = Ipv4Addr::new(frame[30], frame[31], frame[32], frame[33]);
    match proto {
        IPPROTO_UDP if seg[6..8] == [0, 0] => true,
        IPPROTO_TCP | IPPROTO_UDP => l4_checksum(src, dst, proto, seg) == 0,
        IPPROTO_ICMP => inet_checksum(seg) == 0,
        _ => true,
    }
}

/// An Ethernet + IPv4 packet under construction.
#[derive(Clone, Debug)]
pub struct Ipv4Builder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// Type of service (DSCP and ECN).
    pub tos: u8,
    pub ttl: u8,
    pub proto: u8,
    pub id: u16,
    /// Flags and fragment offset, host order (e.g. 0x2000 = more fragments).
    pub frags: u16,
    /// IP options; padded with End-of-Options to a multiple of 4 bytes.
    pub options: Vec<u8>,
    /// The L4 header written before `payload`.
    pub l4: L4,
    pub payload: Vec<u8>,
}

impl Ipv4Builder {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            src,
            dst,
            tos: 0,
            ttl: 64,
            proto: IPPROTO_UDP,
            id: 0x1234,
            frags: 0x4000, // don't fragment
            options: Vec::new(),
            l4: L4::Raw,
            payload: b"netpath!".to_vec(),
        }
    }

    /// A TCP segment from `src:sport` to `dst:dport`.
    pub fn tcp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags: u8) -> Self {
        Self {
            proto: IPPROTO_TCP,
            l4: L4::Tcp {
                sport: src.1,
                dport: dst.1,
                flags,
                seq: 0x0102_0304,
                ack: if flags & TCP_ACK != 0 { 0x0a0b_0c0d } else { 0 },
            },
            payload: Vec::new(),
            ..Self::new(src.0, dst.0)
        }
    }

    /// A UDP datagram from `src:sport` to `dst:dport`.
    pub fn udp(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Self {
        Self {
            proto: IPPROTO_UDP,
            l4: L4::Udp {
                sport: src.1,
                dport: dst.1,
                csum: true,
            },
            ..Self::new(src.0, dst.0)
        }
    }

    /// An ICMP message with header `l4` (see [`icmp_echo`]).
    pub fn icmp(src: Ipv4Addr, dst: Ipv4Addr, l4: L4) -> Self {
        Self {
            proto: IPPROTO_ICMP,
            l4,
            ..Self::new(src, dst)
        }
    }

    /// The L4 header and payload, with the L4 checksum.
    fn segment(&self) -> Vec<u8> {
        let mut seg = Vec::new();
        let csum_at = match self.l4 {
            L4::Raw => None,
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
            } => {
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&seq.to_be_bytes());
                seg.extend_from_slice(&ack.to_be_bytes());
                seg.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
                Some(16)
            }
            L4::Udp { sport, dport, csum } => {
                seg.extend_from_slice(&sport.to_be_bytes());
                seg.extend_from_slice(&dport.to_be_bytes());
                seg.extend_from_slice(&((8 + self.payload.len()) as u16).to_be_bytes());
                seg.extend_from_slice(&[0, 0]);
                csum.then_some(6)
            }
            L4::Icmp { ty, code, rest } => {
                seg.extend_from_slice(&[ty, code, 0, 0]);
                seg.extend_from_slice(&rest);
                Some(2)
            }
        };
        seg.extend_from_slice(&self.payload);
        if let Some(at) = csum_at {
            let c = match self.l4 {
                L4::Icmp { .. } => inet_checksum(&seg),
                _ => {
                    let c = l4_checksum(self.src, self.dst, self.proto, &seg);
                    if c == 0 && self.proto == IPPROTO_UDP {
                        0xffff
                    } else {
                        c
                    }
                }
            };
            seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
        }
        seg
    }

    /// The IPv4 header length in bytes.
    pub fn ihl_bytes(&self) -> usize {
        20 + self.options.len().div_ceil(4) * 4
    }

    pub fn build(&self) -> Vec<u8> {
        let mut options = self.options.clone();
        options.resize(self.options.len().div_ceil(4) * 4, 0);
        let ihl = 20 + options.len();
        let segment = self.segment();
        let total = ihl + segment.len();
        let mut ip = Vec::with_capacity(total);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(self.tos);
        ip.extend_from_slice(&(total as u16).to_be_bytes());
        ip.extend_from_slice(&self.id.to_be_bytes());
        ip.extend_from_slice(&self.frags.to_be_bytes());
        ip.push(self.ttl);
        ip.push(self.proto);
        ip.extend_from_slice(&[0, 0]);
        ip.extend_from_slice(&self.src.octets());
        ip.extend_from_slice(&self.dst.octets());
        ip.extend_from_slice(&options);
        let check = inet_checksum(&ip[..ihl]);
        ip[10..12].copy_from_slice(&check.to_be_bytes());
        ip.extend_from_slice(&segment);

        let mut frame = ethernet(self.dst_mac, self.src_mac, ETH_P_IP);
        frame.extend_from_slice(&ip);
        frame
    }
}

/// Splits an Ethernet + IPv4 frame into fragments whose IP payloads start at
/// the byte offsets `at` (each a multiple of 8, increasing), as a router or
/// the sender's `ip_fragment` would: every fragment carries the original
/// header with its own total length, fragment offset, more-fragments bit and
/// header checksum; the L4 header (and its checksum, over the whole
/// datagram) stays in the first.
pub fn fragment(frame: &[u8], at: &[usize]) -> Vec<Vec<u8>> {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([frame[16], frame[17]]));
    let payload = &frame[14 + ihl..14 + total];
    let mut bounds = vec![0];
    bounds.extend_from_slice(at);
    bounds.push(payload.len());
    let mut out = Vec::new();
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1]);
        assert!(start % 8 == 0 && start < end, "fragment bounds {at:?}");
        let mut f = frame[..14 + ihl].to_vec();
        let len = (ihl + end - start) as u16;
        f[16..18].copy_from_slice(&len.to_be_bytes());
        let old = u16::from_be_bytes([f[20], f[21]]);
        let more = if end < payload.len() { 0x2000 } else { 0 };
        let frags = (old & 0x4000) | more | (start / 8) as u16;
        f[20..22].copy_from_slice(&frags.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let check = inet_checksum(&f[14..14 + ihl]);
        f[24..26].copy_from_slice(&check.to_be_bytes());
        f.extend_from_slice(&payload[start..end]);
        out.push(f);
    }
    out
}

/// The IP payload of a fragmented datagram put back together from its
/// fragments (Ethernet + IPv4 frames, in any order).
pub fn reassemble(fragments: &[Vec<u8>]) -> Vec<u8> {
    let mut parts: Vec<(usize, &[u8])> = fragments
        .iter()
        .map(|f| {
            let ihl = usize::from(f[14] & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([f[16], f[17]]));
            let off = usize::from(u16::from_be_bytes([f[20], f[21]]) & 0x1fff) * 8;
            (off, &f[14 + ihl..14 + total])
        })
        .collect();
    parts.sort_by_key(|p| p.0);
    let mut out = Vec::new();
    for (off, data) in parts {
        assert_eq!(off, out.len(), "fragments leave no gap");
        out.extend_from_slice(data);
    }
    out
}

/// An Ethernet header.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ARP request frame (who-has `target` tell `sender`).
pub fn arp_request(src_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = ethernet([0xff; 6], src_mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&src_mac);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// Checks that the IPv4 header at `frame[14..]` has a correct checksum.
pub fn ipv4_header_checksum_ok(frame: &[u8]) -> bool {
    let ihl = usize::from(frame[14] & 0x0f) * 4;
    inet_checksum(&frame[14..14 + ihl]) == 0
}

/// [`test_run`] that reports an error instead of panicking and reuses
/// `out` as the output buffer (the fuzzer runs millions of frames):
/// returns the verdict; `out` holds the packet as the program left it.
pub fn try_test_run(
    prog: &SchedClassifier,
    frame: &[u8],
    out: &mut Vec<u8>,
) -> Result<u32, aya::programs::ProgramError> {
    out.clear();
    out.resize(frame.len() + 256, 0);
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ..Default::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok(res.return_value)
}

/// [`try_test_run`] with `ctx` as the `__sk_buff` context (the ingress
/// ifindex source verification checks, GSO).
pub fn try_test_run_ctx(
    prog: &SchedClassifier,
    frame: &[u8],
    ctx: SkbCtx,
    out: &mut Vec<u8>,
) -> Result<u32, aya::programs::ProgramError> {
    out.clear();
    out.resize(frame.len() + 256, 0);
    let ctx_in = ctx.to_bytes();
    let res = prog.test_run(TestRunOptions {
        data_in: Some(frame),
        data_out: Some(out),
        ctx_in: Some(&ctx_in),
        ..Default::default()
    })?;
    out.truncate(res.data_size_out as usize);
    Ok(res.return_value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_a_known_header() {
        // Example header from RFC 1071 discussions / Wikipedia.
        let hdr = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8,
            0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7,
        ];
        assert_eq!(inet_checksum(&hdr), 0xb861);
    }

    #[test]
    fn built_l4_packets_have_valid_checksums() {
        let a = ("10.0.0.1".parse().unwrap(), 1234);
        let b = ("10.0.0.2".parse().unwrap(), 80);
        for p in [
            Ipv4Builder::tcp(a, b, TCP_SYN),
            Ipv4Builder::udp(a, b),
            Ipv4Builder::icmp(a.0, b.0, icmp_echo(8, 7, 1)),
        ] {
            let f = p.build();
            assert!(ipv4_header_checksum_ok(&f));
            assert!(l4_checksum_ok(&f));
        }
    }

    #[test]
    fn built_packets_have_valid_checksums() {
        let mut b = Ipv4Builder::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(ipv4_header_checksum_ok(&b.build()));
        b.options = vec![1, 1, 1];
        let f = b.build();
        assert_eq!(f[14] & 0x0f, 6);
        assert!(ipv4_header_checksum_ok(&f));
    }
}
