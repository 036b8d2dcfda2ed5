//! netpath userspace: netlink plumbing, IPAM, configuration, map management
//! and the reconciler that turns a desired node into kernel state.
//!
//! Module map: [`config`] (desired state, validation) → [`ipam`] (leases) →
//! [`controller`] (diff and apply, with rollback) using [`netns`] and
//! [`netlink`] (namespaces, links, addresses, routes, neighbours),
//! [`datapath`] (load, pin, attach) and [`maps`] (typed map access);
//! [`state`] records what was built; [`conntrack`] lists and collects the
//! connection table; [`daemon`] keeps a node applied and its table clean;
//! [`lab`] and [`demo`] build the self-contained node + LAN host topology.

pub mod config;
pub mod conntrack;
pub mod controller;
pub mod daemon;
pub mod datapath;
pub mod demo;
pub mod ebpf;
pub mod ipam;
pub mod lab;
mod map_batch;
pub mod maps;
pub mod netlink;
pub mod netns;
pub mod state;
