//! Bounds-checked access to packet bytes.
//!
//! Both XDP (`xdp_md`) and TC (`__sk_buff`) programs see the packet as a
//! `[data, data_end)` window, so the parser works on a `Frame` and is shared by
//! both. Every read goes through `Frame::get`, which compares against
//! `data_end` in the form the verifier can follow.

use crate::unaligned::PacketBytes;

/// Where a BPF subprogram gets its own view of the packet.
///
/// Each subprogram loads `data`/`data_end` afresh rather than receiving the
/// caller's pointers: the verifier attaches what a bounds check proved to every
/// copy of a pointer, also in the caller's frame, so shared pointers would carry
/// each path's proven range back out and multiply the states it explores.
pub trait FrameSource {
    fn frame(&self) -> Frame;
}

/// A packet whose ends can move, for the answers (`answer`) written in
/// place of the packet that caused them.
pub trait Resize: FrameSource {
    /// Moves the start of the packet by `delta` bytes (negative: grows it
    /// at the front). False when the kernel refuses; the packet is then
    /// unchanged.
    fn adjust_head(&self, delta: i32) -> bool;
    /// Moves the end of the packet by `delta` bytes (negative: shrinks it).
    fn adjust_tail(&self, delta: i32) -> bool;
}

/// No header this code reads starts beyond this offset: a linear XDP frame is
/// at most a page. The check in `get` also gives the verifier an upper bound for
/// offsets that crossed a BPF-to-BPF call or a struct copy, where it may have
/// lost track of their range.
const MAX_OFFSET: usize = 4096;

/// The linear packet data of one frame.
#[derive(Clone, Copy)]
pub struct Frame {
    data: usize,
    end: usize,
    /// The whole packet's length: the linear data's for XDP; a socket
    /// buffer's may reach past it (paged data), and the parser checks the IP
    /// lengths against the packet, not against what is linear.
    len: usize,
}

impl Frame {
    /// A frame that is all linear (XDP).
    #[inline(always)]
    pub const fn new(data: usize, end: usize) -> Self {
        Self {
            data,
            end,
            len: end - data,
        }
    }

    /// A socket buffer's frame: `[data, end)` is linear, the packet is `len`
    /// bytes long.
    #[inline(always)]
    pub const fn with_len(data: usize, end: usize, len: usize) -> Self {
        Self { data, end, len }
    }

    /// Length of the packet in bytes (for XDP, of the linear data).
    #[inline(always)]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// A pointer to a `T` at `offset`, if the whole `T` lies inside the frame.
    ///
    /// Callers keep `offset` bounded (masked or compared against a constant)
    /// so that the verifier knows its range.
    #[inline(always)]
    pub fn get<T>(&self, offset: usize) -> Option<*const T> {
        if offset > MAX_OFFSET {
            return None;
        }
        let start = self.data + offset;
        if start + size_of::<T>() > self.end {
            return None;
        }
        Some(start as *const T)
    }

    /// A writable pointer to a `T` at `offset`, if the whole `T` lies inside the frame.
    #[inline(always)]
    pub fn get_mut<T>(&self, offset: usize) -> Option<*mut T> {
        self.get::<T>(offset).map(<*const T>::cast_mut)
    }

    /// Reads a `T` at `offset` (unaligned), if it lies inside the frame.
    /// Byte by byte, for a header struct: [`Frame::load`] reads fields in
    /// words.
    #[inline(always)]
    pub fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        // SAFETY: `get` checked that the bytes lie inside the packet.
        self.get::<T>(offset).map(|p| unsafe { p.read_unaligned() })
    }

    /// Reads `N` bytes at `offset` in whole words (`unaligned`), if they lie
    /// inside the frame.
    #[inline(always)]
    pub fn load<const N: usize>(&self, offset: usize) -> Option<[u8; N]>
    where
        [u8; N]: PacketBytes,
    {
        // SAFETY: `get` checked that the bytes lie inside the packet.
        self.get::<[u8; N]>(offset)
            .map(|p| unsafe { PacketBytes::load(p.cast::<u8>()) })
    }
}
