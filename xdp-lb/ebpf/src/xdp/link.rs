//! The link header when a frame's head moves: an outer header added in
//! front of a packet (`encap`) or taken off (`decap`, and `encap` undoing a
//! wrap that did not fit).

use crate::{lb::flow::MAX_L3_OFFSET, packet::Frame, unaligned::PacketBytes, wire::IP4_HLEN};

/// Moves the link header (the MACs and any VLAN tag; the network header at
/// `l3`) `by` bytes on, with `ethertype` before the network header: with the
/// head then shrunk by `by`, the link header sits in front of what lay `by`
/// bytes past the old network header. In place, word by word: a copy on the
/// stack would deepen the deepest chain of frames.
#[inline(always)]
pub fn move_link(frame: &Frame, l3: usize, by: usize, ethertype: u16) -> Option<()> {
    // An outer header is at least 20 bytes: the two ranges never overlap.
    if by < IP4_HLEN {
        return None;
    }
    let from = frame.get::<[u8; MAX_L3_OFFSET]>(0)?.cast::<u8>();
    let to = frame.get_mut::<[u8; MAX_L3_OFFSET]>(by)?.cast::<u8>();
    // In words (`unaligned`): a plain copy between two packet pointers
    // becomes a `memmove` call (LLVM cannot tell they do not overlap), a byte
    // loop in BPF.
    // SAFETY: both 18-byte ranges lie in the frame and do not overlap.
    unsafe {
        <[u8; 12]>::load(from).store(to);
        let at = if l3 == MAX_L3_OFFSET {
            <[u8; 4]>::load(from.add(12)).store(to.add(12));
            16
        } else {
            12
        };
        ethertype.to_be_bytes().store(to.add(at));
    }
    Some(())
}
