//! `netpath-cni`: the CNI plugin (spec 0.3.0 to 1.1.0) a container runtime
//! runs to attach a container to a netpath node. The plugin holds no state
//! and touches no kernel object itself: it turns each command into a
//! request to the node's daemon ([`crate::api`]), which builds, checks and
//! removes the pod as it does for every other pod.
//!
//! | command | request | success |
//! |---|---|---|
//! | `ADD` | [`Request::CniAdd`] (`CNI_NETNS`, `CNI_IFNAME`, a fixed address from `runtimeConfig.ips`, `args.cni.ips` or `IP=` in `CNI_ARGS`) | the [result](result) |
//! | `DEL` | [`Request::CniDel`] (no namespace needed; a gone attachment is fine) | nothing |
//! | `CHECK` (0.4.0+) | [`Request::CniCheck`], then the pod against `prevResult` | nothing |
//! | `STATUS` (1.1.0) | [`Request::Status`] | nothing; code 50 when no daemon answers |
//! | `GC` (1.1.0) | [`Request::CniGc`] with `cni.dev/valid-attachments` | nothing |
//! | `VERSION` | — | the supported versions |
//!
//! A failure is printed as the spec's [error JSON](CniError::to_json), in
//! the configuration's `cniVersion`. A daemon that is not running is code
//! 11 (try again later) for `ADD`, `DEL`, `CHECK` and `GC`: the plugin
//! cannot tell whether an attachment is gone without it.
//!
//! [`run`] is the whole plugin, minus reading the process's stdin and
//! environment (the binary, `src/bin/netpath-cni.rs`, does that).

use serde::de::DeserializeOwned;
use serde_json::json;

pub mod conf;
pub mod env;
pub mod error;
pub mod result;
pub mod version;

pub use conf::{Dns, NetConf};
pub use env::{Command, Env};
pub use error::{CniError, Code};
pub use result::CniResult;
pub use version::Version;

use crate::api::{
    ApiError, Changed, Client, ClientError, CniAttachment, ErrorKind, PodInfo, Request,
};

/// Runs one CNI command: `env` as the runtime set it, `stdin` the
/// configuration it wrote. Returns what to print on stdout (empty: print
/// nothing) and exit 0, or the error to print and exit non-zero with.
pub fn run(env: &Env, stdin: &[u8]) -> Result<String, CniError> {
    let command = env.command()?;
    if command == Command::Version {
        return version(stdin);
    }
    let conf = conf::parse(stdin)?;
    let v = conf.cni_version;
    v.allows(command)?;
    let client = Client::new(&conf.instance);
    match command {
        Command::Add => add(&client, env, &conf),
        Command::Del => del(&client, env),
        Command::Check => check(&client, env, &conf),
        Command::Status => status(&client),
        Command::Gc => gc(&client, env, &conf),
        Command::Version => unreachable!("answered above"),
    }
    .map_err(|e| e.in_version(v))
}

/// `VERSION`: the requested version (or the newest) and every supported
/// one.
fn version(stdin: &[u8]) -> Result<String, CniError> {
    let requested = conf::requested_version(stdin)?;
    let out = json!({
        "cniVersion": requested.as_deref().unwrap_or(Version::LATEST.as_str()),
        "supportedVersions": Version::supported(),
    });
    Ok(serde_json::to_string_pretty(&out).expect("JSON"))
}

fn add(client: &Client, env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let att = env.attachment(Command::Add)?;
    let sandbox = env.netns.clone().expect("ADD has CNI_NETNS (checked)");
    // The conventions: `args` (and the capability) win over CNI_ARGS.
    let address = conf.ip.or(att.ip);
    let request = Request::CniAdd {
        attachment: CniAttachment {
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
            netns: att.netns.clone().expect("checked"),
            address,
        },
    };
    let changed: Changed = call(client, &request)?;
    let pod = changed.pod.ok_or_else(|| {
        CniError::new(
            Code::DaemonUnusable,
            format!(
                "the daemon of instance '{}' accepted ADD of container {} but named no pod in \
                 its reply; check `netpath pod list --instance {}`",
                conf.instance, att.container_id, conf.instance
            ),
        )
    })?;
    if let Some(want) = address
        && pod.address != want
    {
        return Err(CniError::new(
            Code::Refused,
            format!(
                "interface {} of container {} has {} already, not the requested {want}; DEL it \
                 first to change its address",
                att.ifname, att.container_id, pod.address
            ),
        ));
    }
    // The network's `dns`, else the node's: the runtime writes the
    // container's resolv.conf from it.
    let dns = conf.dns.clone().or_else(|| pod.dns.as_ref().map(Dns::from));
    let result = CniResult::for_pod(&pod, &sandbox, dns);
    Ok(match &conf.prev_result {
        Some(prev) => result.merged_json(conf.cni_version, prev),
        None => result.to_json(conf.cni_version),
    })
}

