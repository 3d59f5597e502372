//! kube-proxy's iptables mode, as `iptables-restore` input.
//!
//! `KUBE-SERVICES` matches each cluster IP and port and jumps to the
//! service's `KUBE-SVC-*` chain, which marks off-cluster clients for
//! masquerade and walks its endpoints with `statistic --mode random
//! --probability 1/(B-k)` rules (the last one unconditional) into one
//! `KUBE-SEP-*` chain per endpoint, which DNATs. kube-proxy always restores
//! with `--noflush`: declaring a chain (`:CHAIN - [0:0]`) creates or flushes
//! it, and chains it does not declare are left alone.

use std::{collections::BTreeSet, fmt::Write as _, net::SocketAddrV4};

use super::{CLUSTER_CIDR, MASQ_MARK, Service, digest};

/// `KUBE-SVC-<hash of the service port and protocol>`.
fn svc_chain(s: &Service) -> String {
    format!(
        "KUBE-SVC-{}",
        digest(&format!("{}{}", s.port_name(), s.protocol.name()), 16)
    )
}

/// `KUBE-SEP-<hash of the service port, protocol and endpoint>`.
fn sep_chain(s: &Service, ep: SocketAddrV4) -> String {
    format!(
        "KUBE-SEP-{}",
        digest(&format!("{}{}{ep}", s.port_name(), s.protocol.name()), 16)
    )
}

