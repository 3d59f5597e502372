//! The admin API's server: axum routes over a Unix socket, answered by an
//! [`Admin`].
//!
//! Routes (all JSON; errors are an [`ErrorView`] with a 4xx/5xx status):
//!
//! | Method | Path                       | Body / query                                     | Answer                  |
//! |--------|----------------------------|--------------------------------------------------|-------------------------|
//! | GET    | `/v1/services`             |                                                  | `[ServiceView]`         |
//! | GET    | `/v1/backends`             |                                                  | `[BackendView]`         |
//! | GET    | `/v1/datapath/lb`          |                                                  | `DatapathLbView`        |
//! | GET    | `/v1/datapath/services`    |                                                  | `[DatapathServiceView]` |
//! | GET    | `/v1/conntrack`            | `?service=NAME` (optional)                       | `[FlowView]`            |
//! | GET    | `/v1/stats`                |                                                  | `StatsView`             |
//! | GET    | `/v1/maps`                 |                                                  | `[MapUsageView]`        |
//! | GET    | `/v1/maglev/{service}`     |                                                  | `MaglevView`            |
//! | GET    | `/v1/status`               |                                                  | `StatusView`            |
//! | GET    | `/v1/health`               |                                                  | `[HealthCheckView]`     |
//! | GET    | `/v1/events`               | `?max=N&wait_ms=T&since_ns=NS&since_seq=S&run=R` | `EventsView`            |
//! | POST   | `/v1/simulate`             | `SimulateRequest`                                | `SimulateView`          |
//! | POST   | `/v1/drain`, `/v1/undrain` | `DrainRequest`                                   | `DrainView`             |
//!
//! `/v1/services` and `/v1/backends` answer from the agent's model;
//! `/v1/datapath/lb` reads the datapath's maps, so it also shows what an
//! earlier agent pinned and this one has not replaced (yet), and what no
//! frontend reaches. `/v1/datapath/services` is its `services` alone (what
//! the route answered before the rest was added).
//!
//! `/v1/events` reads the agent's history of recent flow events
//! ([`super::EventHistory`]) from the reader's cursor, `since_seq` (the
//! `next_seq` of its last answer; without it, from the oldest event held),
//! so every reader gets every event; `missed` counts those that left the
//! history before the reader got to them. `run` is the run of the answer
//! the cursor came from: a cursor of another run (the agent restarted)
//! reads from the oldest event held, answered `restarted`. `since_ns`
//! leaves out events from before then (where a new reader starts). It waits
//! up to `wait_ms` for the first event, woken when the agent adds events;
//! at most [`MAX_EVENT_READERS`] wait at once (429 for one more). Each
//! answer carries the datapath's count of events lost to its full ring
//! (`lost_ring_full`). Earlier agents answered a bare `[FlowEventView]`,
//! events taken off the ring and so shared out between readers: the answer
//! is now an object, which an earlier `xlb observe` cannot read. A drain
//! answers the services whose backend changed, none when it was drained
//! already.
//!
//! What a route does not take is refused rather than ignored (400): a query
//! parameter or body field it does not have, a parameter given twice, a
//! parameter or path that is not UTF-8 once percent-decoded. A request's
//! head, and then its body, must arrive within [`REQUEST_READ_TIMEOUT`]: a
//! head that does not has its connection closed, a body that does not gets
//! 408. Answers take as long as they take (`/v1/events` waits).
//!
//! `{service}` in the Maglev route is the rest of the path, so a Kubernetes
//! service port name keeps its `/` (`/v1/maglev/default/web:http`); other
//! bytes outside `[A-Za-z0-9-._~:/]` are percent-encoded by the client.

