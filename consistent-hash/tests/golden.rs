//! Golden vectors: fixed seeds, keys and sizes, and the exact hashes and tables they give.
//!
//! Every node, CPU architecture and Rust release must reproduce these; a change here changes
//! which backend every flow of every service lands on, so it is a breaking change of the
//! table format, never a refactoring. The values were also reproduced by an independent
//! implementation written from the documentation alone (the `hash` module and `Table`).

use consistent_hash::{
    Backend, FlowKey, Permutation, Table, TableSize, flow_hash, flow_hash_client_ip, hash64,
};

#[path = "../benches/support/keys.rs"]
mod keys;

#[test]
fn hash64_vectors() {
    let cases: [(&[u8], u64, u64); 5] = [
        (b"", 0, 0x6393_d51c_06c6_18dc),
        (b"a", 0, 0x2663_1892_c9b7_76c4),
        (b"198.18.2.5:8080/TCP", 0, 0x82ab_b602_6ccb_488f),
        (b"198.18.2.5:8080/TCP", 1, 0x3e82_cdce_90dd_d467),
        (b"12345678", u64::MAX, 0xd60c_25fc_ed07_3409),
    ];
    for (bytes, seed, expected) in cases {
        assert_eq!(
            hash64(bytes, seed),
            expected,
            "hash64({bytes:?}, {seed:#x})"
        );
    }
}

#[test]
fn flow_hash_vectors() {
    let v4 = FlowKey::v4([198, 18, 0, 1], 40000, [198, 18, 1, 1], 80, 6);
    let v6 = FlowKey::v6(
        [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7],
        443,
        [0; 16],
        0,
        17,
    );
    assert_eq!(
        (flow_hash(&v4, 7), flow_hash_client_ip(&v4, 7)),
        (0x0a32_57fd, 0xd142_9ccd)
    );
    assert_eq!(
        (flow_hash(&v6, 7), flow_hash_client_ip(&v6, 7)),
        (0x9cd0_7f65, 0x71c0_b147)
    );
}

#[test]
fn permutation_vector() {
    let size = TableSize::new(65537).unwrap();
    let p = Permutation::of(b"198.18.2.5:8080/TCP", 0x0123_4567_89ab_cdef, size);
    assert_eq!((p.offset, p.skip), (13997, 37648));
    assert_eq!(p.nth(0), 13997);
    assert_eq!(p.nth(1), 13997 + 37648);
    // (13997 + 2 · 37648) mod 65537
    assert_eq!(p.nth(2), 23756);
}

/// A table case: seed, size, one weight per backend (keys `198.18.2.1:8080/TCP` and up),
/// the fingerprint, and the backends in slots 0, 1, M/2 and M − 1.
struct Case {
    seed: u64,
    size: u32,
    weights: &'static [u32],
    fingerprint: u64,
    slots: [&'static str; 4],
}

const EQUAL_100: [u32; 100] = [1; 100];
const EQUAL_1000: [u32; 1000] = [1; 1000];

const CASES: [Case; 4] = [
    Case {
        seed: 0,
        size: 251,
        weights: &[1, 1, 1],
        fingerprint: 0x7606_6c65_2efd_9c4f,
        slots: [
            "198.18.2.1:8080/TCP",
            "198.18.2.1:8080/TCP",
            "198.18.2.2:8080/TCP",
            "198.18.2.1:8080/TCP",
        ],
    },
    Case {
        seed: 0x0123_4567_89ab_cdef,
        size: 16381,
        weights: &EQUAL_100,
        fingerprint: 0x0824_b431_69a9_ce72,
        slots: [
            "198.18.2.87:8080/TCP",
            "198.18.2.15:8080/TCP",
            "198.18.2.12:8080/TCP",
            "198.18.2.64:8080/TCP",
        ],
    },
    Case {
        seed: 7,
        size: 509,
        weights: &[1, 2, 3, 0, 5],
        fingerprint: 0xd0ce_61dc_6461_95cc,
        slots: [
            "198.18.2.3:8080/TCP",
            "198.18.2.5:8080/TCP",
            "198.18.2.5:8080/TCP",
            "198.18.2.5:8080/TCP",
        ],
    },
    Case {
        seed: 42,
        size: 65537,
        weights: &EQUAL_1000,
        fingerprint: 0xbf96_c8df_38c6_74ae,
        slots: [
            "198.18.4.158:8080/TCP",
            "198.18.3.24:8080/TCP",
            "198.18.3.96:8080/TCP",
            "198.18.5.76:8080/TCP",
        ],
    },
];

#[test]
fn table_vectors() {
    for case in &CASES {
        // Keys from `198.18.2.1:8080/TCP`: the first key of the list is left out.
        let keys = keys::backend_keys(case.weights.len() as u32 + 1)
            .into_iter()
            .skip(1);
        let backends = keys
            .zip(case.weights)
            .map(|(key, &w)| Backend::weighted(key, w));
        let table = Table::build(case.seed, TableSize::new(case.size).unwrap(), backends).unwrap();
        let m = case.size;
        let at = |slot: u32| table.backend_at(slot).display_key();
        assert_eq!(
            [at(0), at(1), at(m / 2), at(m - 1)],
            case.slots.map(String::from),
            "seed {:#x}, M = {m}",
            case.seed
        );
        assert_eq!(
            table.fingerprint(),
            case.fingerprint,
            "seed {:#x}, M = {m}",
            case.seed
        );
        // The fingerprint is the documented hash of the slots.
        let bytes: Vec<u8> = table.slots().iter().flat_map(|s| s.to_le_bytes()).collect();
        assert_eq!(hash64(&bytes, 0), case.fingerprint);
    }
}