/// The filter table's fixed chains, rewritten by every sync.
fn write_filter(out: &mut String) {
    out.push_str("*filter\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-EXTERNAL-SERVICES",
        "KUBE-FORWARD",
        "KUBE-PROXY-FIREWALL",
        "KUBE-NODEPORTS",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    out.push_str("-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP\n");
    let _ = writeln!(
        out,
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding rules\" -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"
    );
    out.push_str(
        "-A KUBE-FORWARD -m comment --comment \"kubernetes forwarding conntrack rule\" -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n",
    );
    out.push_str("COMMIT\n");
}

/// The nat table's fixed chains (declared) and their rules, except
/// `KUBE-SERVICES`' per-service jumps.
fn write_nat_head(out: &mut String) {
    out.push_str("*nat\n");
    for chain in [
        "KUBE-SERVICES",
        "KUBE-NODEPORTS",
        "KUBE-POSTROUTING",
        "KUBE-MARK-MASQ",
    ] {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
}

fn write_nat_fixed_rules(out: &mut String) {
    let _ = writeln!(
        out,
        "-A KUBE-POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    );
    let _ = writeln!(out, "-A KUBE-POSTROUTING -j MARK --xor-mark {MASQ_MARK}");
    out.push_str(
        "-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully\n",
    );
    let _ = writeln!(out, "-A KUBE-MARK-MASQ -j MARK --or-mark {MASQ_MARK}");
}

/// `KUBE-SERVICES`' jump for one service.
fn write_service_jump(out: &mut String, s: &Service) {
    let proto = s.protocol.name();
    let _ = writeln!(
        out,
        "-A KUBE-SERVICES -m comment --comment \"{} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} -j {}",
        s.port_name(),
        s.vip,
        s.port,
        svc_chain(s)
    );
}

/// `KUBE-SERVICES`' last rule.
fn write_nodeports_jump(out: &mut String) {
    out.push_str(
        "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS\n",
    );
}

/// The service's own chains: declarations go to `chains`, rules to `rules`
/// (iptables-restore wants every chain declared before the rules).
fn write_service_chains(chains: &mut String, rules: &mut String, s: &Service) {
    let svc = svc_chain(s);
    let name = s.port_name();
    let proto = s.protocol.name();
    let _ = writeln!(chains, ":{svc} - [0:0]");
    let _ = writeln!(
        rules,
        "-A {svc} -m comment --comment \"{name} cluster IP\" -m {proto} -p {proto} -d {}/32 --dport {} ! -s {CLUSTER_CIDR} -j KUBE-MARK-MASQ",
        s.vip, s.port
    );
    let n = s.endpoints.len();
    for (k, &ep) in s.endpoints.iter().enumerate() {
        let sep = sep_chain(s, ep);
        // Endpoint k of n is taken with probability 1/(n-k) among those
        // left, so each is chosen 1/n of the time; the last is the fallthrough.
        let choice = if k + 1 < n {
            format!(
                "-m statistic --mode random --probability {:.10} ",
                1.0 / (n - k) as f64
            )
        } else {
            String::new()
        };
        let _ = writeln!(
            rules,
            "-A {svc} -m comment --comment \"{name} -> {ep}\" {choice}-j {sep}"
        );
    }
    for &ep in &s.endpoints {
        let sep = sep_chain(s, ep);
        let _ = writeln!(chains, ":{sep} - [0:0]");
        let _ = writeln!(
            rules,
            "-A {sep} -m comment --comment {name} -s {}/32 -j KUBE-MARK-MASQ",
            ep.ip()
        );
        let _ = writeln!(
            rules,
            "-A {sep} -m comment --comment {name} -m {proto} -p {proto} -j DNAT --to-destination {ep}"
        );
    }
}

/// The whole ruleset for `services`, for `iptables-restore --noflush` into
/// a namespace without it. It also hooks `KUBE-SERVICES` and
/// `KUBE-POSTROUTING` into the built-in chains (kube-proxy does that with
/// separate `iptables -I` calls before its first restore).
pub(crate) fn ruleset(services: &[Service]) -> String {
    let mut out = String::with_capacity(services.len() * 4096);
    write_filter(&mut out);
    write_nat_head(&mut out);
    let mut rules = String::with_capacity(services.len() * 3072);
    for s in services {
        write_service_chains(&mut out, &mut rules, s);
    }
    for hook in ["PREROUTING", "OUTPUT"] {
        let _ = writeln!(
            out,
            "-A {hook} -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"
        );
    }
    out.push_str(
        "-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING\n",
    );
    write_nat_fixed_rules(&mut out);
    for s in services {
        write_service_jump(&mut out, s);
    }
    write_nodeports_jump(&mut out);
    out.push_str(&rules);
    out.push_str("COMMIT\n");
    out
}

/// What kube-proxy's partial sync (`MinimizeIPTablesRestore`, KEP-3453)
/// restores with `--noflush` after the endpoints of `services[changed]`
/// went from `old` to what `services` now holds: the fixed chains in full —
/// `KUBE-SERVICES` with one jump per service — the changed service's
/// `KUBE-SVC-*` and `KUBE-SEP-*` chains, and `-X` of the `KUBE-SEP-*`
/// chains of endpoints that left. Other services' chains are not mentioned,
/// so they stay as they are.
pub(crate) fn partial_sync(services: &[Service], changed: usize, old: &Service) -> String {
    let new = &services[changed];
    let mut out = String::with_capacity(services.len() * 160);
    write_filter(&mut out);
    write_nat_head(&mut out);
    let mut rules = String::new();
    write_service_chains(&mut out, &mut rules, new);
    let after: BTreeSet<SocketAddrV4> = new.endpoints.iter().copied().collect();
    let stale: Vec<String> = old
        .endpoints
        .iter()
        .filter(|ep| !after.contains(ep))
        .map(|&ep| sep_chain(old, ep))
        .collect();
    // A chain is declared (so flushed) before it is deleted: its rules may
    // not outlive it.
    for chain in &stale {
        let _ = writeln!(out, ":{chain} - [0:0]");
    }
    write_nat_fixed_rules(&mut out);
    for s in services {
        write_service_jump(&mut out, s);
    }
    write_nodeports_jump(&mut out);
    out.push_str(&rules);
    for chain in &stale {
        let _ = writeln!(out, "-X {chain}");
    }
    out.push_str("COMMIT\n");
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
        let svc = svc_chain(&services[0]);
        let sep0 = sep_chain(&services[0], services[0].endpoints[0]);
        let sep1 = sep_chain(&services[0], services[0].endpoints[1]);
        assert_eq!(svc.len(), "KUBE-SVC-".len() + 16);
        let nat = text.split("*nat\n").nth(1).unwrap();
        let lines: Vec<&str> = nat.lines().collect();
        // Fixed chains, then per service 1 KUBE-SVC and 2 KUBE-SEP chains.
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(':')).count(),
            4 + 2 * 3
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("-A KUBE-SERVICES "))
                .count(),
            2 + 1
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("-A KUBE-SVC-"))
                .count(),
            2 * 3
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.starts_with("-A KUBE-SEP-"))
                .count(),
            2 * 2 * 2
        );
        let svc_rules: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .collect();
        assert_eq!(
            svc_rules,
            [
                format!(
                    "-A {svc} -m comment --comment \"ns/svc-0:http cluster IP\" -m tcp -p tcp -d 198.19.0.0/32 --dport 80 ! -s 198.18.0.0/16 -j KUBE-MARK-MASQ"
                ),
                format!(
                    "-A {svc} -m comment --comment \"ns/svc-0:http -> 198.18.0.1:8000\" -m statistic --mode random --probability 0.5000000000 -j {sep0}"
                ),
                format!(
                    "-A {svc} -m comment --comment \"ns/svc-0:http -> 198.18.0.2:8000\" -j {sep1}"
                ),
            ]
        );
        assert!(lines.contains(&format!("-A KUBE-SERVICES -m comment --comment \"ns/svc-0:http cluster IP\" -m tcp -p tcp -d 198.19.0.0/32 --dport 80 -j {svc}").as_str()));
        assert!(lines.contains(&format!("-A {sep0} -m comment --comment ns/svc-0:http -m tcp -p tcp -j DNAT --to-destination 198.18.0.1:8000").as_str()));
        // The node-ports jump is KUBE-SERVICES' last rule; every chain is
        // declared before any rule; the table is committed once.
        let jumps: Vec<&&str> = lines
            .iter()
            .filter(|l| l.starts_with("-A KUBE-SERVICES "))
            .collect();
        assert!(jumps.last().unwrap().ends_with("-j KUBE-NODEPORTS"));
        let last_decl = lines.iter().rposition(|l| l.starts_with(':')).unwrap();
        let first_rule = lines.iter().position(|l| l.starts_with("-A ")).unwrap();
        assert!(last_decl < first_rule);
        assert_eq!(text.matches("COMMIT\n").count(), 2);
        assert!(text.ends_with("COMMIT\n"));
    }

    #[test]
    fn probabilities_choose_each_endpoint_equally() {
        let mut s = two_services().remove(0);
        s.endpoints = (0..4u16)
            .map(|j| SocketAddrV4::new(std::net::Ipv4Addr::new(198, 18, 1, 1), 8000 + j))
            .collect();
        let text = ruleset(&[s]);
        let probabilities: Vec<&str> = text
            .lines()
            .filter_map(|l| l.split("--probability ").nth(1))
            .map(|rest| rest.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            probabilities,
            ["0.2500000000", "0.3333333333", "0.5000000000"]
        );
    }

    #[test]
    fn partial_sync_rewrites_only_the_changed_service() {
        let old = two_services();
        let mut services = old.clone();
        let gone = services[1].endpoints.pop().unwrap();
        let text = partial_sync(&services, 1, &old[1]);
        let stale = sep_chain(&old[1], gone);
        let nat = text.split("*nat\n").nth(1).unwrap();
        let declared: Vec<&str> = nat.lines().filter(|l| l.starts_with(':')).collect();
        assert_eq!(
            declared,
            [
                ":KUBE-SERVICES - [0:0]".to_owned(),
                ":KUBE-NODEPORTS - [0:0]".to_owned(),
                ":KUBE-POSTROUTING - [0:0]".to_owned(),
                ":KUBE-MARK-MASQ - [0:0]".to_owned(),
                format!(":{} - [0:0]", svc_chain(&services[1])),
                format!(
                    ":{} - [0:0]",
                    sep_chain(&services[1], services[1].endpoints[0])
                ),
                format!(":{stale} - [0:0]"),
            ]
        );
        // Both services keep their KUBE-SERVICES jump; only svc-1's chains
        // get rules; the stale chain goes last.
        assert_eq!(nat.matches("-A KUBE-SERVICES ").count(), 3);
        assert!(!nat.contains(&format!("-A {}", svc_chain(&services[0]))));
        assert!(nat.contains(&format!(
            "-A {} -m comment --comment \"ns/svc-1:http -> 198.18.0.3:8000\" -j ",
            svc_chain(&services[1])
        )));
        assert!(nat.ends_with(&format!("-X {stale}\nCOMMIT\n")));
    }

    #[test]
    fn udp_service_uses_udp_forms() {
        let services = tcp_and_udp_services();
        let (tcp, udp) = (&services[0], &services[1]);
        let text = ruleset(&services);
        let nat = text.split("*nat\n").nth(1).unwrap();
        let lines: Vec<&str> = nat.lines().collect();
        let svc_tcp = svc_chain(tcp);
        let svc_udp = svc_chain(udp);
        let sep_udp = sep_chain(udp, udp.endpoints[0]);
        // Same VIP, port and port name: the protocol alone sets the chains apart.
        assert_ne!(svc_tcp, svc_udp);
        assert_ne!(sep_chain(tcp, tcp.endpoints[0]), sep_udp);
        assert_eq!(svc_udp.len(), "KUBE-SVC-".len() + 16);
        assert!(lines.contains(&format!("-A KUBE-SERVICES -m comment --comment \"ns/dns:http cluster IP\" -m udp -p udp -d 198.19.0.10/32 --dport 53 -j {svc_udp}").as_str()));
        assert!(lines.contains(&format!("-A KUBE-SERVICES -m comment --comment \"ns/dns:http cluster IP\" -m tcp -p tcp -d 198.19.0.10/32 --dport 53 -j {svc_tcp}").as_str()));
        assert!(lines.contains(&format!("-A {svc_udp} -m comment --comment \"ns/dns:http cluster IP\" -m udp -p udp -d 198.19.0.10/32 --dport 53 ! -s 198.18.0.0/16 -j KUBE-MARK-MASQ").as_str()));
        assert!(lines.contains(&format!("-A {sep_udp} -m comment --comment ns/dns:http -m udp -p udp -j DNAT --to-destination 198.18.0.1:5353").as_str()));
        // Every rule of the UDP service's own chains is in UDP terms.
        let udp_chains: Vec<String> = std::iter::once(svc_udp.clone())
            .chain(udp.endpoints.iter().map(|&ep| sep_chain(udp, ep)))
            .collect();
        let udp_rules: Vec<&&str> = lines
            .iter()
            .filter(|l| {
                udp_chains
                    .iter()
                    .any(|c| l.starts_with(&format!("-A {c} ")))
            })
            .collect();
        assert_eq!(udp_rules.len(), 3 + 2 * 2);
        assert!(udp_rules.iter().all(|l| !l.contains("tcp")));
        // Both services' chains are declared, none shared.
        assert_eq!(
            lines.iter().filter(|l| l.starts_with(':')).count(),
            4 + 2 * 3
        );
        // A partial sync of the UDP service stays in UDP terms.
        let mut changed = services.clone();
        changed[1].endpoints.pop();
        let partial = partial_sync(&changed, 1, udp);
        assert!(partial.contains(&format!(
            "-A {svc_udp} -m comment --comment \"ns/dns:http cluster IP\" -m udp -p udp "
        )));
        assert!(partial.ends_with(&format!(
            "-X {}\nCOMMIT\n",
            sep_chain(udp, udp.endpoints[1])
        )));
    }
}
