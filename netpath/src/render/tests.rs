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

mod lb {
    use std::{collections::BTreeMap, net::SocketAddrV4, time::Duration};

    use netpath_common::{CtEntry, CtKey, ct_flags, ct_state, frontend_flags, proto};

    use crate::{
        config::L4Proto,
        conntrack::Connection,
        lb::{
            frontends::{FrontendState, LbState, Maglev, Vip},
            inspect::{self, FrontendView},
            maglev::{self, Member},
        },
        render,
        state::{BackendRecord, FrontendRecord},
    };

    fn sock(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    fn vip(s: &str, port: u16) -> Vip {
        Vip {
            addr: s.parse().unwrap(),
            port,
            proto: L4Proto::Tcp,
        }
    }

    /// Service web (3 backends, affinity) and a port-forward.
    fn node() -> (LbState, Vec<FrontendRecord>) {
        let backends: BTreeMap<u32, SocketAddrV4> = [
            (0, sock("10.200.0.2:80")),
            (1, sock("10.200.0.3:80")),
            (2, sock("10.200.0.4:80")),
        ]
        .into();
        let members: Vec<Member> = backends
            .iter()
            .map(|(&index, b)| Member {
                name: b.to_string(),
                index,
            })
            .collect();
        let web = FrontendState {
            id: 1,
            flags: frontend_flags::AFFINITY,
            affinity_timeout_secs: 10_800,
            backends,
            maglev: Maglev::Slots(maglev::table(&members)),
            maglev_size: 251,
            maglev_gen: 0,
        };
        let fwd = FrontendState {
            id: 2,
            flags: frontend_flags::PORT_FORWARD,
            affinity_timeout_secs: 0,
            backends: [(0, sock("10.200.0.3:80"))].into(),
            maglev: Maglev::Slots(maglev::table(&[Member {
                name: "10.200.0.3:80".into(),
                index: 0,
            }])),
            maglev_size: 251,
            maglev_gen: 0,
        };
        let empty = FrontendState {
            id: 3,
            flags: 0,
            affinity_timeout_secs: 0,
            backends: BTreeMap::new(),
            maglev: Maglev::Absent,
            maglev_size: 0,
            maglev_gen: 0,
        };
        let lb: LbState = [
            (vip("10.96.0.10", 80), web),
            (vip("192.168.50.2", 8080), fwd),
            (vip("10.96.0.11", 80), empty),
        ]
        .into();
        let rec = |addr: &str, port, service: Option<&str>, bs: &[(&str, &str)]| FrontendRecord {
            address: addr.parse().unwrap(),
            port,
            proto: L4Proto::Tcp,
            service: service.map(str::to_owned),
            backends: bs
                .iter()
                .map(|(a, t)| BackendRecord {
                    address: sock(a),
                    target: (*t).to_owned(),
                })
                .collect(),
        };
        let records = vec![
            rec(
                "10.96.0.10",
                80,
                Some("web"),
                &[
                    ("10.200.0.2:80", "red"),
                    ("10.200.0.3:80", "blue"),
                    ("10.200.0.4:80", "green"),
                ],
            ),
            rec("10.96.0.11", 80, Some("empty"), &[]),
            rec("192.168.50.2", 8080, None, &[("10.200.0.3:80", "blue")]),
        ];
        (lb, records)
    }

    /// A DNAT connection from the LAN host to `to`, translated to `backend`.
    fn conn(sport: u16, to: Vip, backend: &str, state: u8, expired: bool) -> Connection {
        let b = sock(backend);
        let orig = CtKey {
            saddr: [192, 168, 50, 1],
            daddr: to.addr.octets(),
            sport,
            dport: to.port,
            proto: proto::TCP,
            _pad: [0; 3],
        };
        let entry = CtEntry {
            nat_addr: b.ip().octets(),
            nat_port: b.port(),
            state,
            flags: ct_flags::DNAT,
            created_ns: 0,
            last_seen_ns: 0,
            packets_orig: 1,
            packets_reply: 1,
            tcp: Default::default(),
        };
        Connection {
            orig,
            entry,
            reply: orig,
            revnat: None,
            age: Duration::ZERO,
            expires_in: Duration::ZERO,
            expired,
        }
    }

    fn views() -> Vec<FrontendView> {
        let (lb, records) = node();
        let web = vip("10.96.0.10", 80);
        let est = ct_state::TCP_ESTABLISHED;
        let conns = [
            conn(40000, web, "10.200.0.3:80", est, false),
            conn(40001, web, "10.200.0.3:80", est, false),
            conn(40002, web, "10.200.0.4:80", est, false),
            // Not counted: closing, expired.
            conn(40003, web, "10.200.0.2:80", ct_state::TCP_FIN_WAIT, false),
            conn(40004, web, "10.200.0.2:80", est, true),
            conn(
                40005,
                vip("192.168.50.2", 8080),
                "10.200.0.3:80",
                est,
                false,
            ),
        ];
        inspect::frontends(&lb, &records, &conns)
    }

    #[test]
    fn service_list_shows_backends_by_index_with_their_flows() {
        let text = render::services(&views());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "SERVICE          FRONTEND               INDEX  BACKEND                TARGET           FLOWS"
        );
        assert_eq!(
            lines[1],
            "empty            10.96.0.11:80/tcp          -  (no backends: connections are refused)"
        );
        assert_eq!(
            lines[2],
            "web              10.96.0.10:80/tcp          0  10.200.0.2:80          red                  0"
        );
        assert_eq!(
            lines[3],
            "                                            1  10.200.0.3:80          blue                 2"
        );
        assert!(
            lines[4].contains("green") && lines[4].ends_with(" 1"),
            "{text}"
        );
        assert_eq!(lines[5].trim(), "affinity client_ip, 10800s");
        // The port-forward is not a service.
        assert_eq!(lines.len(), 6, "{text}");
    }

