//! Bootstraps everything a build needs on a fresh machine: rustup, the
//! `nightly` toolchain with `rust-src` (aya-build compiles the eBPF crate with
//! `rustup run nightly cargo build -Z build-std=core`), and a bpf-linker built
//! against the nightly's own LLVM, cached per nightly LLVM library:
//!
//! ```text
//! ~/.cache/netpath/toolchain/libLLVM.so.22.1-rust-1.97.0-nightly/   ($XDG_CACHE_HOME honoured)
//!   llvm/lib/libLLVM.so.22.1-rust-1.97.0-nightly -> <nightly sysroot>/lib/<same>
//!   llvm/lib/libLLVM.so -> libLLVM.so.22.1-rust-1.97.0-nightly
//!   bin/bpf-linker       (RUNPATH = llvm/lib above: keep that directory)
//! ```
//!
//! The key is the library's file name, so a nightly update that changes the
//! LLVM (or rustc) version gets its own linker, and a cached linker is never
//! used with an LLVM it was not built against.

use std::{
    env,
    ffi::OsString,
    fs,
    io::ErrorKind,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, Result, bail};

use crate::{
    cmd,
    syspkgs::{self, Missing},
};

/// The bpf-linker release we build.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// LLVM majors bpf-linker 0.13.0 has a `llvm-<major>` feature for.
const BPF_LINKER_LLVM_MAJORS: &[u32] = &[21, 22, 23];
/// The toolchain aya-build runs (`rustup run nightly ...`): not configurable.
const NIGHTLY: &str = "nightly";

/// What a bootstrapped build environment provides.
pub struct Toolchain {
    /// `<cache>/bin`, holding `bpf-linker`.
    pub bin_dir: PathBuf,
    /// The workspace root (where cargo runs).
    pub workspace: PathBuf,
}

impl Toolchain {
    /// PATH for every command xtask runs: `<cache>/bin` first; `/usr/sbin`
    /// and `/sbin` appended when missing (Debian puts bpftool, ip, iptables
    /// there and a non-root PATH often lacks them).
    pub fn path_env(&self) -> OsString {
        let mut dirs = vec![self.bin_dir.clone()];
        if let Some(path) = env::var_os("PATH") {
            dirs.extend(env::split_paths(&path).filter(|d| *d != self.bin_dir));
        }
        for sbin in ["/usr/sbin", "/sbin"] {
            if !dirs.iter().any(|d| d == Path::new(sbin)) {
                dirs.push(sbin.into());
            }
        }
        env::join_paths(dirs).expect("PATH entries contain no ':'")
    }

    /// `cargo` in the workspace root with the bootstrapped PATH.
    pub fn cargo(&self) -> Command {
        let mut c = Command::new("cargo");
        c.current_dir(&self.workspace).env("PATH", self.path_env());
        c
    }

    /// Where cargo puts build output (`$CARGO_TARGET_DIR`, else `target/`).
    pub fn target_dir(&self) -> PathBuf {
        match env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => self.workspace.join(dir),
            _ => self.workspace.join("target"),
        }
    }
}

/// The workspace root: the parent of xtask's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Runs every bootstrap step (each prints one `toolchain: ...` line),
/// including the system packages (`missing` says whether lacking them is an
/// error), and returns the environment builds run in.
pub fn bootstrap(missing: Missing) -> Result<Toolchain> {
    let start = Instant::now();
    check_rustup()?;
    ensure_nightly()?;
    ensure_rust_src()?;
    let llvm = nightly_llvm()?;
    let cache = cache_root()?.join(&llvm.file_name);
    let bin_dir = ensure_bpf_linker(&cache, &llvm)?;
    syspkgs::ensure(missing)?;
    println!("toolchain: ready in {:.1}s", start.elapsed().as_secs_f64());
    Ok(Toolchain {
        bin_dir,
        workspace: workspace_root(),
    })
}

fn rustup() -> Command {
    Command::new("rustup")
}

fn check_rustup() -> Result<()> {
    let version = cmd::capture(
        "find rustup",
        rustup().arg("--version"),
        "install rustup from https://rustup.rs \
         (`curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh`) \
         and make sure `rustup` is on PATH (usually ~/.cargo/bin)",
    )?;
    println!(
        "toolchain: {}",
        version.lines().next().unwrap_or("rustup").trim()
    );
    Ok(())
}

