//! The lint gate: formatting and clippy on every crate that builds for the
//! host, run by `cargo xtask lint` and first thing by `cargo xtask test`.
//! The lints themselves are `[workspace.lints]` in the workspace
//! `Cargo.toml`; each linted crate opts in with `[lints] workspace = true`.

use anyhow::{Result, bail};

use crate::{cmd, toolchain::Toolchain};

/// The crates clippy checks. To gate another crate, give it `[lints]
/// workspace = true` and add it here (a crate that needs another target or
/// toolchain, like `netpath-ebpf`, gets its own [`ClippyRun`] instead).
const HOST_CRATES: &[&str] = &[
    "netpath-common",
    "netpath",
    "xtask",
    "tests",
    "netpath-bench",
];

/// One clippy invocation: what it checks and the arguments after
/// `cargo clippy`.
struct ClippyRun {
    what: &'static str,
    args: Vec<String>,
}

fn clippy_runs() -> Vec<ClippyRun> {
    let mut all = Vec::new();
    for krate in HOST_CRATES {
        all.extend(["--package".to_owned(), (*krate).to_owned()]);
    }
    all.push("--all-targets".into());
    vec![
        ClippyRun {
            what: "the host crates (with the `testing` feature the tests enable)",
            args: all,
        },
        ClippyRun {
            // Alone, netpath builds without `testing`: the shipped code paths
            // (the no-op failpoint) are checked too.
            what: "netpath as shipped (without the `testing` feature)",
            args: ["--package", "netpath", "--all-targets"]
                .map(str::to_owned)
                .to_vec(),
        },
    ]
}

/// Runs `cargo fmt --all --check`, then every clippy run with `-D
/// warnings`; stops at the first failure with a message saying how to fix it.
pub fn run(tc: &Toolchain) -> Result<()> {
    let mut fmt = tc.cargo();
    fmt.args(["fmt", "--all", "--check"]);
    println!("xtask: lint: {}", cmd::display(&fmt));
    let status = cmd::status(
        "check formatting",
        &mut fmt,
        "install rustfmt (`rustup component add rustfmt`)",
    )?;
    if !status.success() {
        bail!(
            "lint: the code is not formatted (the diff is above); run `cargo fmt --all` and \
             commit the result"
        );
    }
    for run in clippy_runs() {
        let mut clippy = tc.cargo();
        clippy
            .arg("clippy")
            .args(&run.args)
            .args(["--", "-D", "warnings"]);
        println!("xtask: lint: {} ({})", cmd::display(&clippy), run.what);
        let status = cmd::status(
            "run clippy",
            &mut clippy,
            "install clippy (`rustup component add clippy`)",
        )?;
        if !status.success() {
            bail!(
                "lint: clippy found problems in {} (listed above); fix them, or where a lint \
                 is wrong for that code add #[expect(clippy::..., reason = \"...\")] next to it",
                run.what
            );
        }
    }
    println!("xtask: lint: formatting and clippy are clean");
    Ok(())
}
