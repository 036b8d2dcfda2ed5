//! What netpath needs from the process and the kernel, checked before an
//! apply or destroy changes anything.

/// Why the process or the kernel cannot run netpath.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "netpath lacks {missing}; run it as root (e.g. `sudo netpath ...`) or grant \
         CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF"
    )]
    MissingPrivilege { missing: String },
    #[error(
        "kernel {found} is too old: netpath needs 6.6 or newer (tcx links, \
         bpf_redirect_peer); upgrade the kernel"
    )]
    KernelTooOld { found: String },
}

/// Checks for CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF.
pub fn check_privileges() -> Result<(), PreflightError> {
    const NEEDED: [(u32, &str); 3] = [
        (12, "CAP_NET_ADMIN"),
        (21, "CAP_SYS_ADMIN"),
        (39, "CAP_BPF"),
    ];
    let status = std::fs::read_to_string("/proc/thread-self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let missing: Vec<&str> = NEEDED
        .iter()
        .filter(|(bit, _)| eff & (1u64 << bit) == 0)
        .map(|(_, name)| *name)
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::MissingPrivilege {
            missing: missing.join(", "),
        })
    }
}

/// Checks that the kernel has tcx (6.6+).
pub fn check_kernel() -> Result<(), PreflightError> {
    let v = aya::util::KernelVersion::current().map_err(|e| PreflightError::KernelTooOld {
        found: format!("(unknown: {e})"),
    })?;
    if v < aya::util::KernelVersion::new(6, 6, 0) {
        return Err(PreflightError::KernelTooOld {
            found: format!("{v:?}"),
        });
    }
    Ok(())
}

/// Both checks: privileges first, then the kernel.
pub fn check() -> Result<(), PreflightError> {
    check_privileges()?;
    check_kernel()
}
