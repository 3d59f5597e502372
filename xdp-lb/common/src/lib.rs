//! Map keys and values shared by the xlb eBPF programs and their loader.
//!
//! Every type here crosses the kernel/user boundary byte for byte, so each one is
//! `#[repr(C)]`, `Copy`, has no `bool`/enum/`Option` fields, spells out its padding,
//! and has its size pinned by a `const` assertion. With the `user` feature each
//! type implements `aya::Pod` so the loader can read and write it in maps.
//! The checksum arithmetic lives here too, so that it is tested on the host and
//! run unchanged in the kernel.
#![no_std]

mod pod;

pub mod addr;
pub mod affinity;
pub mod backend;
pub mod bench;
pub mod config;
pub mod conntrack;
pub mod csum;
pub mod events;
pub mod flow_table;
pub mod fragment;
pub mod neighbour;
pub mod probe;
pub mod select;
pub mod service;
pub mod stats;

/// Version of the pinned map layout. Bumped whenever a pinned map's key, value,
/// type, meaning or fixed size changes (a counter array indexed by an enum
/// grows with it), so that an agent never reinterprets older bytes nor
/// counts into slots an older map does not have. 10: `VERDICT_STATS` holds
/// `drop_fragment_untracked`.
pub const LAYOUT_VERSION: u32 = 10;
