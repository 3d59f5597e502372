//! The packet parser, end to end: every class of frame lands in exactly its
//! counter, and the program passes the frame through untouched.
//!
//! Two paths: `BPF_PROG_TEST_RUN` (the kernel runs the program on a buffer), and a
//! real veth inside a rig (frames sent with `AF_PACKET` from one namespace and
//! received by the program attached in another).
use netns_tests::{
    packets::{self, Sample},
    parser_run::{counted, expected_counts},
};
use xdp_lb::{Datapath, ParseCounter, ProgramName};

const XDP_PASS: u32 = 2;

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
    assert_eq!(
        counted(&datapath).expect("readable"),
        expected_counts(&samples)
    );
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

#[test]
fn counters_match_a_known_mix_sent_over_a_veth_exactly() {
    let run = netns_tests::parser_run::run(3).expect("rig, program and sender work");
    assert!(!run.sent.is_empty());
    assert_eq!(
        run.counted, run.expected,
        "the parser's counters must equal the frames sent, slot by slot"
    );
}
