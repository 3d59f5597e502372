//! One health probe: a TCP connect, or an HTTP/1.1 GET whose status line
//! says 2xx or 3xx.

use std::{error::Error as _, io, net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpSocket, TcpStream},
    time,
};

use super::tunnel::NoTunnel;
use crate::model::Probe;

/// Where one probe goes: an address, and the mark (`SO_MARK`) of its
/// socket when it goes through the DSR tunnel ([`super::tunnel`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProbeTo {
    pub addr: SocketAddr,
    pub mark: Option<u32>,
}

impl From<SocketAddr> for ProbeTo {
    fn from(addr: SocketAddr) -> Self {
        Self { addr, mark: None }
    }
}

/// Bytes of response the HTTP probe reads at most: the final status line
/// plus any 1xx interim responses before it. A healthy server's first line
/// is a few dozen bytes; the cap keeps a misbehaving one from feeding the
/// probe forever within its timeout.
const MAX_RESPONSE_HEAD: u64 = 8 * 1024;

/// Characters of an unparsable status line kept in the error.
const MAX_QUOTED_LINE: usize = 80;

/// Why a probe failed. [`ProbeError::reason`] renders it with its causes on
/// one line, as status shows it.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("no answer from {addr} within {timeout:?}")]
    Timeout { addr: SocketAddr, timeout: Duration },
    #[error("backend {backend} cannot be probed through the DSR tunnel: {reason}")]
    NoTunnel {
        backend: SocketAddr,
        reason: NoTunnel,
    },
    #[error("marking the probe's socket to {addr} with {mark:#010x} (SO_MARK needs CAP_NET_ADMIN)")]
    Mark {
        addr: SocketAddr,
        mark: u32,
        #[source]
        source: io::Error,
    },
    #[error(
        "this host cannot reach the VIP {addr} (no route, or the route's next hop does not \
         answer): a probe through the DSR tunnel leaves by the route to the VIP, which must go \
         out an --interface to a next hop that answers (as a default route toward the upstream \
         router does), or run the agent with --dsr-health-probes direct"
    )]
    NoRouteToVip {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connecting to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("sending the request to {addr}")]
    Send {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("reading the response from {addr}")]
    Receive {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("{addr} closed the connection before a complete status line (received {received:?})")]
    Closed { addr: SocketAddr, received: String },
    #[error("{addr} answered {line:?}, which is not an HTTP/1.x status line")]
    Malformed { addr: SocketAddr, line: String },
    #[error("{addr} sent more than {limit} bytes without a final status line")]
    TooLong { addr: SocketAddr, limit: u64 },
    #[error("{addr} answered HTTP status {code}; a healthy backend answers 2xx or 3xx")]
    Status { addr: SocketAddr, code: u16 },
    #[error(
        "path {path:?} is not an origin-form request target: it must start with `/` and hold no \
         spaces or control characters"
    )]
    InvalidPath { path: String },
}

impl ProbeError {
    /// The error and its causes on one line, e.g. `connecting to
    /// 198.18.0.7:80: Connection refused (os error 111)`.
    pub fn reason(&self) -> String {
        let mut reason = self.to_string();
        let mut source = self.source();
        while let Some(cause) = source {
            reason.push_str(": ");
            reason.push_str(&cause.to_string());
            source = cause.source();
        }
        reason
    }
}

/// Runs `probe` against `to`, all of it (connect, request, status line)
/// within `timeout`, from a socket with `to.mark` if set.
///
/// - [`Probe::Tcp`] passes when a TCP connection to `to.addr` completes;
///   the connection is closed at once.
/// - [`Probe::Http`] sends `GET path HTTP/1.1` with `Host: addr` and
///   `Connection: close`, and passes when the final status line carries a
///   2xx or 3xx code. 1xx interim responses are skipped; the body is never
///   read.
pub async fn probe(probe: &Probe, to: ProbeTo, timeout: Duration) -> Result<(), ProbeError> {
    let addr = to.addr;
    let attempt = async {
        match probe {
            Probe::Tcp => {
                connect(to).await?;
                Ok(())
            }
            Probe::Http { path } => http_get(to, path).await,
        }
    };
    match time::timeout(timeout, attempt).await {
        Ok(result) => result,
        Err(_elapsed) => Err(ProbeError::Timeout { addr, timeout }),
    }
}

