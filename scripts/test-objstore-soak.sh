#!/usr/bin/env bash
# The objstore's long crash and consistency runs, too slow for `bun test` (about three minutes on a quiet 2-core box:
# 2.7 s per kill, 28 s for the copies): the SIGKILL crash test with more kills (OBJSTORE_CRASH_ITERATIONS, default
# 50; `bun test` runs 16), and the bucket-copy test
# with more copies of a longer ext4 workload (OBJSTORE_BUCKET_COPIES, default 12, of OBJSTORE_BUCKET_FILES, 60).
# .ci/run calls it. Output teed to SOAK_TEST_LOG (default .artifacts/test-objstore-soak.log).
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null || { echo "test-objstore-soak: scripts/install-deps.sh failed" >&2; exit 1; }

log="${SOAK_TEST_LOG:-.artifacts/test-objstore-soak.log}"
mkdir -p "$(dirname "$log")"
echo "test-objstore-soak: running the objstore crash and bucket-copy soak, log in $log"
OBJSTORE_CRASH_ITERATIONS="${OBJSTORE_CRASH_ITERATIONS:-50}" \
OBJSTORE_BUCKET_COPIES="${OBJSTORE_BUCKET_COPIES:-12}" \
OBJSTORE_BUCKET_FILES="${OBJSTORE_BUCKET_FILES:-60}" \
  node_modules/.bin/bun test --timeout 900000 ./tests/devices/objstore-crash.test.ts ./tests/clients/objstore-bucket.test.ts "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test-objstore-soak: bun test exited with status $status"
exit "$status"
