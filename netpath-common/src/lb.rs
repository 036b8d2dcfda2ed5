//! The load balancer's hash of a new connection and the layout of its
//! Maglev tables, shared by the datapath (which picks a slot with them) and
//! userspace (which builds the tables, and predicts and tests the choice).
//!
//! # A Maglev table in the map
//!
//! Each frontend's table is one inner array of `maglev_v2`, sized for its
//! backends ([`maglev_size_for`]: 251 slots up to 2 backends, about 100
//! slots per backend above, a prime each time). Element 0 is the header:
//! the table's number of slots `M`. Slot `s` (`0..M`) is lane `s % 4` of
//! element `1 + s / 4` ([`maglev_position`]), a 16-bit backend index. The
//! size travels with the slots it describes, so a program that looks the
//! table up once reads a size and slots of the same table even while the
//! controller swaps it for one of another size.

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

/// The Maglev slot of a connection's original tuple in a table of `size`
/// slots (not 0).
#[inline(always)]
pub const fn maglev_slot(key: &CtKey, size: u32) -> u32 {
    flow_hash(key) % size
}

/// The sizes a Maglev table can have: primes, each about twice the one
/// before ([`maglev_size_for`] picks one).
pub const MAGLEV_SIZES: [u32; 10] = [
    251, 509, 1021, 2039, 4093, 8191, 16_381, 32_749, 65_521, 131_071,
];

/// Slots per backend a table has at least while the sizes allow:
/// Maglev's balance is then within a few percent, and a new backend takes
/// slots from the others in about equal parts.
pub const MAGLEV_SLOTS_PER_BACKEND: u32 = 100;

/// The smallest size of [`MAGLEV_SIZES`] with [`MAGLEV_SLOTS_PER_BACKEND`]
/// slots per backend; the largest for more than 1,310 backends (then at
/// least 2 slots each for the most a frontend can have, 65,535).
pub const fn maglev_size_for(backends: u32) -> u32 {
    let want = backends.saturating_mul(MAGLEV_SLOTS_PER_BACKEND);
    let mut i = 0;
    while i < MAGLEV_SIZES.len() {
        if MAGLEV_SIZES[i] >= want {
            return MAGLEV_SIZES[i];
        }
        i += 1;
    }
    MAGLEV_SIZES[MAGLEV_SIZES.len() - 1]
}

/// Backend indices per element of a table.
pub const MAGLEV_SLOTS_PER_ELEM: u32 = 4;

/// Elements of the inner array holding a table of `size` slots: the
/// header, then the slots four by four.
pub const fn maglev_elems(size: u32) -> u32 {
    1 + size.div_ceil(MAGLEV_SLOTS_PER_ELEM)
}

/// Where slot `slot` lives: (element, lane).
#[inline(always)]
pub const fn maglev_position(slot: u32) -> (u32, usize) {
    (
        1 + slot / MAGLEV_SLOTS_PER_ELEM,
        (slot % MAGLEV_SLOTS_PER_ELEM) as usize,
    )
}

/// One element of a Maglev table's inner array: four slots' backend
/// indices ([`crate::BackendKey::index`], which the controller keeps
/// below 65,536); element 0 is the header instead ([`MaglevSlots::header`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaglevSlots {
    pub index: [u16; 4],
}

impl MaglevSlots {
    /// The header of a table of `size` slots: the size's low and high 16
    /// bits in lanes 0 and 1, lanes 2 and 3 zero.
    #[inline(always)]
    pub const fn header(size: u32) -> Self {
        Self {
            index: [size as u16, (size >> 16) as u16, 0, 0],
        }
    }

    /// The size a header holds (0: not a table).
    #[inline(always)]
    pub const fn size(&self) -> u32 {
        self.index[0] as u32 | ((self.index[1] as u32) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_primes_and_grow_with_the_backends() {
        for &m in &MAGLEV_SIZES {
            assert!((2..m).take_while(|d| d * d <= m).all(|d| m % d != 0), "{m}");
        }
        assert_eq!(maglev_size_for(0), 251);
        assert_eq!(maglev_size_for(1), 251);
        assert_eq!(maglev_size_for(2), 251);
        assert_eq!(maglev_size_for(3), 509);
        assert_eq!(maglev_size_for(40), 4093);
        assert_eq!(maglev_size_for(41), 8191);
        assert_eq!(maglev_size_for(1310), 131_071);
        assert_eq!(maglev_size_for(65_535), 131_071);
        assert_eq!(maglev_size_for(u32::MAX), 131_071);
    }

    #[test]
    fn slots_are_packed_four_to_an_element_after_the_header() {
        assert_eq!(maglev_elems(251), 64);
        assert_eq!(maglev_elems(4093), 1025);
        assert_eq!(maglev_position(0), (1, 0));
        assert_eq!(maglev_position(3), (1, 3));
        assert_eq!(maglev_position(4), (2, 0));
        assert_eq!(maglev_position(250), (63, 2));
        assert_eq!(MaglevSlots::header(131_071).size(), 131_071);
        assert_eq!(MaglevSlots::header(251).index, [251, 0, 0, 0]);
        assert_eq!(core::mem::size_of::<MaglevSlots>(), 8);
    }
}