fn del(client: &Client, env: &Env) -> Result<String, CniError> {
    let att = env.attachment(Command::Del)?;
    client
        .call_value(&Request::CniDel {
            container_id: att.container_id,
            ifname: att.ifname,
        })
        .map_err(daemon_error)?;
    Ok(String::new())
}

fn check(client: &Client, env: &Env, conf: &NetConf) -> Result<String, CniError> {
    let att = env.attachment(Command::Check)?;
    let sandbox = env.netns.clone().expect("CHECK has CNI_NETNS (checked)");
    let prev = conf.prev_result.as_ref().ok_or_else(|| {
        CniError::config(
            "prevResult",
            "is missing; CHECK compares the attachment with the result of its ADD, which the \
             runtime passes as prevResult",
        )
    })?;
    let pod: PodInfo = call(
        client,
        &Request::CniCheck {
            container_id: att.container_id.clone(),
            ifname: att.ifname.clone(),
        },
    )?;
    let unhealthy = |details: String| CniError::new(Code::Unhealthy, details);
    if pod.netns != sandbox {
        return Err(unhealthy(format!(
            "interface {} of container {} is in {}, but CNI_NETNS is {sandbox}",
            att.ifname, att.container_id, pod.netns
        )));
    }
    let Some(listed) = conf::prev_addresses(prev, &att.ifname, &sandbox)? else {
        return Err(unhealthy(format!(
            "prevResult lists no interface {} in {sandbox}, which netpath-cni made there",
            att.ifname
        )));
    };
    let ours = |s: &String| env::parse_ip(s).ok() == Some(pod.address);
    if !listed.iter().any(ours) {
        return Err(unhealthy(format!(
            "prevResult gives {} [{}], but the pod has {}/32",
            att.ifname,
            listed.join(", "),
            pod.address
        )));
    }
    // Other addresses on the interface may be a later plugin's in the
    // chain (the spec lets them change the result): not ours to judge.
    Ok(String::new())
}

fn status(client: &Client) -> Result<String, CniError> {
    match client.call_value(&Request::Status) {
        Ok(_) => Ok(String::new()),
        // Pods keep their connectivity without the daemon (the datapath
        // is pinned): 50, not 51.
        Err(ClientError::NotRunning {
            instance, socket, ..
        }) => Err(CniError::new(
            Code::NotAvailable,
            not_running(&instance, &socket),
        )),
        Err(e) => Err(CniError::new(Code::NotAvailable, e.to_string())),
    }
}

fn gc(client: &Client, env: &Env, conf: &NetConf) -> Result<String, CniError> {
    env.require_path(Command::Gc)?;
    let valid = conf.valid_attachments.clone().ok_or_else(|| {
        CniError::config(
            "cni.dev/valid-attachments",
            "is missing; GC removes every attachment not in it, so netpath-cni refuses to guess",
        )
    })?;
    client
        .call_value(&Request::CniGc { valid })
        .map_err(daemon_error)?;
    Ok(String::new())
}

/// Sends `request` and decodes the reply.
fn call<T: DeserializeOwned>(client: &Client, request: &Request) -> Result<T, CniError> {
    client.call(request).map_err(daemon_error)
}

/// What to do when no daemon serves the configuration's instance.
fn not_running(instance: &str, socket: &std::path::Path) -> String {
    format!(
        "no netpath daemon serves instance '{instance}' (nothing listens on {}); start it \
         (`netpath daemon --config FILE`, or `systemctl start netpath`), or fix \"instance\" in \
         the network configuration",
        socket.display()
    )
}

/// The CNI error of a request that got no answer, or a refusal.
fn daemon_error(e: ClientError) -> CniError {
    match e {
        ClientError::NotRunning {
            instance, socket, ..
        } => CniError::new(Code::TryAgainLater, not_running(&instance, &socket)),
        ClientError::Denied { .. } | ClientError::Protocol { .. } => {
            CniError::new(Code::DaemonUnusable, e.to_string())
        }
        ClientError::Refused(ApiError { kind, message }) => {
            let code = match kind {
                ErrorKind::Failed => Code::ApplyFailed,
                ErrorKind::Unhealthy => Code::Unhealthy,
                ErrorKind::Invalid
                | ErrorKind::NotFound
                | ErrorKind::Exists
                | ErrorKind::BadRequest => Code::Refused,
            };
            CniError::new(code, message)
        }
    }
}

#[cfg(test)]
mod tests;
