#!/usr/bin/env bash
# tests/vm/run.sh: runs one command as root inside a throw-away QEMU VM that boots this machine's Debian kernel
# (whose modules include nbd.ko), sees the host's filesystem, and returns the command's exit status. It exists
# because the host kernel has no NBD driver; the kernel-attach suites run through it (scripts/test-kernel.sh).
#
#   tests/vm/run.sh [--timeout S] [--mem SIZE] [--cpus N] [--console] -- COMMAND [ARGS...]
#   tests/vm/run.sh --prepare        build the boot files only (kernel image, initramfs) and exit
#
# What the guest sees: the host's / read-only under a tmpfs overlay (writes land in guest memory and vanish),
# the current directory and /tmp read-write (shared with the host), and its own /proc, /sys, /dev, /run. The
# command runs in the current directory with stdin from /dev/null; its stdout and stderr (merged) arrive on our
# stdout. Exit status: the command's, 124 on --timeout, 125 when the VM failed before reporting one. A guest that
# has not started the command within USBD_VM_BOOT_TIMEOUT seconds (default 120) is killed and booted again, up to
# three boots in all.
#
# Needs root (virtiofsd) and the Debian packages qemu-system-x86, linux-image-amd64, busybox-static and cpio:
# scripts/install-vm-deps.sh installs them. The VM runs under TCG: this machine's /dev/kvm (when present) is
# paravirtual and cannot run a stock kernel. Boot files are cached in $USBD_VM_CACHE (default /var/tmp/usbd-tui-vm).
set -euo pipefail

timeout_s=0
mem=2G
cpus=$(nproc)
[ "$cpus" -gt 4 ] && cpus=4
console=0
prepare_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --timeout) timeout_s=$2; shift 2 ;;
    --mem) mem=$2; shift 2 ;;
    --cpus) cpus=$2; shift 2 ;;
    --console) console=1; shift ;;
    --prepare) prepare_only=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "vm: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ $# -eq 0 ] && [ "$prepare_only" = 0 ]; then
  echo "vm: no command given; usage: tests/vm/run.sh [options] -- COMMAND [ARGS...]" >&2
  exit 2
fi

say() { echo "vm: $*" >&2; }
[ "$(id -u)" = 0 ] || { say "must run as root (virtiofsd shares the host filesystem)"; exit 2; }

virtiofsd=""
for candidate in /usr/libexec/virtiofsd /usr/lib/qemu/virtiofsd /usr/lib/virtiofsd; do
  [ -x "$candidate" ] && { virtiofsd=$candidate; break; }
done
kver=$(ls /boot/vmlinuz-* 2>/dev/null | sed 's|^/boot/vmlinuz-||' | sort -V | while read -r v; do
  [ -f "/lib/modules/$v/modules.dep" ] && echo "$v"; done | tail -n 1)
