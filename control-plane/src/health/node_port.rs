//! `healthCheckNodePort`s: for each Service with `externalTrafficPolicy:
//! Local`, an HTTP server on every node address at the Service's health
//! check port, answering as kube-proxy does — 200 while this node has a ready
//! endpoint of the Service (and the agent programs the datapath), 503
//! otherwise — so the external load balancer sends traffic only to nodes
//! that will not drop it.
//!
//! [`HealthCheckNodePorts::reconcile`] makes the set of listeners follow the
//! translation: a port that appears is bound, one that goes away is closed,
//! and one that stays keeps its socket and only changes its answer.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    net::{IpAddr, SocketAddr},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use tokio::{
    net::TcpListener,
    sync::{oneshot, watch},
    task::JoinHandle,
};

use crate::{http::REQUEST_READ_TIMEOUT, source::kube::HealthCheckNodePort};

/// What one health check node port answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortAnswer {
    pub namespace: String,
    pub name: String,
    /// This node's ready endpoints of the Service.
    pub local_endpoints: usize,
    /// kube-proxy's `serviceProxyHealthy`: the agent's last sync of the
    /// datapath succeeded. Without it the node fails every check, as its
    /// forwarding may not match the cluster.
    pub proxy_healthy: bool,
}

impl PortAnswer {
    /// 200 with local endpoints and a healthy proxy, 503 otherwise.
    pub fn status(&self) -> StatusCode {
        if self.local_endpoints > 0 && self.proxy_healthy {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }

    /// kube-proxy's JSON body.
    pub fn body(&self) -> String {
        serde_json::json!({
            "service": { "namespace": self.namespace, "name": self.name },
            "localEndpoints": self.local_endpoints,
            "serviceProxyHealthy": self.proxy_healthy,
        })
        .to_string()
    }
}

/// A listener that could not be opened; it is tried again on the next
/// [`HealthCheckNodePorts::reconcile`].
#[derive(Debug, thiserror::Error)]
#[error("healthCheckNodePort of {service}: listening on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    /// `namespace/name`.
    pub service: String,
    #[source]
    pub source: io::Error,
}

/// The open health check node ports, by the address and port asked for.
#[derive(Debug, Default)]
pub struct HealthCheckNodePorts {
    listeners: BTreeMap<SocketAddr, Listener>,
}

