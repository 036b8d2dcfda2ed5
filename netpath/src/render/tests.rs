//! Unit tests of [`super`]: the exact text of the CLI's tables.

use super::*;

#[test]
fn apply_report_lists_pods_with_their_addresses() {
    let mut r = ApplyReport {
        created: vec!["red".into()],
        unchanged: vec!["blue".into()],
        programs_loaded: true,
        ..ApplyReport::default()
    };
    r.addresses
        .insert("red".into(), Ipv4Addr::new(10, 200, 0, 2));
    r.uplinks_attached.push("uplink0".into());
    assert_eq!(
        apply_report("demo", &r),
        "np_from_uplink attached to uplink0\n\
         pod red              created    10.200.0.2\n\
         pod blue             unchanged  \n"
    );
    assert_eq!(
        apply_report("demo", &ApplyReport::default()),
        "instance demo: nothing to change\n"
    );
}

#[test]
fn endpoints_print_macs_as_ip_link_does() {
    let ep = Endpoint {
        ifindex: 7,
        flags: 0,
        pod_mac: [0x02, 0xaa, 0, 0, 0, 0x0b],
        gw_mac: [0xfe, 0xff, 1, 2, 3, 4],
    };
    let table = endpoints(&BTreeMap::from([(Ipv4Addr::new(10, 200, 0, 2), ep)]));
    assert_eq!(
        table.lines().nth(1).unwrap(),
        "10.200.0.2              7 02:aa:00:00:00:0b  fe:ff:01:02:03:04"
    );
}

#[test]
fn routes_name_local_connected_and_via_hops() {
    let net = |s: &str| s.parse::<Ipv4Net>().unwrap();
    let maps = RouteMaps {
        routes: vec![
            (
                net("0.0.0.0/0"),
                RouteNextHop {
                    ifindex: 2,
                    via: [192, 168, 50, 1],
                },
            ),
            (
                net("10.200.0.0/24"),
                RouteNextHop {
                    ifindex: 0,
                    via: [0; 4],
                },
            ),
            (
                net("192.168.50.0/24"),
                RouteNextHop {
                    ifindex: 2,
                    via: [0; 4],
                },
            ),
        ],
        masq: Vec::new(),
        settings: NodeSettings::DEFAULT,
        names: BTreeMap::from([(2, "uplink0".to_owned())]),
    };
    let text = routes(&maps);
    let lines: Vec<&str> = text.lines().collect();
    // Longest prefix first.
    assert!(lines[2].contains("10.200.0.0/24") && lines[2].contains("the node's stack"));
    assert!(lines[3].contains("(connected)") && lines[3].ends_with("uplink0"));
    assert!(lines[4].contains("192.168.50.1") && lines[4].ends_with("uplink0"));
    assert!(text.contains("fib lookups as ifindex 0"), "{text}");
}
