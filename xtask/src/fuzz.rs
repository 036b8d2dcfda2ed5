//! `cargo xtask fuzz`: builds `netpath-fuzz` (release) and runs it as root
//! (through `sudo -E` when not root). The short fuzz run is part of
//! `cargo xtask test` (`tests/tests/fuzz.rs`); this is the long one.

use std::process::Command;

use anyhow::{Context as _, Result};

use crate::{
    IgnoreSigint, cargo_status, check_kernel, cmd, require_sudo, syspkgs::Missing, toolchain,
};

pub fn fuzz(args: &[String]) -> Result<i32> {
    let tc = toolchain::bootstrap(Missing::Fail)?;
    check_kernel()?;

    let mut cargo = tc.cargo();
    cargo.args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "netpath-fuzz",
    ]);
    let code = cargo_status(&mut cargo)?;
    if code != 0 {
        return Ok(code);
    }

    let binary = tc.target_dir().join("release").join("netpath-fuzz");
    let mut fuzz = if cmd::is_root() {
        Command::new(&binary)
    } else {
        require_sudo("the fuzzer (it loads BPF programs)")?;
        let mut sudo = Command::new("sudo");
        sudo.arg("-E").arg(&binary);
        sudo
    };
    fuzz.args(args)
        .env("PATH", tc.path_env())
        .env("CARGO_TARGET_DIR", tc.target_dir())
        .current_dir(&tc.workspace);
    println!("xtask: {}", cmd::display(&fuzz));
    let fix = format!(
        "build it with `cargo build --release -p tests --bin netpath-fuzz` and run {} as root",
        binary.display()
    );
    let mut child = fuzz.spawn().map_err(|e| {
        cmd::step_error(
            "run netpath-fuzz",
            &fuzz,
            &format!("could not start: {e}"),
            &fix,
        )
    })?;
    // Ctrl-C stops the fuzzer (it holds nothing to clean up); xtask waits
    // for its status.
    let _sigint = IgnoreSigint::new();
    let status = child.wait().context("wait for netpath-fuzz")?;
    Ok(cmd::exit_code(status))
}
