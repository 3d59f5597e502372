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
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing::{debug, warn};

use crate::{Error, Netns, Result, addr::is_rig_address};

/// The largest request a server reads.
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a server waits on one client before giving up on it.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a UDP server looks at its stop flag when no datagram arrives.
const UDP_POLL: Duration = Duration::from_millis(50);

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
    name: Arc<str>,
    netns: Netns,
    local: SocketAddr,
    stop: Arc<AtomicBool>,
    /// A duplicate of the server's socket, used to wake it up on stop.
    wake: OwnedFd,
    thread: Option<JoinHandle<Result<()>>>,
}

impl EchoServer {
    /// Binds `bind` inside `netns` and starts answering as `name`.
    ///
    /// `bind` must be unspecified, loopback, or a rig address; port 0 picks a
    /// free port ([`local_addr`](Self::local_addr) tells which). `name` must
    /// be non-empty and without whitespace.
    pub fn start(netns: &Netns, proto: Proto, bind: SocketAddr, name: &str) -> Result<Self> {
        check_local(bind.ip())?;
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(Error::Invalid {
                what: "echo server name",
                input: name.to_owned(),
                expected: "a non-empty name without whitespace",
            });
        }
        let name: Arc<str> = name.into();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let name = name.clone();
            let stop = stop.clone();
            netns.spawn(move || serve(proto, bind, &name, &stop, &ready_tx))?
        };
        match ready_rx.recv() {
            Ok(Ok((local, wake))) => {
                debug!(netns = %netns, %local, ?proto, name = &*name, "echo server up");
                Ok(Self {
                    proto,
                    name,
                    netns: netns.clone(),
                    local,
                    stop,
                    wake,
                    thread: Some(thread),
                })
            }
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            // The thread ended before binding: it could not enter the namespace.
            Err(mpsc::RecvError) => Err(match thread.join() {
                Ok(Err(err)) => err,
                _ => Error::Io {
                    what: format!("starting an echo server in {netns}"),
                    source: io::Error::other("the server thread ended before binding"),
                },
            }),
        }
    }

    /// The address the server listens on.
    pub const fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The name the server answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The protocol the server speaks.
    pub const fn proto(&self) -> Proto {
        self.proto
    }

    /// The namespace the server listens in.
    pub const fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Stops the server and waits for its thread (and its connections) to end.
    pub fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.stop.store(true, Ordering::Release);
        // A listening TCP socket that is shut down makes a blocked accept(2)
        // return (EINVAL). A UDP socket is not shut down: its blocked
        // recv_from would then return without a source address, which std
        // asserts against (a panic); the flag and the UDP poll interval stop
        // that loop instead.
        if self.proto == Proto::Tcp {
            // SAFETY: `wake` is an open socket descriptor owned by `self`.
            unsafe {
                libc::shutdown(self.wake.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        // A panic is reported, not resumed: this runs in `Drop`, possibly
        // while a test is already unwinding.
        thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                what: format!("echo server {} on {}", self.name, self.local),
                source: io::Error::other("the server thread panicked"),
            })
        })
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            warn!(local = %self.local, error = %err, "echo server ended with an error");
        }
    }
}

type Ready = mpsc::SyncSender<Result<(SocketAddr, OwnedFd)>>;

/// The server thread: binds, reports the bound address, then serves until
/// stopped.
fn serve(proto: Proto, bind: SocketAddr, name: &str, stop: &AtomicBool, ready: &Ready) {
    let bound = match proto {
        Proto::Tcp => TcpListener::bind(bind).and_then(|l| {
            let wake = l.as_fd().try_clone_to_owned()?;
            Ok((Socket::Tcp(l), wake))
        }),
        Proto::Udp => UdpSocket::bind(bind).and_then(|s| {
            s.set_read_timeout(Some(UDP_POLL))?;
            let wake = s.as_fd().try_clone_to_owned()?;
            Ok((Socket::Udp(s), wake))
        }),
    };
    let socket = match bound.and_then(|(s, w)| Ok((s.local_addr()?, s, w))) {
        Ok((local, socket, wake)) => {
            if ready.send(Ok((local, wake))).is_err() {
                return;
            }
            socket
        }
        Err(source) => {
            let _ = ready.send(Err(Error::Io {
                what: format!("binding a {proto:?} echo server to {bind}"),
                source,
            }));
            return;
        }
    };
    match socket {
        Socket::Tcp(listener) => serve_tcp(&listener, name, stop),
        Socket::Udp(socket) => serve_udp(&socket, name, stop),
    }
}

enum Socket {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

impl Socket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Self::Tcp(l) => l.local_addr(),
            Self::Udp(s) => s.local_addr(),
        }
    }
}

fn serve_tcp(listener: &TcpListener, name: &str, stop: &AtomicBool) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let name = name.to_owned();
                connections.retain(|c| !c.is_finished());
                connections.push(std::thread::spawn(move || {
                    if let Err(err) = answer_tcp(stream, &name) {
                        debug!(%peer, error = %err, "echo connection failed");
                    }
                }));
            }
            Err(_) if stop.load(Ordering::Acquire) => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                // E.g. out of descriptors: back off instead of spinning.
                warn!(error = %err, "echo server accept failed");
                std::thread::sleep(UDP_POLL);
            }
        }
    }
    // Every connection has I/O timeouts, so these joins are bounded.
    for connection in connections {
        let _ = connection.join();
    }
}

fn answer_tcp(mut stream: TcpStream, name: &str) -> io::Result<()> {
    stream.set_read_timeout(Some(SERVER_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_IO_TIMEOUT))?;
    let mut request = Vec::new();
    (&mut stream).take(MAX_REQUEST).read_to_end(&mut request)?;
    stream.write_all(&reply(name, &request))?;
    stream.shutdown(Shutdown::Both)
}

fn serve_udp(socket: &UdpSocket, name: &str, stop: &AtomicBool) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Acquire) {
        match socket.recv_from(&mut buf) {
            Ok((len, peer)) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                if let Err(err) = socket.send_to(&reply(name, &buf[..len]), peer) {
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
                        Proto::Udp => udp_request(server, &request, timeout),
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

fn udp_request(server: SocketAddr, request: &str, timeout: Duration) -> Result<Echo> {
    let what = |step: &str| format!("UDP echo to {server}: {step}");
    let any: SocketAddr = match server {
        SocketAddr::V4(_) => (IpAddr::from([0u8; 4]), 0).into(),
        SocketAddr::V6(_) => (IpAddr::from([0u16; 8]), 0).into(),
    };
    let socket = UdpSocket::bind(any).map_err(Error::io(what("bind")))?;
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

/// A server may bind the unspecified address, loopback, or a rig address.
fn check_local(ip: IpAddr) -> Result<()> {
    if ip.is_unspecified() || ip.is_loopback() || is_rig_address(ip) {
        Ok(())
    } else {
        Err(Error::AddressOutOfRange {
            addr: ip.to_string(),
        })
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
