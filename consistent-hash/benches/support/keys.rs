//! Backend keys shaped like the control plane's: `address:port/protocol`, from the
//! benchmarking range 198.18.0.0/15 (RFC 2544).

/// The key of the `i`-th test backend: `198.18.2.0:8080/TCP` and up.
pub(crate) fn backend_key(i: u32) -> Vec<u8> {
    let a = (198u32 << 24 | 18 << 16 | 2 << 8) + i;
    format!(
        "{}.{}.{}.{}:8080/TCP",
        a >> 24,
        a >> 16 & 255,
        a >> 8 & 255,
        a & 255
    )
    .into_bytes()
}

/// The keys of the first `n` test backends.
pub(crate) fn backend_keys(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(backend_key).collect()
}
