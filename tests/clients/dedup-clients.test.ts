/**
 * The dedup device through real clients: fio's NBD engine with crc32c verify (with lz4 and without), data that
 * survives SIGTERM and a restart on the same store, and an ext4 filesystem through nbdfuse and a loop device whose
 * ten copies of one file show up in the daemon's "dedup ratio" gauge.
 *
 * The suites read the device's own gauges from the daemon's JSON stats lines, so they skip under
 * USBD_TEST_SERVER=nbdkit.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { finalStats, gauge, gaugeSuiteSkipReason, nextStats, type StatsLine, stopForStats } from "./daemon-stats.ts";
import { fio, randrwVerifyJob } from "./fio-jobs.ts";
import {
  type Daemon,
  type DaemonOptions,
  removeDir,
  run,
  runResult,
  sha256File,
  startDaemon,
  stopAndRemove,
  tempDir,
  writeRandomFile,
} from "./helpers.ts";
import { NbdfuseStack } from "./nbdfuse-stack.ts";

// Real clients and a real daemon: bun's 5 s default is too short (bunfig.toml has no per-test timeout setting).
setDefaultTimeout(90_000);

const MiB = 1024 * 1024;
/**
 * What the store holds, as the gauges count it. A reopened store rebuilds these from its database, so they must
 * match what the previous daemon reported; fio's verify cannot see a database that lost its block rows, because
 * reads need only the map.
 */
function storeContents(line: StatsLine): Record<string, number> {
  return Object.fromEntries(["logical in use", "unique blocks", "stored"].map((name) => [name, gauge(line, name)]));
}

const fioSkip = gaugeSuiteSkipReason("dedup fio suite", "dedup", ["fio"]);

const FIO_JOBS = 4;
const FIO_REGION_MIB = 32;
/** The randrw jobs use [0, 128) MiB, the write that must survive a restart [192, 224), and [128, 192) stays unwritten. */
const PERSIST_OFFSET_MIB = 192;
const UNWRITTEN_OFFSET_MIB = 128;
const PERSIST_MIB = 32;
/**
 * fio then fills its buffers (verify included) half random, half repeated bytes, so lz4 has something to pack and
 * the verify reads come back from compressed slots; fully random blocks would be stored raw with or without lz4.
 */
const HALF_COMPRESSIBLE = "buffer_compress_percentage=50";

/** A random write with crc32c verify over its own region; with `verifyOnly`, the same job only reads and checks. */
function persistJob(uri: string, offsetMiB: number, verifyOnly: boolean): string {
  return `[global]
ioengine=nbd
uri=${uri}
rw=randwrite
bsrange=4k-128k
iodepth=16
offset=${offsetMiB}m
size=${PERSIST_MIB}m
verify=crc32c
verify_fatal=1
verify_state_save=0
${HALF_COMPRESSIBLE}
${verifyOnly ? "verify_only=1\n" : ""}[persist]
`;
}

for (const compression of ["lz4", "none"] as const) {
  describe.skipIf(fioSkip !== undefined)(`fio with crc32c verify on the dedup device (--dedup-compress=${compression})`, () => {
    let work: string;
    let daemon: Daemon | undefined;
    const daemonOptions = (): DaemonOptions => ({
      devType: "dedup",
      size: "256MiB",
      storeDir: join(work, "store"),
      statsIntervalS: 1,
      extraArgs: [`--dedup-compress=${compression}`],
    });

    beforeAll(async () => {
      work = tempDir("dedup-fio");
      mkdirSync(join(work, "store"));
      daemon = await startDaemon(daemonOptions());
    });

    afterAll(() => stopAndRemove(daemon, work));

    test(`${FIO_JOBS} concurrent randrw jobs, each in its own region, read back every block they wrote intact`, async () => {
      const jobs = await fio(
        work,
        "randrw-verify",
        randrwVerifyJob(daemon!.uri, { jobs: FIO_JOBS, regionMiB: FIO_REGION_MIB, loops: 4, extra: [HALF_COMPRESSIBLE] }),
      );
      expect(jobs).toHaveLength(FIO_JOBS);
      for (const job of jobs) {
        expect(job.error).toBe(0);
        expect(job.write.io_bytes).toBeGreaterThan(0);
        // Verification reads every written block again, so reads cover at least what was written.
        expect(job.read.io_bytes).toBeGreaterThanOrEqual(job.write.io_bytes);
      }
    });

    test("written data survives SIGTERM and a restart on the same store: fio's verify-only pass finds every block", async () => {
      await fio(work, "persist-write", persistJob(daemon!.uri, PERSIST_OFFSET_MIB, false));
      const running = daemon!;
      daemon = undefined;
      const before = await stopForStats(running);
      // lz4 packs the half-compressible blocks into smaller slots; "none" stores every block whole.
      if (compression === "lz4") expect(gauge(before, "compression ratio")).toBeGreaterThan(1.3);
      else expect(gauge(before, "compression ratio")).toBe(1);

      daemon = await startDaemon(daemonOptions());
      expect(storeContents(await nextStats(daemon))).toEqual(storeContents(before));
      await fio(work, "persist-verify", persistJob(daemon.uri, PERSIST_OFFSET_MIB, true));
    });

    test("the verify-only pass fails where nothing was written (the check above can fail)", async () => {
      const path = join(work, "unwritten.fio");
      await Bun.write(path, persistJob(daemon!.uri, UNWRITTEN_OFFSET_MIB, true));
      const unwritten = await runResult(["fio", "--output-format=json", `--output=${join(work, "unwritten.json")}`, path], { cwd: work });
      expect(unwritten.exitCode).not.toBe(0);
      expect(unwritten.stderr).toContain("verify:");
    });
  });
}

