#!/bin/sh
# Stage 1 of the test VM's boot (PID 1 in the initramfs, see tests/vm/run.sh): load the virtio and virtiofs
# modules, build the guest's root from the host's filesystem (read-only, under a tmpfs overlay) with the working
# directory and /tmp shared read-write, then switch into it and hand over to guest-run.sh.
export PATH=/bin
die() {
  echo "vm-init: $*" >/dev/ttyS0
  poweroff -f
  sleep 60
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for module in /modules/*.ko; do
  insmod "$module" || echo "vm-init: insmod $module failed" >/dev/ttyS0
done
ctl=
for arg in $(cat /proc/cmdline); do
  case "$arg" in usbd.ctl=*) ctl=${arg#usbd.ctl=} ;; esac
done
[ -n "$ctl" ] || die "no usbd.ctl= on the kernel command line"
mount -t virtiofs host /host || die "cannot mount the host filesystem (virtiofs tag 'host')"
. "/host$ctl/vm.conf" || die "cannot read $ctl/vm.conf"

mount -t tmpfs -o mode=0755 overlay-upper /overlay
mkdir -p /overlay/upper /overlay/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/overlay/upper,workdir=/overlay/work /newroot ||
  die "cannot mount the overlay root"
root=/newroot
mount --move /proc "$root/proc"
mount --move /sys "$root/sys"
mount --move /dev "$root/dev"
mkdir -p "$root/dev/pts" "$root/dev/shm"
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts "$root/dev/pts"
mount -t tmpfs -o mode=1777 shm "$root/dev/shm"
mount -t tmpfs -o mode=0755 run "$root/run"
mount -t tmpfs -o mode=1777 var-tmp "$root/var/tmp"
mount --bind /host/tmp "$root/tmp" || die "cannot share /tmp"
if [ "$VM_CWD" != / ]; then
  mount --bind "/host$VM_CWD" "$root$VM_CWD" || die "cannot share $VM_CWD"
fi
mkdir -p "$root/run/vm"
cp /bin/busybox /guest-run.sh "$root/run/vm/"
exec switch_root "$root" /run/vm/busybox sh /run/vm/guest-run.sh "$VM_CTL"
die "switch_root failed"