/// The connection a probe makes: to `to.addr`, from a socket of its own
/// marked (`SO_MARK`) with `to.mark` if set — each probe, also of backends
/// behind one VIP, has its own port and its own mark. Public so that a test
/// can read the mark back from the socket [`probe`] uses.
pub async fn connect(to: ProbeTo) -> Result<TcpStream, ProbeError> {
    let addr = to.addr;
    let connect_err = |source| ProbeError::Connect { addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(connect_err)?;
    if let Some(mark) = to.mark {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Mark, &mark).map_err(
            |errno| ProbeError::Mark {
                addr,
                mark,
                source: errno.into(),
            },
        )?;
    }
    socket.connect(addr).await.map_err(|source| {
        let unreachable = matches!(
            source.kind(),
            io::ErrorKind::NetworkUnreachable | io::ErrorKind::HostUnreachable
        );
        if to.mark.is_some() && unreachable {
            ProbeError::NoRouteToVip { addr, source }
        } else {
            connect_err(source)
        }
    })
}

async fn http_get(to: ProbeTo, path: &str) -> Result<(), ProbeError> {
    let addr = to.addr;
    if !is_origin_form(path) {
        return Err(ProbeError::InvalidPath {
            path: path.to_owned(),
        });
    }
    let mut stream = connect(to).await?;
    // Host is mandatory in HTTP/1.1 (RFC 9112 §3.2); `SocketAddr`'s Display
    // puts an IPv6 address in brackets, as `uri-host` needs (RFC 3986 §3.2.2).
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: xlb-health-check\r\nAccept: */*\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|source| ProbeError::Send { addr, source })?;
    let code = read_status(BufReader::new(stream), addr).await?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(ProbeError::Status { addr, code })
    }
}

/// An origin-form request target (RFC 9112 §3.2.1): an absolute path,
/// optionally with a query. Anything with a space or a control character
/// would break the request line, so it is refused rather than sent.
fn is_origin_form(path: &str) -> bool {
    path.starts_with('/') && path.bytes().all(|b| b.is_ascii_graphic())
}

/// Reads the final status code of a response, skipping 1xx interim
/// responses: RFC 9110 §15.2 has a client accept any number of them before
/// the final one. 101 is final (it only answers an Upgrade, which the probe
/// never asks for), so it is returned, and fails the probe as not 2xx/3xx.
async fn read_status<R: AsyncBufRead + Unpin>(
    reader: R,
    addr: SocketAddr,
) -> Result<u16, ProbeError> {
    let mut reader = reader.take(MAX_RESPONSE_HEAD);
    let mut line = Vec::new();
    loop {
        read_line(&mut reader, &mut line, addr).await?;
        let code = parse_status_line(&line).ok_or_else(|| ProbeError::Malformed {
            addr,
            line: quote(&line),
        })?;
        if !(100..200).contains(&code) || code == 101 {
            return Ok(code);
        }
        // An interim response's header section ends at the first empty line.
        loop {
            read_line(&mut reader, &mut line, addr).await?;
            if line.is_empty() {
                break;
            }
        }
    }
}

/// Reads one line into `line`, without its ending. RFC 9112 §2.2 lets a
/// recipient take a bare LF as a line end, so only the LF is required.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut tokio::io::Take<R>,
    line: &mut Vec<u8>,
    addr: SocketAddr,
) -> Result<(), ProbeError> {
    line.clear();
    reader
        .read_until(b'\n', line)
        .await
        .map_err(|source| ProbeError::Receive { addr, source })?;
    if line.last() != Some(&b'\n') {
        return Err(if reader.limit() == 0 {
            ProbeError::TooLong {
                addr,
                limit: MAX_RESPONSE_HEAD,
            }
        } else {
            ProbeError::Closed {
                addr,
                received: quote(line),
            }
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(())
}

/// The status code of `status-line = HTTP-version SP status-code SP
/// [ reason-phrase ]` (RFC 9112 §4), for HTTP/1.x. The SP before an empty
/// reason phrase is optional here: some servers leave it out, and the code
/// is all the probe needs.
fn parse_status_line(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let (minor, rest) = rest.split_first()?;
    let rest = rest.strip_prefix(b" ").filter(|_| minor.is_ascii_digit())?;
    let (digits, rest) = rest.split_at_checked(3)?;
    if !digits.iter().all(u8::is_ascii_digit) || !(rest.is_empty() || rest.starts_with(b" ")) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |code, digit| code * 10 + u16::from(digit - b'0'));
    // Status codes are 100-599 (RFC 9110 §15); three digits below 100 are
    // not a status.
    (code >= 100).then_some(code)
}

/// A received line, lossily decoded and cut short, for an error message.
fn quote(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .chars()
        .take(MAX_QUOTED_LINE)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDR: SocketAddr = SocketAddr::new(
        std::net::IpAddr::V4(std::net::Ipv4Addr::new(198, 18, 0, 7)),
        8080,
    );

    #[test]
    fn parses_http1_status_lines() {
        assert_eq!(parse_status_line(b"HTTP/1.1 200 OK"), Some(200));
        assert_eq!(parse_status_line(b"HTTP/1.0 302 Found"), Some(302));
        assert_eq!(parse_status_line(b"HTTP/1.1 503 "), Some(503));
        assert_eq!(parse_status_line(b"HTTP/1.1 204"), Some(204));
        assert_eq!(parse_status_line(b"HTTP/1.1 2000 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 20 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/1.1 099 Low"), None);
        assert_eq!(parse_status_line(b"HTTP/1.x 200 OK"), None);
        assert_eq!(parse_status_line(b"HTTP/2 200"), None);
        assert_eq!(parse_status_line(b"SSH-2.0-OpenSSH_9.6"), None);
        assert_eq!(parse_status_line(b""), None);
    }

    #[test]
    fn accepts_only_origin_form_paths() {
        assert!(is_origin_form("/"));
        assert!(is_origin_form("/healthz?verbose=1"));
        assert!(!is_origin_form("healthz"));
        assert!(!is_origin_form("/a b"));
        assert!(!is_origin_form("/a\r\nX-Injected: 1"));
        assert!(!is_origin_form(""));
    }

    #[tokio::test]
    async fn skips_interim_responses() {
        let response: &[u8] =
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 204 No Content\r\n";
        assert_eq!(read_status(response, ADDR).await.ok(), Some(204));
    }

    #[tokio::test]
    async fn takes_a_bare_lf_as_line_end() {
        let response: &[u8] = b"HTTP/1.0 301 Moved\n";
        assert_eq!(read_status(response, ADDR).await.ok(), Some(301));
    }

    #[tokio::test]
    async fn switching_protocols_is_final() {
        let response: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\n\r\n";
        assert_eq!(read_status(response, ADDR).await.ok(), Some(101));
    }

    #[tokio::test]
    async fn reports_what_a_non_http_peer_sent() {
        let response: &[u8] = b"SSH-2.0-OpenSSH_9.6\r\n";
        let error = read_status(response, ADDR).await.unwrap_err();
        assert!(
            matches!(&error, ProbeError::Malformed { line, .. } if line == "SSH-2.0-OpenSSH_9.6")
        );
        assert!(error.reason().contains("not an HTTP/1.x status line"));
    }

    #[tokio::test]
    async fn a_cut_status_line_is_closed() {
        let response: &[u8] = b"HTTP/1.1 200";
        let error = read_status(response, ADDR).await.unwrap_err();
        assert!(
            matches!(&error, ProbeError::Closed { received, .. } if received == "HTTP/1.1 200")
        );
    }

    #[tokio::test]
    async fn endless_interim_headers_are_cut_off() {
        let mut response = b"HTTP/1.1 100 Continue\r\n".to_vec();
        while response.len() as u64 <= MAX_RESPONSE_HEAD {
            response.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
        }
        let error = read_status(response.as_slice(), ADDR).await.unwrap_err();
        assert!(matches!(error, ProbeError::TooLong { .. }), "{error:?}");
    }

    #[test]
    fn reason_carries_the_cause() {
        let error = ProbeError::Connect {
            addr: ADDR,
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert_eq!(
            error.reason(),
            format!(
                "connecting to 198.18.0.7:8080: {}",
                io::Error::from(io::ErrorKind::ConnectionRefused)
            )
        );
    }
}
