//! DNS for the pods whose namespace netpath owns, as the classic recipe
//! does it by hand: `ip netns exec NETNS CMD` bind-mounts every file of
//! `/etc/netns/NETNS/` over `/etc/`, so a namespace gets its own
//! `resolv.conf` and `hosts` by having them there.
//!
//! With `[node.dns]`, each such pod gets (through [`crate::sys::etc_netns`],
//! each file written atomically and marked as netpath's):
//!
//! ```text
//! /etc/netns/<netns>/resolv.conf   nameserver X (each), search A B, options O1 O2
//! /etc/netns/<netns>/hosts         127.0.0.1 localhost
//!                                  ::1 localhost ip6-localhost ip6-loopback
//!                                  <pod address> <pod name>
//! ```
//!
//! When: a pod's files are written when it is created
//! ([`super::pod::create_pod`], with an undo) and removed when it is
//! deleted ([`super::pod::delete_pod`]: netpath's files only, then the
//! directory if empty). At every apply, [`plan_dns`] compares the files of
//! every pod that stays with what `[node.dns]` says now and
//! [`execute_dns`] rewrites those that differ (or removes netpath's files
//! when `[node.dns]` is gone), so a DNS change reaches running pods without
//! recreating them. Pods in a namespace netpath was given (CNI) get nothing:
//! their runtime writes their `resolv.conf` from the CNI result.
//!
//! `ip netns exec` binds the files when it starts its command: a process
//! already running keeps the files it started with.

use std::{fmt::Write as _, net::Ipv4Addr};

use log::info;

use super::{
    error::{PlanError, StepError},
    plan::PodPlan,
    undo::Undo,
};
use crate::{
    config::DnsConfig,
    resolve::{DesiredNode, PodNetns},
    state::{NodeState, PodState},
    sys::etc_netns::{EtcFiles, EtcNetns, MARKER, Snapshot},
};

/// The `resolv.conf` lines `dns` asks for (without netpath's marker line):
/// one `nameserver` line per server, then `search` and `options` if any.
pub fn render_resolv_conf(dns: &DnsConfig) -> String {
    let mut s = String::new();
    for ns in &dns.nameservers {
        let _ = writeln!(s, "nameserver {ns}");
    }
    if !dns.search.is_empty() {
        let _ = writeln!(s, "search {}", dns.search.join(" "));
    }
    if !dns.options.is_empty() {
        let _ = writeln!(s, "options {}", dns.options.join(" "));
    }
    s
}

/// The `hosts` lines of pod `pod` at `address` (without netpath's marker
/// line): loopback for IPv4 and IPv6, and the pod's own name.
pub fn render_hosts(pod: &str, address: Ipv4Addr) -> String {
    format!("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n{address} {pod}\n")
}

/// The first line of both files: netpath's marker, and for whom.
fn header(instance: &str, pod: &str) -> String {
    format!(
        "{MARKER} for pod {pod} of instance {instance} from [node.dns]; it rewrites it at \
         every apply and removes it with the pod\n"
    )
}

/// The files pod `name` (built as `pod`) should have: `None` without
/// `[node.dns]` or when netpath does not own the pod's namespace.
pub fn pod_files(desired: &DesiredNode, name: &str, pod: &PodState) -> Option<EtcFiles> {
    let dns = desired.dns.as_ref()?;
    if !pod.netns.is_owned() {
        return None;
    }
    let header = header(&desired.instance, name);
    Some(EtcFiles {
        resolv_conf: format!("{header}{}", render_resolv_conf(dns)),
        hosts: format!("{header}{}", render_hosts(name, pod.address)),
    })
}

/// One pod that stays whose files differ from what they should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsStep {
    /// The pod.
    pub pod: String,
    /// Its namespace (one netpath owns).
    pub netns: String,
    /// What to write; `None`: remove netpath's files (no `[node.dns]`).
    pub files: Option<EtcFiles>,
}

