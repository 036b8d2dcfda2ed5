//! Running one verb.

use anyhow::{Context as _, Result};

use super::{
    Command, apply, conntrack_verb, masquerade_verb, pod_verb, port_forward_verb, route_verb,
    service_verb, stats, status, validate,
};
use crate::{
    daemon,
    datapath::{NodeMaps, PinDir, pinned_logger},
    demo, reconcile, render,
};

/// Runs `command`, printing what it prints.
pub async fn run(command: Command) -> Result<()> {
    let out = match command {
        Command::Apply { file } => apply(&file).await?,
        Command::Validate { file } => validate(&file)?,
        Command::Destroy { instance } => {
            let removed = reconcile::destroy(&instance).await?;
            render::destroyed(&instance, &removed)
        }
        Command::Status(t) => status(&t)?,
        Command::Pod { command } => pod_verb(command)?,
        Command::Node { command } => super::node::node_verb(command)?,
        Command::Route { command } => route_verb(command)?,
        Command::Masquerade { command } => masquerade_verb(command)?,
        Command::PortForward { command } => port_forward_verb(command)?,
        Command::Service { command } => service_verb(command)?,
        Command::Conntrack { command } => conntrack_verb(command)?,
        Command::Stats(t) => stats(&t)?,
        Command::Endpoints(i) => {
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&i.resolve()?))?;
            render::endpoints(&maps.endpoints()?)
        }
        Command::Routes(i) => {
            let instance = i.resolve()?;
            let maps = NodeMaps::open_pinned(&PinDir::for_instance(&instance))?;
            render::routes(&render::RouteMaps {
                routes: maps.routes()?,
                masq: maps.masq()?,
                settings: maps.settings()?,
                names: reconcile::interface_names(&instance)
                    .await
                    .unwrap_or_default(),
            })
        }
        Command::Logs(i) => {
            follow_logs(&i.resolve()?).await?;
            String::new()
        }
        Command::Daemon {
            config,
            cleanup,
            instance,
        } => {
            if cleanup {
                let instance = instance.expect("clap requires --instance with --cleanup");
                let removed = daemon::cleanup(&instance).await?;
                render::destroyed(&instance, &removed)
            } else {
                let config = config.expect("clap requires --config without --cleanup");
                let events = daemon::signal_events()?;
                daemon::run(&config, events).await?;
                String::new()
            }
        }
        Command::Demo {
            once, nodes: None, ..
        } => {
            run_demo(once).await?;
            String::new()
        }
        Command::Demo {
            once,
            nodes: Some(n),
            overlay,
            name,
        } => {
            run_nodes_demo(&name, n, overlay.unwrap_or_default(), once).await?;
            String::new()
        }
        Command::DemoConfig => crate::config::Config::demo().to_toml_string(),
        Command::Top(t) => {
            crate::metrics::top::run(&t.instance.resolve()?, t.interval, t.once, t.iterations)
                .await?;
            String::new()
        }
        Command::Monitor(args) => {
            super::monitor::run(args).await?;
            String::new()
        }
    };
    say(out.trim_end_matches('\n'));
    Ok(())
}

/// `netpath demo`: the lab, the pods, the responders, then a daemon for
/// the instance until Ctrl-C, then the cleanup.
async fn run_demo(once: bool) -> Result<()> {
    // Ctrl-C is ours from the start (not the default, which would kill us
    // half-built or before the cleanup): one that arrives while the demo
    // is built stops it right after.
    let events = daemon::signal_events()?;
    let (lab, config) = demo::lab_and_config();
    let report = demo::up(&lab, &config).await?;
    let responders = match demo::serve(&lab, &config, &report).await {
        Ok(r) => r,
        Err(e) => {
            demo::clean(&lab, &config).await?;
            return Err(e.into());
        }
    };
    say(&render::demo(&lab, &config, &report));
    let served = if once {
        Ok(())
    } else {
        // The daemon of the demo's instance: `netpath pod add web
        // --instance demo` adds a pod to it.
        daemon::serve_node(config.clone(), None, events).await
    };
    // `cargo xtask run | tee log` and Ctrl-C: tee is gone before we are,
    // so nothing on the way to the cleanup may need stdout.
    say("removing the demo ...");
    drop(responders);
    demo::clean(&lab, &config).await?;
    served?;
    say("done: no namespace, link or pin of the demo is left.");
    Ok(())
}

/// `netpath demo --nodes N`: the LAN, the nodes and their pods, the pods'
/// HTTP responders, then a daemon per node (all in this process) until
/// Ctrl-C, then the cleanup.
async fn run_nodes_demo(
    prefix: &str,
    n: u8,
    mode: crate::config::cluster::ClusterMode,
    once: bool,
) -> Result<()> {
    let events = daemon::signal_events()?;
    let plan = demo::nodes::NodesDemo::new(prefix, n, mode)?;
    let reports = plan.up().await?;
    let responders = match demo::http::Responders::start(&plan.pods(), demo::http::HTTP_PORT) {
        Ok(r) => r,
        Err(e) => {
            plan.clean().await?;
            return Err(e.into());
        }
    };
    say(&render::demo_nodes(&plan, &reports));
    let served = if once {
        Ok(())
    } else {
        serve_nodes(&plan, events).await
    };
    say("removing the demo ...");
    drop(responders);
    plan.clean().await?;
    served?;
    say("done: no namespace, link or pin of the demo is left.");
    Ok(())
}

/// One daemon per node of the demo, each with its own copy of the signals
/// (Ctrl-C stops them all); the first that fails stops the others.
async fn serve_nodes(
    plan: &demo::nodes::NodesDemo,
    mut events: tokio::sync::mpsc::Receiver<daemon::Event>,
) -> Result<()> {
    let mut senders = Vec::new();
    let mut daemons = Vec::new();
    for node in &plan.nodes {
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        senders.push(tx);
        daemons.push(daemon::serve_node(node.config.clone(), None, rx));
    }
    let fan_out = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            for tx in &senders {
                let _ = tx.send(event).await;
            }
            if event == daemon::Event::Stop {
                break;
            }
        }
    });
    let res = futures::future::try_join_all(daemons).await;
    fan_out.abort();
    res?;
    Ok(())
}

/// Prints `text` and a newline to stdout, ignoring a closed or broken
/// stdout (`println!` panics on EPIPE, which would skip what follows, such
/// as the demo's cleanup). Nothing for empty text.
fn say(text: &str) {
    use std::io::Write as _;
    if text.is_empty() {
        return;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}").and_then(|()| out.flush());
}

/// `netpath logs`: prints what the pinned programs log until Ctrl-C.
async fn follow_logs(instance: &str) -> Result<()> {
    use tokio::io::{Interest, unix::AsyncFd};
    let logger = pinned_logger(&PinDir::for_instance(instance))?;
    // SAFETY: the logger owns the ring buffer's fd, which therefore
    // stays open for as long as the AsyncFd that holds the logger.
    let mut fd = unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("cannot poll the log buffer: {e}"))?;
    loop {
        tokio::select! {
            guard = fd.readable_mut() => {
                let mut guard = guard.context("cannot poll the log buffer")?;
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}
