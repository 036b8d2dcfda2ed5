//! IP protocol numbers (IANA, the `protocol` field of the IPv4 header) that
//! netpath translates and tracks, shared by the datapath, the controller and
//! the tests.

/// ICMP (echo is translated, the identifier acting as the port).
pub const ICMP: u8 = 1;
/// TCP.
pub const TCP: u8 = 6;
/// UDP.
pub const UDP: u8 = 17;

/// `tcp`, `udp`, `icmp`; `None` for any other protocol.
pub const fn name(proto: u8) -> Option<&'static str> {
    match proto {
        TCP => Some("tcp"),
        UDP => Some("udp"),
        ICMP => Some("icmp"),
        _ => None,
    }
}