use std::{
    future::Future,
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{
    Extension, Json, Router,
    extract::{
        FromRequest, FromRequestParts, Path as UrlPath, Query, Request, State,
        rejection::{JsonRejection, PathRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use nix::unistd::{Gid, Group};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{
    net::{UnixListener, UnixStream},
    sync::{Semaphore, watch},
};

use super::{Admin, AdminError, EventsRead};
use crate::api::{DrainRequest, ErrorView, SimulateRequest};

/// The admin socket's mode: owner and group may connect, others may not
/// (connecting to a Unix socket needs write permission on its file).
pub const SOCKET_MODE: u32 = 0o660;

/// Why the admin server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket's directory could not be created.
    #[error("creating the admin socket's directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something that is not a socket sits where the socket goes; it is left alone.
    #[error("{path} exists and is not a socket; remove it or choose another --admin-socket")]
    NotASocket { path: PathBuf },
    /// Another process answers on the socket (a second agent?).
    #[error("another process is serving on {path}; stop it or choose another --admin-socket")]
    InUse { path: PathBuf },
    /// A stale socket from an earlier run could not be removed.
    #[error("removing the stale admin socket {path}")]
    RemoveStale {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("binding the admin socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("setting mode 0660 on the admin socket {path}")]
    Mode {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("giving the admin socket {path} to group {gid}")]
    Chown {
        path: PathBuf,
        gid: Gid,
        #[source]
        source: nix::Error,
    },
}

/// A group name or ID that names no group.
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("admin group {0:?}: no such group (give a group name or a numeric ID)")]
    Unknown(String),
    /// `(gid_t)-1`, which chown(2) reads as "leave the group as it is": the
    /// socket would silently keep root's group.
    #[error(
        "admin group {0}: not a group ID (chown(2) takes it, as -1, for \"leave the group as \
         it is\"); give a group name or another numeric ID"
    )]
    NoChange(u32),
    #[error("admin group {name:?}: looking it up failed")]
    Lookup {
        name: String,
        #[source]
        source: nix::Error,
    },
}

/// Resolves `--admin-group`: a numeric ID is taken as is (it need not have a
/// name), but for `(gid_t)-1`; anything else is looked up in the group
/// database.
pub fn resolve_group(name_or_id: &str) -> Result<Gid, GroupError> {
    if let Ok(id) = name_or_id.parse::<u32>() {
        if id == u32::MAX {
            return Err(GroupError::NoChange(id));
        }
        return Ok(Gid::from_raw(id));
    }
    match Group::from_name(name_or_id) {
        Ok(Some(group)) => Ok(group.gid),
        Ok(None) => Err(GroupError::Unknown(name_or_id.to_owned())),
        Err(source) => Err(GroupError::Lookup {
            name: name_or_id.to_owned(),
            source,
        }),
    }
}

/// How long a client has to send a request's head, and then its body
/// (`crate::http`). The answer is not bounded: `/v1/events` may take
/// [`MAX_EVENTS_WAIT`] to answer.
pub use crate::http::REQUEST_READ_TIMEOUT;

/// A bound admin socket, not yet serving. Binding first lets the agent fail
/// at start-up (and tests know the socket is ready) before anything is served.
#[derive(Debug)]
pub struct AdminServer {
    listener: UnixListener,
    socket: SocketFile,
    read_timeout: Duration,
}

/// The socket's file, removed when the server is dropped: after serving, or
/// unserved when the agent fails to start after binding it, which would
/// otherwise leave a stale socket for `xlb` to find.
#[derive(Debug)]
struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.0)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(socket = %self.0.display(), %error, "could not remove the admin socket");
        }
    }
}

impl AdminServer {
    /// Binds `socket` with mode 0660, owned by `group` when given (else by
    /// the process's group). A stale socket left by an earlier run is
    /// replaced; a live one (another agent answering) or a non-socket file
    /// is an error, never removed.
    pub async fn bind(socket: &Path, group: Option<Gid>) -> Result<Self, ServeError> {
        let path = socket.to_path_buf();
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|source| ServeError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        remove_stale(socket).await?;
        let listener = UnixListener::bind(socket).map_err(|source| ServeError::Bind {
            path: path.clone(),
            source,
        })?;
        // From here on the file is ours: removed if a step below fails.
        let socket_file = SocketFile(path.clone());
        // bind(2) creates the file with 0777 & ~umask; until the chmod below
        // the usual umask (022) already keeps group and others from writing,
        // i.e. from connecting.
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
            |source| ServeError::Mode {
                path: path.clone(),
                source,
            },
        )?;
        if let Some(gid) = group {
            nix::unistd::chown(socket, None, Some(gid)).map_err(|source| ServeError::Chown {
                path: path.clone(),
                gid,
                source,
            })?;
        }
        Ok(Self {
            listener,
            socket: socket_file,
            read_timeout: REQUEST_READ_TIMEOUT,
        })
    }

    /// The same server with another bound on reading a request's head, and
    /// then its body, than [`REQUEST_READ_TIMEOUT`].
    #[must_use]
    pub fn with_read_timeout(self, read_timeout: Duration) -> Self {
        Self {
            read_timeout,
            ..self
        }
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.socket.0
    }

    /// Serves the admin API from `admin` until `shutdown` completes, then
    /// lets requests in flight finish and removes the socket file, so that
    /// `xlb` says the agent is not running rather than "connection refused".
    /// Each request's head, and then its body, must arrive within the read
    /// timeout (`crate::http`).
    pub async fn serve(
        self,
        admin: Arc<dyn Admin>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) {
        let Self {
            listener,
            socket,
            read_timeout,
        } = self;
        tracing::info!(socket = %socket.0.display(), "admin API listening");
        // Waiting event readers answer at once when the agent stops, rather
        // than hold the graceful shutdown up for their whole wait.
        let (stop, stopping) = watch::channel(false);
        let shutdown = async move {
            shutdown.await;
            let _ = stop.send(true);
        };
        let routes = routes(admin, stopping, read_timeout);
        crate::http::serve(listener, routes, read_timeout, shutdown, "admin API").await;
        drop(socket);
    }
}

