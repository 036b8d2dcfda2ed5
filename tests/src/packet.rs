//! Building test packets byte by byte, and checking their checksums.

use std::net::Ipv4Addr;

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

/// An Ethernet + IPv4 packet under construction.
#[derive(Clone, Debug)]
pub struct Ipv4Builder {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub ttl: u8,
    pub proto: u8,
    pub id: u16,
    /// Flags and fragment offset, host order (e.g. 0x2000 = more fragments).
    pub frags: u16,
    /// IP options; padded with End-of-Options to a multiple of 4 bytes.
    pub options: Vec<u8>,
    pub payload: Vec<u8>,
}

impl Ipv4Builder {
    pub fn new(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Self {
            dst_mac: [0x02, 0, 0, 0, 0, 0x01],
            src_mac: [0x02, 0, 0, 0, 0, 0x02],
            src,
            dst,
            ttl: 64,
            proto: IPPROTO_UDP,
            id: 0x1234,
            frags: 0x4000, // don't fragment
            options: Vec::new(),
            payload: b"netpath!".to_vec(),
        }
    }

    /// The IPv4 header length in bytes.
    pub fn ihl_bytes(&self) -> usize {
        20 + self.options.len().div_ceil(4) * 4
    }

    pub fn build(&self) -> Vec<u8> {
        let mut options = self.options.clone();
        options.resize(self.options.len().div_ceil(4) * 4, 0);
        let ihl = 20 + options.len();
        let total = ihl + self.payload.len();
        let mut ip = Vec::with_capacity(total);
        ip.push(0x40 | (ihl / 4) as u8);
        ip.push(0);
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
        ip.extend_from_slice(&self.payload);

        let mut frame = ethernet(self.dst_mac, self.src_mac, ETH_P_IP);
        frame.extend_from_slice(&ip);
        frame
    }
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
    fn built_packets_have_valid_checksums() {
        let mut b = Ipv4Builder::new("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(ipv4_header_checksum_ok(&b.build()));
        b.options = vec![1, 1, 1];
        let f = b.build();
        assert_eq!(f[14] & 0x0f, 6);
        assert!(ipv4_header_checksum_ok(&f));
    }
}
