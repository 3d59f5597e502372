//! Active health checks of backends: TCP connect or HTTP GET, every
//! `interval`, each probe bounded by `timeout`; a backend leaves after
//! `fall` failed probes in a row and returns after `rise` passed ones. A
//! new backend is pending, out of the table, until its first probe passes;
//! after a restart, one the earlier agent served starts up ([`pinned`]).
//!
//! Health is not part of the desired state ([`crate::model`]): the agent
//! hands the checked backends to a [`HealthChecker`] on every reload
//! ([`targets`] lists them), and overlays each service's verdict
//! ([`in_service`]: its check, on the path its traffic takes) on the model
//! when it programs the datapath, again on every [`HealthChange`] it
//! receives.
//!
//! - [`state`]: the pure rise/fall state machine;
//! - [`pinned`]: what an earlier agent served, read back after a restart;
//! - [`probe`]: one probe, over the network;
//! - [`tunnel`]: how a `dsr` service's backends are probed through the
//!   tunnel (a VIP, and a mark that names the backend);
//! - the checker: one task per (backend address, check, probe path);
//! - [`node_port`]: the `healthCheckNodePort` servers that tell external load
//!   balancers which nodes have endpoints of a `Local` Service.

mod checker;
pub mod node_port;
pub mod pinned;
pub mod probe;
#[cfg(test)]
pub(crate) mod scripted;
pub mod state;
pub mod tunnel;

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
};

pub use checker::{
    HealthChange, HealthChecker, NetProber, Prober, ServiceTarget, Target, TargetStatus,
};
pub use pinned::PinnedTables;
pub use probe::{ProbeError, ProbeTo};
pub use state::{Health, HealthState};
pub use tunnel::{ProbePath, ProbeTunnel};

use crate::model::{Model, Service, ServiceName};

/// Every (backend, check, path) of `model`, with the frontends of its
/// service: each backend of each service that has a health check, whatever
/// the backend's state — a draining backend's health still shows in
/// status. They repeat when services share a backend;
/// [`HealthChecker::set_targets`] checks each once.
///
/// With `tunnel`, a `dsr` service's backends are probed through it (give it
/// the model first: [`ProbeTunnel::assign`]); without, directly.
pub fn targets<'m>(
    model: &'m Model,
    tunnel: Option<&'m ProbeTunnel>,
) -> impl Iterator<Item = ServiceTarget<'m>> + 'm {
    model.services.values().flat_map(move |service| {
        service.health_check.iter().flat_map(move |check| {
            service.backends.iter().map(move |backend| ServiceTarget {
                target: Target { addr: backend.addr },
                check: Cow::Borrowed(check),
                frontends: &service.frontends,
                path: probe_path(tunnel, service, backend.addr.ip()),
            })
        })
    })
}

/// How `service`'s probes reach its backend at `ip`: through `tunnel` for
/// a `dsr` service ([`ProbeTunnel::path`]), directly for any other, or for
/// every service without a tunnel (`--dsr-health-probes direct`). The path
/// its traffic takes, so the one whose verdict it takes.
pub fn probe_path(tunnel: Option<&ProbeTunnel>, service: &Service, ip: IpAddr) -> ProbePath {
    tunnel.map_or(ProbePath::Direct, |tunnel| tunnel.path(service, ip))
}

/// How service `name` of `model` checks its backend at `addr`, and what it
/// finds: the path its probes take ([`probe_path`]) and `checker`'s verdict
/// of that check on that path. `None` when the service has no check (or is
/// not in `model`).
pub fn checked_in_service<P: Prober>(
    model: &Model,
    checker: &HealthChecker<P>,
    tunnel: Option<&ProbeTunnel>,
    name: &ServiceName,
    addr: SocketAddr,
) -> Option<(ProbePath, Health)> {
    let service = model.services.get(name)?;
    let check = service.health_check.as_ref()?;
    let path = probe_path(tunnel, service, addr.ip());
    Some((path, checker.verdict(addr, check, path)))
}

