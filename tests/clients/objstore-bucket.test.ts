/**
 * The bucket alone is a consistent disk. An ext4 filesystem on an objstore volume (directory backend, small log
 * objects sealed every 0.2 s, so uploads run all the time) through nbdfuse and a loop device takes a stream of
 * files, each followed by `sync` (a FLUSH): a verify pattern in which flush point k means "files 0..k-1 complete".
 * While it runs, the test copies the bucket at random moments (hard links, as a bucket replication or `rclone sync`
 * would copy objects one by one). Afterwards each copy is opened on an empty --store-dir (taking its lease over, as a
 * new machine would after the old one died), mounted (ext4 replays its journal), read, unmounted and checked with
 * `fsck.ext4 -fn`. Each copy must be clean and hold exactly the data of some flush point: files 0..k-1 intact, file
 * k absent or partly there (written after the flush point: each block its data or zeros), no later file. Copies
 * taken later may not show an earlier flush point.
 */
import { afterAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { gaugeSuiteSkipReason } from "./daemon-stats.ts";
import { removeDir, run, runResult, tempDir } from "./helpers.ts";
import { NbdfuseStack, type StackDaemonOptions } from "./nbdfuse-stack.ts";

setDefaultTimeout(180_000);
const skip = gaugeSuiteSkipReason("objstore bucket copies", "objstore", ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3", "cp", "sha256sum"]);

const FILES = Number(process.env.OBJSTORE_BUCKET_FILES ?? 24);
const FILE_BYTES = 384 * 1024;
const COPIES = Number(process.env.OBJSTORE_BUCKET_COPIES ?? 5);
const KEY = `key:${"7a".repeat(32)}`;

describe.skipIf(skip !== undefined)("objstore: copies of the bucket taken during an ext4 workload", () => {
  const work = tempDir("objstore-bucket");
  afterAll(() => removeDir(work));
  const bucket = join(work, "bucket");

  function daemon(objects: string, storeDir: string, extra: readonly string[]): StackDaemonOptions {
    return {
      devType: "objstore",
      size: "",
      storeDir,
      storeName: "fs",
      extraArgs: ["--objstore-kind=local", "--objstore-cfg", JSON.stringify({ path: objects }), "--objstore-aeskey", KEY, ...extra],
    };
  }

  test(`${COPIES} copies taken mid-workload each mount, pass fsck.ext4 -fn and hold exactly a flush point`, async () => {
    for (const d of ["cache", "fuse", "mnt", "src", "copies"]) mkdirSync(join(work, d));
    const sums: string[] = [];
    for (let i = 0; i < FILES; i++) {
      const data = new Uint8Array(FILE_BYTES);
      for (let at = 0; at < data.length; at += 65536) crypto.getRandomValues(data.subarray(at, at + 65536));
      writeFileSync(join(work, "src", `f${i}`), data);
      sums.push(new Bun.CryptoHasher("sha256").update(data).digest("hex"));
    }
    const stack = new NbdfuseStack(
      daemon(bucket, join(work, "cache"), ["--store-size=64MiB", "--objstore-objsize=256KiB", "--objstore-flushevery=0.2", "--objstore-gc-threshold=0.6"]),
      join(work, "fuse"),
      join(work, "mnt"),
    );
    let copies: string[] = [];
    try {
      const loop = await stack.up();
      await run(["mkfs.ext4", "-q", "-F", "-b", "4096", loop]);
      await stack.mount();
      await run(["sync", "-f", stack.mountDir]);
      // The writer runs in a child process so that this one stays free to copy the bucket meanwhile.
      // Paced (150 ms a file): on a fast machine the whole workload once fit in the first pause before a copy, and
      // every copy then held all of it (seen in CI).
      const script = Array.from({ length: FILES }, (_, i) => `cp ${join(work, "src", `f${i}`)} ${stack.mountDir}/f${i} && sync -f ${stack.mountDir} && sleep 0.15`).join(" && ");
      const writer = Bun.spawn(["bash", "-c", script], { stdout: "pipe", stderr: "pipe" });
      for (let k = 0; k < COPIES; k++) {
        await Bun.sleep(300 + Math.random() * 900);
        const to = join(work, "copies", `c${k}`);
        // A copy is made object by object; an object the volume deletes meanwhile makes cp fail: copy again.
        for (let attempt = 0; attempt < 5; attempt++) {
          removeDir(to);
          if ((await runResult(["cp", "-al", bucket, to])).exitCode === 0) break;
        }
        copies.push(to);
      }
      expect(await writer.exited).toBe(0);
      await stack.down();
    } finally {
      await stack.forceDown();
    }
    copies = copies.filter((c) => readdirSync(c).length > 0);
    expect(copies.length).toBe(COPIES);

    const points: number[] = [];
    for (const [k, copy] of copies.entries()) {
      const where = `copy ${k}`;
      const check = new NbdfuseStack(daemon(copy, join(work, `cold-${k}`), ["--objstore-takeover"]), join(work, "fuse"), join(work, "mnt"));
      mkdirSync(check.storeDir);
      try {
        const loop = await check.up();
        await check.mount();
        const present = readdirSync(check.mountDir).filter((n) => /^f\d+$/.test(n));
        let complete = 0;
        while (present.includes(`f${complete}`)) {
          const digest = (await run(["sha256sum", join(check.mountDir, `f${complete}`)])).split(" ")[0];
          if (digest !== sums[complete]) break;
          complete++;
        }
        // The file after the last complete one: absent, or a prefix of itself (written after the flush point).
        const partial = present.filter((n) => Number(n.slice(1)) >= complete);
        expect({ where, later: partial.filter((n) => Number(n.slice(1)) > complete) }).toEqual({ where, later: [] });
        if (partial.length === 1) {
          // Written after the flush point: each 4 KiB block reads as what was written or as zeros (ext4 commits an
          // allocation before the data lands in it, as unwritten extents), never as anything else.
          const got = new Uint8Array(await Bun.file(join(check.mountDir, `f${complete}`)).arrayBuffer());
          const want = new Uint8Array(await Bun.file(join(work, "src", `f${complete}`)).arrayBuffer());
          let bad = got.length > want.length ? 1 : 0;
          for (let at = 0; at < got.length; at += 4096) {
            const block = got.subarray(at, at + 4096);
            if (!Buffer.from(block).equals(Buffer.from(want.subarray(at, at + block.length))) && block.some((x) => x !== 0)) bad++;
          }
          expect({ where, file: `f${complete}`, badBlocks: bad }).toEqual({ where, file: `f${complete}`, badBlocks: 0 });
        }
        points.push(complete);
        await check.umount();
        const fsck = await runResult(["fsck.ext4", "-fn", loop]);
        expect({ where, fsck: fsck.exitCode, out: fsck.exitCode === 0 ? "" : fsck.stdout + fsck.stderr }).toEqual({ where, fsck: 0, out: "" });
        await check.down();
      } finally {
        await check.forceDown();
      }
    }
    console.info(`objstore bucket copies: flush points ${points.join(", ")} of ${FILES} files`);
    for (let k = 1; k < points.length; k++) expect(points[k]!).toBeGreaterThanOrEqual(points[k - 1]!);
    // The copies did land in the middle of the workload, not all before or after it.
    expect(new Set(points).size).toBeGreaterThan(1);
  });
});
