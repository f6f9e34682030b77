#!/usr/bin/env bash
# The kernel suites: each tests/vm/*.vm.ts runs in its own throw-away VM (tests/vm/run.sh) under a Debian kernel
# with nbd.ko, so one suite's kernel state (loaded modules, devices left attached) cannot leak into the next.
# Output goes to the terminal and to a log (default .artifacts/test-kernel.log, override with KERNEL_TEST_LOG),
# which ends with bun-style totals (" N pass", " N fail") over all suites. Exit status 0 only when all passed.
#
#   scripts/test-kernel.sh                          every suite
#   scripts/test-kernel.sh tests/vm/ext4.vm.ts      some of them
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-vm-deps.sh || { echo "test-kernel: scripts/install-vm-deps.sh failed" >&2; exit 1; }
[ -x node_modules/.bin/bun ] || { echo "test-kernel: node_modules/.bin/bun missing: run npm install first" >&2; exit 1; }
tests/vm/run.sh --prepare || exit 1

log="${KERNEL_TEST_LOG:-.artifacts/test-kernel.log}"
mkdir -p "$(dirname "$log")"
: >"$log"

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(tests/vm/*.vm.ts)

total_pass=0
total_fail=0
total_skip=0
status=0
last() { grep -E "^[[:space:]]*[0-9]+ $1\$" "$2" | tail -n 1 | tr -dc '0-9'; }
for suite in "${suites[@]}"; do
  echo "test-kernel: $suite (fresh VM)" | tee -a "$log"
  out=$(mktemp)
  started=$(date +%s)
  tests/vm/run.sh --timeout 900 -- node_modules/.bin/bun test --timeout 300000 "./$suite" 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  # A console that was not in raw mode would have turned \n into \r\n.
  sed -i 's/\r$//' "$out"
  cat "$out" >>"$log"
  p=$(last pass "$out")
  f=$(last fail "$out")
  s=$(last skip "$out")
  if [ -z "$p" ] && [ -z "$f" ]; then
    echo "test-kernel: $suite printed no test summary (exit status $rc): counted as one failure" | tee -a "$log"
    f=1
  elif [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
    echo "test-kernel: $suite exited with $rc after its tests: counted as one failure" | tee -a "$log"
    f=1
  fi
  echo "test-kernel: $suite: ${p:-0} pass, ${f:-0} fail in $(($(date +%s) - started)) s" | tee -a "$log"
  total_pass=$((total_pass + ${p:-0}))
  total_fail=$((total_fail + ${f:-0}))
  total_skip=$((total_skip + ${s:-0}))
  [ "${f:-0}" -eq 0 ] || status=1
  rm -f "$out"
done

{
  echo "test-kernel: all suites"
  echo " $total_pass pass"
  [ "$total_skip" -gt 0 ] && echo " $total_skip skip"
  echo " $total_fail fail"
} | tee -a "$log"
exit "$status"
