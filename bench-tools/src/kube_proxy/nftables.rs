//! kube-proxy's nftables mode: the `ip kube-proxy` table.
//!
//! Packets to a service meet `services`, whose single rule looks the
//! destination up in the `service-ips` verdict map and jumps to the
//! service's chain; that chain marks off-cluster clients for masquerade and
//! picks an endpoint with `numgen random mod B vmap { … }` (an anonymous
//! verdict map per service, as kube-proxy writes it); each endpoint's chain
//! DNATs. The text is in kube-proxy's own form: one `add …` command a line,
//! fed to `nft -f` as one transaction.

use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddrV4};

use super::{CLUSTER_CIDR, MASQ_MARK, PORT_NAME, Service, digest};

/// The table kube-proxy owns.
const TABLE: &str = "ip kube-proxy";

/// `service-<hash>-ns/name/<protocol>/http`, e.g. `…-ns/name/tcp/http`.
fn service_chain(s: &Service) -> String {
    let id = format!(
        "{}/{}/{}/{PORT_NAME}",
        super::NAMESPACE,
        s.name,
        s.protocol.name()
    );
    format!("service-{}-{id}", digest(&id, 8))
}

/// `endpoint-<hash>-ns/name/<protocol>/http__ip/port`.
fn endpoint_chain(s: &Service, ep: SocketAddrV4) -> String {
    let id = format!(
        "{}/{}/{}/{PORT_NAME}__{}/{}",
        super::NAMESPACE,
        s.name,
        s.protocol.name(),
        ep.ip(),
        ep.port()
    );
    format!("endpoint-{}-{id}", digest(&id, 8))
}

/// How a service chain picks its endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EndpointMaps {
    /// An anonymous vmap in the rule, as kube-proxy writes it.
    Anonymous,
    /// A named map per service, `<service chain>-endpoints`. The packet path
    /// is the same (one `numgen` and one map lookup), but `nft -f` loads
    /// 10 000 services in seconds instead of minutes: the netns rig uses it
    /// so that its set-up does not dwarf the measurements.
    Named,
}

/// The whole ruleset for `services`, to load into a namespace without it.
pub(crate) fn ruleset(services: &[Service]) -> String {
    ruleset_with(services, EndpointMaps::Anonymous)
}

/// [`ruleset`], with the endpoint maps of `maps`.
pub(crate) fn ruleset_with(services: &[Service], maps: EndpointMaps) -> String {
    let mut out = String::with_capacity(services.len() * 2048);
    let _ = writeln!(
        out,
        "add table {TABLE} {{ comment \"rules for kube-proxy\" ; }}"
    );
    for (chain, hook) in [
        ("nat-prerouting", "type nat hook prerouting priority dstnat"),
        ("nat-output", "type nat hook output priority -100"),
        (
            "nat-postrouting",
            "type nat hook postrouting priority srcnat",
        ),
    ] {
        let _ = writeln!(out, "add chain {TABLE} {chain} {{ {hook} ; }}");
    }
    for chain in ["services", "masquerading", "mark-for-masquerade"] {
        let _ = writeln!(out, "add chain {TABLE} {chain}");
    }
    let _ = writeln!(
        out,
        "add set {TABLE} cluster-ips {{ type ipv4_addr ; comment \"Active ClusterIPs\" ; }}"
    );
    let _ = writeln!(
        out,
        "add map {TABLE} service-ips {{ type ipv4_addr . inet_proto . inet_service : verdict ; \
         comment \"ClusterIP, ExternalIP and LoadBalancer IP traffic\" ; }}"
    );
    let _ = writeln!(out, "add rule {TABLE} nat-prerouting jump services");
    let _ = writeln!(out, "add rule {TABLE} nat-output jump services");
    let _ = writeln!(out, "add rule {TABLE} nat-postrouting jump masquerading");
    let _ = writeln!(
        out,
        "add rule {TABLE} masquerading meta mark & {MASQ_MARK} == 0 return"
    );
    let _ = writeln!(
        out,
        "add rule {TABLE} masquerading meta mark set meta mark ^ {MASQ_MARK}"
    );
    let _ = writeln!(out, "add rule {TABLE} masquerading masquerade fully-random");
    let _ = writeln!(
        out,
        "add rule {TABLE} mark-for-masquerade meta mark set meta mark | {MASQ_MARK}"
    );
    let _ = writeln!(
        out,
        "add rule {TABLE} services ip daddr . meta l4proto . th dport vmap @service-ips"
    );
    for s in services {
        write_service(&mut out, s, &s.endpoints, maps);
        let _ = writeln!(out, "add element {TABLE} cluster-ips {{ {} }}", s.vip);
        let _ = writeln!(
            out,
            "add element {TABLE} service-ips {{ {} . {} . {} : goto {} }}",
            s.vip,
            s.protocol.name(),
            s.port,
            service_chain(s)
        );
    }
    out
}

