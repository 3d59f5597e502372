//! `xlb decap`: the backends' side of direct server return. Loads the
//! datapath, lets `xdp_decap` strip the LB's outer header for the given VIPs
//! (which this host holds, on `lo`), attaches it to the given interfaces and
//! keeps it there until SIGINT or SIGTERM; the programs go with the process.

use std::net::IpAddr;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use xdp_lb::{AttachMode, Datapath, DecapVerdict, ProgramName};

/// `xlb decap`'s flags.
#[derive(Debug, Args)]
pub(super) struct DecapArgs {
    /// Interfaces the encapsulated packets arrive on (comma-separated or
    /// repeated).
    #[arg(
        long = "interface",
        short = 'i',
        value_delimiter = ',',
        required = true
    )]
    interfaces: Vec<String>,
    /// The VIPs this host takes encapsulated packets for (comma-separated or
    /// repeated); put each on `lo` too.
    #[arg(long = "vip", value_delimiter = ',', required = true)]
    vips: Vec<IpAddr>,
    /// Attach in generic (skb) mode instead of native XDP.
    #[arg(long)]
    generic_xdp: bool,
}

/// Runs until SIGINT or SIGTERM, then prints what it stripped.
pub(super) async fn run(args: &DecapArgs) -> anyhow::Result<()> {
    let mut datapath = Datapath::load().context("loading the datapath (as root)")?;
    for &vip in &args.vips {
        datapath
            .add_decap_vip(vip)
            .with_context(|| format!("adding VIP {vip}"))?;
    }
    let mode = if args.generic_xdp {
        AttachMode::Generic
    } else {
        AttachMode::Native
    };
    let mut attachments = Vec::new();
    for iface in &args.interfaces {
        attachments.push(
            datapath
                .attach(ProgramName::XdpDecap, iface, mode)
                .with_context(|| format!("attaching xdp_decap to {iface}"))?,
        );
    }
    tracing::info!(interfaces = ?args.interfaces, vips = ?args.vips, "xdp_decap attached");
    let mut terminate = signal(SignalKind::terminate()).context("waiting for SIGTERM")?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("waiting for SIGINT")?,
        _ = terminate.recv() => {}
    }
    let stats = datapath.decap_stats().context("reading the counters")?;
    let stripped = stats.get(DecapVerdict::Decapsulated);
    tracing::info!(
        packets = stripped.packets,
        bytes = stripped.bytes,
        "stopping: decapsulated"
    );
    drop(attachments);
    Ok(())
}
