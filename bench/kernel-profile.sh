#!/usr/bin/env bash
# bench/kernel-profile.sh - where does the time go on the kernel path? Inside the test VM, attaches usbd-tui's mem
# device (netlink) and then nbd-client + nbdkit memory, runs one fio job on each once plainly and once under
# `perf record -a` (the whole guest: fio, the server, the kernel's nbd workers, idle), and prints each run's
# throughput and the guest's time by process and by symbol. Needs root and the VM packages, like bench/kernel.sh.
#
#   bench/kernel-profile.sh [--job write-1m-qd8|randread-4k-qd1|...] [--seconds S] [--top N]
#
# Jobs: randread-4k-qd1, randread-4k-qd32, read-1m-qd8, randwrite-4k-qd32, write-1m-qd8 (bench/kernel.sh's).
set -euo pipefail
cd "$(dirname "$0")/.."

JOB=write-1m-qd8 SECS=6 TOP=25 INSIDE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --job) JOB=$2; shift 2 ;;
    --seconds) SECS=$2; shift 2 ;;
    --top) TOP=$2; shift 2 ;;
    --inside) INSIDE=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "kernel-profile: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$JOB" in
  randread-4k-qd1) RW=randread BS=4k QD=1 ;;
  randread-4k-qd32) RW=randread BS=4k QD=32 ;;
  read-1m-qd8) RW=read BS=1M QD=8 ;;
  randwrite-4k-qd32) RW=randwrite BS=4k QD=32 ;;
  write-1m-qd8) RW=write BS=1M QD=8 ;;
  *) echo "kernel-profile: unknown job $JOB (see --help)" >&2; exit 2 ;;
esac

if [ "$INSIDE" = 0 ]; then
  bash scripts/install-vm-deps.sh
  [ -x node_modules/.bin/bun ] || { echo "kernel-profile: run npm install first" >&2; exit 2; }
  exec tests/vm/run.sh --timeout 900 --cpus 2 -- bash bench/kernel-profile.sh --inside --job "$JOB" --seconds "$SECS" --top "$TOP"
fi

# Inside the VM from here on.
command -v perf >/dev/null || { echo "kernel-profile: perf is missing (Debian package linux-perf)" >&2; exit 2; }
modprobe nbd nbds_max=4
work=$(mktemp -d /run/kernel-profile.XXXXXX)
job() {
  fio --name=job --filename="$1" --ioengine=libaio --direct=1 --rw="$RW" --bs="$BS" --iodepth="$QD" --time_based \
    --runtime="$SECS" --ramp_time=1 --norandommap --randrepeat=0 | grep -E 'IOPS='
}
prefill() { fio --name=prefill --filename="$1" --ioengine=libaio --direct=1 --rw=write --bs=1M --iodepth=8 >/dev/null; }
profile() { # NAME DEVICE
  echo "== $1 on $2, $JOB: plain, then under perf"
  job "$2"
  perf record -F 999 -a -o "$work/$1.data" -- bash -c "$(declare -f job); RW=$RW BS=$BS QD=$QD SECS=$SECS job $2" 2>/dev/null
}

node_modules/.bin/bun bin/usbd-tui.ts --headless --store-size=256MiB --log-level=warn >"$work/usbd.log" 2>&1 &
usbd=$!
for _ in $(seq 300); do grep -q "as /dev/nbd" "$work/usbd.log" && break; sleep 0.2; done
dev=$(grep -o '/dev/nbd[0-9]*' "$work/usbd.log" | head -n 1)
[ -n "$dev" ] || { cat "$work/usbd.log" >&2; exit 1; }
prefill "$dev"
profile usbd-tui "$dev"
kill -TERM "$usbd"; wait "$usbd"

nbdkit -f -U "$work/nbdkit.sock" memory 256M & nbdkit=$!
for _ in $(seq 100); do [ -S "$work/nbdkit.sock" ] && break; sleep 0.1; done
peer=/dev/nbd$(for i in 0 1 2 3; do [ -e /sys/block/nbd$i/pid ] || { echo $i; break; }; done)
nbd-client -unix "$work/nbdkit.sock" "$peer" -b 4096 -N "" >/dev/null
prefill "$peer"
profile nbdkit "$peer"
nbd-client -d "$peer" >/dev/null
kill "$nbdkit"; wait "$nbdkit" || true

for name in usbd-tui nbdkit; do
  for sort in comm,dso comm,sym; do
    echo "=== $name: guest time by $sort"
    # head closes the pipe early: not a failure.
    perf report -i "$work/$name.data" --no-children --sort "$sort" --stdio 2>/dev/null | grep -v -e '^#' -e '^$' | head -n "$TOP" || true
  done
done
rm -rf "$work"
