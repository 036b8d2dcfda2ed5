//! Loading the eBPF object: maps reused from their pins, programs loaded
//! and pinned; the programs' log buffer.

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapType, lpm_trie::Key as LpmKey},
    programs::SchedClassifier,
};
use netpath_common::{
    Affinity, AffinityKey, Backend, BackendKey, Counter, CtEntry, CtKey, DenyRule, Endpoint,
    EndpointKey, Frontend, FrontendKey, MasqKey, MasqRule, NodeSettings, RevNat, RouteKey,
    RouteNextHop, STAT_COUNT,
    lb::{MaglevChunk, MaglevKey},
    maps, progs,
    sock::{self, SockRevKey, SockRevNat},
};

use super::{
    error::DatapathError,
    maps::NodeMaps,
    pins::{PinDir, remove_pin},
};

/// How to load the object.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Pin maps, programs and links here; `None` loads a private, unpinned
    /// copy (program unit tests).
    pub pins: Option<PinDir>,
    /// Size of the connection table and of the reverse NAT map.
    pub conntrack_max: u32,
    /// eBPF-side log level (aya-log): 0 off (the default: the verifier then
    /// removes every log call), 1 error ... 4 debug (every drop and its
    /// reason), 5 trace. `netpath logs --instance X` prints them.
    pub log_level: u8,
}

impl Default for LoadOptions {
    /// Defaults, with the log level from `NETPATH_EBPF_LOG` (`off`, `error`,
    /// `warn`, `info`, `debug`, `trace`).
    fn default() -> Self {
        Self {
            pins: None,
            conntrack_max: maps::CONNTRACK_DEFAULT_MAX,
            log_level: std::env::var("NETPATH_EBPF_LOG").map_or(0, |v| log_level(&v)),
        }
    }
}

/// An aya-log level by name (unknown names: off).
pub fn log_level(name: &str) -> u8 {
    match name.to_ascii_lowercase().as_str() {
        "error" => 1,
        "warn" => 2,
        "info" => 3,
        "debug" => 4,
        "trace" => 5,
        _ => 0,
    }
}

/// Pins the loaded program `name` at `pins.prog(name)`, replacing an
/// older pin; nothing without a pin directory (program unit tests).
pub(super) fn pin_program(
    ebpf: &mut Ebpf,
    pins: Option<&PinDir>,
    name: &'static str,
) -> Result<(), DatapathError> {
    let Some(pins) = pins else {
        return Ok(());
    };
    let path = pins.prog(name);
    remove_pin(&path)?;
    ebpf.program_mut(name)
        .ok_or(DatapathError::MissingProgram { name })?
        .pin(&path)
        .map_err(|source| DatapathError::Pin {
            what: format!("program {name}"),
            path,
            source,
        })
}

/// Every map, pinned by name.
const ALL_MAPS: [&str; 15] = [
    maps::ENDPOINTS,
    maps::STATS,
    maps::ROUTES,
    maps::MASQ,
    maps::SETTINGS,
    maps::CONNTRACK,
    maps::REVNAT,
    maps::FRONTENDS,
    maps::BACKENDS,
    maps::MAGLEV,
    maps::AFFINITY,
    maps::PREFILTER,
    sock::REVNAT_MAP,
    netpath_common::pod_stats::MAP,
    netpath_common::peer::MAP,
];

/// The layout a pinned map must have to be reused: what the kernel
/// reports of it (`bpf_map_info`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MapLayout {
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

impl MapLayout {
    const fn new<K, V>(map_type: MapType, max_entries: u32) -> Self {
        Self {
            map_type,
            key_size: size_of::<K>() as u32,
            value_size: size_of::<V>() as u32,
            max_entries,
        }
    }

    /// The layout of a pinned map, as the kernel reports it.
    fn of(info: &aya::maps::MapInfo) -> Self {
        Self {
            map_type: info.map_type().unwrap_or(MapType::Unspecified),
            key_size: info.key_size(),
            value_size: info.value_size(),
            max_entries: info.max_entries(),
        }
    }
}

