/**
 * The objstore device through real clients, its objects in an s3rver on loopback: fio's NBD engine with crc32c
 * verify on an lz4 + aes-gcm volume of 1 MiB objects, writes that SIGTERM uploads on the way out, NBD_CMD_CACHE
 * from libnbd prefetching a cold range, and an ext4
 * filesystem through nbdfuse and a loop device. After each, a daemon with an empty --store-dir (a new machine with
 * only the key) must find everything again: what it reads can only come from S3.
 *
 * The suites read the device's own gauges from the daemon's JSON stats lines ("uploaded", "dirty objects", "store
 * errors"), so they skip under USBD_TEST_SERVER=nbdkit; and they check that neither the store's secret_key nor the
 * AES key ever shows in the daemon's output.
 */
import { afterAll, beforeAll, describe, expect, setDefaultTimeout, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type S3Server, s3ServerConfigJson, startS3Server } from "../helpers/s3-server.ts";
import { type StatsLine, finalStats, gauge, gaugeSuiteSkipReason, nextStats, statsWhere, stopForStats } from "./daemon-stats.ts";
import { type RandrwVerifyShape, fio, fioResult, randrwVerifyJob } from "./fio-jobs.ts";
import { type Daemon, removeDir, run, startDaemon, stopAndRemove, tempDir, writeRandomFile } from "./helpers.ts";
import { NbdfuseStack, type StackDaemonOptions } from "./nbdfuse-stack.ts";

// Real clients, a real daemon and an S3 server: bun's 5 s default is too short.
setDefaultTimeout(90_000);

const MiB = 1024 * 1024;
/** How long the uploader (every second here) may take to empty the cache of dirty objects after the clients stop. */
const SETTLE_MS = 20_000;

const fioSkip = gaugeSuiteSkipReason("objstore fio suite", "objstore", ["fio"]);
// nbdsh is a wrapper around `python3 -m nbd`: Debian's python, whatever python3 comes first on the PATH.
const PYTHON = "/usr/bin/python3";
const nbdshSkip = existsSync(PYTHON) && Bun.spawnSync([PYTHON, "-c", "import nbd"]).exitCode === 0 ? undefined : "python3-libnbd (nbdsh) is not installed";
const ext4Skip = gaugeSuiteSkipReason("objstore ext4 suite", "objstore", ["nbdfuse", "losetup", "mkfs.ext4", "fsck.ext4", "mount", "umount", "fusermount3"]);

/** s3rver checks the access key id but not the signature, so any secret works; a random one must never be printed. */
const SECRET = `s3-secret-${Buffer.from(crypto.getRandomValues(new Uint8Array(12))).toString("hex")}`;
const AES_KEY = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString("hex");

let s3: S3Server | undefined;
beforeAll(async () => {
  if (fioSkip === undefined || ext4Skip === undefined) s3 = await startS3Server();
});
afterAll(() => s3?.cleanup());

/**
 * The daemon for volume `volume` with its cache in `storeDir`. A new volume is created as 1 MiB objects, lz4 and
 * aes-gcm; a reopened one gets only the store and the key (and no size), so the rest must come from its manifest.
 */
function objstoreDaemon(storeDir: string, volume: string, opts: { readonly create: boolean; readonly flushEvery?: number; readonly noGc?: boolean }): StackDaemonOptions {
  const config = JSON.stringify({ ...(JSON.parse(s3ServerConfigJson(s3!)) as object), secret_key: SECRET });
  return {
    devType: "objstore",
    size: opts.create ? "256MiB" : "",
    storeDir,
    storeName: volume,
    statsIntervalS: 1,
    extraArgs: [
      "--objstore-kind=s3",
      "--objstore-cfg",
      config,
      "--objstore-aeskey",
      `key:${AES_KEY}`,
      `--objstore-flushevery=${opts.flushEvery ?? 1}`,
      ...(opts.noGc === true ? ["--objstore-gc-threshold=0"] : []),
      ...(opts.create ? ["--objstore-objsize=1MiB", "--objstore-compress=lz4", "--objstore-aesmode=aes-gcm"] : []),
    ],
  };
}

