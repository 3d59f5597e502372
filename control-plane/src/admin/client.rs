//! The admin API's client: what `xlb` uses to talk to the agent. One HTTP/1.1
//! connection per call over the Unix socket, typed by the documents in
//! [`crate::api`].

use std::{
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, body::Bytes, header};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};
use tokio::net::UnixStream;

use super::Cursor;
use crate::api::{
    BackendView, DatapathLbView, DatapathServiceView, DrainRequest, DrainView, ErrorView,
    EventsView, FlowView, HealthCheckView, MaglevView, MapUsageView, ServiceView, SimulateRequest,
    SimulateView, StatsView, StatusView,
};

/// How long a call may take before the client gives up: drains run one
/// reconcile, everything else reads maps, so a slower answer means a stuck agent.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why an admin call failed. Each message says what to check.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("is the agent running? no socket at {}", path.display())]
    NoSocket { path: PathBuf },
    #[error("is the agent running? nothing listens on {} (a stale socket)", path.display())]
    NotListening { path: PathBuf },
    #[error("{} is not a socket: is --admin-socket (XLB_ADMIN_SOCKET) right?", path.display())]
    NotASocket { path: PathBuf },
    #[error(
        "permission denied on {}: run as root or as a member of the socket's group",
        path.display()
    )]
    PermissionDenied { path: PathBuf },
    #[error("connecting to the agent at {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("talking to the agent at {}", path.display())]
    Http {
        path: PathBuf,
        #[source]
        source: hyper::Error,
    },
    #[error("the agent at {} did not answer {route} within {timeout:?}", path.display())]
    Timeout {
        path: PathBuf,
        route: String,
        timeout: Duration,
    },
    /// The agent answered with an error: its [`ErrorView`] text.
    #[error("{message}")]
    Api { status: StatusCode, message: String },
    #[error("reading the agent's answer to {route} (are xlb and the agent the same version?)")]
    Decode {
        route: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ClientError {
    /// The HTTP status of an API error (e.g. 404 for an unknown service).
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// True when no agent answered on the socket: none runs (no socket, or
    /// nobody listening on it), or it went away during the call. What a
    /// restarting agent looks like for a while; not a socket refused for
    /// permission, or an answer. A listener that closes while this call's
    /// connection waits in its backlog resets it, so `connect` itself can
    /// fail that way when the agent stops.
    pub fn agent_away(&self) -> bool {
        match self {
            Self::NoSocket { .. } | Self::NotListening { .. } | Self::Http { .. } => true,
            Self::Connect { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}

/// A client of the admin API on a Unix socket. Cheap to clone; connects per call.
#[derive(Clone, Debug)]
pub struct AdminClient {
    socket: PathBuf,
    timeout: Duration,
}

impl AdminClient {
    /// A client of the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same client with another per-call timeout.
    pub fn with_timeout(self, timeout: Duration) -> Self {
        Self { timeout, ..self }
    }

    /// The socket this client connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET /v1/services`.
    pub async fn services(&self) -> Result<Vec<ServiceView>, ClientError> {
        self.get("/v1/services").await
    }

    /// `GET /v1/backends`.
    pub async fn backends(&self) -> Result<Vec<BackendView>, ClientError> {
        self.get("/v1/backends").await
    }

    /// `GET /v1/health`: every health check the agent runs, how it probes
    /// and why its last probe failed.
    pub async fn health_checks(&self) -> Result<Vec<HealthCheckView>, ClientError> {
        self.get("/v1/health").await
    }

    /// `GET /v1/datapath/lb`: the frontends as the datapath's maps hold
    /// them, and the state no frontend reaches.
    pub async fn datapath_lb(&self) -> Result<DatapathLbView, ClientError> {
        self.get("/v1/datapath/lb").await
    }

    /// `GET /v1/datapath/services`: the frontends as the datapath's maps
    /// hold them.
    pub async fn datapath_services(&self) -> Result<Vec<DatapathServiceView>, ClientError> {
        self.get("/v1/datapath/services").await
    }

    /// `GET /v1/conntrack`, only the flows of `service` when given.
    pub async fn conntrack(&self, service: Option<&str>) -> Result<Vec<FlowView>, ClientError> {
        match service {
            Some(service) => {
                let route = format!("/v1/conntrack?service={}", encode(service, false));
                self.get(&route).await
            }
            None => self.get("/v1/conntrack").await,
        }
    }

    /// `GET /v1/events`: at most `max` sampled flow events, from the oldest
    /// the agent's history holds, waiting up to `wait` for the first.
    pub async fn events(&self, max: usize, wait: Duration) -> Result<EventsView, ClientError> {
        self.events_since(max, wait, 0, None).await
    }

    /// `GET /v1/events?since_ns=&since_seq=&run=`: [`Self::events`], of
    /// those that happened at `since_ns` (`CLOCK_MONOTONIC_COARSE`) or
    /// later, from `cursor` on (the last answer's, [`Cursor::after`]; one
    /// of another run of the agent reads from the oldest event held, the
    /// answer `restarted`).
    pub async fn events_since(
        &self,
        max: usize,
        wait: Duration,
        since_ns: u64,
        cursor: Option<Cursor>,
    ) -> Result<EventsView, ClientError> {
        let mut route = format!(
            "/v1/events?max={max}&wait_ms={}&since_ns={since_ns}",
            wait.as_millis()
        );
        if let Some(Cursor { seq, run }) = cursor {
            route += &format!("&since_seq={seq}");
            if let Some(run) = run {
                route += &format!("&run={run}");
            }
        }
        // The call itself may take `wait`: the client's timeout comes on top.
        let patient = Self {
            socket: self.socket.clone(),
            timeout: self.timeout + wait,
        };
        patient.get(&route).await
    }

    /// `GET /v1/stats`.
    pub async fn stats(&self) -> Result<StatsView, ClientError> {
        self.get("/v1/stats").await
    }

    /// `GET /v1/maps`.
    pub async fn maps(&self) -> Result<Vec<MapUsageView>, ClientError> {
        self.get("/v1/maps").await
    }

    /// `GET /v1/maglev/{service}`.
    pub async fn maglev(&self, service: &str) -> Result<MaglevView, ClientError> {
        self.get(&format!("/v1/maglev/{}", encode(service, true)))
            .await
    }

    /// `GET /v1/status`.
    pub async fn status(&self) -> Result<StatusView, ClientError> {
        self.get("/v1/status").await
    }

    /// `POST /v1/simulate`.
    pub async fn simulate(&self, request: &SimulateRequest) -> Result<SimulateView, ClientError> {
        self.post("/v1/simulate", request).await
    }

    /// `POST /v1/drain`.
    pub async fn drain(&self, request: &DrainRequest) -> Result<DrainView, ClientError> {
        self.post("/v1/drain", request).await
    }

    /// `POST /v1/undrain`.
    pub async fn undrain(&self, request: &DrainRequest) -> Result<DrainView, ClientError> {
        self.post("/v1/undrain", request).await
    }

    async fn get<T: DeserializeOwned>(&self, route: &str) -> Result<T, ClientError> {
        self.call(Method::GET, route, Bytes::new()).await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        route: &str,
        body: &impl Serialize,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|source| ClientError::Decode {
            route: route.to_owned(),
            source,
        })?;
        self.call(Method::POST, route, Bytes::from(body)).await
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        route: &str,
        body: Bytes,
    ) -> Result<T, ClientError> {
        let exchange = self.exchange(method, route, body);
        let (status, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout {
                path: self.socket.clone(),
                route: route.to_owned(),
                timeout: self.timeout,
            })??;
        if status.is_success() {
            serde_json::from_slice(&body).map_err(|source| ClientError::Decode {
                route: route.to_owned(),
                source,
            })
        } else {
            // Every error the server produces is an ErrorView; anything else
            // (a proxy, another server on the socket) is shown as it came.
            let message = match serde_json::from_slice::<ErrorView>(&body) {
                Ok(view) => view.error,
                Err(_) => format!(
                    "the agent answered {status} to {route}: {}",
                    String::from_utf8_lossy(&body).trim()
                ),
            };
            Err(ClientError::Api { status, message })
        }
    }

    async fn exchange(
        &self,
        method: Method,
        route: &str,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), ClientError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|source| self.connect_error(source))?;
        let http_error = |source| ClientError::Http {
            path: self.socket.clone(),
            source,
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(http_error)?;
        // The connection future does the I/O; it ends when the response is
        // read and the sender dropped.
        let driver = tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection closed with an error");
            }
        });
        let request = Request::builder()
            .method(method)
            .uri(route)
            // HTTP/1.1 requires Host; a Unix socket has no host name.
            .header(header::HOST, "localhost")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .expect("a request from a valid method, route and headers");
        let response = sender.send_request(request).await.map_err(http_error)?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(http_error)?
            .to_bytes();
        drop(sender);
        driver.abort();
        Ok((status, body))
    }

    fn connect_error(&self, source: io::Error) -> ClientError {
        let path = self.socket.clone();
        match source.kind() {
            io::ErrorKind::NotFound => ClientError::NoSocket { path },
            io::ErrorKind::PermissionDenied => ClientError::PermissionDenied { path },
            // connect(2) answers a file that is not a socket as one nobody
            // listens on.
            io::ErrorKind::ConnectionRefused if !is_socket(&path) => {
                ClientError::NotASocket { path }
            }
            io::ErrorKind::ConnectionRefused => ClientError::NotListening { path },
            io::ErrorKind::NotADirectory => ClientError::NotASocket { path },
            _ => ClientError::Connect { path, source },
        }
    }
}

