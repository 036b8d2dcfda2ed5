//! The rules kube-proxy writes for ClusterIP services, as text for one
//! `iptables-restore` or one `nft -f`, the way kube-proxy builds them (its
//! `nat` rules: what a new connection to a service traverses; the filter
//! rules for services without endpoints are left out, as is the
//! masquerading of off-cluster clients, which kube-proxy adds only with a
//! cluster CIDR).
//!
//! iptables mode: `KUBE-SERVICES` holds one rule per service (`-d VIP/32 -p
//! tcp --dport P -j KUBE-SVC-X`), tried in order for the first packet of
//! every connection; `KUBE-SVC-X` picks an endpoint with `-m statistic
//! --mode random --probability 1/n`; `KUBE-SEP-Y` marks hairpin traffic for
//! masquerade and DNATs. A change rewrites every chain (`iptables-restore
//! --noflush` of the whole set, stale chains deleted with `-X`).
//!
//! nftables mode: a verdict map `service-ips` (`ip daddr . meta l4proto .
//! th dport`) sends the packet to the service's chain in one lookup, which
//! picks an endpoint chain with `numgen random mod n vmap`. A change is a
//! transaction on that service's chains only.
//!
//! Chain names carry a hash of the service (and endpoint), as kube-proxy's
//! do (it uses SHA-256 in base32; here FNV-1a, the same length and
//! alphabet).

use std::{fmt::Write as _, net::Ipv4Addr, net::SocketAddrV4};

/// One ClusterIP service: `bench/s<index>`, port `http`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub index: usize,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub endpoints: Vec<SocketAddrV4>,
}

impl Service {
    /// `bench/s0:http`: kube-proxy's service port name.
    pub fn port_name(&self) -> String {
        format!("bench/s{}:http", self.index)
    }

    /// `KUBE-SVC-...`.
    pub fn svc_chain(&self) -> String {
        format!("KUBE-SVC-{}", hash(&format!("{}tcp", self.port_name()), 16))
    }

    /// `KUBE-SEP-...` of endpoint `ep`.
    pub fn sep_chain(&self, ep: &SocketAddrV4) -> String {
        format!(
            "KUBE-SEP-{}",
            hash(&format!("{}tcp{ep}", self.port_name()), 16)
        )
    }

    /// `bench/s0/tcp/http`: the name nftables chains carry.
    fn nft_name(&self) -> String {
        format!("bench/s{}/tcp/http", self.index)
    }

    /// `service-XXXXXXXX-bench/s0/tcp/http`.
    pub fn service_chain(&self) -> String {
        let n = self.nft_name();
        format!("service-{}-{n}", hash(&n, 8))
    }

    /// `endpoint-XXXXXXXX-bench/s0/tcp/http__10.201.0.2/80`.
    pub fn endpoint_chain(&self, ep: &SocketAddrV4) -> String {
        let n = format!("{}__{}/{}", self.nft_name(), ep.ip(), ep.port());
        format!("endpoint-{}-{n}", hash(&n, 8))
    }
}

/// `len` characters of base32 (RFC 4648 alphabet) of FNV-1a hashes of `s`.
fn hash(s: &str, len: usize) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325 ^ seed, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let (a, b) = (fnv(0), fnv(0x9e37_79b9_7f4a_7c15));
    (0..len)
        .map(|i| {
            let word = if i < 12 {
                a >> (5 * i)
            } else {
                b >> (5 * (i - 12))
            };
            char::from(ALPHABET[(word & 31) as usize])
        })
        .collect()
}

