//! Shared helpers of netpath's integration tests: packet builders for
//! `BPF_PROG_TEST_RUN` tests and a harness for real-namespace tests.

pub mod cluster;
pub mod daemon;
pub mod etcd;
pub mod fuzz;
pub mod harness;
pub mod node;
pub mod packet;
pub mod responder;
