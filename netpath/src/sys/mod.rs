//! The node's operating system, as netpath touches it: network namespaces
//! ([`netns`]), rtnetlink ([`netlink`]), `/proc/sys/net` ([`sysctl`]), the
//! checks made before anything changes ([`preflight`]), crash-safe file
//! writes ([`file`]) and a namespace's own `/etc` files ([`etc_netns`]).
//!
//! Dependencies point one way: `netlink` and `sysctl` use `netns` (to open
//! their socket or file inside a namespace); `netns` uses neither;
//! `etc_netns` uses `file`.

pub mod etc_netns;
pub mod file;
pub mod netlink;
pub mod netns;
pub mod preflight;
pub mod sysctl;
