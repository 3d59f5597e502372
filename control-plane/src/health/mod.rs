//! Active health checks of backends: TCP connect or HTTP GET, every
//! `interval`, each probe bounded by `timeout`; a backend leaves after
//! `fall` failed probes in a row and returns after `rise` passed ones. A
//! new backend is pending, out of the table, until its first probe passes;
//! after a restart, one the earlier agent served starts up ([`pinned`]).
//!
//! Health is not part of the desired state ([`crate::model`]): the agent
//! hands the checked backends to a [`HealthChecker`] on every reload
//! ([`targets`] lists them), and overlays [`HealthChecker::is_healthy`] on
//! the model when it programs the datapath, again on every
//! [`HealthChange`] it receives.
//!
//! - [`state`]: the pure rise/fall state machine;
//! - [`pinned`]: what an earlier agent served, read back after a restart;
//! - [`probe`]: one probe, over the network;
//! - [`tunnel`]: how a `dsr` service's backends are probed through the
//!   tunnel (a VIP, and a mark that names the backend);
//! - the checker: one task per (backend address, check);
//! - [`node_port`]: the `healthCheckNodePort` servers that tell external load
//!   balancers which nodes have endpoints of a `Local` Service.

mod checker;
pub mod node_port;
pub mod pinned;
pub mod probe;
pub mod state;
pub mod tunnel;

use std::{borrow::Cow, net::SocketAddr};

pub use checker::{
    HealthChange, HealthChecker, NetProber, Prober, ServiceTarget, Target, TargetStatus,
};
pub use pinned::PinnedTables;
pub use probe::{ProbeError, ProbeTo};
pub use state::{Health, HealthState};
pub use tunnel::{ProbePath, ProbeTunnel};

use crate::model::{Model, ServiceName};

/// Every (backend, check) pair of `model`, with the frontends of its
/// service and the path its probes take: each backend of each service that
/// has a health check, whatever the backend's state — a draining backend's
/// health still shows in status. Pairs repeat when services share a
/// backend; [`HealthChecker::set_targets`] checks each pair once.
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
                path: tunnel.map_or(ProbePath::Direct, |tunnel| {
                    tunnel.path(service, backend.addr.ip())
                }),
            })
        })
    })
}

/// The health of the backend at `addr` in service `name` of `model`, as
/// `checker` finds it under that service's check: [`Health::Up`] when the
/// service has none (or is not in `model`), as traffic sees it.
pub fn in_service<P: Prober>(
    model: &Model,
    checker: &HealthChecker<P>,
    name: &ServiceName,
    addr: SocketAddr,
) -> Health {
    model
        .services
        .get(name)
        .and_then(|service| service.health_check.as_ref())
        .map_or(Health::Up, |check| checker.verdict(addr, check))
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use crate::model::{
        Backend, BackendState, HealthCheck, Mode, Probe, Protocol, Service, ServiceName,
    };

    fn service(backends: &[&str], health_check: Option<HealthCheck>) -> Service {
        Service {
            protocol: Protocol::Tcp,
            frontends: Vec::new(),
            backends: backends
                .iter()
                .map(|addr| Backend {
                    addr: addr.parse().unwrap(),
                    weight: 1,
                    state: BackendState::Draining,
                    local: false,
                })
                .collect(),
            mode: Mode::Nat,
            affinity: None,
            health_check,
            drop_without_backends: false,
            source_ranges: Vec::new(),
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
}
