/**
 * ext4 on /dev/nbdX through the real kernel driver, for the mem and file devices over both attach interfaces and
 * the dedup device over netlink: mkfs, mount, a tree of files with checksums, sync reaching the device as FLUSH,
 * umount, fsck clean, detach; persistent devices are then attached afresh and every file checked. Also: detach is
 * refused while the device is mounted, and Host.trim runs fstrim on a mounted device (in this process's own Host).
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync } from "node:fs";
import { createMemDevice } from "../../src/devices/mem/index.ts";
import { DetachRefusedError } from "../../src/engine/kernel/attachment.ts";
import { Host, type HostEvent } from "../../src/engine/host.ts";
import { silentLogger } from "../../src/shared/log.ts";
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

describe("trim through the Host", () => {
  test("Host.trim on a mounted device runs fstrim: the bytes it trimmed, and the mem device gives the deleted file's memory back", async () => {
    const MiB = 1024 * 1024;
    const mnt = mountPoint("fstrim");
    const host = new Host(silentLogger);
    const events: HostEvent[] = [];
    host.subscribe((e) => events.push(e));
    const device = createMemDevice({ size: 256 * MiB });
    const allocated = () => device.stats().gauges.find((g) => g.name === "allocated")!.value;
    // What the TRIM requests themselves gave back: the mem device trims synchronously, so the change in allocated
    // memory across each call is that call's doing alone, whatever other writes the file system sends meanwhile.
    let releasedByTrims = 0;
    const trim = device.trim.bind(device);
    device.trim = (offset, length) => {
      const before = allocated();
      trim(offset, length);
      releasedByTrims += before - allocated();
    };
    const hosted = host.add("m", device);
    // In this process: the file system's TRIM requests come back to this event loop while fstrim runs.
    const attachment = await host.attachKernel(hosted, { backend: `usbd-tui-test:fstrim:pid${process.pid}` });
    try {
      await sh(`mkfs.ext4 -q -E nodiscard ${attachment.path} && mount ${attachment.path} ${mnt}`);
      await sh(`dd if=/dev/urandom of=${mnt}/big bs=1M count=64 conv=fsync status=none`);
      const full = allocated();
      expect(full).toBeGreaterThanOrEqual(64 * MiB);
      await sh(`rm ${mnt}/big && sync`);
      releasedByTrims = 0;

      const result = await host.trim("m");
      expect(result.method).toBe("fstrim");
      if (result.method !== "fstrim") return;
      expect(result.mountPoint).toBe(mnt);
      expect(result.bytes).toBeGreaterThanOrEqual(64 * MiB);
      // The deleted file's 64 MiB came back through the trims (a little may sit in pages shared with metadata).
      expect(releasedByTrims).toBeGreaterThanOrEqual(60 * MiB);
      expect(hosted.state).toBe("serving");
      expect(events.at(-1)!.kind).toBe("trimmed");
      expect(events.at(-1)!.message).toMatch(new RegExp(`^trimmed [\\d.]+ [KMG]iB \\(fstrim ${mnt}\\) in [\\d.,]+ ms$`));

      // Detach refuses while mounted and names the mount point.
      const refused = await host.detach("m").catch((e: unknown) => e);
      expect(refused).toBeInstanceOf(DetachRefusedError);
      expect((refused as Error).message).toContain(`mounted on ${mnt}`);
      expect(hosted.state).toBe("serving");

      await sh(`umount ${mnt}`);
      // Unmounted, the device reclaims by itself (the mem device: pages left all zero).
      expect((await host.trim("m")).method).toBe("reclaim");
      await host.detach("m");
      expect(hosted.state).toBe("detached");
      expect(attached(attachment.index)).toBe(false);
    } finally {
      await sh(`umount ${mnt} 2>/dev/null || true`);
      await host.stop({ force: true }).catch(() => {});
    }
  });
});
