#!/usr/bin/env bash
# bench/run.sh - usbd-tui vs nbdkit (dedup also vs usbd-tui mem, objstore also vs usbd-tui file) over NBD (fio nbd
# engine + nbdcopy), servers alternating job by job.
#
#   bench/run.sh [--rounds N] [--runtime S] [--devices mem,file,dedup,objstore] [--jobs a,b] [--pin split|same|none] ...
#   bench/run.sh --help        all options
#
# Checks that the tools are present, then runs bench/bench.ts with the project's bun. Raw results go to
# bench/results/*.json (gitignored); the Markdown table is printed on stdout. See docs/BENCHMARKS.md.
set -euo pipefail

cd "$(dirname "$0")/.."

BUN=node_modules/.bin/bun
[ -x "$BUN" ] || BUN=$(command -v bun || true)

missing=()
need() {  # need TOOL PACKAGE
  command -v "$1" >/dev/null 2>&1 || missing+=("$1 (Debian package $2)")
}
need fio fio
need nbdkit nbdkit
need nbdcopy libnbd-bin
need nbdinfo libnbd-bin
need taskset util-linux
need git git
[ -n "$BUN" ] || missing+=("bun (npm devDependency: npm install)")

if command -v fio >/dev/null 2>&1 && ! fio --enghelp=nbd >/dev/null 2>&1; then
  missing+=("fio's nbd engine (this fio was built without libnbd; Debian's fio >= 3.2x has it)")
fi
if command -v nbdkit >/dev/null 2>&1; then
  for plugin in memory file; do
    nbdkit --dump-plugin "$plugin" >/dev/null 2>&1 || missing+=("nbdkit's $plugin plugin (Debian package nbdkit)")
  done
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "bench: missing tools:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  echo "bench: scripts/install-deps.sh installs them (as root: apt-get install fio nbdkit libnbd-bin util-linux)" >&2
  exit 2
fi

for a in "$@"; do
  case "$a" in -h|--help|--aa) skip_cli_check=1;; esac
done
if [ -z "${skip_cli_check:-}" ] && [ ! -f bin/usbd-tui.ts ]; then
  echo "bench: bin/usbd-tui.ts is missing: the usbd-tui CLI is needed (or use --aa to check the harness with nbdkit alone)" >&2
  exit 2
fi

exec "$BUN" bench/bench.ts "$@"
