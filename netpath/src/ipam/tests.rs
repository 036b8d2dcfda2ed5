//! Unit tests of [`super`]: leases, planning, the lease file.

use super::*;

fn addr(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

fn ipam24() -> Ipam {
    Ipam::new(cidr("10.200.0.0/24"), addr("10.200.0.1"))
}

fn pods(list: &[(&str, Option<&str>)]) -> Vec<(String, Option<Ipv4Addr>)> {
    list.iter()
        .map(|(p, a)| (p.to_string(), a.map(addr)))
        .collect()
}

fn leases(ipam: &Ipam) -> Vec<(&str, String)> {
    ipam.leases()
        .iter()
        .map(|(p, a)| (p.as_str(), a.to_string()))
        .collect()
}

fn assert_mentions(err: &IpamError, mentions: &[&str]) {
    let msg = err.to_string();
    for m in mentions {
        assert!(msg.contains(m), "{msg:?} does not mention {m:?}");
    }
}

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("netpath-ipam-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn capacity() {
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/30"), addr("10.0.0.1")).capacity(),
        1
    );
    assert_eq!(ipam24().capacity(), 253);
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/24"), addr("10.0.0.200")).capacity(),
        253
    );
    // A gateway outside the CIDR (or on its edge) reserves nothing more.
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/24"), addr("10.9.0.1")).capacity(),
        254
    );
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/24"), addr("10.0.0.0")).capacity(),
        254
    );
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/31"), addr("10.0.0.1")).capacity(),
        0
    );
    assert_eq!(
        Ipam::new(cidr("10.0.0.0/32"), addr("10.0.0.1")).capacity(),
        0
    );
    assert_eq!(
        Ipam::new(cidr("0.0.0.0/0"), addr("0.0.0.1")).capacity(),
        u32::MAX - 2
    );
}

#[test]
fn new_truncates_the_cidr() {
    let ipam = Ipam::new(cidr("10.200.0.9/24"), addr("10.200.0.1"));
    assert_eq!(ipam.cidr(), cidr("10.200.0.0/24"));
    assert_eq!(ipam.gateway(), addr("10.200.0.1"));
}

#[test]
fn assign_lowest_free_and_idempotent() {
    let mut ipam = ipam24();
    assert_eq!(ipam.assign("a", None).unwrap(), addr("10.200.0.2"));
    assert_eq!(ipam.assign("b", None).unwrap(), addr("10.200.0.3"));
    assert_eq!(ipam.assign("a", None).unwrap(), addr("10.200.0.2"));
    assert_eq!(
        ipam.assign("a", Some(addr("10.200.0.2"))).unwrap(),
        addr("10.200.0.2")
    );
    assert_eq!(ipam.lease("a"), Some(addr("10.200.0.2")));
    assert_eq!(ipam.lease("zzz"), None);
    assert_eq!(ipam.leases().len(), 2);
}

#[test]
fn assign_skips_a_gateway_in_the_middle() {
    let mut ipam = Ipam::new(cidr("10.0.0.0/29"), addr("10.0.0.2"));
    let got: Vec<_> = ["a", "b", "c"]
        .iter()
        .map(|p| ipam.assign(p, None).unwrap().to_string())
        .collect();
    assert_eq!(got, ["10.0.0.1", "10.0.0.3", "10.0.0.4"]);
}

#[test]
fn assign_requested_replaces_the_old_lease() {
    let mut ipam = ipam24();
    ipam.assign("a", None).unwrap();
    assert_eq!(
        ipam.assign("a", Some(addr("10.200.0.50"))).unwrap(),
        addr("10.200.0.50")
    );
    assert_eq!(leases(&ipam), [("a", "10.200.0.50".into())]);
    // The old address is free again.
    assert_eq!(ipam.assign("b", None).unwrap(), addr("10.200.0.2"));
}

#[test]
fn release_frees_the_address() {
    let mut ipam = ipam24();
    ipam.assign("a", None).unwrap();
    ipam.assign("b", None).unwrap();
    assert_eq!(ipam.release("a"), Some(addr("10.200.0.2")));
    assert_eq!(ipam.release("a"), None);
    assert_eq!(ipam.assign("c", None).unwrap(), addr("10.200.0.2"));
}

#[test]
fn assign_errors() {
    let mut ipam = ipam24();
    ipam.assign("a", Some(addr("10.200.0.9"))).unwrap();

    let err = ipam.assign("b", Some(addr("10.200.0.9"))).unwrap_err();
    assert!(matches!(err, IpamError::InUse { .. }));
    assert_mentions(&err, &["'b'", "10.200.0.9", "'a'"]);

    let err = ipam.assign("b", Some(addr("10.0.1.7"))).unwrap_err();
    assert!(matches!(
        err,
        IpamError::Address(AddressError::OutsideCidr { .. })
    ));
    assert_mentions(&err, &["'b'", "10.0.1.7", "10.200.0.0/24"]);

    for (a, why) in [
        ("10.200.0.0", "network address"),
        ("10.200.0.255", "broadcast address"),
        ("10.200.0.1", "gateway"),
    ] {
        let err = ipam.assign("b", Some(addr(a))).unwrap_err();
        assert!(matches!(
            err,
            IpamError::Address(AddressError::Reserved { .. })
        ));
        assert_mentions(&err, &["'b'", a, why]);
    }
    // Nothing changed.
    assert_eq!(leases(&ipam), [("a", "10.200.0.9".into())]);
}