/// Binds `socket` (see [`AdminServer::bind`]) and serves `admin` on it until
/// `shutdown` completes.
pub async fn serve(
    admin: Arc<dyn Admin>,
    socket: &Path,
    group: Option<Gid>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    AdminServer::bind(socket, group)
        .await?
        .serve(admin, shutdown)
        .await;
    Ok(())
}

/// Removes a socket file nobody answers on; refuses anything else.
async fn remove_stale(socket: &Path) -> Result<(), ServeError> {
    let metadata = match tokio::fs::symlink_metadata(socket).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ServeError::RemoveStale {
                path: socket.to_path_buf(),
                source,
            });
        }
    };
    if !metadata.file_type().is_socket() {
        return Err(ServeError::NotASocket {
            path: socket.to_path_buf(),
        });
    }
    if UnixStream::connect(socket).await.is_ok() {
        return Err(ServeError::InUse {
            path: socket.to_path_buf(),
        });
    }
    tokio::fs::remove_file(socket)
        .await
        .map_err(|source| ServeError::RemoveStale {
            path: socket.to_path_buf(),
            source,
        })
}

/// The admin API's routes over `admin` (see the module docs for the table).
/// A request's body must arrive within [`REQUEST_READ_TIMEOUT`]; bounding
/// the head is up to whoever serves the router.
pub fn router(admin: Arc<dyn Admin>) -> Router {
    // Never stopping (the sender is gone): whoever serves this router stops it.
    let (_, stopping) = watch::channel(false);
    routes(admin, stopping, REQUEST_READ_TIMEOUT)
}

/// [`router`], with event readers that stop waiting once `stopping` is true
/// and bodies that must arrive within `read_timeout`.
fn routes(
    admin: Arc<dyn Admin>,
    stopping: watch::Receiver<bool>,
    read_timeout: Duration,
) -> Router {
    let readers = Arc::new(EventReaders {
        slots: Semaphore::new(MAX_EVENT_READERS),
        stopping,
    });
    Router::new()
        .route("/v1/services", get(services))
        .route("/v1/backends", get(backends))
        .route("/v1/datapath/lb", get(datapath_lb))
        .route("/v1/datapath/services", get(datapath_services))
        .route("/v1/conntrack", get(conntrack))
        .route("/v1/stats", get(stats))
        .route("/v1/maps", get(maps))
        .route("/v1/maglev/{*service}", get(maglev))
        .route("/v1/status", get(status))
        .route("/v1/health", get(health_checks))
        .route("/v1/events", get(events).layer(Extension(readers)))
        .route("/v1/simulate", post(simulate))
        .route("/v1/drain", post(drain))
        .route("/v1/undrain", post(undrain))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(Extension(BodyReadTimeout(read_timeout)))
        .with_state(admin)
}

type AdminState = State<Arc<dyn Admin>>;

/// Runs one trait call on the blocking pool (calls read maps or reconcile)
/// and turns its result into a response.
async fn call<T, F>(admin: Arc<dyn Admin>, f: F) -> Response
where
    T: Serialize + Send + 'static,
    F: FnOnce(&dyn Admin) -> Result<T, AdminError> + Send + 'static,
{
    match blocking(admin, f).await {
        Ok(answer) => Json(answer).into_response(),
        Err(response) => response,
    }
}

/// Runs one trait call on the blocking pool; its answer, or the error
/// response.
async fn blocking<T, F>(admin: Arc<dyn Admin>, f: F) -> Result<T, Response>
where
    T: Send + 'static,
    F: FnOnce(&dyn Admin) -> Result<T, AdminError> + Send + 'static,
{
    match tokio::task::spawn_blocking(move || f(admin.as_ref())).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(error)) => Err(admin_error(&error)),
        Err(join) => {
            tracing::error!(error = %join, "an admin call panicked");
            Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the agent failed while answering (see its log)".to_owned(),
            ))
        }
    }
}

