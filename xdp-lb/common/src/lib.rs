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
/// type or meaning changes, so that an agent never reinterprets older bytes.
/// Not for a counter array that gains a slot (a new verdict): the loader
/// makes such an array anew, the state kept (`stats::renew_resized_counters`
/// of the loader).
pub const LAYOUT_VERSION: u32 = 9;
