//! Running external commands with errors that say what failed and how to fix
//! it by hand.

use std::{
    ffi::OsStr,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Result, anyhow};

/// Renders `cmd` the way one would type it in a shell: environment overrides
/// first (PATH is left out, it is long and always "<cache>/bin:$PATH"),
/// then the program and its arguments.
pub fn display(cmd: &Command) -> String {
    let mut parts = Vec::new();
    for (key, value) in cmd.get_envs() {
        if key == "PATH" {
            continue;
        }
        if let Some(value) = value {
            parts.push(format!("{}={}", key.to_string_lossy(), quote(value)));
        }
    }
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The error every failed step reports.
pub fn step_error(step: &str, cmd: &Command, what: &str, fix: &str) -> anyhow::Error {
    anyhow!(
        "step \"{step}\" failed\n  command: {}\n  error:   {what}\n  fix by hand: {fix}",
        display(cmd)
    )
}

/// Runs `cmd` with inherited stdio; a non-zero exit is an error of `step`.
pub fn run(step: &str, cmd: &mut Command, fix: &str) -> Result<()> {
    let status = status(step, cmd, fix)?;
    if status.success() {
        Ok(())
    } else {
        Err(step_error(step, cmd, &format!("{status}"), fix))
    }
}

/// Runs `cmd` with inherited stdio and returns its exit status; only a failure
/// to start it is an error.
pub fn status(step: &str, cmd: &mut Command, fix: &str) -> Result<ExitStatus> {
    cmd.status()
        .map_err(|e| step_error(step, cmd, &format!("could not start: {e}"), fix))
}

/// Runs `cmd`, captures its output and returns stdout; a non-zero exit is an
/// error of `step` that quotes stderr.
pub fn capture(step: &str, cmd: &mut Command, fix: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| step_error(step, cmd, &format!("could not start: {e}"), fix))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(step_error(
            step,
            cmd,
            &format!("{}: {}", out.status, stderr.trim()),
            fix,
        ))
    }
}

/// Runs `cmd` quietly and says whether it succeeded (also false when it cannot
/// be started). Returns stdout on success.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let out = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The exit code a shell would report for `status` (128 + signal number when
/// the process was killed by a signal).
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt as _;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// True when xtask runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
