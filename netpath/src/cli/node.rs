//! `netpath node add|del|list`: the cluster's other nodes (static peers),
//! changed through the daemon like `route`; `list` shows each peer, where
//! it comes from (`static`, or `etcd` with `[cluster] etcd_endpoints`, whose
//! peers `add`/`del` cannot change) and what the pinned peer map
//! (`peers_v1`) holds for it.

use anyhow::Result;
use clap::Subcommand;
use ipnet::Ipv4Net;
use netpath_common::peer::peer_flags;
use serde::Serialize;

use super::{Instance, Target1, change, desired};
use crate::{
    api::Request,
    config::cluster::PeerConfig,
    datapath::{PinDir, peers::PeerMap},
};

#[derive(Subcommand)]
pub enum NodeCommand {
    /// Add a peer node: its pods (POD_CIDR) are reached through ADDRESS.
    Add {
        name: String,
        /// The peer's node address.
        #[arg(long)]
        address: std::net::Ipv4Addr,
        /// The peer's pod CIDR (inside the cluster CIDR).
        #[arg(long)]
        pod_cidr: Ipv4Net,
        #[command(flatten)]
        instance: Instance,
    },
    /// Delete a peer node (its pods' entry leaves the peer map).
    Del {
        name: String,
        #[command(flatten)]
        instance: Instance,
    },
    /// The peer nodes and their state in the datapath.
    List(Target1),
}

/// One peer as `netpath node list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodeRow {
    pub name: String,
    pub node_address: std::net::Ipv4Addr,
    pub pod_cidr: Ipv4Net,
    /// `direct` or `vxlan`.
    pub mode: String,
    /// `static` (`[[peers]]`, `netpath node add`) or `etcd`.
    pub source: String,
    /// `programmed` (the peer map routes the pod CIDR to the address),
    /// `stale` (it holds another value), `missing` (no entry).
    pub state: String,
}

pub(super) fn node_verb(command: NodeCommand) -> Result<String> {
    Ok(match command {
        NodeCommand::Add {
            name,
            address,
            pod_cidr,
            instance,
        } => change(
            &instance,
            &Request::NodeAdd {
                peer: PeerConfig {
                    name,
                    node_address: address,
                    pod_cidr,
                },
            },
        )?,
        NodeCommand::Del { name, instance } => change(&instance, &Request::NodeDel { name })?,
        NodeCommand::List(t) => {
            let config = desired(&t.instance)?;
            let pinned = PeerMap::open_pinned(&PinDir::for_instance(&config.node.name))
                .and_then(|m| m.entries())
                .unwrap_or_default();
            let mode = config
                .cluster
                .as_ref()
                .map_or_else(String::new, |c| c.mode.to_string());
            let source = if config.etcd_cluster().is_some() {
                "etcd"
            } else {
                "static"
            };
            let rows: Vec<NodeRow> = config
                .peers
                .iter()
                .map(|p| {
                    let state = match pinned.iter().find(|(n, _)| *n == p.pod_cidr) {
                        Some((_, v))
                            if v.flags & peer_flags::NODE != 0
                                && v.node_addr == p.node_address.octets() =>
                        {
                            "programmed"
                        }
                        Some(_) => "stale",
                        None => "missing",
                    };
                    NodeRow {
                        name: p.name.clone(),
                        node_address: p.node_address,
                        pod_cidr: p.pod_cidr,
                        mode: mode.clone(),
                        source: source.to_owned(),
                        state: state.to_owned(),
                    }
                })
                .collect();
            t.output.show(&rows, |rows| render_nodes(rows))
        }
    })
}

/// The table of `netpath node list`.
pub fn render_nodes(rows: &[NodeRow]) -> String {
    let mut out = format!(
        "{:<24} {:<16} {:<18} {:<7} {:<7} {}\n",
        "NODE", "ADDRESS", "POD CIDR", "MODE", "SOURCE", "STATE"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<24} {:<16} {:<18} {:<7} {:<7} {}\n",
            r.name,
            r.node_address.to_string(),
            r.pod_cidr.to_string(),
            r.mode,
            r.source,
            r.state
        ));
    }
    out
}
