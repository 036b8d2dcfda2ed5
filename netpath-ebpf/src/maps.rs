//! Every map of the datapath, in one place. Names and layouts come from
//! `netpath-common`; userspace pins each under
//! `/sys/fs/bpf/netpath/<instance>/maps/<name>`.
//!
//! These are BTF maps (`.maps` section), so `bpftool map dump` prints the
//! field names of keys and values.

use aya_ebpf::{
    btf_maps::{HashMap, PerCpuArray},
    macros::btf_map,
};
use netpath_common::{Counter, Endpoint, EndpointKey, STAT_COUNT};

/// Local pods by address.
#[btf_map(name = "endpoints_v1")]
pub static ENDPOINTS: HashMap<
    EndpointKey,
    Endpoint,
    { netpath_common::maps::ENDPOINTS_MAX as usize },
> = HashMap::new();

/// A counter per verdict and drop reason, per CPU.
#[btf_map(name = "stats_v1")]
pub static STATS: PerCpuArray<Counter, { STAT_COUNT as usize }> = PerCpuArray::new();
