//! The hardening issue's flood scenario: a SYN flood through the VIP, far
//! above the new-flow flood guard's rate (set low here), while 50 established
//! connections through the same VIP and port keep transferring, one exchange
//! every `EXCHANGE_PAUSE`. Halfway through, the service's Maglev table changes
//! so that every slot names one backend: a connection whose entry the flood
//! had pushed out of the (small) conntrack would now go to that backend and be
//! reset. All 50 must complete with every byte intact, and their entries must
//! still be there at the end.
//!
//! Without the guard (rate 0) the same run breaks connections: the flood
//! turns the conntrack over several times between two exchanges of a session.
//!
//! The flood comes from the client's own address (ports the client's kernel
//! does not use), built with etherparse and sent on the client's interface by
//! an `AF_PACKET` socket, bounded in frames and in seconds.
use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use etherparse::PacketBuilder;
use netns_tests::{
    lb_scenario::{BULK_PORT, Kind, Scenario, backend_id, backend_name, service_id, vip},
    raw_socket::RawSocket,
    stream::{StreamEchoServer, StreamSession},
    topology::{Family, Options},
};
use xdp_lb::{Config, CtEvent, Flow, MapSizes, Protocol};

/// The connections that must survive.
const SESSIONS: u16 = 50;
/// The guard's rate for this test, per CPU per second.
const GUARD_RATE: u32 = 500;
/// Conntrack capacity: the flood alone would fill it twice over, the guard's
/// rate over the flood's seconds (some 4 000 flows) not a tenth of it. Keys
/// spread over the table's buckets unevenly, so a full bucket can give up a
/// session's entry before the table is full: at this size, with the guard's
/// flows, eight more in a session's bucket come about once in a trillion.
const CONNTRACK: u32 = 65_536;
/// The flood's bounds.
const FLOOD_FRAMES: usize = 150_000;
const FLOOD_SECONDS: Duration = Duration::from_secs(4);
/// Frames per `sendmmsg` call, and the pause between calls (so the flood lasts
/// as long as the sessions' exchanges instead of ending in a burst).
const FLOOD_BATCH: usize = 64;
const FLOOD_PAUSE: Duration = Duration::from_micros(500);
/// The flood's source ports: outside the client's ephemeral range.
const FLOOD_PORTS: std::ops::Range<u16> = 30_000..62_000;
/// Each session's exchanges while the flood runs, their size and pace.
const EXCHANGES: usize = 5;
const EXCHANGE_BYTES: usize = 4096;
const EXCHANGE_PAUSE: Duration = Duration::from_millis(800);
/// When the table changes, counted from the flood's start.
const TABLE_CHANGE_AT: Duration = Duration::from_secs(2);
/// The Maglev table size of three backends (the sizing policy's).
const TABLE_SIZE: usize = 509;
const IO_TIMEOUT: Duration = Duration::from_secs(15);

/// Prints one of the scenario's figures (shown with `--nocapture`).
macro_rules! report {
    ($($arg:tt)*) => {{
        #[allow(clippy::print_stderr, reason = "the scenario's figures, for --nocapture")]
        {
            eprintln!($($arg)*);
        }
    }};
}

/// SYNs from the client's address to VIP:`BULK_PORT`, one source port each.
fn flood_frames(s: &Scenario) -> Vec<Vec<u8>> {
    let client = &s.topo.client;
    let src_mac = client.netns.mac(&client.dev).expect("client MAC").0;
    let dst_mac = client
        .peer
        .netns
        .mac(&client.peer.dev)
        .expect("LB front MAC")
        .0;
    let IpAddr::V4(vip) = vip(Family::V4) else {
        unreachable!("the v4 VIP")
    };
    FLOOD_PORTS
        .map(|port| {
            let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
                .ipv4(client.v4.octets(), vip.octets(), 64)
                .tcp(port, BULK_PORT, u32::from(port) << 8, 64_240)
                .syn();
            let mut frame = Vec::with_capacity(builder.size(0));
            builder.write(&mut frame, &[]).expect("SYN frame");
            frame
        })
        .collect()
}

