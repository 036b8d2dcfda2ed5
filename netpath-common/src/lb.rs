//! The load balancer's hash of a new connection, shared by the datapath
//! (which picks a Maglev slot with it) and userspace (which predicts and
//! tests the choice).

use crate::CtKey;

/// murmur3's 32-bit finalizer: every input bit affects every output bit.
#[inline(always)]
const fn fmix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Mixes one 32-bit word into `h` (murmur3's body step).
#[inline(always)]
const fn mix(h: u32, k: u32) -> u32 {
    let k = k
        .wrapping_mul(0xcc9e_2d51)
        .rotate_left(15)
        .wrapping_mul(0x1b87_3593);
    (h ^ k)
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

/// The hash of a connection's original tuple (client → frontend): the same
/// tuple always hashes the same, on every CPU and across restarts.
#[inline(always)]
pub const fn flow_hash(key: &CtKey) -> u32 {
    let mut h = 0x6e70_6c62; // "nplb"
    h = mix(h, u32::from_le_bytes(key.saddr));
    h = mix(h, u32::from_le_bytes(key.daddr));
    h = mix(h, ((key.sport as u32) << 16) | key.dport as u32);
    h = mix(h, key.proto as u32);
    fmix(h ^ 13)
}

/// The Maglev slot of a connection's original tuple.
#[inline(always)]
pub const fn maglev_slot(key: &CtKey) -> u32 {
    flow_hash(key) % crate::maps::MAGLEV_SIZE
}
