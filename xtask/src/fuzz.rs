//! `cargo xtask fuzz`: builds `netpath-fuzz` (release) and runs it as root
//! (through `sudo -E` when not root). The short fuzz run is part of
//! `cargo xtask test` (`tests/tests/fuzz.rs`); this is the long one.

use anyhow::Result;

use crate::release_bin::ReleaseBin;

pub fn fuzz(args: &[String]) -> Result<i32> {
    ReleaseBin {
        package: "tests",
        bin: "netpath-fuzz",
        root_for: "the fuzzer (it loads BPF programs)",
        // Nothing to clean up on Ctrl-C; findings go under the target
        // directory.
        env: Vec::new(),
    }
    .run(args)
}
