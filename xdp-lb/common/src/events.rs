//! Flow events: what `xdp_lb` writes to the `FLOW_EVENTS` ring buffer for a
//! sample of its new flows, drops and refusals (`Config::flow_event_sampling`),
//! for an operator to watch which client went to which backend, and why
//! packets were dropped or refused.

use crate::{addr::Addr, pod::impl_pod};

/// `FlowEvent::kind`: a new flow was given a backend.
pub const EVENT_NEW_FLOW: u32 = 1;
/// `FlowEvent::kind`: a packet was dropped; `FlowEvent::verdict` says why.
pub const EVENT_DROP: u32 = 2;
/// `FlowEvent::kind`: a packet for a service without a backend was answered
/// with a TCP reset or an ICMP port unreachable; `FlowEvent::verdict` says
/// which.
pub const EVENT_REFUSED: u32 = 3;

/// One event. Addresses are IPv4-mapped for IPv4, ports in network order;
/// an end the event does not know (the backend of a drop, the ports of a
/// fragment) is all zeros.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// `bpf_ktime_get_coarse_ns()`.
    pub time_ns: u64,
    /// `EVENT_*`.
    pub kind: u32,
    /// The `Verdict` slot of a drop or refusal; 0 for a new flow.
    pub verdict: u32,
    pub service_id: u32,
    pub backend_id: u32,
    pub client: Addr,
    pub frontend: Addr,
    pub backend: Addr,
    pub client_port_be: u16,
    pub frontend_port_be: u16,
    pub backend_port_be: u16,
    /// IANA protocol number (0 when unknown).
    pub proto: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FlowEvent>() == 80);

impl_pod!(FlowEvent);
