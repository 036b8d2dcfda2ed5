//! `cargo xtask run | tee log`, then Ctrl-C: `tee` dies first, so the demo
//! cleans up with its standard output and error closed. Cleanup must not
//! depend on them: every namespace and pin of the demo goes.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

const DEMO_NAMESPACES: [&str; 4] = [
    "netpath-demo-node",
    "netpath-demo-lan",
    "demo-red",
    "demo-blue",
];

#[test]
fn the_demo_cleans_up_on_ctrl_c_with_its_output_pipe_closed() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_netpath"))
        .arg("demo")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start netpath demo");
    // Read until the demo says it is up, as `tee` would.
    let mut out = BufReader::new(demo.stdout.take().unwrap());
    let mut seen = String::new();
    let up = loop {
        let mut line = String::new();
        match out.read_line(&mut line) {
            Ok(0) | Err(_) => break false,
            Ok(_) if line.contains("Press Ctrl-C") => break true,
            Ok(_) => seen.push_str(&line),
        }
    };
    assert!(up, "the demo did not come up:\n{seen}");
    for ns in DEMO_NAMESPACES {
        assert!(Path::new("/run/netns").join(ns).exists(), "{ns} missing");
    }
    // `tee` is gone: both pipes close before the Ctrl-C arrives.
    drop(out);
    drop(demo.stderr.take());
    // SAFETY: kill(2) on the pid of a child this test spawned and still owns.
    let rc = unsafe { libc::kill(demo.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(rc, 0, "SIGINT: {}", std::io::Error::last_os_error());

    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = demo.try_wait().expect("wait for the demo") {
            break status;
        }
        assert!(Instant::now() < deadline, "the demo did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    let left: Vec<&str> = DEMO_NAMESPACES
        .into_iter()
        .filter(|ns| Path::new("/run/netns").join(ns).exists())
        .collect();
    assert!(
        left.is_empty(),
        "namespaces left after Ctrl-C: {left:?} ({status})"
    );
    assert!(
        !Path::new("/sys/fs/bpf/netpath/demo").exists(),
        "pins left after Ctrl-C ({status})"
    );
}
