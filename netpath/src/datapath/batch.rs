//! Map operations aya 0.14 lacks, as raw `bpf()` calls: creating an array
//! whose descriptor we keep, and the `BPF_MAP_*_BATCH` commands, which
//! read or write many elements in one syscall.
//!
//! They are what makes 30,000 services apply in seconds: a Maglev table of
//! 251 slots is 64 elements, written in one batch instead of 64 updates;
//! and every update or delete of the Maglev hash of maps makes the kernel
//! wait for an RCU grace period (so that no program still runs with the
//! old inner array when the syscall returns; about 10 ms here), once per
//! syscall, so the tables of many frontends go in with one batch. Reading
//! the frontends and backends whole is a handful of batches instead of
//! two syscalls per entry.
//!
//! Only plain `#[repr(C)]` keys and values ([`aya::Pod`]) go through here,
//! and the kernel checks every size against the map's.

use std::{
    ffi::c_void,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya::Pod;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// Entries asked for per `BPF_MAP_LOOKUP_BATCH` of a hash map (more than
/// any one bucket holds, which the kernel requires).
const HASH_CHUNK: u32 = 4096;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE` (the kernel
/// takes the attribute's size and zero for everything after).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}

/// `union bpf_attr` for the `BPF_MAP_*_BATCH` commands.
#[repr(C)]
#[derive(Default)]
struct Batch {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is one of the `#[repr(C)]` attribute structs above,
    // valid for reads and writes of its size for the whole call; the
    // addresses it holds point at buffers the caller keeps alive.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr).cast::<c_void>(),
            size_of::<T>(),
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A value of all zero bytes, what the kernel overwrites.
fn zeroed<T: Pod>() -> T {
    // SAFETY: `Pod` types are plain bytes (integers and arrays of them in
    // `#[repr(C)]` structs): all zeros is a valid value of each.
    unsafe { std::mem::zeroed() }
}

fn too_many(e: std::num::TryFromIntError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, e)
}

/// A new array of `max_entries` values of `V` with `flags` (e.g.
/// `BPF_F_INNER_MAP`), named `name` (up to 15 bytes).
pub fn create_array<V: Pod>(name: &str, max_entries: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: u32::try_from(size_of::<V>()).map_err(too_many)?,
        max_entries,
        map_flags: flags,
        ..MapCreate::default()
    };
    for (d, s) in attr.map_name.iter_mut().zip(name.bytes().take(15)) {
        *d = s;
    }
    let fd = sys_bpf(BPF_MAP_CREATE, &mut attr)?;
    let fd = i32::try_from(fd).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    // SAFETY: the syscall returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Writes `values[i]` at `keys[i]` in the map `fd` (`BPF_ANY`), in one
/// `BPF_MAP_UPDATE_BATCH`.
pub fn update<K: Pod, V: Pod>(fd: BorrowedFd<'_>, keys: &[K], values: &[V]) -> io::Result<()> {
    if keys.len() != values.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "as many keys as values",
        ));
    }
    if keys.is_empty() {
        return Ok(());
    }
    let count = u32::try_from(keys.len()).map_err(too_many)?;
    let mut attr = Batch {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count,
        map_fd: fd.as_raw_fd() as u32,
        ..Batch::default()
    };
    sys_bpf(BPF_MAP_UPDATE_BATCH, &mut attr)?;
    if attr.count != count {
        return Err(io::Error::other(format!(
            "the batch update wrote {} of {count} elements",
            attr.count
        )));
    }
    Ok(())
}

/// Deletes `keys` from the map `fd`, in one `BPF_MAP_DELETE_BATCH` (more
/// when some are absent: the kernel stops at the first, which is skipped);
/// returns how many were deleted.
pub fn delete<K: Pod>(fd: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut rest = keys;
    let mut deleted = 0;
    while !rest.is_empty() {
        let count = u32::try_from(rest.len()).map_err(too_many)?;
        let mut attr = Batch {
            keys: rest.as_ptr() as u64,
            count,
            map_fd: fd.as_raw_fd() as u32,
            ..Batch::default()
        };
        let done = attr_count(sys_bpf(BPF_MAP_DELETE_BATCH, &mut attr), &attr)?;
        deleted += done;
        // `done` were deleted; the next one (if any) was absent.
        rest = rest.get(done + 1..).unwrap_or_default();
    }
    Ok(deleted)
}

/// How far a batch got: all of it, or (`ENOENT`) up to an absent key or
/// the end of the map.
fn attr_count(ret: io::Result<libc::c_long>, attr: &Batch) -> io::Result<usize> {
    match ret {
        Ok(_) => Ok(attr.count as usize),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(attr.count as usize),
        Err(e) => Err(e),
    }
}

/// Reads elements `0..n` of the array `fd` (`n` its size), in one
/// `BPF_MAP_LOOKUP_BATCH`.
pub fn lookup_array<V: Pod>(fd: BorrowedFd<'_>, n: u32) -> io::Result<Vec<V>> {
    let len = n as usize;
    let mut keys = vec![0_u32; len];
    let mut values = vec![zeroed::<V>(); len];
    let mut out_batch = 0_u32;
    let mut attr = Batch {
        out_batch: (&raw mut out_batch) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n,
        map_fd: fd.as_raw_fd() as u32,
        ..Batch::default()
    };
    let got = attr_count(sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr), &attr)?;
    if got != len || keys.iter().zip(0..).any(|(k, i)| *k != i) {
        return Err(io::Error::other(format!(
            "the batch lookup read {got} of {n} elements"
        )));
    }
    Ok(values)
}

/// Every entry of the hash map `fd`, in batches of [`HASH_CHUNK`]. An entry
/// added or removed meanwhile may be seen or not (as with a walk of keys).
pub fn lookup_hash<K: Pod, V: Pod>(fd: BorrowedFd<'_>) -> io::Result<Vec<(K, V)>> {
    let chunk = HASH_CHUNK as usize;
    let mut keys = vec![zeroed::<K>(); chunk];
    let mut values = vec![zeroed::<V>(); chunk];
    let mut out = Vec::new();
    // The kernel's position in the table (a bucket index for hash maps).
    let (mut token_in, mut token_out) = (0_u32, 0_u32);
    let mut first = true;
    loop {
        let mut attr = Batch {
            in_batch: if first {
                0
            } else {
                (&raw const token_in) as u64
            },
            out_batch: (&raw mut token_out) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: HASH_CHUNK,
            map_fd: fd.as_raw_fd() as u32,
            ..Batch::default()
        };
        let ret = sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        let end = matches!(&ret, Err(e) if e.raw_os_error() == Some(libc::ENOENT));
        let got = attr_count(ret, &attr)?.min(chunk);
        out.extend(
            keys[..got]
                .iter()
                .copied()
                .zip(values[..got].iter().copied()),
        );
        if end {
            return Ok(out);
        }
        token_in = token_out;
        first = false;
    }
}