#[test]
fn assign_exhausted() {
    let mut ipam = Ipam::new(cidr("10.0.0.0/30"), addr("10.0.0.1"));
    assert_eq!(ipam.assign("a", None).unwrap(), addr("10.0.0.2"));
    let err = ipam.assign("b", None).unwrap_err();
    assert!(matches!(
        err,
        IpamError::Exhausted {
            capacity: 1,
            wanted: 2,
            ..
        }
    ));
    assert_mentions(&err, &["10.0.0.0/30", "room for 1", "2 need"]);
}

#[test]
fn plan_fresh_in_pod_order() {
    let p = plan(&ipam24(), &pods(&[("red", None), ("blue", None)])).unwrap();
    assert_eq!(
        leases(&p),
        [("blue", "10.200.0.3".into()), ("red", "10.200.0.2".into())]
    );
    assert_eq!(p.cidr(), ipam24().cidr());
    assert_eq!(p.gateway(), ipam24().gateway());
}

#[test]
fn plan_is_idempotent() {
    let want = pods(&[
        ("a", None),
        ("b", Some("10.200.0.2")),
        ("c", None),
        ("d", Some("10.200.0.40")),
    ]);
    let first = plan(&ipam24(), &want).unwrap();
    let second = plan(&first, &want).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        leases(&first),
        [
            ("a", "10.200.0.3".into()),
            ("b", "10.200.0.2".into()),
            ("c", "10.200.0.4".into()),
            ("d", "10.200.0.40".into()),
        ]
    );
}

#[test]
fn plan_adding_a_pod_moves_no_other() {
    let before = plan(&ipam24(), &pods(&[("b", None), ("c", None)])).unwrap();
    // "a" comes first in pod order but must not take b's address.
    let after = plan(&before, &pods(&[("a", None), ("b", None), ("c", None)])).unwrap();
    assert_eq!(after.lease("b"), before.lease("b"));
    assert_eq!(after.lease("c"), before.lease("c"));
    assert_eq!(after.lease("a"), Some(addr("10.200.0.4")));
}

#[test]
fn plan_reuses_a_deleted_pods_address() {
    let before = plan(&ipam24(), &pods(&[("a", None), ("b", None), ("c", None)])).unwrap();
    let after = plan(&before, &pods(&[("a", None), ("c", None)])).unwrap();
    assert_eq!(after.lease("b"), None);
    assert_eq!(after.leases().len(), 2);
    assert_eq!(after.lease("c"), before.lease("c"));
    let again = plan(&after, &pods(&[("a", None), ("c", None), ("d", None)])).unwrap();
    assert_eq!(again.lease("d"), before.lease("b"));
}

#[test]
fn plan_static_wins_over_a_dynamic_lease() {
    let before = plan(&ipam24(), &pods(&[("a", None), ("b", None)])).unwrap();
    assert_eq!(before.lease("a"), Some(addr("10.200.0.2")));
    // "c" now asks for a's address: c gets it, a moves, b stays.
    let after = plan(
        &before,
        &pods(&[("a", None), ("b", None), ("c", Some("10.200.0.2"))]),
    )
    .unwrap();
    assert_eq!(after.lease("c"), Some(addr("10.200.0.2")));
    assert_eq!(after.lease("b"), before.lease("b"));
    assert_eq!(after.lease("a"), Some(addr("10.200.0.4")));
}

#[test]
fn plan_moves_a_pod_to_its_requested_address() {
    let before = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
    let after = plan(&before, &pods(&[("a", Some("10.200.0.99"))])).unwrap();
    assert_eq!(leases(&after), [("a", "10.200.0.99".into())]);
    // Dropping the request keeps the address.
    let later = plan(&after, &pods(&[("a", None)])).unwrap();
    assert_eq!(later, after);
}

#[test]
fn plan_exhausted() {
    let small = Ipam::new(cidr("10.0.0.0/29"), addr("10.0.0.1"));
    let five: Vec<_> = (0..5).map(|i| (format!("p{i}"), None)).collect();
    plan(&small, &five).unwrap();
    let six: Vec<_> = (0..6).map(|i| (format!("p{i}"), None)).collect();
    let err = plan(&small, &six).unwrap_err();
    assert!(matches!(
        err,
        IpamError::Exhausted {
            capacity: 5,
            wanted: 6,
            ..
        }
    ));
    assert_mentions(&err, &["10.0.0.0/29", "room for 5", "6 need"]);
}

