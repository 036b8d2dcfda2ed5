//! The ceiling: two namespaces joined by one veth pair, nothing else.
//!
//! ```text
//! ip netns add npb-<pid>-l-a ; ip netns add npb-<pid>-l-b
//! ip -n npb-<pid>-l-a link add eth0 type veth peer name eth0 netns npb-<pid>-l-b
//! ip -n npb-<pid>-l-a addr add 10.202.0.2/24 dev eth0 ; ip -n ... link set eth0 up
//! ip -n npb-<pid>-l-b addr add 10.202.0.3/24 dev eth0 ; ip -n ... link set eth0 up
//! ```
//!
//! Both scenarios use the same pair: for pod → LAN host the "pod" and the
//! "LAN host" are directly connected, which is what SNAT to a host one hop
//! away costs at the very least.

use std::net::Ipv4Addr;

use anyhow::{Context as _, Result};
use netpath::sys::{netlink::Netlink, netns::Netns};

use super::{Endpoints, Scenario, Setup, SetupKind};
use crate::{
    condition::Condition,
    ns::{self, Names},
};

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 3);
const IFNAME: &str = "eth0";

pub struct Limit {
    a: String,
    b: String,
    built: bool,
}

impl Limit {
    pub fn new(names: &Names) -> Self {
        Self {
            a: names.ns("l-a"),
            b: names.ns("l-b"),
            built: false,
        }
    }
}

impl Setup for Limit {
    fn kind(&self) -> SetupKind {
        SetupKind::Limit
    }

    fn build(&mut self) -> Result<()> {
        ns::check_ours(&self.a)?;
        ns::check_ours(&self.b)?;
        self.built = true;
        let (a, b) = (self.a.clone(), self.b.clone());
        ns::block_on(async move {
            let a_ns = Netns::create(&a).await?;
            let b_ns = Netns::create(&b).await?;
            let a_nl = Netlink::connect(&a_ns).await?;
            let b_nl = Netlink::connect(&b_ns).await?;
            a_nl.add_veth(IFNAME, IFNAME, &b_ns).await?;
            for (nl, addr, ns) in [(&a_nl, A_ADDR, &a), (&b_nl, B_ADDR, &b)] {
                let link = nl
                    .link_by_name(IFNAME)
                    .await?
                    .with_context(|| format!("{IFNAME} in {ns}"))?;
                nl.add_address(link.index, addr, 24).await?;
                nl.set_up(link.index).await?;
            }
            anyhow::Ok(())
        })
    }

    fn teardown(&mut self) {
        if std::mem::take(&mut self.built) {
            ns::block_on(ns::delete_all(&[self.a.clone(), self.b.clone()]));
        }
    }

    fn applies(&self, condition: Condition) -> Result<(), String> {
        match condition {
            Condition::Baseline => Ok(()),
            _ => Err(
                "not measured: a direct veth pair has no routes or connection table to scale"
                    .into(),
            ),
        }
    }

    fn endpoints(&self, _scenario: Scenario) -> Result<Endpoints, String> {
        Ok(Endpoints {
            client_ns: self.a.clone(),
            server_ns: self.b.clone(),
            server_addr: B_ADDR,
            forward: None,
        })
    }

    fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "netns {} eth0 {A_ADDR}/24 ══ veth ══ netns {} eth0 {B_ADDR}/24",
                self.a, self.b
            ),
            "every scenario runs over this one pair (no bridge, routing, NAT or netfilter)".into(),
        ]
    }
}
