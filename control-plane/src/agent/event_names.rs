//! The service of each flow event, named as the agent drains the event from
//! the datapath's ring: once per batch, whatever the number of readers, and
//! the name the service had then. The datapath gives a new flow's service by
//! ID, and a dropped or refused packet only by the frontend it was sent to;
//! both are named from the model (and the reconciler's IDs) of that moment.
//!
//! So an event keeps its name when its service is renamed or removed later,
//! as a log line would: a reader sees what the event was when it happened
//! (give or take the drain's spacing, 50 ms), not what its ID or frontend
//! means by the time the reader gets to it.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::SocketAddr,
    sync::Arc,
};

use xdp_lb::{FlowEvent, FlowEventKind};

use crate::{
    api::FlowEventView,
    model::{Model, Protocol, ServiceName},
};

/// A flow event as the datapath wrote it, with the name of its service when
/// it was drained (`None`: no service had its ID or frontend). The name is
/// shared by the batch's events of one service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NamedEvent {
    pub(crate) event: FlowEvent,
    pub(crate) service: Option<Arc<str>>,
}

impl NamedEvent {
    /// When it happened (`CLOCK_MONOTONIC_COARSE`, in ns).
    pub(crate) fn time_ns(&self) -> u64 {
        self.event.time_ns
    }

    /// The event as the admin API shows it.
    pub(crate) fn view(&self) -> FlowEventView {
        let event = &self.event;
        let (kind, backend, reason) = match event.kind {
            FlowEventKind::NewFlow { backend, .. } => ("new_flow", Some(backend), None),
            FlowEventKind::Drop { verdict } => ("drop", None, Some(verdict.name())),
            FlowEventKind::Refused { verdict } => ("refused", None, Some(verdict.name())),
        };
        FlowEventView {
            time_ns: event.time_ns,
            kind: kind.to_owned(),
            protocol: event.protocol.map(Protocol::from),
            client: event.client,
            frontend: event.frontend,
            service: self.service.as_deref().map(str::to_owned),
            backend,
            reason: reason.map(str::to_owned),
        }
    }
}

