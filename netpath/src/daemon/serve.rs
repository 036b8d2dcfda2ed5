//! The API socket: binding it root-only, reading one request per
//! connection, answering it.

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use log::{debug, warn};
use serde::Serialize;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{Daemon, DaemonError, desired_file, edit};
use crate::{
    api::{ApiError, Changed, ErrorKind, PodInfo, Request, Response, Status, socket_path},
    conntrack,
    datapath::{NodeMaps, PinDir},
    reconcile::inspect::{PodReport, inspect_pods},
    resolve::DesiredNode,
};

/// The longest request line read (a whole configuration fits many times).
const MAX_REQUEST: u64 = 4 << 20;

/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds the API socket at `path`, mode `0600`. A socket file left by a
/// daemon that was killed is replaced (the caller holds the instance's
/// daemon lock, so no live daemon listens on it).
pub(super) fn bind(path: &Path) -> Result<UnixListener, DaemonError> {
    let io = |what, source| DaemonError::Io {
        what,
        path: path.to_path_buf(),
        source,
    };
    match fs::remove_file(path) {
        Ok(()) => debug!("daemon: replaced a stale {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("remove the stale socket", e)),
    }
    let listener = UnixListener::bind(path).map_err(|e| io("listen on", e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .map_err(|e| io("restrict the permissions of", e))?;
    Ok(listener)
}

/// Serves one connection: one request, one reply. Errors are the client's
/// business (logged at debug); the daemon carries on.
pub(super) async fn connection(daemon: &Daemon, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let response = match read_request(read, &write).await {
        Ok(request) => {
            debug!("api: {request:?}");
            match daemon.answer(&request).await {
                Ok(value) => Response::Ok(value),
                Err(e) => Response::Error(e),
            }
        }
        Err(e) => Response::Error(e),
    };
    let mut line = serde_json::to_vec(&response).expect("a Response is always JSON");
    line.push(b'\n');
    if let Err(e) = write.write_all(&line).await {
        debug!("api: the client left before the reply: {e}");
    }
}

async fn read_request(
    read: tokio::net::unix::OwnedReadHalf,
    write: &tokio::net::unix::OwnedWriteHalf,
) -> Result<Request, ApiError> {
    let bad = |m: String| ApiError::new(ErrorKind::BadRequest, m);
    // The socket is 0600 and root's; check the peer all the same (a
    // socket file's mode is not honoured everywhere).
    match write.as_ref().peer_cred() {
        Ok(cred) if cred.uid() == 0 => {}
        Ok(cred) => {
            return Err(ApiError::new(
                ErrorKind::Invalid,
                format!(
                    "uid {} may not use netpath's API; run the command as root",
                    cred.uid()
                ),
            ));
        }
        Err(e) => return Err(bad(format!("cannot tell who is asking: {e}"))),
    }
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(bad(format!("cannot read the request: {e}"))),
        Err(_) => return Err(bad("no request within 10 s".into())),
    }
    serde_json::from_str(&line).map_err(|e| bad(format!("not a netpath API request: {e}")))
}

fn json(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("API replies are always JSON")
}

fn failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorKind::Failed, e.to_string())
}

impl Daemon {
    /// Answers one request.
    async fn answer(&self, request: &Request) -> Result<Value, ApiError> {
        match request {
            Request::Status => self.status().await.map(json),
            Request::Desired => Ok(json(self.desired())),
            Request::PodList => self.pods().await.map(json),
            Request::CniCheck {
                container_id,
                ifname,
            } => {
                let desired = self.desired();
                let pod = edit::attached(&desired, container_id, ifname).ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::NotFound,
                        format!("container {container_id} has no interface {ifname} here"),
                    )
                })?;
                let info = self.pod(&pod.name).await?;
                if info.0.healthy() {
                    Ok(json(info.1))
                } else {
                    Err(ApiError::new(
                        ErrorKind::Unhealthy,
                        format!(
                            "interface {ifname} of container {container_id} is not as built: {}",
                            info.0.problems.join("; ")
                        ),
                    ))
                }
            }
            Request::ConntrackFlush => {
                let _turn = self.changes.lock().await;
                let mut maps =
                    NodeMaps::open_pinned(&PinDir::for_instance(&self.instance)).map_err(failed)?;
                conntrack::flush(&mut maps).map(json).map_err(failed)
            }
            _ => {
                let (report, next) = self.change(request).await?;
                let added = match request {
                    Request::PodAdd { pod } => Some(pod.name.clone()),
                    Request::CniAdd { attachment } => {
                        edit::attached(&next, &attachment.container_id, &attachment.ifname)
                            .map(|p| p.name.clone())
                    }
                    _ => None,
                };
                let pod = match added {
                    Some(name) => Some(self.pod(&name).await?.1),
                    None => None,
                };
                Ok(json(Changed { report, pod }))
            }
        }
    }

    async fn status(&self) -> Result<Status, ApiError> {
        let desired = self.desired();
        let pods = self.pods().await?;
        let connections = NodeMaps::open_pinned(&PinDir::for_instance(&self.instance))
            .and_then(|m| m.conntrack())
            .map_or(0, |c| c.len());
        Ok(Status {
            instance: self.instance.clone(),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            config_file: self.config_file.clone(),
            desired_file: desired_file(&self.instance),
            socket: socket_path(&self.instance),
            pins: PinDir::for_instance(&self.instance).root().to_path_buf(),
            pods: desired.pods.len(),
            pods_healthy: pods.iter().filter(|p| p.healthy).count(),
            routes: desired.routes.len(),
            masquerade: desired.masquerade.len(),
            port_forwards: desired.port_forwards.len(),
            services: desired.services.len(),
            connections,
            programs_loaded_at_start: self.programs_loaded_at_start,
        })
    }

    /// Every built pod, checked.
    async fn pods(&self) -> Result<Vec<PodInfo>, ApiError> {
        let desired = self.desired();
        let node = DesiredNode::resolve(&desired);
        let reports = inspect_pods(&node).await.map_err(failed)?;
        Ok(reports
            .into_iter()
            .map(|r| pod_info(&desired, &node, r))
            .collect())
    }

    /// One built pod, checked.
    async fn pod(&self, name: &str) -> Result<(PodReport, PodInfo), ApiError> {
        let desired = self.desired();
        let node = DesiredNode::resolve(&desired);
        let report = inspect_pods(&node)
            .await
            .map_err(failed)?
            .into_iter()
            .find(|r| r.name == name)
            .ok_or_else(|| {
                warn!("api: pod {name} is desired but not built");
                ApiError::new(ErrorKind::NotFound, format!("pod '{name}' is not built"))
            })?;
        let info = pod_info(&desired, &node, report.clone());
        Ok((report, info))
    }
}

fn pod_info(desired: &crate::config::Config, node: &DesiredNode, r: PodReport) -> PodInfo {
    let container_id = desired
        .pods
        .iter()
        .find(|p| p.name == r.name)
        .and_then(|p| p.container_id.clone());
    PodInfo {
        healthy: r.healthy(),
        name: r.name,
        address: r.state.address,
        gateway: node.gateway,
        netns: r.state.netns.to_string(),
        host_ifname: r.state.host_ifname,
        ifname: r.state.ifname,
        mtu: r.state.mtu,
        mac: r.mac,
        host_mac: r.host_mac,
        container_id,
        dns: desired.node.dns.clone(),
    }
}
