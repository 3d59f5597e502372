//! The configuration file as the agent and `xlb check-config` read it: the
//! example files under `tests/data` and the example of `docs/config.md`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use control_plane::{
    model::{BackendState, FrontendKind, Model, Probe, Protocol, ServiceName},
    source::file::{self, ConfigError},
};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

/// One line per service: `name: frontends => backends`, with kinds and
/// states spelled out.
fn describe(model: &Model) -> Vec<String> {
    model
        .services
        .iter()
        .map(|(name, s)| {
            let frontends: Vec<String> = s
                .frontends
                .iter()
                .map(|f| {
                    let kind = match f.kind {
                        FrontendKind::Vip => "vip",
                        FrontendKind::Node => "node",
                    };
                    format!("{f} {kind}")
                })
                .collect();
            let backends: Vec<String> = s
                .backends
                .iter()
                .map(|b| {
                    let state = match b.state {
                        BackendState::Active => "active",
                        BackendState::Draining => "draining",
                        BackendState::Terminating => "terminating",
                    };
                    format!("{} w{} {state}", b.addr, b.weight)
                })
                .collect();
            format!(
                "{name}: {} => {}",
                frontends.join(", "),
                backends.join(", ")
            )
        })
        .collect()
}

fn service<'a>(model: &'a Model, name: &str) -> &'a control_plane::model::Service {
    &model.services[&ServiceName(name.to_owned())]
}

#[test]
fn the_native_example_loads() {
    let model = file::load(&data("native.yaml")).expect("native.yaml is valid");
    assert_eq!(
        describe(&model),
        [
            "dns: 198.18.100.53:53/UDP vip => 198.18.3.1:53 w1 active, 198.18.3.2:53 w1 active",
            "staging: 198.18.100.2:80/TCP vip => ",
            "web: 198.18.100.1:80/TCP vip, 198.18.100.1:8080/TCP vip, 198.18.0.10:30080/TCP node \
             => 198.18.2.1:8080 w1 active, 198.18.2.2:8080 w2 active, 198.18.2.3:8080 w1 draining",
            "web-v6: [2001:2::100]:443/TCP vip => [2001:2::2:1]:8443 w1 active, \
             [2001:2::2:2]:8443 w1 active",
        ]
    );
    let web = service(&model, "web");
    assert_eq!(
        web.affinity.map(|a| a.timeout),
        Some(Duration::from_secs(1800))
    );
    let check = web.health_check.as_ref().expect("web has a health check");
    assert_eq!(
        check.probe,
        Probe::Http {
            path: "/healthz".to_owned()
        }
    );
    assert_eq!(
        (check.interval, check.timeout, check.rise, check.fall),
        (Duration::from_secs(1), Duration::from_millis(500), 2, 3)
    );
    let dns = service(&model, "dns");
    assert_eq!(dns.protocol, Protocol::Udp);
    assert_eq!(
        dns.health_check.as_ref().map(|c| (&c.probe, c.port)),
        Some((&Probe::Tcp, Some(53)))
    );
}

#[test]
fn the_mixed_example_translates_its_kubernetes_documents() {
    let loaded = file::load_with_warnings(&data("mixed.yaml")).expect("mixed.yaml is valid");
    assert_eq!(
        describe(&loaded.model),
        [
            "admin: 198.18.100.9:443/TCP vip => 198.18.9.1:8443 w1 active",
            "kube-system/dns:dns: 198.18.100.10:53/UDP vip => 198.18.3.1:53 w1 active",
            "kube-system/dns:dns-tcp: 198.18.100.10:53/TCP vip => 198.18.3.1:53 w1 active",
            // externalTrafficPolicy: Local splits the NodePorts off, with
            // node-a's endpoints only; the terminating one keeps its flows.
            "shop/web:http: 198.18.100.1:80/TCP vip => 198.18.2.1:8080 w1 active, \
             198.18.2.2:8080 w1 active, 198.18.2.3:8080 w1 terminating",
            "shop/web:http/external: 198.18.0.10:30080/TCP node => 198.18.2.1:8080 w1 active, \
             198.18.2.3:8080 w1 terminating",
            // Dual stack: the second family is its own service.
            "shop/web:http/ipv6: [2001:2::100]:80/TCP vip => [2001:2::2:1]:8080 w1 active",
            "shop/web:http/ipv6/external: [2001:2::10]:30080/TCP node => ",
        ]
    );
    assert!(
        loaded
            .model
            .services
            .iter()
            .filter(|(name, _)| name.0.starts_with("shop/"))
            .all(|(_, s)| s.affinity.map(|a| a.timeout) == Some(Duration::from_secs(10_800)))
    );
    assert_eq!(
        loaded.warnings,
        [
            "documents[4].items[0] (Service kube-system/dns): kube-system/dns:dns-sctp: SCTP is \
             not supported; skipped"
        ]
    );
}

