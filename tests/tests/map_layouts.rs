//! A pinned map of another layout (an older version's, or a stray one) is
//! never reused as it is: an apply recreates it with the layout the object
//! expects, removes the pins of maps this version no longer has, and
//! reuses the pins that match.

use aya::maps::{Array, HashMap, MapData, MapInfo, MapType};
use netpath::datapath::PinDir;
use netpath_common::{Counter, CtEntry, CtKey, maps};
use tests::harness::TestNode;

fn info(pins: &PinDir, name: &str) -> MapInfo {
    MapInfo::from_pin(pins.map(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn pinned_maps_of_another_layout_are_recreated_and_stale_ones_removed() {
    let node = TestNode::new("layout", &["red"]);
    let pins = PinDir::for_instance(node.instance());
    pins.create().expect("pin directory");

    // stats as an older version could have pinned it: a plain array of
    // 8-byte values; the connection table as a plain hash with a shorter
    // value; and a map of an older layout this version does not have.
    let mut stats = Array::<MapData, u64>::create(4, 0).expect("create an array");
    stats.set(0, 77, 0).unwrap();
    stats
        .pin(pins.map(maps::STATS))
        .expect("pin the wrong stats");
    let ct = HashMap::<MapData, CtKey, [u8; 16]>::create(64, 0).expect("create a hash");
    ct.pin(pins.map(maps::CONNTRACK))
        .expect("pin the wrong conntrack");
    let stale = Array::<MapData, u32>::create(1, 0).expect("create an array");
    stale.pin(pins.map("stats_v1")).expect("pin a stale map");

    node.apply().expect("apply over pins of other layouts");

    let stats = info(&pins, maps::STATS);
    assert_eq!(stats.map_type().unwrap(), MapType::PerCpuArray);
    assert_eq!(stats.value_size() as usize, size_of::<Counter>());
    assert_eq!(stats.max_entries(), netpath_common::STAT_COUNT);
    let ct = info(&pins, maps::CONNTRACK);
    assert_eq!(ct.map_type().unwrap(), MapType::LruHash);
    assert_eq!(ct.value_size() as usize, size_of::<CtEntry>());
    assert!(
        !pins.map("stats_v1").exists(),
        "a stale pin is removed: {:?}",
        pins.list()
    );
    // The recreated maps are the ones the datapath uses.
    let m = node.maps();
    assert!(m.stats().is_ok() && m.conntrack().unwrap().is_empty());

    // Pins of the right layout are reused: a second apply keeps every map.
    let ids = |p: &PinDir| -> Vec<u32> {
        [
            maps::ENDPOINTS,
            maps::STATS,
            maps::ROUTES,
            maps::MASQ,
            maps::SETTINGS,
            maps::CONNTRACK,
            maps::REVNAT,
        ]
        .map(|n| info(p, n).id())
        .to_vec()
    };
    let before = ids(&pins);
    node.apply().expect("second apply");
    assert_eq!(ids(&pins), before, "maps of the right layout are reused");
}

#[test]
fn lb_maps_round_trip_and_a_maglev_table_is_swapped_whole() {
    use netpath::datapath::lb_maps::frontend_key;
    use netpath_common::{Backend, BackendKey, Frontend};

    let node = TestNode::new("lbmaps", &["red"]);
    node.apply().expect("apply");
    let mut m = node.maps();
    let key = frontend_key("10.96.0.10".parse().unwrap(), 80, 6);
    let fe = Frontend {
        id: 7,
        backends: 2,
        flags: 0,
        _pad: 0,
        affinity_timeout_secs: 0,
        maglev_size: 0,
        maglev_gen: 0,
        _pad2: 0,
    };
    m.lb_mut().set_frontend(key, fe).expect("set frontend");
    for index in 0..2 {
        let be = Backend {
            addr: [10, 200, 0, 2 + index as u8],
            port: 8080,
            flags: 0,
            _pad: 0,
        };
        m.lb_mut()
            .set_backend(BackendKey { frontend: 7, index }, be)
            .expect("set backend");
    }
    assert_eq!(m.lb().frontend(&key).unwrap().map(|f| f.id), Some(7));
    assert_eq!(m.lb().backends().unwrap().len(), 2);

    // Tables of differing sizes as generations of chunks, each read back
    // slot for slot; a swap names the new generation and deletes the old.
    let first: Vec<u32> = (0..251).map(|s| s % 2).collect();
    m.lb_mut().swap_maglev(&key, &first).expect("first table");
    let fe1 = m.lb().frontend(&key).unwrap().unwrap();
    assert_eq!((fe1.maglev_size, fe1.maglev_gen), (251, 1));
    assert_eq!(m.lb().maglev_of(&fe1).unwrap().as_deref(), Some(&first[..]));
    let second: Vec<u32> = (0..131_071).map(|s| s % 65_536).collect();
    m.lb_mut()
        .swap_maglev(&key, &second)
        .expect("second table, the largest");
    let fe2 = m.lb().frontend(&key).unwrap().unwrap();
    assert_eq!((fe2.maglev_size, fe2.maglev_gen), (131_071, 2));
    assert_eq!(
        m.lb().maglev_of(&fe2).unwrap().as_deref(),
        Some(&second[..])
    );
    assert_eq!(
        m.lb().maglev_of(&fe1).unwrap(),
        None,
        "the old generation is gone"
    );
    let third = vec![1; 509];
    m.lb_mut()
        .set_maglev(8, 0, &third)
        .expect("another frontend's table");
    assert_eq!(
        m.lb().maglev(8, 0, 509).unwrap().as_deref(),
        Some(&third[..])
    );
    let keys = m.lb().maglev_keys().unwrap();
    assert_eq!(
        keys.len(),
        512 + 2,
        "131,071 slots are 512 chunks, 509 are 2"
    );
    assert!(
        keys.iter()
            .all(|k| (k.frontend, k.generation) == (7, 2) || (k.frontend, k.generation) == (8, 0))
    );
    assert!(
        m.lb_mut().swap_maglev(&key, &[0; 3]).is_err(),
        "a table of no valid size is refused"
    );
    assert!(
        m.lb_mut().swap_maglev(&key, &[65_536; 251]).is_err(),
        "an index above 16 bits is refused"
    );
    assert_eq!(
        m.lb().frontend(&key).unwrap(),
        Some(fe2),
        "a refused table leaves the frontend naming the one in place"
    );
    assert_eq!(
        m.lb().maglev_of(&fe2).unwrap().as_deref(),
        Some(&second[..])
    );
    // One plain hash of 256-slot chunks, not preallocated, sized for two
    // generations of every table.
    let info = info(&PinDir::for_instance(node.instance()), maps::MAGLEV);
    assert_eq!(info.map_type().unwrap(), MapType::Hash);
    assert_eq!(info.key_size(), 8, "frontend id, generation, chunk");
    assert_eq!(info.value_size(), 512, "256 16-bit slots");
    assert_eq!(info.max_entries(), maps::MAGLEV_CHUNKS_MAX);
    assert_eq!(
        info.map_flags() & maps::BPF_F_NO_PREALLOC,
        maps::BPF_F_NO_PREALLOC
    );
    m.lb_mut().remove_maglev(8, 0, 509).unwrap();
    m.lb_mut().remove_maglev(8, 0, 509).expect("absent is fine");
    assert_eq!(m.lb().maglev(8, 0, 509).unwrap(), None);
    m.lb_mut().remove_maglev(7, 2, 131_071).unwrap();
    assert!(m.lb().maglev_keys().unwrap().is_empty());
    m.lb_mut().remove_frontend(&key).unwrap();
    assert_eq!(m.lb().frontend(&key).unwrap(), None);
}
