//! The traffic of `xlb-bench rig`: a UDP generator that writes whole frames on
//! the client's interface through an `AF_PACKET` socket (`sendmmsg`, many
//! 5-tuples, bounded in packets and seconds), and a TCP client that opens a
//! connection per request (connect, request, response, close) and records
//! each request's latency.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hdrhistogram::Histogram;
use netns_tests::{Netns, raw_socket::RawSocket};

/// The UDP service port on the frontends and on the backends' sinks.
pub(crate) const UDP_PORT: u16 = 5001;
/// The TCP service port on the frontends.
pub(crate) const TCP_FRONTEND_PORT: u16 = 80;
/// The port the backends' TCP echo servers listen on.
pub(crate) const TCP_BACKEND_PORT: u16 = 8080;
/// The stream service's port, on its frontend and on the iperf3 server.
pub(crate) const STREAM_PORT: u16 = 5201;

/// Generated sources live in 198.18.32.0/20, which the LB routes to the
/// client: 4096 addresses × [`PORTS`] source ports, so a run of new flows
/// never repeats a 5-tuple.
pub(crate) const SOURCES: Ipv4Addr = Ipv4Addr::new(198, 18, 32, 0);
pub(crate) const SOURCE_PREFIX_LEN: u8 = 20;
const SOURCE_COUNT: u64 = 1 << (32 - SOURCE_PREFIX_LEN);
const FIRST_PORT: u16 = 10_000;
const PORTS: u64 = 50_000;

/// Ethernet + IPv4 + UDP + 18 bytes: the 60-byte minimum frame.
const FRAME_LEN: usize = 60;
const IP: usize = 14;
const UDP: usize = IP + 20;
/// Frames per `sendmmsg`.
const BATCH: usize = 64;

/// The frames of one client: flow `k` comes from source `k` (address and
/// port) and goes to target `k % targets`.
#[derive(Clone, Debug)]
pub(crate) struct UdpFlows {
    template: [u8; FRAME_LEN],
    targets: Vec<Ipv4Addr>,
}

impl UdpFlows {
    pub(crate) fn new(src_mac: [u8; 6], dst_mac: [u8; 6], targets: Vec<Ipv4Addr>) -> Self {
        let mut t = [0u8; FRAME_LEN];
        t[..6].copy_from_slice(&dst_mac);
        t[6..12].copy_from_slice(&src_mac);
        t[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        // Version 4, IHL 5; total length; TTL 64; protocol UDP.
        t[IP] = 0x45;
        t[IP + 2..IP + 4].copy_from_slice(&((FRAME_LEN - IP) as u16).to_be_bytes());
        t[IP + 8] = 64;
        t[IP + 9] = 17;
        t[UDP + 2..UDP + 4].copy_from_slice(&UDP_PORT.to_be_bytes());
        t[UDP + 4..UDP + 6].copy_from_slice(&((FRAME_LEN - UDP) as u16).to_be_bytes());
        // UDP checksum 0: none, as IPv4 allows (every mode handles it).
        Self {
            template: t,
            targets,
        }
    }

    /// Writes the frame of flow `k` into `out`.
    fn frame(&self, k: u64, out: &mut [u8; FRAME_LEN]) {
        *out = self.template;
        let source = u32::from(SOURCES) + ((k / PORTS) % SOURCE_COUNT) as u32;
        let port = FIRST_PORT + (k % PORTS) as u16;
        let target = self.targets[(k % self.targets.len() as u64) as usize];
        out[IP + 12..IP + 16].copy_from_slice(&source.to_be_bytes());
        out[IP + 16..IP + 20].copy_from_slice(&target.octets());
        out[UDP..UDP + 2].copy_from_slice(&port.to_be_bytes());
        let checksum = ipv4_checksum(&out[IP..UDP]);
        out[IP + 10..IP + 12].copy_from_slice(&checksum.to_be_bytes());
    }
}

/// The one's-complement checksum of an IPv4 header whose checksum field is 0.
fn ipv4_checksum(header: &[u8]) -> u16 {
    let sum: u32 = header
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum();
    let folded = (sum & 0xffff) + (sum >> 16);
    !(((folded & 0xffff) + (folded >> 16)) as u16)
}

/// Which flows a UDP run sends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum FlowPick {
    /// Flows `first`, `first + 1`, ...: every packet a new 5-tuple.
    New { first: u64 },
    /// Flows `0..count` over and over: every packet of a flow already seen.
    Cycle { count: u64 },
}

