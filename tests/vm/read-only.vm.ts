/**
 * --read-only on the kernel path (issue 18): the device a read-only daemon attaches is read-only to the kernel
 * (/sys/block/nbdN/ro), a write to it fails in the kernel and never reaches the daemon, reads return what the store
 * holds, and the store's directory is byte for byte what it was before (no reattach record either), for each
 * persistent device kind.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { attached, removeDir, requireVm, runResult, sh, startKernelDaemon, storeDirectory } from "./helpers.ts";

requireVm();
setDefaultTimeout(300_000);

const stores: string[] = [];
afterAll(() => {
  for (const dir of stores) removeDir(dir);
});

/** Every file of the store's directory (names and contents), as one digest per file. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir, { recursive: true }).map(String).sort()) {
    const path = join(dir, name);
    try {
      out[name] = createHash("sha256").update(readFileSync(path)).digest("hex");
    } catch {
      out[name] = "(directory)";
    }
  }
  return out;
}

describe("--read-only on /dev/nbdX", () => {
  for (const devType of ["file", "dedup"] as const) {
    test(`${devType}: the kernel device is read-only, writes fail in the kernel, reads see the data, the store is unchanged`, async () => {
      const storeDir = storeDirectory();
      stores.push(storeDir);
      const writer = await startKernelDaemon({ devType, storeDir, size: "64MiB" });
      await sh(`head -c 4194304 /dev/urandom > ${storeDir}.pattern && dd if=${storeDir}.pattern of=${writer.path} bs=1M oflag=direct status=none`);
      const expected = (await sh(`sha256sum < ${storeDir}.pattern`)).split(" ")[0];
      expect(await writer.stop()).toBe(0);
      expect(attached(writer.index)).toBe(false);
      const before = snapshot(storeDir);

      const reader = await startKernelDaemon({ devType, storeDir, size: "64MiB", args: ["--read-only"] });
      // While attached too: no reattach record (a writable attach leaves one for a crash), nothing else but the
      // shared-memory index and empty WAL sqlite makes for any reader of a WAL database (gone again at close).
      const during = Object.fromEntries(Object.entries(snapshot(storeDir)).filter(([name]) => !/\.db-(shm|wal)$/.test(name)));
      expect(during).toEqual(before);
      expect(readFileSync(`/sys/block/nbd${reader.index}/ro`, "utf8").trim()).toBe("1");
      expect((await sh(`blockdev --getro ${reader.path}`)).trim()).toBe("1");
      const write = await runResult(["dd", "if=/dev/zero", `of=${reader.path}`, "bs=4096", "count=1", "oflag=direct", "status=none"]);
      expect(write.exitCode).not.toBe(0);
      expect(write.stderr).toMatch(/Read-only file system|Operation not permitted|Permission denied/);
      expect((await sh(`dd if=${reader.path} bs=1M count=4 iflag=direct status=none | sha256sum`)).split(" ")[0]).toBe(expected);
      expect(await reader.stop()).toBe(0);
      expect(reader.w.stdout()).not.toMatch(/"write":\{"ops":[1-9]/);
      expect(snapshot(storeDir)).toEqual(before);
    });
  }
});
