//! Unit tests of the pure parts: key names, records, the choice of a free
//! subnet. The behaviour against a real etcd is in `tests/tests/etcd.rs`.

use super::*;

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

#[test]
fn subnet_key_names_round_trip_and_refuse_anything_else() {
    let n = net("10.244.1.0/24");
    assert_eq!(subnet_key_name(n), "10.244.1.0-24");
    assert_eq!(subnet_of_key_name("10.244.1.0-24"), Some(n));
    assert_eq!(subnet_of_key_name("10.244.1.5-24"), None, "host bits set");
    assert_eq!(subnet_of_key_name("10.244.1.0"), None);
    assert_eq!(subnet_of_key_name("10.244.1.0-33"), None);
}

#[test]
fn records_round_trip_and_a_foreign_value_is_a_clear_error() {
    let r = SubnetRecord {
        node: "n1".into(),
        address: Ipv4Addr::new(192, 168, 1, 11),
    };
    assert_eq!(
        SubnetRecord::from_json("k", r.to_json().as_bytes()).unwrap(),
        r
    );
    let e = SubnetRecord::from_json("/netpath/x/subnets/10.244.1.0-24", b"hello").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("/netpath/x/subnets/10.244.1.0-24") && msg.contains("hello"),
        "{msg}"
    );
}

#[test]
fn the_first_free_subnet_skips_leased_and_reserved_ones() {
    let c = net("10.244.0.0/22");
    assert_eq!(first_free(c, 24, &[]), Some(net("10.244.0.0/24")));
    let taken = [net("10.244.0.0/24"), net("10.244.2.0/24")];
    assert_eq!(first_free(c, 24, &taken), Some(net("10.244.1.0/24")));
    // A wider reservation covers several subnets.
    assert_eq!(
        first_free(c, 24, &[net("10.244.0.0/23")]),
        Some(net("10.244.2.0/24"))
    );
    let all: Vec<Ipv4Net> = c.subnets(24).unwrap().collect();
    assert_eq!(first_free(c, 24, &all), None);
    assert_eq!(subnet_count(c, 24), 4);
}
