//! Builds the eBPF crate for bpfel-unknown-none with the nightly toolchain and
//! leaves the object in OUT_DIR, from where `src/lib.rs` embeds it.
use anyhow::Context as _;

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../ebpf");
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "xdp-lb-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .context(
        "building the eBPF programs failed; run scripts/setup (it installs the nightly rust-src \
         component and bpf-linker) and check that /usr/lib/llvm-22/bin is first on PATH",
    )
}
