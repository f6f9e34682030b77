#!/usr/bin/env bash
# Installs the Debian packages the real-client tests and the benchmarks need, then the npm devDependencies
# (bun comes from the npm `bun` package). Idempotent: installs only what is missing and says what it did.
set -euo pipefail

cd "$(dirname "$0")/.."

# package:command it provides. A package counts as present when dpkg has it installed or its command is on the
# PATH (on bookworm `nbdfuse` is a virtual package that libnbd-bin provides, so dpkg never lists it).
PACKAGES=(libnbd-bin:nbdinfo nbdfuse:nbdfuse qemu-utils:qemu-img fio:fio fuse3:fusermount3 e2fsprogs:mkfs.ext4
  nbdkit:nbdkit tmux:tmux util-linux:losetup python3-libnbd:nbdsh prometheus:promtool jq:jq systemd:systemd-analyze)
# The object-store test servers (tests/helpers/swift-server.ts, sshd-server.ts): OpenStack Swift all in one (with its
# s3api middleware, the strict S3 the suites also run against), memcached for tempauth, and openssh-server for sftp.
PACKAGES+=(swift:swift-ring-builder swift-proxy:swift-proxy-server swift-account:swift-account-server
  swift-container:swift-container-server swift-object:swift-object-server python3-swift:swift-init
  memcached:memcached openssh-server:sshd)
# The TLS suites and bench make their CA and certificates with openssl (tests/helpers/tls-certs.ts).
PACKAGES+=(openssl:openssl)
export PATH="$PATH:/usr/sbin:/sbin"

installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = "installed" ] || command -v "$2" >/dev/null 2>&1
}

missing=()
for entry in "${PACKAGES[@]}"; do
  pkg="${entry%%:*}"
  if installed "$pkg" "${entry#*:}"; then
    echo "install-deps: $pkg already installed"
  else
    missing+=("$pkg")
  fi
done

if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    as_root=()
  elif command -v sudo >/dev/null 2>&1; then
    as_root=(sudo)
  else
    echo "install-deps: missing ${missing[*]}, and not root with no sudo: install them as root (apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
  for entry in "${PACKAGES[@]}"; do
    if ! installed "${entry%%:*}" "${entry#*:}"; then
      echo "install-deps: ${entry%%:*} is still missing after apt-get install (no ${entry#*:} on PATH): install it by hand" >&2
      exit 1
    fi
  done
  echo "install-deps: installed ${missing[*]}"
else
  echo "install-deps: all Debian packages present, nothing to install"
fi

if [ ! -d node_modules ] || [ ! -x node_modules/.bin/bun ]; then
  echo "install-deps: node_modules missing, running npm install"
  npm install --no-audit --no-fund
else
  echo "install-deps: node_modules present, skipping npm install"
fi