#[test]
fn the_error_example_reports_every_problem_with_its_place() {
    let path = data("errors.yaml");
    let error = file::load(&path).expect_err("errors.yaml is invalid");
    assert!(matches!(error, ConfigError::Invalid { .. }));
    let prefix = format!("{}: ", path.display());
    let expected = [
        "services[0].frontends[0].port: 70000 is out of range 1-65535",
        "services[0].backends[0].address: `198.18.2.1` is not ip:port (IPv6 as [2001:2::1]:80)",
        "services[0].backends[0].weight: 0 is not a weight (1-10000): to stop new flows to a \
         backend, set state: draining",
        "services[1].name: `web` is already the name of services[0]",
        "services[1].mode: `drs` is not a mode: use nat or dsr",
        "services[1].backends[0].address: [2001:2::2:1]:80 is IPv6 but the service's frontends \
         are IPv4: the datapath translates within one address family (no NAT46 or NAT64)",
        "services[2].session_affinity.timeout: `2d` is out of range 1s-1day",
        "services[2].health_check.path: required for an http check: the path to GET, like \
         /healthz",
        "services[2].health_check.timeout: `1s` must be shorter than the interval (`1s`)",
        "services[5].frontends[0].weigth: unknown field: the fields here are `address`, `port`, \
         `kind`",
        "documents[1] (Service default/web): spec.clusterIP: `198.18.100.300` is not an IP \
         address",
        "documents[1] (Service default/web): spec.sessionAffinityConfig.clientIP.timeoutSeconds: \
         100000 is out of range 1-86400",
        "documents[1] (Service default/web): spec.ports[1].name: required when a Service has more \
         than one port",
        "documents[2]: kind `Deployment` (`apps/v1`) is not supported: a document is the \
         native format, a v1 Service, a discovery.k8s.io/v1 EndpointSlice or a v1 List of them",
        "services[4].frontends[0]: 198.18.100.5:5432/TCP is already a frontend of service db \
         (services[3].frontends[0])",
        "services[4].frontends[1]: 198.18.0.10 is used as a vip here but is a node address in \
         node.addresses[0]: an address is either a vip or a node address",
    ];
    let shown = error.to_string();
    let lines: Vec<&str> = shown.lines().collect();
    let expected: Vec<String> = expected.iter().map(|e| format!("{prefix}{e}")).collect();
    assert_eq!(lines, expected);
    assert_eq!(error.problems().len(), expected.len());
}

#[test]
fn a_missing_file_is_a_read_error_naming_it() {
    let path = data("does-not-exist.yaml");
    let error = file::load(&path).expect_err("no such file");
    assert_eq!(
        error.to_string(),
        format!("{}: cannot read the configuration file", path.display())
    );
    let cause = std::error::Error::source(&error).expect("the I/O error is the source");
    assert!(cause.to_string().contains("No such file"), "{cause}");
}

#[test]
fn the_reference_example_in_docs_is_valid() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/config.md");
    let text = std::fs::read_to_string(&docs).expect("docs/config.md");
    let example = text
        .split("```yaml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("docs/config.md has a yaml example");
    let loaded = file::parse_with_warnings(example).unwrap_or_else(|e| panic!("{e}"));
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert!(!loaded.model.services.is_empty());
}
