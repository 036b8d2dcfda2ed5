//! `/proc/sys/net` sysctls of a network namespace (`ip netns exec NS sysctl
//! ...`): the file is opened by a thread inside the namespace, since
//! `/proc/sys/net` shows the namespace of the thread that opens it.

use std::{fs, io};

use super::netns::{Netns, NetnsError};

/// Errors of reading and writing `/proc/sys/net` sysctls of a namespace.
#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error(
        "invalid sysctl key {key:?}: give the path under /proc/sys/net with \
         slashes, e.g. \"ipv4/ip_forward\" or \"ipv4/conf/eth0/rp_filter\""
    )]
    InvalidKey { key: String },
    #[error("sysctl net/{key}: {source}")]
    Netns {
        key: String,
        source: Box<NetnsError>,
    },
    #[error(
        "writing {value:?} to /proc/sys/net/{key} in network namespace {ns} failed: {source} \
         (needs root; ENOENT means no such sysctl, e.g. the interface is missing)"
    )]
    Write {
        key: String,
        value: String,
        ns: String,
        source: io::Error,
    },
    #[error("reading /proc/sys/net/{key} in network namespace {ns} failed: {source}")]
    Read {
        key: String,
        ns: String,
        source: io::Error,
    },
}

fn sysctl_path(key: &str) -> Result<String, SysctlError> {
    let valid = !key.is_empty()
        && key
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if !valid {
        return Err(SysctlError::InvalidKey {
            key: key.to_owned(),
        });
    }
    Ok(format!("/proc/sys/net/{key}"))
}

/// `ip netns exec NS sysctl -w net.KEY=VALUE`, with `key` the path under
/// `/proc/sys/net` (e.g. `"ipv4/ip_forward"`). The file is opened by a
/// thread inside `ns`, since `/proc/sys/net` shows the namespace of the
/// thread that opens it.
pub fn write_sysctl(ns: &Netns, key: &str, value: &str) -> Result<(), SysctlError> {
    let path = sysctl_path(key)?;
    ns.run(|| fs::write(&path, value))
        .map_err(|source| SysctlError::Netns {
            key: key.to_owned(),
            source: Box::new(source),
        })?
        .map_err(|source| SysctlError::Write {
            key: key.to_owned(),
            value: value.to_owned(),
            ns: ns.to_string(),
            source,
        })
}

/// `ip netns exec NS sysctl -n net.KEY`, with `key` the path under
/// `/proc/sys/net`; the value without its trailing newline.
pub fn read_sysctl(ns: &Netns, key: &str) -> Result<String, SysctlError> {
    let path = sysctl_path(key)?;
    ns.run(|| fs::read_to_string(&path))
        .map_err(|source| SysctlError::Netns {
            key: key.to_owned(),
            source: Box::new(source),
        })?
        .map(|s| s.trim_end_matches('\n').to_owned())
        .map_err(|source| SysctlError::Read {
            key: key.to_owned(),
            ns: ns.to_string(),
            source,
        })
}