/// The service chain's rules and the chains of `new_endpoints`.
fn write_service(
    out: &mut String,
    s: &Service,
    new_endpoints: &[SocketAddrV4],
    maps: EndpointMaps,
) {
    let chain = service_chain(s);
    let proto = s.protocol.name();
    for &ep in new_endpoints {
        let ep_chain = endpoint_chain(s, ep);
        let _ = writeln!(out, "add chain {TABLE} {ep_chain}");
        let _ = writeln!(
            out,
            "add rule {TABLE} {ep_chain} ip saddr {} jump mark-for-masquerade",
            ep.ip()
        );
        let _ = writeln!(
            out,
            "add rule {TABLE} {ep_chain} meta l4proto {proto} dnat to {ep}"
        );
    }
    let _ = writeln!(out, "add chain {TABLE} {chain}");
    let _ = writeln!(
        out,
        "add rule {TABLE} {chain} ip daddr {} {proto} dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        s.vip, s.port
    );
    let arms: Vec<String> = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(k, &ep)| format!("{k} : goto {}", endpoint_chain(s, ep)))
        .collect();
    let n = s.endpoints.len();
    match maps {
        EndpointMaps::Anonymous => {
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} numgen random mod {n} vmap {{ {} }}",
                arms.join(" , ")
            );
        }
        EndpointMaps::Named => {
            let map = format!("{chain}-endpoints");
            let _ = writeln!(
                out,
                "add map {TABLE} {map} {{ typeof numgen random mod {n} : verdict ; }}"
            );
            let _ = writeln!(out, "add element {TABLE} {map} {{ {} }}", arms.join(" , "));
            let _ = writeln!(
                out,
                "add rule {TABLE} {chain} numgen random mod {n} vmap @{map}"
            );
        }
    }
}