/// The layout the object expects of each map of [`ALL_MAPS`] (the types of
/// `netpath-ebpf/src/maps.rs`); the connection table and the reverse NAT
/// map are sized by `conntrack_max`.
pub fn expected_layouts(conntrack_max: u32) -> [(&'static str, MapLayout); 15] {
    [
        (
            maps::ENDPOINTS,
            MapLayout::new::<EndpointKey, Endpoint>(MapType::Hash, maps::ENDPOINTS_MAX),
        ),
        (
            maps::STATS,
            MapLayout::new::<u32, Counter>(MapType::PerCpuArray, STAT_COUNT),
        ),
        (
            maps::ROUTES,
            MapLayout::new::<LpmKey<RouteKey>, RouteNextHop>(MapType::LpmTrie, maps::ROUTES_MAX),
        ),
        (
            maps::MASQ,
            MapLayout::new::<LpmKey<MasqKey>, MasqRule>(MapType::LpmTrie, maps::MASQ_MAX),
        ),
        (
            maps::SETTINGS,
            MapLayout::new::<u32, NodeSettings>(MapType::Array, 1),
        ),
        (
            maps::CONNTRACK,
            MapLayout::new::<CtKey, CtEntry>(MapType::LruHash, conntrack_max),
        ),
        (
            maps::REVNAT,
            MapLayout::new::<CtKey, RevNat>(MapType::Hash, maps::revnat_max(conntrack_max)),
        ),
        (
            maps::FRONTENDS,
            MapLayout::new::<FrontendKey, Frontend>(MapType::Hash, maps::FRONTENDS_MAX),
        ),
        (
            maps::BACKENDS,
            MapLayout::new::<BackendKey, Backend>(MapType::Hash, maps::BACKENDS_MAX),
        ),
        (
            maps::MAGLEV,
            MapLayout::new::<MaglevKey, MaglevChunk>(MapType::Hash, maps::MAGLEV_CHUNKS_MAX),
        ),
        (
            maps::AFFINITY,
            MapLayout::new::<AffinityKey, Affinity>(MapType::LruHash, maps::AFFINITY_MAX),
        ),
        (
            maps::PREFILTER,
            MapLayout::new::<LpmKey<RouteKey>, DenyRule>(MapType::LpmTrie, maps::PREFILTER_MAX),
        ),
        (
            sock::REVNAT_MAP,
            MapLayout::new::<SockRevKey, SockRevNat>(MapType::LruHash, sock::REVNAT_MAX),
        ),
        (
            netpath_common::pod_stats::MAP,
            MapLayout::new::<
                netpath_common::pod_stats::PodStatsKey,
                netpath_common::pod_stats::PodCounters,
            >(MapType::PerCpuHash, netpath_common::pod_stats::MAX),
        ),
        (
            netpath_common::peer::MAP,
            MapLayout::new::<LpmKey<netpath_common::peer::PeerKey>, netpath_common::peer::Peer>(
                MapType::LpmTrie,
                netpath_common::peer::MAX,
            ),
        ),
    ]
}

/// What differs between a pinned map's layout and the expected one, one
/// phrase per field (`value size 48 → 56`); empty when the pin can be
/// reused.
pub fn layout_changes(pinned: &MapLayout, expected: &MapLayout) -> Vec<String> {
    let mut out = Vec::new();
    if pinned.map_type != expected.map_type {
        out.push(format!(
            "type {:?} → {:?}",
            pinned.map_type, expected.map_type
        ));
    }
    for (what, have, want) in [
        ("key size", pinned.key_size, expected.key_size),
        ("value size", pinned.value_size, expected.value_size),
        ("max entries", pinned.max_entries, expected.max_entries),
    ] {
        if have != want {
            out.push(format!("{what} {have} → {want}"));
        }
    }
    out
}

/// What is lost when map `name` is recreated.
fn loss(name: &str) -> &'static str {
    if name == maps::CONNTRACK || name == maps::REVNAT {
        "its entries cannot be read with the old layout: tracked connections are lost          (they get new mappings on their next packet)"
    } else {
        "the next apply refills it (counters restart from zero)"
    }
}

/// Every TC program.
const ALL_PROGS: [&str; 4] = [
    progs::FROM_POD,
    progs::FROM_UPLINK,
    progs::TO_UPLINK,
    netpath_common::peer::PROG_FROM_TUNNEL,
];

