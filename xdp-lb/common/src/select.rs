//! The Maglev lookup of a flow, shared by the eBPF programs and by the loader's
//! `simulate`, so that "which backend would this flow hit" is answered by the
//! very code the kernel runs.

use consistent_hash::hash::{FlowKey, flow_hash, flow_hash_client_ip, slot_of};

use crate::{conntrack::FlowTuple, service::TABLE_HEADER_SLOTS};

/// The index in a service's table array (header included) that `tuple` reads,
/// for a table of `size` slots. ClientIP affinity leaves the source port out of
/// the hash, so every connection of a client lands on the same slot.
#[inline(always)]
pub fn table_index(tuple: &FlowTuple, client_ip_affinity: bool, seed: u64, size: u32) -> u32 {
    let key = FlowKey {
        src_addr: tuple.src_addr,
        dst_addr: tuple.dst_addr,
        src_port: tuple.src_port_be,
        dst_port: tuple.dst_port_be,
        protocol: tuple.proto,
        _pad: [0; 3],
    };
    let hash = if client_ip_affinity {
        flow_hash_client_ip(&key, seed)
    } else {
        flow_hash(&key, seed)
    };
    slot_of(hash, size) + TABLE_HEADER_SLOTS
}

#[cfg(test)]
mod tests {
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
}
