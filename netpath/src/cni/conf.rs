//! The network configuration a runtime writes on the plugin's stdin: one
//! plugin's object from a conflist, with `cniVersion` and `name` copied in
//! and, per command, `runtimeConfig`, `prevResult` or
//! `cni.dev/valid-attachments` added.
//!
//! ```json
//! {"cniVersion": "1.1.0", "name": "netpath-demo", "type": "netpath-cni",
//!  "instance": "demo",
//!  "dns": {"nameservers": ["10.200.0.1"], "search": ["demo.local"]}}
//! ```
//!
//! netpath's own keys: `instance` (required: the netpath instance, i.e. the
//! daemon's `node.name`, that attaches the pods) and `dns` (optional,
//! returned as is in the `ADD` result; without it the result carries the
//! node's `[node.dns]`, which netpath writes into the pod's resolv.conf
//! only for namespaces it owns). A fixed address comes from
//! `runtimeConfig.ips` (the `ips` capability), else `args.cni.ips`, else
//! `IP=` in `CNI_ARGS` (the conventions' order). Other keys are ignored.
//!
//! Stdin that is not a JSON object is code 6; a key missing or wrong is
//! code 7, naming the key; a `cniVersion` netpath-cni does not speak is
//! code 1.

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    env::parse_ip,
    error::{CniError, Code},
    version::Version,
};
use crate::{api::AttachmentId, config::MAX_NAME_LEN};

/// The plugin's configuration, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    pub cni_version: Version,
    /// The network's name.
    pub name: String,
    /// The plugin's `type` (the binary's name).
    pub plugin_type: String,
    /// The netpath instance whose daemon attaches the pods.
    pub instance: String,
    /// Returned in the `ADD` result.
    pub dns: Option<Dns>,
    /// `runtimeConfig.ips`, else `args.cni.ips` (at most one address).
    pub ip: Option<Ipv4Addr>,
    /// The result of the previous `ADD` (`CHECK`, `DEL`) or of the
    /// previous plugin in the chain (`ADD`).
    pub prev_result: Option<Map<String, Value>>,
    /// `GC`: `cni.dev/valid-attachments`.
    pub valid_attachments: Option<Vec<AttachmentId>>,
}

/// The `dns` of a configuration and of a result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl From<&crate::config::DnsConfig> for Dns {
    /// The node's `[node.dns]`, as a result's `dns`.
    fn from(d: &crate::config::DnsConfig) -> Self {
        Self {
            nameservers: d.nameservers.iter().map(ToString::to_string).collect(),
            domain: None,
            search: d.search.clone(),
            options: d.options.clone(),
        }
    }
}

/// The `cniVersion` of `stdin`, for `VERSION`: `None` when stdin is empty
/// or names none; code 6 when it is not a JSON object.
pub fn requested_version(stdin: &[u8]) -> Result<Option<String>, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let obj = object(stdin)?;
    Ok(obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .map(str::to_owned))
}

/// Parses and checks the configuration on stdin.
pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
    let obj = object(stdin)?;
    let version = match obj.get("cniVersion") {
        None => return Err(CniError::config("cniVersion", "is missing")),
        Some(Value::String(s)) => Version::parse(s)?,
        Some(other) => return Err(CniError::config("cniVersion", not_a("string", other))),
    };
    parse_versioned(&obj, version).map_err(|e| e.in_version(version))
}

fn parse_versioned(obj: &Map<String, Value>, cni_version: Version) -> Result<NetConf, CniError> {
    let name = required_string(obj, "name")?;
    check_network_name(&name)?;
    let plugin_type = required_string(obj, "type")?;
    let instance = required_string(obj, "instance").map_err(|e| {
        CniError::new(
            e.code,
            format!(
                "{}: name the netpath instance whose daemon attaches the pods (its node.name), \
                 e.g. \"instance\": \"demo\"",
                e.details
            ),
        )
    })?;
    check_instance(&instance)?;
    let dns = match obj.get("dns") {
        None | Some(Value::Null) => None,
        Some(v) => Some(parse_dns(v)?),
    };
    let runtime_ip = match obj.get("runtimeConfig") {
        None | Some(Value::Null) => None,
        Some(Value::Object(rc)) => ips(rc.get("ips"), "runtimeConfig.ips")?,
        Some(other) => return Err(CniError::config("runtimeConfig", not_a("object", other))),
    };
    let args_ip = match obj.get("args") {
        None | Some(Value::Null) => None,
        Some(Value::Object(args)) => match args.get("cni") {
            None | Some(Value::Null) => None,
            Some(Value::Object(cni)) => ips(cni.get("ips"), "args.cni.ips")?,
            Some(other) => return Err(CniError::config("args.cni", not_a("object", other))),
        },
        Some(other) => return Err(CniError::config("args", not_a("object", other))),
    };
    let prev_result = match obj.get("prevResult") {
        None | Some(Value::Null) => None,
        Some(Value::Object(prev)) => Some(prev.clone()),
        Some(other) => return Err(CniError::config("prevResult", not_a("object", other))),
    };
    let valid_attachments = match ["cni.dev/valid-attachments", "cni.dev/attachments"]
        .into_iter()
        .find_map(|k| obj.get(k).map(|v| (k, v)))
    {
        None => None,
        // Go's nil list: no attachment is valid.
        Some((_, Value::Null)) => Some(Vec::new()),
        Some((key, v)) => Some(attachments(key, v)?),
    };
    Ok(NetConf {
        cni_version,
        name,
        plugin_type,
        instance,
        dns,
        ip: runtime_ip.or(args_ip),
        prev_result,
        valid_attachments,
    })
}

