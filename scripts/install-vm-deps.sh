#!/usr/bin/env bash
# Installs what the kernel test VM (tests/vm/run.sh) and the kernel benchmark need: QEMU with virtiofsd, a Debian
# kernel whose modules include nbd.ko, a static busybox and cpio for the initramfs, and the peers the kernel
# benchmark compares against (nbd-client, nbdkit, fio). Idempotent: installs only what is missing. Needs root.
set -euo pipefail

cd "$(dirname "$0")/.."

# package:a file or command that shows it is installed
PACKAGES=(qemu-system-x86:qemu-system-x86_64 linux-image-amd64:/boot/vmlinuz-*-amd64 busybox-static:/bin/busybox cpio:cpio
  xz-utils:xz nbd-client:nbd-client nbdkit:nbdkit fio:fio e2fsprogs:mkfs.ext4 util-linux:setpriv)
export PATH="$PATH:/usr/sbin:/sbin"

present() {
  local pkg=$1 probe=$2
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)" = "installed" ] && return 0
  case "$probe" in
    /*) compgen -G "$probe" >/dev/null ;;
    *) command -v "$probe" >/dev/null 2>&1 ;;
  esac
}

missing=()
for entry in "${PACKAGES[@]}"; do
  present "${entry%%:*}" "${entry#*:}" || missing+=("${entry%%:*}")
done
# busybox (dynamic) can stand where busybox-static should: the initramfs needs the static one.
if ldd /bin/busybox >/dev/null 2>&1 && [[ ! " ${missing[*]} " == *" busybox-static "* ]]; then missing+=(busybox-static); fi

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-vm-deps: everything present"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-vm-deps: missing ${missing[*]}; run as root (apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "install-vm-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
for entry in "${PACKAGES[@]}"; do
  present "${entry%%:*}" "${entry#*:}" || { echo "install-vm-deps: ${entry%%:*} still missing after apt-get install" >&2; exit 1; }
done
echo "install-vm-deps: installed ${missing[*]}"
