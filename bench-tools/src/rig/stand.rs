//! One mode's test stand: a client, an LB and three backends in namespaces of
//! their own (`netns_tests::topology::ClientLbBackends`), with the LB set up as
//! the mode says for N services.
//!
//! ```text
//! client eth0 ─── eth0 lb eth1 ─── [switch] ─┬─ b0   TCP echo :8080, UDP sink :5001
//!                                             ├─ b1
//!                                             └─ b2
//! ```
//! Every mode gets its own namespaces, so the modes can be measured
//! interleaved without tearing anything down in between. Service `i` (from 0)
//! is VIP `198.19.x.y` = `plan::vip(i + 1)` with a TCP port ([`TCP_FRONTEND_PORT`]
//! → the backends' echo servers) and a UDP port ([`UDP_PORT`] → the sinks); all
//! services share the three backends. One more service, on the next VIP,
//! sends [`STREAM_PORT`] to the iperf3 server on `b0` alone (iperf3's control
//! and data connections must meet the same server).

use std::{
    collections::BTreeMap,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::Duration,
};

use anyhow::Context as _;
use netns_tests::{
    Cidr, Offloads, Proto, Route, VethEnd,
    raw_socket::RawSocket,
    topology::{ClientLbBackends, Options},
};
use xdp_lb::{AttachMode, Attachment, Datapath, LoadOptions, MapSizes, ProgramName};

use super::{
    Mode,
    modes::{self, Xlb, vip},
    traffic::{
        SOURCE_PREFIX_LEN, SOURCES, STREAM_PORT, TCP_BACKEND_PORT, TCP_FRONTEND_PORT, UDP_PORT,
    },
};
use crate::kube_proxy;

/// Backends behind every service.
pub(crate) const BACKENDS: usize = 3;

/// One mode's stand; dropping it tears everything down.
#[derive(Debug)]
pub(crate) struct Stand {
    pub(crate) mode: Mode,
    pub(crate) services: u32,
    xlb: Option<Xlb>,
    /// A datapath loaded for its `xdp_sink` program, attached to the
    /// backends (`sink_attachments`) only while an XDP-sink measurement runs.
    sink: Datapath,
    sink_attachments: Vec<Attachment>,
    /// The interfaces a stream crosses, with the segmentation and receive
    /// offloads requested on them once the mode was set up.
    offloads: Vec<(VethEnd, Offloads)>,
    /// The UDP sinks: bound sockets nobody reads, so datagrams go through
    /// the backends' whole receive path (dropped at a full socket buffer)
    /// without an ICMP answer each.
    _sinks: Vec<UdpSocket>,
    /// Sends the generated UDP frames on the client's interface.
    pub(crate) generator: RawSocket,
    pub(crate) client_mac: [u8; 6],
    pub(crate) lb_mac: [u8; 6],
    pub(crate) topo: ClientLbBackends,
}

impl Stand {
    /// Builds the stand; a ruleset that takes longer than `load_timeout` to
    /// load fails with [`LoadTimedOut`](super::modes::LoadTimedOut).
    pub(crate) fn build(mode: Mode, services: u32, load_timeout: Duration) -> anyhow::Result<Self> {
        let options = Options {
            quiet: true,
            static_neighbours: true,
            mtu: None,
        };
        let mut topo = ClientLbBackends::build(BACKENDS, &options)
            .with_context(|| format!("building the {} stand", mode.name()))?;
        let client = topo.client.clone();
        // The generated sources are "clients behind the client host".
        let sources = Cidr::new(SOURCES, SOURCE_PREFIX_LEN)?;
        topo.rig
            .add_route(&topo.lb, &Route::to(sources).via(client.v4.into()))?;
        // Connect-request-close reuses ports fast; the other modes see the
        // same client.
        topo.rig
            .set_sysctl(&client.netns, "net.ipv4.tcp_tw_reuse", "1")?;
        let mut sinks = Vec::new();
        for (i, backend) in topo.backends.clone().iter().enumerate() {
            topo.rig.serve_echo(
                &backend.netns,
                Proto::Tcp,
                SocketAddr::new(backend.v4.into(), TCP_BACKEND_PORT),
                &format!("b{i}"),
            )?;
            let bind = SocketAddr::new(backend.v4.into(), UDP_PORT);
            let sink = backend.netns.run(|| UdpSocket::bind(bind))??;
            sinks.push(sink);
        }
        pin_switch_ports(&topo)?;
        let b0 = topo.backends[0].clone();
        let b0_ip = b0.v4.to_string();
        let port = STREAM_PORT.to_string();
        topo.rig.spawn(
            &b0.netns,
            "iperf3",
            &["--server", "--bind", &b0_ip, "--port", &port],
        )?;
        let generator = client.netns.run(|| RawSocket::open(&client.dev))??;
        let client_mac = client.netns.mac(&client.dev)?.0;
        let lb_mac = topo.lb.mac(&topo.lb_front.dev)?.0;
        let xlb = match mode {
            Mode::Forward => None,
            Mode::Xlb => Some(modes::set_up_xlb(&mut topo, services)?),
            Mode::Nftables => {
                let rules = kube_proxy::nftables::ruleset_with(
                    &modes::kube_services(&topo, services),
                    kube_proxy::nftables::EndpointMaps::Named,
                );
                modes::load(&mut topo, "nft", &["-f"], &rules, load_timeout)?;
                None
            }
            Mode::Iptables | Mode::IptablesLegacy => {
                let rules = kube_proxy::iptables::ruleset(&modes::kube_services(&topo, services));
                modes::load(&mut topo, mode.restore_command(), &[], &rules, load_timeout)?;
                None
            }
        };
        let sink = Datapath::load_with(&LoadOptions {
            // The smallest valid sizes: the sink uses none of these maps.
            sizes: MapSizes {
                services: 1,
                backends: 2,
                conntrack: 1,
                addresses: 1,
                fragments: xdp_lb::DEFAULT_FRAGMENT_ENTRIES,
            },
            pin_dir: None,
        })
        .context("loading the XDP sink")?;
        let offloads = stream_path(&topo)
            .into_iter()
            .map(|end| {
                let requested = requested_offloads(&end)?;
                Ok((end, requested))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            mode,
            services,
            xlb,
            sink,
            sink_attachments: Vec::new(),
            offloads,
            _sinks: sinks,
            generator,
            client_mac,
            lb_mac,
            topo,
        })
    }

