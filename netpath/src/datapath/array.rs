//! BPF arrays written and read whole, one syscall each way: what the
//! Maglev tables need, and aya 0.14 lacks (it has neither
//! `BPF_MAP_UPDATE_BATCH` nor `BPF_MAP_LOOKUP_BATCH`, nor the descriptor of
//! an array it created). A table of 251 slots is 64 elements: one batch
//! instead of 64 updates, which is what makes 30,000 services apply in
//! seconds rather than minutes.
//!
//! Only plain `#[repr(C)]` values ([`aya::Pod`]) go through here, and the
//! kernel checks every size against the map's.

use std::{
    ffi::c_void,
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

use aya::Pod;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_TYPE_ARRAY: u32 = 2;

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

/// A new array of `max_entries` values of `V` with `flags` (e.g.
/// `BPF_F_INNER_MAP`), named `name` (up to 15 bytes).
pub fn create<V: Pod>(name: &str, max_entries: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = MapCreate {
        map_type: BPF_MAP_TYPE_ARRAY,
        key_size: 4,
        value_size: u32::try_from(size_of::<V>())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?,
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

/// Writes `values` into elements `0..values.len()` of the array `fd`, in
/// one `BPF_MAP_UPDATE_BATCH`.
pub fn write_all<V: Pod>(fd: BorrowedFd<'_>, values: &[V]) -> io::Result<()> {
    let count =
        u32::try_from(values.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let keys: Vec<u32> = (0..count).collect();
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

/// Reads elements `0..n` of the array `fd` (`n` its size), in one
/// `BPF_MAP_LOOKUP_BATCH`.
pub fn read_all<V: Pod + Default>(fd: BorrowedFd<'_>, n: u32) -> io::Result<Vec<V>> {
    let len = n as usize;
    let mut keys = vec![0_u32; len];
    let mut values = vec![V::default(); len];
    let mut out_batch = 0_u32;
    let mut attr = Batch {
        out_batch: (&raw mut out_batch) as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n,
        map_fd: fd.as_raw_fd() as u32,
        ..Batch::default()
    };
    match sys_bpf(BPF_MAP_LOOKUP_BATCH, &mut attr) {
        Ok(_) => {}
        // The end of the array was reached: `count` says how far.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => return Err(e),
    }
    if attr.count != n || keys.iter().zip(0..).any(|(k, i)| *k != i) {
        return Err(io::Error::other(format!(
            "the batch lookup read {} of {n} elements",
            attr.count
        )));
    }
    Ok(values)
}
