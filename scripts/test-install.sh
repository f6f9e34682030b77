#!/usr/bin/env bash
# The install paths as a user meets them (tests/install/install.slow.ts): `npm pack`, `npm install -g` of the tarball
# with no bun on the PATH, `npx usbd-tui` and `bunx usbd-tui` from a real npm registry on loopback (verdaccio, with
# the package and its dependencies published into it), a plain `node` start without bun, and the single binary of
# `npm run build:binary` serving dedup and objstore-local devices. A few minutes (npm installs, a 110 MB compile), so
# not part of `bun test`; .ci/run calls it. Output teed to INSTALL_TEST_LOG (default .artifacts/test-install.log).
set -uo pipefail

cd "$(dirname "$0")/.."

bash scripts/install-deps.sh >/dev/null || { echo "test-install: scripts/install-deps.sh failed" >&2; exit 1; }

# verdaccio in its own folder, outside the package's dependencies. 6.8.0 with node-fetch 2.7.0: later 6.x want
# Node 22, and 6.8.0's own node-fetch range does not install as it stands.
verdaccio_dir=".cache/verdaccio"
if [ ! -x "$verdaccio_dir/node_modules/.bin/verdaccio" ]; then
  echo "test-install: installing verdaccio 6.8.0 into $verdaccio_dir"
  mkdir -p "$verdaccio_dir"
  cat >"$verdaccio_dir/package.json" <<'JSON'
{
  "name": "usbd-tui-test-registry",
  "private": true,
  "dependencies": { "verdaccio": "6.8.0" },
  "overrides": { "node-fetch": "2.7.0" }
}
JSON
  (cd "$verdaccio_dir" && npm install --no-audit --no-fund --omit=dev) || { echo "test-install: installing verdaccio failed" >&2; exit 1; }
fi

log="${INSTALL_TEST_LOG:-.artifacts/test-install.log}"
mkdir -p "$(dirname "$log")"
echo "test-install: running the install suite, log in $log"
node_modules/.bin/bun test --timeout 600000 ./tests/install/install.slow.ts "$@" 2>&1 | tee "$log"
status="${PIPESTATUS[0]}"
echo "test-install: bun test exited with status $status"
exit "$status"