fn ensure_nightly() -> Result<()> {
    let list = cmd::capture(
        "list rust toolchains",
        rustup().args(["toolchain", "list"]),
        "check that `rustup toolchain list` works",
    )?;
    // `nightly-x86_64-unknown-linux-gnu`, not a dated `nightly-2026-05-19-...`.
    let has_nightly = list.lines().any(|line| {
        let name = line.split_whitespace().next().unwrap_or("");
        name == NIGHTLY
            || name
                .strip_prefix("nightly-")
                .is_some_and(|rest| !rest.starts_with(|c: char| c.is_ascii_digit()))
    });
    if has_nightly {
        println!("toolchain: {NIGHTLY} installed");
        return Ok(());
    }
    println!("toolchain: {NIGHTLY} missing, installing it (minimal profile)");
    cmd::run(
        "install the nightly toolchain",
        rustup().args(["toolchain", "install", NIGHTLY, "--profile", "minimal"]),
        "run `rustup toolchain install nightly --profile minimal` (needs network access)",
    )
}

fn ensure_rust_src() -> Result<()> {
    let installed = cmd::capture(
        "list nightly components",
        rustup().args(["component", "list", "--toolchain", NIGHTLY, "--installed"]),
        "run `rustup component list --toolchain nightly --installed`",
    )?;
    if installed.lines().any(|l| l.trim().starts_with("rust-src")) {
        println!("toolchain: {NIGHTLY} has rust-src");
        return Ok(());
    }
    println!("toolchain: {NIGHTLY} lacks rust-src (needed by -Z build-std=core), adding it");
    cmd::run(
        "add rust-src to nightly",
        rustup().args(["component", "add", "rust-src", "--toolchain", NIGHTLY]),
        "run `rustup component add rust-src --toolchain nightly` (needs network access)",
    )
}

/// The LLVM shared library inside the nightly toolchain.
struct NightlyLlvm {
    /// `<sysroot>/lib/libLLVM.so.22.1-rust-1.97.0-nightly`
    path: PathBuf,
    /// `libLLVM.so.22.1-rust-1.97.0-nightly`
    file_name: String,
    /// 22
    major: u32,
}

fn nightly_llvm() -> Result<NightlyLlvm> {
    let sysroot = cmd::capture(
        "find the nightly sysroot",
        rustup().args(["run", NIGHTLY, "rustc", "--print", "sysroot"]),
        "check that `rustup run nightly rustc --print sysroot` works; \
         reinstall with `rustup toolchain install nightly --profile minimal`",
    )?;
    let lib = PathBuf::from(sysroot.trim()).join("lib");
    let entries = fs::read_dir(&lib).with_context(|| {
        format!(
            "step \"find the nightly's LLVM\" failed: cannot read {}",
            lib.display()
        )
    })?;
    let mut found: Vec<(String, u32)> = entries
        .filter_map(std::result::Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|name| {
            let major = name
                .strip_prefix("libLLVM.so.")?
                .split(['.', '-'])
                .next()?
                .parse()
                .ok()?;
            Some((name, major))
        })
        .collect();
    found.sort();
    let Some((file_name, major)) = found
        .iter()
        .find(|(_, major)| *major == 22)
        .or_else(|| found.first())
        .cloned()
    else {
        bail!(
            "step \"find the nightly's LLVM\" failed: no lib/libLLVM.so.<major>* in {}\n  \
             fix by hand: bpf-linker must link the LLVM rustc nightly uses; reinstall nightly \
             (`rustup toolchain uninstall nightly && rustup toolchain install nightly --profile minimal`)",
            lib.display()
        );
    };
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "step \"find the nightly's LLVM\" failed: nightly ships LLVM {major} ({file_name}), \
             bpf-linker {BPF_LINKER_VERSION} supports LLVM {BPF_LINKER_LLVM_MAJORS:?}\n  \
             fix by hand: bump BPF_LINKER_VERSION in xtask/src/toolchain.rs to a bpf-linker \
             release with an `llvm-{major}` feature (and add {major} to BPF_LINKER_LLVM_MAJORS)"
        );
    }
    println!("toolchain: {NIGHTLY} ships LLVM {major} ({file_name})");
    Ok(NightlyLlvm {
        path: lib.join(&file_name),
        file_name,
        major,
    })
}

