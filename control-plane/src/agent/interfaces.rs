//! The `--interface` checks made before anything is pinned: each names an
//! interface of this network namespace, once, and carries no XDP program but
//! one of this pin directory's links. An interface held by another program
//! (another agent's, on another `--pin-dir`; `xlb decap`'s; another tool's)
//! would refuse the attach, after the maps were made and pinned.

use std::path::Path;

use anyhow::Context as _;
use futures::TryStreamExt as _;
use netlink_packet_route::link::{LinkAttribute, LinkXdp};
use xdp_lb::Datapath;

use super::options;

/// Every `--interface` names an interface of this network namespace, once.
pub(super) fn check_names(interfaces: &[String]) -> anyhow::Result<()> {
    options::each_once("--interface", interfaces)?;
    for iface in interfaces {
        xdp_lb::interface_index(iface).map_err(|_| {
            anyhow::anyhow!("--interface {iface}: no such interface in this network namespace")
        })?;
    }
    Ok(())
}

/// Refuses an interface whose XDP program is not the one this pin
/// directory's link for it (under `links`) runs.
pub(super) async fn check_xdp_free(interfaces: &[String], links: &Path) -> anyhow::Result<()> {
    for iface in interfaces {
        let attached = xdp_programs_on(iface).await?;
        if attached.is_empty() {
            continue;
        }
        let ours = Datapath::pinned_link(links, iface)
            .ok()
            .flatten()
            .map(|link| link.program_id);
        if let Some(foreign) = attached.iter().find(|&&id| Some(id) != ours) {
            anyhow::bail!(
                "--interface {iface} already runs XDP program {foreign}, which no link of this \
                 --pin-dir holds: another xlb agent's (on another --pin-dir), `xlb decap`'s, or \
                 another tool's (`bpftool net show dev {iface}` names it). Stop or detach it \
                 first; nothing was pinned"
            );
        }
    }
    Ok(())
}

/// The IDs of the XDP programs attached to `iface`, in any mode.
async fn xdp_programs_on(iface: &str) -> anyhow::Result<Vec<u32>> {
    let (connection, handle, _) =
        rtnetlink::new_connection().context("opening a netlink socket")?;
    let connection = tokio::spawn(connection);
    let link = handle
        .link()
        .get()
        .match_name(iface.to_owned())
        .execute()
        .try_next()
        .await;
    connection.abort();
    let link = link.with_context(|| format!("reading interface {iface}"))?;
    let mut ids: Vec<u32> = link
        .into_iter()
        .flat_map(|message| message.attributes)
        .filter_map(|attribute| match attribute {
            LinkAttribute::Xdp(xdp) => Some(xdp),
            _ => None,
        })
        .flatten()
        .filter_map(|xdp| match xdp {
            LinkXdp::ProgId(id)
            | LinkXdp::DrvProgId(id)
            | LinkXdp::SkbProgId(id)
            | LinkXdp::HwProgId(id) => Some(id),
            _ => None,
        })
        .filter(|&id| id != 0)
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}
