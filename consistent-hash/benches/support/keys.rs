//! Backend keys shaped like the control plane's: `address:port/protocol`, from the
//! benchmarking range 198.18.0.0/15 (RFC 2544).

/// The key of the `i`-th test backend: `198.18.2.0:8080/TCP` and up.
pub(crate) fn backend_key(i: u32) -> Vec<u8> {
    format!("{}:8080/TCP", std::net::Ipv4Addr::from(0xc612_0200 + i)).into_bytes()
}

/// The keys of the first `n` test backends.
pub(crate) fn backend_keys(n: u32) -> Vec<Vec<u8>> {
    (0..n).map(backend_key).collect()
}
