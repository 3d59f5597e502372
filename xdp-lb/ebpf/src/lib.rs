//! The xlb eBPF programs. Only the binary target (`src/main.rs`) holds code; this
//! empty library lets the loader name the crate as a build dependency so cargo
//! rebuilds the programs when they change.
#![no_std]
