//! `xlb decap`: the backends' side of direct server return. Loads the
//! datapath, lets `xdp_decap` strip the LB's outer header for the given VIPs
//! (which this host holds, on `lo`), attaches it to the given interfaces and
//! keeps it there until SIGINT or SIGTERM; the programs go with the process.

use std::net::IpAddr;

use anyhow::Context as _;
use clap::Args;
use tokio::signal::unix::{SignalKind, signal};
use xdp_lb::{AttachMode, Datapath, DecapVerdict, ProgramName};

use crate::{
    agent::each_once,
    source::kube::validate::{Origin, check_unicast},
};

/// `xlb decap`'s flags.
#[derive(Debug, Args)]
pub(super) struct DecapArgs {
    /// Interfaces the encapsulated packets arrive on (comma-separated or
    /// repeated).
    #[arg(
        long = "interface",
        short = 'i',
        value_delimiter = ',',
        value_parser = crate::agent::parse_interface_name,
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
    check(args)?;
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

/// Each interface and VIP once, and every VIP an address a packet can be
/// sent to.
fn check(args: &DecapArgs) -> anyhow::Result<()> {
    each_once("--interface", &args.interfaces)?;
    each_once("--vip", &args.vips)?;
    for &vip in &args.vips {
        check_unicast(vip, Origin::Cluster).map_err(|e| anyhow::anyhow!("--vip {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(interfaces: &[&str], vips: &[&str]) -> DecapArgs {
        DecapArgs {
            interfaces: interfaces.iter().map(|&i| i.to_owned()).collect(),
            vips: vips
                .iter()
                .map(|v| v.parse().expect("an address"))
                .collect(),
            generic_xdp: false,
        }
    }

    #[test]
    fn each_interface_and_vip_once_and_unicast() {
        assert!(check(&args(&["eth0", "eth1"], &["198.18.100.1", "2001:2::1"])).is_ok());
        for (interfaces, vips, says) in [
            (&["eth0", "eth0"][..], &["198.18.100.1"][..], "named twice"),
            (&["eth0"], &["198.18.100.1", "198.18.100.1"], "named twice"),
            (&["eth0"], &["0.0.0.0"], "unicast"),
            (&["eth0"], &["::"], "unicast"),
            (&["eth0"], &["224.0.0.1"], "unicast"),
            (&["eth0"], &["255.255.255.255"], "unicast"),
            (&["eth0"], &["fe80::1"], "unicast"),
            (&["eth0"], &["::ffff:198.18.0.1"], "IPv4-mapped"),
        ] {
            let error = check(&args(interfaces, vips)).expect_err(says).to_string();
            assert!(error.contains(says), "{error}");
        }
    }
}