/// The `iptables-restore --noflush` input that makes the `nat` table hold
/// exactly `services` (every chain declared, so flushed and refilled);
/// `jumps`: also the jumps from the built-in chains (the first sync);
/// `stale`: chains to delete (a removed endpoint's: declared too, so they
/// are flushed first, as `-X` takes only an empty chain).
pub fn iptables_restore(services: &[Service], jumps: bool, stale: &[String]) -> String {
    let mut chains = String::new();
    let mut rules = String::new();
    for c in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(chains, ":{c} - [0:0]");
    }
    if jumps {
        rules.push_str(
            "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
        );
    }
    rules.push_str(
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
         -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
         -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
         -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n",
    );
    let mut per_service = String::new();
    for s in services {
        let name = s.port_name();
        let svc = s.svc_chain();
        let _ = writeln!(chains, ":{svc} - [0:0]");
        let _ = writeln!(
            rules,
            "-A KUBE-SERVICES -m comment --comment \"{name} cluster IP\" -m tcp -p tcp -d {}/32 --dport {} -j {svc}",
            s.vip, s.port
        );
        let n = s.endpoints.len();
        for (i, ep) in s.endpoints.iter().enumerate() {
            let sep = s.sep_chain(ep);
            let _ = writeln!(chains, ":{sep} - [0:0]");
            let pick = if i + 1 < n {
                format!(
                    " -m statistic --mode random --probability {:.11}",
                    1.0 / (n - i) as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                per_service,
                "-A {svc} -m comment --comment \"{name} -> {ep}\"{pick} -j {sep}"
            );
        }
        for ep in &s.endpoints {
            let sep = s.sep_chain(ep);
            let _ = writeln!(
                per_service,
                "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ\n\
                 -A {sep} -m comment --comment {name} -m tcp -p tcp -j DNAT --to-destination {ep}",
                ep.ip()
            );
        }
    }
    rules.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
    let mut out = String::from("*nat\n");
    out += &chains;
    for c in stale {
        let _ = writeln!(out, ":{c} - [0:0]");
    }
    out += &rules;
    out += &per_service;
    for c in stale {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}

/// The `nft -f` input that creates kube-proxy's table with `services`.
pub fn nft_install(services: &[Service]) -> String {
    let mut out = String::from(
        "add table ip kube-proxy { comment \"rules for kube-proxy\" ; }\n\
         add chain ip kube-proxy nat-prerouting { type nat hook prerouting priority -100 ; }\n\
         add chain ip kube-proxy nat-output { type nat hook output priority -100 ; }\n\
         add chain ip kube-proxy nat-postrouting { type nat hook postrouting priority 100 ; }\n\
         add chain ip kube-proxy mark-for-masquerade\n\
         add chain ip kube-proxy masquerading\n\
         add chain ip kube-proxy services\n\
         add chain ip kube-proxy nodeports\n\
         add map ip kube-proxy service-ips { type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }\n\
         add map ip kube-proxy service-nodeports { type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }\n\
         add rule ip kube-proxy nat-prerouting jump services\n\
         add rule ip kube-proxy nat-output jump services\n\
         add rule ip kube-proxy nat-postrouting jump masquerading\n\
         add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
         add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
         add rule ip kube-proxy masquerading mark set mark xor 0x4000\n\
         add rule ip kube-proxy masquerading masquerade fully-random\n\
         add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
         add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports\n\
         add rule ip kube-proxy nodeports meta l4proto . th dport vmap @service-nodeports\n",
    );
    for s in services {
        for ep in &s.endpoints {
            nft_endpoint(&mut out, s, ep);
        }
        let chain = s.service_chain();
        let _ = writeln!(out, "add chain ip kube-proxy {chain}");
        nft_pick(&mut out, s);
        let _ = writeln!(
            out,
            "add element ip kube-proxy service-ips {{ {} . tcp . {} : goto {chain} }}",
            s.vip, s.port
        );
    }
    out
}

/// An endpoint's chain and its two rules.
fn nft_endpoint(out: &mut String, s: &Service, ep: &SocketAddrV4) {
    let chain = s.endpoint_chain(ep);
    let _ = writeln!(
        out,
        "add chain ip kube-proxy {chain}\n\
         add rule ip kube-proxy {chain} ip saddr {} jump mark-for-masquerade\n\
         add rule ip kube-proxy {chain} meta l4proto tcp dnat to {ep}",
        ep.ip()
    );
}

/// The service chain's rule that picks an endpoint.
fn nft_pick(out: &mut String, s: &Service) {
    let targets: Vec<String> = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(i, ep)| format!("{i} : goto {}", s.endpoint_chain(ep)))
        .collect();
    let _ = writeln!(
        out,
        "add rule ip kube-proxy {} numgen random mod {} vmap {{ {} }}",
        s.service_chain(),
        s.endpoints.len(),
        targets.join(" , ")
    );
}

