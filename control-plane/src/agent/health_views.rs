//! `GET /v1/health` (`xlb health list`): each health check the agent runs,
//! with how it probes and why its last probe failed. Until this view, that
//! reason was only in the agent's log, and `xlb backend list` said `down`
//! with no why. And the health part of `GET /v1/backends` (`xlb backend
//! list`): how each service checks a backend, and what it finds.

use crate::{
    api::{HealthCheckView, ProbePathView, ServiceHealthView},
    health::{Health, ProbePath, ProbeTunnel, TargetStatus},
    model::{HealthCheck, Model, Probe},
};

/// One view per checked (backend, check, path), as the checker runs them
/// (`statuses`, from [`crate::health::HealthChecker::snapshot`]), each with
/// the services of `model` that list the backend with that check and probe
/// it that way (`tunnel`: the DSR tunnel's paths, None when probes go
/// direct).
pub(crate) fn health_check_views(
    model: &Model,
    tunnel: Option<&ProbeTunnel>,
    statuses: Vec<TargetStatus>,
) -> Vec<HealthCheckView> {
    statuses
        .into_iter()
        .map(|status| {
            let addr = status.target.addr;
            let services = model
                .services
                .iter()
                .filter(|(_, service)| {
                    service.health_check.as_ref() == Some(&status.check)
                        && service.backends.iter().any(|b| b.addr == addr)
                        && crate::health::probe_path(tunnel, service, addr.ip()) == status.path
                })
                .map(|(name, _)| name.to_string())
                .collect();
            let (path, mark) = path_view(status.path);
            HealthCheckView {
                backend: addr,
                services,
                probe: probe_text(&status.check),
                path,
                probe_address: status.probe_addr,
                mark,
                health: status.health.as_str().to_owned(),
                consecutive_successes: status.consecutive_successes,
                consecutive_failures: status.consecutive_failures,
                last_error: status.last_error,
            }
        })
        .collect()
}

/// A checking service's view of a backend: the path its probes take, and
/// the verdict it acts on.
pub(crate) fn service_health(path: ProbePath, health: Health) -> ServiceHealthView {
    ServiceHealthView {
        path: path_view(path).0,
        health: health.as_str().to_owned(),
    }
}

/// How the API names `path`, and the mark of a probe through the tunnel.
const fn path_view(path: ProbePath) -> (ProbePathView, Option<u32>) {
    match path {
        ProbePath::Direct => (ProbePathView::Direct, None),
        ProbePath::Tunnel { mark, .. } => (ProbePathView::Tunnel, Some(mark)),
        ProbePath::Unwrappable(_) => (ProbePathView::Unwrappable, None),
    }
}

/// `tcp`, or `http GET PATH`.
fn probe_text(check: &HealthCheck) -> String {
    match &check.probe {
        Probe::Tcp => "tcp".to_owned(),
        Probe::Http { path } => format!("http GET {path}"),
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use crate::{
        health::{Health, Target},
        model::{Backend, Protocol, Service, ServiceName},
    };

    fn check(probe: Probe) -> HealthCheck {
        HealthCheck {
            probe,
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        }
    }

    fn service(backends: &[SocketAddr], health_check: Option<HealthCheck>) -> Service {
        Service {
            health_check,
            ..Service::nat(
                Protocol::Tcp,
                backends.iter().copied().map(Backend::active).collect(),
            )
        }
    }

    fn status(addr: SocketAddr, check: HealthCheck, health: Health) -> TargetStatus {
        TargetStatus {
            target: Target { addr },
            check,
            path: ProbePath::Direct,
            probe_addr: addr,
            health,
            consecutive_successes: 0,
            consecutive_failures: 3,
            last_error: Some("connecting to 198.18.2.1:80: Connection refused".to_owned()),
        }
    }

    #[test]
    fn a_check_names_the_services_that_run_it_and_why_it_failed() {
        let b1: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let b2: SocketAddr = "198.18.2.2:80".parse().unwrap();
        let http = check(Probe::Http {
            path: "/healthz".into(),
        });
        let mut model = Model::default();
        for (name, backends, check) in [
            ("web", vec![b1, b2], Some(http.clone())),
            ("api", vec![b1], Some(http.clone())),
            // Same backend, another check: its own view, not this one's.
            ("raw", vec![b1], Some(check(Probe::Tcp))),
            ("unchecked", vec![b1], None),
        ] {
            model
                .services
                .insert(ServiceName(name.into()), service(&backends, check));
        }
        let views = health_check_views(&model, None, vec![status(b1, http, Health::Down)]);
        assert_eq!(
            views,
            [HealthCheckView {
                backend: b1,
                services: vec!["api".to_owned(), "web".to_owned()],
                probe: "http GET /healthz".to_owned(),
                path: ProbePathView::Direct,
                probe_address: b1,
                mark: None,
                health: "down".to_owned(),
                consecutive_successes: 0,
                consecutive_failures: 3,
                last_error: Some("connecting to 198.18.2.1:80: Connection refused".to_owned()),
            }]
        );
    }

    #[test]
    fn a_tunnel_probe_shows_its_mark_and_an_unwrappable_one_its_path() {
        let b1: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let vip: SocketAddr = "198.19.0.1:80".parse().unwrap();
        let tcp = check(Probe::Tcp);
        let model = Model::default();
        let tunnelled = TargetStatus {
            path: ProbePath::Tunnel {
                vip: vip.ip(),
                mark: 0x584c_0001,
            },
            probe_addr: vip,
            ..status(b1, tcp.clone(), Health::Up)
        };
        let unwrappable = TargetStatus {
            path: ProbePath::Unwrappable(crate::health::tunnel::NoTunnel::NoVip),
            ..status(b1, tcp, Health::Down)
        };
        let views = health_check_views(&model, None, vec![tunnelled, unwrappable]);
        assert_eq!(
            views
                .iter()
                .map(|v| (v.path, v.mark, v.probe_address))
                .collect::<Vec<_>>(),
            [
                (ProbePathView::Tunnel, Some(0x584c_0001), vip),
                (ProbePathView::Unwrappable, None, b1)
            ]
        );
        assert_eq!(views[0].probe, "tcp");
    }
}
