//! The shipped binaries in tests, run the way an operator or a container
//! runtime runs them: `netpath daemon` as a process of its own for a test
//! node, the `netpath` CLI, and `netpath-cni`.
//!
//! The binaries are the workspace's `target/<profile>/netpath` and
//! `netpath-cni`; `cargo xtask test` builds them before the tests
//! (`cargo build -p netpath --bins --features testing`). A binary older
//! than the sources it is built from fails the test with that command,
//! rather than testing yesterday's code.

use std::{
    fs,
    io::Read as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant, SystemTime},
};

use crate::harness::TestNode;

/// The shipped binary `name`, checked to be newer than its sources.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test runs from target/<profile>/deps");
    let path = dir.join(name);
    let built = fs::metadata(&path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; build it with `cargo build -p netpath --bins --features testing` \
                 (cargo xtask test does)",
                path.display()
            )
        });
    let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("../netpath/src");
    if let Some(newer) = newest(&sources).filter(|(t, _)| *t > built) {
        panic!(
            "{} is older than {}: rebuild it with `cargo build -p netpath --bins --features \
             testing` (cargo xtask test does)",
            path.display(),
            newer.1.display()
        );
    }
    path
}

fn newest(dir: &Path) -> Option<(SystemTime, PathBuf)> {
    let mut best: Option<(SystemTime, PathBuf)> = None;
    for entry in fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        // Unit tests (`tests/` directories, `tests.rs` files) are not in
        // the binary: changing them relinks nothing.
        let name = entry.file_name();
        if name == "tests" || name == "tests.rs" {
            continue;
        }
        let found = if path.is_dir() {
            newest(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (t, path))
        };
        if let Some(f) = found
            && best.as_ref().is_none_or(|b| f.0 > b.0)
        {
            best = Some(f);
        }
    }
    best
}

/// Runs `netpath ARGS` and returns its output.
pub fn netpath(args: &[&str]) -> Output {
    Command::new(bin("netpath"))
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run netpath")
}

/// Runs `netpath ARGS`, which must succeed, and returns its stdout.
pub fn netpath_ok(args: &[&str]) -> String {
    let out = netpath(args);
    assert!(
        out.status.success(),
        "netpath {args:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// Runs `netpath ARGS`, which must fail, and returns its stderr.
pub fn netpath_err(args: &[&str]) -> String {
    let out = netpath(args);
    assert!(
        !out.status.success(),
        "netpath {args:?} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("UTF-8 output")
}

/// A `netpath daemon` process serving a test node.
pub struct DaemonProc {
    child: Option<Child>,
    pub instance: String,
    /// The `--config` file.
    pub config: PathBuf,
    log: PathBuf,
}

impl DaemonProc {
    /// Writes the node's configuration to a file and starts a daemon for
    /// it; returns once its API answers.
    pub fn start(node: &TestNode) -> Self {
        Self::start_config(&node.config)
    }

    /// [`DaemonProc::start`] for any node's configuration (e.g. a node of
    /// a [`crate::cluster::Cluster`]).
    pub fn start_config(node: &netpath::config::Config) -> Self {
        let instance = node.node.name.clone();
        let config = std::env::temp_dir().join(format!("{instance}.toml"));
        fs::write(&config, node.to_toml_string()).expect("write the node's config");
        let mut d = Self {
            child: None,
            instance,
            config,
            log: PathBuf::new(),
        };
        d.restart();
        d
    }

    /// Starts the daemon again (after [`DaemonProc::kill`] or
    /// [`DaemonProc::stop`]) and waits for its API.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is running");
        self.log = std::env::temp_dir().join(format!(
            "{}-daemon-{}.log",
            self.instance,
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ));
        let log = fs::File::create(&self.log).expect("create the daemon's log");
        let child = Command::new(bin("netpath"))
            .args(["--log-level", "info", "daemon", "--config"])
            .arg(&self.config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start netpath daemon");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = netpath(&["status", "--instance", &self.instance]);
            if status.status.success() {
                return;
            }
            if let Some(exit) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!("the daemon exited ({exit}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 60 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL, as a crash or the OOM killer would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as `systemctl stop` does; waits for the exit and returns
    /// whether it was clean.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        child.wait().expect("wait for the daemon").success()
    }

    /// What the daemon logged so far.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_file(&self.config);
    }
}
