//! The values netpath keeps in etcd, as JSON, and the subnet key names.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::EtcdError;

/// `subnets/<cidr>`: who holds the subnet, and where to send its pods'
/// packets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetRecord {
    /// The node's name.
    pub node: String,
    /// The node's address on the network between nodes.
    pub address: Ipv4Addr,
}

/// `nodes/<name>`: the node's reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub pod_cidr: Ipv4Net,
}

fn parse<T: for<'de> Deserialize<'de>>(key: &str, value: &[u8]) -> Result<T, EtcdError> {
    serde_json::from_slice(value).map_err(|e| EtcdError::BadRecord {
        key: key.to_owned(),
        why: format!(
            "not a netpath record ({e}): {}",
            String::from_utf8_lossy(value)
        ),
    })
}

impl SubnetRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(key: &str, value: &[u8]) -> Result<Self, EtcdError> {
        parse(key, value)
    }
}

impl NodeRecord {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_json(key: &str, value: &[u8]) -> Result<Self, EtcdError> {
        parse(key, value)
    }
}

/// `10.244.1.0/24` → `10.244.1.0-24` (a key name without a slash, as
/// flannel writes them).
pub fn subnet_key_name(net: Ipv4Net) -> String {
    format!("{}-{}", net.network(), net.prefix_len())
}

/// The inverse of [`subnet_key_name`]; `None` for anything else.
pub fn subnet_of_key_name(name: &str) -> Option<Ipv4Net> {
    let (addr, len) = name.split_once('-')?;
    let net = Ipv4Net::new(addr.parse().ok()?, len.parse().ok()?).ok()?;
    (net.network() == net.addr()).then_some(net)
}
