//! netpath userspace: netlink plumbing, IPAM, configuration, map management
//! and the reconciler that turns a desired node into kernel state.

pub mod config;
pub mod ebpf;
pub mod ipam;
pub mod netlink;
pub mod netns;
