# xlb — every target runs scripts/setup first (idempotent, fast when nothing is missing).
#
#   make demo    build, then run the demo in a throwaway netns rig (needs root)
#   make test    formatting, lints, every test (needs root: netns rigs, BPF)
#   make bench   criterion benchmarks and xlb-bench measurements; regenerates BENCHMARKS.md
#   make fuzz    a million random and mutated frames through xdp_lb, checked (needs root)
#   make fmt     format the workspace
#   make lint    rustfmt --check and clippy -D warnings

SHELL := /bin/bash
# bpf-linker must find LLVM 22's tools first; cargo-installed tools live in ~/.cargo/bin.
export PATH := /usr/lib/llvm-22/bin:$(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo

.PHONY: setup demo test bench fuzz fmt lint build

setup:
	@scripts/setup

build: setup
	$(CARGO) build --release --workspace --bins

# The demo runs the xlb agent built next to it: build both binaries.
demo: setup
	$(CARGO) build --release -p control-plane -p netns-tests --bins
	target/release/xlb-demo

lint: setup
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

test: lint
	scripts/root-ns-guard snapshot target/root-ns.before
	$(CARGO) test --workspace --no-fail-fast
	@echo "--- verifier cost of every program"
	@$(CARGO) test -q -p xdp-lb --test verifier -- --nocapture 2>&1 | grep '^verifier:'
	scripts/root-ns-guard verify target/root-ns.before

# BENCHMARKS.md and docs/bench/*.svg are regenerated from the JSON of this run.
bench: setup
	$(CARGO) bench -p consistent-hash
	$(CARGO) build --release -p bench-tools
	target/release/xlb-bench maglev --backends 1000 --size 65537 --json target/xlb-bench-maglev.json
	target/release/xlb-bench verifier --json target/xlb-bench-verifier.json
	target/release/xlb-bench prog --json target/xlb-bench-prog.json
	target/release/xlb-bench sync --flows 400000 --json target/xlb-bench-sync.json
	target/release/xlb-bench rig --services 1,1000,10000 --seconds 1.5 --json target/xlb-bench-rig.json
	target/release/xlb-bench report --maglev target/xlb-bench-maglev.json \
		--verifier target/xlb-bench-verifier.json --prog target/xlb-bench-prog.json \
		--sync target/xlb-bench-sync.json --rig target/xlb-bench-rig.json \
		--out BENCHMARKS.md --plots docs/bench --notes docs/bench/notes.md

# `make test` runs 100 000 frames; this runs ten times as many, optimised.
# XLB_FUZZ_SEED=<seed from a failure> replays a run.
fuzz: setup
	XLB_FUZZ_PACKETS=1000000 $(CARGO) test --release -p xdp-lb --test fuzz -- --nocapture

fmt: setup
	$(CARGO) fmt --all
