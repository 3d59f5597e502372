//! Golden packets, the new-flow flood guard: past the configured rate of new
//! flows per CPU, a new flow still goes to the backend Maglev names, but no
//! conntrack entry is created (counted as `NotTrackedFloodGuard`), and the
//! flows tracked before it keep their entries.
mod support;

use nix::{
    sched::{CpuSet, sched_setaffinity},
    unistd::Pid,
};
use support::{
    frame::{Packet, TcpFlags},
    in_private_netns,
    lb::{DOWN_MAC, Lb, XDP_REDIRECT, mac_of, syn_to_vip4},
};
use xdp_lb::{Config, CtEvent, Protocol, Verdict};

const SERVICE: (u32, u32) = (1, 2);
const PORT: u16 = 80;

/// Keeps the calling thread on CPU 0: the guard counts per CPU, so the test
/// must not move between CPUs halfway.
fn stay_on_one_cpu() {
    let mut cpus = CpuSet::new();
    cpus.set(0).expect("CPU 0 exists");
    sched_setaffinity(Pid::from_raw(0), &cpus).expect("sched_setaffinity");
}

/// Sends `packet` and checks it leaves for the backend `simulate` names.
fn goes_to_its_backend(lb: &Lb, packet: &Packet) {
    let (_, backend, _) = lb.simulated(&packet.flow());
    let out = lb.send(&packet.bytes(), lb.up0);
    assert_eq!(out.action, XDP_REDIRECT);
    let expected = packet
        .with_dst(backend)
        .routed(DOWN_MAC, mac_of(backend.ip()))
        .bytes();
    assert_eq!(out.packet, expected, "{:?}", packet.flow());
}

fn lb_with_guard(new_flows_per_cpu_per_sec: u32) -> Lb {
    let mut lb = Lb::new();
    lb.dp
        .set_config(&Config {
            new_flows_per_cpu_per_sec,
            ..lb.dp.config().expect("config")
        })
        .expect("config");
    lb.serve_both_vips(SERVICE, PORT, Protocol::Tcp);
    lb
}

#[test]
fn new_flows_past_the_rate_go_to_their_backend_untracked() {
    in_private_netns(|| {
        stay_on_one_cpu();
        let lb = lb_with_guard(3);
        for port in 40_000..40_005 {
            goes_to_its_backend(&lb, &syn_to_vip4(port, PORT));
        }
        lb.assert_verdicts(&[(Verdict::ForwardToBackend, 5)]);
        lb.assert_ct(&[(CtEvent::Created, 3), (CtEvent::NotTrackedFloodGuard, 2)]);
        let tracked: Vec<u16> = lb
            .dp
            .conntrack()
            .expect("conntrack")
            .iter()
            .map(|f| f.flow.src.port())
            .collect();
        assert_eq!(tracked.len(), 3, "tracked: {tracked:?}");
        assert!(tracked.iter().all(|p| (40_000..40_003).contains(p)));

        // The flows tracked before the guard closed keep their entries.
        goes_to_its_backend(&lb, &syn_to_vip4(40_000, PORT).with_flags(TcpFlags::ACK));
        lb.assert_ct(&[
            (CtEvent::Created, 3),
            (CtEvent::NotTrackedFloodGuard, 2),
            (CtEvent::Hit, 1),
        ]);
    });
}

#[test]
fn a_rate_of_zero_turns_the_guard_off() {
    in_private_netns(|| {
        stay_on_one_cpu();
        let lb = lb_with_guard(0);
        for port in 40_000..40_050 {
            goes_to_its_backend(&lb, &syn_to_vip4(port, PORT));
        }
        lb.assert_ct(&[(CtEvent::Created, 50)]);
        assert_eq!(lb.dp.conntrack().expect("conntrack").len(), 50);
    });
}
