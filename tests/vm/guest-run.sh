# Stage 2 of the test VM's boot (PID 1, now in the host's tree; see tests/vm/run.sh): run the command with its
# output on a pipe to the virtio console, stop whatever it left running, record its exit status, power off.
bb=/run/vm/busybox
ctl=$1
# Held open for the whole run: raw mode (no \n -> \r\n) lasts only while the console is open.
exec 3<>/dev/hvc0
$bb stty raw -echo <&3
$bb mkfifo /run/vm/out
$bb cat /run/vm/out >&3 &
copier=$!
# Tells the host the boot worked: a guest that never writes this is booted again (tests/vm/run.sh).
: >"$ctl/started"
/bin/bash "$ctl/command.sh" </dev/null >/run/vm/out 2>&1 3>&-
rc=$?
# Processes the command left behind may still hold the output pipe open; stop them so the copier sees its end.
for signal in TERM KILL; do
  $bb sleep 0.2
  [ -d "/proc/$copier" ] || break
  for dir in /proc/[0-9]*; do
    pid=${dir#/proc/}
    [ "$pid" = 1 ] || [ "$pid" = "$copier" ] || [ ! -s "$dir/cmdline" ] && continue
    kill "-$signal" "$pid" 2>/dev/null
  done
done
wait "$copier"
echo "$rc" >"$ctl/rc"
$bb sync
$bb poweroff -f
$bb sleep 60