/** Runs a libnbd (nbdsh) script connected to `uri` as `h`. */
function nbdsh(uri: string, script: string): Promise<string> {
  return run([PYTHON, "-c", `import nbd\nh = nbd.NBD()\nh.connect_uri(${JSON.stringify(uri)})\n${script}\nh.shutdown()`], { timeoutMs: 60_000 });
}

/** Neither secret in anything the daemon printed (its log, its stats, its hints). */
function expectNoSecrets(daemon: Daemon): void {
  const printed = `${daemon.stdout()}\n${daemon.stderr()}`;
  expect(printed.includes(SECRET)).toBe(false);
  expect(printed.toLowerCase().includes(AES_KEY)).toBe(false);
  expect(printed.includes(Buffer.from(AES_KEY, "hex").toString("base64"))).toBe(false);
}

/** The stats line once the uploader has caught up: nothing dirty, nothing in flight. */
function settled(daemon: Daemon): Promise<StatsLine> {
  return statsWhere(daemon, (l) => gauge(l, "dirty objects") === 0 && gauge(l, "uploads in flight") === 0, SETTLE_MS, 'with "dirty objects" back to 0');
}

/** "store errors" 0 and, for a daemon that wrote, everything uploaded by the time of `line`. */
function expectCleanStore(line: StatsLine): void {
  expect(gauge(line, "store errors")).toBe(0);
  expect(gauge(line, "dirty objects")).toBe(0);
  expect(gauge(line, "dirty bytes")).toBe(0);
}

/** Gauges worth a line in the test output. */
function transfer(line: StatsLine): string {
  const mb = (name: string) => `${(gauge(line, name) / MiB).toFixed(1)} MiB`;
  return `uploaded ${mb("uploaded")}, downloaded ${mb("downloaded")}, compression ${gauge(line, "compression ratio").toFixed(2)}x`;
}

/**
 * fio's buffers half random, half repeated bytes, so lz4 has something to pack (fully random blocks would be
 * uploaded as big as they are).
 */
const HALF_COMPRESSIBLE = "buffer_compress_percentage=50";
/** [0, 128) MiB: four randrw jobs that overwrite their regions while the uploader runs every second. */
const RANDRW: RandrwVerifyShape = { jobs: 4, regionMiB: 32, loops: 4, extra: [HALF_COMPRESSIBLE] };
/** [128, 192) MiB: written while no upload round is due, so that only SIGTERM's upload can save it. */
const AT_EXIT: RandrwVerifyShape = { jobs: 2, regionMiB: 32, loops: 1, extra: [HALF_COMPRESSIBLE, "offset=128m"] };
/** The last 4 KiB of the volume (inside UNWRITTEN, whose verify fails either way): written just before the SIGTERM. */
const MARKER_OFFSET = 256 * MiB - 4096;
/** [192, 256) MiB: never written by fio; the verify-only control reads it. */
const UNWRITTEN: RandrwVerifyShape = { ...AT_EXIT, extra: [HALF_COMPRESSIBLE, "offset=192m"] };

function verifyOnly(shape: RandrwVerifyShape): RandrwVerifyShape {
  return { ...shape, extra: [...(shape.extra ?? []), "verify_only=1"] };
}

