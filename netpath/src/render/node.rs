//! The tables of the daemon-backed verbs (`pod list`, `route list`,
//! `masquerade list`, `status`) and the JSON of the verbs that read the
//! pins (`conntrack list -o json`, `stats -o json`).

use std::fmt::Write as _;

use netpath_common::{Counter, Stat};
use serde_json::{Value, json};

use crate::{
    api::{PodInfo, Status},
    config::{Config, MasqueradeConfig, RouteConfig},
    conntrack::Connection,
};

/// `netpath pod list`.
pub fn pod_list(pods: &[PodInfo]) -> String {
    let mut s = format!(
        "{:<24} {:<15} {:<8} {:<15} {:<6} {:>5}  NETNS\n",
        "POD", "ADDRESS", "STATE", "HOST-IF", "IF", "MTU"
    );
    for p in pods {
        let state = if p.healthy { "ok" } else { "BROKEN" };
        let mut netns = p.netns.clone();
        if let Some(id) = &p.container_id {
            let _ = write!(netns, " (container {id})");
        }
        let _ = writeln!(
            s,
            "{:<24} {:<15} {:<8} {:<15} {:<6} {:>5}  {netns}",
            p.name,
            p.address.to_string(),
            state,
            p.host_ifname,
            p.ifname,
            p.mtu
        );
    }
    s
}

/// `netpath route list`: the declared routes (the route map, with the
/// connected networks netpath adds, is `netpath routes`).
pub fn route_list(config: &Config, routes: &[RouteConfig]) -> String {
    let mut s = String::new();
    if let Some(gw) = config.node.uplink.as_ref().and_then(|u| u.gateway) {
        let dev = config.node.uplink.as_ref().map_or("", |u| u.name.as_str());
        let _ = writeln!(s, "0.0.0.0/0 via {gw} dev {dev}  (node.uplink.gateway)");
    }
    for r in routes {
        let mut line = r.dst.to_string();
        if let Some(via) = r.via {
            let _ = write!(line, " via {via}");
        }
        let _ = write!(line, " dev {}", config.route_dev(r).unwrap_or("?"));
        let _ = writeln!(s, "{line}");
    }
    if s.is_empty() {
        s.push_str("no routes\n");
    }
    s
}

/// `netpath masquerade list`, as `iptables -t nat -S POSTROUTING` would
/// print the rules.
pub fn masquerade_list(config: &Config, rules: &[MasqueradeConfig]) -> String {
    let mut s = String::new();
    for r in rules {
        let out = config.masquerade_out(r).unwrap_or("?");
        let target = match r.address {
            Some(a) => format!("-j SNAT --to-source {a}"),
            None => "-j MASQUERADE".to_owned(),
        };
        let _ = writeln!(s, "-s {} -o {out} {target}", config.masquerade_source(r));
    }
    if s.is_empty() {
        s.push_str("no masquerade rules\n");
    }
    s
}

/// `netpath status`.
pub fn status(st: &Status) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "instance {}: daemon pid {} up {}s",
        st.instance, st.pid, st.uptime_secs
    );
    if let Some(f) = &st.config_file {
        let _ = writeln!(s, "  started from   {}", f.display());
    }
    let _ = writeln!(s, "  desired state  {}", st.desired_file.display());
    let _ = writeln!(s, "  API socket     {}", st.socket.display());
    let _ = writeln!(s, "  pins           {}", st.pins.display());
    let _ = writeln!(
        s,
        "  programs       {} at start",
        if st.programs_loaded_at_start {
            "loaded"
        } else {
            "adopted from their pins"
        }
    );
    let _ = writeln!(
        s,
        "  pods {} ({} as built), routes {}, masquerade rules {}, port-forwards {}, services \
         {}, connections {}",
        st.pods,
        st.pods_healthy,
        st.routes,
        st.masquerade,
        st.port_forwards,
        st.services,
        st.connections
    );
    s
}

/// `netpath conntrack list -o json`.
pub fn conntrack_json(conns: &[Connection]) -> String {
    let rows: Vec<Value> = conns
        .iter()
        .map(|c| {
            json!({
                "proto": c.proto(),
                "source": c.source().to_string(),
                "destination": c.destination().to_string(),
                "nat": c.nat().to_string(),
                "dnat": c.is_dnat(),
                "state": c.state(),
                "age_secs": c.age.as_secs(),
                "expires_in_secs": c.expires_in.as_secs(),
                "expired": c.expired,
                "packets_orig": c.entry.packets_orig,
                "packets_reply": c.entry.packets_reply,
                "reverse_entry": c.revnat.is_some(),
            })
        })
        .collect();
    pretty(&Value::Array(rows))
}

/// `netpath stats -o json`: `{counter: {packets, bytes, drop}}`.
pub fn stats_json(stats: &[(Stat, Counter)]) -> String {
    let map: serde_json::Map<String, Value> = stats
        .iter()
        .map(|(stat, c)| {
            (
                stat.name().to_owned(),
                json!({ "packets": c.packets, "bytes": c.bytes, "drop": stat.is_drop() }),
            )
        })
        .collect();
    pretty(&Value::Object(map))
}

/// Any value as indented JSON and a newline.
pub fn pretty(value: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("always JSON");
    s.push('\n');
    s
}