fn admin_error(error: &AdminError) -> Response {
    let status = match error {
        AdminError::NotFound(_) => StatusCode::NOT_FOUND,
        AdminError::BadRequest(_) => StatusCode::BAD_REQUEST,
        AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::warn!(%error, "admin call failed");
    }
    error_response(status, error.to_string())
}

fn error_response(status: StatusCode, error: String) -> Response {
    (status, Json(ErrorView { error })).into_response()
}

/// A route's query parameters, as `T` (which denies unknown fields). A
/// parameter `T` lacks or one given twice is refused with 400 and an error
/// document; so is one that is not UTF-8 once percent-decoded, which axum's
/// `Query` alone would decode lossily (`%FF` as U+FFFD: a name that matches
/// nothing, so a 404 for what is a bad request).
#[derive(Debug)]
struct Params<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Response> {
        let query = parts.uri.query().unwrap_or_default();
        // Form encoding: `+` is a space, which is UTF-8 either way.
        if let Some(pair) = query.split('&').find(|pair| {
            percent_encoding::percent_decode_str(pair)
                .decode_utf8()
                .is_err()
        }) {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                format!(
                    "query parameter `{pair}` is not UTF-8 once percent-decoded: \
                     percent-encode the UTF-8 bytes of the text"
                ),
            ));
        }
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(params)) => Ok(Self(params)),
            Err(rejection) => Err(error_response(
                StatusCode::BAD_REQUEST,
                rejection.body_text(),
            )),
        }
    }
}

/// The query of a route that takes no parameters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

async fn services(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.services()).await
}

async fn backends(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.backends()).await
}

async fn datapath_lb(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.datapath_lb()).await
}

async fn datapath_services(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.datapath_lb().map(|view| view.services)).await
}

/// `?service=` of `/v1/conntrack`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConntrackQuery {
    service: Option<String>,
}

async fn conntrack(State(admin): AdminState, Params(query): Params<ConntrackQuery>) -> Response {
    call(admin, move |a| a.conntrack(query.service.as_deref())).await
}

/// The longest `/v1/events` may wait, and the most it returns at once.
pub const MAX_EVENTS_WAIT: Duration = Duration::from_secs(10);
pub const MAX_EVENTS: usize = 4096;
/// How many `/v1/events` calls may wait at once; one more gets 429. A
/// waiting call reads the agent's history again each time events are added
/// to it (at most once per drain of the datapath's ring), so this bounds
/// that work, whoever holds the socket. The wait itself is on the server's
/// runtime, not a blocking thread: readers neither hold the blocking pool
/// (which every other route, `/metrics` and `/healthz` run on) nor queue
/// behind each other.
pub const MAX_EVENT_READERS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    max: usize,
    wait_ms: u64,
    /// Only events from then on (`CLOCK_MONOTONIC_COARSE`, the datapath's
    /// clock for them, in ns): where a new reader starts, as the history
    /// holds the agent's last few thousand events from before it came.
    #[serde(default)]
    since_ns: u64,
    /// The reader's cursor: the `next_seq` of its last answer. Without it,
    /// the read starts at the oldest event the history holds.
    since_seq: Option<u64>,
    /// The `run` of the answer `since_seq` came from: a cursor of another
    /// run (the agent restarted) reads from the oldest event held, and the
    /// answer says so. Only with `since_seq`.
    run: Option<u64>,
}

/// What the waiting `/v1/events` calls share.
#[derive(Debug)]
struct EventReaders {
    /// One per waiting call.
    slots: Semaphore,
    /// True once the server stops.
    stopping: watch::Receiver<bool>,
}

