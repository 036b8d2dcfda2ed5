//! The `ADD` success result (spec section 5), printed in the version the
//! configuration asked for:
//!
//! ```json
//! {"cniVersion": "1.1.0",
//!  "interfaces": [{"name": "npc1a2b3c4d", "mac": "..", "mtu": 1500},
//!                 {"name": "eth0", "mac": "..", "mtu": 1500, "sandbox": "/var/run/netns/x"}],
//!  "ips": [{"address": "10.200.0.5/32", "gateway": "10.200.0.1", "interface": 1}],
//!  "routes": [{"dst": "0.0.0.0/0", "gw": "10.200.0.1"}],
//!  "dns": {"nameservers": ["10.200.0.1"]}}
//! ```
//!
//! Before 1.0.0 each `ips` entry also says `"version": "4"`; interfaces
//! have `mtu` from 1.1.0 on. A result given as `prevResult` (netpath-cni
//! after another interface plugin in a chain) is passed on with netpath's
//! interfaces, addresses and routes appended.

use std::net::Ipv4Addr;

use serde::Serialize;
use serde_json::{Map, Value};

use super::{conf::Dns, version::Version};
use crate::api::PodInfo;

/// What one attachment made: the host side, the pod side in its
/// namespace, the pod's address, its default route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Option<Dns>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// The namespace file (`CNI_NETNS`) for the pod side; `None` on the
    /// host.
    pub sandbox: Option<String>,
}

/// An address (always a `/32`: a netpath pod's address is alone on its
/// link; the gateway is reached on-link).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    pub address: Ipv4Addr,
    pub gateway: Option<Ipv4Addr>,
    /// Index into `interfaces`.
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: ipnet::Ipv4Net,
    pub gw: Option<Ipv4Addr>,
}

impl CniResult {
    /// The result of the pod the daemon built, whose namespace the runtime
    /// named `sandbox`.
    pub fn for_pod(pod: &PodInfo, sandbox: &str, dns: Option<Dns>) -> Self {
        Self {
            interfaces: vec![
                Interface {
                    name: pod.host_ifname.clone(),
                    mac: pod.host_mac.clone(),
                    mtu: Some(pod.mtu),
                    sandbox: None,
                },
                Interface {
                    name: pod.ifname.clone(),
                    mac: pod.mac.clone(),
                    mtu: Some(pod.mtu),
                    sandbox: Some(sandbox.to_owned()),
                },
            ],
            ips: vec![IpConfig {
                address: pod.address,
                gateway: Some(pod.gateway),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: ipnet::Ipv4Net::default(),
                gw: Some(pod.gateway),
            }],
            dns,
        }
    }

    /// The result as `version` prints it, keys in the spec's order.
    pub fn to_json(&self, version: Version) -> String {
        serde_json::to_string_pretty(&self.printable(version, 0)).expect("a result is always JSON")
    }

    /// The result appended to `prev` (the previous plugin's result, in
    /// `version`): interfaces, addresses and routes after its own (with
    /// the interface indices moved along), `dns` replaced when this result
    /// has one.
    pub fn merged_json(&self, version: Version, prev: &Map<String, Value>) -> String {
        let mut out = prev.clone();
        let list = |out: &Map<String, Value>, key: &str| match out.get(key) {
            Some(Value::Array(l)) => l.clone(),
            _ => Vec::new(),
        };
        let mut interfaces = list(&out, "interfaces");
        let ours = self.printable(version, interfaces.len());
        interfaces.extend(ours.interfaces.iter().map(value));
        let mut ips = list(&out, "ips");
        ips.extend(ours.ips.iter().map(value));
        let mut routes = list(&out, "routes");
        routes.extend(ours.routes.iter().map(value));
        out.insert("cniVersion".into(), version.as_str().into());
        out.insert("interfaces".into(), interfaces.into());
        out.insert("ips".into(), ips.into());
        out.insert("routes".into(), routes.into());
        if let Some(dns) = ours.dns {
            out.insert("dns".into(), value(dns));
        }
        serde_json::to_string_pretty(&out).expect("a result is always JSON")
    }

    /// The version's shape, with interface indices moved by `offset`.
    fn printable(&self, version: Version, offset: usize) -> ResultJson<'_> {
        ResultJson {
            cni_version: version.as_str(),
            interfaces: self
                .interfaces
                .iter()
                .map(|i| InterfaceJson {
                    name: &i.name,
                    mac: i.mac.as_deref(),
                    mtu: i.mtu.filter(|_| version.interfaces_have_mtu()),
                    sandbox: i.sandbox.as_deref(),
                })
                .collect(),
            ips: self
                .ips
                .iter()
                .map(|ip| IpJson {
                    version: version.ips_have_version().then_some("4"),
                    address: format!("{}/32", ip.address),
                    gateway: ip.gateway,
                    interface: ip.interface.map(|i| i + offset),
                })
                .collect(),
            routes: self
                .routes
                .iter()
                .map(|r| RouteJson {
                    dst: r.dst.to_string(),
                    gw: r.gw,
                })
                .collect(),
            dns: self.dns.as_ref(),
        }
    }
}

fn value(v: impl Serialize) -> Value {
    serde_json::to_value(v).expect("a result is always JSON")
}

#[derive(Serialize)]
struct ResultJson<'a> {
    #[serde(rename = "cniVersion")]
    cni_version: &'static str,
    interfaces: Vec<InterfaceJson<'a>>,
    ips: Vec<IpJson>,
    routes: Vec<RouteJson>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<&'a Dns>,
}

#[derive(Serialize)]
struct InterfaceJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    mac: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mtu: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sandbox: Option<&'a str>,
}

#[derive(Serialize)]
struct IpJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interface: Option<usize>,
}

#[derive(Serialize)]
struct RouteJson {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<Ipv4Addr>,
}
