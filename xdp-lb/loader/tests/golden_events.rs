//! Golden packets, flow events: with sampling at 1 every new flow and every
//! drop is written to the ring buffer and read back by `FlowEvents` — the
//! new flow with the backend `simulate` names, the drop with its reason, the
//! refusal with the answer it got; with sampling at 0 (the default) nothing
//! is written.
mod support;

use std::{net::SocketAddr, time::Duration};

use support::{
    frame::Packet,
    frame::TcpFlags,
    in_private_netns,
    lb::{CLIENT4, FROM_CLIENT, Lb, VIP4, XDP_DROP, XDP_REDIRECT, XDP_TX, syn_to_vip4},
};
use xdp_lb::{
    Config, FlowEvent, FlowEventKind, FlowEventOutcome, Frontend, Protocol, ServiceOptions, Verdict,
};

const WAIT: Duration = Duration::from_millis(200);

fn lb_sampling(every: u32) -> Lb {
    let mut lb = Lb::new();
    let config = lb.dp.config().expect("config");
    lb.dp
        .set_config(&Config {
            flow_event_sampling: every,
            ..config
        })
        .expect("config");
    lb.serve_both_vips((1, 2), 80, Protocol::Tcp);
    lb
}

#[test]
fn new_flows_and_drops_are_reported_with_their_backend_and_reason() {
    in_private_netns(|| {
        let lb = lb_sampling(1);
        let mut events = lb.dp.flow_events().expect("reader");
        let new = syn_to_vip4(40_000, 80);
        let (backend_id, backend, _) = lb.simulated(&new.flow());
        assert_eq!(lb.send(&new.bytes(), lb.up0).action, XDP_REDIRECT);
        let unknown = syn_to_vip4(40_001, 81);
        assert_eq!(lb.send(&unknown.bytes(), lb.up0).action, XDP_DROP);

        let first = events.next(WAIT).expect("read").expect("a new-flow event");
        let FlowEvent {
            client,
            frontend,
            protocol,
            kind,
            ..
        } = first;
        assert_eq!(
            (client, frontend, protocol),
            (Some(new.src), new.dst, Some(Protocol::Tcp))
        );
        assert_eq!(
            kind,
            FlowEventKind::NewFlow {
                service_id: 1,
                backend_id,
                backend,
            }
        );
        let second = events.next(WAIT).expect("read").expect("a drop event");
        assert_eq!(
            (second.client, second.frontend, second.kind),
            (
                Some(unknown.src),
                unknown.dst,
                FlowEventKind::Drop {
                    verdict: Verdict::DropUnknownPort
                }
            )
        );
        // A packet of the tracked flow is no new flow.
        let ack = new.with_flags(TcpFlags::ACK);
        assert_eq!(lb.send(&ack.bytes(), lb.up0).action, XDP_REDIRECT);
        assert_eq!(events.next(WAIT).expect("read"), None);
        assert_eq!(events.skipped(), 0);
    });
}

#[test]
fn refusals_are_reported_with_the_packet_s_ends_and_the_answer() {
    in_private_netns(|| {
        let mut lb = lb_sampling(1);
        // Port 82 of each protocol: a service without a table.
        for proto in [Protocol::Tcp, Protocol::Udp] {
            lb.dp
                .upsert_service(
                    &Frontend::new(SocketAddr::from((VIP4, 82)), proto),
                    9,
                    &ServiceOptions::default(),
                )
                .expect("service");
        }
        let mut events = lb.dp.flow_events().expect("reader");
        let syn = syn_to_vip4(40_000, 82);
        assert_eq!(lb.send(&syn.bytes(), lb.up0).action, XDP_TX);
        let client = SocketAddr::from((CLIENT4, 40_001));
        let vip = SocketAddr::from((VIP4, 82));
        let datagram = Packet::udp(FROM_CLIENT, client, vip, b"query");
        assert_eq!(lb.send(&datagram.bytes(), lb.up0).action, XDP_TX);

        // The ends the packet came with, not the answer's (which the frame
        // became before the event was written).
        let reset = events.next(WAIT).expect("read").expect("an event");
        assert_eq!(
            (reset.client, reset.frontend, reset.protocol, reset.kind),
            (
                Some(syn.src),
                syn.dst,
                Some(Protocol::Tcp),
                FlowEventKind::Refused {
                    verdict: Verdict::RefuseReset
                }
            )
        );
        let unreachable = events.next(WAIT).expect("read").expect("an event");
        assert_eq!(
            (unreachable.client, unreachable.frontend, unreachable.kind),
            (
                Some(client),
                vip,
                FlowEventKind::Refused {
                    verdict: Verdict::RefuseUnreachable
                }
            )
        );
        assert_eq!(events.next(WAIT).expect("read"), None);
    });
}

