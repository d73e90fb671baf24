# rsmc top-level Makefile. `make check` is the test command, `make vm` the test VM.
# The Kbuild file next to this one is what the kernel build reads (make module).

RSMC_CACHE ?= $(HOME)/.cache/rsmc
export RSMC_CACHE
SHELL := /bin/bash
TOP := $(CURDIR)

# DEBUG=1 selects the reliability kernel (KASAN, lockdep, kmemleak, ...).
ifeq ($(DEBUG),1)
KERNEL_FLAVOUR := --debug
endif

# KDIR= builds against a user's own Rust-enabled kernel tree instead of the cached test kernel.
export KDIR

.PHONY: all deps kernel module host-test fuzz selftests check vm demo bench clippy fmt clean

all: module

deps:
	@scripts/deps.sh

# Each recipe that needs the toolchain depends on deps (a no-op once installed).
kernel: deps
	@scripts/kernel.sh $(KERNEL_FLAVOUR)

module: deps
	@scripts/module.sh $(KERNEL_FLAVOUR) $(if $(CLIPPY),CLIPPY=1)

host-test:
	cd rust/proto && cargo test

# libFuzzer on the protocol core: FUZZ_SECONDS per target, on a corpus kept in the cache.
FUZZ_SECONDS ?= 60
fuzz:
	@scripts/fuzz.sh $(FUZZ_SECONDS)

selftests: deps
	+$(MAKE) -C selftests

check: deps
	@scripts/check.sh $(KERNEL_FLAVOUR)

# The latency table: rsmc (busy poll off/on), TCP, raw verbs, stock SMC-R, in one VM run.
demo: deps
	@scripts/demo.sh $(KERNEL_FLAVOUR)

# The same table with ten times the samples, and round trips on a new connection each; a
# 16 KiB message run as well; then a 64 KiB stream copied and with MSG_ZEROCOPY (throughput,
# sender CPU per GiB).
bench: deps
	@RSMC_DEMO_ITERS=20000 RSMC_DEMO_CONNECT_ITERS=300 scripts/demo.sh $(KERNEL_FLAVOUR)
	@RSMC_DEMO_ITERS=5000 RSMC_DEMO_SIZE=16384 scripts/demo.sh $(KERNEL_FLAVOUR)
	@$(MAKE) -s -C tools
	@qemu/run $(KERNEL_FLAVOUR) -- $(TOP)/tools/zc-bench-in-vm.sh

vm: module
	qemu/run $(KERNEL_FLAVOUR)

clippy:
	+$(MAKE) module CLIPPY=1
	cd rust/proto && cargo clippy --all-targets -- -D warnings
	cd rust/proto/fuzz && CARGO_TARGET_DIR=$(RSMC_CACHE)/fuzz/clippy cargo clippy -- -D warnings

# rustfmt follows `mod` declarations from the crate roots (config: .rustfmt.toml).
fmt:
	rustfmt --check rust/rsmc_main.rs rust/proto/host.rs rust/proto/fuzz/*.rs

clean:
	rm -rf $(RSMC_CACHE)/obj $(RSMC_CACHE)/fuzz/target $(RSMC_CACHE)/fuzz/clippy rust/proto/target selftests/out
