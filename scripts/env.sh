# Sourced by the build scripts: toolchain paths and cache locations shared by all of them.
# The kernel's Rust needs Debian's rustc-web (it ships rust-src); rustup's rustc does not.
RSMC_CACHE=${RSMC_CACHE:-$HOME/.cache/rsmc}
export RSMC_CACHE
export PATH=/usr/lib/llvm-19/bin:$RSMC_CACHE/bindgen/bin:$PATH
export KRUSTC=/usr/bin/rustc
export KLLVM=-19
rsmc_kernel_src() {
	if [ -n "${RSMC_KSRC_VERSION:-}" ]; then
		echo "$RSMC_CACHE/src/linux-$RSMC_KSRC_VERSION"
	else
		echo "$RSMC_CACHE/src/$(cat "$RSMC_CACHE/src/current")"
	fi
}
