//! `netpath::netns` and `netpath::netlink` against the real kernel: every
//! test makes its own network namespaces (named `nptest-nl-<pid>-<n>`) and
//! deletes them when it ends, pass or fail. Needs root; nothing here touches
//! the root namespace's interfaces or configuration (it is only read).

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use anyhow::{Context, Result, ensure};
use netpath::sys::{
    netlink::{LinkInfo, Netlink, NetlinkError, Route},
    netns::{Netns, NetnsError},
    sysctl::{SysctlError, read_sysctl, write_sysctl},
};

static NEXT_NAME: AtomicUsize = AtomicUsize::new(0);

/// Hands out unique namespace names and deletes those namespaces when
/// dropped, also when the test panics.
struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    fn new() -> Self {
        Namespaces { names: Vec::new() }
    }

    /// A fresh unique name, registered for cleanup before anything is made
    /// under it.
    fn name(&mut self) -> String {
        let name = format!(
            "nptest-nl-{}-{}",
            std::process::id(),
            NEXT_NAME.fetch_add(1, Ordering::Relaxed)
        );
        self.names.push(name.clone());
        name
    }

    async fn create(&mut self) -> Result<Netns> {
        let name = self.name();
        Netns::create(&name)
            .await
            .with_context(|| format!("create namespace {name}"))
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        let names = std::mem::take(&mut self.names);
        // Drop may run inside a test's runtime, which cannot block on
        // another future: delete from a thread with a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            rt.block_on(async {
                for name in &names {
                    if let Err(e) = Netns::delete(name).await {
                        eprintln!("cleanup: {e}");
                    }
                }
            });
        });
        if cleanup.join().is_err() {
            eprintln!("cleanup of test namespaces panicked");
        }
    }
}

/// A veth pair `va` (in `a`, 10.x.0.1/24) <-> `vb` (in `b`, 10.x.0.2/24),
/// both ends up. Returns the connections and the two links.
async fn veth_pair(
    a: &Netns,
    b: &Netns,
    net: u8,
) -> Result<(Netlink, Netlink, LinkInfo, LinkInfo)> {
    let nl_a = Netlink::connect(a).await?;
    let nl_b = Netlink::connect(b).await?;
    nl_a.add_veth("va", "vb", b).await?;
    let va = nl_a.link_by_name("va").await?.context("va not in a")?;
    let vb = nl_b.link_by_name("vb").await?.context("vb not in b")?;
    nl_a.add_address(va.index, Ipv4Addr::new(10, net, 0, 1), 24)
        .await?;
    nl_b.add_address(vb.index, Ipv4Addr::new(10, net, 0, 2), 24)
        .await?;
    nl_a.set_up(va.index).await?;
    nl_b.set_up(vb.index).await?;
    Ok((nl_a, nl_b, va, vb))
}

