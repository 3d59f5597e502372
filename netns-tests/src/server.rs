//! What every in-process server of the rig shares: a thread inside a
//! namespace that binds, reports the bound address (or why it could not
//! bind), and serves until stopped; stopping it wakes the thread, joins it
//! and maps a panic to an error.
//!
//! The servers themselves ([`EchoServer`](crate::EchoServer),
//! [`HttpServer`](crate::http::HttpServer),
//! [`StreamEchoServer`](crate::stream::StreamEchoServer)) only say how to bind
//! and what to do with the socket.
use std::{
    io,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream},
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread::JoinHandle,
    time::Duration,
};

use tracing::{debug, warn};

use crate::{Error, Netns, Result, addr::is_rig_address};

/// What a server is called in errors and logs: `Kind::new("an", "echo")`
/// makes "starting an echo server in ...", "echo server b0 on ..." and
/// "echo connection failed".
#[derive(Clone, Copy, Debug)]
pub(crate) struct Kind {
    article: &'static str,
    what: &'static str,
}

impl Kind {
    pub(crate) const fn new(article: &'static str, what: &'static str) -> Self {
        Self { article, what }
    }
}

/// What a server's threads share with its owner: the name it answers with
/// and the flag that stops it.
#[derive(Clone, Debug)]
pub(crate) struct Shared {
    name: Arc<str>,
    stop: Arc<AtomicBool>,
}

impl Shared {
    /// The name the server answers with.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// True once the server is being stopped.
    pub(crate) fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }
}

/// What a server thread bound.
#[derive(Debug)]
pub(crate) struct Bound<S> {
    /// The socket the thread serves.
    pub(crate) socket: S,
    /// The address it is bound to.
    pub(crate) local: SocketAddr,
    /// A duplicate of a listening socket, shut down on stop: that makes a
    /// blocked accept(2) return (EINVAL), so the loop sees
    /// [`Shared::stopping`]. `None` for a socket whose loop polls it instead.
    pub(crate) wake: Option<OwnedFd>,
}

impl<S> Bound<S> {
    /// The same binding around another socket type.
    pub(crate) fn map<T>(self, f: impl FnOnce(S) -> T) -> Bound<T> {
        Bound {
            socket: f(self.socket),
            local: self.local,
            wake: self.wake,
        }
    }
}

impl Bound<TcpListener> {
    /// A TCP listener on `bind`, woken on stop.
    pub(crate) fn tcp(bind: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(bind)?;
        Ok(Self {
            wake: Some(listener.as_fd().try_clone_to_owned()?),
            local: listener.local_addr()?,
            socket: listener,
        })
    }
}

type Ready = mpsc::SyncSender<Result<(SocketAddr, Option<OwnedFd>)>>;

/// A server running on its own thread inside a namespace; stopped (and its
/// thread joined) on drop, which logs how it ended.
#[derive(Debug)]
pub(crate) struct ServerThread {
    kind: Kind,
    shared: Shared,
    netns: Netns,
    local: SocketAddr,
    wake: Option<OwnedFd>,
    thread: Option<JoinHandle<Result<()>>>,
}

impl ServerThread {
    /// Starts a thread in `netns` that runs `bind`, then `serve` on what it
    /// bound until [`Shared::stopping`]; returns once `bind` has succeeded,
    /// or with its error (or the error of entering the namespace).
    pub(crate) fn start<S, B, F>(
        netns: &Netns,
        kind: Kind,
        name: &str,
        bind: B,
        serve: F,
    ) -> Result<Self>
    where
        B: FnOnce() -> Result<Bound<S>> + Send + 'static,
        F: FnOnce(S, Shared) + Send + 'static,
    {
        let shared = Shared {
            name: name.into(),
            stop: Arc::default(),
        };
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let shared = shared.clone();
            netns.spawn(move || run(bind, serve, shared, &ready_tx))?
        };
        match ready_rx.recv() {
            Ok(Ok((local, wake))) => Ok(Self {
                kind,
                shared,
                netns: netns.clone(),
                local,
                wake,
                thread: Some(thread),
            }),
            Ok(Err(err)) => {
                let _ = thread.join();
                Err(err)
            }
            // The thread ended before binding: it could not enter the namespace.
            Err(mpsc::RecvError) => Err(match thread.join() {
                Ok(Err(err)) => err,
                _ => Error::Io {
                    what: format!("starting {} {} server in {netns}", kind.article, kind.what),
                    source: io::Error::other("the server thread ended before binding"),
                },
            }),
        }
    }

    /// Starts a TCP server: a listener on `bind` whose every connection is
    /// handled by `handle` on a thread of its own (see
    /// [`accept_until_stopped`]).
    pub(crate) fn tcp<H>(
        netns: &Netns,
        kind: Kind,
        name: &str,
        bind: SocketAddr,
        backoff: Duration,
        handle: H,
    ) -> Result<Self>
    where
        H: FnOnce(TcpStream, &Shared) -> io::Result<()> + Clone + Send + 'static,
    {
        let bind_listener = move || {
            Bound::tcp(bind).map_err(|source| Error::Io {
                what: format!("binding {} {} server to {bind}", kind.article, kind.what),
                source,
            })
        };
        let serve = move |listener: TcpListener, shared: Shared| {
            accept_until_stopped(&listener, &shared, kind, backoff, handle);
        };
        Self::start(netns, kind, name, bind_listener, serve)
    }

    /// The address the server is bound to.
    pub(crate) const fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The name the server answers with.
    pub(crate) fn name(&self) -> &str {
        self.shared.name()
    }

    /// The namespace the server runs in.
    pub(crate) const fn netns(&self) -> &Netns {
        &self.netns
    }

    /// Stops the server and waits for its thread to end.
    pub(crate) fn stop(mut self) -> Result<()> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<()> {
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        self.shared.stop();
        if let Some(wake) = &self.wake {
            // SAFETY: `wake` is an open socket descriptor owned by `self`.
            unsafe {
                libc::shutdown(wake.as_raw_fd(), libc::SHUT_RDWR);
            }
        }
        // A panic is reported, not resumed: this runs in `Drop`, possibly
        // while a test is already unwinding.
        thread.join().unwrap_or_else(|_| {
            Err(Error::Io {
                what: format!(
                    "{} server {} on {}",
                    self.kind.what,
                    self.shared.name(),
                    self.local
                ),
                source: io::Error::other("the server thread panicked"),
            })
        })
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Err(err) = self.shutdown() {
            warn!(local = %self.local, error = %err, "{} server ended with an error", self.kind.what);
        }
    }
}