    /// Where the UDP flows go: the services' VIPs, or (forwarding) the
    /// backends themselves.
    pub(crate) fn udp_targets(&self) -> Vec<Ipv4Addr> {
        match self.mode {
            Mode::Forward => self.topo.backends.iter().map(|b| b.v4).collect(),
            _ => (0..self.services).map(vip).collect(),
        }
    }

    /// Where the iperf3 stream goes: the stream service, or (forwarding) `b0`.
    pub(crate) fn stream_target(&self) -> SocketAddr {
        match self.mode {
            Mode::Forward => SocketAddr::new(self.topo.backends[0].v4.into(), STREAM_PORT),
            _ => SocketAddr::new(vip(self.services).into(), STREAM_PORT),
        }
    }

    /// Turns TSO, GSO and GRO off on every interface a stream crosses, or
    /// (`off` false) back to what the mode left requested.
    pub(crate) fn segmentation_offloads_off(&self, off: bool) -> anyhow::Result<()> {
        const OFF: Offloads = Offloads {
            tso: Some(false),
            gso: Some(false),
            gro: Some(false),
            ..Offloads::KEEP
        };
        for (end, natural) in &self.offloads {
            let wanted = if off { &OFF } else { natural };
            self.topo.rig.set_offloads(&end.netns, &end.dev, wanted)?;
        }
        Ok(())
    }

    /// Where the TCP connections go.
    pub(crate) fn tcp_targets(&self) -> Vec<SocketAddr> {
        match self.mode {
            Mode::Forward => self
                .topo
                .backends
                .iter()
                .map(|b| SocketAddr::new(b.v4.into(), TCP_BACKEND_PORT))
                .collect(),
            _ => (0..self.services)
                .map(|i| SocketAddr::new(vip(i).into(), TCP_FRONTEND_PORT))
                .collect(),
        }
    }

    /// In the `xlb` mode, the packets `xdp_lb` counted so far, by verdict
    /// name: whether frames were forwarded in XDP or handed to the stack.
    pub(crate) fn xlb_verdicts(&self) -> anyhow::Result<Option<BTreeMap<String, u64>>> {
        let Some(xlb) = &self.xlb else {
            return Ok(None);
        };
        let stats = xlb.datapath.verdict_stats()?;
        Ok(Some(
            stats
                .iter()
                .map(|(verdict, counter)| (verdict.name().to_owned(), counter.packets))
                .collect(),
        ))
    }

    /// Attaches `xdp_sink` to every backend's interface, until
    /// `detach_xdp_sinks`: frames then stop at the backends' XDP hook.
    pub(crate) fn attach_xdp_sinks(&mut self) -> anyhow::Result<()> {
        self.detach_xdp_sinks()?;
        for b in &self.topo.backends {
            let attachment = b.netns.attach_xdp(
                &b.dev,
                &mut self.sink,
                ProgramName::XdpSink,
                AttachMode::Native,
            )?;
            self.sink_attachments.push(attachment);
        }
        anyhow::ensure!(
            self.sink_attachments.iter().all(Attachment::is_native),
            "the XDP sink fell back to generic mode"
        );
        Ok(())
    }