/// The health of the backend at `addr` in service `name` of `model`, as
/// traffic sees it: `checker`'s verdict of the service's check on the path
/// the service's traffic takes ([`checked_in_service`]), [`Health::Up`]
/// when the service has no check (or is not in `model`).
///
/// The same backend may be up in one service and down in another: under
/// another check, or under the same check on another path (a `dsr` service
/// probes through the tunnel what a NAT service probes directly).
pub fn in_service<P: Prober>(
    model: &Model,
    checker: &HealthChecker<P>,
    tunnel: Option<&ProbeTunnel>,
    name: &ServiceName,
    addr: SocketAddr,
) -> Health {
    checked_in_service(model, checker, tunnel, name, addr).map_or(Health::Up, |(_, health)| health)
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Duration};

    use super::*;
    use crate::model::{
        Backend, BackendState, HealthCheck, Mode, Probe, Protocol, Service, ServiceName,
    };

    /// A service of draining `backends`: a draining backend's health still
    /// shows, so it is still a target.
    fn service(backends: &[&str], health_check: Option<HealthCheck>) -> Service {
        let draining = |addr: &&str| Backend {
            state: BackendState::Draining,
            ..Backend::active(addr.parse().unwrap())
        };
        Service {
            health_check,
            ..Service::nat(Protocol::Tcp, backends.iter().map(draining).collect())
        }
    }

    #[test]
    fn lists_the_backends_of_checked_services_only() {
        let check = HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into(),
            },
            port: None,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            rise: 2,
            fall: 3,
        };
        let mut model = Model::default();
        model.services.insert(
            ServiceName("checked".into()),
            service(&["198.18.0.1:80", "198.18.0.2:80"], Some(check.clone())),
        );
        model.services.insert(
            ServiceName("unchecked".into()),
            service(&["198.18.0.3:80"], None),
        );
        let listed: Vec<(SocketAddr, HealthCheck)> = targets(&model, None)
            .map(|listed| (listed.target.addr, listed.check.into_owned()))
            .collect();
        assert_eq!(
            listed,
            [
                ("198.18.0.1:80".parse().unwrap(), check.clone()),
                ("198.18.0.2:80".parse().unwrap(), check),
            ]
        );
    }

    /// `web` (`dsr`, VIP 198.19.0.1) and `api` (NAT, VIP 198.19.0.2) with
    /// one backend under one check, and a tunnel that has given it a mark.
    fn dsr_and_nat(backend: &str) -> (Model, ProbeTunnel) {
        let check = HealthCheck {
            probe: Probe::Tcp,
            port: None,
            interval: Duration::from_millis(10),
            timeout: Duration::from_millis(10),
            rise: 2,
            fall: 3,
        };
        let mut model = Model::default();
        for (name, mode, vip) in [
            ("web", Mode::Dsr, "198.19.0.1"),
            ("api", Mode::Nat, "198.19.0.2"),
        ] {
            let mut service = service(&[backend], Some(check.clone()));
            service.mode = mode;
            service.frontends = vec![crate::model::Frontend {
                addr: vip.parse().unwrap(),
                port: 80,
                protocol: Protocol::Tcp,
                kind: crate::model::FrontendKind::Vip,
                snat_remote: false,
                source_ranges_only: false,
            }];
            model.services.insert(ServiceName(name.into()), service);
        }
        let mut tunnel = ProbeTunnel::new(xdp_lb::ProbeMarkBase::DEFAULT, true, false);
        tunnel.assign(&model);
        (model, tunnel)
    }

    /// The case of a backend in a `dsr` and a NAT service under one check
    /// whose decapsulation stopped: out of the `dsr` service only.
    #[tokio::test]
    async fn each_service_takes_the_verdict_of_the_path_its_traffic_takes() {
        let b: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let (model, tunnel) = dsr_and_nat("198.18.2.1:80");
        let prober = scripted::ScriptedProber::new();
        prober.set_failing("198.19.0.1:80".parse().unwrap(), true);
        let (mut checker, mut changes) = HealthChecker::with_prober(Arc::clone(&prober));
        checker.set_targets(targets(&model, Some(&tunnel)));
        for _ in 0..2 {
            tokio::time::timeout(scripted::DEADLINE, changes.recv())
                .await
                .expect("both paths settle")
                .expect("the checker is alive");
        }
        let (web, api) = (ServiceName("web".into()), ServiceName("api".into()));
        let in_web = checked_in_service(&model, &checker, Some(&tunnel), &web, b);
        let in_api = checked_in_service(&model, &checker, Some(&tunnel), &api, b);
        assert_eq!(
            in_web,
            Some((
                ProbePath::Tunnel {
                    vip: "198.19.0.1".parse().unwrap(),
                    mark: xdp_lb::DEFAULT_PROBE_MARK_BASE
                },
                Health::Down
            ))
        );
        assert_eq!(in_api, Some((ProbePath::Direct, Health::Up)));
        assert_eq!(
            in_service(&model, &checker, Some(&tunnel), &web, b),
            Health::Down
        );
        assert_eq!(
            in_service(&model, &checker, Some(&tunnel), &api, b),
            Health::Up
        );
        // Without a tunnel (`--dsr-health-probes direct`) both go direct.
        let direct = HealthChecker::with_prober(prober).0;
        assert_eq!(
            checked_in_service(&model, &direct, None, &web, b),
            Some((ProbePath::Direct, Health::Up))
        );
    }

    /// After a restart, the earlier agent served the backend in `api` but
    /// had taken it out of `web`: it stays in `api` and waits for a probe
    /// in `web`.
    #[tokio::test]
    async fn after_a_restart_each_service_keeps_what_it_served() {
        let b: SocketAddr = "198.18.2.1:80".parse().unwrap();
        let (model, tunnel) = dsr_and_nat("198.18.2.1:80");
        let (mut checker, _changes) = HealthChecker::with_prober(scripted::ScriptedProber::new());
        checker.recover(PinnedTables::new(
            [
                (("198.19.0.1:80".parse().unwrap(), Protocol::Tcp), 1),
                (("198.19.0.2:80".parse().unwrap(), Protocol::Tcp), 2),
            ],
            [(10, b, true)],
            [(1, vec![]), (2, vec![10, 10])],
        ));
        // Nothing awaited: no probe runs.
        checker.set_targets(targets(&model, Some(&tunnel)));
        let (web, api) = (ServiceName("web".into()), ServiceName("api".into()));
        assert_eq!(
            in_service(&model, &checker, Some(&tunnel), &api, b),
            Health::Up
        );
        assert_eq!(
            in_service(&model, &checker, Some(&tunnel), &web, b),
            Health::Pending
        );
    }
}
