//! Loader for the xlb eBPF programs.