/// The transaction kube-proxy's partial sync applies when the endpoints of
/// one service go from `old` to `new` (same service, same VIP): the service
/// chain is flushed and rewritten, new endpoint chains are added, and the
/// chains of endpoints that left are flushed and deleted. (kube-proxy
/// defers the delete of a stale chain to a later sync; here it is in the
/// same transaction, which nft accepts once the flush has dropped the last
/// reference — the same work, counted once.) `service-ips` is untouched.
pub(crate) fn endpoint_change(old: &Service, new: &Service) -> String {
    let before: BTreeSet<SocketAddrV4> = old.endpoints.iter().copied().collect();
    let after: BTreeSet<SocketAddrV4> = new.endpoints.iter().copied().collect();
    let mut out = String::new();
    let _ = writeln!(out, "flush chain {TABLE} {}", service_chain(new));
    let added: Vec<SocketAddrV4> = after.difference(&before).copied().collect();
    write_service(&mut out, new, &added, EndpointMaps::Anonymous);
    for &ep in before.difference(&after) {
        let ep_chain = endpoint_chain(old, ep);
        let _ = writeln!(out, "flush chain {TABLE} {ep_chain}");
        let _ = writeln!(out, "delete chain {TABLE} {ep_chain}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kube_proxy::tests::{tcp_and_udp_services, two_services};

    #[test]
    fn ruleset_has_kube_proxys_structure() {
        let services = two_services();
        let text = ruleset(&services);
        let lines: Vec<&str> = text.lines().collect();
        let count = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
        // 6 fixed chains + per service: 1 service chain and 2 endpoint chains.
        assert_eq!(count("add chain ip kube-proxy "), 6 + 2 * 3);
        assert_eq!(count("add chain ip kube-proxy service-"), 2);
        assert_eq!(count("add chain ip kube-proxy endpoint-"), 4);
        assert_eq!(count("add element ip kube-proxy service-ips "), 2);
        assert_eq!(count("add element ip kube-proxy cluster-ips "), 2);
        // Every service chain is the target of exactly its vmap element and
        // every endpoint chain of exactly one numgen arm.
        let s0 = service_chain(&services[0]);
        assert!(
            lines.contains(
                &format!(
                    "add element ip kube-proxy service-ips {{ 198.19.0.0 . tcp . 80 : goto {s0} }}"
                )
                .as_str()
            )
        );
        let e0 = endpoint_chain(&services[0], services[0].endpoints[0]);
        let e1 = endpoint_chain(&services[0], services[0].endpoints[1]);
        assert!(s0.starts_with("service-") && s0.ends_with("-ns/svc-0/tcp/http"));
        assert!(e0.ends_with("-ns/svc-0/tcp/http__198.18.0.1/8000"));
        assert!(lines.contains(&format!(
            "add rule ip kube-proxy {s0} numgen random mod 2 vmap {{ 0 : goto {e0} , 1 : goto {e1} }}"
        )
        .as_str()));
        assert!(
            lines.contains(
                &format!("add rule ip kube-proxy {e0} meta l4proto tcp dnat to 198.18.0.1:8000")
                    .as_str()
            )
        );
        assert!(lines.contains(&format!(
            "add rule ip kube-proxy {s0} ip daddr 198.19.0.0 tcp dport 80 ip saddr != 198.18.0.0/16 jump mark-for-masquerade"
        )
        .as_str()));
        // A chain is added before anything refers to it.
        let at = |needle: &str| lines.iter().position(|l| l.contains(needle)).unwrap();
        assert!(at(&format!("add chain ip kube-proxy {e0}")) < at(&format!("goto {e0}")));
        assert!(at(&format!("add chain ip kube-proxy {s0}")) < at(&format!("goto {s0}")));
    }

    #[test]
    fn endpoint_change_rewrites_one_service() {
        let old = two_services().remove(1);
        let mut new = old.clone();
        let gone = new.endpoints.pop().unwrap();
        let s = service_chain(&old);
        let stale = endpoint_chain(&old, gone);
        let kept = endpoint_chain(&old, old.endpoints[0]);
        assert_eq!(
            endpoint_change(&old, &new),
            format!(
                "flush chain ip kube-proxy {s}\n\
                 add chain ip kube-proxy {s}\n\
                 add rule ip kube-proxy {s} ip daddr 198.19.0.1 tcp dport 80 ip saddr != 198.18.0.0/16 jump mark-for-masquerade\n\
                 add rule ip kube-proxy {s} numgen random mod 1 vmap {{ 0 : goto {kept} }}\n\
                 flush chain ip kube-proxy {stale}\n\
                 delete chain ip kube-proxy {stale}\n"
            )
        );
        // Coming back adds the endpoint's chain before the rule that uses it.
        let back = endpoint_change(&new, &old);
        let lines: Vec<&str> = back.lines().collect();
        assert_eq!(lines[0], format!("flush chain ip kube-proxy {s}"));
        assert_eq!(lines[1], format!("add chain ip kube-proxy {stale}"));
        assert!(lines[lines.len() - 1].contains(&format!("1 : goto {stale}")));
        assert!(!back.contains("delete"));
    }

    #[test]
    fn udp_service_uses_udp_forms() {
        let services = tcp_and_udp_services();
        let (tcp, udp) = (&services[0], &services[1]);
        let text = ruleset(&services);
        let lines: Vec<&str> = text.lines().collect();
        let s_tcp = service_chain(tcp);
        let s_udp = service_chain(udp);
        let e_udp = endpoint_chain(udp, udp.endpoints[0]);
        assert!(s_udp.starts_with("service-") && s_udp.ends_with("-ns/dns/udp/http"));
        assert!(e_udp.ends_with("-ns/dns/udp/http__198.18.0.1/5353"));
        // Same VIP, port and name: the chains still differ, by digest and name.
        assert_ne!(s_tcp, s_udp);
        assert_ne!(s_tcp[..16], s_udp[..16]);
        assert_ne!(endpoint_chain(tcp, tcp.endpoints[0]), e_udp);
        assert!(lines.contains(
            &format!("add element ip kube-proxy service-ips {{ 198.19.0.10 . udp . 53 : goto {s_udp} }}")
                .as_str()
        ));
        assert!(lines.contains(
            &format!("add element ip kube-proxy service-ips {{ 198.19.0.10 . tcp . 53 : goto {s_tcp} }}")
                .as_str()
        ));
        assert!(
            lines.contains(
                &format!("add rule ip kube-proxy {e_udp} meta l4proto udp dnat to 198.18.0.1:5353")
                    .as_str()
            )
        );
        assert!(lines.contains(&format!(
            "add rule ip kube-proxy {s_udp} ip daddr 198.19.0.10 udp dport 53 ip saddr != 198.18.0.0/16 jump mark-for-masquerade"
        )
        .as_str()));
        // Every line about the UDP service's chains is in UDP terms.
        for l in lines.iter().filter(|l| l.contains("/udp/")) {
            assert!(!l.contains("tcp"), "{l}");
        }
        // 6 fixed chains + per service 1 service and 2 endpoint chains, none shared.
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("add chain ip kube-proxy "))
                .count(),
            6 + 2 * 3
        );
        // A partial sync of the UDP service stays in UDP terms.
        let mut fewer = udp.clone();
        fewer.endpoints.pop();
        let change = endpoint_change(udp, &fewer);
        assert!(change.contains(&format!(
            "add rule ip kube-proxy {s_udp} ip daddr 198.19.0.10 udp dport 53 "
        )));
        assert!(!change.contains("tcp"));
    }

    #[test]
    fn named_endpoint_maps_hold_the_same_arms() {
        let services = super::super::tests::two_services();
        let text = ruleset_with(&services, EndpointMaps::Named);
        let s0 = service_chain(&services[0]);
        let e0 = endpoint_chain(&services[0], services[0].endpoints[0]);
        assert!(text.contains(&format!(
            "add map ip kube-proxy {s0}-endpoints {{ typeof numgen random mod 2 : verdict ; }}"
        )));
        assert!(text.contains(&format!(
            "add element ip kube-proxy {s0}-endpoints {{ 0 : goto {e0} ,"
        )));
        assert!(text.contains(&format!(
            "add rule ip kube-proxy {s0} numgen random mod 2 vmap @{s0}-endpoints"
        )));
        assert!(!text.contains("vmap {"), "no anonymous map left");
    }
}
