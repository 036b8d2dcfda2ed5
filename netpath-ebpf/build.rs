//! Re-run the eBPF build when the linker changes (it is found on PATH).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