missing=()
command -v qemu-system-x86_64 >/dev/null || missing+=(qemu-system-x86)
[ -n "$kver" ] || missing+=(linux-image-amd64)
[ -n "$virtiofsd" ] || missing+=("virtiofsd (qemu-system-common)")
{ [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; } || missing+=(busybox-static)
command -v cpio >/dev/null || missing+=(cpio)
if [ ${#missing[@]} -gt 0 ]; then
  say "missing ${missing[*]}: run scripts/install-vm-deps.sh"
  exit 125
fi

cache=${USBD_VM_CACHE:-/var/tmp/usbd-tui-vm}
mkdir -p "$cache"
here=$(cd "$(dirname "$0")" && pwd -P)
# The initramfs is rebuilt whenever the guest init scripts or the kernel change.
init_hash=$(cat "$here/guest-init.sh" "$here/guest-run.sh" | sha256sum | cut -c1-12)
initrd=$cache/initrd-$kver-$init_hash.cpio
vmlinux=$cache/vmlinux-$kver

# An uncompressed ELF kernel boots through its PVH entry point, skipping seconds of decompression under TCG.
extract_vmlinux() {
  local image=/boot/vmlinuz-$kver tmp=$vmlinux.partial offset
  for offset in $(LC_ALL=C grep -abo $'\xfd7zXZ\x00' "$image" | cut -d: -f1 | head -n 3); do
    tail -c +"$((offset + 1))" "$image" | xz -dc --single-stream >"$tmp" 2>/dev/null || true
    if [ "$(head -c 4 "$tmp" | od -An -tx1 | tr -d ' \n')" = 7f454c46 ]; then
      mv "$tmp" "$vmlinux"
      return 0
    fi
  done
  rm -f "$tmp"
  return 1
}
kernel=/boot/vmlinuz-$kver
if grep -qx 'CONFIG_PVH=y' "/boot/config-$kver" 2>/dev/null && { [ -s "$vmlinux" ] || extract_vmlinux; }; then
  kernel=$vmlinux
fi

build_initrd() {
  local root module n=0 name
  root=$(mktemp -d "$cache/initrd.XXXXXX")
  mkdir -p "$root"/{bin,dev,proc,sys,host,newroot,overlay,modules}
  cp /bin/busybox "$root/bin/busybox"
  for applet in sh mount umount mkdir insmod switch_root cat sleep poweroff; do ln -s busybox "$root/bin/$applet"; done
  # Modules in dependency order, decompressed (busybox insmod cannot read .ko.xz).
  while read -r verb module _; do
    [ "$verb" = insmod ] || continue
    n=$((n + 1))
    name=$(printf '%02d-%s' "$n" "$(basename "${module%.xz}")")
    case "$module" in
      *.xz) xz -dc "$module" >"$root/modules/$name" ;;
      *) cp "$module" "$root/modules/$name" ;;
    esac
  done < <(for m in virtio_pci virtio_console virtiofs overlay; do modprobe -S "$kver" --show-depends "$m"; done | awk '!seen[$0]++')
  cp "$here/guest-init.sh" "$root/init"
  cp "$here/guest-run.sh" "$root/guest-run.sh"
  chmod 755 "$root/init"
  (cd "$root" && find . -mindepth 1 | cpio -o -H newc --quiet) >"$initrd.partial"
  mv "$initrd.partial" "$initrd"
  rm -rf "$root"
}
[ -s "$initrd" ] || build_initrd
if [ "$prepare_only" = 1 ]; then
  say "ready: kernel $kernel, initramfs $initrd"
  exit 0
fi

# Per-run control directory (under /tmp, which the guest shares): the command, its environment, the exit status.
ctl=$(mktemp -d /tmp/usbd-vm.XXXXXX)
chmod 755 "$ctl"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$ctl"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cwd=$(pwd -P)
{
  echo "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  echo "export HOME=/root TERM=dumb LANG=C.UTF-8 USBD_IN_VM=1"
  # The caller's test settings come along; nothing else from its environment does.
  { env | grep -E '^(USBD_[A-Z0-9_]*|CI|BUN_[A-Z0-9_]*)=' || true; } | while IFS='=' read -r k v; do printf 'export %s=%q\n' "$k" "$v"; done
  printf 'cd %q || exit 125\n' "$cwd"
  printf 'exec'
  printf ' %q' "$@"
  printf '\n'
} >"$ctl/command.sh"
printf 'VM_CTL=%q\nVM_CWD=%q\n' "$ctl" "$cwd" >"$ctl/vm.conf"

# One boot of the VM: virtiofsd (which exits when its guest goes) and QEMU, in the background, so that a boot
# that never reaches the command can be noticed.
boot() {
  local attempt=$1 sock=$ctl/fs-$1.sock
  "$virtiofsd" --socket-path="$sock" -o source=/ -o cache=auto -o sandbox=chroot >"$ctl/virtiofsd.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] || { say "virtiofsd did not start:"; cat "$ctl/virtiofsd.log" >&2; exit 125; }
  local qemu=(qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot
    -machine q35,memory-backend=ram -object "memory-backend-memfd,id=ram,size=$mem,share=on" -m "$mem"
    -accel tcg,thread=multi,tb-size=256 -cpu max -smp "$cpus"
    -kernel "$kernel" -initrd "$initrd"
    -append "console=ttyS0 quiet loglevel=4 panic=-1 tsc=reliable no_timer_check mitigations=off random.trust_cpu=on 8250.nr_uarts=1 usbd.ctl=$ctl"
    -serial "file:$ctl/console-$attempt.log"
    -device virtio-serial-pci -chardev stdio,id=out,signal=off -device virtconsole,chardev=out
    -chardev "socket,id=fs,path=$sock" -device vhost-user-fs-pci,chardev=fs,tag=host)
  [ -f /usr/share/qemu/qboot.rom ] && qemu+=(-bios /usr/share/qemu/qboot.rom)
  [ "$timeout_s" != 0 ] && qemu=(timeout -s KILL "$timeout_s" "${qemu[@]}")
  "${qemu[@]}" </dev/null &
  qemu_pid=$!
  pids+=("$qemu_pid")
}

# A guest that has not started the command within the boot limit is stuck (seen once in CI: a VM that printed
# nothing for 15 minutes): it is killed and booted again, which is safe because the command never ran.
boot_limit=${USBD_VM_BOOT_TIMEOUT:-120}
boot_attempts=3
for attempt in $(seq "$boot_attempts"); do
  boot "$attempt"
  started_at=$SECONDS
  stuck=0
  # Watched only until the command starts; from then on QEMU is simply waited for.
  while kill -0 "$qemu_pid" 2>/dev/null && [ ! -e "$ctl/started" ]; do
    if [ $((SECONDS - started_at)) -ge "$boot_limit" ]; then
      stuck=1
      # TERM, not KILL: `timeout` (when --timeout wraps QEMU) passes TERM on, and would leave QEMU behind if killed.
      kill -TERM "$qemu_pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  status=0
  wait "$qemu_pid" || status=$?
  [ "$stuck" = 1 ] || break
  say "the guest did not start the command within ${boot_limit}s (boot $attempt of $boot_attempts); its console:"
  tail -n 20 "$ctl/console-$attempt.log" >&2 || true
  if [ "$attempt" = "$boot_attempts" ]; then
    say "giving up: the VM never started the command"
    exit 125
  fi
done
if [ "$console" = 1 ] || [ ! -s "$ctl/rc" ]; then
  say "guest kernel console:"
  tail -n 40 "$ctl/console-$attempt.log" >&2 || true
fi
if [ "$timeout_s" != 0 ] && [ "$status" = 137 ]; then say "timed out after ${timeout_s}s"; exit 124; fi
[ -s "$ctl/rc" ] && exit "$(cat "$ctl/rc")"
say "the VM stopped without reporting an exit status (qemu exited with $status)"
exit 125
