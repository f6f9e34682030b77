/**
 * Surviving a daemon crash: kill -9 while ext4 is mounted, restart within the dead-connection timeout, and the
 * new daemon reconfigures the same /dev/nbdN (automatically from the store's reattach record, or with
 * --reattach); every file synced before the crash reads back, and the filesystem keeps taking writes.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { CLI, attached, changedFiles, dropCaches, kernelDisconnect, mountPoint, removeDir, requireVm, runResult, sh, startKernelDaemon, storeDirectory, writeTree } from "./helpers.ts";

requireVm();
setDefaultTimeout(300_000);

const stores: string[] = [];
afterAll(() => {
  for (const dir of stores) removeDir(dir);
});

describe("reattach after kill -9", () => {
  test("automatically from the reattach record, then again with --reattach, with the filesystem mounted throughout", async () => {
    const storeDir = storeDirectory();
    stores.push(storeDir);
    const record = join(storeDir, "usbd.nbd.json");
    const mnt = mountPoint("reattach");
    const first = await startKernelDaemon({ devType: "file", storeDir, connections: 2 });
    expect(existsSync(record)).toBe(true);
    await sh(`mkfs.ext4 -q ${first.path} && mount ${first.path} ${mnt}`);
    const synced = await writeTree(mnt, 16, "a");
    await sh("sync");
    await first.crash();
    // The kernel keeps the device, waiting for a daemon to come back.
    expect(attached(first.index)).toBe(true);

    const second = await startKernelDaemon({ devType: "file", storeDir, connections: 2 });
    expect(second.path).toBe(first.path);
    // The banner is a JSON line under --json (issue 16): {"type":"reattached","device":...,"path":...,"detail":...}.
    expect(bannerOf(second.w.stdout(), "reattached")).toMatchObject({ device: "usbd", kind: "file", size: 256 * 1024 * 1024, path: first.path, detail: "netlink, 2 connections" });
    await dropCaches();
    expect(await changedFiles(synced)).toEqual([]);
    const later = await writeTree(mnt, 8, "b");
    await sh("sync");
    await second.crash();

    // Without the record, --reattach names the device.
    rmSync(record);
    const third = await startKernelDaemon({ devType: "file", storeDir, args: [`--reattach=${first.path}`] });
    expect(bannerOf(third.w.stdout(), "reattached")).toMatchObject({ device: "usbd", kind: "file", path: first.path });
    await dropCaches();
    expect(await changedFiles(synced)).toEqual([]);
    expect(await changedFiles(later)).toEqual([]);
    const last = await writeTree(mnt, 4, "c");
    await sh(`sync && umount ${mnt}`);
    await sh(`fsck.ext4 -fn ${first.path}`);
    expect(await third.stop()).toBe(0);
    expect(attached(first.index)).toBe(false);
    expect(existsSync(record)).toBe(false);

    // A fresh attach of the same store sees everything.
    const fresh = await startKernelDaemon({ devType: "file", storeDir });
    await sh(`mount ${fresh.path} ${mnt}`);
    expect(await changedFiles(new Map([...synced, ...later, ...last]))).toEqual([]);
    await sh(`umount ${mnt}`);
    expect(await fresh.stop()).toBe(0);
  });

  test("a mem device is never reattached: its data died with the daemon", async () => {
    const daemon = await startKernelDaemon({ devType: "mem" });
    await daemon.crash();
    const r = await runResult([...CLI, "--headless", "--store-size=256MiB", `--reattach=${daemon.path}`]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("refusing to reattach");
    // Detach the orphan through the kernel directly, as an administrator would with nbd-client -d.
    kernelDisconnect(daemon.index);
    for (let i = 0; i < 100 && attached(daemon.index); i++) await Bun.sleep(50);
    expect(attached(daemon.index)).toBe(false);
  });

  test("--reattach of a device attached to another store is refused", async () => {
    const storeA = storeDirectory();
    const storeB = storeDirectory();
    stores.push(storeA, storeB);
    const a = await startKernelDaemon({ devType: "file", storeDir: storeA });
    await a.crash();
    const r = await runResult([...CLI, "--headless", "--dev-type=file", "--store-size=256MiB", `--store-dir=${storeB}`, `--reattach=${a.path}`]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain("is attached to another store");
    const back = await startKernelDaemon({ devType: "file", storeDir: storeA });
    expect(back.path).toBe(a.path);
    expect(await back.stop()).toBe(0);
  });
});

/** The daemon's JSON banner line of `type` on stdout (undefined if there is none). */
function bannerOf(stdout: string, type: string): Record<string, unknown> | undefined {
  return stdout
    .split("\n")
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .find((e) => e.type === type);
}
