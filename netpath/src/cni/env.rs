//! The `CNI_*` environment variables a runtime runs the plugin with, and
//! their checks per command (spec section 2, "Parameters" and each
//! command's "Required environment parameters"). An empty variable counts
//! as a missing one; every error is code 4 and names the variable.

use std::{
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
};

use super::error::{CniError, Code};
use crate::config::MAX_IFNAME_LEN;

/// A value of `CNI_COMMAND`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Add,
    Del,
    Check,
    Status,
    Gc,
    Version,
}

impl Command {
    /// The command `CNI_COMMAND` names, or code 4.
    pub fn parse(s: &str) -> Result<Command, CniError> {
        Ok(match s {
            "ADD" => Self::Add,
            "DEL" => Self::Del,
            "CHECK" => Self::Check,
            "STATUS" => Self::Status,
            "GC" => Self::Gc,
            "VERSION" => Self::Version,
            other => {
                return Err(CniError::env(
                    "CNI_COMMAND",
                    format!(
                        "is {other:?}; netpath-cni knows ADD, DEL, CHECK, STATUS, GC and VERSION"
                    ),
                ));
            }
        })
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Add => "ADD",
            Self::Del => "DEL",
            Self::Check => "CHECK",
            Self::Status => "STATUS",
            Self::Gc => "GC",
            Self::Version => "VERSION",
        })
    }
}

/// The variables as the process got them (unchecked; empty ones are
/// `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    pub command: Option<String>,
    pub container_id: Option<String>,
    pub netns: Option<String>,
    pub ifname: Option<String>,
    pub args: Option<String>,
    pub path: Option<String>,
}

impl Env {
    /// The variables of this process.
    pub fn from_process() -> Self {
        Self::from_vars(std::env::vars_os().filter_map(|(k, v)| {
            Some((k.into_string().ok()?, v.into_string().unwrap_or_default()))
        }))
    }

    /// The variables among `vars` (other names are ignored).
    pub fn from_vars<K: AsRef<str>, V: Into<String>>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let mut env = Self::default();
        for (k, v) in vars {
            let v: String = v.into();
            let slot = match k.as_ref() {
                "CNI_COMMAND" => &mut env.command,
                "CNI_CONTAINERID" => &mut env.container_id,
                "CNI_NETNS" => &mut env.netns,
                "CNI_IFNAME" => &mut env.ifname,
                "CNI_ARGS" => &mut env.args,
                "CNI_PATH" => &mut env.path,
                _ => continue,
            };
            *slot = (!v.is_empty()).then_some(v);
        }
        env
    }

    /// `CNI_COMMAND`, which every invocation needs.
    pub fn command(&self) -> Result<Command, CniError> {
        let s = self.command.as_deref().ok_or_else(|| {
            CniError::env(
                "CNI_COMMAND",
                "is not set; netpath-cni is a CNI plugin, run by a container runtime with \
                 CNI_COMMAND=ADD, DEL, CHECK, STATUS, GC or VERSION",
            )
        })?;
        Command::parse(s)
    }

    /// The attachment of `ADD`, `DEL` or `CHECK`: `CNI_CONTAINERID` and
    /// `CNI_IFNAME` always; `CNI_NETNS` for `ADD` and `CHECK` (optional for
    /// `DEL`, where the namespace may be gone already); `IP=` of
    /// `CNI_ARGS`.
    pub fn attachment(&self, command: Command) -> Result<EnvAttachment, CniError> {
        let mut missing = Vec::new();
        if self.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if self.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        let netns_needed = matches!(command, Command::Add | Command::Check);
        if netns_needed && self.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnv,
                format!(
                    "{command} needs {}, which {} not set",
                    missing.join(", "),
                    if missing.len() == 1 { "is" } else { "are" }
                ),
            ));
        }
        let container_id = self.container_id.clone().expect("checked above");
        check_container_id(&container_id)?;
        let ifname = self.ifname.clone().expect("checked above");
        check_ifname(&ifname)?;
        let netns = match &self.netns {
            Some(p) if netns_needed => Some(check_netns(p)?),
            // DEL: the namespace is not needed; a bad one is ignored.
            Some(p) => Some(PathBuf::from(p)),
            None => None,
        };
        let args = parse_args(self.args.as_deref().unwrap_or(""))?;
        Ok(EnvAttachment {
            container_id,
            ifname,
            netns,
            ip: args.ip,
        })
    }

    /// `CNI_PATH`, which `GC` needs (the spec's rule; netpath-cni
    /// delegates to no plugin, so it does not use it).
    pub fn require_path(&self, command: Command) -> Result<(), CniError> {
        match self.path {
            Some(_) => Ok(()),
            None => Err(CniError::env(
                "CNI_PATH",
                format!("is not set; {command} needs it (the plugin directories)"),
            )),
        }
    }
}

