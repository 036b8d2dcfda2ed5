//! `bench/results/<id>.json`: every raw sample, the summary, the machine,
//! the setups' wiring and the memory figure.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};

use super::Results;

/// Writes `<dir>/<id>.json` and returns its path.
pub fn write(results: &Results, dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
    let path = dir.join(format!("{}.json", results.id));
    let text = serde_json::to_string_pretty(results).context("serialize the results")?;
    std::fs::write(&path, text + "\n").with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
