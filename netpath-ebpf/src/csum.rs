//! Internet checksum arithmetic (RFC 1071, incremental updates per RFC 1624).

/// Fold a 32-bit one's-complement sum to 16 bits.
#[inline(always)]
pub fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered
/// data changes from `old` to `new`: `HC' = ~(~HC + ~m + m')`.
/// Every value is a host-order view of the big-endian word.
#[inline(always)]
pub fn replace16(check: u16, old: u16, new: u16) -> u16 {
    !fold(u32::from(!check) + u32::from(!old) + u32::from(new))
}
