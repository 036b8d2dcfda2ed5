//! Memory: netpath's BPF maps (`bpftool -j map show pinned`: key and value
//! sizes, max entries, `bytes_memlock`) and, for comparison, what netfilter
//! spends on a conntrack entry (`nf_conntrack` slab object size from
//! `/proc/slabinfo`, hash buckets from `nf_conntrack_buckets`).

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MapInfo {
    pub pin: String,
    pub name: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub bytes_key: u64,
    pub bytes_value: u64,
    pub max_entries: u64,
    pub bytes_memlock: u64,
}

/// Everything the memory figure reports.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Memory {
    pub netpath_maps: Vec<MapInfo>,
    pub netpath_total_bytes: Option<u64>,
    /// Configured maximum of netpath's conntrack map.
    pub netpath_ct_max_entries: Option<u64>,
    /// conntrack + reverse NAT maps, at their configured maximum
    /// (LRU hash maps are preallocated: this is also what they use empty).
    pub netpath_ct_bytes_at_max: Option<u64>,
    /// The above divided by the maximum entries.
    pub netpath_ct_bytes_per_entry: Option<f64>,
    /// Key + value bytes of one conntrack entry (both maps), the payload
    /// without the hash table's overhead.
    pub netpath_ct_key_value_bytes: Option<u64>,
    /// `nf_conntrack` slab object size.
    pub netfilter_ct_object_bytes: Option<u64>,
    pub netfilter_ct_max: Option<u64>,
    pub netfilter_ct_buckets: Option<u64>,
    /// (objects + hash buckets at the maximum) / maximum entries.
    pub netfilter_ct_bytes_per_entry: Option<f64>,
    pub netfilter_ct_bytes_at_max: Option<u64>,
    pub errors: Vec<String>,
}

/// `bpftool -j map show pinned PATH`.
pub fn map_info(pin: &Path) -> Result<MapInfo> {
    let out = Command::new("bpftool")
        .args(["-j", "map", "show", "pinned"])
        .arg(pin)
        .output()
        .context("run bpftool (Debian package bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool map show pinned {}: {}",
            pin.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("bpftool map show pinned {}: not JSON", pin.display()))?;
    let num = |k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    Ok(MapInfo {
        pin: pin.display().to_string(),
        name: text("name"),
        kind: text("type"),
        bytes_key: num("bytes_key"),
        bytes_value: num("bytes_value"),
        max_entries: num("max_entries"),
        bytes_memlock: num("bytes_memlock"),
    })
}

fn pin_name(m: &MapInfo) -> &str {
    Path::new(&m.pin)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

/// Collects the memory figure from netpath's map pins and the kernel.
pub fn collect(netpath_maps: &[impl AsRef<Path>]) -> Memory {
    let mut mem = Memory::default();
    for pin in netpath_maps {
        match map_info(pin.as_ref()) {
            Ok(m) => mem.netpath_maps.push(m),
            Err(e) => mem.errors.push(format!("{e:#}")),
        }
    }
    if !mem.netpath_maps.is_empty() {
        mem.netpath_total_bytes = Some(mem.netpath_maps.iter().map(|m| m.bytes_memlock).sum());
    }
    let find = |name: &str| mem.netpath_maps.iter().find(|m| pin_name(m) == name);
    let ct = find(netpath_common::maps::CONNTRACK);
    let rev = find(netpath_common::maps::REVNAT);
    if let Some(ct) = ct {
        let max = ct.max_entries;
        let at_max = ct.bytes_memlock + rev.map_or(0, |r| r.bytes_memlock);
        mem.netpath_ct_max_entries = Some(max);
        mem.netpath_ct_bytes_at_max = Some(at_max);
        if max > 0 {
            mem.netpath_ct_bytes_per_entry = Some(at_max as f64 / max as f64);
        }
        mem.netpath_ct_key_value_bytes =
            Some(ct.bytes_key + ct.bytes_value + rev.map_or(0, |r| r.bytes_key + r.bytes_value));
    } else if !netpath_maps.is_empty() {
        mem.errors
            .push("netpath has no conntrack map pinned (conntrack_v1)".into());
    }

    match slab_object_size("nf_conntrack") {
        Ok(size) => mem.netfilter_ct_object_bytes = Some(size),
        Err(e) => mem.errors.push(format!("{e:#}")),
    }
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    mem.netfilter_ct_max = read("/proc/sys/net/netfilter/nf_conntrack_max");
    mem.netfilter_ct_buckets = read("/proc/sys/net/netfilter/nf_conntrack_buckets");
    if let (Some(obj), Some(max)) = (mem.netfilter_ct_object_bytes, mem.netfilter_ct_max) {
        let buckets = mem.netfilter_ct_buckets.unwrap_or(0) * 8;
        let at_max = obj * max + buckets;
        mem.netfilter_ct_bytes_at_max = Some(at_max);
        if max > 0 {
            mem.netfilter_ct_bytes_per_entry = Some(at_max as f64 / max as f64);
        }
    }
    mem
}

/// The object size of a slab cache (`/proc/slabinfo`, column 4).
fn slab_object_size(cache: &str) -> Result<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("read /proc/slabinfo")?;
    parse_slab_object_size(&text, cache)
        .with_context(|| format!("no slab cache {cache} in /proc/slabinfo"))
}

