//! `aya::Pod` for the map types, on the user side only.

/// Implements `aya::Pod` for `#[repr(C)]` types whose every bit pattern is valid.
macro_rules! impl_pod {
    ($($ty:ty),+ $(,)?) => {
        $(
            #[cfg(feature = "user")]
            // SAFETY: `repr(C)`, fields of integers and byte arrays only, padding
            // spelled out as fields, size pinned by a const assertion beside the type.
            unsafe impl aya::Pod for $ty {}
        )+
    };
}
pub(crate) use impl_pod;