const ext4Skip = gaugeSuiteSkipReason("dedup ext4 suite", "dedup", ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"]);

const COPIES = 10;
const FILE_MIB = 20;
const MIN_DEDUP_RATIO = 5;

describe.skipIf(ext4Skip !== undefined)(`ext4 on the dedup device through nbdfuse and a loop device: ${COPIES} copies of one file`, () => {
  let work: string;
  let stack: NbdfuseStack;
  let original: string;
  let originalSum: string;
  const copyName = (i: number) => `copy${i}.bin`;

  beforeAll(async () => {
    work = tempDir("dedup-ext4");
    for (const d of ["store", "fuse", "mnt"]) mkdirSync(join(work, d));
    original = join(work, "original.bin");
    originalSum = await writeRandomFile(original, FILE_MIB * MiB);
    // 256 MiB keeps ext4's own metadata (inode tables, bitmaps, journal) small next to the copies.
    stack = new NbdfuseStack(
      { devType: "dedup", size: "256MiB", storeDir: join(work, "store"), storeName: "disk", statsIntervalS: 1 },
      join(work, "fuse"),
      join(work, "mnt"),
    );
  });

  afterAll(async () => {
    await stack?.forceDown();
    removeDir(work);
  });

  test(`mkfs.ext4, ${COPIES} copies of a ${FILE_MIB} MiB random file and sync: the "dedup ratio" gauge is at least ${MIN_DEDUP_RATIO}`, async () => {
    const loop = await stack.up();
    // -b 4096: below 512 MiB mke2fs picks 1 KiB blocks, and copies placed on 1 KiB boundaries would not line up
    // with the device's 4 KiB dedup blocks.
    await run(["mkfs.ext4", "-q", "-F", "-b", "4096", loop]);
    await stack.mount();
    for (let i = 0; i < COPIES; i++) await run(["cp", original, join(stack.mountDir, copyName(i))]);
    await run(["sync"]);
    const stats = await nextStats(stack.daemon!);
    const ratio = gauge(stats, "dedup ratio");
    console.info(`dedup ext4: ${COPIES} copies of ${FILE_MIB} MiB, dedup ratio ${ratio.toFixed(2)}, ${JSON.stringify(storeContents(stats))}`);
    expect(gauge(stats, "logical in use")).toBeGreaterThanOrEqual(COPIES * FILE_MIB * MiB);
    expect(ratio).toBeGreaterThanOrEqual(MIN_DEDUP_RATIO);
  });

  test("fsck.ext4 -fn finds it clean, and after a daemon restart every copy's sha256 equals the original's", async () => {
    await stack.umount();
    const fsck = await runResult(["fsck.ext4", "-fn", stack.loop!]);
    if (fsck.exitCode !== 0) throw new Error(`fsck.ext4 -fn exited with ${fsck.exitCode}:\n${fsck.stdout}\n${fsck.stderr}`);

    // A fresh daemon, nbdfuse and loop device: the copies are read from the store, not from any cache.
    const daemon = stack.daemon!;
    await stack.down();
    const before = finalStats(daemon.stdout());
    await stack.up();
    expect(storeContents(await nextStats(stack.daemon!))).toEqual(storeContents(before));
    await stack.mount();
    const mismatched: string[] = [];
    for (let i = 0; i < COPIES; i++) {
      const path = join(stack.mountDir, copyName(i));
      if (!existsSync(path) || (await sha256File(path)) !== originalSum) mismatched.push(copyName(i));
    }
    expect(mismatched).toEqual([]);
    await stack.down();
  });
});
