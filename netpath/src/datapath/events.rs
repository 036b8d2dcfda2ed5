//! The monitor's maps (`netpath_common::events`): their pins and layouts
//! for the loader, and typed access from the pins of a running instance
//! (what `netpath monitor` and `netpath stats` use).

use aya::maps::{Array, Map, MapData, MapType, PerCpuArray, RingBuf};
use netpath_common::events::{
    BUCKET_MAP, EVENTS_BYTES, EVENTS_MAP, LOST_MAP, MONITOR_MAP, MonitorGate, TokenBucket, lost,
};

use super::{load::MapLayout, maps::MapsError, pins::PinDir};

/// The monitor's maps, pinned beside the others.
pub const MAPS: [&str; 4] = [EVENTS_MAP, MONITOR_MAP, BUCKET_MAP, LOST_MAP];

/// The layout the object expects of each of [`MAPS`].
pub fn expected_layouts() -> [(&'static str, MapLayout); 4] {
    let layout = |map_type, key_size, value_size, max_entries| MapLayout {
        map_type,
        key_size,
        value_size,
        max_entries,
    };
    let size = |n: usize| u32::try_from(n).expect("a small struct");
    [
        (EVENTS_MAP, layout(MapType::RingBuf, 0, 0, EVENTS_BYTES)),
        (
            MONITOR_MAP,
            layout(MapType::Array, 4, size(size_of::<MonitorGate>()), 1),
        ),
        (
            BUCKET_MAP,
            layout(MapType::PerCpuArray, 4, size(size_of::<TokenBucket>()), 1),
        ),
        (LOST_MAP, layout(MapType::PerCpuArray, 4, 8, lost::COUNT)),
    ]
}

/// Events lost since the maps were created, summed over the CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Lost {
    /// Over the rate (a CPU's token bucket was empty).
    pub rate_limited: u64,
    /// No room in the ring buffer.
    pub ring_full: u64,
}

impl Lost {
    /// Every lost event.
    pub fn total(&self) -> u64 {
        self.rate_limited + self.ring_full
    }

    /// What was lost since `earlier`.
    #[must_use]
    pub fn since(&self, earlier: &Lost) -> Lost {
        Lost {
            rate_limited: self.rate_limited.saturating_sub(earlier.rate_limited),
            ring_full: self.ring_full.saturating_sub(earlier.ring_full),
        }
    }
}

/// The monitor's maps of a running instance: the ring buffer, and the
/// rest ([`EventControl`]) apart so that the ring can be polled while the
/// lease is renewed.
pub struct EventMaps {
    /// The events.
    pub ring: RingBuf<MapData>,
    /// The lease and the loss counters.
    pub control: EventControl,
}

/// The watch lease and the loss counters of an instance.
pub struct EventControl {
    gate: Array<MapData, MonitorGate>,
    lost: PerCpuArray<MapData, u64>,
}

fn open(pins: &PinDir, name: &'static str) -> Result<MapData, MapsError> {
    let path = pins.map(name);
    MapData::from_pin(&path).map_err(|source| MapsError::OpenPinned { path, source })
}

fn typed<T: TryFrom<Map, Error = aya::maps::MapError>>(
    name: &'static str,
    map: Map,
) -> Result<T, MapsError> {
    T::try_from(map).map_err(|source| MapsError::Layout { name, source })
}

impl EventMaps {
    /// Opens the pinned monitor maps of an instance.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        Ok(Self {
            ring: typed(EVENTS_MAP, Map::RingBuf(open(pins, EVENTS_MAP)?))?,
            control: EventControl {
                gate: typed(MONITOR_MAP, Map::Array(open(pins, MONITOR_MAP)?))?,
                lost: lost_map(pins)?,
            },
        })
    }
}

impl super::Datapath {
    /// The monitor's maps of a loaded object (program tests run an
    /// unpinned one; a pinned instance's are opened with
    /// [`EventMaps::open_pinned`]). Once: they are taken out of the object.
    pub fn event_maps(&mut self) -> Result<EventMaps, MapsError> {
        let mut take =
            |name: &'static str| self.ebpf.take_map(name).ok_or(MapsError::Missing { name });
        Ok(EventMaps {
            ring: typed(EVENTS_MAP, take(EVENTS_MAP)?)?,
            control: EventControl {
                gate: typed(MONITOR_MAP, take(MONITOR_MAP)?)?,
                lost: typed(LOST_MAP, take(LOST_MAP)?)?,
            },
        })
    }
}

impl EventControl {
    /// Writes the watch lease.
    pub fn set_gate(&mut self, gate: &MonitorGate) -> Result<(), MapsError> {
        self.gate.set(0, gate, 0).map_err(|source| MapsError::Op {
            op: "update",
            name: MONITOR_MAP,
            source,
        })
    }

    /// The watch lease as the map holds it.
    pub fn gate(&self) -> Result<MonitorGate, MapsError> {
        self.gate.get(&0, 0).map_err(|source| MapsError::Op {
            op: "lookup",
            name: MONITOR_MAP,
            source,
        })
    }

    /// Events lost so far.
    pub fn lost(&self) -> Result<Lost, MapsError> {
        read_lost(&self.lost)
    }
}

fn lost_map(pins: &PinDir) -> Result<PerCpuArray<MapData, u64>, MapsError> {
    typed(LOST_MAP, Map::PerCpuArray(open(pins, LOST_MAP)?))
}

fn read_lost(map: &PerCpuArray<MapData, u64>) -> Result<Lost, MapsError> {
    let sum = |i: u32| {
        map.get(&i, 0)
            .map(|v| v.iter().sum::<u64>())
            .map_err(|source| MapsError::Op {
                op: "lookup",
                name: LOST_MAP,
                source,
            })
    };
    Ok(Lost {
        rate_limited: sum(lost::RATE_LIMITED)?,
        ring_full: sum(lost::RING_FULL)?,
    })
}

/// Events lost by an instance's programs (`netpath stats`); `None` when
/// its pins have no monitor maps (a datapath loaded by an older version).
pub fn pinned_lost(pins: &PinDir) -> Result<Option<Lost>, MapsError> {
    if !pins.map(LOST_MAP).exists() {
        return Ok(None);
    }
    read_lost(&lost_map(pins)?).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_monitor_map_has_a_layout() {
        assert_eq!(expected_layouts().map(|(n, _)| n), MAPS);
        assert!(EVENTS_BYTES.is_power_of_two() && EVENTS_BYTES.is_multiple_of(4096));
    }

    #[test]
    fn lost_events_are_counted_since_a_start() {
        let start = Lost {
            rate_limited: 5,
            ring_full: 1,
        };
        let now = Lost {
            rate_limited: 12,
            ring_full: 1,
        };
        assert_eq!(
            now.since(&start),
            Lost {
                rate_limited: 7,
                ring_full: 0
            }
        );
        assert_eq!(now.since(&start).total(), 7);
    }
}