#[derive(Debug)]
struct Listener {
    /// The address bound (differs from the key for port 0).
    bound: SocketAddr,
    answer: watch::Sender<PortAnswer>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl HealthCheckNodePorts {
    pub fn new() -> Self {
        Self::default()
    }

    /// Listens on every address of `addresses` at the port of every entry of
    /// `ports`, and nowhere else. Two Services with the same port (which the
    /// API server does not allow) share nothing: the first in order keeps
    /// it. Returns the listeners that could not be opened; the others are
    /// serving when this returns, and the closed ones no longer accept.
    pub async fn reconcile(
        &mut self,
        addresses: &[IpAddr],
        ports: &[HealthCheckNodePort],
        proxy_healthy: bool,
    ) -> Vec<ListenError> {
        let mut wanted: BTreeMap<SocketAddr, PortAnswer> = BTreeMap::new();
        let mut taken = BTreeSet::new();
        for port in ports {
            if !taken.insert(port.port) {
                tracing::warn!(
                    service = format!("{}/{}", port.namespace, port.name),
                    port = port.port,
                    "healthCheckNodePort already used by another Service; not served"
                );
                continue;
            }
            for &addr in addresses {
                wanted.insert(
                    SocketAddr::new(addr, port.port),
                    PortAnswer {
                        namespace: port.namespace.clone(),
                        name: port.name.clone(),
                        local_endpoints: port.local_endpoints,
                        proxy_healthy,
                    },
                );
            }
        }

        let gone: Vec<SocketAddr> = self
            .listeners
            .keys()
            .filter(|addr| !wanted.contains_key(addr))
            .copied()
            .collect();
        for addr in gone {
            if let Some(listener) = self.listeners.remove(&addr) {
                listener.close().await;
                tracing::info!(%addr, "healthCheckNodePort closed");
            }
        }

        let mut errors = Vec::new();
        for (addr, answer) in wanted {
            if let Some(listener) = self.listeners.get(&addr) {
                listener.answer.send_if_modified(|current| {
                    let changed = *current != answer;
                    *current = answer;
                    changed
                });
                continue;
            }
            let service = format!("{}/{}", answer.namespace, answer.name);
            match Listener::open(addr, answer).await {
                Ok(listener) => {
                    tracing::info!(addr = %listener.bound, %service, "healthCheckNodePort listening");
                    self.listeners.insert(addr, listener);
                }
                Err(source) => errors.push(ListenError {
                    addr,
                    service,
                    source,
                }),
            }
        }
        errors
    }

    /// The address actually bound for `addr` (asked for with port 0, the
    /// kernel picks one), while it is open.
    pub fn local_addr(&self, addr: SocketAddr) -> Option<SocketAddr> {
        self.listeners.get(&addr).map(|l| l.bound)
    }

    /// Closes every listener.
    pub async fn close(&mut self) {
        for (_, listener) in std::mem::take(&mut self.listeners) {
            listener.close().await;
        }
    }
}

impl Listener {
    async fn open(addr: SocketAddr, answer: PortAnswer) -> io::Result<Self> {
        let socket = TcpListener::bind(addr).await?;
        let bound = socket.local_addr()?;
        let (answer, answers) = watch::channel(answer);
        let (stop, stopped) = oneshot::channel::<()>();
        let router = Router::new().fallback(respond).with_state(answers);
        // Each request's head bounded in time (`crate::http`): a load
        // balancer's probe sends a whole one at once.
        let task = tokio::spawn(crate::http::serve(
            socket,
            router,
            REQUEST_READ_TIMEOUT,
            async {
                let _ = stopped.await;
            },
            "healthCheckNodePort",
        ));
        Ok(Self {
            bound,
            answer,
            stop: Some(stop),
            task,
        })
    }

