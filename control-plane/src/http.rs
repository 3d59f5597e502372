//! Serving a router over HTTP/1 with a bound on reading each request's head:
//! the one way every listener of the agent serves (the admin socket,
//! `/metrics` and `/healthz`, the healthCheckNodePorts).
//!
//! `axum::serve` has no such bound: a client that connects and sends half a
//! request, or nothing, holds its connection (a task and a file descriptor)
//! for ever, and a graceful shutdown waits for it. On the TCP listeners anyone
//! who reaches the port could open them by the thousand until the agent runs
//! out of descriptors, and a healthCheckNodePort that cannot accept reads as a
//! node without endpoints to the load balancer probing it. hyper's
//! `header_read_timeout` closes such a connection, and a kept-alive one that
//! sends no next request, once the bound passes. Answers are not bounded
//! (the admin API's `/v1/events` waits by design).

use std::{future::Future, time::Duration};

use axum::{Router, serve::Listener};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};

/// How long a client has to send a request's head (and the admin API, then,
/// its body) before its connection is closed.
pub const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` until `shutdown` completes, each request's
/// head bounded by `head_timeout`; then stops accepting, lets the requests
/// in flight finish and closes idle connections. `server` names the
/// listener in the logs.
pub async fn serve<L: Listener>(
    mut listener: L,
    router: Router,
    head_timeout: Duration,
    shutdown: impl Future<Output = ()>,
    server: &'static str,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(head_timeout);
    let connections = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        // Accept errors (a full file table, say) are logged and retried by
        // axum's `Listener`, as `axum::serve` does.
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = connections.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(server, %error, "connection closed with an error");
            }
        });
    }
    drop(listener);
    connections.shutdown().await;
}

#[cfg(test)]
mod tests {
    use axum::routing::get;
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{UnixListener, UnixStream},
        sync::oneshot,
        time::timeout,
    };

    use super::*;

    /// What the server sent on a connection that was given `request`, read
    /// until it closed the connection (which must come within `within`).
    async fn answer_then_close(path: &std::path::Path, request: &str, within: Duration) -> String {
        let mut stream = UnixStream::connect(path).await.expect("connect");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        timeout(within, stream.read_to_end(&mut out))
            .await
            .unwrap_or_else(|_| panic!("{request:?}: connection still open after {within:?}"))
            .expect("read");
        String::from_utf8(out).expect("UTF-8")
    }

    // A Unix socket rather than TCP: the bound is the listener's kind's
    // business no more than the router's, and a test opens no port.
    #[tokio::test]
    async fn a_head_that_does_not_arrive_in_time_closes_its_connection() {
        const BOUND: Duration = Duration::from_millis(200);
        let within = BOUND + Duration::from_secs(5);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("http.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let router = Router::new().route("/", get(|| async { "served" }));
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            router,
            BOUND,
            async {
                let _ = stopped.await;
            },
            "test",
        ));

        for partial in ["", "GET / HTTP/1.1\r\nHost: x\r\n"] {
            assert_eq!(answer_then_close(&path, partial, within).await, "");
        }
        // A whole request is answered; the connection, kept alive, is then
        // closed when no next request comes.
        let answer = answer_then_close(&path, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", within).await;
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("served"), "{answer}");

        stop.send(()).expect("server running");
        timeout(within, server)
            .await
            .expect("stops")
            .expect("joins");
    }
}
