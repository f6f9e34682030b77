#!/usr/bin/env bash
# The engine against hostile clients through the real daemon (tests/robustness/*.robust.ts): floods that never read
# their replies (bounded memory), the handshake timeout, connection and descriptor limits, the accept queue, the Unix
# socket's mode, and about 45 s of fuzzing (USBD_FUZZ_SECONDS to change it, USBD_FUZZ_SEED to replay). About three
# minutes, so it is not part of `bun test`; .ci/run calls it. Output teed to ROBUSTNESS_TEST_LOG (default
# .artifacts/test-robustness.log).
#
#   scripts/test-robustness.sh                                   every suite
#   scripts/test-robustness.sh ./tests/robustness/fuzz.robust.ts one of them
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null || { echo "test-robustness: scripts/install-deps.sh failed" >&2; exit 1; }

log="${ROBUSTNESS_TEST_LOG:-.artifacts/test-robustness.log}"
mkdir -p "$(dirname "$log")"
suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(./tests/robustness/*.robust.ts)
echo "test-robustness: running ${suites[*]}, log in $log"
node_modules/.bin/bun test --timeout 300000 "${suites[@]}" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test-robustness: bun test exited with status $status"
exit "$status"