/// The `nft -f` transaction that changes service `old` into `new` (same
/// service, other endpoints), as kube-proxy's partial sync does: the new
/// endpoint chains, the service chain flushed and refilled, the endpoint
/// chains no longer used deleted.
pub fn nft_change(old: &Service, new: &Service) -> String {
    let mut out = String::new();
    for ep in new.endpoints.iter().filter(|e| !old.endpoints.contains(e)) {
        nft_endpoint(&mut out, new, ep);
    }
    let _ = writeln!(out, "flush chain ip kube-proxy {}", new.service_chain());
    nft_pick(&mut out, new);
    for ep in old.endpoints.iter().filter(|e| !new.endpoints.contains(e)) {
        let _ = writeln!(out, "delete chain ip kube-proxy {}", old.endpoint_chain(ep));
    }
    out
}

/// The chains of `old` that `new` no longer has (for `-X` in iptables).
pub fn stale_iptables_chains(old: &Service, new: &Service) -> Vec<String> {
    old.endpoints
        .iter()
        .filter(|e| !new.endpoints.contains(e))
        .map(|e| old.sep_chain(e))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two() -> Vec<Service> {
        let eps = |port| {
            vec![
                SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 2), port),
                SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 3), port),
            ]
        };
        vec![
            Service {
                index: 0,
                vip: Ipv4Addr::new(10, 96, 0, 1),
                port: 80,
                endpoints: eps(80),
            },
            Service {
                index: 1,
                vip: Ipv4Addr::new(10, 96, 0, 2),
                port: 80,
                endpoints: eps(80),
            },
        ]
    }

    #[test]
    fn names_are_stable_and_kube_proxy_shaped() {
        let s = &two()[0];
        let svc = s.svc_chain();
        assert_eq!(svc, two()[0].svc_chain(), "stable");
        let tail = svc.strip_prefix("KUBE-SVC-").unwrap();
        assert_eq!(tail.len(), 16);
        assert!(
            tail.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        // iptables limits chain names to 28 characters.
        assert!(s.sep_chain(&s.endpoints[0]).len() <= 28);
        assert_ne!(s.svc_chain(), two()[1].svc_chain());
        assert_ne!(s.sep_chain(&s.endpoints[0]), s.sep_chain(&s.endpoints[1]));
        assert!(s.service_chain().starts_with("service-"));
        assert!(s.service_chain().ends_with("-bench/s0/tcp/http"));
        assert!(
            s.endpoint_chain(&s.endpoints[1])
                .ends_with("-bench/s0/tcp/http__10.201.0.3/80")
        );
    }

    #[test]
    fn iptables_restore_text_of_two_services() {
        let s = two();
        let (svc0, svc1) = (s[0].svc_chain(), s[1].svc_chain());
        let sep = |i: usize, e: usize| s[i].sep_chain(&s[i].endpoints[e]);
        let want = format!(
            "*nat\n\
             :KUBE-SERVICES - [0:0]\n\
             :KUBE-NODEPORTS - [0:0]\n\
             :KUBE-POSTROUTING - [0:0]\n\
             :KUBE-MARK-MASQ - [0:0]\n\
             :{svc0} - [0:0]\n\
             :{} - [0:0]\n\
             :{} - [0:0]\n\
             :{svc1} - [0:0]\n\
             :{} - [0:0]\n\
             :{} - [0:0]\n\
             -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n\
             -A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n\
             -A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN\n\
             -A KUBE-POSTROUTING -j MARK --xor-mark 0x4000\n\
             -A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n\
             -A KUBE-MARK-MASQ -j MARK --or-mark 0x4000\n\
             -A KUBE-SERVICES -m comment --comment \"bench/s0:http cluster IP\" -m tcp -p tcp -d 10.96.0.1/32 --dport 80 -j {svc0}\n\
             -A KUBE-SERVICES -m comment --comment \"bench/s1:http cluster IP\" -m tcp -p tcp -d 10.96.0.2/32 --dport 80 -j {svc1}\n\
             -A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n\
             -A {svc0} -m comment --comment \"bench/s0:http -> 10.201.0.2:80\" -m statistic --mode random --probability 0.50000000000 -j {}\n\
             -A {svc0} -m comment --comment \"bench/s0:http -> 10.201.0.3:80\" -j {}\n\
             -A {} -m comment --comment bench/s0:http -s 10.201.0.2/32 -j KUBE-MARK-MASQ\n\
             -A {} -m comment --comment bench/s0:http -m tcp -p tcp -j DNAT --to-destination 10.201.0.2:80\n\
             -A {} -m comment --comment bench/s0:http -s 10.201.0.3/32 -j KUBE-MARK-MASQ\n\
             -A {} -m comment --comment bench/s0:http -m tcp -p tcp -j DNAT --to-destination 10.201.0.3:80\n\
             -A {svc1} -m comment --comment \"bench/s1:http -> 10.201.0.2:80\" -m statistic --mode random --probability 0.50000000000 -j {}\n\
             -A {svc1} -m comment --comment \"bench/s1:http -> 10.201.0.3:80\" -j {}\n\
             -A {} -m comment --comment bench/s1:http -s 10.201.0.2/32 -j KUBE-MARK-MASQ\n\
             -A {} -m comment --comment bench/s1:http -m tcp -p tcp -j DNAT --to-destination 10.201.0.2:80\n\
             -A {} -m comment --comment bench/s1:http -s 10.201.0.3/32 -j KUBE-MARK-MASQ\n\
             -A {} -m comment --comment bench/s1:http -m tcp -p tcp -j DNAT --to-destination 10.201.0.3:80\n\
             COMMIT\n",
            sep(0, 0),
            sep(0, 1),
            sep(1, 0),
            sep(1, 1),
            sep(0, 0),
            sep(0, 1),
            sep(0, 0),
            sep(0, 0),
            sep(0, 1),
            sep(0, 1),
            sep(1, 0),
            sep(1, 1),
            sep(1, 0),
            sep(1, 0),
            sep(1, 1),
            sep(1, 1),
        );
        assert_eq!(iptables_restore(&s, true, &[]), want);
        // A rewrite: no jumps from the built-in chains, stale chains last.
        let again = iptables_restore(&s, false, &["KUBE-SEP-OLD".into()]);
        assert!(!again.contains("-A PREROUTING"));
        assert!(
            again.contains("\n:KUBE-SEP-OLD - [0:0]\n"),
            "flushed: {again}"
        );
        assert!(
            again.ends_with("-X KUBE-SEP-OLD\nCOMMIT\n"),
            "then deleted: {again}"
        );
    }

    #[test]
    fn nft_text_of_two_services_and_of_a_change() {
        let s = two();
        let ep = |i: usize, e: usize| s[i].endpoint_chain(&s[i].endpoints[e]);
        let (sc0, sc1) = (s[0].service_chain(), s[1].service_chain());
        let want = format!(
            "add table ip kube-proxy {{ comment \"rules for kube-proxy\" ; }}\n\
             add chain ip kube-proxy nat-prerouting {{ type nat hook prerouting priority -100 ; }}\n\
             add chain ip kube-proxy nat-output {{ type nat hook output priority -100 ; }}\n\
             add chain ip kube-proxy nat-postrouting {{ type nat hook postrouting priority 100 ; }}\n\
             add chain ip kube-proxy mark-for-masquerade\n\
             add chain ip kube-proxy masquerading\n\
             add chain ip kube-proxy services\n\
             add chain ip kube-proxy nodeports\n\
             add map ip kube-proxy service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}\n\
             add map ip kube-proxy service-nodeports {{ type inet_proto . inet_service : verdict ; comment \"NodePort traffic\" ; }}\n\
             add rule ip kube-proxy nat-prerouting jump services\n\
             add rule ip kube-proxy nat-output jump services\n\
             add rule ip kube-proxy nat-postrouting jump masquerading\n\
             add rule ip kube-proxy mark-for-masquerade mark set mark or 0x4000\n\
             add rule ip kube-proxy masquerading mark and 0x4000 == 0 return\n\
             add rule ip kube-proxy masquerading mark set mark xor 0x4000\n\
             add rule ip kube-proxy masquerading masquerade fully-random\n\
             add rule ip kube-proxy services ip daddr . meta l4proto . th dport vmap @service-ips\n\
             add rule ip kube-proxy services fib daddr type local ip daddr != 127.0.0.0/8 jump nodeports\n\
             add rule ip kube-proxy nodeports meta l4proto . th dport vmap @service-nodeports\n\
             add chain ip kube-proxy {e00}\n\
             add rule ip kube-proxy {e00} ip saddr 10.201.0.2 jump mark-for-masquerade\n\
             add rule ip kube-proxy {e00} meta l4proto tcp dnat to 10.201.0.2:80\n\
             add chain ip kube-proxy {e01}\n\
             add rule ip kube-proxy {e01} ip saddr 10.201.0.3 jump mark-for-masquerade\n\
             add rule ip kube-proxy {e01} meta l4proto tcp dnat to 10.201.0.3:80\n\
             add chain ip kube-proxy {sc0}\n\
             add rule ip kube-proxy {sc0} numgen random mod 2 vmap {{ 0 : goto {e00} , 1 : goto {e01} }}\n\
             add element ip kube-proxy service-ips {{ 10.96.0.1 . tcp . 80 : goto {sc0} }}\n\
             add chain ip kube-proxy {e10}\n\
             add rule ip kube-proxy {e10} ip saddr 10.201.0.2 jump mark-for-masquerade\n\
             add rule ip kube-proxy {e10} meta l4proto tcp dnat to 10.201.0.2:80\n\
             add chain ip kube-proxy {e11}\n\
             add rule ip kube-proxy {e11} ip saddr 10.201.0.3 jump mark-for-masquerade\n\
             add rule ip kube-proxy {e11} meta l4proto tcp dnat to 10.201.0.3:80\n\
             add chain ip kube-proxy {sc1}\n\
             add rule ip kube-proxy {sc1} numgen random mod 2 vmap {{ 0 : goto {e10} , 1 : goto {e11} }}\n\
             add element ip kube-proxy service-ips {{ 10.96.0.2 . tcp . 80 : goto {sc1} }}\n",
            e00 = ep(0, 0),
            e01 = ep(0, 1),
            e10 = ep(1, 0),
            e11 = ep(1, 1),
        );
        assert_eq!(nft_install(&s), want);

        // s1 swaps 10.201.0.3:80 for 10.201.0.3:81.
        let mut new = s[1].clone();
        new.endpoints[1] = SocketAddrV4::new(Ipv4Addr::new(10, 201, 0, 3), 81);
        let e_new = new.endpoint_chain(&new.endpoints[1]);
        assert_eq!(
            nft_change(&s[1], &new),
            format!(
                "add chain ip kube-proxy {e_new}\n\
                 add rule ip kube-proxy {e_new} ip saddr 10.201.0.3 jump mark-for-masquerade\n\
                 add rule ip kube-proxy {e_new} meta l4proto tcp dnat to 10.201.0.3:81\n\
                 flush chain ip kube-proxy {sc1}\n\
                 add rule ip kube-proxy {sc1} numgen random mod 2 vmap {{ 0 : goto {e10} , 1 : goto {e_new} }}\n\
                 delete chain ip kube-proxy {e11}\n",
                e10 = ep(1, 0),
                e11 = ep(1, 1),
            )
        );
        assert_eq!(
            stale_iptables_chains(&s[1], &new),
            vec![s[1].sep_chain(&s[1].endpoints[1])]
        );
    }
}