/// The ring holds some 2 900 events: with nobody reading, each sampled
/// event past that is lost, and counted so; once read, the ring takes
/// events again.
#[test]
fn events_lost_to_a_full_ring_are_counted() {
    in_private_netns(|| {
        let lb = lb_sampling(1);
        let mut events = lb.dp.flow_events().expect("reader");
        let sent = 4_000;
        for port in 0..sent {
            let unknown = syn_to_vip4(20_000 + port, 81);
            assert_eq!(lb.send(&unknown.bytes(), lb.up0).action, XDP_DROP);
        }
        let stats = lb.dp.flow_event_stats().expect("counters");
        let (written, lost) = (
            stats.get(FlowEventOutcome::Written).packets,
            stats.get(FlowEventOutcome::LostRingFull).packets,
        );
        assert_eq!(written + lost, u64::from(sent), "{stats:?}");
        assert!(lost > 0 && written > 0, "{stats:?}");
        let mut read = 0;
        while events.next(WAIT).expect("read").is_some() {
            read += 1;
        }
        assert_eq!(read, written, "every event written was read");
        let one_more = syn_to_vip4(30_000, 81);
        assert_eq!(lb.send(&one_more.bytes(), lb.up0).action, XDP_DROP);
        let after = lb.dp.flow_event_stats().expect("counters");
        assert_eq!(after.get(FlowEventOutcome::Written).packets, written + 1);
        assert_eq!(after.get(FlowEventOutcome::LostRingFull).packets, lost);
    });
}

#[test]
fn nothing_is_written_without_sampling() {
    in_private_netns(|| {
        let lb = lb_sampling(0);
        let mut events = lb.dp.flow_events().expect("reader");
        assert_eq!(
            lb.send(&syn_to_vip4(40_000, 80).bytes(), lb.up0).action,
            XDP_REDIRECT
        );
        assert_eq!(
            lb.send(&syn_to_vip4(40_001, 81).bytes(), lb.up0).action,
            XDP_DROP
        );
        assert_eq!(events.next(WAIT).expect("read"), None);
    });
}

#[test]
fn one_in_n_is_written() {
    in_private_netns(|| {
        const FLOWS: u16 = 2000;
        const EVERY: u32 = 10;
        let lb = lb_sampling(EVERY);
        let mut events = lb.dp.flow_events().expect("reader");
        for port in 0..FLOWS {
            assert_eq!(
                lb.send(&syn_to_vip4(20_000 + port, 80).bytes(), lb.up0)
                    .action,
                XDP_REDIRECT
            );
        }
        let mut read = 0;
        while events.next(WAIT).expect("read").is_some() {
            read += 1;
        }
        // 200 expected, standard deviation 13.4 (binomial(2000, 0.1)): ±75
        // is 5.6 deviations, which a correct sampler leaves about twice in a
        // hundred million runs (±60 would be once in 130 000).
        assert!(
            (125..=275).contains(&read),
            "{read} events of {FLOWS} flows at 1 in {EVERY}"
        );
    });
}
