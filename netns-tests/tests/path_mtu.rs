//! The hardening issue's path-MTU scenarios. Every endpoint has MTU 1500,
//! and one link on the way to the backend 1280; a 1 MB TCP upload from the
//! client through the VIP completes only if the client learns of it, on both
//! families:
//!
//! (a) the router's egress is the narrow one: its "fragmentation needed"
//!     (IPv4) or "packet too big" (IPv6) must reach the client with the quoted
//!     header translated back to the VIP. Untranslated, it quotes the
//!     backend's address, which no socket of the client knows, and the upload
//!     stalls;
//! (b) the LB's own egress is: XDP cannot fragment, and a redirect drops what
//!     does not fit, so the LB answers with the ICMP error itself.
//!
//! And a 1 MB download from the backend completes when the LB's egress
//! toward the client is the narrow one (c), the LB answering the backend
//! about its reply. (Until 2026-11-27 the LB handed such a reply to the
//! kernel translated, which answered the VIP, its new source; the download
//! still completed here, the router sending that error back through the LB,
//! which translated it for the backend. Behind ECMP another instance may get
//! it, and one without the flow passes it on untranslated.)
//!
//! ```text
//! client ══(c)══ [xdp_lb] lb [xdp_lb] ══(b)══ router ══(a)══ backend
//! ```
use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use netns_tests::{
    Netns, attach_lb,
    topology::{ClientLbRouterBackend, Family, Options, plan},
};
use xdp_lb::{
    AddressKind, Attachment, Config, Datapath, Frontend, Protocol, ServiceOptions, Verdict,
};

const PORT: u16 = 9000;
const UPLOAD: usize = 1 << 20;
const NARROW_MTU: u32 = 1280;
const IO_TIMEOUT: Duration = Duration::from_secs(20);
/// One backend fills every slot of a 251-slot table.
const TABLE_SIZE: usize = 251;

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

fn vip(family: Family) -> IpAddr {
    let (v4, v6) = plan::vip(1);
    match family {
        Family::V4 => v4.into(),
        Family::V6 => v6.into(),
    }
}

/// Which link is the narrow one.
#[derive(Clone, Copy, Debug)]
enum Narrow {
    /// The router's, toward the backend.
    Router,
    /// The LB's, toward the router.
    Lb,
    /// The LB's, toward the client.
    LbFront,
}

/// The rig with `xdp_lb` on both LB interfaces (and `xdp_pass` on the far
/// ends it redirects into), serving VIP:`PORT` on both families from the one
/// backend, with one link narrowed.
struct PathMtuRig {
    // Declared first so the programs detach before the rig goes.
    _attachments: Vec<Attachment>,
    datapath: Datapath,
    topo: ClientLbRouterBackend,
}

impl PathMtuRig {
    fn build(narrow: Narrow) -> Self {
        let options = Options {
            static_neighbours: true,
            ..Options::default()
        };
        let topo = ClientLbRouterBackend::build(&options).expect("topology");
        let (netns, dev) = match narrow {
            Narrow::Router => (&topo.router, &topo.router_back.dev),
            Narrow::Lb => (&topo.lb, &topo.lb_back.dev),
            Narrow::LbFront => (&topo.lb, &topo.lb_front.dev),
        };
        topo.rig
            .set_mtu(netns, dev, NARROW_MTU)
            .expect("narrow link");
        let mut datapath = Datapath::load().expect("datapath");
        datapath
            .set_config(&Config {
                hash_seed: 7,
                ..Config::default()
            })
            .expect("config");
        for (id, family) in [(1, Family::V4), (2, Family::V6)] {
            datapath
                .set_address(vip(family), AddressKind::Vip)
                .expect("VIP");
            datapath
                .put_backend(id, topo.backend.socket(family, PORT), 1)
                .expect("backend");
            datapath.swap_table(id, &[id; TABLE_SIZE]).expect("table");
            let frontend = Frontend::new(SocketAddr::new(vip(family), PORT), Protocol::Tcp);
            datapath
                .upsert_service(&frontend, id, &ServiceOptions::default())
                .expect("service");
        }
        let attachments =
            attach_lb(&mut datapath, &[&topo.lb_front, &topo.lb_back]).expect("xdp_lb");
        Self {
            _attachments: attachments,
            datapath,
            topo,
        }
    }
}

/// Serves one connection on the backend (bound at `bind` in `netns`) with
/// `serve`, on a thread of its own.
fn serve_one<T: Send + 'static>(
    netns: &Netns,
    bind: SocketAddr,
    serve: impl FnOnce(TcpStream) -> std::io::Result<T> + Send + 'static,
) -> JoinHandle<std::io::Result<T>> {
    let listener = netns
        .run(move || TcpListener::bind(bind))
        .expect("enters the backend")
        .expect("binds");
    std::thread::spawn(move || serve(listener.accept()?.0))
}

