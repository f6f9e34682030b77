#!/usr/bin/env bash
# azurite is only ever started by tests/helpers/azurite-server.ts, always with --disableTelemetry (no traffic off the machine).
# The objstore device on every remote backend through the real daemon and real clients (tests/clients/
# objstore-backends.slow.ts: fio verify, cold reopen, the store stopped mid-upload, wrong credentials, for azure on
# azurite, swift and s3 on Debian's Swift, sftp on openssh-server). 2 to 5 minutes here (1.7 quiet, 4.5 on a busy box), so not part of
# `bun test`; .ci/run calls it. Output teed to BACKENDS_TEST_LOG (default .artifacts/test-backends.log).
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null || { echo "test-backends: scripts/install-deps.sh failed" >&2; exit 1; }

log="${BACKENDS_TEST_LOG:-.artifacts/test-backends.log}"
mkdir -p "$(dirname "$log")"
echo "test-backends: running the objstore backend suite, log in $log"
node_modules/.bin/bun test --timeout 180000 ./tests/clients/objstore-backends.slow.ts "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test-backends: bun test exited with status $status"
exit "$status"
