//! Building one of the workspace's binaries with the release profile and
//! running it as root (through `sudo -E` when not root), as `cargo xtask
//! bench` and `cargo xtask fuzz` do.

use std::{ffi::OsString, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    IgnoreSigint, cargo_status, check_kernel, cmd, require_sudo, syspkgs::Missing, toolchain,
};

/// A release binary to build and run as root.
pub struct ReleaseBin<'a> {
    pub package: &'a str,
    pub bin: &'a str,
    /// Why it needs root, for the message when sudo is missing.
    pub root_for: &'a str,
    /// Extra environment for the binary.
    pub env: Vec<(&'static str, OsString)>,
}

impl ReleaseBin<'_> {
    /// Bootstraps, builds the binary, runs it with `args` and returns its
    /// exit code. Ctrl-C reaches the binary (which cleans up what it made)
    /// while xtask waits for its status.
    pub fn run(&self, args: &[String]) -> Result<i32> {
        let tc = toolchain::bootstrap(Missing::Fail)?;
        check_kernel()?;

        let mut cargo = tc.cargo();
        cargo.args([
            "build",
            "--release",
            "--package",
            self.package,
            "--bin",
            self.bin,
        ]);
        let code = cargo_status(&mut cargo)?;
        if code != 0 {
            return Ok(code);
        }

        let binary = tc.target_dir().join("release").join(self.bin);
        let mut command = if cmd::is_root() {
            Command::new(&binary)
        } else {
            require_sudo(self.root_for)?;
            let mut sudo = Command::new("sudo");
            sudo.arg("-E").arg(&binary);
            sudo
        };
        command
            .args(args)
            .env("PATH", tc.path_env())
            // Where the binary may write (the fuzzer's findings).
            .env("CARGO_TARGET_DIR", tc.target_dir())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&tc.workspace);
        println!("xtask: {}", cmd::display(&command));

        let fix = format!(
            "build it with `cargo build --release -p {} --bin {}` and run {} as root",
            self.package,
            self.bin,
            binary.display()
        );
        let what = format!("run {}", self.bin);
        let mut child = command.spawn().map_err(|e| {
            cmd::step_error(&what, &command, &format!("could not start: {e}"), &fix)
        })?;
        let _sigint = IgnoreSigint::new();
        let status = child
            .wait()
            .with_context(|| format!("wait for {}", self.bin))?;
        Ok(cmd::exit_code(status))
    }
}
