//! In-process TCP and UDP echo servers and bounded clients.
//!
//! A server answers every request with its own name, a space, and the request,
//! so a test behind a load balancer sees which backend answered. TCP carries
//! one request per connection (the client half-closes after sending), so every
//! request is a new flow, as it is for UDP, where each request comes from a
//! fresh socket.
use std::{
    io::{self, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use crate::{
    Error, Netns, Result,
    addr::is_rig_address,
    server::{self, Bound, Kind, ServerThread, Shared, accept_until_stopped},
};

/// The largest request a server reads.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a server waits on one client before giving up on it.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a UDP server looks at its stop flag when no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(50);
/// How errors and logs name the server.
const KIND: Kind = Kind::new("an", "echo");

/// A transport protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// An echo server running on its own thread inside a namespace; stopped (and
/// its thread joined) on drop.
#[derive(Debug)]
pub struct EchoServer {
    proto: Proto,
    server: ServerThread,
}

impl EchoServer {
    /// Binds `bind` inside `netns` and starts answering as `name`.
    ///
    /// `bind` must be unspecified, loopback, or a rig address; port 0 picks a
    /// free port ([`local_addr`](Self::local_addr) tells which). `name` must
    /// be non-empty and without whitespace.
    pub fn start(netns: &Netns, proto: Proto, bind: SocketAddr, name: &str) -> Result<Self> {
        server::check_bind(bind.ip())?;
        server::check_name("echo server name", name)?;
        let bind_socket = move || {
            let bound = match proto {
                Proto::Tcp => Bound::tcp(bind).map(|bound| bound.map(Socket::Tcp)),
                Proto::Udp => bind_udp(bind),
            };
            bound.map_err(|source| Error::Io {
                what: format!("binding a {proto:?} echo server to {bind}"),
                source,
            })
        };
        let serve = |socket, shared: Shared| match socket {
            Socket::Tcp(listener) => {
                accept_until_stopped(&listener, &shared, KIND, UDP_POLL, |stream, shared| {
                    answer_tcp(stream, shared.name())
                })
            }
            Socket::Udp(socket) => serve_udp(&socket, &shared),
        };
        let server = ServerThread::start(netns, KIND, name, bind_socket, serve)?;
        debug!(netns = %netns, local = %server.local_addr(), ?proto, name, "echo server up");
        Ok(Self { proto, server })
    }

    /// The address the server listens on.
    pub const fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The name the server answers with.
    pub fn name(&self) -> &str {
        self.server.name()
    }

    /// The protocol the server speaks.
    pub const fn proto(&self) -> Proto {
        self.proto
    }

    /// The namespace the server listens in.
    pub const fn netns(&self) -> &Netns {
        self.server.netns()
    }

    /// Stops the server and waits for its thread (and its connections) to end.
    pub fn stop(self) -> Result<()> {
        self.server.stop()
    }
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

/// A UDP socket on `bind`, with no descriptor to wake it on stop: a UDP
/// socket that is shut down makes its blocked recv_from return without a
/// source address, which std asserts against (a panic). The stop flag and
/// the poll interval end its loop instead.
fn bind_udp(bind: SocketAddr) -> io::Result<Bound<Socket>> {
    let socket = UdpSocket::bind(bind)?;
    socket.set_read_timeout(Some(UDP_POLL))?;
    Ok(Bound {
        local: socket.local_addr()?,
        socket: Socket::Udp(socket),
        wake: None,
    })
}

fn answer_tcp(mut stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(SERVER_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_IO_TIMEOUT))?;
    let mut request = Vec::new();
    (&mut stream).take(MAX_REQUEST).read_to_end(&mut request)?;
    stream.write_all(&reply(name, &request))?;
    stream.shutdown(Shutdown::Both)
}

fn serve_udp(socket: &UdpSocket, shared: &Shared) {
    let mut buf = vec![0u8; 65536];
    while !shared.stopping() {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                if shared.stopping() {
                    break;
                }
                if let Err(err) = socket.send_to(&reply(shared.name(), &buf[..len]), peer) {
                    debug!(%peer, error = %err, "echo reply failed");
                }
            }
            Err(err) if is_poll_timeout(&err) => {}
            Err(err) => {
                warn!(error = %err, "echo server receive failed");
                std::thread::sleep(UDP_POLL);
            }
        }
    }
}

fn reply(name: &str, request: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1 + request.len());
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request);
    out
}

/// One answered request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Echo {
    /// The name of the server that answered.
    pub server: String,
    /// What was sent (and echoed back).
    pub request: String,
    /// The client's address for this request.
    pub local: SocketAddr,
}

/// A client that sends a bounded number of requests from inside a namespace.
#[derive(Clone, Debug)]
pub struct EchoClient {
    netns: Netns,
    timeout: Duration,
}

impl EchoClient {
    /// The default time one request may take, connect to reply.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

