#!/usr/bin/env bash
# `make demo`: build what is missing, boot the test VM and print the ping-pong latency table
# (rsmc with busy polling off and on, TCP, raw verbs, stock SMC-R, all in one VM run).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
"$top/scripts/deps.sh"
make -s -C "$top/tools"
exec "$top/qemu/run" "$@" -- "$top/tools/demo-in-vm.sh"
