//! Unit tests of [`super::diff`] with [`crate::lb::frontends::assign`]:
//! stable ids and indices, the order of the steps, and that a change to one
//! service touches only its frontend.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{Ipv4Addr, SocketAddrV4},
};

use super::*;
use crate::{
    config::L4Proto,
    lb::frontends::{FrontendSpec, LbState, Maglev, Owner, WantedBackend, assign},
};

fn vip(last: u8, port: u16) -> Vip {
    Vip {
        addr: Ipv4Addr::new(10, 96, 0, last),
        port,
        proto: L4Proto::Tcp,
    }
}

fn be(last: u8) -> WantedBackend {
    WantedBackend {
        address: SocketAddrV4::new(Ipv4Addr::new(10, 200, 0, last), 80),
        label: format!("pod{last}"),
    }
}

fn svc(v: Vip, backends: &[u8]) -> FrontendSpec {
    FrontendSpec {
        vip: v,
        owner: Owner::Service(format!("s{}", v.addr.octets()[3])),
        flags: 0,
        affinity_timeout_secs: 0,
        backends: backends.iter().map(|&b| be(b)).collect(),
    }
}

/// The three maps as the kernel holds them.
#[derive(Debug, Default, PartialEq, Eq)]
struct Maps {
    frontends: BTreeMap<Vip, Frontend>,
    backends: BTreeMap<(u32, u32), SocketAddrV4>,
    /// (frontend id, generation) → table.
    maglev: BTreeMap<(u32, u16), Vec<u32>>,
}

impl Maps {
    fn of(state: &LbState) -> Self {
        let mut m = Maps::default();
        for (vip, f) in state {
            m.frontends.insert(*vip, f.value());
            for (i, b) in &f.backends {
                m.backends.insert((f.id, *i), *b);
            }
            if let Maglev::Slots(t) = &f.maglev {
                m.maglev.insert((f.id, f.maglev_gen), t.clone());
            }
        }
        m
    }

    /// Whether a frontend names generation `generation` of table `id`.
    fn named(&self, id: u32, generation: u16) -> bool {
        self.frontends
            .values()
            .any(|f| f.id == id && f.maglev_size != 0 && f.maglev_gen == generation)
    }

    /// What a new connection can see: every frontend with backends names a
    /// whole table of the size it says, and every index in it has its
    /// backend entry.
    fn check_consistent(&self, after: &LbStep, indices: &Indices) {
        for (vip, fe) in &self.frontends {
            if fe.backends == 0 {
                continue;
            }
            let table = self
                .maglev
                .get(&(fe.id, fe.maglev_gen))
                .unwrap_or_else(|| panic!("{vip} names no table after {after:?}"));
            assert_eq!(
                table.len(),
                fe.maglev_size as usize,
                "{vip} after {after:?}"
            );
            for index in &indices[&(fe.id, fe.maglev_gen)] {
                assert!(
                    self.backends.contains_key(&(fe.id, *index)),
                    "{vip}: index {index} has no backend after {after:?}"
                );
            }
        }
    }
}

/// The distinct backend indices of each table, kept beside the maps so
/// that checking after each of many steps stays cheap.
type Indices = BTreeMap<(u32, u16), BTreeSet<u32>>;

/// Applies `steps` to the maps of `state` as the kernel would, checking
/// after every step that a new connection finds a table and a backend.
fn apply(state: &LbState, steps: &[LbStep]) -> Maps {
    let mut m = Maps::of(state);
    let mut indices: Indices = m
        .maglev
        .iter()
        .map(|(k, t)| (*k, t.iter().copied().collect()))
        .collect();
    for step in steps {
        match step {
            LbStep::SetBackend {
                id, index, backend, ..
            } => {
                m.backends.insert((*id, *index), *backend);
            }
            LbStep::SetMaglev {
                id,
                generation,
                table,
                ..
            } => {
                // S1: never a generation a frontend names.
                assert!(
                    !m.named(*id, *generation),
                    "{step:?} rewrites a named table"
                );
                m.maglev.insert((*id, *generation), table.clone());
                indices.insert((*id, *generation), table.iter().copied().collect());
            }
            LbStep::SetFrontend { vip, frontend } => {
                m.frontends.insert(*vip, *frontend);
            }
            LbStep::RemoveFrontend { vip } => {
                m.frontends.remove(vip);
            }
            LbStep::RemoveMaglev { id, generation, .. } => {
                // S3: only a table no frontend names any more.
                assert!(!m.named(*id, *generation), "{step:?} removes a named table");
                m.maglev.remove(&(*id, *generation));
                indices.remove(&(*id, *generation));
            }
            LbStep::RemoveBackend { id, index, .. } => {
                m.backends.remove(&(*id, *index));
            }
            LbStep::PurgeConnections { .. } | LbStep::ClearAffinity { .. } => {}
        }
        m.check_consistent(step, &indices);
    }
    m
}

