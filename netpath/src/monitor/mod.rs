//! `netpath monitor`: the datapath's events, live — every drop with its
//! reason, interface, pod and tuple, and on request (`--type trace`) new
//! masqueraded connections, backend choices and redirects to local pods.
//!
//! The programs write events into the instance's pinned ring buffer
//! (`events_v1`) only while a monitor holds the watch lease (`monitor_v1`:
//! a deadline and the wanted kinds, see `netpath_common::events`). The
//! monitor renews the lease every second ([`RENEW`]) for [`LEASE`] ahead,
//! and clears it when it stops (Ctrl-C, SIGTERM, its stdout closed); one
//! that is killed leaves a lease that runs out within [`LEASE`]. The
//! programs rate-limit events per CPU (`--rate`, `--burst`) and count what
//! they could not emit; the monitor prints those losses when they change
//! and when it stops.
//!
//! One monitor per instance at a time (the ring buffer has one reader):
//! the monitor holds an `flock` on `/run/netpath/<instance>/monitor.lock`.

pub mod filter;
pub mod names;
pub mod show;

use std::{
    fs,
    io::{self, Write},
    path::PathBuf,
    time::{Duration, Instant},
};

use netpath_common::events::{Event, MonitorGate};
use tokio::io::{Interest, unix::AsyncFd};

use crate::{
    datapath::{
        MapsError, PinDir,
        events::{EventControl, EventMaps, Lost},
    },
    state::STATE_ROOT,
};
pub use filter::{Filter, Kinds, Proto};
use names::Names;
use show::Clock;

/// How far ahead a lease runs.
pub const LEASE: Duration = Duration::from_secs(5);
/// How often the lease is renewed (and losses checked).
pub const RENEW: Duration = Duration::from_secs(1);
/// The default rate limit: events per second per CPU.
pub const DEFAULT_RATE: u32 = 5000;

/// What `netpath monitor` cannot do, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error(
        "netpath monitor needs root (CAP_BPF and CAP_SYS_ADMIN to open the pinned maps): \
         run it with sudo"
    )]
    NotRoot,
    #[error(
        "instance {instance} has no datapath pinned at {path}: is it applied? \
         (`netpath apply -f FILE` or `netpath daemon --config FILE` loads it)"
    )]
    NoInstance { instance: String, path: PathBuf },
    #[error(
        "instance {instance}'s datapath has no event ring buffer ({path} is missing): it was \
         loaded by an older netpath; apply it again with this version"
    )]
    NoEventMaps { instance: String, path: PathBuf },
    #[error(
        "another `netpath monitor` already watches instance {instance} (it holds {path}); \
         a ring buffer has one reader: stop that one first"
    )]
    Busy { instance: String, path: PathBuf },
    #[error("cannot take the monitor lock {path}: {source}")]
    Lock { path: PathBuf, source: io::Error },
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error("cannot poll the event ring buffer: {0}")]
    Poll(io::Error),
    #[error("cannot wait for signals: {0}")]
    Signal(io::Error),
}

/// What to watch and how to print it.
#[derive(Debug, Clone)]
pub struct Options {
    pub kinds: Kinds,
    pub filter: Filter,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// Events per second per CPU (0: no limit).
    pub rate: u32,
    /// Events a CPU may emit at once (default: the rate).
    pub burst: Option<u32>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            kinds: Kinds::Drop,
            filter: Filter::default(),
            json: false,
            rate: DEFAULT_RATE,
            burst: None,
        }
    }
}

/// `CLOCK_MONOTONIC` now, in ns (the clock `bpf_ktime_get_ns()` reads).
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always
    // exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs * 1_000_000_000 + nanos
}

/// The lease `opts` asks for, running [`LEASE`] from now.
fn lease(opts: &Options) -> MonitorGate {
    MonitorGate {
        lease_until_ns: monotonic_ns() + u64::try_from(LEASE.as_nanos()).unwrap_or(u64::MAX),
        kinds: opts.kinds.mask(),
        rate_per_sec: opts.rate,
        burst: opts.burst.unwrap_or(opts.rate).max(1),
        _pad: 0,
    }
}

/// A held watch: the lease is cleared when it is dropped, however the
/// monitor stops.
struct Watch {
    control: EventControl,
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Watch {
    fn renew(&mut self, opts: &Options) -> Result<(), MonitorError> {
        Ok(self.control.set_gate(&lease(opts))?)
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Err(e) = self.control.set_gate(&MonitorGate::default()) {
            log::warn!("cannot clear the watch lease ({e}); it runs out by itself");
        }
    }
}

/// Takes the instance's monitor lock (without waiting).
fn lock(instance: &str) -> Result<nix::fcntl::Flock<fs::File>, MonitorError> {
    let dir = PathBuf::from(STATE_ROOT).join(instance);
    let path = dir.join("monitor.lock");
    let file = fs::create_dir_all(&dir)
        .and_then(|()| {
            fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
        })
        .map_err(|source| MonitorError::Lock {
            path: path.clone(),
            source,
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|(_, e)| {
        if e == nix::errno::Errno::EWOULDBLOCK {
            MonitorError::Busy {
                instance: instance.to_owned(),
                path: path.clone(),
            }
        } else {
            MonitorError::Lock {
                path: path.clone(),
                source: e.into(),
            }
        }
    })
}

/// Opens the instance's event maps, after the checks whose failure has a
/// clearer message than a failed `bpf()` call.
fn open(instance: &str) -> Result<(EventMaps, nix::fcntl::Flock<fs::File>), MonitorError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(MonitorError::NotRoot);
    }
    let pins = PinDir::for_instance(instance);
    if !pins.exists() {
        return Err(MonitorError::NoInstance {
            instance: instance.to_owned(),
            path: pins.root().to_owned(),
        });
    }
    let ring = pins.map(netpath_common::events::EVENTS_MAP);
    if !ring.exists() {
        return Err(MonitorError::NoEventMaps {
            instance: instance.to_owned(),
            path: ring,
        });
    }
    let lock = lock(instance)?;
    Ok((EventMaps::open_pinned(&pins)?, lock))
}

