#!/usr/bin/env bash
# The project's test command (`npm test`): installs the Debian tools the real-client suites need, runs the whole
# bun test suite with its output teed to a log (default .artifacts/test-all.log, override with TEST_LOG), and
# exits with bun's status.
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-deps.sh || { echo "test-all: scripts/install-deps.sh failed" >&2; exit 1; }

log="${TEST_LOG:-.artifacts/test-all.log}"
mkdir -p "$(dirname "$log")"
echo "test-all: running bun test, log in $log"
# Real clients and daemon restarts take seconds; a stuck test still fails within a minute.
node_modules/.bin/bun test --timeout 60000 "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test-all: bun test exited with status $status"
exit "$status"