describe.skipIf(fioSkip !== undefined)("fio with crc32c verify on an objstore volume in S3 (lz4, aes-gcm, 1 MiB objects)", () => {
  const volume = "fio";
  let work: string;
  let daemon: Daemon | undefined;

  beforeAll(async () => {
    work = tempDir("objstore-fio");
    for (const d of ["cache", "cold"]) mkdirSync(join(work, d));
    daemon = await startDaemon(objstoreDaemon(join(work, "cache"), volume, { create: true }));
  });

  afterAll(() => stopAndRemove(daemon, work));

  test(`${RANDRW.jobs} randrw jobs read back every block intact, and the uploader empties the cache of dirty objects on its own`, async () => {
    const jobs = await fio(work, "randrw", randrwVerifyJob(daemon!.uri, RANDRW));
    expect(jobs.map((j) => j.error)).toEqual(Array(RANDRW.jobs).fill(0));
    expect(Math.min(...jobs.map((j) => j.write.io_bytes))).toBeGreaterThan(0);
    const line = await settled(daemon!);
    expectCleanStore(line);
    expect(gauge(line, "uploaded")).toBeGreaterThan(0);
    // lz4 packs the half-compressible blocks before they are encrypted.
    expect(gauge(line, "compression ratio")).toBeGreaterThan(1.3);
    console.info(`objstore fio: after randrw, ${transfer(line)}`);
  });

  test("SIGTERM uploads what is dirty and exits 0; a daemon with an empty --store-dir reads every block back from S3", async () => {
    // Restarted on the same cache with log objects sealed by age only after ten minutes, and no GC (a compaction
    // cycle writes at the head of the log and seals it, which CI saw take the marker below with it): the open object
    // holding the last writes is uploaded only at the exit.
    const first = daemon!;
    daemon = undefined;
    await first.stop();
    expectNoSecrets(first);
    daemon = await startDaemon(objstoreDaemon(join(work, "cache"), volume, { create: false, flushEvery: 600, noGc: true }));
    await fio(work, "at-exit", randrwVerifyJob(daemon.uri, AT_EXIT));
    // A checkpoint that falls due at the end of the fio run seals the open object, and then nothing is left dirty
    // (seen in CI). So once the uploads are done, one more 4 KiB write goes into an open object only the exit uploads.
    await statsWhere(daemon, (l) => gauge(l, "uploads in flight") === 0, SETTLE_MS, 'with "uploads in flight" at 0');
    // A checkpoint that fell due while another ran starts at the next tick and may seal the marker's object too: then
    // the marker is written again (the same bytes), until a stats line shows it waiting for the exit.
    let dirty: StatsLine | undefined;
    for (let attempt = 0; attempt < 5; attempt++) {
      await nbdsh(daemon.uri, `h.pwrite(b"\\x5a" * 4096, ${MARKER_OFFSET})`);
      dirty = await nextStats(daemon);
      if (gauge(dirty, "dirty objects") > 0) break;
    }
    const waiting = dirty!;
    expect(gauge(waiting, "dirty objects")).toBeGreaterThan(0);
    expect(gauge(waiting, "dirty bytes")).toBeGreaterThan(0);
    const running = daemon;
    daemon = undefined;
    const final = await stopForStats(running);
    expectCleanStore(final);
    expect(gauge(final, "uploaded")).toBeGreaterThan(gauge(waiting, "uploaded"));
    expectNoSecrets(running);

    // No GC here either: a compaction cycle would upload (what the GC left above), and this daemon only reads.
    daemon = await startDaemon(objstoreDaemon(join(work, "cold"), volume, { create: false, noGc: true }));
    await fio(work, "randrw-verify", randrwVerifyJob(daemon.uri, verifyOnly(RANDRW)));
    await fio(work, "at-exit-verify", randrwVerifyJob(daemon.uri, verifyOnly(AT_EXIT)));
    const marker = await nbdsh(daemon.uri, `import sys\nsys.stdout.write(h.pread(4096, ${MARKER_OFFSET}).hex())`);
    expect(marker).toBe("5a".repeat(4096));
    const cold = await nextStats(daemon);
    expect(gauge(cold, "downloaded")).toBeGreaterThan(0);
    // A reader writes no log: what it uploaded is its writer epoch's checkpoint, a copy of the map.
    expect(gauge(cold, "log objects")).toBeGreaterThan(0);
    expect(gauge(cold, "dirty bytes")).toBe(0);
    expect(gauge(cold, "uploaded")).toBeLessThan(MiB);
    expect(gauge(cold, "store errors")).toBe(0);
    console.info(`objstore fio: cold daemon after verify, ${transfer(cold)}`);
  });

  test("the verify-only pass fails where nothing was written (the check above can fail)", async () => {
    const unwritten = await fioResult(work, "unwritten", randrwVerifyJob(daemon!.uri, verifyOnly(UNWRITTEN)));
    expect(unwritten.exitCode).not.toBe(0);
    expect(unwritten.stderr).toContain("verify:");
    expectNoSecrets(daemon!);
  });

  test.skipIf(nbdshSkip !== undefined)("NBD_CMD_CACHE (nbdsh) fetches a range from S3 before it is read: the read after it makes no GET, a read elsewhere does", async () => {
    const reader = daemon!;
    daemon = undefined;
    await reader.stop();
    mkdirSync(join(work, "cold-cache"));
    daemon = await startDaemon(objstoreDaemon(join(work, "cold-cache"), volume, { create: false }));
    const gets = async () => gauge(await nextStats(daemon!), "store GETs");
    const opened = await gets();
    await nbdsh(daemon.uri, `h.cache(${16 * MiB}, 0)`);
    const cached = await gets();
    expect(cached).toBeGreaterThan(opened);
    await nbdsh(daemon.uri, `assert len(h.pread(${16 * MiB}, 0)) == ${16 * MiB}`);
    expect(await gets()).toBe(cached);
    await nbdsh(daemon.uri, `assert len(h.pread(${4 * MiB}, ${64 * MiB})) == ${4 * MiB}`);
    expect(await gets()).toBeGreaterThan(cached);
  });
});