/// `/v1/events`: the events from the reader's cursor on, waiting up to
/// `wait_ms` for the first one (or for news of missed ones, or of a
/// restart). The wait ends when the agent adds events past the cursor
/// ([`Admin::event_arrivals`]), not at a poll.
async fn events(
    State(admin): AdminState,
    Extension(readers): Extension<Arc<EventReaders>>,
    Params(query): Params<EventsQuery>,
) -> Response {
    let wait = Duration::from_millis(query.wait_ms);
    if query.max == 0 || query.max > MAX_EVENTS || wait > MAX_EVENTS_WAIT {
        return error_response(
            StatusCode::BAD_REQUEST,
            format!(
                "max must be 1 to {MAX_EVENTS} and wait_ms at most {}",
                MAX_EVENTS_WAIT.as_millis()
            ),
        );
    }
    if query.run.is_some() && query.since_seq.is_none() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "run is the run of a cursor: send it with since_seq, or neither".to_owned(),
        );
    }
    let Ok(_reader) = readers.slots.try_acquire() else {
        return error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_EVENT_READERS} flow event readers wait already; try again later"),
        );
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut stopping = readers.stopping.clone();
    // Taken before the first read, so that no event added after it goes
    // unnoticed.
    let mut arrivals = admin.event_arrivals();
    let mut read = EventsRead {
        since_seq: query.since_seq,
        run: query.run,
        since_ns: query.since_ns,
        max: query.max,
    };
    loop {
        let page = match blocking(Arc::clone(&admin), move |a| a.events(&read)).await {
            Ok(page) => page,
            Err(response) => return response,
        };
        let news = !page.events.is_empty() || page.missed > 0 || page.restarted;
        if news || deadline <= tokio::time::Instant::now() || *stopping.borrow() {
            return Json(page).into_response();
        }
        // Nothing yet: wait from where this read left off, so that what it
        // passed over (older than `since_ns`) is not looked at again.
        read.since_seq = Some(page.next_seq);
        read.run = Some(page.run);
        let read_up_to = page.next_seq;
        // Without a sender (`router`, or an `Admin` whose events never
        // change), `changed` and `wait_for` fail at once: those branches
        // are then left out, and only the deadline ends the wait.
        let arrived = async {
            arrivals
                .wait_for(|&next_seq| next_seq > read_up_to)
                .await
                .is_ok()
        };
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            Ok(()) = stopping.changed() => {}
            true = arrived => {}
        }
    }
}

async fn stats(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.stats()).await
}

async fn maps(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.maps()).await
}

async fn health_checks(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.health_checks()).await
}

/// A service name that is not UTF-8 once percent-decoded is a 400 with an
/// error document (axum's own answer is plain text).
async fn maglev(
    State(admin): AdminState,
    service: Result<UrlPath<String>, PathRejection>,
    _: Params<NoParams>,
) -> Response {
    match service {
        Ok(UrlPath(service)) => call(admin, move |a| a.maglev(&service)).await,
        Err(rejection) => error_response(rejection.status(), rejection.body_text()),
    }
}

async fn status(State(admin): AdminState, _: Params<NoParams>) -> Response {
    call(admin, |a| a.status()).await
}

async fn simulate(
    State(admin): AdminState,
    _: Params<NoParams>,
    JsonBody(request): JsonBody<SimulateRequest>,
) -> Response {
    call(admin, move |a| a.simulate(&request)).await
}

async fn drain(
    State(admin): AdminState,
    _: Params<NoParams>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> Response {
    call(admin, move |a| a.drain(&request, true)).await
}

async fn undrain(
    State(admin): AdminState,
    _: Params<NoParams>,
    JsonBody(request): JsonBody<DrainRequest>,
) -> Response {
    call(admin, move |a| a.drain(&request, false)).await
}

/// How long a request's body may take to arrive, from the end of its head.
#[derive(Clone, Copy, Debug)]
struct BodyReadTimeout(Duration);

/// A request's JSON body, as `T`, read within the router's
/// [`BodyReadTimeout`]: a client that sends less than its `Content-Length`
/// gets 408, and its connection is closed (hyper does not keep a connection
/// whose request was not read to its end). A body that is not `T` gets the
/// error document of [`bad_body`].
#[derive(Debug)]
struct JsonBody<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Response> {
        let BodyReadTimeout(timeout) = request
            .extensions()
            .get::<BodyReadTimeout>()
            .copied()
            .unwrap_or(BodyReadTimeout(REQUEST_READ_TIMEOUT));
        match tokio::time::timeout(timeout, Json::<T>::from_request(request, state)).await {
            Ok(Ok(Json(body))) => Ok(Self(body)),
            Ok(Err(rejection)) => Err(bad_body(&rejection)),
            Err(_) => Err(error_response(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request's body did not arrive within {}: send it whole, as \
                     its Content-Length says",
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }
}

/// A body that is not the request's JSON: 400 with serde's description of
/// what was wrong, but 415 without a JSON content type and 413 past the
/// body limit, as axum tells them apart.
fn bad_body(rejection: &JsonRejection) -> Response {
    let status = match rejection.status() {
        status @ (StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::PAYLOAD_TOO_LARGE) => status,
        _ => StatusCode::BAD_REQUEST,
    };
    error_response(status, rejection.body_text())
}

async fn no_route(uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::NOT_FOUND,
        format!("no admin route {}", uri.path()),
    )
}

/// A route asked with a method it does not take: 405 with an error
/// document, as every other error (axum keeps the `Allow` header).
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    error_response(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{} does not take {method}", uri.path()),
    )
}