/// The state after applying `specs` to an empty node.
fn built(specs: &[FrontendSpec]) -> LbState {
    assign(specs, &LbState::new())
}

/// New frontends get their backends, then their table, then their entry,
/// so no packet finds a frontend without a table; nothing else is there.
fn kinds(steps: &[LbStep]) -> Vec<&'static str> {
    steps
        .iter()
        .map(|s| match s {
            LbStep::SetBackend { .. } => "set-backend",
            LbStep::SetMaglev { .. } => "set-maglev",
            LbStep::SetFrontend { .. } => "set-frontend",
            LbStep::RemoveFrontend { .. } => "remove-frontend",
            LbStep::RemoveMaglev { .. } => "remove-maglev",
            LbStep::RemoveBackend { .. } => "remove-backend",
            LbStep::PurgeConnections { .. } => "purge",
            LbStep::ClearAffinity { .. } => "clear-affinity",
        })
        .collect()
}

#[test]
fn a_new_frontend_gets_backends_then_table_then_entry() {
    let want = built(&[svc(vip(10, 80), &[2, 3])]);
    let steps = diff(&LbState::new(), &want);
    assert_eq!(
        kinds(&steps),
        ["set-backend", "set-backend", "set-maglev", "set-frontend"]
    );
    let fe = &want[&vip(10, 80)];
    assert_eq!(fe.id, 1);
    assert_eq!(fe.backends.keys().copied().collect::<Vec<_>>(), [0, 1]);
    assert_eq!(fe.value().backends, 2);
    assert_eq!(apply(&LbState::new(), &steps), Maps::of(&want));
}

#[test]
fn the_same_services_again_change_nothing() {
    let specs = [svc(vip(10, 80), &[2, 3, 4]), svc(vip(11, 53), &[5])];
    let have = built(&specs);
    let again = assign(&specs, &have);
    assert_eq!(again, have);
    assert!(diff(&have, &again).is_empty());
}

#[test]
fn adding_a_backend_touches_only_that_service() {
    let before = [svc(vip(10, 80), &[2, 3]), svc(vip(11, 80), &[4, 5])];
    let have = built(&before);
    let after = [svc(vip(10, 80), &[2, 3]), svc(vip(11, 80), &[4, 5, 6])];
    let want = assign(&after, &have);
    let steps = diff(&have, &want);
    assert!(!steps.is_empty());
    assert!(steps.iter().all(|s| s.vip() == vip(11, 80)), "{steps:#?}");
    assert_eq!(
        kinds(&steps),
        ["set-backend", "set-maglev", "set-frontend", "remove-maglev"]
    );
    // The new table is the next generation; the old one goes once the
    // frontend names the new one.
    let (old, new) = (&have[&vip(11, 80)], &want[&vip(11, 80)]);
    assert_eq!(new.maglev_gen, old.maglev_gen + 1);
    assert!(steps.contains(&LbStep::RemoveMaglev {
        vip: vip(11, 80),
        id: old.id,
        generation: old.maglev_gen,
        size: old.maglev_size,
    }));
    // The backends that stay keep their index, the new one takes the next.
    let fe = &want[&vip(11, 80)];
    assert_eq!(fe.id, have[&vip(11, 80)].id);
    assert_eq!(fe.backends[&0], be(4).address);
    assert_eq!(fe.backends[&1], be(5).address);
    assert_eq!(fe.backends[&2], be(6).address);
    assert_eq!(apply(&have, &steps), Maps::of(&want));
}

#[test]
fn removing_a_backend_swaps_the_table_then_removes_then_purges() {
    let have = built(&[svc(vip(10, 80), &[2, 3, 4]), svc(vip(11, 80), &[5])]);
    let want = assign(&[svc(vip(10, 80), &[2, 4]), svc(vip(11, 80), &[5])], &have);
    let steps = diff(&have, &want);
    assert_eq!(
        kinds(&steps),
        [
            "set-maglev",
            "set-frontend",
            "remove-maglev",
            "remove-backend",
            "purge",
            "clear-affinity"
        ]
    );
    let gone = be(3).address;
    assert!(steps.contains(&LbStep::PurgeConnections {
        vip: vip(10, 80),
        backend: Some(gone),
    }));
    assert!(steps.iter().all(|s| s.vip() == vip(10, 80)));
    // Survivors keep their index and every slot they had.
    let (old, new) = (&have[&vip(10, 80)], &want[&vip(10, 80)]);
    assert_eq!(new.backends.get(&0), Some(&be(2).address));
    assert_eq!(new.backends.get(&2), Some(&be(4).address));
    assert!(!new.backends.contains_key(&1));
    assert!(!new.maglev.slots().contains(&1));
    for (slot, (o, n)) in old
        .maglev
        .slots()
        .iter()
        .zip(new.maglev.slots())
        .enumerate()
    {
        if *o != 1 {
            assert_eq!(o, n, "slot {slot} of a surviving backend moved");
        }
    }
    assert_eq!(apply(&have, &steps), Maps::of(&want));
}

