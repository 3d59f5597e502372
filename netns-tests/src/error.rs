//! The rig library's error type.
use std::{io, net::IpAddr, path::PathBuf, time::Duration};

use crate::names::PREFIX;

/// Everything a rig operation can fail with. Refusals (the safety rules of
/// DESIGN.md, "Test network rules") are variants of their own, so tests can
/// assert on them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A namespace, mount or directory name that does not carry the rig prefix.
    #[error("{name:?} is not a rig name: rig namespaces and mounts start with {PREFIX:?}")]
    NotRigName { name: String },

    /// The namespace is the root network namespace (or a name bound to it).
    #[error(
        "namespace {netns} is the root network namespace (or a name bound to it); \
         rigs never change the root namespace"
    )]
    RootNamespace { netns: String },

    /// The calling thread sits in the root network namespace, where a rig never
    /// attaches, configures or sends anything.
    #[error(
        "the calling thread is in the root network namespace; \
         run this inside a rig namespace (Netns::run)"
    )]
    RootThread,

    /// The namespace was not created by this rig.
    #[error("namespace {netns} does not belong to rig {rig}")]
    ForeignNamespace { netns: String, rig: String },

    /// An address or prefix outside the rig ranges.
    #[error(
        "{addr} is outside the rig ranges: use 198.18.0.0/15 (prefix length >= 15) \
         or 2001:2::/48 (prefix length >= 48)"
    )]
    AddressOutOfRange { addr: String },

    /// A default route that could lead out of the rig.
    #[error(
        "default route in {netns} refused: a default route needs a gateway that is an \
         address of this rig (got {gateway})"
    )]
    DefaultRouteOut { netns: String, gateway: String },

    /// A route whose gateway is not an address this rig assigned.
    #[error("route {route} in {netns}: gateway {gateway} is not an address of this rig")]
    UnknownGateway {
        netns: String,
        route: String,
        gateway: IpAddr,
    },

    /// A route that mixes IPv4 and IPv6.
    #[error("route {route}: gateway {gateway} is not of the destination's address family")]
    RouteFamily { route: String, gateway: IpAddr },

    /// A sysctl that is not per network namespace.
    #[error(
        "sysctl {key:?} refused: only net.* sysctls are per network namespace \
         (anything else would change the whole machine)"
    )]
    GlobalSysctl { key: String },

    /// An input that does not have the expected form.
    #[error("{what}: {input:?} is invalid, expected {expected}")]
    Invalid {
        what: &'static str,
        input: String,
        expected: &'static str,
    },

    /// A helper command could not be started.
    #[error("could not run `{command}`")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },

    /// A helper command exited with a failure.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    /// Entering a namespace failed.
    #[error("entering namespace {netns}")]
    Setns {
        netns: String,
        #[source]
        source: nix::Error,
    },

    /// Mounting or unmounting a file system failed.
    #[error("{action} {path}")]
    Mount {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    /// Attaching an XDP program inside a namespace failed.
    #[error("attaching XDP to {iface} in {netns}")]
    Xdp {
        netns: String,
        iface: String,
        // Boxed: the loader's error is large and this variant is rare.
        #[source]
        source: Box<xdp_lb::Error>,
    },

    /// A datapath operation (load, map access) failed.
    #[error("datapath")]
    Datapath(#[source] Box<xdp_lb::Error>),

    /// An echo server answered something other than its name and the request.
    #[error("echo {server}: unexpected reply {reply:?} to {request:?}")]
    EchoReply {
        server: String,
        request: String,
        reply: String,
    },

    /// A condition did not become true in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout { what: String, timeout: Duration },

    /// Any other I/O failure, with what was being done.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Shorthand for the rig library's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;
