//! The Maglev lookup of a flow, shared by the eBPF programs and by the loader's
//! `simulate`, so that "which backend would this flow hit" is answered by the
//! very code the kernel runs.

use consistent_hash::hash::{FlowWords, flow_hash_client_ip_words, flow_hash_words, slot_of};

use crate::{conntrack::FlowTuple, service::TABLE_HEADER_SLOTS};

/// The index in a service's table array (header included) that `tuple` reads,
/// for a table of `size` slots. ClientIP affinity leaves the source port out of
/// the hash, so every connection of a client lands on the same slot.
#[inline(always)]
pub fn table_index(tuple: &FlowTuple, client_ip_affinity: bool, seed: u64, size: u32) -> u32 {
    // The source address as the hash's two words, read a word at a time from
    // the aligned tuple: built from `FlowKey`'s bytes, `select` took 308 BPF
    // instructions, 194 this way.
    let w = tuple.words();
    let words = FlowWords {
        src_addr: [u64::from_le(w[0]), u64::from_le(w[1])],
        src_port: tuple.src_port_be,
        protocol: tuple.proto,
    };
    let hash = if client_ip_affinity {
        flow_hash_client_ip_words(&words, seed)
    } else {
        flow_hash_words(&words, seed)
    };
    slot_of(hash, size) + TABLE_HEADER_SLOTS
}

#[cfg(test)]
mod tests {
    use consistent_hash::hash::{FlowKey, flow_hash, flow_hash_client_ip};

    use super::*;
    use crate::addr::v4_mapped;

    fn tuple(src_port: u16) -> FlowTuple {
        FlowTuple::new(
            v4_mapped([198, 18, 0, 1]),
            v4_mapped([198, 18, 100, 1]),
            src_port.to_be(),
            80u16.to_be(),
            6,
        )
    }

    #[test]
    fn index_skips_the_header_and_stays_in_the_table() {
        for port in 1000..1200 {
            let i = table_index(&tuple(port), false, 42, 251);
            assert!((1..=251).contains(&i), "{i}");
        }
    }

    #[test]
    fn index_is_the_consistent_hash_slot() {
        let t = tuple(40000);
        let key = FlowKey::v4([198, 18, 0, 1], 40000, [198, 18, 100, 1], 80, 6);
        assert_eq!(
            table_index(&t, false, 9, 509),
            slot_of(flow_hash(&key, 9), 509) + 1
        );
        assert_eq!(
            table_index(&t, true, 9, 509),
            table_index(&tuple(50000), true, 9, 509),
            "affinity ignores the source port"
        );
    }

    #[test]
    fn index_of_an_ipv6_flow_is_the_consistent_hash_slot() {
        let src = [
            0x20, 0x01, 0, 2, 0, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0,
        ];
        let dst = [0x20, 0x01, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let t = FlowTuple::new(src, dst, 443u16.to_be(), 8443u16.to_be(), 17);
        let key = FlowKey::v6(src, 443, dst, 8443, 17);
        for seed in [0, 9, u64::MAX] {
            assert_eq!(
                table_index(&t, false, seed, 65_537),
                slot_of(flow_hash(&key, seed), 65_537) + 1
            );
            assert_eq!(
                table_index(&t, true, seed, 65_537),
                slot_of(flow_hash_client_ip(&key, seed), 65_537) + 1
            );
        }
    }
}