    #[test]
    fn service_list_as_json() {
        let json: serde_json::Value =
            serde_json::from_str(&render::services_json(&views())).unwrap();
        let web = &json[1];
        assert_eq!(web["service"], "web");
        assert_eq!(web["address"], "10.96.0.10");
        assert_eq!(web["proto"], "tcp");
        assert_eq!(web["affinity_timeout_secs"], 10_800);
        assert_eq!(web["backends"][1]["address"], "10.200.0.3:80");
        assert_eq!(web["backends"][1]["target"], "blue");
        assert_eq!(web["backends"][1]["flows"], 2);
        assert_eq!(json.as_array().unwrap().len(), 2);
    }

    #[test]
    fn maglev_shows_each_backends_share_and_the_raw_slots() {
        let (lb, _) = node();
        let views = views();
        let web = views
            .iter()
            .find(|v| v.service.as_deref() == Some("web"))
            .unwrap();
        let fe = &lb[&vip("10.96.0.10", 80)];
        let counts = inspect::slot_counts(fe);
        assert_eq!(
            counts.values().sum::<usize>(),
            509,
            "three backends: 509 slots"
        );
        let text = render::maglev(web, &counts, None);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "service web 10.96.0.10:80/tcp: Maglev table of 509 slots (generation 0)"
        );
        assert!(lines[1].starts_with("INDEX  BACKEND"), "{text}");
        for (line, (index, target)) in
            lines[2..]
                .iter()
                .zip([(0, "red"), (1, "blue"), (2, "green")])
        {
            let words: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(words[0], index.to_string(), "{text}");
            assert_eq!(words[2], target, "{text}");
            let slots: usize = words[3].parse().unwrap();
            assert!(slots.abs_diff(170) <= 2, "{text}");
            assert!(words[4].starts_with("33."), "{text}");
        }
        assert_eq!(lines.len(), 5);

        let text = render::maglev(web, &counts, Some(fe.maglev.slots()));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[5], " SLOT  INDEX");
        assert_eq!(lines[6], format!("    0  {}", fe.maglev.slots()[0]));
        assert_eq!(lines.len(), 6 + 509);
    }

    #[test]
    fn port_forward_list_shows_node_address_to_pod() {
        let text = render::port_forwards(&views());
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "PROTO  NODE ADDRESS             DESTINATION            TARGET           FLOWS"
        );
        assert_eq!(
            lines[1],
            "tcp    192.168.50.2:8080     →  10.200.0.3:80          blue                 1"
        );
        assert_eq!(lines.len(), 2);
    }

    #[test]
    fn apply_report_names_changed_frontends() {
        let r = crate::reconcile::ApplyReport {
            frontends: vec!["service web 10.96.0.10:80/tcp: 1 backends added, 0 removed".into()],
            ..Default::default()
        };
        assert!(r.changed());
        assert_eq!(
            render::apply_report("demo", &r),
            "service web 10.96.0.10:80/tcp: 1 backends added, 0 removed\n"
        );
    }

    #[test]
    fn apply_report_names_pods_whose_dns_files_changed() {
        let r = crate::reconcile::ApplyReport {
            dns: vec!["pod red: /etc/netns/demo-red resolv.conf and hosts rewritten".into()],
            ..Default::default()
        };
        assert!(r.changed());
        assert_eq!(
            render::apply_report("demo", &r),
            "pod red: /etc/netns/demo-red resolv.conf and hosts rewritten\n"
        );
    }
}