/// What a UDP run put on the wire.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sent {
    /// Frames the kernel took from the socket.
    pub(crate) packets: u64,
    pub(crate) elapsed: Duration,
    /// The run stopped at `max_packets`, before its `duration`.
    pub(crate) cut_short: bool,
}

/// Sends frames of `flows` on `socket` until `duration` has passed or
/// `max_packets` were sent, whichever comes first.
pub(crate) fn blast(
    socket: &RawSocket,
    flows: &UdpFlows,
    pick: FlowPick,
    duration: Duration,
    max_packets: u64,
) -> anyhow::Result<Sent> {
    let mut frames = [[0u8; FRAME_LEN]; BATCH];
    let started = Instant::now();
    let mut sent = 0u64;
    let mut full = 0u64;
    while sent < max_packets && started.elapsed() < duration {
        let batch = (max_packets - sent).min(BATCH as u64) as usize;
        for (i, frame) in frames[..batch].iter_mut().enumerate() {
            let n = sent + i as u64;
            let k = match pick {
                FlowPick::New { first } => first + n,
                FlowPick::Cycle { count } => n % count,
            };
            flows.frame(k, frame);
        }
        let refs: Vec<&[u8]> = frames[..batch]
            .iter()
            .map(<[u8; FRAME_LEN]>::as_slice)
            .collect();
        match socket
            .send_batch(&refs)
            .context("sending generated frames")?
        {
            // The device queue is full: the frames were not taken; try again.
            0 => full += 1,
            taken => sent += taken as u64,
        }
    }
    if full > 0 {
        tracing::debug!(full, "the device queue was full (frames retried)");
    }
    let elapsed = started.elapsed();
    Ok(Sent {
        packets: sent,
        elapsed,
        cut_short: sent >= max_packets && elapsed < duration,
    })
}

/// What the connect-request-close clients did.
#[derive(Clone, Debug)]
pub(crate) struct Crr {
    /// Requests answered.
    pub(crate) connections: u64,
    /// Connections that failed or timed out.
    pub(crate) errors: u64,
    pub(crate) elapsed: Duration,
    /// Latency of each answered request (connect to close), in µs.
    pub(crate) latency_us: Histogram<u64>,
}

/// How long one connection may take before it counts as an error.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// Runs `clients` threads inside `netns`, each opening one connection per
/// request to `targets` in turn until `duration` has passed.
pub(crate) fn connect_request_close(
    netns: &Netns,
    targets: &[SocketAddr],
    clients: usize,
    duration: Duration,
) -> anyhow::Result<Crr> {
    let started = Instant::now();
    let deadline = started + duration;
    let handles = (0..clients.max(1))
        .map(|c| {
            let targets = targets.to_vec();
            netns.spawn(move || client_loop(&targets, c, deadline))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut total = Crr {
        connections: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: new_histogram()?,
    };
    for handle in handles {
        let one = handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))??;
        total.connections += one.connections;
        total.errors += one.errors;
        total.latency_us.add(&one.latency_us)?;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// The longest request latency the histograms hold, in µs: 10 s.
pub(crate) const LATENCY_MAX_US: u64 = 10_000_000;

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // 1 µs to 10 s, three significant digits.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).context("creating a latency histogram")
}

fn client_loop(targets: &[SocketAddr], first: usize, deadline: Instant) -> anyhow::Result<Crr> {
    let mut crr = Crr {
        connections: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latency_us: new_histogram()?,
    };
    let mut i = first;
    while Instant::now() < deadline {
        let target = targets[i % targets.len()];
        i += 1;
        let began = Instant::now();
        match request(target) {
            Ok(()) => {
                crr.connections += 1;
                let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                crr.latency_us.saturating_record(us.max(1));
            }
            Err(e) => {
                crr.errors += 1;
                tracing::debug!(%target, error = %e, "request failed");
            }
        }
    }
    Ok(crr)
}

/// One request on a connection of its own: the echo servers answer with
/// their name and the request, then close.
fn request(target: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, CONNECTION_TIMEOUT)?;
    stream.set_read_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.set_write_timeout(Some(CONNECTION_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream.write_all(b"ping")?;
    stream.shutdown(Shutdown::Write)?;
    let mut answer = Vec::with_capacity(64);
    stream.read_to_end(&mut answer)?;
    if answer.ends_with(b"ping") {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "the answer does not echo the request",
        ))
    }
}

