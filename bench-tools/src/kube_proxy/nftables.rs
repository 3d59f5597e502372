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

use super::{CLUSTER_CIDR, MASQ_MARK, Service, digest};

/// The table kube-proxy owns.
const TABLE: &str = "ip kube-proxy";

/// `service-<hash>-ns/name/tcp/http`.
fn service_chain(s: &Service) -> String {
    let id = format!("{}/{}/tcp/http", super::NAMESPACE, s.name);
    format!("service-{}-{id}", digest(&id, 8))
}

/// `endpoint-<hash>-ns/name/tcp/http__ip/port`.
fn endpoint_chain(s: &Service, ep: SocketAddrV4) -> String {
    let id = format!(
        "{}/{}/tcp/http__{}/{}",
        super::NAMESPACE,
        s.name,
        ep.ip(),
        ep.port()
    );
    format!("endpoint-{}-{id}", digest(&id, 8))
}

/// The whole ruleset for `services`, to load into a namespace without it.
pub(crate) fn ruleset(services: &[Service]) -> String {
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
        write_service(&mut out, s, &s.endpoints);
        let _ = writeln!(out, "add element {TABLE} cluster-ips {{ {} }}", s.vip);
        let _ = writeln!(
            out,
            "add element {TABLE} service-ips {{ {} . tcp . {} : goto {} }}",
            s.vip,
            s.port,
            service_chain(s)
        );
    }
    out
}

/// The service chain's rules and the chains of `new_endpoints`.
fn write_service(out: &mut String, s: &Service, new_endpoints: &[SocketAddrV4]) {
    let chain = service_chain(s);
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
            "add rule {TABLE} {ep_chain} meta l4proto tcp dnat to {ep}"
        );
    }
    let _ = writeln!(out, "add chain {TABLE} {chain}");
    let _ = writeln!(
        out,
        "add rule {TABLE} {chain} ip daddr {} tcp dport {} ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        s.vip, s.port
    );
    let arms: Vec<String> = s
        .endpoints
        .iter()
        .enumerate()
        .map(|(k, &ep)| format!("{k} : goto {}", endpoint_chain(s, ep)))
        .collect();
    let _ = writeln!(
        out,
        "add rule {TABLE} {chain} numgen random mod {} vmap {{ {} }}",
        s.endpoints.len(),
        arms.join(" , ")
    );
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
    write_service(&mut out, new, &added);
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
    use crate::kube_proxy::tests::two_services;

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
}