    /// A client in `netns`.
    pub fn new(netns: &Netns) -> Self {
        Self {
            netns: netns.clone(),
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Sets the time one request may take.
    #[must_use]
    pub const fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends `count` TCP requests (one connection each) and returns the
    /// answers; the first failure is the error.
    pub fn tcp(&self, server: SocketAddr, count: usize) -> Result<Vec<Echo>> {
        self.each(Proto::Tcp, server, count)?.into_iter().collect()
    }

    /// Sends `count` UDP requests (one socket each) and returns the answers;
    /// the first failure is the error.
    pub fn udp(&self, server: SocketAddr, count: usize) -> Result<Vec<Echo>> {
        self.each(Proto::Udp, server, count)?.into_iter().collect()
    }

    /// Sends one UDP request from each of `locals` (a fixed address and port
    /// each: one flow each) and returns each one's outcome; the outer error
    /// is for not getting into the namespace at all.
    pub fn udp_from(&self, locals: &[SocketAddr], server: SocketAddr) -> Result<Vec<Result<Echo>>> {
        check_target(server.ip())?;
        let timeout = self.timeout;
        let tag = request_tag();
        let locals = locals.to_vec();
        self.netns.run(move || {
            locals
                .iter()
                .enumerate()
                .map(|(i, &local)| udp_request(local, server, &format!("{tag}-{i}"), timeout))
                .collect()
        })
    }

    /// Sends one UDP request of `size` bytes (a tag, then filler) from a
    /// fresh socket and returns the answer, which must echo it whole. Larger
    /// than the path's MTU, the request leaves in fragments, and its echo
    /// comes back in fragments too.
    pub fn udp_sized(&self, server: SocketAddr, size: usize) -> Result<Echo> {
        check_target(server.ip())?;
        let timeout = self.timeout;
        let mut request = format!("{}-", request_tag());
        let filler = "0123456789abcdefghijklmnopqrstuvwxyz".chars().cycle();
        request.extend(filler.take(size.saturating_sub(request.len())));
        self.netns
            .run(move || udp_request(any_port(server), server, &request, timeout))?
    }

    /// Sends `count` requests and returns each one's outcome; the outer error
    /// is for not getting into the namespace at all. Takes at most `count`
    /// times the timeout.
    pub fn each(
        &self,
        proto: Proto,
        server: SocketAddr,
        count: usize,
    ) -> Result<Vec<Result<Echo>>> {
        check_target(server.ip())?;
        let timeout = self.timeout;
        let tag = request_tag();
        self.netns.run(move || {
            (0..count)
                .map(|i| {
                    let request = format!("{tag}-{i}");
                    match proto {
                        Proto::Tcp => tcp_request(server, &request, timeout),
                        Proto::Udp => udp_request(any_port(server), server, &request, timeout),
                    }
                })
                .collect()
        })
    }
}

/// A tag no other client of this process uses, so a late reply to one client
/// can never be taken for another's.
fn request_tag() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "req-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn tcp_request(server: SocketAddr, request: &str, timeout: Duration) -> Result<Echo> {
    let what = |step: &str| format!("TCP echo to {server}: {step}");
    let deadline = Instant::now() + timeout;
    let mut stream =
        TcpStream::connect_timeout(&server, timeout).map_err(Error::io(what("connect")))?;
    let local = stream
        .local_addr()
        .map_err(Error::io(what("local address")))?;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    stream
        .set_write_timeout(Some(remaining()))
        .and_then(|()| stream.write_all(request.as_bytes()))
        .and_then(|()| stream.shutdown(Shutdown::Write))
        .map_err(Error::io(what("send")))?;
    let mut answer = Vec::new();
    stream
        .set_read_timeout(Some(remaining()))
        .and_then(|()| (&mut stream).take(MAX_REQUEST).read_to_end(&mut answer))
        .map_err(Error::io(what("receive")))?;
    parse_reply(server, request, &answer, local)
}

/// Any address and port of `server`'s family.
fn any_port(server: SocketAddr) -> SocketAddr {
    match server {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    }
}

/// One request from a socket bound to `local`.
fn udp_request(
    local: SocketAddr,
    server: SocketAddr,
    request: &str,
    timeout: Duration,
) -> Result<Echo> {
    let what = |step: &str| format!("UDP echo to {server}: {step}");
    let socket = UdpSocket::bind(local).map_err(Error::io(what("bind")))?;
    socket.connect(server).map_err(Error::io(what("connect")))?;
    let local = socket
        .local_addr()
        .map_err(Error::io(what("local address")))?;
    socket
        .send(request.as_bytes())
        .map_err(Error::io(what("send")))?;
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 65536];
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Error::Timeout {
                what: what("reply"),
                timeout,
            });
        }
        socket
            .set_read_timeout(Some(remaining))
            .map_err(Error::io(what("receive")))?;
        match socket.recv(&mut buf) {
            Ok(len) => {
                let echo = parse_reply(server, request, &buf[..len], local);
                // A stray datagram (a late answer to an earlier socket that
                // happened to get the same port) is skipped; ours ends the wait.
                if echo.is_ok() {
                    return echo;
                }
            }
            Err(err) if is_poll_timeout(&err) => {}
            Err(err) => return Err(Error::io(what("receive"))(err)),
        }
    }
}

fn parse_reply(
    server: SocketAddr,
    request: &str,
    answer: &[u8],
    local: SocketAddr,
) -> Result<Echo> {
    let text = String::from_utf8_lossy(answer);
    match text.split_once(' ') {
        Some((name, echoed)) if echoed == request && !name.is_empty() => Ok(Echo {
            server: name.to_owned(),
            request: request.to_owned(),
            local,
        }),
        _ => Err(Error::EchoReply {
            server: server.to_string(),
            request: request.to_owned(),
            reply: text.into_owned(),
        }),
    }
}

/// A client may only talk to loopback or rig addresses.
fn check_target(ip: IpAddr) -> Result<()> {
    if ip.is_loopback() || is_rig_address(ip) {
        Ok(())
    } else {
        Err(Error::AddressOutOfRange {
            addr: ip.to_string(),
        })
    }
}

/// A receive that ended because the poll interval passed (or a signal came):
/// not an error, the loop checks its stop flag and waits again.
fn is_poll_timeout(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}