const FILES = 8;
const FILE_MIB = 4;

describe.skipIf(ext4Skip !== undefined)("ext4 on an objstore volume through nbdfuse and a loop device, mounted again from a cold cache", () => {
  const volume = "ext4";
  let work: string;
  let stack: NbdfuseStack | undefined;
  const sums: Record<string, string> = {};
  const stackOn = (cacheDir: string, create: boolean) =>
    new NbdfuseStack(objstoreDaemon(join(work, cacheDir), volume, { create }), join(work, "fuse"), join(work, "mnt"));

  beforeAll(() => {
    work = tempDir("objstore-ext4");
    for (const d of ["cache", "cold", "fuse", "mnt", "originals"]) mkdirSync(join(work, d));
  });

  afterAll(async () => {
    await stack?.forceDown();
    removeDir(work);
  });

  // Files on the mount are only ever touched by child processes (cp, sha256sum): a read from the test process would
  // block its thread in the kernel while the daemon waits for the s3rver that runs on that same thread.
  test(`mkfs.ext4, ${FILES} files of ${FILE_MIB} MiB and sync; umount and SIGTERM leave nothing dirty`, async () => {
    stack = stackOn("cache", true);
    const loop = await stack.up();
    await run(["mkfs.ext4", "-q", "-F", "-b", "4096", loop]);
    await stack.mount();
    for (let i = 0; i < FILES; i++) {
      const name = `file${i}.bin`;
      sums[name] = await writeRandomFile(join(work, "originals", name), FILE_MIB * MiB);
    }
    await run(["cp", ...Object.keys(sums).map((name) => join(work, "originals", name)), stack.mountDir]);
    await run(["sync"]);
    const uploaded = await settled(stack.daemon!);
    expect(gauge(uploaded, "uploaded")).toBeGreaterThan(FILES * FILE_MIB * MiB);
    await stack.umount();
    const daemon = stack.daemon!;
    await stack.down();
    const final = finalStats(daemon.stdout());
    expectCleanStore(final);
    expectNoSecrets(daemon);
    console.info(`objstore ext4: ${transfer(final)}`);
  });

  test("a daemon with an empty --store-dir: fsck.ext4 -fn finds it clean, and every file's sha256 is intact", async () => {
    stack = stackOn("cold", false);
    const loop = await stack.up();
    await run(["fsck.ext4", "-fn", loop]);
    await stack.mount();
    const listing = await run(["sha256sum", ...Object.keys(sums)], { cwd: stack.mountDir });
    const found = Object.fromEntries(listing.trim().split("\n").map((l) => l.split(/\s+\*?/).reverse()));
    expect(found).toEqual(sums);
    await stack.umount();
    const daemon = stack.daemon!;
    await stack.down();
    const final = finalStats(daemon.stdout());
    expect(gauge(final, "downloaded")).toBeGreaterThan(FILES * FILE_MIB * MiB);
    expectCleanStore(final);
    expectNoSecrets(daemon);
  });
});
