//! The CNI error result: what `netpath-cni` prints on stdout when it fails
//! (with a non-zero exit code), `{"cniVersion", "code", "msg", "details"}`.
//!
//! Codes below 100 are the spec's well-known ones; 100 and up are
//! netpath's own ([`Code`]).

use serde::Serialize;

use super::version::Version;

/// An error code of the CNI spec (below 100) or of netpath (100 and up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 1: the configuration's `cniVersion` is not one this plugin speaks,
    /// or the command does not exist in that version.
    IncompatibleVersion,
    /// 4: a required `CNI_*` variable is missing or malformed.
    InvalidEnv,
    /// 5: stdin could not be read.
    Io,
    /// 6: stdin is not a JSON object.
    Decode,
    /// 7: the network configuration is invalid (a key missing or wrong).
    InvalidConfig,
    /// 11: try again later: the netpath daemon is not running.
    TryAgainLater,
    /// 50: `STATUS`: the plugin cannot serve `ADD` (no daemon answers).
    NotAvailable,
    /// 100: the netpath daemon refused the request (invalid, exists, not
    /// found); its message says why. Nothing was changed.
    Refused,
    /// 101: the netpath daemon failed to apply the change on the node and
    /// rolled it back.
    ApplyFailed,
    /// 102: `CHECK`: the attachment is not as it was built, or not as the
    /// previous result says.
    Unhealthy,
    /// 103: the daemon did not answer properly, or this process may not
    /// use its socket.
    DaemonUnusable,
}

impl Code {
    /// The number printed as `code`.
    pub fn number(self) -> u32 {
        match self {
            Self::IncompatibleVersion => 1,
            Self::InvalidEnv => 4,
            Self::Io => 5,
            Self::Decode => 6,
            Self::InvalidConfig => 7,
            Self::TryAgainLater => 11,
            Self::NotAvailable => 50,
            Self::Refused => 100,
            Self::ApplyFailed => 101,
            Self::Unhealthy => 102,
            Self::DaemonUnusable => 103,
        }
    }

    /// The short `msg` of the code.
    pub fn msg(self) -> &'static str {
        match self {
            Self::IncompatibleVersion => "incompatible CNI version",
            Self::InvalidEnv => "invalid environment variables",
            Self::Io => "cannot read the network configuration",
            Self::Decode => "cannot decode the network configuration",
            Self::InvalidConfig => "invalid network configuration",
            Self::TryAgainLater => "try again later: the netpath daemon is not running",
            Self::NotAvailable => "the plugin is not available",
            Self::Refused => "refused by the netpath daemon",
            Self::ApplyFailed => "the netpath daemon could not apply the change",
            Self::Unhealthy => "the attachment is not as it was built",
            Self::DaemonUnusable => "cannot use the netpath daemon",
        }
    }
}

/// A failed CNI command: its [`Code`] and the long explanation (what is
/// wrong, what to do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} (CNI error {}): {details}", .code.msg(), .code.number())]
pub struct CniError {
    pub code: Code,
    /// What is wrong and what to do (`details`).
    pub details: String,
    /// The version the error is printed in, once the configuration named
    /// one; [`Version::LATEST`] before that.
    pub version: Option<Version>,
}

/// The error JSON, in the spec's key order.
#[derive(Serialize)]
struct ErrorJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'a str,
    code: u32,
    msg: &'a str,
    details: &'a str,
}

impl CniError {
    pub fn new(code: Code, details: impl Into<String>) -> Self {
        Self {
            code,
            details: details.into(),
            version: None,
        }
    }

    /// Code 4, naming the variable.
    pub fn env(var: &str, why: impl std::fmt::Display) -> Self {
        Self::new(Code::InvalidEnv, format!("{var} {why}"))
    }

    /// Code 7, naming the key.
    pub fn config(key: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::InvalidConfig,
            format!("the key \"{key}\" of the network configuration {why}"),
        )
    }

    /// The same error, printed in `version` (unless one was set already).
    #[must_use]
    pub fn in_version(mut self, version: Version) -> Self {
        self.version.get_or_insert(version);
        self
    }

    /// The error result as the spec prints it.
    pub fn to_json(&self) -> String {
        let json = ErrorJson {
            cni_version: self.version.unwrap_or(Version::LATEST).as_str(),
            code: self.code.number(),
            msg: self.code.msg(),
            details: &self.details,
        };
        serde_json::to_string_pretty(&json).expect("an error is always JSON")
    }
}
