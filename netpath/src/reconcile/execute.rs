//! Carrying a [`Plan`] out: the steps in order, each pushing its undo; on
//! failure the steps taken are undone and the state file records exactly
//! what is left.

use log::{info, warn};
use netpath_common::NodeSettings;

use super::{
    dns::{execute_dns, pod_files},
    error::{ReconcileError, StepError},
    failpoint::failpoint,
    gateway::ensure_gateway,
    lb::execute_lb,
    node::{GATEWAY_IFNAME, NP0_FORWARDING, Node, configure_fast_paths},
    plan::Plan,
    pod::{create_pod, delete_pod},
    report::ApplyReport,
    undo::{Undo, rollback},
};
use crate::{
    datapath::{Datapath, LoadOptions, NodeMaps, remove_pin, sock::netns_cookie, xdp::XdpMode},
    resolve::DesiredNode,
    state::{NodeState, StateDir},
    sys::{netlink::NetlinkError, sysctl},
};

/// One apply in progress: the node, what it should be and the plan.
pub struct Apply<'a> {
    pub node: &'a Node,
    pub desired: &'a DesiredNode,
    pub plan: &'a Plan,
}

impl Apply<'_> {
    /// Runs the plan and records the outcome in `state_dir` (`state` is
    /// the recorded state, updated in place). A failure undoes this apply's
    /// steps and is returned as [`ReconcileError::RolledBack`].
    pub async fn run(
        &self,
        state_dir: &StateDir,
        state: &mut NodeState,
    ) -> Result<ApplyReport, ReconcileError> {
        let (node, desired, plan) = (self.node, self.desired, self.plan);
        let mut undo = Vec::new();
        match self.execute(state, &mut undo).await {
            Ok(_) if plan.only_lb() => {
                let mut report = plan.report.clone();
                state.frontends.clone_from(&plan.lb.records);
                state_dir.save(state)?;
                report.programs_loaded = false;
                Ok(report)
            }
            Ok(xdp) => {
                let mut report = plan.report.clone();
                state.frontends.clone_from(&plan.lb.records);
                report.programs_loaded = true;
                report.xdp = xdp;
                report.uplinks_attached = plan
                    .datapath
                    .uplinks
                    .iter()
                    .filter(|(name, index)| state.uplinks.get(*name) != Some(index))
                    .map(|(name, _)| name.clone())
                    .collect();
                report.uplinks_detached = state
                    .uplinks
                    .keys()
                    .filter(|name| !plan.datapath.uplinks.contains_key(*name))
                    .cloned()
                    .collect();
                state.uplinks.clone_from(&plan.datapath.uplinks);
                state.netns.clone_from(&desired.netns);
                state.gateway = Some(desired.gateway);
                state.object_hash = Some(plan.object_hash.clone());
                plan.leases.save(&state_dir.leases_file())?;
                state_dir.save(state)?;
                Ok(report)
            }
            Err(e) => {
                warn!(
                    "apply of instance {} failed: {e}; rolling back",
                    desired.instance
                );
                rollback(&node.netns, &node.pins, undo).await;
                // What this apply created is undone; what it deleted stays
                // deleted. Record exactly that, and free the gone pods' leases.
                for (name, _) in &plan.pods.create {
                    state.pods.remove(name);
                }
                let mut leases = plan.current_leases.clone();
                let gone: Vec<String> = leases
                    .leases()
                    .keys()
                    .filter(|p| !state.pods.contains_key(*p))
                    .cloned()
                    .collect();
                for pod in gone {
                    leases.release(&pod);
                }
                leases.save(&state_dir.leases_file())?;
                state_dir.save(state)?;
                Err(ReconcileError::RolledBack {
                    source: Box::new(e.into()),
                })
            }
        }
    }

    /// The steps: the `/etc/netns` files of pods that stay, then load the
    /// programs, the gateway, the uplink's address, the datapath's maps and
    /// links, then the pods, the frontends (right after the load when no
    /// pod is created), then XDP, the prefilter and the socket load
    /// balancer; returns the uplink's XDP mode. When only
    /// frontends (and files) change, just their steps.
    async fn execute(
        &self,
        state: &mut NodeState,
        undo: &mut Vec<Undo>,
    ) -> Result<Option<XdpMode>, StepError> {
        let (node, desired, plan) = (self.node, self.desired, self.plan);
        // The /etc/netns files of pods that stay: no program or map involved.
        execute_dns(&plan.dns, undo)?;
        if plan.only_lb() {
            // Only frontends change: the loaded programs and every other
            // map stay as they are.
            let mut maps = NodeMaps::open_pinned(&node.pins)?;
            execute_lb(&mut maps, &desired.instance, &plan.lb.steps, undo)?;
            return Ok(None);
        }
        let mut dp = Datapath::load(LoadOptions {
            pins: Some(node.pins.clone()),
            conntrack_max: desired.conntrack_max,
            ..LoadOptions::default()
        })?;
        // The frontends before any program of the new object is attached
        // when no pod is created here (a frontend may name a new pod as its
        // backend): on an upgrade whose load recreated the load balancer's
        // maps (a new layout), the new uplink programs then find every
        // frontend from their first packet, while the old ones still run
        // on the old maps.
        let lb_first = plan.pods.create.is_empty();
        if lb_first {
            execute_lb(dp.maps(), &desired.instance, &plan.lb.steps, undo)?;
        }

        if !plan.gateway_ok {
            ensure_gateway(node, desired.gateway, undo).await?;
        }
        if let Some(uplink) = &desired.uplink
            && let Some(addr) = uplink.address
        {
            // `ip addr add ADDR dev UPLINK` (idempotent) and `ip link set UPLINK up`
            node.nl.address_up(&uplink.name, addr).await?;
        }
        self.configure_datapath(&mut dp, state, undo).await?;

        for (name, have) in &plan.pods.delete {
            info!("pod {name}: deleting");
            delete_pod(Some(&node.nl), Some(dp.maps()), &node.pins, have).await?;
            state.pods.remove(name);
        }
        for (name, want) in &plan.pods.create {
            info!("pod {name}: creating {} in {}", want.address, want.netns);
            let etc = pod_files(desired, name, want);
            create_pod(node, &mut dp, desired.gateway, want, etc.as_ref(), undo).await?;
            state.pods.insert(name.clone(), want.clone());
        }
        // Frontends once their pods exist (see `lb::plan` for the order).
        if !lb_first {
            execute_lb(dp.maps(), &desired.instance, &plan.lb.steps, undo)?;
        }
        // Pods that stay get the freshly loaded program, atomically.
        for name in &plan.pods.unchanged {
            let pod = &state.pods[name];
            dp.attach_from_pod(&node.netns, &pod.host_ifname)?;
        }
        // Every endpoint has its per-pod counters, and only endpoints do.
        dp.maps().sync_pod_counters()?;
        let xdp = configure_fast_paths(node, &mut dp, desired, &state.pods)?;
        // A VXLAN device the cluster no longer uses (cannot be undone).
        let device = desired
            .cluster
            .as_ref()
            .map_or(crate::config::cluster::DEFAULT_VXLAN_DEVICE, |c| {
                c.device_name.as_str()
            });
        super::cluster::remove_stale_device(node, desired, device).await?;
        // Last, as a rollback could not re-attach it: interfaces no masquerade
        // rule and no declared route uses any more lose np_from_uplink.
        for name in state.uplinks.keys() {
            if !plan.datapath.uplinks.contains_key(name) {
                info!("np_from_uplink: detaching from {name}");
                dp.detach_ingress(name)?;
                dp.detach_egress(name)?;
                dp.detach_xdp_uplink(name)?;
            }
        }
        Ok(xdp)
    }

    /// Settings, routes, masquerade rules and the uplink links: what
    /// replaces `ip_forward`, `ip route` and `iptables -t nat`.
    async fn configure_datapath(
        &self,
        dp: &mut Datapath,
        state: &NodeState,
        undo: &mut Vec<Undo>,
    ) -> Result<(), StepError> {
        let (node, desired, plan) = (self.node, self.desired, &self.plan.datapath);
        let np0 =
            node.nl
                .link_by_name(GATEWAY_IFNAME)
                .await?
                .ok_or_else(|| NetlinkError::NotFound {
                    what: format!("{GATEWAY_IFNAME} after setting up the gateway"),
                })?;
        // sysctl -w net.ipv4.conf.np0.forwarding=1 (np0 only; see the module docs)
        sysctl::write_sysctl(&node.netns, NP0_FORWARDING, "1")?;

        let maps = dp.maps();
        undo.push(Undo::RestoreMaps {
            routes: maps.routes()?,
            masq: maps.masq()?,
            settings: maps.settings()?,
        });
        // With the node namespace's cookie: the socket hooks act there only.
        maps.set_settings(NodeSettings {
            netns_cookie: netns_cookie(&node.netns)?,
            ..desired.node_settings(np0.index)
        })?;
        maps.sync_routes(&plan.routes)?;
        maps.sync_masq(&plan.masq)?;
        super::cluster::configure_cluster(node, desired, dp, undo).await?;

        for (name, index) in &plan.uplinks {
            if state.uplinks.get(name) != Some(index) {
                // New, or the interface was recreated: a pinned link of the old
                // one would only get the new program, so start afresh.
                remove_pin(&node.pins.ingress_link(name))?;
                remove_pin(&node.pins.egress_link(name))?;
                undo.push(Undo::Unpin(name.clone()));
                info!("np_from_uplink: attaching to {name}");
            }
            dp.attach_from_uplink(&node.netns, name)?;
            dp.attach_to_uplink(&node.netns, name)?;
        }
        failpoint(&format!("configure-datapath:{}", desired.instance))
    }
}
