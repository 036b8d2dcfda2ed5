//! Bad input gets a clear error and nothing is half-applied.

use netpath::{
    config::Config,
    datapath::PinDir,
    reconcile::{self, ReconcileError},
    state::StateDir,
    sys::{netns::Netns, preflight::PreflightError},
};
use tests::harness::{TestNode, block_on, pod};

/// Nothing of the instance exists: no pod namespace, no pod in its state.
fn assert_untouched(node: &TestNode) {
    node.assert_nothing_built();
}

fn apply_err(node: &TestNode) -> String {
    let err = node.apply().expect_err("apply must fail");
    err.to_string()
}

#[test]
fn interface_name_over_15_bytes_is_rejected() {
    let mut node = TestNode::new("ifname", &[]);
    node.config.pods.push(pod("averyveryverylongpod"));
    let msg = apply_err(&node);
    assert!(
        msg.contains("np-averyveryverylongpod") && msg.contains("15"),
        "{msg}"
    );
    assert_untouched(&node);
}

#[test]
fn a_pod_name_used_twice_is_rejected() {
    let node = TestNode::new("dup", &["red", "blue", "red"]);
    let msg = apply_err(&node);
    assert!(msg.contains("red"), "{msg}");
    assert_untouched(&node);
}

#[test]
fn an_address_outside_the_pod_cidr_is_rejected() {
    let mut node = TestNode::new("outside", &["red"]);
    node.config.pods[0].address = Some("10.9.9.9".parse().unwrap());
    let msg = apply_err(&node);
    assert!(
        msg.contains("10.9.9.9") && msg.contains("10.200.0.0/24"),
        "{msg}"
    );
    assert_untouched(&node);
}

#[test]
fn an_exhausted_cidr_is_rejected_before_anything_changes() {
    let mut node = TestNode::new("exhaust", &["a", "b", "c"]);
    node.config.node.pod_cidr = "10.200.0.0/30".parse().unwrap();
    let msg = apply_err(&node);
    assert!(msg.contains("10.200.0.0/30"), "{msg}");
    assert_untouched(&node);
}

#[test]
fn a_pod_cidr_overlapping_the_uplink_network_is_rejected() {
    // The lab's uplink really has 192.168.50.2/24.
    let mut node = TestNode::new("overlap", &["red"]);
    node.config.node.pod_cidr = "192.168.50.128/25".parse().unwrap();
    let msg = apply_err(&node);
    assert!(msg.contains("192.168.50"), "{msg}");
    assert_untouched(&node);
}

#[test]
fn a_missing_uplink_is_rejected() {
    let mut node = TestNode::new("nouplink", &["red"]);
    node.config.node.uplink.as_mut().unwrap().name = "nosuchlink".into();
    let msg = apply_err(&node);
    assert!(msg.contains("nosuchlink"), "{msg}");
    assert_untouched(&node);
}

#[test]
fn a_foreign_namespace_with_a_pod_name_is_not_taken_over() {
    let node = TestNode::new("taken", &["red"]);
    let ns = node.pod_ns("red");
    block_on(Netns::create(&ns)).unwrap();
    let msg = apply_err(&node);
    assert!(msg.contains(&ns), "{msg}");
    block_on(Netns::delete(&ns)).unwrap();
    assert_untouched(&node);
}

#[test]
fn invalid_toml_names_the_problem() {
    let err = Config::from_toml_str("[node]\nname = \"x\"\npod_cidr = \"10.0.0.0/33\"\n")
        .expect_err("bad CIDR");
    assert!(
        err.to_string().contains("pod_cidr") || err.to_string().contains("10.0.0.0/33"),
        "{err}"
    );
    let err =
        Config::from_toml_str("[node]\nname = \"x\"\npod_cidr = \"10.0.0.0/24\"\nbogus = 1\n")
            .expect_err("unknown key");
    assert!(err.to_string().contains("bogus"), "{err}");
}

/// Drops CAP_NET_ADMIN, CAP_SYS_ADMIN and CAP_BPF from this thread's
/// effective set (capabilities are per thread), then runs `f`.
fn without_admin_caps<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            #[repr(C)]
            struct Header {
                version: u32,
                pid: i32,
            }
            #[repr(C)]
            #[derive(Clone, Copy, Default)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let mut hdr = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let mut data = [Data::default(); 2];
            // SAFETY: capget/capset with a v3 header and two data words.
            unsafe {
                assert_eq!(
                    libc::syscall(libc::SYS_capget, &raw mut hdr, data.as_mut_ptr()),
                    0
                );
                data[0].effective &= !((1 << 12) | (1 << 21));
                data[1].effective &= !(1 << (39 - 32));
                assert_eq!(
                    libc::syscall(libc::SYS_capset, &raw mut hdr, data.as_ptr()),
                    0
                );
            }
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn a_missing_privilege_is_reported_with_what_to_do() {
    let node = TestNode::new("nopriv", &["red"]);
    let err = without_admin_caps(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(reconcile::apply(&node.config))
            .expect_err("apply without privileges")
    });
    assert!(
        matches!(
            err,
            ReconcileError::Preflight(PreflightError::MissingPrivilege { .. })
        ),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains("CAP_BPF") && msg.contains("root"), "{msg}");
    assert_untouched(&node);
}

#[test]
fn a_failure_midway_rolls_back_every_step_of_the_apply() {
    let mut node = TestNode::new("rollback", &["red"]);
    node.apply().unwrap();
    node.config.pods.push(pod("blue"));
    node.config.pods.push(pod("green"));
    // Fail after green's namespace, veth, routes, link and map entry exist.
    let failpoint = format!("create-pod:{}", node.pod_ns("green"));
    // SAFETY: the variable names a namespace unique to this test, so other
    // tests that read it concurrently are unaffected.
    unsafe { std::env::set_var("NETPATH_FAILPOINT", &failpoint) };
    let err = node.apply().expect_err("failpoint");
    // SAFETY: as for set_var above.
    unsafe { std::env::remove_var("NETPATH_FAILPOINT") };
    let msg = err.to_string();
    assert!(msg.contains("rolled back"), "{msg}");

    // blue and green are gone entirely; red is as it was.
    for pod in ["blue", "green"] {
        assert!(!Netns::exists(&node.pod_ns(pod)), "{pod} namespace left");
        assert!(
            !PinDir::for_instance(node.instance())
                .ingress_link(&format!("np-{pod}"))
                .exists()
        );
    }
    let state = StateDir::for_instance(node.instance()).load().unwrap();
    assert_eq!(state.pods.keys().collect::<Vec<_>>(), vec!["red"]);
    let maps =
        netpath::datapath::NodeMaps::open_pinned(&PinDir::for_instance(node.instance())).unwrap();
    assert_eq!(maps.endpoints().unwrap().len(), 1);

    // And the next apply succeeds.
    let report = node.apply().unwrap();
    assert_eq!(report.created, vec!["blue", "green"]);
}
