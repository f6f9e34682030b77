#!/usr/bin/env bash
# bench/kernel.sh - the kernel path (fio libaio on /dev/nbdX) against nbd-client + nbdkit memory, inside the test
# VM (this machine's kernel has no NBD driver). Options go to bench/kernel-bench.ts (--help lists them).
# Needs root and the VM packages: scripts/install-vm-deps.sh installs them. See docs/BENCHMARKS.md.
set -euo pipefail

cd "$(dirname "$0")/.."

for a in "$@"; do
  case "$a" in -h|--help) exec node_modules/.bin/bun bench/kernel-bench.ts --help ;; esac
done
bash scripts/install-vm-deps.sh
[ -x node_modules/.bin/bun ] || { echo "bench/kernel.sh: run npm install first" >&2; exit 2; }
exec tests/vm/run.sh --timeout 3600 --cpus 2 -- bash -c 'modprobe nbd nbds_max=4 && node_modules/.bin/bun bench/kernel-bench.ts "$@"' kernel-bench "$@"
