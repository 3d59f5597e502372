//! The packet parser, end to end: every class of frame lands in exactly its
//! counter, and the program passes the frame through untouched.
//!
//! Two paths: `BPF_PROG_TEST_RUN` (the kernel runs the program on a buffer), and a
//! real veth inside a rig (frames sent with `AF_PACKET` from one namespace and
//! received by the program attached in another).
use std::collections::BTreeMap;

use netns_tests::packets::{self, Sample};
use xdp_lb::{Counter, Datapath, ParseCounter, ProgramName};

const XDP_PASS: u32 = 2;

/// What the counters must read after `samples` went through the program once each.
fn expected_counters(samples: &[Sample]) -> BTreeMap<ParseCounter, Counter> {
    let mut expected = BTreeMap::new();
    for sample in samples {
        let slot: &mut Counter = expected.entry(sample.expect).or_default();
        slot.packets += 1;
        slot.bytes += sample.frame.len() as u64;
    }
    expected
}

fn nonzero_counters(datapath: &Datapath) -> BTreeMap<ParseCounter, Counter> {
    let stats = datapath.parse_stats().expect("parse counters are readable");
    stats
        .iter()
        .filter(|(_, c)| c.packets != 0 || c.bytes != 0)
        .collect()
}

#[test]
fn every_sample_lands_in_its_counter_and_passes_unchanged() {
    let datapath = Datapath::load().expect("programs load");
    let samples: Vec<Sample> = packets::well_formed()
        .into_iter()
        .chain(packets::malformed())
        .collect();
    for sample in &samples {
        let before = datapath.parse_stats().expect("readable").get(sample.expect);
        let out = datapath
            .test_run(ProgramName::XdpLb, &sample.frame)
            .expect("test run");
        assert_eq!(out.action, XDP_PASS, "{}: verdict", sample.name);
        assert_eq!(
            out.packet, sample.frame,
            "{}: the parser must not change the frame",
            sample.name
        );
        let after = datapath.parse_stats().expect("readable").get(sample.expect);
        assert_eq!(
            (after.packets - before.packets, after.bytes - before.bytes),
            (1, sample.frame.len() as u64),
            "{}: expected one packet in {:?}",
            sample.name,
            sample.expect
        );
    }
    // And nothing else was counted anywhere.
    assert_eq!(nonzero_counters(&datapath), expected_counters(&samples));
}

#[test]
fn every_counter_the_rig_can_reach_is_exercised() {
    // A frame shorter than 14 bytes reaches neither a veth nor BPF_PROG_TEST_RUN,
    // so `TruncatedEthernet` is the one slot no test frame can hit.
    let exercised: std::collections::BTreeSet<ParseCounter> =
        packets::mix(1).iter().map(|s| s.expect).collect();
    for &counter in ParseCounter::ALL {
        if counter == ParseCounter::TruncatedEthernet {
            continue;
        }
        assert!(
            exercised.contains(&counter),
            "no sample exercises {counter:?}"
        );
    }
}
