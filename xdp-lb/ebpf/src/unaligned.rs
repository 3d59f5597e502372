//! Packet bytes read and written in whole words.
//!
//! A header field in a frame has no alignment Rust can promise (the IP header
//! follows a 14-byte Ethernet header, options move the transport header), so
//! `read_unaligned` of a `[u8; 4]` is all Rust offers, and the BPF backend
//! lowers it to four single-byte loads and the shifts that join them. The
//! kernel has no such limit on packet memory: where unaligned access is
//! efficient (x86-64, arm64) the verifier accepts a word access at any offset
//! of a checked packet pointer (elsewhere it refuses the program at load
//! time, with the offset it found misaligned). An `asm!` block says that one
//! load or store, which a misaligned `*const u32` in Rust could not without
//! undefined behaviour.
//!
//! On the host (the crate is type-checked there by clippy) the words are
//! read and written with `read_unaligned` / `write_unaligned`.

/// Byte arrays moved to and from packet memory in whole words.
pub trait PacketBytes: Copy {
    /// Reads the bytes at `p`.
    ///
    /// # Safety
    /// `p .. p + size_of::<Self>()` lies inside the packet, bounds-checked
    /// in the verifier's sight.
    unsafe fn load(p: *const u8) -> Self;

    /// Writes the bytes at `p`.
    ///
    /// # Safety
    /// As for `load`.
    unsafe fn store(self, p: *mut u8);
}

impl PacketBytes for [u8; 1] {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller's guarantee.
        [unsafe { *p }]
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: the caller's guarantee.
        unsafe { *p = self[0] }
    }
}

/// An array one word wide: one load or store of that word.
macro_rules! one_word {
    ($n:literal, $word:ty, $load:ident, $store:ident) => {
        impl PacketBytes for [u8; $n] {
            #[inline(always)]
            unsafe fn load(p: *const u8) -> Self {
                // SAFETY: the caller's guarantee.
                unsafe { word::$load(p) }.to_ne_bytes()
            }

            #[inline(always)]
            unsafe fn store(self, p: *mut u8) {
                // SAFETY: the caller's guarantee.
                unsafe { word::$store(p, <$word>::from_ne_bytes(self)) }
            }
        }
    };
}

one_word!(2, u16, load_u16, store_u16);
one_word!(4, u32, load_u32, store_u32);
one_word!(8, u64, load_u64, store_u64);

/// Two MACs, a frame's first twelve bytes.
impl PacketBytes for [u8; 12] {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller's guarantee covers both words.
        let (head, tail) = unsafe { (word::load_u64(p), word::load_u32(p.add(8))) };
        let (head, tail) = (head.to_ne_bytes(), tail.to_ne_bytes());
        [
            head[0], head[1], head[2], head[3], head[4], head[5], head[6], head[7], tail[0],
            tail[1], tail[2], tail[3],
        ]
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        let head = [
            self[0], self[1], self[2], self[3], self[4], self[5], self[6], self[7],
        ];
        let tail = [self[8], self[9], self[10], self[11]];
        // SAFETY: the caller's guarantee covers both words.
        unsafe {
            word::store_u64(p, u64::from_ne_bytes(head));
            word::store_u32(p.add(8), u32::from_ne_bytes(tail));
        }
    }
}

impl PacketBytes for [u8; 16] {
    #[inline(always)]
    unsafe fn load(p: *const u8) -> Self {
        // SAFETY: the caller's guarantee covers both halves.
        let words = unsafe { [word::load_u64(p), word::load_u64(p.add(8))] };
        // SAFETY: two u64s are sixteen bytes, in memory order.
        unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>(words) }
    }

    #[inline(always)]
    unsafe fn store(self, p: *mut u8) {
        // SAFETY: sixteen bytes are two u64s, in memory order.
        let [a, b] = unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(self) };
        // SAFETY: the caller's guarantee covers both halves.
        unsafe {
            word::store_u64(p, a);
            word::store_u64(p.add(8), b);
        }
    }
}

#[cfg(target_arch = "bpf")]
mod word {
    use core::arch::asm;

    macro_rules! word_access {
        ($load:ident, $store:ident, $t:ty, $width:literal) => {
            /// One load of the word at `p`, zero-extended.
            #[inline(always)]
            pub(super) unsafe fn $load(p: *const u8) -> $t {
                let v: u64;
                // SAFETY: the caller's guarantee.
                unsafe {
                    asm!(
                        concat!("{v} = *(", $width, " *)({p} + 0)"),
                        v = lateout(reg) v,
                        p = in(reg) p,
                        options(readonly, nostack, preserves_flags),
                    );
                }
                v as $t
            }

            /// One store of `v` at `p`.
            #[inline(always)]
            pub(super) unsafe fn $store(p: *mut u8, v: $t) {
                // SAFETY: the caller's guarantee.
                unsafe {
                    asm!(
                        concat!("*(", $width, " *)({p} + 0) = {v}"),
                        p = in(reg) p,
                        v = in(reg) u64::from(v),
                        options(nostack, preserves_flags),
                    );
                }
            }
        };
    }

    word_access!(load_u64, store_u64, u64, "u64");
    word_access!(load_u32, store_u32, u32, "u32");
    word_access!(load_u16, store_u16, u16, "u16");
}

#[cfg(not(target_arch = "bpf"))]
mod word {
    macro_rules! word_access {
        ($load:ident, $store:ident, $t:ty) => {
            pub(super) unsafe fn $load(p: *const u8) -> $t {
                // SAFETY: the caller's guarantee.
                unsafe { p.cast::<$t>().read_unaligned() }
            }

            pub(super) unsafe fn $store(p: *mut u8, v: $t) {
                // SAFETY: the caller's guarantee.
                unsafe { p.cast::<$t>().write_unaligned(v) }
            }
        };
    }

    word_access!(load_u64, store_u64, u64);
    word_access!(load_u32, store_u32, u32);
    word_access!(load_u16, store_u16, u16);
}
