//! The short fuzz run of `cargo xtask test`: about 200,000 frames through
//! both programs in the four node configurations of `fuzz::preset`, each
//! with a fixed seed and with one random seed (printed: replay a failure
//! with `cargo xtask fuzz -- --config NAME --seed N --frames M`). Findings
//! are saved under `target/fuzz/`. The long run is `cargo xtask fuzz`.
//!
//! What is tolerated today (reported in the summary but not failing): only
//! the forward ↔ reverse pairing checks in `lru-eviction` and
//! `zero-timeouts` (issue 8, item 1, findings 1 and 2: TODO enforce once
//! the conntrack/NAT rework of nat.rs lands; see `fuzz::preset`).
//! `fuzz::known_bugs` is empty: findings 3 to 6 are fixed and enforced.

use tests::fuzz::{self, rng};

const FIXED_SEED: u64 = 0x6e65_7470_6174_6838;

/// Runs preset `name` with the fixed seed and a random one; fails with the
/// summary on any finding that is not tolerated.
fn fuzz(name: &str, frames: u64) {
    for seed in [FIXED_SEED, rng::random_seed()] {
        let cfg = fuzz::preset(name, seed, frames).expect("a preset");
        let report = fuzz::run(&cfg).expect("run the fuzzer (as root)");
        println!("{}", report.summary());
        assert!(
            report.own_netns,
            "the fuzzer runs in a network namespace of its own"
        );
        assert_eq!(report.frames, frames, "every frame ran");
        assert_eq!(report.rejected, 0, "BPF_PROG_TEST_RUN refused no frame");
        assert!(
            !report.failed(),
            "fuzz {name} seed {seed} found bugs:\n{}",
            report.summary()
        );
    }
}

/// Tables with room: every invariant holds, pairing included.
#[test]
fn fuzz_default_node() {
    fuzz("default", 40_000);
}

/// A NAT range of 4 ports: the exhaustion paths (`drop_snat_no_port`).
#[test]
fn fuzz_tiny_port_range() {
    fuzz("tiny-ports", 20_000);
}

/// Every connection expired at its next packet: the stale-entry path
/// (replacing a connection, removing its old reverse entry) all the time.
/// Pairing is tolerated here until the conntrack rework (a failed
/// re-allocation leaves a forward entry without its reverse one).
#[test]
fn fuzz_zero_timeouts() {
    fuzz("zero-timeouts", 20_000);
}

/// Tables of 128 entries: LRU eviction all the time. The pairing checks
/// are tolerated here until the conntrack rework (issue 8, item 1).
#[test]
fn fuzz_lru_eviction() {
    fuzz("lru-eviction", 20_000);
}
