//! A tiny HTTP/1.1 server and a bounded client, both inside rig namespaces.
//!
//! [`HttpServer`] answers every `GET` with `200 OK` and the body `<name>\n`,
//! like the `http-echo` server of the Kubernetes tutorials, so a client behind
//! a load balancer sees which backend answered. Every answer carries
//! `Connection: close` and the connection ends after it: one request, one
//! flow. [`http_get`] sends one `GET` from a namespace and reads the answer,
//! bounded by a timeout; it also reads the agent's `/metrics`.
//!
//! Only what these two need of HTTP/1.1 (RFC 9112) is here: a request line
//! and headers, and an answer framed by `Content-Length`, by chunked transfer
//! coding, or by the end of the connection.
use std::{
    io::{self, BufRead as _, BufReader, Read as _, Write as _},
    net::{Shutdown, SocketAddr, TcpStream},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tracing::debug;

use crate::{
    Error, Netns, Result,
    addr::is_rig_address,
    server::{self, Kind, ServerThread},
};

/// The longest request head (request line and headers) the server reads.
const MAX_HEAD: u64 = 8 * 1024;
/// The largest answer body the client reads (the agent's `/metrics` included).
const MAX_BODY: u64 = 4 * 1024 * 1024;
/// How long the server waits on one client before giving up on it.
const SERVER_IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the accept loop backs off after an accept error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// How errors and logs name the server.
const KIND: Kind = Kind::new("an", "HTTP");

/// An HTTP server on its own thread inside a namespace, answering every
/// `GET` with its name; stopped (and its thread joined) on drop.
#[derive(Debug)]
pub struct HttpServer {
    served: Arc<AtomicU64>,
    server: ServerThread,
}

impl HttpServer {
    /// Binds `bind` (TCP) inside `netns` and starts answering as `name`.
    ///
    /// `bind` must be unspecified, loopback or a rig address; port 0 picks a
    /// free port ([`local_addr`](Self::local_addr) tells which). `name` must be
    /// non-empty, printable ASCII without whitespace.
    pub fn start(netns: &Netns, bind: SocketAddr, name: &str) -> Result<Self> {
        server::check_bind(bind.ip())?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::Invalid {
                what: "HTTP server name",
                input: name.to_owned(),
                expected: "non-empty printable ASCII without whitespace",
            });
        }
        let served = Arc::new(AtomicU64::new(0));
        let counter = served.clone();
        let server = ServerThread::tcp(
            netns,
            KIND,
            name,
            bind,
            ACCEPT_BACKOFF,
            move |stream, shared| answer(stream, shared.name(), &counter),
        )?;
        debug!(netns = %netns, local = %server.local_addr(), name, "HTTP server up");
        Ok(Self { served, server })
    }

    /// The address the server listens on.
    pub const fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The name the server answers with.
    pub fn name(&self) -> &str {
        self.server.name()
    }

    /// The namespace the server listens in.
    pub const fn netns(&self) -> &Netns {
        self.server.netns()
    }

    /// `GET` requests answered so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Acquire)
    }

    /// Stops the server and waits for its thread (and its connections) to end.
    pub fn stop(self) -> Result<()> {
        self.server.stop()
    }
}

/// Answers one connection, counting a `GET` in `served` before answering it
/// (so a client that has its answer can rely on the count).
///
/// A connection closed before a full request head (a health check's bare
/// TCP connect) gets no answer and is not an error.
fn answer(mut stream: TcpStream, name: &str, served: &AtomicU64) -> io::Result<()> {
    stream.set_read_timeout(Some(SERVER_IO_TIMEOUT))?;
    stream.set_write_timeout(Some(SERVER_IO_TIMEOUT))?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line)? == 0 {
        return Ok(());
    }
    // The headers: read up to the empty line, ignored.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let (status, body) = match request_line.split_whitespace().next() {
        Some("GET") => {
            served.fetch_add(1, Ordering::AcqRel);
            ("200 OK", format!("{name}\n"))
        }
        _ => ("405 Method Not Allowed", "only GET is served\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    drop(reader);
    stream.write_all(response.as_bytes())?;
    stream.shutdown(Shutdown::Write)?;
    // Read whatever else comes until the client closes (or the timeout): a
    // socket closed with unread data sends a reset instead of a FIN
    // (RFC 9293, 3.6.1), and a client must never see a reset from us.
    io::copy(&mut (&stream).take(MAX_HEAD), &mut io::sink())?;
    Ok(())
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The body (lossily decoded as UTF-8).
    pub body: String,
}

/// Sends `GET path` to `addr` from inside `netns` and returns the answer;
/// the whole exchange, connect to last byte, takes at most `timeout`.
///
/// `addr` must be a loopback or rig address (the agent's metrics listen on
/// the LB namespace's loopback).
pub fn http_get(
    netns: &Netns,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse> {
    if !(addr.ip().is_loopback() || is_rig_address(addr.ip())) {
        return Err(Error::AddressOutOfRange {
            addr: addr.ip().to_string(),
        });
    }
    if !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::Invalid {
            what: "HTTP path",
            input: path.to_owned(),
            expected: "an absolute path of printable ASCII, like /metrics",
        });
    }
    let path = path.to_owned();
    netns.run(move || get(addr, &path, timeout))?
}