/// Names the service of each event of `batch` from `model`, whose services
/// have the IDs `service_id` gives (the reconciler's, as programmed).
///
/// One pass over the model's services, looking only for the IDs and
/// frontends the batch holds, and stopping once it has them all: names are
/// copied only for the services the batch shows.
pub(crate) fn name(
    batch: Vec<FlowEvent>,
    model: &Model,
    service_id: impl Fn(&ServiceName) -> Option<u32>,
) -> Vec<NamedEvent> {
    let mut ids = BTreeSet::new();
    let mut frontends = HashSet::new();
    for event in &batch {
        match (event.kind, event.protocol) {
            (FlowEventKind::NewFlow { service_id, .. }, _) => {
                ids.insert(service_id);
            }
            // A fragment (no protocol) names no frontend.
            (_, Some(protocol)) => {
                frontends.insert((event.frontend, Protocol::from(protocol)));
            }
            (_, None) => {}
        }
    }
    let mut by_id: BTreeMap<u32, Arc<str>> = BTreeMap::new();
    let mut by_frontend: HashMap<(SocketAddr, Protocol), Arc<str>> = HashMap::new();
    for (name, service) in &model.services {
        if by_id.len() == ids.len() && by_frontend.len() == frontends.len() {
            break;
        }
        let mut shared: Option<Arc<str>> = None;
        let mut named = || Arc::clone(shared.get_or_insert_with(|| name.to_string().into()));
        if let Some(id) = service_id(name).filter(|id| ids.contains(id)) {
            by_id.insert(id, named());
        }
        for frontend in &service.frontends {
            let key = (
                SocketAddr::new(frontend.addr, frontend.port),
                frontend.protocol,
            );
            if frontends.contains(&key) {
                by_frontend.insert(key, named());
            }
        }
    }
    batch
        .into_iter()
        .map(|event| {
            let service = match (event.kind, event.protocol) {
                (FlowEventKind::NewFlow { service_id, .. }, _) => by_id.get(&service_id),
                (_, Some(protocol)) => by_frontend.get(&(event.frontend, Protocol::from(protocol))),
                (_, None) => None,
            };
            NamedEvent {
                event,
                service: service.cloned(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frontend, FrontendKind, Mode, Service};

    const VIP: &str = "198.18.100.1:80";

    /// A service of `frontends`, without backends.
    fn service(frontends: Vec<Frontend>) -> Service {
        Service {
            protocol: Protocol::Tcp,
            frontends,
            backends: Vec::new(),
            mode: Mode::Nat,
            affinity: None,
            health_check: None,
            drop_without_backends: false,
            source_ranges: Vec::new(),
        }
    }

    /// `web`, ID 7, with a TCP frontend at [`VIP`]; `dns`, ID 9, without one.
    fn model() -> Model {
        let vip: SocketAddr = VIP.parse().unwrap();
        let web = service(vec![Frontend {
            addr: vip.ip(),
            port: vip.port(),
            protocol: Protocol::Tcp,
            kind: FrontendKind::Vip,
            snat_remote: false,
            source_ranges_only: false,
        }]);
        Model {
            services: [
                (ServiceName("web".into()), web),
                (ServiceName("dns".into()), service(Vec::new())),
            ]
            .into(),
        }
    }

    fn service_id(name: &ServiceName) -> Option<u32> {
        match name.0.as_str() {
            "web" => Some(7),
            "dns" => Some(9),
            _ => None,
        }
    }

    fn event(frontend: &str, protocol: xdp_lb::Protocol, kind: FlowEventKind) -> FlowEvent {
        FlowEvent {
            time_ns: 1,
            client: Some("198.18.0.1:40000".parse().unwrap()),
            frontend: frontend.parse().unwrap(),
            protocol: Some(protocol),
            kind,
        }
    }

    fn new_flow(service_id: u32) -> FlowEventKind {
        FlowEventKind::NewFlow {
            service_id,
            backend_id: 1,
            backend: "198.18.2.1:8080".parse().unwrap(),
        }
    }

    fn services(named: &[NamedEvent]) -> Vec<Option<&str>> {
        named.iter().map(|e| e.service.as_deref()).collect()
    }

    #[test]
    fn a_new_flow_names_the_service_of_its_id() {
        let tcp = xdp_lb::Protocol::Tcp;
        let batch = vec![
            event(VIP, tcp, new_flow(7)),
            event("198.18.100.2:53", xdp_lb::Protocol::Udp, new_flow(9)),
            // An ID no service has (one removed since).
            event(VIP, tcp, new_flow(8)),
        ];
        let named = name(batch, &model(), service_id);
        assert_eq!(services(&named), [Some("web"), Some("dns"), None]);
        let view = named[0].view();
        assert_eq!(
            (view.kind.as_str(), view.service.as_deref(), view.backend),
            (
                "new_flow",
                Some("web"),
                Some("198.18.2.1:8080".parse().unwrap())
            )
        );
    }

    #[test]
    fn a_dropped_or_refused_packet_names_the_service_of_its_frontend() {
        let refused = FlowEventKind::Refused {
            verdict: xdp_lb::Verdict::RefuseReset,
        };
        let unknown = FlowEventKind::Drop {
            verdict: xdp_lb::Verdict::DropUnknownPort,
        };
        let batch = vec![
            event(VIP, xdp_lb::Protocol::Tcp, refused),
            // Another protocol or port is no frontend of web's.
            event(VIP, xdp_lb::Protocol::Udp, unknown),
            event("198.18.100.1:81", xdp_lb::Protocol::Tcp, unknown),
        ];
        let named = name(batch, &model(), service_id);
        assert_eq!(services(&named), [Some("web"), None, None]);
        let view = named[0].view();
        assert_eq!(
            (
                view.kind.as_str(),
                view.service.as_deref(),
                view.reason.as_deref()
            ),
            ("refused", Some("web"), Some("refuse_reset"))
        );
        assert_eq!(named[1].view().kind, "drop");
    }
}
