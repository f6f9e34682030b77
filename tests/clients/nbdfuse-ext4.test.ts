/**
 * A real filesystem on the file device through nbdfuse and a loop device: ext4 made, filled, checked clean, and
 * every file intact after the daemon stops and a new daemon serves the same image.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { type Daemon, removeDir, run, runResult, sha256File, skipReason, startDaemon, tempDir, writeRandomFile } from "./helpers.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const skip = skipReason("nbdfuse-ext4 suite", ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"]);
const MiB = 1024 * 1024;

/** One daemon + nbdfuse + loop device stack, torn down in reverse order (and forcibly after a failure). */
class Stack {
  daemon: Daemon | undefined;
  nbdfuse: Subprocess<"ignore", "pipe", "pipe"> | undefined;
  loop: string | undefined;
  mounted = false;

  constructor(
    readonly storeDir: string,
    readonly fuseDir: string,
    readonly mountDir: string,
  ) {}

  /** Starts the daemon on the file device, mounts it with nbdfuse and attaches a loop device to the FUSE file. */
  async up(): Promise<string> {
    this.daemon = await startDaemon({ devType: "file", size: "256MiB", storeDir: this.storeDir, storeName: "disk" });
    this.nbdfuse = Bun.spawn(["nbdfuse", this.fuseDir, this.daemon.uri], { stdin: "ignore", stdout: "pipe", stderr: "pipe" });
    const file = join(this.fuseDir, "nbd");
    const deadline = Date.now() + 10_000;
    while (!existsSync(file)) {
      if (this.nbdfuse.exitCode !== null) {
        throw new Error(`nbdfuse exited with ${this.nbdfuse.exitCode}: ${await new Response(this.nbdfuse.stderr).text()}`);
      }
      if (Date.now() > deadline) throw new Error(`nbdfuse did not present ${file} within 10 s`);
      await Bun.sleep(25);
    }
    this.loop = (await run(["losetup", "--find", "--show", file])).trim();
    return this.loop;
  }

  async mount(): Promise<void> {
    await run(["mount", "-t", "ext4", this.loop!, this.mountDir]);
    this.mounted = true;
  }

  async umount(): Promise<void> {
    await run(["umount", this.mountDir]);
    this.mounted = false;
  }

  /** Detaches the loop device, unmounts FUSE, waits for nbdfuse, then stops the daemon asserting exit 0. */
  async down(): Promise<void> {
    if (this.mounted) await this.umount();
    if (this.loop !== undefined) {
      await run(["losetup", "-d", this.loop]);
      this.loop = undefined;
    }
    if (this.nbdfuse !== undefined) {
      await run(["fusermount3", "-u", this.fuseDir]);
      const code = await this.nbdfuse.exited;
      this.nbdfuse = undefined;
      expect(code).toBe(0);
    }
    if (this.daemon !== undefined) {
      const daemon = this.daemon;
      this.daemon = undefined;
      await daemon.stop();
    }
  }

  /** Best-effort teardown after a failure: lazy unmounts, detach, kill; never throws. */
  async forceDown(): Promise<void> {
    if (this.mounted) await runResult(["umount", "-l", this.mountDir]).catch(() => undefined);
    this.mounted = false;
    if (this.loop !== undefined) await runResult(["losetup", "-d", this.loop]).catch(() => undefined);
    this.loop = undefined;
    if (this.nbdfuse !== undefined) {
      const r = await runResult(["fusermount3", "-u", this.fuseDir]).catch(() => undefined);
      if (r?.exitCode !== 0) await runResult(["fusermount3", "-uz", this.fuseDir]).catch(() => undefined);
      this.nbdfuse.kill("SIGKILL");
      await this.nbdfuse.exited;
      this.nbdfuse = undefined;
    }
    this.daemon?.kill();
    this.daemon = undefined;
  }
}

describe.skipIf(skip !== undefined)("an ext4 filesystem on the file device through nbdfuse and a loop device", () => {
  let work: string;
  let stack: Stack;
  /** Relative path -> sha256 of every file written. */
  const sums = new Map<string, string>();

  beforeAll(() => {
    work = tempDir("ext4");
    for (const d of ["store", "fuse", "mnt"]) mkdirSync(join(work, d));
    stack = new Stack(join(work, "store"), join(work, "fuse"), join(work, "mnt"));
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