fn get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<HttpResponse> {
    let what = |step: &str| format!("HTTP GET http://{addr}{path}: {step}");
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    };
    let stream = TcpStream::connect_timeout(&addr, timeout).map_err(Error::io(what("connect")))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xlb-rig\r\nConnection: close\r\n\r\n"
    );
    stream
        .set_write_timeout(Some(remaining()))
        .and_then(|()| (&stream).write_all(request.as_bytes()))
        .map_err(Error::io(what("send")))?;
    // Each read gets what is left of the deadline.
    let mut reader = BufReader::new(DeadlineReader {
        stream: &stream,
        deadline,
    });
    let status_line = read_line(&mut reader).map_err(Error::io(what("status line")))?;
    let status = parse_status(&status_line).ok_or_else(|| Error::Invalid {
        what: "HTTP status line",
        input: status_line.clone(),
        expected: "HTTP/1.x <3-digit code> <reason>",
    })?;
    let mut length = None;
    let mut chunked = false;
    loop {
        let line = read_line(&mut reader).map_err(Error::io(what("headers")))?;
        if line.is_empty() {
            break;
        }
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<u64>().map_err(|_| Error::Invalid {
                what: "Content-Length",
                input: value.to_owned(),
                expected: "a decimal byte count",
            })?);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        }
    }
    let body = if chunked {
        read_chunked(&mut reader).map_err(Error::io(what("chunked body")))?
    } else {
        let mut body = Vec::new();
        let limit = length.unwrap_or(MAX_BODY).min(MAX_BODY);
        (&mut reader)
            .take(limit)
            .read_to_end(&mut body)
            .map_err(Error::io(what("body")))?;
        if let Some(length) = length
            && (body.len() as u64) < length.min(MAX_BODY)
        {
            return Err(Error::Io {
                what: what("body"),
                source: io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("{} of {length} bytes before the end", body.len()),
                ),
            });
        }
        body
    };
    Ok(HttpResponse {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// A reader whose every read times out at a fixed deadline.
struct DeadlineReader<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl io::Read for DeadlineReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the deadline passed",
            ));
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

/// One line without its CRLF; an error at the end of the stream.
fn read_line(reader: &mut impl io::BufRead) -> io::Result<String> {
    let mut line = String::new();
    reader.by_ref().take(MAX_HEAD).read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the connection ended inside a line: {line:?}"),
        ));
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `HTTP/1.1 200 OK` → 200.
fn parse_status(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    let code = parts.next()?;
    (version.starts_with("HTTP/1.") && code.len() == 3)
        .then(|| code.parse().ok())
        .flatten()
}

/// A chunked body (RFC 9112, section 7.1); trailers are skipped.
fn read_chunked(reader: &mut impl io::BufRead) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line = read_line(reader)?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size = u64::from_str_radix(size, 16).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("bad chunk size {line:?}"),
            )
        })?;
        if size == 0 {
            while !read_line(reader)?.is_empty() {}
            return Ok(body);
        }
        if body.len() as u64 + size > MAX_BODY {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("the body is larger than {MAX_BODY} bytes"),
            ));
        }
        let start = body.len();
        reader.by_ref().take(size).read_to_end(&mut body)?;
        if (body.len() - start) as u64 != size {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the connection ended inside a chunk",
            ));
        }
        if !read_line(reader)?.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a chunk did not end with CRLF",
            ));
        }
    }
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
    fn the_server_answers_gets_with_its_name_and_counts_them() {
        let hosts = TwoHosts::build(HostKind::Wire, &Options::default()).unwrap();
        let server =
            HttpServer::start(&hosts.b.netns, hosts.b.socket(Family::V4, 8080), "b0").unwrap();
        let addr = server.local_addr();
        let timeout = Duration::from_secs(2);
        let answer = http_get(&hosts.a.netns, addr, "/", timeout).unwrap();
        assert_eq!(
            answer,
            HttpResponse {
                status: 200,
                body: "b0\n".to_owned()
            }
        );
        assert_eq!(server.served(), 1);
        // A bare connect (a TCP health check) and a POST are not counted.
        let posted = hosts
            .a
            .netns
            .run(move || -> io::Result<String> {
                let _probe = TcpStream::connect_timeout(&addr, timeout)?;
                let mut post = TcpStream::connect_timeout(&addr, timeout)?;
                post.set_read_timeout(Some(timeout))?;
                post.write_all(b"POST / HTTP/1.1\r\nHost: x\r\n\r\n")?;
                post.shutdown(Shutdown::Write)?;
                let mut answer = String::new();
                post.read_to_string(&mut answer)?;
                Ok(answer)
            })
            .unwrap()
            .unwrap();
        assert!(posted.starts_with("HTTP/1.1 405 "), "{posted}");
        let answer = http_get(&hosts.a.netns, addr, "/healthz", timeout).unwrap();
        assert_eq!(answer.body, "b0\n");
        assert_eq!(server.served(), 2);
        // Stopped: refused.
        server.stop().unwrap();
        assert!(http_get(&hosts.a.netns, addr, "/", timeout).is_err());
        // Outside the rig ranges: refused before anything is sent.
        let outside: SocketAddr = "192.0.2.1:80".parse().unwrap();
        assert!(matches!(
            http_get(&hosts.a.netns, outside, "/", timeout),
            Err(Error::AddressOutOfRange { .. })
        ));
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status("HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status("HTTP/1.0 404 Not Found"), Some(404));
        assert_eq!(parse_status("HTTP/2 200"), None);
        assert_eq!(parse_status("HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status("garbage"), None);
    }

    #[test]
    fn chunked_bodies() {
        let wire = b"4\r\nxlb_\r\n6;ext=1\r\nbuild\n\r\n0\r\nTrailer: x\r\n\r\n";
        let body = read_chunked(&mut &wire[..]).unwrap();
        assert_eq!(body, b"xlb_build\n");
        let cut = b"4\r\nxl";
        assert!(read_chunked(&mut &cut[..]).is_err());
    }
}
