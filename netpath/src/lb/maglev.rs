//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! of `M` slots (a prime sized for the backends,
//! [`netpath_common::lb::maglev_size_for`]: 251 up to two backends, about
//! 100 per backend above) in which every backend owns
//! close to `M / N` slots, and which changes little when a backend comes or
//! goes: removing one of `N` backends reassigns only the slots it owned
//! (plus a small fraction more), so established flows of the other
//! backends keep their backend even when their connection entry is lost.
//!
//! Each backend has a preference list of slots, a permutation of the table
//! given by two hashes of its *name* (`offset`, `skip`): the backends take
//! turns claiming their next preferred free slot until the table is full.
//! The name is the backend's `address:port`, so a backend keeps its
//! preferences whatever its position in the configuration.

use netpath_common::lb::{MAGLEV_SIZES, maglev_size_for};

/// A backend as the table builder sees it: a stable name (its preferences)
/// and the index the table stores for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub index: u32,
}

/// FNV-1a, 64-bit, from `seed`: stable across builds and platforms (the
/// standard library's hasher is not guaranteed to be).
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64 ^ seed;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Builds the lookup table of `members` with `size` slots (a prime): each
/// slot holds a member's `index`. Empty when there are no members.
///
/// # Panics
///
/// When `size` is below 2 or members outnumber the slots.
pub fn table_of_size(members: &[Member], size: u32) -> Vec<u32> {
    if members.is_empty() {
        return Vec::new();
    }
    assert!(size >= 2 && members.len() <= size as usize, "maglev size");
    let m = u64::from(size);
    let prefs: Vec<(u64, u64)> = members
        .iter()
        .map(|b| {
            let offset = fnv1a(0x6d61_676c, b.name.as_bytes()) % m;
            let skip = fnv1a(0x736b_6970, b.name.as_bytes()) % (m - 1) + 1;
            (offset, skip)
        })
        .collect();
    let mut next = vec![0_u64; members.len()];
    let mut table: Vec<Option<u32>> = vec![None; size as usize];
    let mut filled = 0_u32;
    'fill: loop {
        for (i, &(offset, skip)) in prefs.iter().enumerate() {
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize].is_some() {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            table[slot as usize] = Some(members[i].index);
            next[i] += 1;
            filled += 1;
            if filled == size {
                break 'fill;
            }
        }
    }
    table.into_iter().map(Option::unwrap_or_default).collect()
}

/// [`table_of_size`] with the size `members` ask for ([`maglev_size_for`]).
pub fn table(members: &[Member]) -> Vec<u32> {
    let n = u32::try_from(members.len()).unwrap_or(u32::MAX);
    table_of_size(members, maglev_size_for(n))
}

