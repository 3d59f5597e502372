//! netns/veth rigs for xlb's scenario tests and benchmarks.
