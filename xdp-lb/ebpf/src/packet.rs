//! Bounds-checked access to packet bytes.
//!
//! Both XDP (`xdp_md`) and TC (`__sk_buff`) programs see the packet as a
//! `[data, data_end)` window, so the parser works on a `Frame` and is shared by
//! both. Every read goes through `Frame::get`, which compares against
//! `data_end` in the form the verifier can follow.

/// The linear packet data of one frame.
#[derive(Clone, Copy)]
pub struct Frame {
    data: usize,
    end: usize,
}

impl Frame {
    #[inline(always)]
    pub const fn new(data: usize, end: usize) -> Self {
        Self { data, end }
    }

    /// Length of the linear data in bytes.
    #[inline(always)]
    pub const fn len(&self) -> usize {
        self.end - self.data
    }

    /// A pointer to a `T` at `offset`, if the whole `T` lies inside the frame.
    ///
    /// Callers keep `offset` bounded (masked or compared against a constant)
    /// so that the verifier knows its range.
    #[inline(always)]
    pub fn get<T>(&self, offset: usize) -> Option<*const T> {
        let start = self.data + offset;
        if start + size_of::<T>() > self.end {
            return None;
        }
        Some(start as *const T)
    }

    /// Reads a `T` at `offset` (unaligned), if it lies inside the frame.
    #[inline(always)]
    pub fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        // SAFETY: `get` checked that the bytes lie inside the packet.
        self.get::<T>(offset).map(|p| unsafe { p.read_unaligned() })
    }
}