    /// Takes the XDP sinks off the backends (frames reach their stacks again).
    pub(crate) fn detach_xdp_sinks(&mut self) -> anyhow::Result<()> {
        for attachment in self.sink_attachments.drain(..) {
            self.sink.detach(attachment)?;
        }
        Ok(())
    }

    /// Frames every veth end of the stand dropped so far (`tx_dropped` +
    /// `rx_dropped`): a full ring or backlog on the way, which no mode's
    /// own counters see.
    pub(crate) fn veth_drops(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for end in all_ends(&self.topo) {
            let stats = end.netns.link_stats(&end.dev)?;
            total += stats.tx_dropped + stats.rx_dropped;
        }
        Ok(total)
    }

    /// Frames the XDP sinks dropped so far.
    pub(crate) fn sunk(&self) -> anyhow::Result<u64> {
        Ok(self.sink.floor_stats()?.packets)
    }

    /// UDP datagrams the backends' stacks took in so far: delivered to the
    /// sink socket, or dropped there for a full buffer or a bad checksum
    /// (`InDatagrams` + `InErrors` of the UDP MIB in each namespace).
    pub(crate) fn delivered(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for b in &self.topo.backends {
            let snmp = b
                .netns
                .run(|| std::fs::read_to_string("/proc/thread-self/net/snmp"))??;
            total += udp_received(&snmp).with_context(|| {
                format!("no UDP figures in {}'s /proc/net/snmp", b.netns.name())
            })?;
        }
        Ok(total)
    }
}

/// `InDatagrams + InErrors` from the `Udp:` lines of `/proc/net/snmp`.
fn udp_received(snmp: &str) -> Option<u64> {
    let mut lines = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = |name: &str| -> Option<u64> {
        let i = names.iter().position(|n| *n == name)?;
        values.get(i)?.parse().ok()
    };
    Some(field("InDatagrams")? + field("InErrors")?)
}

/// Static forwarding entries on the backend switch for every host on it: the
/// UDP sinks never send, so the bridge would never learn their MACs and
/// would flood every frame to every backend.
fn pin_switch_ports(topo: &ClientLbBackends) -> anyhow::Result<()> {
    for end in topo.backends.iter().chain([&topo.lb_back]) {
        let mac = end.netns.mac(&end.dev)?.to_string();
        end.peer.netns.exec(
            "bridge",
            &[
                "fdb",
                "replace",
                &mac,
                "dev",
                &end.peer.dev,
                "master",
                "static",
            ],
        )?;
    }
    Ok(())
}

/// Every veth end of the stand: client, LB, switch ports and backends.
fn all_ends(topo: &ClientLbBackends) -> Vec<VethEnd> {
    let mut ends = vec![
        topo.client.end(),
        topo.lb_front.end(),
        topo.lb_back.end(),
        topo.lb_back.peer.clone(),
    ];
    for b in &topo.backends {
        ends.push(b.peer.clone());
        ends.push(b.end());
    }
    ends
}

/// The interfaces from the client to `b0`, the stream's backend.
fn stream_path(topo: &ClientLbBackends) -> Vec<VethEnd> {
    let b0 = &topo.backends[0];
    vec![
        topo.client.end(),
        topo.lb_front.end(),
        topo.lb_back.end(),
        topo.lb_back.peer.clone(),
        b0.peer.clone(),
        b0.end(),
    ]
}

/// The TSO, GSO and GRO states requested on `end` (`ethtool -k`): a feature
/// the kernel holds off while another wants it on (XDP on a veth peer) reads
/// `off [requested on]`; restoring "requested on" lets the kernel decide again.
fn requested_offloads(end: &VethEnd) -> anyhow::Result<Offloads> {
    let out = end.netns.exec("ethtool", &["-k", &end.dev])?;
    let requested = |feature: &str| -> anyhow::Result<bool> {
        let line = out
            .lines()
            .find_map(|l| l.trim().strip_prefix(feature)?.strip_prefix(':'))
            .with_context(|| format!("ethtool -k {} shows no {feature}", end.dev))?;
        let state = line
            .split_once("[requested ")
            .map_or(line, |(_, requested)| requested);
        Ok(state.trim_start().starts_with("on"))
    };
    Ok(Offloads {
        tso: Some(requested("tcp-segmentation-offload")?),
        gso: Some(requested("generic-segmentation-offload")?),
        gro: Some(requested("generic-receive-offload")?),
        ..Offloads::KEEP
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_received_adds_delivered_and_dropped_datagrams() {
        let snmp = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors\n\
                    Udp: 100 3 7 0 7\n\
                    UdpLite: InDatagrams NoPorts InErrors\nUdpLite: 0 0 0\n";
        assert_eq!(udp_received(snmp), Some(107));
        assert_eq!(udp_received("Ip: 1\n"), None);
    }
}
