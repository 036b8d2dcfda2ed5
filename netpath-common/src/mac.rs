//! Ethernet (MAC) addresses as people read them.

use core::fmt;

/// Displays a MAC address as `ip link` prints it: six lowercase hex bytes
/// separated by colons (`02:00:5e:10:00:01`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mac(pub [u8; 6]);

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}
