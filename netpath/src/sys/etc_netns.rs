//! `/etc/netns/<netns>/`: the files `ip netns exec NETNS CMD` bind-mounts
//! over `/etc/` for CMD (`/etc/netns/NETNS/resolv.conf` over
//! `/etc/resolv.conf`, `/etc/netns/NETNS/hosts` over `/etc/hosts`): how a
//! named namespace gets its own resolver configuration.
//!
//! netpath writes two files there, [`RESOLV_CONF`] and [`HOSTS`], each
//! starting with the line [`MARKER`] so that it can tell its own files from
//! anyone else's: it rewrites and removes only files that carry it, never
//! overwrites one that does not, and removes the directory only once it is
//! empty. What the files say is the caller's business
//! (`crate::reconcile::dns`).

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use super::file::{AtomicWriteError, write_atomic};

/// Where `ip netns exec` looks for a namespace's own `/etc` files.
pub const ETC_NETNS_DIR: &str = "/etc/netns";
/// The resolver configuration (`/etc/resolv.conf` for `ip netns exec`).
pub const RESOLV_CONF: &str = "resolv.conf";
/// The static host table (`/etc/hosts` for `ip netns exec`).
pub const HOSTS: &str = "hosts";
/// How the first line of every file netpath writes there begins.
pub const MARKER: &str = "# netpath wrote this file";

/// A failure reading, writing or removing a file of `/etc/netns/<netns>/`.
#[derive(Debug, thiserror::Error)]
pub enum EtcNetnsError {
    /// A file or directory could not be read or removed.
    #[error(
        "cannot {action} {}: {source}; check that {ETC_NETNS_DIR} is a writable directory \
         (netpath runs as root)",
        path.display()
    )]
    Io {
        /// What netpath was doing, e.g. "read".
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] AtomicWriteError),
    /// A file netpath would write exists and netpath did not write it.
    #[error(
        "{} exists and netpath did not write it (its first line is not \"{MARKER} ...\"); \
         netpath never overwrites it: move it away, or remove [node.dns]",
        path.display()
    )]
    Foreign {
        /// The file.
        path: PathBuf,
    },
    /// The namespace name cannot be a directory under `/etc/netns`.
    #[error(
        "network namespace name {netns:?} cannot name a directory under {ETC_NETNS_DIR}; \
         use a name without '/' that is not '.' or '..'"
    )]
    BadName {
        /// The name.
        netns: String,
    },
}

/// One of netpath's files in the directory, as found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No such file.
    Missing,
    /// A file netpath wrote, with its whole text.
    Ours(String),
    /// Someone else's file: never touched.
    Foreign,
}

/// netpath's two files of one namespace, as found ([`EtcNetns::read`]): what
/// an undo puts back ([`EtcNetns::restore`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub resolv_conf: Found,
    pub hosts: Found,
}

impl Snapshot {
    /// The name of the first file that is someone else's, if any.
    pub fn foreign(&self) -> Option<&'static str> {
        [(RESOLV_CONF, &self.resolv_conf), (HOSTS, &self.hosts)]
            .into_iter()
            .find(|(_, found)| **found == Found::Foreign)
            .map(|(name, _)| name)
    }

    /// Whether either file is netpath's.
    pub fn any_ours(&self) -> bool {
        matches!(self.resolv_conf, Found::Ours(_)) || matches!(self.hosts, Found::Ours(_))
    }

    /// Whether both files are netpath's and say exactly `files`.
    pub fn holds(&self, files: &EtcFiles) -> bool {
        self.resolv_conf == Found::Ours(files.resolv_conf.clone())
            && self.hosts == Found::Ours(files.hosts.clone())
    }
}

/// The text of netpath's two files, each starting with a [`MARKER`] line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    pub resolv_conf: String,
    pub hosts: String,
}

/// `/etc/netns/<netns>/` of one namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcNetns {
    dir: PathBuf,
}

