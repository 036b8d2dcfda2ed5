//! `netpath-cni` driven exactly as a container runtime drives it: the real
//! binary, `CNI_*` variables, the configuration on stdin, the result or the
//! error JSON on stdout and the exit code; against a `netpath daemon`
//! process serving a lab node, with namespaces the test made as the
//! runtime's. And through containerd's own client library (go-cni and
//! libcni, built from Debian's packaged sources).

use std::{
    fs,
    io::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use netpath::{api::PodInfo, sys::netns::Netns};
use serde_json::{Value, json};
use tests::{
    daemon::{DaemonProc, bin, netpath_ok},
    harness::{TestNode, block_on, unique},
};

/// A namespace the test made, as a runtime makes one before ADD; deleted
/// when dropped (netpath never deletes a namespace it was given).
struct RuntimeNetns {
    name: String,
}

impl RuntimeNetns {
    fn new(tag: &str) -> Self {
        let name = unique(tag);
        block_on(Netns::create(&name)).expect("create the runtime's namespace");
        Self { name }
    }

    /// `CNI_NETNS`.
    fn path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

impl Drop for RuntimeNetns {
    fn drop(&mut self) {
        if let Err(e) = block_on(Netns::delete(&self.name)) {
            eprintln!("cleanup: delete {}: {e}", self.name);
        }
    }
}

/// The plugin's configuration as a runtime derives it from a conflist.
fn netconf(instance: &str, version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "netpath-test",
        "type": "netpath-cni",
        "instance": instance,
        "dns": {"nameservers": ["192.168.50.1"], "search": ["cni.test"]},
    })
}

/// Runs `netpath-cni` with only `vars` in its environment and `stdin`.
fn plugin(vars: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin("netpath-cni"))
        .env_clear()
        .envs(vars.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netpath-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin)
        .expect("write the configuration");
    child.wait_with_output().expect("wait for netpath-cni")
}

