//! The load balancer's tables: `netpath service list`, `netpath service
//! maglev` and `netpath port-forward list`.

use std::{collections::BTreeMap, fmt::Write as _};

use crate::lb::inspect::FrontendView;

/// The services of `views` (not the port-forwards), by name.
fn by_name(views: &[FrontendView]) -> Vec<&FrontendView> {
    let mut services: Vec<&FrontendView> = views.iter().filter(|v| !v.port_forward).collect();
    services.sort_by(|a, b| a.service.cmp(&b.service));
    services
}

/// `netpath service list`: one line per backend, the service's name and
/// frontend on its first; a service without backends says so. By name.
pub fn services(views: &[FrontendView]) -> String {
    let mut s = format!(
        "{:<16} {:<22} {:>5}  {:<21}  {:<16} {:>5}\n",
        "SERVICE", "FRONTEND", "INDEX", "BACKEND", "TARGET", "FLOWS"
    );
    for v in by_name(views) {
        let name = v.service.as_deref().unwrap_or("?");
        let mut head = format!("{name:<16} {:<22}", v.frontend());
        if v.backends.is_empty() {
            let _ = writeln!(
                s,
                "{head} {:>5}  (no backends: connections are refused)",
                "-"
            );
            continue;
        }
        for b in &v.backends {
            let _ = writeln!(
                s,
                "{head} {:>5}  {:<21}  {:<16} {:>5}",
                b.index,
                b.address.to_string(),
                b.target,
                b.flows
            );
            head = format!("{:<16} {:<22}", "", "");
        }
        if let Some(t) = v.affinity_timeout_secs {
            let _ = writeln!(s, "{:<16} affinity client_ip, {t}s", "");
        }
    }
    s
}

/// `netpath service list -o json`.
pub fn services_json(views: &[FrontendView]) -> String {
    let mut s =
        serde_json::to_string_pretty(&by_name(views)).expect("views are representable in JSON");
    s.push('\n');
    s
}

/// `netpath service maglev NAME`: the slots each backend owns in the
/// service's Maglev table, and with `slots` the raw table (slot → index).
pub fn maglev(view: &FrontendView, counts: &BTreeMap<u32, usize>, slots: Option<&[u32]>) -> String {
    let total: usize = counts.values().sum();
    let mut s = format!(
        "service {} {}: Maglev table of {total} slots (generation {})\n",
        view.service.as_deref().unwrap_or("?"),
        view.frontend(),
        view.maglev_generation
    );
    let _ = writeln!(
        s,
        "{:>5}  {:<21}  {:<16} {:>6} {:>7}",
        "INDEX", "BACKEND", "TARGET", "SLOTS", "SHARE"
    );
    for (index, count) in counts {
        let b = view.backends.iter().find(|b| b.index == *index);
        let (addr, target) = b.map_or_else(
            || ("(no backend entry)".to_owned(), String::new()),
            |b| (b.address.to_string(), b.target.clone()),
        );
        #[expect(
            clippy::cast_precision_loss,
            reason = "a share of at most 131,071 slots, printed to one decimal"
        )]
        let share = if total == 0 {
            0.0
        } else {
            *count as f64 * 100.0 / total as f64
        };
        let _ = writeln!(
            s,
            "{index:>5}  {addr:<21}  {target:<16} {count:>6} {share:>6.1}%"
        );
    }
    if let Some(slots) = slots {
        let _ = writeln!(s, "{:>5}  INDEX", "SLOT");
        for (slot, index) in slots.iter().enumerate() {
            let _ = writeln!(s, "{slot:>5}  {index}");
        }
    }
    s
}

/// `netpath port-forward list`: one line per node address a forward
/// listens on.
pub fn port_forwards(views: &[FrontendView]) -> String {
    let mut s = format!(
        "{:<5}  {:<21}    {:<21}  {:<16} {:>5}\n",
        "PROTO", "NODE ADDRESS", "DESTINATION", "TARGET", "FLOWS"
    );
    for v in views.iter().filter(|v| v.port_forward) {
        let node = format!("{}:{}", v.address, v.port);
        let (dest, target, flows) = v.backends.first().map_or_else(
            || ("(none)".to_owned(), String::new(), 0),
            |b| (b.address.to_string(), b.target.clone(), b.flows),
        );
        let _ = writeln!(
            s,
            "{:<5}  {node:<21} →  {dest:<21}  {target:<16} {flows:>5}",
            v.proto
        );
    }
    s
}