impl EtcNetns {
    /// The directory of namespace `netns` under [`ETC_NETNS_DIR`].
    pub fn new(netns: &str) -> Result<Self, EtcNetnsError> {
        Self::under(Path::new(ETC_NETNS_DIR), netns)
    }

    /// The directory of namespace `netns` under `root` (tests use a
    /// temporary one).
    pub fn under(root: &Path, netns: &str) -> Result<Self, EtcNetnsError> {
        if netns.is_empty() || netns == "." || netns == ".." || netns.contains('/') {
            return Err(EtcNetnsError::BadName {
                netns: netns.to_owned(),
            });
        }
        Ok(Self {
            dir: root.join(netns),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What the two files are now.
    pub fn read(&self) -> Result<Snapshot, EtcNetnsError> {
        Ok(Snapshot {
            resolv_conf: self.read_one(RESOLV_CONF)?,
            hosts: self.read_one(HOSTS)?,
        })
    }

    fn read_one(&self, name: &str) -> Result<Found, EtcNetnsError> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => Ok(match String::from_utf8(bytes) {
                Ok(text) if text.starts_with(MARKER) => Found::Ours(text),
                _ => Found::Foreign,
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Found::Missing),
            Err(source) => Err(EtcNetnsError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    /// Writes both files, each atomically (creating the directory): refuses,
    /// before writing either, when one exists and is not netpath's.
    pub fn write(&self, files: &EtcFiles) -> Result<(), EtcNetnsError> {
        if let Some(name) = self.read()?.foreign() {
            return Err(EtcNetnsError::Foreign {
                path: self.dir.join(name),
            });
        }
        for (name, text) in [(RESOLV_CONF, &files.resolv_conf), (HOSTS, &files.hosts)] {
            debug_assert!(
                text.starts_with(MARKER),
                "{name} must start with the marker"
            );
            write_atomic(&self.dir.join(name), text.as_bytes())?;
        }
        Ok(())
    }

    /// Removes netpath's files (those starting with [`MARKER`]), then the
    /// directory if that left it empty. Returns whether a file was removed.
    /// Someone else's files, and the directory holding them, stay.
    pub fn remove_ours(&self) -> Result<bool, EtcNetnsError> {
        let now = self.read()?;
        let mut removed = false;
        for (name, found) in [(RESOLV_CONF, &now.resolv_conf), (HOSTS, &now.hosts)] {
            if matches!(found, Found::Ours(_)) {
                self.remove_file(name)?;
                removed = true;
            }
        }
        self.remove_dir_if_empty()?;
        Ok(removed)
    }

    /// Puts the two files back as `snapshot` found them: a file netpath
    /// wrote gets its text back, a missing one is removed if netpath's
    /// (and the directory with it, if empty); someone else's is untouched.
    pub fn restore(&self, snapshot: &Snapshot) -> Result<(), EtcNetnsError> {
        let now = self.read()?;
        for (name, was, is) in [
            (RESOLV_CONF, &snapshot.resolv_conf, &now.resolv_conf),
            (HOSTS, &snapshot.hosts, &now.hosts),
        ] {
            match (was, is) {
                (Found::Ours(text), Found::Missing | Found::Ours(_)) => {
                    write_atomic(&self.dir.join(name), text.as_bytes())?;
                }
                (Found::Missing, Found::Ours(_)) => self.remove_file(name)?,
                _ => {}
            }
        }
        self.remove_dir_if_empty()
    }

    fn remove_file(&self, name: &str) -> Result<(), EtcNetnsError> {
        let path = self.dir.join(name);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(EtcNetnsError::Io {
                action: "remove",
                path,
                source: e,
            }),
            _ => Ok(()),
        }
    }

    /// Removes the directory if it exists and is empty.
    fn remove_dir_if_empty(&self) -> Result<(), EtcNetnsError> {
        let io_err = |action, source| EtcNetnsError::Io {
            action,
            path: self.dir.clone(),
            source,
        };
        let mut entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err("list", e)),
        };
        if entries.next().is_some() {
            return Ok(());
        }
        match fs::remove_dir(&self.dir) {
            // Someone put a file there since: theirs, so the directory stays.
            Err(e)
                if e.kind() != io::ErrorKind::NotFound
                    && e.kind() != io::ErrorKind::DirectoryNotEmpty =>
            {
                Err(io_err("remove", e))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh root for one test.
    fn root(tag: &str) -> PathBuf {
        let root = std::env::temp_dir().join(format!("netpath-etc-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root).unwrap();
        root
    }

    fn files(n: u8) -> EtcFiles {
        EtcFiles {
            resolv_conf: format!("{MARKER} for a test\nnameserver 192.0.2.{n}\n"),
            hosts: format!("{MARKER} for a test\n127.0.0.1 localhost\n"),
        }
    }

    #[test]
    fn writes_reads_back_and_removes_the_directory() {
        let root = root("cycle");
        let etc = EtcNetns::under(&root, "pod-a").unwrap();
        assert_eq!(
            etc.read().unwrap(),
            Snapshot {
                resolv_conf: Found::Missing,
                hosts: Found::Missing
            }
        );
        etc.write(&files(1)).unwrap();
        assert!(etc.read().unwrap().holds(&files(1)));
        assert!(!etc.read().unwrap().holds(&files(2)));
        etc.write(&files(2)).unwrap();
        assert_eq!(
            fs::read_to_string(root.join("pod-a/resolv.conf")).unwrap(),
            files(2).resolv_conf
        );
        assert!(etc.remove_ours().unwrap());
        assert!(!root.join("pod-a").exists());
        // Nothing left: still fine.
        assert!(!etc.remove_ours().unwrap());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn never_touches_someone_elses_files() {
        let root = root("foreign");
        let etc = EtcNetns::under(&root, "pod-b").unwrap();
        fs::create_dir_all(etc.dir()).unwrap();
        fs::write(etc.dir().join(RESOLV_CONF), "nameserver 198.51.100.1\n").unwrap();
        let err = etc.write(&files(1)).unwrap_err();
        assert!(matches!(err, EtcNetnsError::Foreign { .. }), "{err}");
        assert!(err.to_string().contains("pod-b/resolv.conf"), "{err}");
        // Refused before either file was written.
        assert_eq!(etc.read().unwrap().hosts, Found::Missing);
        assert_eq!(etc.read().unwrap().foreign(), Some(RESOLV_CONF));
        assert!(!etc.remove_ours().unwrap());
        assert_eq!(
            fs::read_to_string(etc.dir().join(RESOLV_CONF)).unwrap(),
            "nameserver 198.51.100.1\n"
        );

        // Ours go, theirs and the directory stay.
        fs::remove_file(etc.dir().join(RESOLV_CONF)).unwrap();
        etc.write(&files(1)).unwrap();
        fs::write(etc.dir().join("gai.conf"), "theirs\n").unwrap();
        assert!(etc.remove_ours().unwrap());
        let left: Vec<_> = fs::read_dir(etc.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, ["gai.conf"]);
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn restore_puts_back_what_was_there() {
        let root = root("restore");
        let etc = EtcNetns::under(&root, "pod-c").unwrap();
        let empty = etc.read().unwrap();
        etc.write(&files(1)).unwrap();
        let first = etc.read().unwrap();
        etc.write(&files(2)).unwrap();
        etc.restore(&first).unwrap();
        assert!(etc.read().unwrap().holds(&files(1)));
        etc.restore(&empty).unwrap();
        assert!(!etc.dir().exists());
        fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn refuses_names_that_are_not_one_directory() {
        for bad in ["", ".", "..", "a/b", "../etc"] {
            let err = EtcNetns::new(bad).unwrap_err();
            assert!(matches!(err, EtcNetnsError::BadName { .. }), "{err}");
        }
        assert_eq!(
            EtcNetns::new("demo-red").unwrap().dir(),
            Path::new("/etc/netns/demo-red")
        );
    }
}