#[tokio::test]
async fn namespace_create_open_delete() -> Result<()> {
    let mut nss = Namespaces::new();
    let name = nss.name();
    ensure!(!Netns::exists(&name));
    ensure!(matches!(
        Netns::open(&name),
        Err(NetnsError::NotFound { .. })
    ));

    let created = Netns::create(&name).await?;
    ensure!(Netns::exists(&name));
    ensure!(Netns::list()?.contains(&name));
    ensure!(created.name() == Some(name.as_str()));

    let opened = Netns::open(&name)?;
    ensure!(opened.id() == created.id(), "open() and create() disagree");
    ensure!(
        opened.id() != Netns::current()?.id(),
        "new namespace is ours"
    );

    let again = Netns::create(&name).await;
    ensure!(
        matches!(again, Err(NetnsError::AlreadyExists { .. })),
        "second create: {again:?}"
    );

    Netns::delete(&name).await?;
    ensure!(!Netns::exists(&name));
    ensure!(!Netns::list()?.contains(&name));
    Netns::delete(&name).await.context("second delete")?;
    ensure!(matches!(
        Netns::open(&name),
        Err(NetnsError::NotFound { .. })
    ));

    // A leftover file that is not a namespace mount (a crashed
    // `ip netns add`): not openable, and delete() removes it.
    let stale = nss.name();
    std::fs::write(format!("/run/netns/{stale}"), "")?;
    ensure!(matches!(
        Netns::open(&stale),
        Err(NetnsError::NotANamespace { .. })
    ));
    Netns::delete(&stale).await?;
    ensure!(!Netns::exists(&stale));

    ensure!(matches!(
        Netns::open("a/b"),
        Err(NetnsError::InvalidName { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn run_enters_the_namespace_and_only_that_thread() -> Result<()> {
    let mut nss = Namespaces::new();
    let ns = nss.create().await?;
    let ours = Netns::current()?.id();

    let inside = ns.run(|| Netns::current().map(|n| n.id()))??;
    ensure!(inside == ns.id(), "run() did not enter the namespace");
    ensure!(Netns::current()?.id() == ours, "the caller moved");

    let mut borrowed = 0;
    ns.run(|| borrowed += 1)?;
    ensure!(borrowed == 1);

    let panicked = ns.run(|| -> u32 { panic!("boom") });
    ensure!(
        matches!(&panicked, Err(NetnsError::ThreadPanicked { message, .. }) if message == "boom"),
        "{panicked:?}"
    );
    Ok(())
}

#[tokio::test]
async fn loopback_is_up_in_a_new_namespace() -> Result<()> {
    let mut nss = Namespaces::new();
    let ns = nss.create().await?;
    let nl = Netlink::connect(&ns).await?;
    let links = nl.links().await?;
    ensure!(links.len() == 1, "a fresh namespace has only lo: {links:?}");
    let lo = nl.link_by_name("lo").await?.context("no lo")?;
    ensure!(lo == links[0]);
    ensure!(lo.up, "lo is down: {lo:?}");
    ensure!(lo.kind.is_none() && lo.mac == [0; 6], "{lo:?}");
    ensure!(nl.link_by_index(lo.index).await? == Some(lo.clone()));
    ensure!(
        nl.addresses(lo.index)
            .await?
            .contains(&(Ipv4Addr::LOCALHOST, 8))
    );

    // Loopback traffic works inside.
    let (tx, rx) = ns.run(|| -> std::io::Result<_> {
        Ok((
            UdpSocket::bind("127.0.0.1:0")?,
            UdpSocket::bind("127.0.0.1:0")?,
        ))
    })??;
    rx.set_read_timeout(Some(Duration::from_secs(5)))?;
    tx.send_to(b"lo", rx.local_addr()?)?;
    let mut buf = [0; 16];
    let (n, _) = rx.recv_from(&mut buf)?;
    ensure!(&buf[..n] == b"lo");
    Ok(())
}

#[tokio::test]
async fn missing_links_and_failed_requests() -> Result<()> {
    let mut nss = Namespaces::new();
    let ns = nss.create().await?;
    let nl = Netlink::connect(&ns).await?;
    ensure!(nl.link_by_name("nope").await?.is_none());
    ensure!(nl.link_by_index(9999).await?.is_none());

    let err = nl.set_up(9999).await.expect_err("set_up of a missing link");
    ensure!(err.errno() == Some(libc::ENODEV), "{err}");
    let msg = err.to_string();
    ensure!(
        msg.contains("ifindex 9999") && msg.contains(ns.name().unwrap()),
        "{msg}"
    );

    nl.add_veth("x0", "x1", &ns).await?;
    let err = nl
        .add_veth("x0", "x2", &ns)
        .await
        .expect_err("second veth x0");
    ensure!(err.errno() == Some(libc::EEXIST), "{err}");
    let msg = err.to_string();
    ensure!(
        msg.contains("x0") && msg.contains("already exists"),
        "{msg}"
    );
    ensure!(matches!(err, NetlinkError::Request { .. }));
    Ok(())
}

#[tokio::test]
async fn veth_addresses_routes_neighbours() -> Result<()> {
    let mut nss = Namespaces::new();
    let a = nss.create().await?;
    let b = nss.create().await?;
    let nl_a = Netlink::connect(&a).await?;
    let nl_b = Netlink::connect(&b).await?;

    nl_a.add_veth("va", "vb", &b).await?;
    ensure!(
        nl_a.link_by_name("vb").await?.is_none(),
        "peer was made in a"
    );
    let va = nl_a.link_by_name("va").await?.context("no va in a")?;
    let vb = nl_b.link_by_name("vb").await?.context("no vb in b")?;
    ensure!(nl_b.link_by_name("va").await?.is_none());
    for link in [&va, &vb] {
        ensure!(link.kind.as_deref() == Some("veth"), "{link:?}");
        ensure!(!link.up, "new veth end is up: {link:?}");
        ensure!(link.mtu == 1500, "{link:?}");
        ensure!(link.mac != [0; 6], "{link:?}");
    }
    let names: Vec<String> = nl_a.links().await?.into_iter().map(|l| l.name).collect();
    ensure!(names == ["lo", "va"], "{names:?}");

    let (ip_a, ip_b) = (Ipv4Addr::new(10, 77, 0, 1), Ipv4Addr::new(10, 77, 0, 2));
    nl_a.add_address(va.index, ip_a, 24).await?;
    nl_b.add_address(vb.index, ip_b, 24).await?;
    nl_a.set_up(va.index).await?;
    nl_b.set_up(vb.index).await?;
    ensure!(nl_a.link_by_index(va.index).await?.context("va")?.up);
    ensure!(nl_b.link_by_index(vb.index).await?.context("vb")?.up);
    ensure!(nl_a.addresses(va.index).await? == [(ip_a, 24)]);
    ensure!(nl_b.addresses(vb.index).await? == [(ip_b, 24)]);

    // The connected route the address made.
    let connected = Route {
        dst: "10.77.0.0/24".parse()?,
        gateway: None,
        oif: Some(va.index),
        src: Some(ip_a),
        scope_link: true,
        onlink: false,
    };
    ensure!(nl_a.routes().await? == std::slice::from_ref(&connected));

    let host = Route {
        dst: "10.77.1.5/32".parse()?,
        gateway: None,
        oif: Some(va.index),
        src: None,
        scope_link: true,
        onlink: false,
    };
    let via = Route {
        dst: "10.88.0.0/16".parse()?,
        gateway: Some(ip_b),
        oif: Some(va.index),
        src: Some(ip_a),
        scope_link: false,
        onlink: false,
    };
    let default = Route {
        dst: "0.0.0.0/0".parse()?,
        gateway: Some(Ipv4Addr::new(169, 254, 1, 1)),
        oif: Some(va.index),
        src: None,
        scope_link: false,
        onlink: true,
    };
    for route in [&host, &via, &default] {
        nl_a.replace_route(route).await?;
        nl_a.replace_route(route)
            .await
            .context("replace is idempotent")?;
    }
    let routes = nl_a.routes().await?;
    for route in [&connected, &host, &via, &default] {
        ensure!(routes.contains(route), "{route:?} not in {routes:?}");
    }
    ensure!(routes.len() == 4, "{routes:?}");

    // Replacing changes the route in place.
    let via2 = Route {
        gateway: Some(Ipv4Addr::new(10, 77, 0, 3)),
        ..via.clone()
    };
    nl_a.replace_route(&via2).await?;
    let routes = nl_a.routes().await?;
    ensure!(
        routes.contains(&via2) && !routes.contains(&via),
        "{routes:?}"
    );
    ensure!(routes.len() == 4, "{routes:?}");

    nl_a.delete_route(&host).await?;
    nl_a.delete_route(&host).await.context("second delete")?;
    nl_a.delete_route(&via2).await?;
    nl_a.delete_route(&default).await?;
    ensure!(nl_a.routes().await? == std::slice::from_ref(&connected));

    // A gateway that is not on a connected subnet needs onlink.
    let unreachable = Route {
        onlink: false,
        ..default.clone()
    };
    let err = nl_a
        .replace_route(&unreachable)
        .await
        .expect_err("gateway off-link");
    ensure!(err.errno() == Some(libc::ENETUNREACH), "{err}");
    ensure!(
        err.to_string().contains("0.0.0.0/0 via 169.254.1.1"),
        "{err}"
    );

    // Permanent neighbour entries.
    let gw = Ipv4Addr::new(10, 77, 0, 254);
    nl_a.replace_neighbour(va.index, gw, vb.mac).await?;
    let neigh = nl_a.neighbours(va.index).await?;
    let entry = neigh.iter().find(|n| n.ip == gw).context("no entry")?;
    ensure!(entry.mac == Some(vb.mac) && entry.permanent, "{entry:?}");
    let other_mac = [0x02, 0, 0, 0, 0, 0x42];
    nl_a.replace_neighbour(va.index, gw, other_mac).await?;
    let neigh = nl_a.neighbours(va.index).await?;
    let entries: Vec<_> = neigh.iter().filter(|n| n.ip == gw).collect();
    ensure!(
        entries.len() == 1 && entries[0].mac == Some(other_mac),
        "{entries:?}"
    );
    nl_a.delete_neighbour(va.index, gw).await?;
    nl_a.delete_neighbour(va.index, gw).await?;
    ensure!(!nl_a.neighbours(va.index).await?.iter().any(|n| n.ip == gw));
    Ok(())
}

#[tokio::test]
async fn move_link_to_another_namespace() -> Result<()> {
    let mut nss = Namespaces::new();
    let a = nss.create().await?;
    let b = nss.create().await?;
    let nl_a = Netlink::connect(&a).await?;
    let nl_b = Netlink::connect(&b).await?;
    // Both ends made in a.
    nl_a.add_veth("x0", "x1", &a).await?;
    let x1 = nl_a.link_by_name("x1").await?.context("no x1 in a")?;
    nl_a.move_to_netns(x1.index, &b).await?;
    ensure!(nl_a.link_by_name("x1").await?.is_none());
    ensure!(nl_a.link_by_name("x0").await?.is_some());
    let moved = nl_b.link_by_name("x1").await?.context("x1 not in b")?;
    ensure!(moved.kind.as_deref() == Some("veth") && moved.mac == x1.mac);
    ensure!(!moved.up);
    Ok(())
}

/// The checks of a connection made on whatever runtime runs this.
async fn connect_and_use() -> Result<()> {
    let mut nss = Namespaces::new();
    let ns = nss.create().await?;
    let nl = Netlink::connect(&ns).await?;
    // The socket is bound to `ns`, not to the namespace of the thread that
    // polls it: the new namespace shows only its own lo.
    let names: Vec<String> = nl.links().await?.into_iter().map(|l| l.name).collect();
    ensure!(names == ["lo"], "{names:?}");
    nl.add_veth("x0", "x1", &ns).await?;
    // Many requests, so that they are polled from different workers.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let nl = nl.clone();
        tasks.push(tokio::spawn(async move {
            nl.link_by_name("x1").await.map(|l| l.is_some())
        }));
    }
    for task in tasks {
        ensure!(task.await??, "x1 missing");
    }
    let mut names: Vec<String> = nl.links().await?.into_iter().map(|l| l.name).collect();
    names.sort();
    ensure!(names == ["lo", "x0", "x1"], "{names:?}");
    Ok(())
}

#[tokio::test]
async fn connect_on_current_thread_runtime() -> Result<()> {
    connect_and_use().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_on_multi_thread_runtime() -> Result<()> {
    connect_and_use().await
}

#[test]
fn connect_on_runtime_built_by_hand() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(connect_and_use())
}

#[tokio::test]
async fn add_address_twice_is_ok() -> Result<()> {
    let mut nss = Namespaces::new();
    let ns = nss.create().await?;
    let nl = Netlink::connect(&ns).await?;
    nl.add_veth("x0", "x1", &ns).await?;
    let dm = nl.link_by_name("x0").await?.context("no x0")?;
    let ip = Ipv4Addr::new(192, 168, 77, 1);
    nl.add_address(dm.index, ip, 24).await?;
    nl.add_address(dm.index, ip, 24)
        .await
        .context("second add")?;
    ensure!(nl.addresses(dm.index).await? == [(ip, 24)]);
    Ok(())
}

#[tokio::test]
async fn delete_link_removes_both_veth_ends() -> Result<()> {
    let mut nss = Namespaces::new();
    let a = nss.create().await?;
    let b = nss.create().await?;
    let (nl_a, nl_b, va, vb) = veth_pair(&a, &b, 79).await?;
    nl_a.delete_link(va.index).await?;
    ensure!(nl_a.link_by_name("va").await?.is_none());
    ensure!(nl_b.link_by_name("vb").await?.is_none());
    ensure!(nl_b.link_by_index(vb.index).await?.is_none());
    nl_a.delete_link(va.index).await.context("second delete")?;
    Ok(())
}

#[tokio::test]
async fn sysctl_is_per_namespace() -> Result<()> {
    let mut nss = Namespaces::new();
    let a = nss.create().await?;
    let b = nss.create().await?;
    let root = Netns::current()?;
    let key = "ipv4/ip_forward";
    let root_before = read_sysctl(&root, key)?;
    let b_before = read_sysctl(&b, key)?;
    let want = if root_before == "1" { "0" } else { "1" };

    write_sysctl(&a, key, want)?;
    ensure!(read_sysctl(&a, key)? == want);
    ensure!(read_sysctl(&root, key)? == root_before, "root changed");
    ensure!(read_sysctl(&b, key)? == b_before, "other namespace changed");

    ensure!(matches!(
        read_sysctl(&a, "../../etc/passwd"),
        Err(SysctlError::InvalidKey { .. })
    ));
    let err = read_sysctl(&a, "ipv4/no_such_sysctl").expect_err("missing sysctl");
    ensure!(matches!(err, SysctlError::Read { .. }), "{err}");
    Ok(())
}

#[tokio::test]
async fn udp_datagram_crosses_the_veth() -> Result<()> {
    let mut nss = Namespaces::new();
    let a = nss.create().await?;
    let b = nss.create().await?;
    let _links = veth_pair(&a, &b, 78).await?;

    let tx = a.run(|| UdpSocket::bind("10.78.0.1:0"))??;
    let rx = b.run(|| UdpSocket::bind("10.78.0.2:0"))??;
    // Not bound to an address: the kernel picks vb's address as source.
    let loose = b.run(|| UdpSocket::bind("0.0.0.0:0"))??;
    for sock in [&tx, &rx, &loose] {
        sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    }

    tx.send_to(b"ping over veth", rx.local_addr()?)?;
    let mut buf = [0; 64];
    let (n, from) = rx.recv_from(&mut buf).context("datagram a -> b")?;
    ensure!(&buf[..n] == b"ping over veth");
    ensure!(from == tx.local_addr()?, "from {from}");

    rx.send_to(b"pong", from)?;
    let (n, from) = tx.recv_from(&mut buf).context("datagram b -> a")?;
    ensure!(&buf[..n] == b"pong");
    ensure!(from == SocketAddr::from((Ipv4Addr::new(10, 78, 0, 2), rx.local_addr()?.port())));

    loose.send_to(b"loose", tx.local_addr()?)?;
    let (n, from) = tx.recv_from(&mut buf).context("datagram b (any) -> a")?;
    ensure!(&buf[..n] == b"loose");
    ensure!(from.ip() == Ipv4Addr::new(10, 78, 0, 2), "from {from}");
    Ok(())
}

/// The futures can be spawned on a multi-thread runtime (compile-time check).
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let _check = |nl: &Netlink, ns: &Netns, route: &Route| {
        send(&Netns::create("x"));
        send(&Netns::delete("x"));
        send(&Netlink::connect(ns));
        send(&nl.link_by_name("x"));
        send(&nl.link_by_index(1));
        send(&nl.links());
        send(&nl.add_veth("x", "y", ns));
        send(&nl.move_to_netns(1, ns));
        send(&nl.set_up(1));
        send(&nl.delete_link(1));
        send(&nl.add_address(1, Ipv4Addr::LOCALHOST, 8));
        send(&nl.addresses(1));
        send(&nl.replace_route(route));
        send(&nl.delete_route(route));
        send(&nl.routes());
        send(&nl.replace_neighbour(1, Ipv4Addr::LOCALHOST, [0; 6]));
        send(&nl.delete_neighbour(1, Ipv4Addr::LOCALHOST));
        send(&nl.neighbours(1));
    };
}
