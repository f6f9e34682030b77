/**
 * --config on the kernel path: two devices from one file, each attached as its own /dev/nbdN with its own options
 * (size, connections, reattach record beside its own store), each keeping its own data; SIGTERM detaches both.
 * Runs in the test VM (scripts/test-kernel.sh tests/vm/config.vm.ts).
 */
import { expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { waitFor, watch } from "../helpers/process.ts";
import { CLI, attached, removeDir, requireVm, sh, storeDirectory } from "./helpers.ts";

requireVm();
setDefaultTimeout(240_000);

const ROOT = resolve(import.meta.dir, "../..");

interface KernelStats {
  readonly type: string;
  readonly device: string;
  readonly size: number;
  readonly kernel: { readonly path: string; readonly connections: number } | null;
}

test("two devices from a config file: each its own /dev/nbdN, size, connections, data and reattach record; SIGTERM detaches both", async () => {
  const storeDir = storeDirectory();
  const config = join(storeDir, "usbd.toml");
  writeFileSync(
    config,
    [
      `store-dir = "${storeDir}"`,
      "json = true",
      "stats-interval = 1",
      "[[device]]",
      'name = "scratch"',
      'store-size = "64MiB"',
      "[[device]]",
      'name = "disk"',
      'dev-type = "file"',
      `store-size = ${32 * 1024 * 1024}`,
      "connections = 2",
      "",
    ].join("\n"),
  );
  const w = watch([...CLI, "--headless", "--config", config], { cwd: ROOT });
  try {
    const paths = await waitFor(
      "two \"attached ... as /dev/nbdN\" lines",
      w,
      () => {
        // With json = true the banner is a JSON line per device: {"type":"attached","device":...,"path":...}.
        const found = w.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { type: string; device: string; path?: string })
          .filter((e) => e.type === "attached" && e.path !== undefined).map((e) => [e.device, e.path!] as const);
        return found.length === 2 ? new Map(found) : undefined;
      },
      60_000,
    );
    const scratch = paths.get("scratch")!;
    const disk = paths.get("disk")!;
    expect(scratch).not.toBe(disk);
    expect((await sh(`blockdev --getsize64 ${scratch}`)).trim()).toBe(String(64 * 1024 * 1024));
    expect((await sh(`blockdev --getsize64 ${disk}`)).trim()).toBe(String(32 * 1024 * 1024));

    // Each device keeps its own data: different random MiB into each, read back with O_DIRECT.
    await sh(`head -c 1M /dev/urandom > /run/a.bin && head -c 1M /dev/urandom > /run/b.bin`);
    await sh(`dd if=/run/a.bin of=${scratch} bs=1M oflag=direct status=none && dd if=/run/b.bin of=${disk} bs=1M oflag=direct status=none`);
    await sh(`dd if=${scratch} bs=1M count=1 iflag=direct status=none | cmp - /run/a.bin`);
    await sh(`dd if=${disk} bs=1M count=1 iflag=direct status=none | cmp - /run/b.bin`);

    // Per-device kernel options: the file device's 2 connections and its own reattach record; none for mem.
    const stats = await waitFor(
      "a JSON stats line for each device",
      w,
      () => {
        const lines = w.stdout().split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as KernelStats);
        const last = new Map(lines.filter((s) => s.type === "stats").map((s) => [s.device, s] as const));
        return last.size === 2 ? last : undefined;
      },
      10_000,
    );
    expect(stats.get("scratch")!.kernel).toMatchObject({ path: scratch, connections: 1 });
    expect(stats.get("disk")!.kernel).toMatchObject({ path: disk, connections: 2 });
    expect(existsSync(join(storeDir, "disk.nbd.json"))).toBe(true);
    expect(existsSync(join(storeDir, "scratch.nbd.json"))).toBe(false);

    expect(await w.stop("SIGTERM", 60_000)).toBe(0);
    for (const path of [scratch, disk]) expect(attached(Number(path.slice("/dev/nbd".length)))).toBe(false);
    expect(existsSync(join(storeDir, "disk.nbd.json"))).toBe(false);
  } finally {
    w.kill();
    removeDir(storeDir);
  }
});
