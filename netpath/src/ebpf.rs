//! The eBPF object, embedded at build time.

/// The compiled eBPF object (ELF), 8-byte aligned as aya requires.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/netpath"));