    /// Stops accepting and waits until the socket is closed and the
    /// requests in flight are answered.
    async fn close(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Dropped without close (the agent stopping): stop serving anyway.
        self.task.abort();
    }
}

/// kube-proxy's header that tells a load balancer weighing nodes by their
/// health checks (GCP's `WEIGHTED_MAGLEV`) how many local endpoints this
/// node has (header names are case-insensitive; `from_static` takes them in
/// lower case).
const ENDPOINT_WEIGHT: &str = "x-load-balancing-endpoint-weight";

/// Any method, any path: the answer of the port (kube-proxy's handler does
/// not look at the request either).
async fn respond(State(answers): State<watch::Receiver<PortAnswer>>) -> Response {
    let answer = answers.borrow().clone();
    (
        answer.status(),
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
            (
                header::HeaderName::from_static(ENDPOINT_WEIGHT),
                answer.local_endpoints.to_string(),
            ),
        ],
        answer.body(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::{BodyExt as _, Empty};
    use hyper::body::Bytes;

    use super::*;

    fn port(name: &str, port: u16, local_endpoints: usize) -> HealthCheckNodePort {
        HealthCheckNodePort {
            namespace: "shop".to_owned(),
            name: name.to_owned(),
            port,
            local_endpoints,
        }
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A GET over HTTP/1.1: status, `X-Content-Type-Options` and the
    /// endpoint weight, body.
    async fn get(addr: SocketAddr) -> io::Result<(u16, [String; 2], serde_json::Value)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                .await
                .map_err(io::Error::other)?;
        tokio::spawn(connection);
        let request = hyper::Request::get("/healthz")
            .header(header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(io::Error::other)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(io::Error::other)?;
        let status = response.status().as_u16();
        let header_value = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let headers = [
            header_value(header::X_CONTENT_TYPE_OPTIONS.as_str()),
            header_value(ENDPOINT_WEIGHT),
        ];
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(io::Error::other)?
            .to_bytes();
        let json = serde_json::from_slice(&body).map_err(io::Error::other)?;
        Ok((status, headers, json))
    }

    fn headers(weight: usize) -> [String; 2] {
        ["nosniff".to_owned(), weight.to_string()]
    }

    fn body(name: &str, local_endpoints: usize, healthy: bool) -> serde_json::Value {
        serde_json::json!({
            "service": { "namespace": "shop", "name": name },
            "localEndpoints": local_endpoints,
            "serviceProxyHealthy": healthy,
        })
    }

    #[tokio::test]
    async fn answers_200_with_local_endpoints_and_503_without() {
        let mut ports = HealthCheckNodePorts::new();
        let asked = SocketAddr::new(LOOPBACK, 0);
        let errors = ports
            .reconcile(&[LOOPBACK], &[port("web", 0, 2)], true)
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        let bound = ports.local_addr(asked).expect("listening");
        assert_ne!(bound.port(), 0);
        assert_eq!(
            get(bound).await.expect("GET"),
            (200, headers(2), body("web", 2, true))
        );

        // The pods left this node: same socket, another answer.
        let errors = ports
            .reconcile(&[LOOPBACK], &[port("web", 0, 0)], true)
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ports.local_addr(asked), Some(bound));
        assert_eq!(
            get(bound).await.expect("GET"),
            (503, headers(0), body("web", 0, true))
        );

        // Endpoints, but the agent's last sync failed.
        ports
            .reconcile(&[LOOPBACK], &[port("web", 0, 1)], false)
            .await;
        assert_eq!(
            get(bound).await.expect("GET"),
            (503, headers(1), body("web", 1, false))
        );
        ports.close().await;
    }

    #[tokio::test]
    async fn the_port_closes_when_its_service_goes_away() {
        let mut ports = HealthCheckNodePorts::new();
        let asked = SocketAddr::new(LOOPBACK, 0);
        ports
            .reconcile(&[LOOPBACK], &[port("web", 0, 1)], true)
            .await;
        let bound = ports.local_addr(asked).expect("listening");
        // A kept-alive connection from before must not hold the port open.
        let idle = tokio::net::TcpStream::connect(bound)
            .await
            .expect("connect");
        assert_eq!(get(bound).await.expect("GET").0, 200);

        let closing = ports.reconcile(&[LOOPBACK], &[], true);
        let errors = tokio::time::timeout(Duration::from_secs(10), closing)
            .await
            .expect("closed in time");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(ports.local_addr(asked), None);
        let refused = tokio::net::TcpStream::connect(bound)
            .await
            .expect_err("the port is closed");
        assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
        drop(idle);
    }

    #[tokio::test]
    async fn a_port_claimed_twice_serves_the_first_service() {
        let mut ports = HealthCheckNodePorts::new();
        // A fixed port is needed to collide: take a free one from the kernel.
        let free = std::net::TcpListener::bind((LOOPBACK, 0))
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let errors = ports
            .reconcile(
                &[LOOPBACK],
                &[port("first", free, 1), port("second", free, 3)],
                true,
            )
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        let (status, _, json) = get(SocketAddr::new(LOOPBACK, free)).await.expect("GET");
        assert_eq!((status, json), (200, body("first", 1, true)));
        ports.close().await;
    }

    #[tokio::test]
    async fn a_port_that_cannot_be_bound_is_reported_and_retried() {
        let taken = std::net::TcpListener::bind((LOOPBACK, 0)).expect("bind");
        let busy = taken.local_addr().expect("addr");
        let mut ports = HealthCheckNodePorts::new();
        let errors = ports
            .reconcile(&[LOOPBACK], &[port("web", busy.port(), 1)], true)
            .await;
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].addr, busy);
        assert_eq!(errors[0].source.kind(), io::ErrorKind::AddrInUse);
        assert!(
            errors[0]
                .to_string()
                .starts_with("healthCheckNodePort of shop/web: listening on"),
            "{}",
            errors[0]
        );
        drop(taken);
        let errors = ports
            .reconcile(&[LOOPBACK], &[port("web", busy.port(), 1)], true)
            .await;
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(get(busy).await.expect("GET").0, 200);
        ports.close().await;
    }
}
