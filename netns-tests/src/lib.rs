//! netns/veth rigs for xlb's scenario tests and benchmarks.
//!
//! A [`Rig`] owns network namespaces and everything in them — veth pairs,
//! addresses, routes, processes, echo servers, a private bpffs — and removes
//! all of it when dropped. [`topology`] builds the usual shapes (two hosts,
//! client → LB → backends, nodes with pods, ECMP in front of several LBs).
//! [`sweep()`] removes what a crashed run left behind.
//!
//! The rules of DESIGN.md ("Test network rules") are enforced here, not just
//! followed: a rig never changes the root network namespace (or runs a
//! closure there), refuses addresses outside 198.18.0.0/15 and 2001:2::/48,
//! refuses default routes that do not go via one of its own addresses, and
//! names everything `xlb-rig-...` so leftovers can be found.
//!
//! ```no_run
//! use netns_tests::{EchoClient, HostKind, Proto, topology::{Family, Options, TwoHosts}};
//!
//! # fn main() -> netns_tests::Result<()> {
//! let mut hosts = TwoHosts::build(HostKind::Wire, &Options::default())?;
//! let server = hosts.b.socket(Family::V6, 7000);
//! hosts.rig.serve_echo(&hosts.b.netns, Proto::Tcp, server, "b")?;
//! let answers = EchoClient::new(&hosts.a.netns).tcp(server, 3)?;
//! assert!(answers.iter().all(|echo| echo.server == "b"));
//! # Ok(())
//! # }
//! ```

mod addr;
mod bpffs;
mod cmd;
mod counters;
mod echo;
mod error;
mod names;
mod netns;
mod process;
mod rig;
mod route;
mod server;
mod steering;
mod sweep;
pub mod topology;
mod veth;
mod wait;
mod xdp;

pub mod agent_rig;
pub mod bird;
pub mod dsr_lb;
pub mod ecmp_rig;
pub mod fabric;
pub mod http;
pub mod kube_fabric;
pub mod lb_scenario;
pub mod packets;
pub mod parser_run;
pub mod raw_socket;
pub mod stream;

pub use addr::{Cidr, Mac, RIG_RANGE_V4, RIG_RANGE_V6, is_rig_address};
pub use counters::LinkStats;
pub use echo::{Echo, EchoClient, EchoServer, Proto};
pub use error::{Error, Result};
pub use names::{PREFIX, process_prefix};
pub use netns::{Netns, ensure_not_root_thread};
pub use rig::{Rig, RigOptions, Spawned, Switch};
pub use route::{Nexthop, Route};
pub use sweep::{Leftovers, SweepReport, leftovers, sweep, sweep_orphans};
pub use veth::{HostKind, Offloads, Veth, VethEnd, VethOptions};
pub use wait::{wait_for, wait_until};
pub use xdp::attach_lb;
