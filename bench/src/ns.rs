//! Namespaces the bench owns, code and commands run inside them, the stop
//! flag (Ctrl-C) and the cleanup guard.
//!
//! Safety rule: every namespace the bench enters, creates or deletes is named
//! `npb-<pid>-...` ([`Names`]); [`check_ours`] refuses anything else, so no
//! command, socket or iptables rule of the bench can land in the machine's
//! real namespace.

use std::{
    io::Read as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, anyhow, bail};
use netpath::{
    sys::netns::{Netns, NetnsError, panic_message},
    testing,
};

/// What every bench namespace name starts with.
pub const PREFIX: &str = "npb-";

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C (SIGINT) or SIGTERM arrived: every load loop checks it.
pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT and SIGTERM set the stop flag instead of killing the
/// process, so that the namespaces are removed before it exits. Child
/// processes (iperf3) get SIGINT from the terminal themselves.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Returns an error if a stop was requested.
pub fn check_stop() -> Result<()> {
    if stopped() {
        bail!("interrupted");
    }
    Ok(())
}

/// The names of one bench run: `npb-<pid>-<setup>-<role>`.
#[derive(Debug, Clone)]
pub struct Names {
    pub prefix: String,
}

impl Names {
    pub fn for_this_process() -> Self {
        Self {
            prefix: format!("{PREFIX}{}", std::process::id()),
        }
    }

    /// `npb-<pid>-<suffix>`.
    pub fn ns(&self, suffix: &str) -> String {
        format!("{}-{suffix}", self.prefix)
    }

    /// The netpath instance name (also `npb-<pid>`: `[a-z0-9-]`, short).
    pub fn instance(&self) -> String {
        self.prefix.clone()
    }
}

/// Refuses any namespace that is not the bench's own.
pub fn check_ours(ns: &str) -> Result<()> {
    if !ns.starts_with(PREFIX) || ns.len() <= PREFIX.len() {
        bail!("refusing to touch network namespace {ns:?}: not one of the bench's (npb-*)");
    }
    Ok(())
}

/// Runs a future to completion on a private runtime on another thread, so
/// sync code can drive netlink (each call gets its own connections).
pub use netpath::testing::block_on;

/// Runs `f` on a thread inside bench namespace `ns` and returns its result.
pub fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
    check_ours(ns)?;
    testing::in_netns(ns, f).with_context(|| format!("run inside namespace {ns}"))
}

/// A thread started by [`spawn_in_ns`]; [`join`] it.
pub type NsThread<T> = thread::JoinHandle<Result<T, NetnsError>>;

/// Spawns `f` on a new thread that enters bench namespace `ns` first.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<NsThread<T>> {
    check_ours(ns)?;
    testing::spawn_in_netns(ns, name, f).with_context(|| format!("start a thread in {ns}"))
}

/// Joins a thread from [`spawn_in_ns`], turning a panic into an error.
pub fn join<T>(h: NsThread<T>, what: &str) -> Result<T> {
    match h.join() {
        Ok(r) => r.with_context(|| format!("{what}: enter its namespace")),
        Err(p) => Err(anyhow!("{what} panicked: {}", panic_message(p.as_ref()))),
    }
}

/// Starts `cmd` inside bench namespace `ns` (forked from a thread that
/// entered it, so the child lives there), stdin closed.
pub fn spawn_command(ns: &str, cmd: &mut Command) -> Result<Child> {
    let shown = show(cmd);
    in_ns(ns, || cmd.stdin(Stdio::null()).spawn())?
        .with_context(|| format!("start `{shown}` in namespace {ns}"))
}