/// `ADD`, `DEL` or `CHECK` of container `id`'s `eth0`, with `CNI_NETNS`
/// when `netns` is given.
fn attachment(command: &str, id: &str, netns: Option<&str>, conf: &Value) -> Output {
    let mut vars = vec![
        ("CNI_COMMAND", command),
        ("CNI_CONTAINERID", id),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    if let Some(ns) = netns {
        vars.push(("CNI_NETNS", ns));
    }
    plugin(&vars, conf.to_string().as_bytes())
}

/// The output of a command that must succeed: exit 0, nothing on stderr
/// but logs; its stdout.
fn success(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

/// The error JSON of a command that must fail with `code`.
fn failure(what: &str, out: &Output, code: u64) -> Value {
    assert!(
        !out.status.success(),
        "{what} should have failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not the error JSON ({e}):\n{}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(err["code"], code, "{what}: {err:#}");
    for key in ["cniVersion", "msg", "details"] {
        assert!(err[key].is_string(), "{what}: no {key} in {err:#}");
    }
    err
}

fn add(id: &str, ns: &RuntimeNetns, conf: &Value) -> Value {
    let out = success(
        &format!("ADD {id}"),
        &attachment("ADD", id, Some(&ns.path()), conf),
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("the ADD result is not JSON ({e}): {out}"))
}

/// The pod's address in an ADD result (`ips[0]`, `A/32`).
fn result_address(result: &Value) -> Ipv4Addr {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    a.strip_suffix("/32")
        .unwrap_or_else(|| panic!("{a} is not a /32"))
        .parse()
        .unwrap()
}

/// The daemon's pods (`netpath pod list -o json`).
fn pods(instance: &str) -> Vec<PodInfo> {
    serde_json::from_str(&netpath_ok(&["pod", "list", "-i", instance, "-o", "json"]))
        .expect("pod list -o json is JSON")
}

fn attached(instance: &str, id: &str) -> Option<PodInfo> {
    pods(instance)
        .into_iter()
        .find(|p| p.container_id.as_deref() == Some(id))
}

/// Real `ping` from namespace `ns`: whether 2 of 2 came back.
fn pings(ns: &str, dst: Ipv4Addr) -> bool {
    Command::new("ip")
        .args(["netns", "exec", ns, "ping", "-c", "2", "-W", "2", "-q"])
        .arg(dst.to_string())
        .output()
        .expect("run ping")
        .status
        .success()
}

/// Whether namespace `ns` has an interface `name` (real `ip -n NS link`).
fn has_link(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", name])
        .output()
        .expect("run ip")
        .status
        .success()
}

/// The IPv4 addresses on `dev` in `ns` (real `ip -n NS -4 -o addr`).
fn addresses(ns: &str, dev: &str) -> String {
    let out = Command::new("ip")
        .args(["-n", ns, "-4", "-o", "addr", "show", "dev", dev])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes the pod's address behind netpath's back (real `ip addr del`).
fn remove_address(ns: &str, addr: Ipv4Addr) {
    let cidr = format!("{addr}/32");
    let del = Command::new("ip")
        .args(["-n", ns, "addr", "del", &cidr, "dev", "eth0"])
        .output()
        .expect("run ip");
    assert!(
        del.status.success(),
        "ip addr del: {}",
        String::from_utf8_lossy(&del.stderr)
    );
}

#[test]
fn add_gives_the_pod_an_address_it_can_ping_from() {
    let ns = RuntimeNetns::new("cns");
    let node = TestNode::new("cniadd", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();
    let conf = netconf(i, "1.1.0");

    let result = add("ctr-add-1", &ns, &conf);
    let addr = result_address(&result);
    let gw = node.gateway();
    assert_eq!(result["cniVersion"], "1.1.0", "{result:#}");
    // The host side first, then the pod side in the runtime's namespace.
    let ifs = result["interfaces"].as_array().expect("interfaces");
    assert_eq!(ifs.len(), 2, "{result:#}");
    assert!(
        ifs[0]["name"].as_str().unwrap().starts_with("npc"),
        "{result:#}"
    );
    assert!(ifs[0].get("sandbox").is_none(), "{result:#}");
    assert_eq!(ifs[1]["name"], "eth0");
    assert_eq!(ifs[1]["sandbox"], ns.path());
    assert_eq!(result["ips"][0]["interface"], 1);
    assert_eq!(result["ips"][0]["gateway"], gw.to_string());
    assert_eq!(
        result["routes"],
        json!([{"dst": "0.0.0.0/0", "gw": gw.to_string()}])
    );
    assert_eq!(result["dns"], conf["dns"]);

    // What the result says is what is in the namespace.
    let ip_addr = addresses(&ns.name, "eth0");
    assert!(ip_addr.contains(&format!("{addr}/32")), "{ip_addr}");
    let mac = Command::new("ip")
        .args(["-n", &ns.name, "-o", "link", "show", "dev", "eth0"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&mac.stdout).contains(ifs[1]["mac"].as_str().unwrap()),
        "{}",
        String::from_utf8_lossy(&mac.stdout)
    );
    // The daemon knows the container.
    let pod = attached(i, "ctr-add-1").expect("the daemon lists the attachment");
    assert_eq!(pod.address, addr);
    assert!(pod.healthy, "{pod:?}");

    // The pod reaches another pod and is reached by it.
    let other = node.pod_addr("a");
    assert!(
        pings(&ns.name, other),
        "{} cannot ping a ({other})",
        ns.name
    );
    assert!(
        pings(&node.pod_ns("a"), addr),
        "a cannot ping the CNI pod ({addr})"
    );

    success(
        "DEL",
        &attachment("DEL", "ctr-add-1", Some(&ns.path()), &conf),
    );
}

#[test]
fn a_fixed_address_comes_from_runtime_config_or_cni_args() {
    let ns1 = RuntimeNetns::new("cfix1");
    let ns2 = RuntimeNetns::new("cfix2");
    let node = TestNode::new("cnifix", &[]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();

    let mut conf = netconf(i, "1.0.0");
    conf["runtimeConfig"] = json!({"ips": ["10.200.0.77/24"]});
    let result = add("ctr-fix-1", &ns1, &conf);
    assert_eq!(result_address(&result), Ipv4Addr::new(10, 200, 0, 77));
    assert_eq!(result["cniVersion"], "1.0.0");
    assert!(
        result["interfaces"][1].get("mtu").is_none(),
        "no mtu before 1.1.0"
    );

    let out = plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "ctr-fix-2"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", &ns2.path()),
            (
                "CNI_ARGS",
                "IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.200.0.78",
            ),
        ],
        netconf(i, "0.4.0").to_string().as_bytes(),
    );
    let result: Value = serde_json::from_str(&success("ADD with IP=", &out)).unwrap();
    assert_eq!(result_address(&result), Ipv4Addr::new(10, 200, 0, 78));
    assert_eq!(
        result["ips"][0]["version"], "4",
        "0.4.0 results say the IP version"
    );
    assert!(addresses(&ns2.name, "eth0").contains("10.200.0.78/32"));
    assert!(pings(&ns2.name, Ipv4Addr::new(10, 200, 0, 77)));

    // An address outside the pod CIDR: the daemon refuses, nothing made.
    let ns3 = RuntimeNetns::new("cfix3");
    conf["runtimeConfig"] = json!({"ips": ["10.9.9.9"]});
    let out = attachment("ADD", "ctr-fix-3", Some(&ns3.path()), &conf);
    let err = failure("ADD outside the pod CIDR", &out, 100);
    assert!(
        err["details"].as_str().unwrap().contains("10.9.9.9"),
        "{err:#}"
    );
    assert!(!has_link(&ns3.name, "eth0"));
    assert!(attached(i, "ctr-fix-3").is_none());
}

#[test]
fn check_passes_then_names_the_address_that_was_removed() {
    let ns = RuntimeNetns::new("cchk");
    let node = TestNode::new("cnichk", &[]);
    let _daemon = DaemonProc::start(&node);
    let conf = netconf(node.instance(), "1.1.0");

    let result = add("ctr-chk", &ns, &conf);
    let addr = result_address(&result);
    let mut check_conf = conf.clone();
    check_conf["prevResult"] = result.clone();
    let out = success(
        "CHECK",
        &attachment("CHECK", "ctr-chk", Some(&ns.path()), &check_conf),
    );
    assert_eq!(out, "", "CHECK prints nothing on success");

    // A prevResult that is not what ADD gave is an error naming both.
    let mut wrong = check_conf.clone();
    wrong["prevResult"]["ips"][0]["address"] = json!("10.200.0.250/32");
    let err = failure(
        "CHECK with another address",
        &attachment("CHECK", "ctr-chk", Some(&ns.path()), &wrong),
        102,
    );
    let details = err["details"].as_str().unwrap();
    assert!(
        details.contains("10.200.0.250/32") && details.contains(&format!("{addr}/32")),
        "{err:#}"
    );

    // Someone removes the pod's address: CHECK says which.
    remove_address(&ns.name, addr);
    let err = failure(
        "CHECK after ip addr del",
        &attachment("CHECK", "ctr-chk", Some(&ns.path()), &check_conf),
        102,
    );
    assert!(
        err["details"]
            .as_str()
            .unwrap()
            .contains(&format!("{addr}/32")),
        "{err:#}"
    );
    assert_eq!(err["cniVersion"], "1.1.0");

    // CHECK of a container never added: refused by the daemon.
    let err = failure(
        "CHECK of an unknown container",
        &attachment("CHECK", "ctr-nobody", Some(&ns.path()), &check_conf),
        100,
    );
    assert!(
        err["details"].as_str().unwrap().contains("ctr-nobody"),
        "{err:#}"
    );
}

#[test]
fn del_is_idempotent_and_needs_no_netns() {
    let ns1 = RuntimeNetns::new("cdel1");
    let ns2 = RuntimeNetns::new("cdel2");
    let node = TestNode::new("cnidel", &[]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();
    let conf = netconf(i, "1.1.0");

    add("ctr-del-1", &ns1, &conf);
    let host = attached(i, "ctr-del-1").unwrap().host_ifname;
    for round in ["DEL", "DEL again"] {
        let out = success(
            round,
            &attachment("DEL", "ctr-del-1", Some(&ns1.path()), &conf),
        );
        assert_eq!(out, "", "{round} prints nothing");
    }
    assert!(attached(i, "ctr-del-1").is_none());
    assert!(!has_link(&ns1.name, "eth0"), "eth0 left in {}", ns1.name);
    assert!(
        !has_link(&node.lab.node_netns, &host),
        "{host} left in the node"
    );
    assert!(
        Netns::exists(&ns1.name),
        "the runtime's namespace is the runtime's"
    );

    // Without CNI_NETNS (the runtime lost or removed the namespace).
    add("ctr-del-2", &ns2, &conf);
    let mut with_prev = conf.clone();
    with_prev["prevResult"] = json!({"cniVersion": "1.1.0"});
    success(
        "DEL without CNI_NETNS",
        &attachment("DEL", "ctr-del-2", None, &with_prev),
    );
    assert!(attached(i, "ctr-del-2").is_none());
    assert!(!has_link(&ns2.name, "eth0"));
    // A container that was never added.
    success(
        "DEL of an unknown container",
        &attachment("DEL", "ctr-never", None, &conf),
    );
}

#[test]
fn status_follows_the_daemon_and_add_waits_for_it() {
    let ns = RuntimeNetns::new("cstat");
    let node = TestNode::new("cnistat", &["a"]);
    let mut daemon = DaemonProc::start(&node);
    let i = node.instance();
    let conf = netconf(i, "1.1.0");
    let status = || {
        plugin(
            &[("CNI_COMMAND", "STATUS"), ("CNI_PATH", "/opt/cni/bin")],
            conf.to_string().as_bytes(),
        )
    };

    assert_eq!(success("STATUS", &status()), "");

    assert!(daemon.stop(), "the daemon stopped cleanly");
    let err = failure("STATUS without the daemon", &status(), 50);
    assert!(err["details"].as_str().unwrap().contains(i), "{err:#}");
    let err = failure(
        "ADD without the daemon",
        &attachment("ADD", "ctr-stat", Some(&ns.path()), &conf),
        11,
    );
    assert!(
        err["details"].as_str().unwrap().contains("netpath daemon"),
        "{err:#}"
    );
    assert!(!has_link(&ns.name, "eth0"));
    failure(
        "DEL without the daemon",
        &attachment("DEL", "ctr-stat", Some(&ns.path()), &conf),
        11,
    );

    // Later, as the runtime retries, it works.
    daemon.restart();
    assert_eq!(success("STATUS", &status()), "");
    let result = add("ctr-stat", &ns, &conf);
    assert!(pings(&ns.name, node.pod_addr("a")));
    assert!(pings(&node.pod_ns("a"), result_address(&result)));
}

#[test]
fn gc_keeps_the_valid_attachment_and_removes_the_other() {
    let ns1 = RuntimeNetns::new("cgc1");
    let ns2 = RuntimeNetns::new("cgc2");
    let node = TestNode::new("cnigc", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();
    let conf = netconf(i, "1.1.0");

    add("ctr-keep", &ns1, &conf);
    add("ctr-stale", &ns2, &conf);
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "ctr-keep", "ifname": "eth0"}]);
    let out = plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        gc.to_string().as_bytes(),
    );
    assert_eq!(success("GC", &out), "");

    assert!(attached(i, "ctr-keep").is_some());
    assert!(attached(i, "ctr-stale").is_none());
    assert!(
        !has_link(&ns2.name, "eth0"),
        "the stale attachment's eth0 is gone"
    );
    // The operator's pod is not the runtime's to collect.
    assert!(pods(i).iter().any(|p| p.name == "a"));
    assert!(pings(&ns1.name, node.pod_addr("a")));

    // GC of an older configuration is not in its version.
    gc["cniVersion"] = json!("1.0.0");
    let out = plugin(
        &[("CNI_COMMAND", "GC"), ("CNI_PATH", "/opt/cni/bin")],
        gc.to_string().as_bytes(),
    );
    failure("GC in 1.0.0", &out, 1);
    assert!(attached(i, "ctr-keep").is_some());
}

#[test]
fn version_lists_the_supported_versions() {
    let out = plugin(&[("CNI_COMMAND", "VERSION")], br#"{"cniVersion":"1.0.0"}"#);
    let v: Value = serde_json::from_str(&success("VERSION", &out)).unwrap();
    assert_eq!(
        v,
        json!({
            "cniVersion": "1.0.0",
            "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"],
        })
    );
}

#[test]
fn bad_input_gets_the_spec_error_codes_on_stdout() {
    let conf = netconf("nosuch", "1.1.0");
    // Stdin that is no JSON: "failed to decode content".
    let out = plugin(
        &[
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", "c1"),
            ("CNI_IFNAME", "eth0"),
            ("CNI_NETNS", "/run/netns/nosuch"),
        ],
        b"{\"cniVersion\": \"1.1.0\", \"name\": ",
    );
    failure("malformed JSON", &out, 6);
    // JSON without the netpath instance: "invalid network config".
    let mut no_instance = conf.clone();
    no_instance.as_object_mut().unwrap().remove("instance");
    let err = failure(
        "no instance",
        &attachment("ADD", "c1", Some("/run/netns/nosuch"), &no_instance),
        7,
    );
    assert!(
        err["details"].as_str().unwrap().contains("\"instance\""),
        "{err:#}"
    );
    // ADD without CNI_NETNS: "invalid environment variables".
    let err = failure(
        "ADD without CNI_NETNS",
        &attachment("ADD", "c1", None, &conf),
        4,
    );
    assert!(
        err["details"].as_str().unwrap().contains("CNI_NETNS"),
        "{err:#}"
    );
    // A version netpath-cni does not speak.
    let err = failure(
        "cniVersion 0.2.0",
        &attachment(
            "ADD",
            "c1",
            Some("/run/netns/x"),
            &netconf("nosuch", "0.2.0"),
        ),
        1,
    );
    assert!(
        err["details"].as_str().unwrap().contains("1.1.0"),
        "{err:#}"
    );
    // CHECK in 0.3.1, which has no CHECK.
    failure(
        "CHECK in 0.3.1",
        &attachment(
            "CHECK",
            "c1",
            Some("/run/netns/x"),
            &netconf("nosuch", "0.3.1"),
        ),
        1,
    );
}

// --- containerd's go-cni -----------------------------------------------

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(unique(tag));
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Builds `tests/go/cni-driver` offline, from Debian's go-cni and libcni
/// sources (`golang-github-containerd-go-cni-dev`), into `dir`.
fn build_go_driver(dir: &Path) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("go/cni-driver");
    let out = dir.join("cni-driver");
    let gopath = dir.join("gopath");
    fs::create_dir_all(&gopath).unwrap();
    let build = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env("GO111MODULE", "off")
        .env(
            "GOPATH",
            format!("{}:/usr/share/gocode", gopath.display()),
        )
        .env("GOCACHE", dir.join("gocache"))
        .env("GOPROXY", "off")
        // Pure Go: no C compiler needed.
        .env("CGO_ENABLED", "0")
        .env("GOFLAGS", "")
        .output()
        .expect(
            "run go (the Debian packages golang-go and golang-github-containerd-go-cni-dev; \
             cargo xtask test installs them)",
        );
    assert!(
        build.status.success(),
        "building the go-cni driver failed:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    out
}

#[test]
fn containerds_go_cni_sets_up_checks_and_removes_a_pod() {
    let tmp = TempDir::new("gocni");
    let driver = build_go_driver(&tmp.0);
    let ns = RuntimeNetns::new("cgo");
    let node = TestNode::new("cnigo", &["a"]);
    let _daemon = DaemonProc::start(&node);
    let i = node.instance();

    // The plugin installed into a plugin directory, a conflist into a
    // configuration directory, as an operator does. go-cni 1.1.7's libcni
    // (1.1.2) speaks CNI up to 1.0.0.
    let plugins = tmp.0.join("bin");
    let confs = tmp.0.join("net.d");
    fs::create_dir_all(&plugins).unwrap();
    fs::create_dir_all(&confs).unwrap();
    fs::copy(bin("netpath-cni"), plugins.join("netpath-cni")).unwrap();
    let conflist = json!({
        "cniVersion": "1.0.0",
        "name": "netpath-gocni",
        "plugins": [{
            "type": "netpath-cni",
            "instance": i,
            "dns": {"nameservers": ["192.168.50.1"]},
        }],
    });
    fs::write(confs.join("10-netpath.conflist"), conflist.to_string()).unwrap();
    let id = unique("gocni-ctr");
    let run = |op: &str| {
        Command::new(&driver)
            .arg("-plugin-dir")
            // loopback (WithLoNetwork) from Debian's containernetworking-plugins.
            .arg(format!("{}:/usr/lib/cni", plugins.display()))
            .arg("-conf-dir")
            .arg(&confs)
            .arg("-cache-dir")
            .arg(tmp.0.join("cache"))
            .args([op, &id, &ns.path()])
            .output()
            .expect("run the go-cni driver")
    };

    let out = success("go-cni setup", &run("setup"));
    let setup: Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("setup printed no JSON ({e}): {out}"));
    let eth0 = &setup["interfaces"]["eth0"];
    assert_eq!(eth0["Sandbox"], ns.path(), "{setup:#}");
    let addr: Ipv4Addr = eth0["IPConfigs"][0]["IP"]
        .as_str()
        .unwrap_or_else(|| panic!("no address for eth0: {setup:#}"))
        .parse()
        .unwrap();
    assert_eq!(eth0["IPConfigs"][0]["Gateway"], node.gateway().to_string());
    assert!(
        setup["dns"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["nameservers"] == json!(["192.168.50.1"])),
        "{setup:#}"
    );
    assert!(addresses(&ns.name, "eth0").contains(&format!("{addr}/32")));
    assert_eq!(attached(i, &id).expect("attached").address, addr);
    assert!(pings(&ns.name, node.pod_addr("a")));
    assert!(pings(&node.pod_ns("a"), addr));

    success("go-cni check", &run("check"));
    // The address removed behind the runtime's back: go-cni's check fails
    // with netpath's reason.
    remove_address(&ns.name, addr);
    let check = run("check");
    assert!(
        !check.status.success(),
        "go-cni check passed without the address"
    );
    let why = String::from_utf8_lossy(&check.stderr);
    assert!(why.contains(&format!("{addr}/32")), "{why}");

    success("go-cni remove", &run("remove"));
    assert!(attached(i, &id).is_none(), "the attachment is gone");
    assert!(!has_link(&ns.name, "eth0"));
    // containerd removes again when it retries a sandbox teardown.
    success("go-cni remove again", &run("remove"));
}