#[test]
fn a_replaced_backend_gets_a_fresh_index() {
    let have = built(&[svc(vip(10, 80), &[2, 3])]);
    let want = assign(&[svc(vip(10, 80), &[2, 7])], &have);
    let fe = &want[&vip(10, 80)];
    // Index 1 (pod3) is retired in this apply: its affinity and table
    // slots must not lead to pod7.
    assert_eq!(fe.backends.get(&2), Some(&be(7).address));
    assert!(!fe.backends.contains_key(&1));
    let steps = diff(&have, &want);
    assert_eq!(apply(&have, &steps), Maps::of(&want));
}

#[test]
fn the_last_backend_leaving_refuses_then_drops_the_table() {
    let have = built(&[svc(vip(10, 80), &[2])]);
    let want = assign(&[svc(vip(10, 80), &[])], &have);
    let steps = diff(&have, &want);
    assert_eq!(
        kinds(&steps),
        [
            "set-frontend",
            "remove-maglev",
            "remove-backend",
            "purge",
            "clear-affinity"
        ]
    );
    assert!(matches!(
        steps[0],
        LbStep::SetFrontend { frontend, .. } if frontend.backends == 0
    ));
    assert_eq!(apply(&have, &steps), Maps::of(&want));
}

#[test]
fn a_removed_frontend_goes_entry_first_and_lends_no_id() {
    let have = built(&[svc(vip(10, 80), &[2]), svc(vip(11, 80), &[3])]);
    assert_eq!(have[&vip(11, 80)].id, 2);
    let want = assign(&[svc(vip(11, 80), &[3]), svc(vip(12, 80), &[4])], &have);
    assert_eq!(
        want[&vip(11, 80)].id,
        2,
        "an existing frontend keeps its id"
    );
    assert_eq!(want[&vip(12, 80)].id, 3, "a new one does not take id 1 now");
    let steps = diff(&have, &want);
    let removal: Vec<_> = steps.iter().filter(|s| s.vip() == vip(10, 80)).collect();
    assert!(matches!(removal[0], LbStep::RemoveFrontend { .. }));
    assert!(removal.contains(&&LbStep::PurgeConnections {
        vip: vip(10, 80),
        backend: None
    }));
    assert!(steps.iter().all(|s| s.vip() != vip(11, 80)));
    assert_eq!(apply(&have, &steps), Maps::of(&want));
}

#[test]
fn turning_affinity_on_clears_old_affinity() {
    let have = built(&[svc(vip(10, 80), &[2, 3])]);
    let mut sticky = svc(vip(10, 80), &[2, 3]);
    sticky.flags = netpath_common::frontend_flags::AFFINITY;
    sticky.affinity_timeout_secs = 60;
    let want = assign(&[sticky], &have);
    assert_eq!(
        kinds(&diff(&have, &want)),
        ["set-frontend", "clear-affinity"]
    );
}

#[test]
fn past_the_16_bit_indices_a_removed_backends_index_is_reused_and_not_deleted() {
    // A frontend whose backends took every index a Maglev slot can hold;
    // the next apply wants one new backend and none of them.
    let v = vip(10, 80);
    let old: BTreeMap<u32, SocketAddrV4> = (0..=crate::lb::frontends::MAX_BACKEND_INDEX)
        .map(|i| {
            let a = Ipv4Addr::from(0x0a00_0000 + i);
            (i, SocketAddrV4::new(a, 80))
        })
        .collect();
    let current: LbState = [(
        v,
        crate::lb::frontends::FrontendState {
            id: 1,
            flags: 0,
            affinity_timeout_secs: 0,
            backends: old,
            maglev: Maglev::Slots((0..131_071).map(|s| s % 65_536).collect()),
            maglev_size: 131_071,
            maglev_gen: 4,
        },
    )]
    .into();
    let want = assign(&[svc(v, &[200])], &current);
    let fe = &want[&v];
    assert_eq!(fe.backends.len(), 1);
    assert_eq!(
        fe.backends.keys().next(),
        Some(&0),
        "the lowest index, reused"
    );
    let steps = diff(&current, &want);
    assert!(
        !steps
            .iter()
            .any(|s| matches!(s, LbStep::RemoveBackend { index: 0, .. })),
        "the reused index is overwritten, not deleted"
    );
    let removed = steps
        .iter()
        .filter(|s| matches!(s, LbStep::RemoveBackend { .. }))
        .count();
    assert_eq!(removed, 65_535);
    let purged = steps
        .iter()
        .filter(|s| matches!(s, LbStep::PurgeConnections { .. }))
        .count();
    assert_eq!(purged, 65_536, "every old backend's connections go");
    let maps = apply(&current, &steps);
    assert_eq!(maps.backends.len(), 1);
    assert_eq!(maps.backends[&(1, 0)], be(200).address);
}
