//! Builds the eBPF object (`netpath-ebpf`) with nightly and bpf-linker and
//! puts it in OUT_DIR, where `src/ebpf.rs` embeds it.
//!
//! `cargo xtask ...` puts a bpf-linker on PATH first; building this crate by
//! hand needs `bpf-linker` on PATH (see README, "Toolchain").

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=PATH");
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("MetadataCommand::exec")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "netpath-ebpf")
        .ok_or_else(|| anyhow!("netpath-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("netpath-ebpf manifest has no parent"))?;
    if which_bpf_linker().is_none() {
        return Err(anyhow!(
            "bpf-linker is not on PATH. Run `cargo xtask build` (it builds and caches one), \
             or put a bpf-linker built against LLVM 22 on PATH."
        ));
    }
    aya_build::build_ebpf(
        [Package {
            name: "netpath-ebpf",
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        Toolchain::Nightly,
    )
}

fn which_bpf_linker() -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("bpf-linker"))
        .find(|p| p.is_file())
}