/// What one iperf3 stream carried.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Stream {
    /// Bytes the receiver got.
    pub(crate) bytes: u64,
    pub(crate) seconds: f64,
    /// TCP retransmissions of the sender.
    pub(crate) retransmits: u64,
}

/// How much longer than the measurement a stream may take (iperf3 runs a
/// whole second at least, then reports): the longest any workload overruns,
/// so a measurement takes at most its `--seconds` and this.
pub(crate) const STREAM_GRACE_SECS: u64 = 10;

/// One iperf3 TCP stream from `netns` to `target` for `duration` (bounded by
/// `timeout(1)` in case the far end never answers).
pub(crate) fn stream(
    netns: &Netns,
    target: SocketAddr,
    duration: Duration,
) -> anyhow::Result<Stream> {
    let seconds = duration.as_secs().max(1).to_string();
    let limit = (duration.as_secs() + STREAM_GRACE_SECS).to_string();
    let ip = target.ip().to_string();
    let port = target.port().to_string();
    let args = [
        limit.as_str(),
        "iperf3",
        "--client",
        &ip,
        "--port",
        &port,
        "--time",
        &seconds,
        "--connect-timeout",
        "3000",
        "--json",
    ];
    let out = netns.exec("timeout", &args).context("running iperf3")?;
    parse_iperf3(&out)
}

fn parse_iperf3(json: &str) -> anyhow::Result<Stream> {
    let v: serde_json::Value = serde_json::from_str(json).context("iperf3's JSON")?;
    if let Some(error) = v.get("error").and_then(serde_json::Value::as_str) {
        anyhow::bail!("iperf3: {error}");
    }
    let end = &v["end"];
    let received = &end["sum_received"];
    let bytes = received["bytes"]
        .as_u64()
        .context("no end.sum_received.bytes")?;
    let seconds = received["seconds"]
        .as_f64()
        .context("no end.sum_received.seconds")?;
    let retransmits = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    Ok(Stream {
        bytes,
        seconds,
        retransmits,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn flows() -> UdpFlows {
        UdpFlows::new(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            vec![Ipv4Addr::new(198, 19, 0, 1), Ipv4Addr::new(198, 19, 0, 2)],
        )
    }

    #[test]
    fn frames_parse_with_valid_checksums_and_distinct_tuples() {
        let flows = flows();
        let mut seen = HashSet::new();
        let mut frame = [0u8; FRAME_LEN];
        for k in [0, 1, 2, PORTS - 1, PORTS, 3 * PORTS + 7] {
            flows.frame(k, &mut frame);
            let sliced = etherparse::SlicedPacket::from_ethernet(&frame).unwrap();
            let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
                panic!("not IPv4")
            };
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            assert!(Ipv4Addr::from(header.source).octets()[..2] == [198, 18]);
            let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
                panic!("not UDP")
            };
            assert_eq!(udp.destination_port(), UDP_PORT);
            let tuple = (header.source, udp.source_port(), header.destination);
            assert!(seen.insert(tuple), "flow {k} repeats a tuple");
        }
    }

    #[test]
    fn targets_rotate_per_flow() {
        let flows = flows();
        let mut a = [0u8; FRAME_LEN];
        let mut b = [0u8; FRAME_LEN];
        flows.frame(0, &mut a);
        flows.frame(1, &mut b);
        assert_eq!(&a[IP + 16..IP + 20], &[198, 19, 0, 1]);
        assert_eq!(&b[IP + 16..IP + 20], &[198, 19, 0, 2]);
    }

    #[test]
    fn iperf3_results_and_errors() {
        let ok = r#"{"end": {"sum_sent": {"retransmits": 3},
                    "sum_received": {"bytes": 1250000000, "seconds": 2.0}}}"#;
        let s = parse_iperf3(ok).unwrap();
        assert_eq!((s.bytes, s.retransmits), (1_250_000_000, 3));
        let err = parse_iperf3(r#"{"error": "unable to connect to server"}"#).unwrap_err();
        assert!(err.to_string().contains("unable to connect"), "{err}");
    }
}
