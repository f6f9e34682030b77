#!/usr/bin/env bash
# bench/profile.sh - where does usbd-tui's time go for one fio job?
#
#   bench/profile.sh [--dev mem|file] [--job write-1m-qd8] [--seconds 8] [--out DIR] [--cpu-prof]
#
# Starts usbd-tui pinned to CPU 0 (the benchmark's split policy), prefills the export, runs the fio job pinned to
# CPU 1, and records the whole box with `perf record -a -g` while the job runs (so kernel work on the server's
# behalf - page faults, socket copies - and any process or kernel thread that competes is visible). Prints the top
# symbols of the server process and of the whole box, and the server's page faults and context switches per request
# (perf stat). With --cpu-prof the server also runs under bun's sampling profiler and the Markdown profile lands
# in DIR (JS function names, which perf cannot resolve in JIT code).
set -euo pipefail
cd "$(dirname "$0")/.."

DEV=mem JOB=write-1m-qd8 SECS=8 OUT="" CPUPROF=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=$2; shift 2;;
    --job) JOB=$2; shift 2;;
    --seconds) SECS=$2; shift 2;;
    --out) OUT=$2; shift 2;;
    --cpu-prof) CPUPROF=1; shift;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    *) echo "unknown option $1" >&2; exit 2;;
  esac
done
case "$JOB" in
  randread-4k-qd1) RW=randread BS=4k QD=1;;   randread-4k-qd32) RW=randread BS=4k QD=32;;
  randwrite-4k-qd1) RW=randwrite BS=4k QD=1;; randwrite-4k-qd32) RW=randwrite BS=4k QD=32;;
  read-1m-qd8) RW=read BS=1M QD=8;;           write-1m-qd8) RW=write BS=1M QD=8;;
  *) echo "unknown job $JOB" >&2; exit 2;;
esac
for t in perf fio nbdinfo taskset; do command -v $t >/dev/null || { echo "profile: $t is missing" >&2; exit 2; }; done
BUN=node_modules/.bin/bun
OUT=${OUT:-bench/results/profile-$DEV-$JOB-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
SCRATCH=$(mktemp -d /dev/shm/usbd-profile.XXXXXX)
SOCK=$SCRATCH/usbd.sock
PROF=()
[ "$CPUPROF" = 1 ] && PROF=(--cpu-prof --cpu-prof-md --cpu-prof-dir="$OUT")

taskset -c 0 "$BUN" "${PROF[@]}" bin/usbd-tui.ts --headless --dev-type="$DEV" --store-size=1GiB \
  --store-dir="$SCRATCH" --store-name=profile --listen "unix:$SOCK" > "$OUT/server.log" 2>&1 &
SRV=$!
trap 'kill -TERM $SRV 2>/dev/null || true; wait $SRV 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT
for _ in $(seq 200); do grep -qE '^\s*URI:' "$OUT/server.log" 2>/dev/null && break; sleep 0.1; done
URI=$(grep -oE '^\s*URI:\s+\S+' "$OUT/server.log" | awk '{print $2}')
[ -n "$URI" ] || { echo "profile: server did not start" >&2; cat "$OUT/server.log" >&2; exit 1; }
until nbdinfo --size "$URI" >/dev/null 2>&1; do sleep 0.1; done
taskset -c 1 fio --name=prefill --ioengine=nbd --uri="$URI" --rw=write --bs=1M --iodepth=8 --output=/dev/null

fio_cmd=(taskset -c 1 fio --name="$JOB" --ioengine=nbd --uri="$URI" --rw=$RW --bs=$BS --iodepth=$QD --time_based
  --runtime="$SECS" --ramp_time=1 --norandommap --randrepeat=0 --output-format=json --output="$OUT/fio.json")
"${fio_cmd[@]}" &
FIO=$!
sleep 1.5
EVENTS=task-clock,page-faults,context-switches,cpu-migrations
TRACEPOINTS=$(perf list tracepoint 2>/dev/null || true)
for sc in recvfrom sendto epoll_wait madvise mmap munmap; do
  case "$TRACEPOINTS" in *"syscalls:sys_enter_$sc "*) EVENTS="$EVENTS,syscalls:sys_enter_$sc";; esac
done
perf stat -p $SRV -e "$EVENTS" -o "$OUT/perf-stat.txt" -- sleep $((SECS - 3)) &
STAT=$!
perf record -a -g -o "$OUT/perf.data" -- sleep $((SECS - 3)) 2> "$OUT/perf-record.log"
wait $FIO || true
wait $STAT || true

python3 - "$OUT/fio.json" "$OUT/perf-stat.txt" "$BS" <<'EOF'
import json, re, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
d = j["read"] if j["read"]["io_bytes"] else j["write"]
stat = open(sys.argv[2]).read()
num = lambda name: float(re.search(r"([\d,.]+)\s+(?:msec\s+)?" + name, stat).group(1).replace(",", ""))
secs = float(re.search(r"([\d.]+) seconds time elapsed", stat).group(1))
reqs = d["iops"] * secs
print(f"fio: {d['iops']:.0f} IOPS, {d['bw_bytes']/1e9:.2f} GB/s")
print(f"server per request: {num('task-clock')*1000/reqs:.1f} us CPU, {num('page-faults')/reqs:.2f} page faults, "
      f"{num('context-switches')/reqs:.3f} context switches")
sc = re.findall(r"([\d,]+)\s+syscalls:sys_enter_(\w+)", stat)
if sc:
    print("server syscalls per request: " + ", ".join(f"{n} {int(v.replace(',', ''))/reqs:.2f}" for v, n in sc))
EOF
echo "--- server process, top symbols (self) ---"
perf report -i "$OUT/perf.data" --pid $SRV --no-children --sort dso,sym --stdio 2>/dev/null | grep -E '^\s+[0-9]' | head -25
echo "--- whole box, by command (self) ---"
perf report -i "$OUT/perf.data" --no-children --sort comm --stdio 2>/dev/null | grep -E '^\s+[0-9]' | head -10
echo "profile data in $OUT (perf report -i $OUT/perf.data; cpu profile *.md with --cpu-prof)"