/// The loaded datapath of one node.
pub struct Datapath {
    pub(super) ebpf: Ebpf,
    pub(super) pins: Option<PinDir>,
    maps: NodeMaps,
}

impl Datapath {
    /// Loads the eBPF object and its programs into the kernel, reusing
    /// pinned maps when they exist and have the layout the object expects
    /// (type, key and value size, size): a pinned map of another layout
    /// (an older version's, or a connection table of another size) is
    /// replaced, with a warning saying what changed and what is lost; pins
    /// of maps this version no longer has are removed.
    pub fn load(opts: LoadOptions) -> Result<Self, DatapathError> {
        let mut loader = EbpfLoader::new();
        loader.override_global("AYA_LOG_LEVEL", &opts.log_level, false);
        loader.map_max_entries(maps::CONNTRACK, opts.conntrack_max);
        loader.map_max_entries(maps::REVNAT, maps::revnat_max(opts.conntrack_max));
        let map_pins: Vec<(&'static str, PathBuf)> = match &opts.pins {
            Some(pins) => {
                pins.create()?;
                ALL_MAPS
                    .into_iter()
                    .chain(super::events::MAPS)
                    .map(|m| (m, pins.map(m)))
                    .collect()
            }
            None => Vec::new(),
        };
        if let Some(pins) = &opts.pins {
            remove_stale_map_pins(pins)?;
        }
        let layouts = expected_layouts(opts.conntrack_max);
        let event_layouts = super::events::expected_layouts();
        for (name, path) in &map_pins {
            if let Some((_, want)) = layouts
                .iter()
                .chain(&event_layouts)
                .find(|(n, _)| n == name)
            {
                drop_mismatched_pin(name, path, want)?;
            }
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader
            .load(crate::ebpf::OBJECT)
            .map_err(|source| DatapathError::Load { source })?;

        for name in ALL_PROGS {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or(DatapathError::MissingProgram { name })?
                .try_into()
                .map_err(|source| DatapathError::LoadProgram { name, source })?;
            prog.load()
                .map_err(|source| DatapathError::LoadProgram { name, source })?;
            pin_program(&mut ebpf, opts.pins.as_ref(), name)?;
        }
        super::xdp::load_programs(&mut ebpf, opts.pins.as_ref())?;
        super::sock::load_programs(&mut ebpf, opts.pins.as_ref())?;
        let maps = NodeMaps::from_ebpf(&mut ebpf)?;
        Ok(Self {
            ebpf,
            pins: opts.pins,
            maps,
        })
    }

    /// The datapath's maps.
    pub fn maps(&mut self) -> &mut NodeMaps {
        &mut self.maps
    }

    /// The pin directory, if pinned.
    pub fn pins(&self) -> Option<&PinDir> {
        self.pins.as_ref()
    }

    /// The pod-ingress program, for `BPF_PROG_TEST_RUN`.
    pub fn from_pod_program(&self) -> &SchedClassifier {
        self.program(progs::FROM_POD)
    }

    /// The uplink-ingress program, for `BPF_PROG_TEST_RUN`.
    pub fn from_uplink_program(&self) -> &SchedClassifier {
        self.program(progs::FROM_UPLINK)
    }

    /// The VXLAN device's ingress program (`np_from_tunnel`), for
    /// `BPF_PROG_TEST_RUN`.
    pub fn from_tunnel_program(&self) -> &SchedClassifier {
        self.program(netpath_common::peer::PROG_FROM_TUNNEL)
    }

    /// The uplink-egress program (the node's own connections), for
    /// `BPF_PROG_TEST_RUN`.
    pub fn to_uplink_program(&self) -> &SchedClassifier {
        self.program(progs::TO_UPLINK)
    }

    fn program(&self, name: &str) -> &SchedClassifier {
        self.ebpf
            .program(name)
            .and_then(|p| p.try_into().ok())
            .expect("every program is loaded in Datapath::load")
    }
}

/// The eBPF-side logger of an instance's pinned programs (their aya-log
/// ring buffer): poll its fd and call `flush` to print what they logged.
pub fn pinned_logger(
    pins: &PinDir,
) -> Result<aya_log::EbpfLogger<&'static dyn log::Log>, DatapathError> {
    let name = progs::FROM_POD;
    let prog = SchedClassifier::from_pin(pins.prog(name))
        .map_err(|source| DatapathError::LoadProgram { name, source })?;
    let id = prog
        .info()
        .map_err(|source| DatapathError::LoadProgram { name, source })?
        .id();
    aya_log::EbpfLogger::init_from_id(id).map_err(|source| DatapathError::Logger { source })
}