#[test]
fn plan_errors() {
    let err = plan(
        &ipam24(),
        &pods(&[("a", Some("10.200.0.5")), ("b", Some("10.200.0.5"))]),
    )
    .unwrap_err();
    assert!(matches!(err, IpamError::InUse { .. }));
    assert_mentions(&err, &["'b'", "10.200.0.5", "'a'"]);

    let err = plan(&ipam24(), &pods(&[("a", Some("10.0.1.7"))])).unwrap_err();
    assert!(matches!(
        err,
        IpamError::Address(AddressError::OutsideCidr { .. })
    ));
    assert_mentions(&err, &["'a'", "10.0.1.7"]);

    let err = plan(&ipam24(), &pods(&[("a", Some("10.200.0.1"))])).unwrap_err();
    assert!(matches!(
        err,
        IpamError::Address(AddressError::Reserved { why: "gateway", .. })
    ));
    assert_mentions(&err, &["'a'", "10.200.0.1", "gateway"]);

    let err = plan(&ipam24(), &pods(&[("a", None), ("a", None)])).unwrap_err();
    assert!(matches!(err, IpamError::DuplicatePod { .. }));
    assert_mentions(&err, &["'a'"]);
}

#[test]
fn plan_of_nothing_drops_every_lease() {
    let before = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
    let after = plan(&before, &[]).unwrap();
    assert!(after.leases().is_empty());
}

#[test]
fn save_load_round_trip() {
    let dir = TempDir::new("round-trip");
    let path = dir.0.join("nested/dir/leases.json");
    // Missing file: no leases.
    let empty = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap();
    assert_eq!(empty, ipam24());

    let ipam = plan(
        &ipam24(),
        &pods(&[("red", None), ("blue", Some("10.200.0.77"))]),
    )
    .unwrap();
    ipam.save(&path).unwrap();
    let loaded = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap();
    assert_eq!(loaded, ipam);
    // Saving again replaces the file and leaves no temporary behind.
    let mut changed = loaded.clone();
    changed.release("red");
    changed.save(&path).unwrap();
    assert_eq!(
        Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap(),
        changed
    );
    let files: Vec<_> = fs::read_dir(path.parent().unwrap()).unwrap().collect();
    assert_eq!(files.len(), 1);
}

#[test]
fn load_corrupt() {
    let dir = TempDir::new("corrupt");
    let path = dir.0.join("leases.json");
    let net = cidr("10.200.0.0/24");
    let gw = addr("10.200.0.1");
    for (text, mentions) in [
        ("{ not json", vec!["leases.json"]),
        (
            r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","extra":1}"#,
            vec!["extra"],
        ),
        (
            r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.9.0.2"}}"#,
            vec!["leases.json", "10.9.0.2", "'a'"],
        ),
        (
            r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.200.0.1"}}"#,
            vec!["10.200.0.1", "gateway"],
        ),
        (
            r#"{"cidr":"10.200.0.0/24","gateway":"10.200.0.1","leases":{"a":"10.200.0.5","b":"10.200.0.5"}}"#,
            vec!["10.200.0.5", "'a'", "'b'"],
        ),
    ] {
        fs::write(&path, text).unwrap();
        let err = Ipam::load(&path, net, gw).unwrap_err();
        assert!(matches!(err, IpamError::Corrupt { .. }), "{err}");
        assert_mentions(&err, &mentions);
    }
}

#[test]
fn load_unreadable() {
    let dir = TempDir::new("unreadable");
    // A directory where the file should be cannot be read as a file.
    let err = Ipam::load(&dir.0, cidr("10.200.0.0/24"), addr("10.200.0.1")).unwrap_err();
    assert!(matches!(err, IpamError::Read { .. }), "{err}");
    assert_mentions(&err, &[&dir.0.display().to_string()]);
}

#[test]
fn save_errors() {
    let dir = TempDir::new("save-errors");
    let blocker = dir.0.join("file");
    fs::write(&blocker, "").unwrap();
    let err = ipam24().save(&blocker.join("leases.json")).unwrap_err();
    assert!(matches!(err, IpamError::Write { .. }), "{err}");
    assert_mentions(&err, &["leases.json"]);
}

#[test]
fn load_cidr_or_gateway_changed() {
    let dir = TempDir::new("changed");
    let path = dir.0.join("leases.json");
    let ipam = plan(&ipam24(), &pods(&[("a", None)])).unwrap();
    ipam.save(&path).unwrap();

    let err = Ipam::load(&path, cidr("10.201.0.0/24"), addr("10.201.0.1")).unwrap_err();
    assert!(matches!(err, IpamError::CidrChanged { leases: 1, .. }));
    assert_mentions(
        &err,
        &["10.200.0.0/24", "10.201.0.0/24", "delete the pods first"],
    );

    let err = Ipam::load(&path, cidr("10.200.0.0/24"), addr("10.200.0.254")).unwrap_err();
    assert!(matches!(err, IpamError::GatewayChanged { .. }));
    assert_mentions(
        &err,
        &["10.200.0.1", "10.200.0.254", "delete the pods first"],
    );

    // Without leases, the file follows the configuration.
    plan(&ipam, &[]).unwrap().save(&path).unwrap();
    let moved = Ipam::load(&path, cidr("10.201.0.0/24"), addr("10.201.0.1")).unwrap();
    assert_eq!(moved, Ipam::new(cidr("10.201.0.0/24"), addr("10.201.0.1")));
}
