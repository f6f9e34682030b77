/**
 * ext4 on /dev/nbdX through the real kernel driver, for the mem and file devices over both attach interfaces and
 * the dedup device over netlink: mkfs, mount, a tree of files with checksums, sync reaching the device as FLUSH,
 * umount, fsck clean, detach; persistent devices are then attached afresh and every file checked. Also: detach is
 * refused while the device is mounted.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync } from "node:fs";
import { attached, changedFiles, mountPoint, removeDir, requireVm, sh, startKernelDaemon, storeDirectory, writeTree } from "./helpers.ts";

requireVm();
setDefaultTimeout(240_000);

const stores: string[] = [];
afterAll(() => {
  for (const dir of stores) removeDir(dir);
});

const setups = [
  { iface: "netlink", devType: "mem" },
  { iface: "netlink", devType: "file" },
  { iface: "netlink", devType: "dedup" },
  { iface: "ioctl", devType: "mem" },
  { iface: "ioctl", devType: "file" },
] as const;

for (const { iface, devType } of setups) {
  describe(`${devType} device attached through ${iface}`, () => {
    test("ext4: files survive sync, umount, fsck and (persistent devices) a fresh attach; sync sends FLUSH", async () => {
      const storeDir = storeDirectory();
      stores.push(storeDir);
      const mnt = mountPoint(`${devType}-${iface}`);
      const daemon = await startKernelDaemon({ devType, iface, storeDir });
      expect(daemon.w.stdout()).toContain(`(${iface}, 1 connection)`);
      expect(attached(daemon.index)).toBe(true);

      await sh(`mkfs.ext4 -q ${daemon.path} && mount ${daemon.path} ${mnt}`);
      const files = await writeTree(mnt, 24);
      const before = daemon.flushes();
      await sh("sync");
      expect(await daemon.flushesAbove(before)).toBeGreaterThan(before);
      await sh(`umount ${mnt}`);
      await sh(`fsck.ext4 -fn ${daemon.path}`);

      expect(await daemon.stop()).toBe(0);
      expect(attached(daemon.index)).toBe(false);
      expect(existsSync(daemon.path)).toBe(true);
      if (devType === "mem") return;

      const again = await startKernelDaemon({ devType, iface, storeDir });
      await sh(`mount ${again.path} ${mnt}`);
      expect(await changedFiles(files)).toEqual([]);
      await sh(`umount ${mnt}`);
      expect(await again.stop()).toBe(0);
    });
  });
}

describe("safe detach", () => {
  test("SIGTERM while mounted is refused with the mount point and the device keeps serving; after umount it detaches", async () => {
    const mnt = mountPoint("refuse");
    const daemon = await startKernelDaemon({ devType: "mem" });
    await sh(`mkfs.ext4 -q ${daemon.path} && mount ${daemon.path} ${mnt} && echo still-here > ${mnt}/probe && sync`);
    daemon.w.proc.kill("SIGTERM");
    await Bun.sleep(1500);
    expect(daemon.w.exitCode()).toBeNull();
    expect(daemon.w.stderr()).toContain(`mounted on ${mnt}`);
    expect(attached(daemon.index)).toBe(true);
    await sh(`echo 3 > /proc/sys/vm/drop_caches; grep -q still-here ${mnt}/probe && echo more > ${mnt}/more && sync`);
    await sh(`umount ${mnt}`);
    expect(await daemon.stop()).toBe(0);
    expect(attached(daemon.index)).toBe(false);
  });

  test("with --force a mounted device is detached anyway", async () => {
    const mnt = mountPoint("force");
    const daemon = await startKernelDaemon({ devType: "mem", args: ["--force"] });
    await sh(`mkfs.ext4 -q ${daemon.path} && mount ${daemon.path} ${mnt}`);
    expect(await daemon.stop()).toBe(0);
    expect(daemon.w.stderr()).toContain("while in use (--force)");
    expect(daemon.w.stderr()).toContain(`detached ${daemon.path}`);
    // The kernel keeps the dead device's configuration until its last opener, the mounted filesystem, lets go.
    await sh(`umount -l ${mnt}`);
    for (let i = 0; i < 100 && attached(daemon.index); i++) await Bun.sleep(50);
    expect(attached(daemon.index)).toBe(false);
  });
});
