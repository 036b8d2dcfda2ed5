//! What the bench measures besides the loads: CPU ([`cpu`]) and memory
//! ([`memory`]).

pub mod cpu;
pub mod memory;