/// The output of a command that ran to completion or was killed.
#[derive(Debug)]
pub struct Output {
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

/// Waits for `child` (spawned with piped stdout/stderr) until `timeout`,
/// then kills it; collects its output.
pub fn wait_output(mut child: Child, timeout: Duration) -> Result<Output> {
    let reader = |r: Option<Box<dyn std::io::Read + Send>>| {
        thread::spawn(move || {
            let mut s = String::new();
            if let Some(mut r) = r {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                s = String::from_utf8_lossy(&buf).into_owned();
            }
            s
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().context("wait for a child process")? {
            break Some(st);
        }
        if Instant::now() >= deadline || stopped() {
            timed_out = !stopped();
            let _ = child.kill();
            break child.wait().ok();
        }
        thread::sleep(Duration::from_millis(20));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        timed_out,
    })
}

/// Runs `program args` inside bench namespace `ns` to completion (at most
/// `timeout`) and returns stdout; a failure quotes stderr.
pub fn run_command(ns: &str, program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let mut cmd = Command::new(program);
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    let shown = show(&cmd);
    let child = spawn_command(ns, &mut cmd)?;
    let out = wait_output(child, timeout)?;
    match out.status {
        Some(st) if st.success() => Ok(out.stdout),
        _ => bail!(
            "`{shown}` in namespace {ns} failed ({}): {}",
            if out.timed_out {
                "timed out".to_owned()
            } else {
                format!("{:?}", out.status)
            },
            out.stderr.trim()
        ),
    }
}

/// `program arg ...` for messages.
pub fn show(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes a sysctl under `/proc/sys/net` of bench namespace `ns`.
pub fn sysctl(ns: &str, key: &str, value: &str) -> Result<()> {
    check_ours(ns)?;
    let netns = Netns::open(ns)?;
    netpath::sys::sysctl::write_sysctl(&netns, key, value)
        .with_context(|| format!("sysctl net/{key}={value} in {ns}"))
}

/// Reads a sysctl under `/proc/sys/net` of bench namespace `ns`.
pub fn read_sysctl(ns: &str, key: &str) -> Result<String> {
    check_ours(ns)?;
    let netns = Netns::open(ns)?;
    netpath::sys::sysctl::read_sysctl(&netns, key)
        .with_context(|| format!("sysctl net/{key} in {ns}"))
}

/// Deletes the named bench namespaces (best effort).
pub async fn delete_all(names: &[String]) {
    for name in names {
        if check_ours(name).is_err() {
            continue;
        }
        if let Err(e) = Netns::delete(name).await {
            log::warn!("cannot delete namespace {name}: {e}");
        }
    }
}

/// Whether process `pid` exists.
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid in a bench name `npb-<pid>[-...]`.
fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes what an earlier bench run that died without cleaning up left:
/// namespaces `npb-<pid>-*` and netpath instances `npb-<pid>` whose process
/// is gone. Returns what it removed.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let me = std::process::id();
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| pid != me && !alive(pid));
    let instances: Vec<String> = std::fs::read_dir(netpath::datapath::PIN_ROOT)
        .into_iter()
        .flatten()
        .chain(
            std::fs::read_dir(netpath::state::STATE_ROOT)
                .into_iter()
                .flatten(),
        )
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| stale(n))
        .collect();
    let namespaces: Vec<String> = Netns::list()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| stale(n))
        .collect();
    block_on(async {
        let mut seen = std::collections::BTreeSet::new();
        for inst in &instances {
            if seen.insert(inst.clone()) {
                match netpath::reconcile::destroy(inst).await {
                    Ok(_) => removed.push(format!("netpath instance {inst}")),
                    Err(e) => log::warn!("stale netpath instance {inst}: {e}"),
                }
            }
        }
        delete_all(&namespaces).await;
    });
    removed.extend(namespaces.into_iter().map(|n| format!("namespace {n}")));
    removed
}

/// Removes, when dropped, every namespace named `npb-<pid>-*` of this
/// process and its netpath instance: the last line of defence behind each
/// setup's own teardown (error, panic, Ctrl-C).
pub struct Cleanup {
    names: Names,
}

impl Cleanup {
    pub fn new(names: Names) -> Self {
        Self { names }
    }

    pub fn run(&self) {
        let instance = self.names.instance();
        let mine = format!("{}-", self.names.prefix);
        let namespaces: Vec<String> = Netns::list()
            .unwrap_or_default()
            .into_iter()
            .filter(|n| n.starts_with(&mine))
            .collect();
        // The run's instances: `npb-<pid>` and `npb-<pid>-<suffix>`.
        let mut instances: std::collections::BTreeSet<String> =
            std::fs::read_dir(netpath::datapath::PIN_ROOT)
                .into_iter()
                .flatten()
                .chain(
                    std::fs::read_dir(netpath::state::STATE_ROOT)
                        .into_iter()
                        .flatten(),
                )
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| *n == instance || n.starts_with(&mine))
                .collect();
        instances.insert(instance);
        block_on(async {
            for inst in &instances {
                if let Err(e) = netpath::reconcile::destroy(inst).await {
                    log::warn!("cleanup: destroy netpath instance {inst}: {e}");
                }
            }
            delete_all(&namespaces).await;
        });
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_ours("npb-1-c-node").is_ok());
        for bad in ["", "npb-", "node", "netpath-demo-node", "xnpb-1"] {
            assert!(check_ours(bad).is_err(), "{bad}");
        }
        assert_eq!(owner_pid("npb-123-c-node"), Some(123));
        assert_eq!(owner_pid("npb-123"), Some(123));
        assert_eq!(owner_pid("npb-x"), None);
        assert_eq!(owner_pid("t1-2"), None);
    }
}
