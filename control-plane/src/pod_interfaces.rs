//! `--pod-interfaces GLOB`: the host sides of pod veths (`veth*`, `lxc*`,
//! `cali*`, ...), followed as they appear and disappear, so the agent can
//! attach the TC programs to each (DESIGN.md, "Which hook where").
//!
//! The kernel tells: a route netlink socket subscribed to the link group
//! (what `ip monitor link` reads) reports every new, changed, renamed and
//! deleted interface of the calling thread's network namespace. The
//! subscription is made before the first listing, so an interface created
//! in between is reported twice at worst, never missed; the events are
//! reduced to changes of the set of matching interfaces.

use std::collections::BTreeMap;

use anyhow::Context as _;
use futures::{StreamExt as _, TryStreamExt as _};
use netlink_packet_route::{
    RouteNetlinkMessage,
    link::{LinkAttribute, LinkMessage},
};
use rtnetlink::{
    MulticastGroup, new_multicast_connection,
    packet_core::{NetlinkMessage, NetlinkPayload},
};
use tokio::sync::mpsc;

/// A change of the set of pod interfaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodInterfaceEvent {
    /// An interface whose name matches appeared (or was renamed to match).
    Added { name: String, index: u32 },
    /// A matching interface was deleted (or renamed away); `name` is the
    /// name it matched under.
    Removed { name: String, index: u32 },
}

/// Which interfaces are pod interfaces, and which of them exist.
#[derive(Debug)]
pub struct PodInterfaces {
    pattern: glob::Pattern,
    /// The matching interfaces by index.
    known: BTreeMap<u32, String>,
}

impl PodInterfaces {
    /// Interfaces named like `pattern` (shell glob: `*`, `?`, `[...]`).
    pub fn new(pattern: &str) -> anyhow::Result<Self> {
        let pattern = glob::Pattern::new(pattern)
            .with_context(|| format!("--pod-interfaces {pattern:?} is not a valid glob"))?;
        Ok(Self {
            pattern,
            known: BTreeMap::new(),
        })
    }

    /// The matching interfaces now known, by name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.known.values().map(String::as_str)
    }

    /// Applies one link message (new or changed: `exists`, or deleted) and
    /// returns the changes of the set it makes, in order.
    fn apply(&mut self, index: u32, name: Option<&str>, exists: bool) -> Vec<PodInterfaceEvent> {
        let mut events = Vec::new();
        let matching = exists && name.is_some_and(|n| self.pattern.matches(n));
        let before = self.known.get(&index).cloned();
        match (before, matching) {
            (Some(old), true) if name == Some(old.as_str()) => {}
            (Some(old), keep) => {
                self.known.remove(&index);
                events.push(PodInterfaceEvent::Removed { name: old, index });
                if keep {
                    events.extend(self.add(index, name));
                }
            }
            (None, true) => events.extend(self.add(index, name)),
            (None, false) => {}
        }
        events
    }

    fn add(&mut self, index: u32, name: Option<&str>) -> Option<PodInterfaceEvent> {
        let name = name?.to_owned();
        self.known.insert(index, name.clone());
        Some(PodInterfaceEvent::Added { name, index })
    }

    /// Starts following the interfaces of the calling thread's network
    /// namespace: lists them (the `Added` events of those that match come
    /// first on the channel), then reports every change until the receiver
    /// is dropped. The task runs on the current Tokio runtime.
    pub async fn follow(mut self) -> anyhow::Result<mpsc::UnboundedReceiver<PodInterfaceEvent>> {
        let (connection, handle, mut messages) = new_multicast_connection(&[MulticastGroup::Link])
            .context("opening a route netlink socket for link events")?;
        tokio::spawn(connection);
        let (tx, rx) = mpsc::unbounded_channel();
        let mut listing = handle.link().get().execute();
        while let Some(link) = listing
            .try_next()
            .await
            .context("listing the network interfaces")?
        {
            let (index, name) = identify(&link);
            for event in self.apply(index, name.as_deref(), true) {
                let _ = tx.send(event);
            }
        }
        tokio::spawn(async move {
            // `handle` keeps the connection's request side open.
            let _handle = handle;
            while let Some((message, _)) = messages.next().await {
                for event in self.on_message(message) {
                    if tx.send(event).is_err() {
                        return;
                    }
                }
            }
            tracing::warn!("the link event socket closed: pod interfaces are no longer followed");
        });
        Ok(rx)
    }

    fn on_message(
        &mut self,
        message: NetlinkMessage<RouteNetlinkMessage>,
    ) -> Vec<PodInterfaceEvent> {
        match message.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(link)) => {
                let (index, name) = identify(&link);
                self.apply(index, name.as_deref(), true)
            }
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(link)) => {
                let (index, name) = identify(&link);
                self.apply(index, name.as_deref(), false)
            }
            _ => Vec::new(),
        }
    }
}

/// A link message's interface index and name.
fn identify(link: &LinkMessage) -> (u32, Option<String>) {
    let name = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    });
    (link.header.index, name)
}

#[cfg(test)]
mod tests {
    use super::{PodInterfaceEvent::*, *};

    #[test]
    fn the_set_follows_new_renamed_and_deleted_links() {
        let mut pods = PodInterfaces::new("veth*").unwrap();
        assert_eq!(pods.apply(1, Some("lo"), true), []);
        let added = |name: &str, index| Added {
            name: name.into(),
            index,
        };
        let removed = |name: &str, index| Removed {
            name: name.into(),
            index,
        };
        assert_eq!(pods.apply(7, Some("veth1"), true), [added("veth1", 7)]);
        // A state change repeats the link: nothing changes.
        assert_eq!(pods.apply(7, Some("veth1"), true), []);
        // Renamed within the pattern, then away from it.
        assert_eq!(
            pods.apply(7, Some("veth9"), true),
            [removed("veth1", 7), added("veth9", 7)]
        );
        assert_eq!(pods.apply(7, Some("eth7"), true), [removed("veth9", 7)]);
        assert_eq!(pods.apply(8, Some("veth2"), true), [added("veth2", 8)]);
        assert_eq!(pods.names().collect::<Vec<_>>(), ["veth2"]);
        assert_eq!(pods.apply(8, Some("veth2"), false), [removed("veth2", 8)]);
        // Deleting what was never a pod interface changes nothing.
        assert_eq!(pods.apply(7, Some("eth7"), false), []);
    }

    #[test]
    fn an_invalid_glob_is_refused_with_the_flag_named() {
        let error = PodInterfaces::new("veth[").unwrap_err();
        assert!(
            format!("{error:#}").contains("--pod-interfaces"),
            "{error:#}"
        );
    }
}
