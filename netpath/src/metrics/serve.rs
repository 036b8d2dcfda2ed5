//! `GET /metrics` over HTTP/1.1: a small responder on the daemon's tokio
//! runtime. One request per connection (`Connection: close`), headers up
//! to 8 KiB read within 5 s; each scrape is collected on a blocking thread
//! (map reads are syscalls). Anything but `GET`/`HEAD` is 405, any other
//! path 404.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
};

use super::{DaemonMetrics, collect};

/// The content type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const MAX_HEADER: usize = 8192;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot serve metrics on {addr}: {source}; pick a free address with [node.metrics] \
     listen = \"ADDRESS:PORT\", or listen = \"\" to turn the endpoint off"
)]
pub struct ServeError {
    pub addr: SocketAddr,
    pub source: std::io::Error,
}

/// Binds `addr` and serves the metrics of `instance` until the runtime
/// stops. Must be called inside a tokio runtime.
pub async fn spawn(
    addr: SocketAddr,
    instance: String,
    daemon: Arc<DaemonMetrics>,
) -> Result<SocketAddr, ServeError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| ServeError { addr, source })?;
    let instance: Arc<str> = instance.into();
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let (instance, daemon) = (Arc::clone(&instance), Arc::clone(&daemon));
                    tokio::spawn(async move {
                        if let Err(e) = answer(stream, &instance, daemon).await {
                            log::debug!("metrics: a request failed: {e}");
                        }
                    });
                }
                Err(e) => {
                    log::warn!("metrics: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    Ok(local)
}

/// The request line of a request whose headers are in `head`.
fn request_line(head: &[u8]) -> Option<(&str, &str)> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    parts
        .next()?
        .starts_with("HTTP/1.")
        .then_some((method, target))
}

/// What to answer: status line, body (for `GET` a scrape when `scrape`).
fn route(method: &str, target: &str) -> (&'static str, Option<&'static str>) {
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => ("200 OK", None),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            Some("not found; the metrics are at /metrics\n"),
        ),
        _ => ("405 Method Not Allowed", Some("only GET /metrics\n")),
    }
}

async fn answer(
    mut stream: TcpStream,
    instance: &str,
    daemon: Arc<DaemonMetrics>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEADER {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(READ_TIMEOUT, read).await.is_err() {
        return Ok(());
    }
    let (status, body, head_only) = match request_line(&head) {
        None => ("400 Bad Request", "bad request\n".to_owned(), false),
        Some((method, target)) => match route(method, target) {
            (status, Some(body)) => (status, body.to_owned(), false),
            (status, None) => {
                let instance = instance.to_owned();
                let text =
                    tokio::task::spawn_blocking(move || collect::render(&instance, Some(&daemon)))
                        .await
                        .map_err(std::io::Error::other)?;
                (status, text, method == "HEAD")
            }
        },
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: {}\r\nConnection: \
         close\r\n\r\n",
        body.len()
    );
    stream.write_all(header.as_bytes()).await?;
    if !head_only {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_routed() {
        assert_eq!(
            request_line(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some(("GET", "/metrics"))
        );
        assert_eq!(request_line(b"garbage\r\n\r\n"), None);
        assert_eq!(route("GET", "/metrics?x=1").0, "200 OK");
        assert_eq!(route("GET", "/").0, "404 Not Found");
        assert_eq!(route("POST", "/metrics").0, "405 Method Not Allowed");
    }
}