/// The table after a change of members, given the `previous` one: when no
/// member was added (a backend removed, or nothing changed), the table
/// keeps its size and every slot of a remaining member keeps it (its flows
/// stay where they are); only the slots of removed members are shared out,
/// each remaining member taking its next preferred free slot in turn while
/// under its fair share. With a new member (or a previous table of no valid
/// size), the fresh [`table`], of the size the members ask for (a new
/// backend must take slots from the others; Maglev keeps that move small
/// when the size stays).
pub fn table_after(previous: &[u32], members: &[Member]) -> Vec<u32> {
    let size = u32::try_from(previous.len()).unwrap_or(0);
    let known = |index: u32| members.iter().any(|m| m.index == index);
    let added = members.iter().any(|m| !previous.contains(&m.index));
    if members.is_empty() || !MAGLEV_SIZES.contains(&size) || added {
        return table(members);
    }
    let m = u64::from(size);
    let fair = size.div_ceil(u32::try_from(members.len()).unwrap_or(u32::MAX));
    let mut table: Vec<Option<u32>> = previous.iter().map(|&i| known(i).then_some(i)).collect();
    let mut owned: Vec<u32> = members
        .iter()
        .map(|mb| u32::try_from(previous.iter().filter(|&&i| i == mb.index).count()).unwrap_or(0))
        .collect();
    let mut free = table.iter().filter(|s| s.is_none()).count();
    let mut next = vec![0_u64; members.len()];
    while free > 0 {
        for (i, mb) in members.iter().enumerate() {
            if free == 0 {
                break;
            }
            if owned[i] >= fair {
                continue;
            }
            let offset = fnv1a(0x6d61_676c, mb.name.as_bytes()) % m;
            let skip = fnv1a(0x736b_6970, mb.name.as_bytes()) % (m - 1) + 1;
            let mut slot = (offset + next[i] * skip) % m;
            while table[slot as usize].is_some() {
                next[i] += 1;
                slot = (offset + next[i] * skip) % m;
            }
            table[slot as usize] = Some(mb.index);
            next[i] += 1;
            owned[i] += 1;
            free -= 1;
        }
    }
    table.into_iter().map(Option::unwrap_or_default).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(names: &[&str]) -> Vec<Member> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Member {
                name: (*n).to_owned(),
                index: u32::try_from(i).unwrap() + 1,
            })
            .collect()
    }

    fn share(table: &[u32], index: u32) -> usize {
        table.iter().filter(|&&i| i == index).count()
    }

    #[test]
    fn every_backend_owns_about_an_equal_share() {
        let ms = members(&["10.200.0.2:80", "10.200.0.3:80", "10.200.0.4:80"]);
        let t = table(&ms);
        assert_eq!(t.len(), 509, "three backends: the size after 251");
        let fair = t.len() / 3;
        for m in &ms {
            let s = share(&t, m.index);
            assert!(s.abs_diff(fair) <= 2, "{}: {s} of {}", m.name, t.len());
        }
    }

    #[test]
    fn removing_a_backend_moves_only_its_slots() {
        let all = members(&["10.200.0.2:80", "10.200.0.3:80", "10.200.0.4:80"]);
        let before = table(&all);
        let after = table_after(&before, &[all[0].clone(), all[2].clone()]);
        assert_eq!(after.len(), before.len(), "a removal keeps the size");
        let fair = after.len() / 2;
        for m in [&all[0], &all[2]] {
            assert!(share(&after, m.index).abs_diff(fair) <= 2);
        }
        for (slot, (&b, &a)) in before.iter().zip(&after).enumerate() {
            if b != all[1].index {
                assert_eq!(b, a, "slot {slot} of a remaining backend moved");
            }
        }
    }

    #[test]
    fn a_backend_keeps_its_slots_whatever_its_position() {
        let ab = members(&["10.200.0.2:80", "10.200.0.3:80"]);
        let ba = vec![
            Member {
                name: ab[1].name.clone(),
                index: ab[1].index,
            },
            Member {
                name: ab[0].name.clone(),
                index: ab[0].index,
            },
        ];
        // Same names and indices, other order: nearly the same table (the
        // turn order only settles ties).
        let (t1, t2) = (table(&ab), table(&ba));
        let same = t1.iter().zip(&t2).filter(|(a, b)| a == b).count();
        assert!(same * 100 >= t1.len() * 95, "{same} of {}", t1.len());
    }

    #[test]
    fn a_plain_rebuild_moves_few_slots_of_the_others() {
        // Without the previous table (a fresh start) but at the same size,
        // Maglev alone still keeps most flows of the remaining backends in
        // place (at another size slots do not line up: `table_after` keeps
        // the size).
        let all = members(&["10.200.0.2:80", "10.200.0.3:80", "10.200.0.4:80"]);
        let before = table_of_size(&all, 509);
        let after = table_of_size(&[all[0].clone(), all[2].clone()], 509);
        let kept = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| **b != all[1].index && b == a)
            .count();
        let others = before.iter().filter(|&&b| b != all[1].index).count();
        assert!(kept * 100 >= others * 80, "{kept} of {others}");
    }

    #[test]
    fn no_members_no_table() {
        assert!(table(&[]).is_empty());
    }

    #[test]
    fn two_backends_share_251_slots_and_a_removal_keeps_the_other() {
        let ab = members(&["10.200.0.2:80", "10.200.0.3:80"]);
        let t = table(&ab);
        assert_eq!(t.len(), 251);
        assert!(
            share(&t, 1).abs_diff(share(&t, 2)) <= 1,
            "{} / {}",
            share(&t, 1),
            share(&t, 2)
        );
        let after = table_after(&t, &ab[..1]);
        assert_eq!(after, vec![1; 251], "the survivor takes every slot");
    }

    #[test]
    fn the_size_follows_the_backends_when_one_is_added_and_stays_when_one_leaves() {
        let names: Vec<String> = (2..=5).map(|i| format!("10.200.0.{i}:80")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let all = members(&refs);
        let two = table(&all[..2]);
        let three = table_after(&two, &all[..3]);
        assert_eq!((two.len(), three.len()), (251, 509));
        // Back to two: the 509 slots stay, only the third's move.
        let back = table_after(&three, &all[..2]);
        assert_eq!(back.len(), 509);
        for (b, a) in three.iter().zip(&back) {
            if *b != all[2].index {
                assert_eq!(b, a);
            }
        }
        // Many backends: about 100 slots each, up to the largest size.
        let many: Vec<Member> = (0..50)
            .map(|i| Member {
                name: format!("10.201.{}.{}:80", i / 200, i % 200),
                index: i,
            })
            .collect();
        assert_eq!(table(&many).len(), 8191);
    }
}