/// The files to rewrite (or remove) for the pods that stay, with one report
/// line each; and, for the pods to be created, a check that no file in the
/// way is someone else's (found before anything changes).
pub fn plan_dns(
    desired: &DesiredNode,
    state: &NodeState,
    pods: &PodPlan,
) -> Result<(Vec<DnsStep>, Vec<String>), PlanError> {
    let mut steps = Vec::new();
    let mut lines = Vec::new();
    for (name, want) in &pods.create {
        if let PodNetns::Owned(netns) = &want.netns
            && pod_files(desired, name, want).is_some()
        {
            let etc = EtcNetns::new(netns)?;
            check_not_foreign(&etc, &etc.read()?, name)?;
        }
    }
    for name in &pods.unchanged {
        let Some(have) = state.pods.get(name) else {
            continue;
        };
        let PodNetns::Owned(netns) = &have.netns else {
            continue;
        };
        let etc = EtcNetns::new(netns)?;
        let found = etc.read()?;
        let files = pod_files(desired, name, have);
        let what = match &files {
            Some(files) => {
                check_not_foreign(&etc, &found, name)?;
                if found.holds(files) {
                    continue;
                }
                "rewritten"
            }
            None if found.any_ours() => "removed (no [node.dns])",
            None => continue,
        };
        lines.push(format!(
            "pod {name}: {} resolv.conf and hosts {what}",
            etc.dir().display()
        ));
        steps.push(DnsStep {
            pod: name.clone(),
            netns: netns.clone(),
            files,
        });
    }
    Ok((steps, lines))
}

/// [`PlanError::EtcFileTaken`] if a file of `etc`, as `found`, is someone
/// else's.
fn check_not_foreign(etc: &EtcNetns, found: &Snapshot, pod: &str) -> Result<(), PlanError> {
    match found.foreign() {
        Some(file) => Err(PlanError::EtcFileTaken {
            path: etc.dir().join(file),
            pod: pod.to_owned(),
        }),
        None => Ok(()),
    }
}

/// Writes `files` to namespace `netns`'s directory, or removes netpath's
/// files there when `None`; pushes the undo (the files as they were).
pub fn write_pod_files(
    netns: &str,
    files: Option<&EtcFiles>,
    undo: &mut Vec<Undo>,
) -> Result<(), StepError> {
    let etc = EtcNetns::new(netns)?;
    let snapshot = etc.read()?;
    undo.push(Undo::RestoreEtcNetns {
        netns: netns.to_owned(),
        snapshot,
    });
    match files {
        Some(files) => etc.write(files)?,
        None => {
            etc.remove_ours()?;
        }
    }
    Ok(())
}

/// Carries out [`plan_dns`]'s steps, each with its undo.
pub fn execute_dns(steps: &[DnsStep], undo: &mut Vec<Undo>) -> Result<(), StepError> {
    for step in steps {
        info!("pod {}: updating /etc/netns/{}", step.pod, step.netns);
        write_pod_files(&step.netns, step.files.as_ref(), undo)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn dns() -> DnsConfig {
        DnsConfig {
            nameservers: vec![Ipv4Addr::new(192, 168, 50, 1), Ipv4Addr::new(1, 1, 1, 1)],
            search: vec!["cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "timeout:2".into()],
        }
    }

    #[test]
    fn resolv_conf_has_one_line_per_kind() {
        assert_eq!(
            render_resolv_conf(&dns()),
            "nameserver 192.168.50.1\n\
             nameserver 1.1.1.1\n\
             search cluster.local svc.cluster.local\n\
             options ndots:5 timeout:2\n"
        );
        let bare = DnsConfig {
            nameservers: vec![Ipv4Addr::new(10, 0, 0, 53)],
            ..DnsConfig::default()
        };
        assert_eq!(render_resolv_conf(&bare), "nameserver 10.0.0.53\n");
    }

    #[test]
    fn hosts_name_loopback_and_the_pod() {
        assert_eq!(
            render_hosts("red", Ipv4Addr::new(10, 200, 0, 2)),
            "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n10.200.0.2 red\n"
        );
    }

    #[test]
    fn only_owned_pods_with_node_dns_get_files() {
        let mut config = Config::demo_without_lb();
        let mut desired = DesiredNode::resolve(&config);
        let pod = PodState::new(&desired.pods[0], Ipv4Addr::new(10, 200, 0, 2), 1500);
        assert_eq!(pod_files(&desired, "red", &pod), None);

        config.node.dns = Some(dns());
        desired = DesiredNode::resolve(&config);
        let files = pod_files(&desired, "red", &pod).unwrap();
        let first = "# netpath wrote this file for pod red of instance demo";
        assert!(
            files.resolv_conf.starts_with(first),
            "{}",
            files.resolv_conf
        );
        assert!(files.hosts.starts_with(first), "{}", files.hosts);
        assert!(files.resolv_conf.ends_with(&render_resolv_conf(&dns())));
        assert!(files.hosts.ends_with("10.200.0.2 red\n"), "{}", files.hosts);
        assert_eq!(files.resolv_conf.lines().count(), 5);

        let given = PodState {
            netns: PodNetns::Given {
                path: "/var/run/netns/cni-1".into(),
            },
            ..pod
        };
        assert_eq!(pod_files(&desired, "red", &given), None);
    }
}