/// `$XDG_CACHE_HOME/netpath/toolchain`, else `~/.cache/netpath/toolchain`.
fn cache_root() -> Result<PathBuf> {
    let base = match env::var_os("XDG_CACHE_HOME") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        _ => match env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache"),
            _ => bail!(
                "step \"find the cache directory\" failed: neither XDG_CACHE_HOME nor HOME is set\n  \
                 fix by hand: set HOME (or XDG_CACHE_HOME) to a writable directory"
            ),
        },
    };
    Ok(base.join("netpath").join("toolchain"))
}

/// Makes `link` a symlink to `target` unless it already is one.
fn symlink(target: &Path, link: &Path) -> Result<()> {
    match fs::read_link(link) {
        Ok(current) if current == target => return Ok(()),
        Ok(_) => fs::remove_file(link)?,
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(_) => fs::remove_file(link)?, // a regular file in the way
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("symlink {} -> {}", link.display(), target.display()))
}

fn linker_version(linker: &Path) -> Option<String> {
    cmd::probe(Command::new(linker).arg("--version")).map(|v| v.trim().to_owned())
}

/// Makes sure `<cache>/bin/bpf-linker` is bpf-linker 0.13.0 built against
/// `llvm`; returns `<cache>/bin`.
fn ensure_bpf_linker(cache: &Path, llvm: &NightlyLlvm) -> Result<PathBuf> {
    let llvm_prefix = cache.join("llvm");
    let llvm_lib = llvm_prefix.join("lib");
    let bin_dir = cache.join("bin");
    let linker = bin_dir.join("bpf-linker");
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");

    // One bootstrap at a time per cache entry (two xtasks started together
    // would otherwise both run `cargo install` into the same root).
    fs::create_dir_all(cache).with_context(|| {
        format!(
            "step \"create the cache\" failed: mkdir -p {}",
            cache.display()
        )
    })?;
    let lock = fs::File::create(cache.join(".lock"))
        .with_context(|| format!("create {}", cache.join(".lock").display()))?;
    if lock.try_lock().is_err() {
        println!(
            "toolchain: another xtask is bootstrapping {}, waiting",
            cache.display()
        );
        lock.lock().context("lock the toolchain cache")?;
    }

    let prepare = || -> Result<()> {
        fs::create_dir_all(&llvm_lib)?;
        symlink(&llvm.path, &llvm_lib.join(&llvm.file_name))?;
        symlink(Path::new(&llvm.file_name), &llvm_lib.join("libLLVM.so"))
    };
    prepare().with_context(|| {
        format!(
            "step \"prepare the LLVM prefix\" failed in {}\n  fix by hand: \
             mkdir -p {lib} && ln -sf {src} {lib}/ && ln -sf {name} {lib}/libLLVM.so",
            llvm_prefix.display(),
            lib = llvm_lib.display(),
            src = llvm.path.display(),
            name = llvm.file_name,
        )
    })?;

    if linker_version(&linker).as_deref() == Some(want.as_str()) {
        println!("toolchain: {want} cached at {}", linker.display());
        return Ok(bin_dir);
    }

    println!(
        "toolchain: building {want} against LLVM {} into {} (takes about a minute)",
        llvm.major,
        cache.display()
    );
    let start = Instant::now();
    let install = |locked: bool| {
        let mut c = Command::new("cargo");
        c.current_dir(cache).env("LLVM_PREFIX", &llvm_prefix).args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
        ]);
        if locked {
            c.arg("--locked");
        }
        c.args(["--no-default-features", "--features"])
            .arg(format!("llvm-{}", llvm.major))
            .arg("--root")
            .arg(cache)
            .arg("--force");
        c
    };
    let fix = format!(
        "run `{}` (needs network access to crates.io and a C toolchain); \
         or put any bpf-linker built against LLVM {} at {}",
        cmd::display(&install(false)),
        llvm.major,
        linker.display()
    );
    let mut locked = install(true);
    if !cmd::status("install bpf-linker", &mut locked, &fix)?.success() {
        println!("toolchain: `cargo install --locked` failed, retrying without --locked");
        cmd::run("install bpf-linker", &mut install(false), &fix)?;
    }
    match linker_version(&linker) {
        Some(v) if v == want => {}
        got => bail!(
            "step \"verify bpf-linker\" failed\n  command: {} --version\n  \
             error:   expected `{want}`, got {got:?}\n  fix by hand: {fix}",
            linker.display()
        ),
    }
    println!(
        "toolchain: {want} built in {:.0}s, cached at {}",
        start.elapsed().as_secs_f64(),
        linker.display()
    );
    Ok(bin_dir)
}