/// Stdin as a JSON object, or code 6.
fn object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(CniError::new(
            Code::Decode,
            format!(
                "the network configuration on stdin is {}, not a JSON object",
                kind(&other)
            ),
        )),
        Err(e) => Err(CniError::new(
            Code::Decode,
            format!("the network configuration on stdin is not JSON: {e}"),
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn not_a(what: &str, v: &Value) -> String {
    format!("is {}, not {} {what}", kind(v), article(what))
}

fn article(what: &str) -> &'static str {
    if what.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn required_string(obj: &Map<String, Value>, key: &str) -> Result<String, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(CniError::config(key, "is missing")),
        Some(Value::String(s)) if s.is_empty() => Err(CniError::config(key, "is empty")),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(CniError::config(key, not_a("string", other))),
    }
}

/// The spec's network name: a letter or digit, then letters, digits, `_`,
/// `.` and `-`.
fn check_network_name(name: &str) -> Result<(), CniError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if let Some(c) = chars.find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))) {
        return Err(CniError::config(
            "name",
            format!("{name:?} contains {c:?}; a network name is letters, digits, '_', '.' and '-'"),
        ));
    }
    if !first_ok {
        return Err(CniError::config(
            "name",
            format!("{name:?} must start with a letter or a digit"),
        ));
    }
    Ok(())
}

/// An instance name as netpath's `node.name`: `[a-z0-9][a-z0-9-]*`, at most
/// [`MAX_NAME_LEN`] bytes (it is a directory under `/run/netpath`).
fn check_instance(instance: &str) -> Result<(), CniError> {
    let why = if instance.len() > MAX_NAME_LEN {
        Some(format!(
            "is {} bytes; an instance name has at most {MAX_NAME_LEN}",
            instance.len()
        ))
    } else if instance.starts_with('-') {
        Some("starts with '-'".to_owned())
    } else {
        instance
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
            .map(|c| format!("contains {c:?}"))
    };
    match why {
        Some(why) => Err(CniError::config(
            "instance",
            format!(
                "{instance:?} {why}; it is a netpath node.name: lowercase letters, digits and \
                 '-'"
            ),
        )),
        None => Ok(()),
    }
}

fn parse_dns(v: &Value) -> Result<Dns, CniError> {
    let dns: Dns = serde_json::from_value(v.clone()).map_err(|e| CniError::config("dns", e))?;
    for ns in &dns.nameservers {
        if ns.parse::<IpAddr>().is_err() {
            return Err(CniError::config(
                "dns.nameservers",
                format!("has {ns:?}, which is not an IP address"),
            ));
        }
    }
    Ok(dns)
}

/// A list of `A[/LEN]` strings holding at most one address (netpath gives
/// a pod one IPv4 address).
fn ips(v: Option<&Value>, key: &str) -> Result<Option<Ipv4Addr>, CniError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(list)) => list,
        Some(other) => return Err(CniError::config(key, not_a("list", other))),
    };
    let mut found = None;
    for item in list {
        let Value::String(s) = item else {
            return Err(CniError::config(
                key,
                format!("holds {}, not an address string", kind(item)),
            ));
        };
        let addr =
            parse_ip(s).map_err(|why| CniError::config(key, format!("has {s:?}, which {why}")))?;
        if found.is_some_and(|a| a != addr) {
            return Err(CniError::config(
                key,
                format!("holds {} addresses; a netpath pod has one", list.len()),
            ));
        }
        found = Some(addr);
    }
    Ok(found)
}

/// `cni.dev/valid-attachments`: `[{"containerID": ..., "ifname": ...}]`.
fn attachments(key: &str, v: &Value) -> Result<Vec<AttachmentId>, CniError> {
    #[derive(Deserialize)]
    struct Attachment {
        #[serde(rename = "containerID")]
        container_id: String,
        ifname: String,
    }
    let list: Vec<Attachment> = serde_json::from_value(v.clone()).map_err(|e| {
        CniError::config(
            key,
            format!("is not a list of {{\"containerID\", \"ifname\"}} objects: {e}"),
        )
    })?;
    Ok(list
        .into_iter()
        .map(|a| AttachmentId {
            container_id: a.container_id,
            ifname: a.ifname,
        })
        .collect())
}

/// The addresses `prevResult` gives interface `ifname` in `sandbox` (an
/// `ips` entry without `interface` counts for every interface, as libcni
/// reads it). `None` when `prevResult` names no such interface.
pub fn prev_addresses(
    prev: &Map<String, Value>,
    ifname: &str,
    sandbox: &str,
) -> Result<Option<Vec<String>>, CniError> {
    let interfaces = match prev.get("interfaces") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(other) => {
            return Err(CniError::config(
                "prevResult.interfaces",
                not_a("list", other),
            ));
        }
    };
    let ours = interfaces.iter().position(|i| {
        i.get("name").and_then(Value::as_str) == Some(ifname)
            && i.get("sandbox").and_then(Value::as_str) == Some(sandbox)
    });
    let Some(ours) = ours else {
        return Ok(None);
    };
    let ips = match prev.get("ips") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(list)) => list.clone(),
        Some(other) => return Err(CniError::config("prevResult.ips", not_a("list", other))),
    };
    let mut found = Vec::new();
    for ip in &ips {
        let index = ip.get("interface").and_then(Value::as_u64);
        if index.is_some_and(|i| usize::try_from(i).ok() != Some(ours)) {
            continue;
        }
        match ip.get("address").and_then(Value::as_str) {
            Some(a) => found.push(a.to_owned()),
            None => {
                return Err(CniError::config(
                    "prevResult.ips",
                    "has an entry without an \"address\" string",
                ));
            }
        }
    }
    Ok(Some(found))
}
