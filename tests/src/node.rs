//! The node the `BPF_PROG_TEST_RUN` tests of the router behaviour seed:
//! two pods, the pods' gateway, a default route via the LAN host and
//! masquerade of the pod CIDR (shared by `prog_router` and
//! `prog_hardening`).

use std::net::Ipv4Addr;

use netpath::datapath::{Datapath, LoadOptions};
use netpath_common::{Endpoint, MasqRule, NodeSettings, RouteNextHop};

pub const POD_A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
pub const POD_B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 3);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 2);
pub const LAN: Ipv4Addr = Ipv4Addr::new(192, 168, 50, 1);
/// An egress ifindex that exists in no namespace of the tests (the MTU
/// check then leaves the decision to the redirect: `mtu_unchecked`).
pub const UPLINK_IFINDEX: u32 = 20;
pub const POD_A_IFINDEX: u32 = 11;
pub const POD_B_IFINDEX: u32 = 12;
pub const POD_A_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x02];
pub const POD_A_GW_MAC: [u8; 6] = [0x02, 0x99, 0, 0, 0, 0x02];
pub const POD_B_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 0x03];

pub fn endpoint(ifindex: u32, last: u8) -> Endpoint {
    Endpoint {
        ifindex,
        flags: 0,
        pod_mac: [0x02, 0xaa, 0, 0, 0, last],
        gw_mac: [0x02, 0x99, 0, 0, 0, last],
    }
}

/// Pods A and B, the gateway in the settings, a default route via the LAN
/// host out of `uplink`, masquerade of the pod CIDR out of it.
pub fn datapath(uplink: u32) -> Datapath {
    let mut dp = Datapath::load(LoadOptions::default()).expect("load the eBPF object");
    let maps = dp.maps();
    maps.upsert_endpoint(POD_A, endpoint(POD_A_IFINDEX, 2))
        .unwrap();
    maps.upsert_endpoint(POD_B, endpoint(POD_B_IFINDEX, 3))
        .unwrap();
    maps.set_settings(NodeSettings {
        nat_port_min: 40000,
        nat_port_max: 40009,
        gateway: GATEWAY.octets(),
        ..NodeSettings::DEFAULT
    })
    .unwrap();
    maps.sync_routes(&[
        (
            "0.0.0.0/0".parse().unwrap(),
            RouteNextHop {
                ifindex: uplink,
                via: LAN.octets(),
            },
        ),
        (
            "192.168.50.2/32".parse().unwrap(),
            RouteNextHop {
                ifindex: 0,
                via: [0; 4],
            },
        ),
    ])
    .unwrap();
    maps.sync_masq(&[(
        "10.200.0.0/24".parse().unwrap(),
        MasqRule {
            ifindex: uplink,
            nat_addr: NODE.octets(),
        },
    )])
    .unwrap();
    dp
}