fn parse_slab_object_size(text: &str, cache: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&cache)).then(|| f.get(3)?.parse().ok())?
    })
}

/// The kernel's memory that rules and maps take, from `/proc/meminfo`, in
/// bytes: unreclaimable slab (netfilter's rules, chains and sets, BPF maps
/// up to a page or so), vmalloc (larger BPF maps, iptables-legacy's rule
/// blobs) and per-CPU allocations. Machine-wide: a delta around one
/// install measures it, give or take what else the machine did meanwhile.
pub fn kernel_bytes() -> Result<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("read /proc/meminfo")?;
    parse_kernel_bytes(&text).context("/proc/meminfo has no SUnreclaim line")
}

fn parse_kernel_bytes(meminfo: &str) -> Option<u64> {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    let kb =
        field("SUnreclaim")? + field("VmallocUsed").unwrap_or(0) + field("Percpu").unwrap_or(0);
    Some(kb * 1024)
}

/// `bytes_memlock` of a map descriptor (`/proc/self/fdinfo`, what bpftool
/// reads).
fn fd_memlock(fd: std::os::fd::BorrowedFd<'_>) -> Result<u64> {
    use std::os::fd::AsRawFd as _;
    let path = format!("/proc/self/fdinfo/{}", fd.as_raw_fd());
    let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("memlock:")?.trim().parse().ok())
        .with_context(|| format!("{path} has no memlock line"))
}

/// `bytes_memlock` of netpath's load-balancer maps: the frontends, the
/// backends and the Maglev chunks (every table is in `maglev_v3`). The
/// kernel counts a non-preallocated hash element at its own size (568
/// bytes for a chunk), not the slab object it takes (1 KiB).
pub fn lb_memlock(pins: &netpath::datapath::PinDir) -> Result<u64> {
    use std::os::fd::AsFd as _;

    use aya::maps::MapData;
    use netpath_common::maps;
    let mut total = 0;
    for name in [maps::FRONTENDS, maps::BACKENDS, maps::MAGLEV] {
        let m = MapData::from_pin(pins.map(name)).with_context(|| format!("open {name}"))?;
        total += fd_memlock(m.fd().as_fd())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo() {
        let text = "MemTotal: 24684120 kB\nSlab:             369312 kB\n\
                    SUnreclaim:        39244 kB\nVmallocUsed:       14320 kB\n\
                    Percpu:              808 kB\n";
        assert_eq!(
            parse_kernel_bytes(text),
            Some((39_244 + 14_320 + 808) * 1024)
        );
        assert_eq!(parse_kernel_bytes("Slab: 1 kB\n"), None);
    }

    #[test]
    fn slabinfo() {
        let text = "slabinfo - version: 2.1\n\
                    # name            <active_objs> <num_objs> <objsize> ...\n\
                    nf_conntrack_expect      0      0    208   39    2 : tunables\n\
                    nf_conntrack         306    306    320   51    4 : tunables\n";
        assert_eq!(parse_slab_object_size(text, "nf_conntrack"), Some(320));
        assert_eq!(
            parse_slab_object_size(text, "nf_conntrack_expect"),
            Some(208)
        );
        assert_eq!(parse_slab_object_size(text, "nope"), None);
    }
}
