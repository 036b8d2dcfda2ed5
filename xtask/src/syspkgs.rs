//! System tools the tests, the demo and the benchmarks run, and the Debian
//! packages that provide them.

use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Result, bail};

use crate::cmd;

struct Tool {
    /// Debian package.
    package: &'static str,
    /// Command it provides, or (for a package of data files) an absolute
    /// path to a file it provides.
    command: &'static str,
    /// Arguments that make `command` print its version and exit 0 (empty for
    /// a file).
    version_args: &'static [&'static str],
}

impl Tool {
    /// Where the tool is, if installed.
    fn find(&self) -> Option<PathBuf> {
        if self.command.starts_with('/') {
            let p = PathBuf::from(self.command);
            return p.is_file().then_some(p);
        }
        find(self.command)
    }
}

const TOOLS: &[Tool] = &[
    Tool {
        package: "bpftool",
        command: "bpftool",
        version_args: &["version"],
    },
    Tool {
        package: "iputils-ping",
        command: "ping",
        version_args: &["-V"],
    },
    Tool {
        package: "traceroute",
        command: "traceroute",
        version_args: &["--version"],
    },
    Tool {
        package: "iproute2",
        command: "ip",
        version_args: &["-V"],
    },
    // The demo's and the service tests' HTTP requests, as a user makes them.
    Tool {
        package: "curl",
        command: "curl",
        version_args: &["--version"],
    },
    // Benchmarks (`cargo xtask bench`).
    Tool {
        package: "iperf3",
        command: "iperf3",
        version_args: &["--version"],
    },
    // The classic datapath the benchmarks compare against, and the tests that
    // check netpath leaves netfilter alone.
    Tool {
        package: "iptables",
        command: "iptables",
        version_args: &["--version"],
    },
    Tool {
        package: "nftables",
        command: "nft",
        version_args: &["--version"],
    },
    // containerd's CNI client (go-cni, and the libcni it uses) and Go to
    // build the test driver with, offline (tests/tests/cni.rs,
    // tests/go/cni-driver); the loopback plugin it loads as containerd does.
    Tool {
        package: "golang-go",
        command: "go",
        version_args: &["version"],
    },
    Tool {
        package: "golang-github-containerd-go-cni-dev",
        command: "/usr/share/gocode/src/github.com/containerd/go-cni/cni.go",
        version_args: &[],
    },
    Tool {
        package: "golang-github-appc-cni-dev",
        command: "/usr/share/gocode/src/github.com/containernetworking/cni/libcni/api.go",
        version_args: &[],
    },
    Tool {
        package: "containernetworking-plugins",
        command: "/usr/lib/cni/loopback",
        version_args: &[],
    },
    // Building the etcd v3 client (etcd-client's build compiles etcd's
    // .proto files: protoc and the well-known types it imports).
    Tool {
        package: "protobuf-compiler",
        command: "protoc",
        version_args: &["--version"],
    },
    Tool {
        package: "libprotobuf-dev",
        command: "/usr/include/google/protobuf/descriptor.proto",
        version_args: &[],
    },
    // The cluster's etcd (the several-node tests and demo start one inside
    // their own namespaces).
    Tool {
        package: "etcd-server",
        command: "etcd",
        version_args: &["--version"],
    },
    // The font of the benchmark chart (bench/src/report/png.rs).
    Tool {
        package: "fonts-dejavu-core",
        command: "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        version_args: &[],
    },
];

/// What to do when tools are missing and xtask cannot install them (not root,
/// or no apt-get).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Fail: the command needs them (test, run).
    Fail,
    /// Print a warning: the command does not (build).
    Warn,
}

/// `command -v`, plus the sbin directories a non-root PATH often lacks.
fn find(command: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(command))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn install_command(packages: &[&str], sudo: bool) -> String {
    let sudo = if sudo { "sudo " } else { "" };
    format!(
        "{sudo}apt-get update && {sudo}env DEBIAN_FRONTEND=noninteractive \
         apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Makes sure every tool in [`TOOLS`] is installed: as root on Debian,
/// installs the missing packages with apt-get; otherwise fails (or warns) with
/// the exact command to run.
pub fn ensure(on_missing: Missing) -> Result<()> {
    let missing: Vec<&Tool> = TOOLS.iter().filter(|t| t.find().is_none()).collect();
    let all: Vec<&str> = TOOLS.iter().map(|t| t.package).collect();
    if missing.is_empty() {
        println!("toolchain: system packages present ({})", all.join(", "));
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|t| t.package).collect();
    let commands: Vec<&str> = missing.iter().map(|t| t.command).collect();
    let have_apt = find("apt-get").is_some();

    if !cmd::is_root() || !have_apt {
        let how = if have_apt {
            format!("run: {}", install_command(&packages, true))
        } else {
            format!(
                "install the packages that provide {} with your distribution's package manager",
                commands.join(", ")
            )
        };
        let msg = format!(
            "step \"system packages\": missing {} (commands: {})\n  fix by hand: {how}",
            packages.join(", "),
            commands.join(", "),
        );
        match on_missing {
            Missing::Fail => bail!(msg),
            Missing::Warn => {
                println!(
                    "toolchain: warning: {msg}\n  (the build needs protoc and libprotobuf-dev; the tests and the demo need the rest)"
                );
                return Ok(());
            }
        }
    }

    println!(
        "toolchain: installing system packages: {}",
        packages.join(" ")
    );
    let fix = format!("run as root: {}", install_command(&packages, false));
    let mut update = Command::new("apt-get");
    update
        .env("DEBIAN_FRONTEND", "noninteractive")
        .arg("update");
    cmd::run("apt-get update", &mut update, &fix)?;
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages);
    cmd::run("apt-get install", &mut install, &fix)?;

    // Verify: every tool is found now and runs.
    for tool in &missing {
        let Some(path) = tool.find() else {
            bail!(
                "step \"verify system packages\" failed: `{}` is still not found after installing {}\n  \
                 fix by hand: check `dpkg -L {}`",
                tool.command,
                tool.package,
                tool.package
            );
        };
        if tool.version_args.is_empty() {
            continue;
        }
        let mut version = Command::new(&path);
        version.args(tool.version_args);
        cmd::capture(
            "verify system packages",
            &mut version,
            &format!("reinstall: apt-get install --reinstall {}", tool.package),
        )?;
    }
    println!(
        "toolchain: system packages installed and verified ({})",
        packages.join(", ")
    );
    Ok(())
}