fn is_socket(path: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Percent-encodes `text` for a URL path (`keep_slash`) or a query value:
/// unreserved characters (RFC 3986 §2.3) and `:` stay, so a service name
/// such as `default/web:http` stays readable in logs.
fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        let keep = byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'.' | b'_' | b'~' | b':')
            || (keep_slash && byte == b'/');
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_keeps_service_names_readable() {
        assert_eq!(encode("default/web:http", true), "default/web:http");
        assert_eq!(encode("default/web:http", false), "default%2Fweb:http");
        assert_eq!(encode("a b&c=d%", true), "a%20b%26c%3Dd%25");
        assert_eq!(encode("é", true), "%C3%A9");
    }

    #[tokio::test]
    async fn missing_socket_says_whether_the_agent_runs() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        let error = AdminClient::new(&path)
            .status()
            .await
            .expect_err("no socket, no answer");
        assert_eq!(
            error.to_string(),
            format!("is the agent running? no socket at {}", path.display())
        );
    }

    #[test]
    fn a_connection_the_stopping_agent_reset_is_the_agent_away() {
        let connect = |kind| ClientError::Connect {
            path: PathBuf::from("/run/xlb/admin.sock"),
            source: io::Error::from(kind),
        };
        assert!(connect(io::ErrorKind::ConnectionReset).agent_away());
        assert!(connect(io::ErrorKind::ConnectionAborted).agent_away());
        assert!(!connect(io::ErrorKind::InvalidInput).agent_away());
    }

    #[tokio::test]
    async fn stale_socket_is_called_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("admin.sock");
        // A socket file nobody listens on, as a SIGKILLed agent leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        let error = AdminClient::new(&path)
            .status()
            .await
            .expect_err("nothing listens");
        assert!(
            matches!(error, ClientError::NotListening { .. }),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn a_path_that_is_not_a_socket_is_named_as_such() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("regular");
        std::fs::write(&file, "").expect("a regular file");
        for path in [file.clone(), dir.path().to_owned(), file.join("below")] {
            let error = AdminClient::new(&path)
                .status()
                .await
                .expect_err("not a socket");
            assert!(matches!(error, ClientError::NotASocket { .. }), "{error:?}");
            assert!(error.to_string().contains("is not a socket"), "{error}");
        }
    }
}