/// A one-connection sink on the backend: reads to the end, answers with the
/// byte count.
fn sink(netns: &Netns, bind: SocketAddr) -> JoinHandle<std::io::Result<usize>> {
    serve_one(netns, bind, |mut stream| {
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        let mut received = Vec::with_capacity(UPLOAD);
        stream.read_to_end(&mut received)?;
        stream.write_all(received.len().to_string().as_bytes())?;
        Ok(received.len())
    })
}

fn upload(netns: &Netns, to: SocketAddr) -> std::io::Result<String> {
    netns
        .run(move || -> std::io::Result<String> {
            let mut stream = TcpStream::connect_timeout(&to, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            stream.write_all(&vec![0x5a; UPLOAD])?;
            stream.shutdown(Shutdown::Write)?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer)?;
            Ok(answer)
        })
        .expect("enters the client")
}

/// A one-connection source on the backend: sends `UPLOAD` bytes and closes.
fn source(netns: &Netns, bind: SocketAddr) -> JoinHandle<std::io::Result<()>> {
    serve_one(netns, bind, |mut stream| {
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        stream.write_all(&vec![0xa5; UPLOAD])?;
        stream.shutdown(Shutdown::Write)
    })
}

fn download(netns: &Netns, from: SocketAddr) -> std::io::Result<usize> {
    netns
        .run(move || -> std::io::Result<usize> {
            let mut stream = TcpStream::connect_timeout(&from, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut received = Vec::with_capacity(UPLOAD);
            stream.read_to_end(&mut received)?;
            Ok(received.len())
        })
        .expect("enters the client")
}

/// Moves `UPLOAD` bytes through the VIP on both families with `transfer`
/// (which checks they all arrived); `told` is the verdict that counts how
/// the sender learned of the narrow link.
fn transfers_complete(narrow: Narrow, told: Verdict, transfer: fn(&PathMtuRig, Family)) {
    let rig = PathMtuRig::build(narrow);
    for family in Family::ALL {
        let before = rig.datapath.verdict_stats().expect("verdicts");
        let started = Instant::now();
        transfer(&rig, family);
        let elapsed = started.elapsed();
        let after = rig.datapath.verdict_stats().expect("verdicts");
        let errors = after.get(told).packets - before.get(told).packets;
        report!(
            "{narrow:?} link, {family:?}: {} KiB through {NARROW_MTU} bytes in {elapsed:.2?}, \
             {errors} × {}",
            UPLOAD >> 10,
            told.name()
        );
        assert!(
            errors > 0,
            "{narrow:?}, {family:?}: nothing counted as {}",
            told.name()
        );
    }
}

/// An upload from the client; the backend answers with its count.
fn upload_through(rig: &PathMtuRig, family: Family) {
    let server = sink(
        &rig.topo.backend.netns,
        rig.topo.backend.socket(family, PORT),
    );
    let answer = upload(&rig.topo.client.netns, SocketAddr::new(vip(family), PORT));
    let received = server.join().expect("sink thread");
    let answer = answer.unwrap_or_else(|e| panic!("{family:?}: upload: {e}"));
    assert_eq!(
        answer,
        UPLOAD.to_string(),
        "{family:?}: the backend's count"
    );
    assert_eq!(received.expect("sink"), UPLOAD);
}

/// A download from the backend.
fn download_through(rig: &PathMtuRig, family: Family) {
    let server = source(
        &rig.topo.backend.netns,
        rig.topo.backend.socket(family, PORT),
    );
    let received = download(&rig.topo.client.netns, SocketAddr::new(vip(family), PORT));
    server
        .join()
        .expect("source thread")
        .unwrap_or_else(|e| panic!("{family:?}: the backend's send: {e}"));
    let received = received.unwrap_or_else(|e| panic!("{family:?}: download: {e}"));
    assert_eq!(received, UPLOAD, "{family:?}: bytes downloaded");
}

#[test]
fn a_routers_icmp_error_reaches_the_client_translated() {
    transfers_complete(
        Narrow::Router,
        Verdict::ForwardIcmpErrorToClient,
        upload_through,
    );
}

#[test]
fn the_lb_answers_for_its_own_narrow_link() {
    transfers_complete(Narrow::Lb, Verdict::AnswerTooBig, upload_through);
}

#[test]
fn the_lb_answers_the_backend_for_its_narrow_link_toward_the_client() {
    transfers_complete(Narrow::LbFront, Verdict::AnswerTooBig, download_through);
}
