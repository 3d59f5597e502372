//! Health probes through the direct-server-return tunnel.
//!
//! The agent probes a backend of a `dsr` service by connecting to the
//! service's VIP from a socket whose mark (`SO_MARK`) names the backend:
//! `tc_probe_encap`, at the egress of the LB's uplinks, wraps each packet
//! carrying such a mark in the outer header `xdp_lb` would give a client's
//! packet for that backend, and sends it there. A probe then takes the path
//! the traffic takes, and fails when the backend's decapsulation does.
//!
//! A probe mark is `base | slot`: the high 16 bits are the agent's base (its
//! low 16 bits zero), the low 16 bits a slot of `PROBE_BACKENDS`, which holds
//! the backend's address. The program leaves every packet whose mark has
//! other high bits untouched, so an operator's own marks outside the range
//! never meet it.

use crate::{addr::Addr, pod::impl_pod};

/// Slots of `PROBE_BACKENDS`: the low 16 bits of a probe mark.
pub const PROBE_SLOTS: u32 = 1 << 16;
/// The bits of a mark that name the slot.
pub const PROBE_SLOT_MASK: u32 = PROBE_SLOTS - 1;
/// The agent's default base: `0x584c` ("XL") in the high 16 bits.
pub const DEFAULT_PROBE_MARK_BASE: u32 = 0x584c_0000;

/// The slot a packet's `mark` names under `base`, or `None` when the mark is
/// not a probe's (or no base is set: 0 turns the program off).
#[inline(always)]
pub const fn probe_slot(mark: u32, base: u32) -> Option<u32> {
    if base == 0 || mark & !PROBE_SLOT_MASK != base {
        return None;
    }
    Some(mark & PROBE_SLOT_MASK)
}

/// True when `base` can be a probe mark base: not 0 (which turns the program
/// off) and with its low 16 bits, the slot's, clear.
pub const fn is_probe_mark_base(base: u32) -> bool {
    base != 0 && base & PROBE_SLOT_MASK == 0
}

/// Value of `PROBE_BACKENDS`: the backend a probe slot's packets are wrapped
/// for (the outer destination; IPv4-mapped for IPv4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProbeBackend {
    pub addr: Addr,
}
const _: () = assert!(size_of::<ProbeBackend>() == 16);

impl_pod!(ProbeBackend);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_in_the_range_names_its_slot() {
        assert_eq!(
            probe_slot(DEFAULT_PROBE_MARK_BASE, DEFAULT_PROBE_MARK_BASE),
            Some(0)
        );
        assert_eq!(probe_slot(0x584c_0007, DEFAULT_PROBE_MARK_BASE), Some(7));
        assert_eq!(
            probe_slot(0x584c_ffff, DEFAULT_PROBE_MARK_BASE),
            Some(0xffff)
        );
    }

    #[test]
    fn marks_outside_the_range_are_not_probes() {
        assert_eq!(probe_slot(0, DEFAULT_PROBE_MARK_BASE), None);
        assert_eq!(probe_slot(0x584d_0007, DEFAULT_PROBE_MARK_BASE), None);
        assert_eq!(probe_slot(0x0000_0007, DEFAULT_PROBE_MARK_BASE), None);
        // Without a base, nothing is a probe, not even mark 0.
        assert_eq!(probe_slot(0, 0), None);
        assert_eq!(probe_slot(7, 0), None);
    }

    #[test]
    fn a_base_has_its_slot_bits_clear() {
        assert!(is_probe_mark_base(DEFAULT_PROBE_MARK_BASE));
        assert!(is_probe_mark_base(0x0001_0000));
        assert!(!is_probe_mark_base(0));
        assert!(!is_probe_mark_base(0x584c_0001));
    }
}
