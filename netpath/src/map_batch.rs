//! Dumping a hash map with `BPF_MAP_LOOKUP_BATCH` (aya 0.14 does not expose
//! the batch commands).
//!
//! Walking a hash map with `BPF_MAP_GET_NEXT_KEY` restarts from the first
//! bucket whenever the previous key was deleted meanwhile, which on a
//! churning LRU map (the datapath creating and evicting connections) can
//! make a walk last forever or return entries many times. The batch command
//! walks bucket by bucket with a bucket cursor: every entry present for the
//! whole walk is returned once, and the walk ends after one pass.

use std::{
    io,
    mem::size_of,
    os::fd::{AsFd as _, AsRawFd as _},
};

use aya::{
    Pod,
    maps::{MapData, MapError},
};

/// `BPF_MAP_LOOKUP_BATCH` (include/uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// Entries fetched per call (grown when one bucket holds more).
const CHUNK: u32 = 1024;

/// Every entry of the hash map `map` (keys `K`, values `V`), in one pass.
pub(crate) fn dump<K: Pod, V: Pod>(map: &MapData) -> Result<Vec<(K, V)>, MapError> {
    let fd = map.fd().as_fd().as_raw_fd() as u32;
    let mut out = Vec::new();
    // The cursor is the kernel's bucket index (a u32); 8 bytes are room.
    let mut cursor = [0u8; 8];
    let mut next = [0u8; 8];
    let mut first = true;
    let mut chunk = CHUNK;
    loop {
        let mut keys: Vec<K> = Vec::with_capacity(chunk as usize);
        let mut values: Vec<V> = Vec::with_capacity(chunk as usize);
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { cursor.as_ptr() as u64 },
            out_batch: next.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk,
            map_fd: fd,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid bpf_attr prefix for the batch command;
        // `keys` and `values` have room for `count` entries of the map's
        // key and value sizes (K and V are the map's layout), and the
        // cursors have room for the kernel's u32 bucket index.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                size_of::<BatchAttr>() as u32,
            )
        };
        let err = (rc < 0).then(io::Error::last_os_error);
        let done = match &err {
            None => false,
            Some(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Some(e) if e.raw_os_error() == Some(libc::ENOSPC) && attr.count == 0 => {
                // One bucket holds more entries than `chunk`.
                chunk = chunk.saturating_mul(2);
                continue;
            }
            Some(e) => {
                return Err(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0)),
                }));
            }
        };
        let n = attr.count.min(chunk) as usize;
        // SAFETY: the kernel wrote `n` keys and values.
        unsafe {
            keys.set_len(n);
            values.set_len(n);
        }
        out.extend(keys.into_iter().zip(values));
        if done {
            return Ok(out);
        }
        cursor = next;
        first = false;
    }
}
