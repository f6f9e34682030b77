/**
 * A real filesystem on the file device through nbdfuse and a loop device: ext4 made, filled, checked clean, and
 * every file intact after the daemon stops and a new daemon serves the same image.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { removeDir, run, runResult, sha256File, skipReason, tempDir, writeRandomFile } from "./helpers.ts";
import { NbdfuseStack } from "./nbdfuse-stack.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const skip = skipReason("nbdfuse-ext4 suite", ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"]);
const MiB = 1024 * 1024;

describe.skipIf(skip !== undefined)("an ext4 filesystem on the file device through nbdfuse and a loop device", () => {
  let work: string;
  let stack: NbdfuseStack;
  /** Relative path -> sha256 of every file written. */
  const sums = new Map<string, string>();

  beforeAll(() => {
    work = tempDir("ext4");
    for (const d of ["store", "fuse", "mnt"]) mkdirSync(join(work, d));
    stack = new NbdfuseStack({ devType: "file", size: "256MiB", storeDir: join(work, "store"), storeName: "disk" }, join(work, "fuse"), join(work, "mnt"));
  });

  afterAll(async () => {
    await stack?.forceDown();
    removeDir(work);
  });

  test("mkfs.ext4, mount, and a tree of ~50 files of random sizes up to 1 MiB is written", async () => {
    const loop = await stack.up();
    await run(["mkfs.ext4", "-q", "-F", loop]);
    await stack.mount();
    const mnt = stack.mountDir;
    for (let d = 0; d < 5; d++) {
      const dir = join(`dir${d}`, d % 2 === 0 ? "nested" : "");
      mkdirSync(join(mnt, dir), { recursive: true });
      for (let f = 0; f < 10; f++) {
        const rel = join(dir, `file${f}.bin`);
        // Sizes from 0 to 1 MiB, deliberately not block multiples.
        const size = Math.floor(Math.random() * (MiB + 1));
        sums.set(rel, await writeRandomFile(join(mnt, rel), size));
      }
    }
    expect(sums.size).toBe(50);
    for (const [rel, sum] of sums) expect(await sha256File(join(mnt, rel))).toBe(sum);
  });

  test("after umount, fsck.ext4 -fn finds the filesystem clean, and the stack comes down with the daemon exiting 0", async () => {
    expect(sums.size).toBe(50);
    await stack.umount();
    const fsck = await runResult(["fsck.ext4", "-fn", stack.loop!]);
    if (fsck.exitCode !== 0) throw new Error(`fsck.ext4 -fn exited with ${fsck.exitCode}:\n${fsck.stdout}\n${fsck.stderr}`);
    await stack.down();
  });

  test("a restarted daemon on the same store serves the filesystem with every file's checksum intact", async () => {
    expect(sums.size).toBe(50);
    expect(existsSync(join(stack.storeDir, "disk.img"))).toBe(true);
    await stack.up();
    const fsck = await runResult(["fsck.ext4", "-fn", stack.loop!]);
    if (fsck.exitCode !== 0) throw new Error(`fsck.ext4 -fn after restart exited with ${fsck.exitCode}:\n${fsck.stdout}\n${fsck.stderr}`);
    await stack.mount();
    const mismatched: string[] = [];
    for (const [rel, sum] of sums) {
      const path = join(stack.mountDir, rel);
      if (!existsSync(path) || (await sha256File(path)) !== sum) mismatched.push(rel);
    }
    expect(mismatched).toEqual([]);
    await stack.down();
  });
});