/// Why the monitor stopped.
enum Stop {
    /// Ctrl-C or SIGTERM.
    Signal,
    /// Whoever read the output went away.
    OutputClosed,
}

/// Whether stdout is a pipe or socket whose reader is gone (`POLLERR`).
fn stdout_closed() -> bool {
    use std::os::fd::AsRawFd as _;
    let mut fd = libc::pollfd {
        fd: io::stdout().as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no wait.
    let n = unsafe { libc::poll(&raw mut fd, 1, 0) };
    n > 0 && fd.revents & (libc::POLLERR | libc::POLLHUP) != 0
}

/// Prints `line` to stdout; `false` when stdout is closed.
fn print(out: &mut impl Write, line: &str) -> bool {
    writeln!(out, "{line}").is_ok()
}

/// Watches `instance` until Ctrl-C, SIGTERM or a closed stdout, printing
/// the events `opts` asks for; prints the events lost at the end.
pub async fn run(instance: &str, opts: &Options) -> Result<(), MonitorError> {
    use tokio::signal::unix::{SignalKind, signal};
    // Ours before the lease is taken: a signal then always clears it.
    let mut term = signal(SignalKind::terminate()).map_err(MonitorError::Signal)?;
    let mut int = signal(SignalKind::interrupt()).map_err(MonitorError::Signal)?;
    let (maps, lock) = open(instance)?;
    let EventMaps { ring, control } = maps;
    let mut watch = Watch {
        control,
        _lock: lock,
    };
    // SAFETY: the ring buffer owns its fd, which so stays open for as
    // long as the AsyncFd that holds it.
    let mut ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
        .map_err(|e| MonitorError::Poll(e.into()))?;
    // Events a previous monitor left unread are not this one's.
    while ring.get_mut().next().is_some() {}
    let start = watch.control.lost()?;
    watch.renew(opts)?;
    let pins = PinDir::for_instance(instance);
    let mut names = Names::load(instance, &pins).await;
    let mut names_read = Instant::now();
    let clock = Clock::now();
    let mut tick = tokio::time::interval(RENEW);
    let mut shown = Lost::default();
    eprintln!(
        "watching {} of instance {instance} (Ctrl-C stops)",
        match opts.kinds {
            Kinds::Drop => "drops",
            Kinds::Trace => "trace events",
            Kinds::All => "drops and trace events",
        }
    );
    let stop = loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.map_err(MonitorError::Poll)?;
                let mut events = Vec::new();
                while let Some(item) = guard.get_inner_mut().next() {
                    if item.len() >= size_of::<Event>() {
                        // SAFETY: the programs write whole `Event`s; an
                        // unaligned read copies one out of the ring.
                        events.push(unsafe { item.as_ptr().cast::<Event>().read_unaligned() });
                    }
                }
                guard.clear_ready();
                if events.iter().any(|e| !names.knows(e.ifindex))
                    && names_read.elapsed() > RENEW
                {
                    names = Names::load(instance, &pins).await;
                    names_read = Instant::now();
                }
                let mut out = io::stdout().lock();
                let mut open = true;
                for ev in events.iter().filter(|e| opts.filter.matches(e, &names)) {
                    let line = if opts.json {
                        show::json(ev, &names, &clock)
                    } else {
                        show::text(ev, &names, &clock)
                    };
                    open &= print(&mut out, &line);
                }
                if !open || out.flush().is_err() {
                    break Stop::OutputClosed;
                }
            }
            _ = tick.tick() => {
                watch.renew(opts)?;
                let lost = watch.control.lost()?.since(&start);
                if lost != shown {
                    shown = lost;
                    let mut out = io::stdout().lock();
                    if !print(&mut out, &show::lost(&lost, opts.json)) || out.flush().is_err() {
                        break Stop::OutputClosed;
                    }
                }
                if stdout_closed() {
                    break Stop::OutputClosed;
                }
            }
            _ = int.recv() => break Stop::Signal,
            _ = term.recv() => break Stop::Signal,
        }
    };
    let lost = watch.control.lost()?.since(&start);
    drop(watch);
    if matches!(stop, Stop::Signal) {
        let mut out = io::stdout().lock();
        let _ = print(&mut out, &show::lost(&lost, opts.json)).then(|| out.flush());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_runs_ahead_with_the_asked_kinds_and_rate() {
        let opts = Options {
            rate: 100,
            ..Options::default()
        };
        let before = monotonic_ns();
        let g = lease(&opts);
        assert!(g.lease_until_ns >= before + 5_000_000_000);
        assert_eq!(g.kinds, Kinds::Drop.mask());
        assert_eq!((g.rate_per_sec, g.burst), (100, 100));
        let unlimited = lease(&Options {
            rate: 0,
            ..Options::default()
        });
        assert_eq!(unlimited.burst, 1, "a burst is at least 1");
    }

    #[test]
    fn errors_say_what_to_do() {
        let e = MonitorError::Busy {
            instance: "demo".into(),
            path: "/run/netpath/demo/monitor.lock".into(),
        };
        assert!(e.to_string().contains("stop that one first"));
        assert!(MonitorError::NotRoot.to_string().contains("sudo"));
    }
}
