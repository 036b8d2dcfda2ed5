//! The CNI spec versions `netpath-cni` speaks, and which commands each has.

use std::fmt;

use super::{
    env::Command,
    error::{CniError, Code},
};

/// A spec version `netpath-cni` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    V0_3_0,
    V0_3_1,
    V0_4_0,
    V1_0_0,
    V1_1_0,
}

impl Version {
    /// Every supported version, oldest first (`supportedVersions`).
    pub const ALL: [Version; 5] = [
        Self::V0_3_0,
        Self::V0_3_1,
        Self::V0_4_0,
        Self::V1_0_0,
        Self::V1_1_0,
    ];

    /// The newest: what `VERSION` answers when asked without a version,
    /// and what an error is printed in before the configuration named one.
    pub const LATEST: Version = Self::V1_1_0;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::V0_3_0 => "0.3.0",
            Self::V0_3_1 => "0.3.1",
            Self::V0_4_0 => "0.4.0",
            Self::V1_0_0 => "1.0.0",
            Self::V1_1_0 => "1.1.0",
        }
    }

    /// The supported version written `s`, or code 1 naming the ones there
    /// are.
    pub fn parse(s: &str) -> Result<Version, CniError> {
        Self::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| {
                CniError::new(
                    Code::IncompatibleVersion,
                    format!(
                        "the network configuration is cniVersion {s:?}; netpath-cni speaks {}: \
                         set \"cniVersion\" to one of them",
                        Self::supported().join(", ")
                    ),
                )
            })
    }

    /// The supported versions as strings, oldest first.
    pub fn supported() -> Vec<&'static str> {
        Self::ALL.into_iter().map(Self::as_str).collect()
    }

    /// The first version that has `command` (`CHECK` came with 0.4.0,
    /// `STATUS` and `GC` with 1.1.0).
    pub fn introducing(command: Command) -> Version {
        match command {
            Command::Add | Command::Del | Command::Version => Self::V0_3_0,
            Command::Check => Self::V0_4_0,
            Command::Status | Command::Gc => Self::V1_1_0,
        }
    }

    /// Code 1 when `command` does not exist in this version.
    pub fn allows(self, command: Command) -> Result<(), CniError> {
        let first = Self::introducing(command);
        if self >= first {
            return Ok(());
        }
        Err(CniError::new(
            Code::IncompatibleVersion,
            format!(
                "{command} came with CNI {first}, but the network configuration is cniVersion \
                 {self}; raise its \"cniVersion\" to {first} or later"
            ),
        )
        .in_version(self))
    }

    /// Whether results of this version carry `"version": "4"` in `ips`
    /// (removed in 1.0.0).
    pub fn ips_have_version(self) -> bool {
        self < Self::V1_0_0
    }

    /// Whether interfaces in results of this version have `mtu` (added in
    /// 1.1.0).
    pub fn interfaces_have_mtu(self) -> bool {
        self >= Self::V1_1_0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