/// The server thread: binds, reports the bound address, serves until stopped.
fn run<S, B, F>(bind: B, serve: F, shared: Shared, ready: &Ready)
where
    B: FnOnce() -> Result<Bound<S>>,
    F: FnOnce(S, Shared),
{
    match bind() {
        Ok(bound) => {
            if ready.send(Ok((bound.local, bound.wake))).is_ok() {
                serve(bound.socket, shared);
            }
        }
        Err(err) => {
            let _ = ready.send(Err(err));
        }
    }
}

/// Accepts connections on `listener` until the server is stopping, each
/// handled by `handle` on a thread of its own (its error logged), then waits
/// for those threads.
///
/// `handle` bounds its connection (I/O timeouts, or a look at
/// [`Shared::stopping`] now and then), so the wait ends. After an accept error other than an interrupted
/// call (out of descriptors, say) the loop waits `backoff` rather than spin.
pub(crate) fn accept_until_stopped<H>(
    listener: &TcpListener,
    shared: &Shared,
    kind: Kind,
    backoff: Duration,
    handle: H,
) where
    H: FnOnce(TcpStream, &Shared) -> io::Result<()> + Clone + Send + 'static,
{
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if shared.stopping() {
                    break;
                }
                let (handle, shared) = (handle.clone(), shared.clone());
                connections.retain(|c| !c.is_finished());
                connections.push(std::thread::spawn(move || {
                    if let Err(err) = handle(stream, &shared) {
                        debug!(%peer, error = %err, "{} connection failed", kind.what);
                    }
                }));
            }
            Err(_) if shared.stopping() => break,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => {
                warn!(error = %err, "{} server accept failed", kind.what);
                std::thread::sleep(backoff);
            }
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

/// A server may bind the unspecified address, loopback, or a rig address.
pub(crate) fn check_bind(ip: IpAddr) -> Result<()> {
    if ip.is_unspecified() || ip.is_loopback() || is_rig_address(ip) {
        Ok(())
    } else {
        Err(Error::AddressOutOfRange {
            addr: ip.to_string(),
        })
    }
}

/// A server name a client can split off an answer: non-empty, without
/// whitespace.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(Error::Invalid {
            what,
            input: name.to_owned(),
            expected: "a non-empty name without whitespace",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HostKind, Rig};

    const KIND: Kind = Kind::new("a", "test");

    fn start(netns: &Netns, bind: SocketAddr) -> Result<ServerThread> {
        let backoff = Duration::from_millis(10);
        ServerThread::tcp(netns, KIND, "t0", bind, backoff, |_, _| Ok(()))
    }

    /// Needs root: a rig namespace.
    #[test]
    fn a_bind_error_comes_back_and_stop_closes_the_listener() {
        let mut rig = Rig::new().unwrap();
        let netns = rig.add_host("h", HostKind::Wire).unwrap();
        let first = start(&netns, "127.0.0.1:0".parse().unwrap()).unwrap();
        let local = first.local_addr();
        assert_eq!(first.name(), "t0");
        // A listening socket holds the port (even with SO_REUSEADDR).
        let taken = start(&netns, local).unwrap_err();
        assert_eq!(
            taken.to_string(),
            format!("binding a test server to {local}")
        );
        // Stopped, the thread has ended and both descriptors are closed.
        first.stop().unwrap();
        start(&netns, local).unwrap().stop().unwrap();
    }

    /// Needs root: a rig namespace.
    #[test]
    fn a_panic_on_the_server_thread_is_the_error_of_stop() {
        let mut rig = Rig::new().unwrap();
        let netns = rig.add_host("h", HostKind::Wire).unwrap();
        let local: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let bind = move || {
            Ok(Bound {
                socket: (),
                local,
                wake: None,
            })
        };
        let server = ServerThread::start(&netns, KIND, "t1", bind, |(), shared: Shared| {
            while !shared.stopping() {
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("the test server panics on stop");
        })
        .unwrap();
        let err = server.stop().unwrap_err();
        assert_eq!(err.to_string(), format!("test server t1 on {local}"));
    }
}