/// What the environment says about one attachment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvAttachment {
    pub container_id: String,
    pub ifname: String,
    /// `CNI_NETNS` (always there for `ADD` and `CHECK`).
    pub netns: Option<PathBuf>,
    /// `IP=` of `CNI_ARGS`.
    pub ip: Option<Ipv4Addr>,
}

/// The spec's container id: letters, digits, then also `_`, `.`, `-`.
fn check_container_id(id: &str) -> Result<(), CniError> {
    let mut chars = id.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let bad = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
    if !first_ok {
        return Err(CniError::env(
            "CNI_CONTAINERID",
            format!("{id:?} must start with a letter or a digit"),
        ));
    }
    if let Some(c) = bad {
        return Err(CniError::env(
            "CNI_CONTAINERID",
            format!("{id:?} contains {c:?}; a container id is letters, digits, '_', '.' and '-'"),
        ));
    }
    Ok(())
}

/// A name Linux accepts for an interface.
fn check_ifname(name: &str) -> Result<(), CniError> {
    let why = if name.len() > MAX_IFNAME_LEN {
        Some(format!(
            "is {} bytes; Linux allows at most {MAX_IFNAME_LEN}",
            name.len()
        ))
    } else if name == "." || name == ".." || name == "lo" {
        Some("is not a name the pod's interface can have".to_owned())
    } else {
        name.chars()
            .find(|c| *c == '/' || *c == ':' || c.is_whitespace() || c.is_control())
            .map(|c| format!("contains {c:?}, which Linux does not allow"))
    };
    match why {
        Some(why) => Err(CniError::env(
            "CNI_IFNAME",
            format!("{name:?} {why}; use a name like eth0"),
        )),
        None => Ok(()),
    }
}

/// The namespace file: an absolute path.
fn check_netns(path: &str) -> Result<PathBuf, CniError> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(CniError::env(
            "CNI_NETNS",
            format!(
                "{path:?} is not an absolute path; give the namespace file, e.g. \
                 /var/run/netns/NAME or /proc/PID/ns/net"
            ),
        ));
    }
    Ok(p.to_path_buf())
}

/// What netpath-cni takes from `CNI_ARGS`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CniArgs {
    /// `IP=A` or `IP=A/LEN`: the address to give the pod (the length is not
    /// used: a pod always has `A/32`).
    pub ip: Option<Ipv4Addr>,
}

/// Parses `KEY=VALUE;KEY=VALUE`. Keys other than `IP` are ignored (runtimes
/// pass their own, e.g. `K8S_POD_NAME`); a pair without `=`, or an `IP`
/// that is not an IPv4 address, is code 4.
pub fn parse_args(s: &str) -> Result<CniArgs, CniError> {
    let mut args = CniArgs::default();
    for pair in s.split(';').filter(|p| !p.is_empty()) {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(CniError::env(
                "CNI_ARGS",
                format!("has {pair:?}, which is not KEY=VALUE; separate pairs with ';'"),
            ));
        };
        if key == "IP" {
            args.ip = Some(parse_ip(value).map_err(|why| {
                CniError::env("CNI_ARGS", format!("has IP={value:?}, which {why}"))
            })?);
        }
    }
    Ok(args)
}

/// `A` or `A/LEN`, IPv4. The error says why not.
pub fn parse_ip(s: &str) -> Result<Ipv4Addr, String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let addr = match addr.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(a)) => a,
        Ok(std::net::IpAddr::V6(_)) => {
            return Err("is IPv6; netpath gives pods IPv4 addresses only".to_owned());
        }
        Err(_) => return Err("is not an IP address".to_owned()),
    };
    match len {
        Some(len) if !len.parse::<u8>().is_ok_and(|l| l <= 32) => {
            Err(format!("has a prefix length {len:?} that is not 0-32"))
        }
        _ => Ok(addr),
    }
}
