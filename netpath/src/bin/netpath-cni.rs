//! `netpath-cni`: the CNI plugin binary. A container runtime runs it with
//! `CNI_*` variables and the network configuration on stdin; it prints the
//! result (or the error JSON, and exits 1) on stdout. Everything it does is
//! in [`netpath::cni`].

use std::{
    io::{self, IsTerminal as _, Read as _, Write as _},
    process::ExitCode,
};

use netpath::cni::{self, CniError, Code, Env, Version};

fn main() -> ExitCode {
    let env = Env::from_process();
    if env.command.is_none() && io::stdin().is_terminal() {
        eprintln!(
            "netpath-cni {}: the CNI plugin of netpath (CNI {}); a container runtime runs it \
             with CNI_COMMAND and the network configuration on stdin",
            env!("CARGO_PKG_VERSION"),
            Version::supported().join(", ")
        );
    }
    let mut stdin = Vec::new();
    let outcome = match io::stdin().read_to_end(&mut stdin) {
        Ok(_) => cni::run(&env, &stdin),
        Err(e) => Err(CniError::new(
            Code::Io,
            format!("cannot read the network configuration from stdin: {e}"),
        )),
    };
    let mut out = io::stdout().lock();
    match outcome {
        Ok(text) => {
            if !text.is_empty() && writeln!(out, "{text}").is_err() {
                return ExitCode::FAILURE;
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(out, "{}", e.to_json());
            ExitCode::FAILURE
        }
    }
}
