//! The client side of the API: connect to an instance's socket, send one
//! request, read its reply.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::PathBuf,
    time::Duration,
};

use serde::de::DeserializeOwned;

use super::{ApiError, Request, Response, socket_path};

/// How long a client waits for a reply: an apply that creates many pods
/// takes seconds, never minutes.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a request got no answer, or a refusal.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the instance's socket.
    #[error(
        "no netpath daemon serves instance '{instance}' (nothing listens on {}); start one with \
         `netpath daemon --config FILE` (or `systemctl start netpath`), or pick another \
         instance with --instance",
        socket.display()
    )]
    NotRunning {
        instance: String,
        socket: PathBuf,
        source: io::Error,
    },
    /// The socket exists but this process may not use it.
    #[error(
        "cannot talk to the daemon of instance '{instance}' at {}: {source}; the API is \
         root's only: run as root (or with sudo)",
        socket.display()
    )]
    Denied {
        instance: String,
        socket: PathBuf,
        source: io::Error,
    },
    /// The connection broke or the reply did not parse.
    #[error("the daemon of instance '{instance}' did not answer properly: {why}")]
    Protocol { instance: String, why: String },
    /// The daemon refused or failed the request (and changed nothing).
    #[error(transparent)]
    Refused(#[from] ApiError),
}

impl ClientError {
    /// Whether the daemon is not running (the CNI plugin answers "try
    /// again later", code 11).
    pub fn is_not_running(&self) -> bool {
        matches!(self, Self::NotRunning { .. })
    }
}

/// A connection to one instance's daemon.
#[derive(Debug, Clone)]
pub struct Client {
    instance: String,
    socket: PathBuf,
}

impl Client {
    /// The client of `instance` (nothing is opened until a request).
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
            socket: socket_path(instance),
        }
    }

    /// The instance this client talks to.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Sends `request` and returns the daemon's `ok` value, decoded.
    pub fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T, ClientError> {
        let value = self.call_value(request)?;
        serde_json::from_value(value).map_err(|e| self.protocol(format!("unexpected reply: {e}")))
    }

    /// Sends `request` and returns the daemon's `ok` value as JSON.
    pub fn call_value(&self, request: &Request) -> Result<serde_json::Value, ClientError> {
        let mut stream = UnixStream::connect(&self.socket).map_err(|source| {
            if source.kind() == io::ErrorKind::PermissionDenied {
                ClientError::Denied {
                    instance: self.instance.clone(),
                    socket: self.socket.clone(),
                    source,
                }
            } else {
                ClientError::NotRunning {
                    instance: self.instance.clone(),
                    socket: self.socket.clone(),
                    source,
                }
            }
        })?;
        stream
            .set_read_timeout(Some(REPLY_TIMEOUT))
            .map_err(|e| self.protocol(e.to_string()))?;
        let mut line = serde_json::to_vec(request).expect("a Request is always JSON");
        line.push(b'\n');
        stream
            .write_all(&line)
            .and_then(|()| stream.flush())
            .map_err(|e| self.protocol(format!("cannot send the request: {e}")))?;
        let mut reply = String::new();
        BufReader::new(&stream)
            .read_line(&mut reply)
            .map_err(|e| self.protocol(format!("cannot read the reply: {e}")))?;
        if reply.is_empty() {
            return Err(self.protocol("it closed the connection without a reply".into()));
        }
        match serde_json::from_str(&reply)
            .map_err(|e| self.protocol(format!("the reply is not JSON: {e}")))?
        {
            Response::Ok(value) => Ok(value),
            Response::Error(e) => Err(ClientError::Refused(e)),
        }
    }

    fn protocol(&self, why: String) -> ClientError {
        ClientError::Protocol {
            instance: self.instance.clone(),
            why,
        }
    }
}
