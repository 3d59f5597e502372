//! The service of each flow event, named as the agent drains the event from
//! the datapath's ring: once per batch, whatever the number of readers, and
//! the name the service had then. The datapath gives a new flow's service by
//! ID, and a dropped or refused packet only by the frontend it was sent to;
//! both are named from the services as programmed at that moment (the
//! reconciler's IDs, names and frontends).
//!
//! So an event keeps its name when its service is renamed or removed later,
//! as a log line would: a reader sees what the event was when it happened
//! (give or take the drain's spacing, 50 ms), not what its ID or frontend
//! means by the time the reader gets to it.

use std::{collections::BTreeMap, sync::Arc};

use xdp_lb::{FlowEvent, FlowEventKind};

use crate::{
    api::FlowEventView,
    model::{Protocol, ServiceName},
    reconcile::{FrontendKey, Reconciler},
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

/// Where the service of a flow event is found: the services as the
/// datapath holds them when the event is drained.
pub(crate) trait ProgrammedServices {
    /// The name of the service with ID `id`.
    fn name_of(&self, id: u32) -> Option<&ServiceName>;
    /// The ID of the service that serves `frontend`.
    fn id_of(&self, frontend: &FrontendKey) -> Option<u32>;
}

impl ProgrammedServices for Reconciler {
    fn name_of(&self, id: u32) -> Option<&ServiceName> {
        self.service_name(id)
    }

    fn id_of(&self, frontend: &FrontendKey) -> Option<u32> {
        self.frontend_service(frontend)
    }
}

/// Names the service of each event of `batch` from `services`: by its ID
/// for a new flow, by its frontend for a dropped or refused packet. Two
/// lookups in ordered maps an event, whatever the number of services (a
/// scan that drops to unknown ports would otherwise make a pass over every
/// service for each batch); a name is copied once per batch.
pub(crate) fn name(batch: Vec<FlowEvent>, services: &impl ProgrammedServices) -> Vec<NamedEvent> {
    let mut names: BTreeMap<u32, Option<Arc<str>>> = BTreeMap::new();
    batch
        .into_iter()
        .map(|event| {
            let id = match (event.kind, event.protocol) {
                (FlowEventKind::NewFlow { service_id, .. }, _) => Some(service_id),
                (_, Some(protocol)) => services.id_of(&(event.frontend, Protocol::from(protocol))),
                // A fragment (no protocol) names no frontend.
                (_, None) => None,
            };
            let service = id.and_then(|id| {
                names
                    .entry(id)
                    .or_insert_with(|| services.name_of(id).map(|name| name.to_string().into()))
                    .clone()
            });
            NamedEvent { event, service }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    const VIP: &str = "198.18.100.1:80";

    /// `web`, ID 7, serving TCP at [`VIP`]; `dns`, ID 9, serving no
    /// frontend; ID 8 in use but unnamed (recovered, not yet claimed).
    struct Programmed;

    impl ProgrammedServices for Programmed {
        fn name_of(&self, id: u32) -> Option<&ServiceName> {
            static WEB: std::sync::LazyLock<ServiceName> =
                std::sync::LazyLock::new(|| ServiceName("web".into()));
            static DNS: std::sync::LazyLock<ServiceName> =
                std::sync::LazyLock::new(|| ServiceName("dns".into()));
            match id {
                7 => Some(&WEB),
                9 => Some(&DNS),
                _ => None,
            }
        }

        fn id_of(&self, frontend: &FrontendKey) -> Option<u32> {
            let vip: SocketAddr = VIP.parse().unwrap();
            (*frontend == (vip, Protocol::Tcp)).then_some(7)
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
            // An ID no service is programmed with (one removed since).
            event(VIP, tcp, new_flow(8)),
        ];
        let named = name(batch, &Programmed);
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
        let named = name(batch, &Programmed);
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
