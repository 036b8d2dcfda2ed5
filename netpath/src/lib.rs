//! netpath userspace: configuration, the reconciler that turns a desired
//! node into kernel state, map management and the daemon.
//!
//! The flow, one module per step, dependencies pointing down:
//!
//! 1. [`config`]: the TOML schema, parsing, the checks that need no system
//!    state (its errors in `config::error`);
//! 2. [`resolve`]: a [`resolve::DesiredNode`] holding every derived value
//!    (gateway, names, route table, masquerade rules, settings), computed
//!    once; a pod is a [`resolve::DesiredPod`] whether it comes from TOML,
//!    a CNI ADD or a daemon API;
//! 3. [`reconcile`]: plan (diff against [`state`], [`ipam`] leases, pinned
//!    maps and links), execute (steps with their undo), the apply report;
//! 4. [`render`]: every table and report the CLI prints.
//!
//! Below them: [`sys`] (namespaces, rtnetlink, sysctls, preflight checks,
//! atomic files), [`datapath`] (load, pins, attach, typed maps) and
//! [`ebpf`] (the embedded object). Beside them: [`conntrack`] (list and
//! collect the connection table), [`daemon`] (keep a node applied and its
//! table clean), [`demo`] (the self-contained node + LAN host demo) and
//! [`monitor`] (the datapath's drops and trace events, live), [`etcd`]
//! (cluster membership: pod CIDR leases and peers through etcd).
//! [`testing`] (feature `testing`) holds what only tests and benchmarks
//! use.

pub mod api;
pub mod cli;
pub mod cni;
pub mod config;
pub mod conntrack;
pub mod daemon;
pub mod datapath;
pub mod demo;
pub mod ebpf;
pub mod etcd;
pub mod ipam;
pub mod lb;
pub mod metrics;
pub mod monitor;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod state;
pub mod sys;
#[cfg(feature = "testing")]
pub mod testing;