/// Removes the pin of map `name` at `path` when its layout is not `want`
/// (aya would reuse it as it is, and both sides would misread it), with a
/// warning saying what changed and what is lost.
fn drop_mismatched_pin(name: &str, path: &Path, want: &MapLayout) -> Result<(), DatapathError> {
    if !path.exists() {
        return Ok(());
    }
    let changes = match aya::maps::MapData::from_pin(path).and_then(|m| m.info()) {
        Ok(info) => layout_changes(&MapLayout::of(&info), want),
        Err(e) => vec![format!("the pin cannot be read as a map ({e})")],
    };
    if !changes.is_empty() {
        log::warn!(
            "map {name} ({}): layout changed ({}); the map is recreated and {}",
            path.display(),
            changes.join(", "),
            loss(name)
        );
        remove_pin(path)?;
    }
    Ok(())
}

/// Removes every pin in `maps/` that is not one of [`ALL_MAPS`]: maps of
/// older layouts (`stats_v1`, `settings_v2`, `conntrack_v1`, ...) that
/// nothing uses any more.
fn remove_stale_map_pins(pins: &PinDir) -> Result<(), DatapathError> {
    let dir = pins.map("");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !ALL_MAPS.contains(&name.as_ref()) && !super::events::MAPS.contains(&name.as_ref()) {
            log::warn!(
                "map pin {}: not a map of this version (an older layout); removed",
                entry.path().display()
            );
            remove_pin(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(name: &str) -> MapLayout {
        expected_layouts(1000)
            .into_iter()
            .find(|(n, _)| *n == name)
            .unwrap()
            .1
    }

    #[test]
    fn every_pinned_map_has_an_expected_layout() {
        let layouts = expected_layouts(1000);
        assert_eq!(layouts.map(|(n, _)| n), ALL_MAPS);
        assert_eq!(layout(maps::CONNTRACK).max_entries, 1000);
        assert_eq!(layout(maps::REVNAT).max_entries, maps::revnat_max(1000));
        assert_eq!(layout(maps::ROUTES).key_size, 8, "prefix length + address");
        assert_eq!(
            layout(maps::CONNTRACK).value_size,
            size_of::<CtEntry>() as u32
        );
    }

    #[test]
    fn the_same_layout_is_reused() {
        for (_, l) in expected_layouts(1000) {
            assert!(layout_changes(&l, &l).is_empty());
        }
    }

    #[test]
    fn each_changed_field_is_named() {
        let want = layout(maps::STATS);
        let mut old = want;
        old.value_size -= 8;
        assert_eq!(
            layout_changes(&old, &want),
            [format!(
                "value size {} → {}",
                want.value_size - 8,
                want.value_size
            )]
        );
        old.key_size = 8;
        old.max_entries = 3;
        old.map_type = MapType::Array;
        let changes = layout_changes(&old, &want);
        assert_eq!(changes.len(), 4, "{changes:?}");
        assert!(changes[0].starts_with("type Array → PerCpuArray"));
        assert!(changes[1].starts_with("key size 8 → 4"));
        assert!(changes[3].starts_with("max entries 3 →"));
        // A resized connection table is a change, too.
        let mut resized = layout(maps::CONNTRACK);
        resized.max_entries = 2000;
        assert_eq!(
            layout_changes(&resized, &layout(maps::CONNTRACK)),
            ["max entries 2000 → 1000"]
        );
    }

    #[test]
    fn losing_the_connection_maps_says_connections_are_lost() {
        assert!(loss(maps::CONNTRACK).contains("connections are lost"));
        assert!(loss(maps::REVNAT).contains("connections are lost"));
        assert!(!loss(maps::STATS).contains("connections"));
    }
}