/// Sends the flood until `FLOOD_FRAMES` frames or `FLOOD_SECONDS` have gone,
/// or `stop` is set; returns the frames sent.
fn start_flood(s: &Scenario, stop: Arc<AtomicBool>) -> JoinHandle<usize> {
    let frames = flood_frames(s);
    let dev = s.topo.client.dev.clone();
    let socket = s
        .topo
        .client
        .netns
        .run(move || RawSocket::open(&dev))
        .expect("enters the client")
        .expect("AF_PACKET socket");
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut sent = 0;
        let mut next = frames.iter().cycle();
        while sent < FLOOD_FRAMES
            && started.elapsed() < FLOOD_SECONDS
            && !stop.load(Ordering::Acquire)
        {
            let batch: Vec<&[u8]> = next
                .by_ref()
                .take(FLOOD_BATCH.min(FLOOD_FRAMES - sent))
                .map(Vec::as_slice)
                .collect();
            // A full device queue takes none: the pause lets it drain.
            sent += socket.send_batch(&batch).expect("sendmmsg");
            std::thread::sleep(FLOOD_PAUSE);
        }
        sent
    })
}

/// Runs `EXCHANGES` checked echo exchanges on `session`, paced.
fn keep_transferring(mut session: StreamSession) -> JoinHandle<std::io::Result<StreamSession>> {
    std::thread::spawn(move || {
        let data: Vec<u8> = (0..EXCHANGE_BYTES).map(|i| (i % 251) as u8).collect();
        for _ in 0..EXCHANGES {
            session.exchange(&data)?;
            std::thread::sleep(EXCHANGE_PAUSE);
        }
        Ok(session)
    })
}

#[test]
fn established_connections_outlive_a_syn_flood() {
    let sizes = MapSizes {
        conntrack: CONNTRACK,
        ..MapSizes::default()
    };
    let mut s = Scenario::build_with_sizes(&Options::default(), SESSIONS, sizes).expect("scenario");
    let config = s.datapath.config().expect("config");
    s.datapath
        .set_config(&Config {
            new_flows_per_cpu_per_sec: GUARD_RATE,
            ..config
        })
        .expect("guard rate");
    let servers: Vec<StreamEchoServer> = s
        .topo
        .backends
        .iter()
        .enumerate()
        .map(|(i, b)| {
            StreamEchoServer::start(&b.netns, b.socket(Family::V4, BULK_PORT), &backend_name(i))
                .expect("stream server")
        })
        .collect();
    let target = SocketAddr::new(vip(Family::V4), BULK_PORT);
    let sessions: Vec<StreamSession> = (0..SESSIONS)
        .map(|_| StreamSession::open(&s.topo.client.netns, target, IO_TIMEOUT).expect("connects"))
        .collect();
    let locals: Vec<SocketAddr> = sessions.iter().map(StreamSession::local_addr).collect();
    let before = s.datapath.ct_stats().expect("ct stats");

    let stop = Arc::new(AtomicBool::new(false));
    let flood = start_flood(&s, Arc::clone(&stop));
    let started = Instant::now();
    let transfers: Vec<_> = sessions.into_iter().map(keep_transferring).collect();
    std::thread::sleep(TABLE_CHANGE_AT);
    let one_backend = vec![backend_id(Family::V4, Kind::Bulk, 0); TABLE_SIZE];
    s.datapath
        .swap_table(service_id(Family::V4, Kind::Bulk), &one_backend)
        .expect("table change");
    let outcomes: Vec<_> = transfers
        .into_iter()
        .map(|t| t.join().expect("session thread"))
        .collect();
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Release);
    let flooded = flood.join().expect("flood thread");

    let ct = s.datapath.ct_stats().expect("ct stats");
    let since = |event| ct.get(event).packets - before.get(event).packets;
    let untracked = since(CtEvent::NotTrackedFloodGuard);
    let created = since(CtEvent::Created);
    report!(
        "{flooded} SYNs in {elapsed:.2?} beside {SESSIONS} sessions: {created} flows tracked, \
         {untracked} held back by the guard"
    );
    let mut failed = Vec::new();
    for (local, outcome) in locals.iter().zip(outcomes) {
        match outcome {
            Ok(session) => {
                assert_eq!(session.echoed(), (EXCHANGES * EXCHANGE_BYTES) as u64);
                session.close().expect("closes cleanly");
            }
            Err(e) => failed.push(format!("{local}: {e}")),
        }
    }
    assert!(
        failed.is_empty(),
        "sessions broken by the flood: {failed:?}"
    );
    assert!(flooded > 10_000, "the flood sent only {flooded} frames");
    assert!(
        untracked > 0,
        "the guard held nothing back ({created} flows tracked)"
    );
    for local in &locals {
        let flow = Flow::new(*local, target, Protocol::Tcp);
        assert!(
            s.datapath.tracked_flow(&flow).expect("lookup").is_some(),
            "{local}: the session's entry is gone"
        );
    }
    for server in servers {
        server.stop().expect("stream server stops");
    }
}
