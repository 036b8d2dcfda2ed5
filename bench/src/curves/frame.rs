//! The crafted packets of the curves: one Ethernet + IPv4 + UDP frame with
//! correct checksums, and the `struct __sk_buff` context that says which
//! pod veth it arrived on.

use std::net::Ipv4Addr;

pub const IPPROTO_UDP: u8 = 17;

/// RFC 1071 one's-complement sum of `data`, folded and inverted.
fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for data in chunks {
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).copied().map_or(0, u32::from);
            sum += hi | lo;
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame from pod MAC 02:aa::02 to the gateway carrying a UDP
/// datagram of `payload` zero bytes from `src:sport` to `dst:dport`.
pub fn udp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, payload: usize) -> Vec<u8> {
    let udp_len = 8 + payload;
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&[0x02, 0x99, 0, 0, 0, 2]);
    f.extend_from_slice(&[0x02, 0xaa, 0, 0, 0, 2]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&u16::try_from(total).unwrap_or(u16::MAX).to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = IPPROTO_UDP;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&[&ip]);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut l4 = Vec::with_capacity(udp_len);
    l4.extend_from_slice(&sport.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.resize(udp_len, 0);
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = IPPROTO_UDP;
    pseudo[10..12].copy_from_slice(&u16::try_from(udp_len).unwrap_or(u16::MAX).to_be_bytes());
    let c = match checksum(&[&pseudo, &l4]) {
        0 => 0xffff,
        c => c,
    };
    l4[6..8].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&l4);
    f
}

/// `struct __sk_buff` (UAPI `linux/bpf.h`, 192 bytes) with only
/// `ingress_ifindex` (offset 36) set: the packet arrived on that device.
pub fn skb_ctx(ingress_ifindex: u32) -> [u8; 192] {
    let mut b = [0u8; 192];
    b[36..40].copy_from_slice(&ingress_ifindex.to_ne_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frame_checksums_verify() {
        let f = udp(
            Ipv4Addr::new(10, 200, 0, 2),
            7,
            Ipv4Addr::new(11, 0, 0, 5),
            9,
            18,
        );
        assert_eq!(f.len(), 14 + 20 + 8 + 18);
        assert_eq!(checksum(&[&f[14..34]]), 0, "IPv4 header");
        let mut pseudo = [0u8; 12];
        pseudo[0..4].copy_from_slice(&f[26..30]);
        pseudo[4..8].copy_from_slice(&f[30..34]);
        pseudo[9] = IPPROTO_UDP;
        pseudo[10..12].copy_from_slice(&26u16.to_be_bytes());
        assert_eq!(checksum(&[&pseudo, &f[34..]]), 0, "UDP");
    }
}
