//! Crash-safe file writes: the state file and the IPAM leases are replaced
//! whole or not at all.

use std::{
    fs,
    io::{self, Write as _},
    path::{Path, PathBuf},
};

/// A failed [`write_atomic`]: the file, the step that failed and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {} ({step}): {source}", path.display())]
pub struct AtomicWriteError {
    /// The file being replaced.
    pub path: PathBuf,
    /// The step that failed, e.g. "syncing its directory".
    pub step: &'static str,
    /// Why.
    pub source: io::Error,
}

/// Replaces the file at `path` with `contents` atomically and durably: a
/// temporary file beside it (`<name>.tmp.<pid>`), fsync, rename over
/// `path`, fsync of the directory. Creates missing parent directories. A
/// crash leaves either the old or the new file, never a mix; the temporary
/// file is removed when a step fails.
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), AtomicWriteError> {
    let fail = |step: &'static str| {
        move |source: io::Error| AtomicWriteError {
            path: path.to_path_buf(),
            step,
            source,
        }
    };
    let name = path.file_name().ok_or_else(|| {
        fail("naming the file")(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path does not end in a file name",
        ))
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir).map_err(fail("creating its directory"))?;

    let mut tmp_name = name.to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut file = fs::File::create(&tmp).map_err(fail("creating a temporary file"))?;
        file.write_all(contents)
            .map_err(fail("writing the temporary file"))?;
        file.sync_all()
            .map_err(fail("syncing the temporary file"))?;
        fs::rename(&tmp, path).map_err(fail("renaming the temporary file over it"))
    })();
    if written.is_err() {
        // Best effort: the error that matters is the one returned.
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(fail("syncing its directory"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("netpath-atomic-{}", std::process::id()));
        let path = dir.join("sub").join("f.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.json"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn names_the_failed_step() {
        let err = write_atomic(Path::new("/proc/netpath-no/such/file"), b"x").unwrap_err();
        assert_eq!(err.step, "creating its directory");
        assert!(
            err.to_string().contains("/proc/netpath-no/such/file"),
            "{err}"
        );
    }
}
