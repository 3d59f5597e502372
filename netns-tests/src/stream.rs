//! A long-lived TCP echo: [`StreamEchoServer`] greets every connection with
//! its name, then echoes every byte back until the client closes;
//! [`StreamSession`] is the client, which checks every byte it gets back.
//! The agent's scenario tests hold such connections through the LB across
//! restarts, upgrades and backend changes.
use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use crate::{
    Error, Netns, Result,
    server::{self, Kind, ServerThread, Shared},
};

/// How long a stream connection's thread waits on a read before it looks at
/// the stop flag again.
const STREAM_POLL: Duration = Duration::from_millis(100);
/// How long a stream connection may stay idle before the server closes it.
const STREAM_MAX_IDLE: Duration = Duration::from_secs(120);
/// How long a stream server waits for one write to go out.
const STREAM_WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// How errors and logs name the server.
const KIND: Kind = Kind::new("a", "stream");

/// A TCP server on its own thread inside a namespace that greets every
/// connection with its name and a newline, then echoes every byte back until
/// the client closes: long-lived connections that say which backend holds
/// them. Stopped (its connections closed, its threads joined) on drop.
#[derive(Debug)]
pub struct StreamEchoServer {
    server: ServerThread,
}

impl StreamEchoServer {
    /// Binds `bind` (TCP) inside `netns` and starts serving as `name`.
    pub fn start(netns: &Netns, bind: SocketAddr, name: &str) -> Result<Self> {
        server::check_name("stream server name", name)?;
        server::check_bind(bind.ip())?;
        let server = ServerThread::tcp(netns, KIND, name, bind, STREAM_POLL, |stream, shared| {
            echo_stream(&stream, shared)
        })?;
        Ok(Self { server })
    }

    /// The address the server listens on.
    pub const fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// Stops the server and waits for its connections to end.
    pub fn stop(self) -> Result<()> {
        self.server.stop()
    }
}

fn echo_stream(mut stream: &TcpStream, shared: &Shared) -> io::Result<()> {
    stream.set_write_timeout(Some(STREAM_WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(STREAM_POLL))?;
    stream.write_all(format!("{}\n", shared.name()).as_bytes())?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut last = Instant::now();
    while !shared.stopping() {
        match stream.read(&mut buf) {
            Ok(0) => return stream.shutdown(Shutdown::Write),
            Ok(n) => {
                stream.write_all(&buf[..n])?;
                last = Instant::now();
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if last.elapsed() > STREAM_MAX_IDLE {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A client connection to a [`StreamEchoServer`] (through the VIP, say),
/// opened from a namespace; usable from any thread afterwards (a socket
/// stays in the namespace it was opened in).
#[derive(Debug)]
pub struct StreamSession {
    stream: TcpStream,
    server: String,
    local: SocketAddr,
    timeout: Duration,
    /// Bytes echoed back and checked so far.
    echoed: u64,
}

impl StreamSession {
    /// Connects from `netns` to `addr` and reads the server's greeting; every
    /// later read or write may take at most `timeout`.
    pub fn open(netns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<Self> {
        Self::open_from(netns, None, addr, timeout)
    }

    /// [`Self::open`] from the client address `source` (any port), one of
    /// the namespace's addresses.
    pub fn open_from(
        netns: &Netns,
        source: Option<IpAddr>,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Result<Self> {
        let what = move |step: &str| format!("stream to {addr}: {step}");
        let local = source.map(|ip| SocketAddr::new(ip, 0));
        let (stream, local, greeting) = open_greeted(netns, local, addr, timeout, &what)?;
        let server = greeting.trim_end().to_owned();
        if !greeting.ends_with('\n') || server.is_empty() {
            return Err(Error::Io {
                what: what("greeting"),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("greeted with {greeting:?}"),
                ),
            });
        }
        Ok(Self {
            stream,
            server,
            local,
            timeout,
            echoed: 0,
        })
    }

    /// The name of the server holding the connection.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The client's address of the connection.
    pub const fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Bytes echoed back and checked so far.
    pub const fn echoed(&self) -> u64 {
        self.echoed
    }

    /// Sends `data` and reads it back; an error unless every byte comes back
    /// as sent, in time.
    pub fn exchange(&mut self, data: &[u8]) -> io::Result<()> {
        (&self.stream).write_all(data)?;
        let mut back = vec![0u8; data.len()];
        (&self.stream).read_exact(&mut back)?;
        if let Some(at) = data.iter().zip(&back).position(|(a, b)| a != b) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "byte {} of the stream came back as {:#04x}, sent {:#04x}",
                    self.echoed + at as u64,
                    back[at],
                    data[at]
                ),
            ));
        }
        self.echoed += data.len() as u64;
        Ok(())
    }

    /// Closes our side and waits for the server's orderly close; an error if
    /// anything but the end of the stream (a reset, stray bytes) comes first.
    pub fn close(self) -> io::Result<()> {
        self.stream.shutdown(Shutdown::Write)?;
        let mut rest = Vec::new();
        let deadline = Instant::now() + self.timeout;
        (&self.stream).take(1024).read_to_end(&mut rest)?;
        if !rest.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{} stray bytes before the end of the stream", rest.len()),
            ));
        }
        if Instant::now() > deadline {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the close took too long",
            ));
        }
        Ok(())
    }
}

/// Connects from `netns` to `addr` (from `local` when given), sets the
/// read and write timeouts, and reads the server's one-line greeting:
/// returns the stream, its local address and the greeting as read. `what`
/// names a step in errors.
pub(crate) fn open_greeted(
    netns: &Netns,
    local: Option<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
    what: &impl Fn(&str) -> String,
) -> Result<(TcpStream, SocketAddr, String)> {
    let stream = netns
        .run(move || connect(local, addr, timeout))?
        .map_err(Error::io(what("connect")))?;
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .and_then(|()| stream.set_nodelay(true))
        .map_err(Error::io(what("socket options")))?;
    let local = stream
        .local_addr()
        .map_err(Error::io(what("local address")))?;
    let mut greeting = String::new();
    BufReader::new((&stream).take(256))
        .read_line(&mut greeting)
        .map_err(Error::io(what("greeting")))?;
    Ok((stream, local, greeting))
}

/// A TCP connection to `addr`, from `local` when given (with `SO_REUSEADDR`,
/// so that two connections to different addresses can share a source port).
fn connect(
    local: Option<SocketAddr>,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    if let Some(local) = local {
        socket.set_reuse_address(true)?;
        socket.bind(&local.into())?;
    }
    socket.connect_timeout(&addr.into(), timeout)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        HostKind,
        topology::{Family, Options, TwoHosts},
    };

    /// Needs root: a rig of two namespaces.
    #[test]
    fn stream_sessions_echo_every_byte_and_close_in_order() {
        let hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
        let server =
            StreamEchoServer::start(&hosts.b.netns, hosts.b.socket(Family::V4, 9000), "b1")
                .unwrap();
        let timeout = Duration::from_secs(2);
        let mut session =
            StreamSession::open(&hosts.a.netns, server.local_addr(), timeout).unwrap();
        assert_eq!(session.server(), "b1");
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in data.chunks(16 * 1024) {
            session.exchange(chunk).unwrap();
        }
        assert_eq!(session.echoed(), data.len() as u64);
        session.close().unwrap();
        // A second session after the first has closed.
        let mut again = StreamSession::open(&hosts.a.netns, server.local_addr(), timeout).unwrap();
        again.exchange(b"x").unwrap();
        // Stopping the server ends its connections: the next exchange fails.
        server.stop().unwrap();
        assert!(again.exchange(b"y").is_err());
    }
}
