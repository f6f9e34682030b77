// The log-structured objstore survives SIGKILL during writes, seals, uploads, checkpoints and GC. A child runs the
// dedup crash workload (deterministic epochs of 40 writes, write-zeroes and trims, each epoch ending with FLUSH) on a
// volume in an s3rver that this process runs, so the store outlives the kill, and is killed at random moments:
// early, at random, or right after it reported a flush. Small objects (64 KiB) sealed every 0.1 s, two uploads at a
// time, a low GC threshold and in some iterations a disk cache of 8 or 16 objects make crashes land in every window.
//
// The log makes the checks exact rather than "every byte is old or new":
// - Reopening the crashed cache gives the state the child started from plus some prefix of the ops it issued, at
//   or past its last reported flush M (writes are appended in order and every local commit is the state between
//   two requests), never anything else. So nothing acknowledged before the last flush is lost.
// - The store alone (a read-only cold open on an empty cache directory, taken right after the kill, before anyone
//   touches the crashed cache) gives the state after some prefix of the writes: the state the child started from
//   (which the previous iteration verified and fully uploaded) plus some prefix of the ops the child issued. That is
//   the prefix consistency of the bucket. When the child ran in remote flush mode and reported a flush, the prefix
//   contains M. And it is never ahead of the cache.
// - After a verifying reopen in remote flush mode FLUSHes and closes, the store alone reads the very same bytes.
//
// From outside, after each kill: no two catalog rows share a cache slot, and every object not yet stored that holds
// data has one. The next child starts at the epoch after the last reported flush; every op writes fixed bytes to a
// fixed range, so running W again on M + a prefix of W gives M + W.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import fs from "node:fs";
import path from "node:path";
import { cachePaths } from "../../src/devices/objstore/layout.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { watch, waitFor, type Watched } from "../helpers/process.ts";
import { applyToModel, opsFor } from "./dedup-crash-ops.ts";
import { CRASH_OBJECT_SIZE, CRASH_VOLUME_SIZE, crashVolumeOptions, type CrashCacheSettings } from "./objstore-crash-child.ts";
import { openObjstoreDevice, tempDir } from "./objstore-helpers.ts";

const ITERATIONS = Number(process.env.OBJSTORE_CRASH_ITERATIONS ?? 16);
const BUN = process.execPath;
const CHILD = path.join(import.meta.dir, "objstore-crash-child.ts");
const NAME = "crash";
const SEED = 777;
/** Disk cache per iteration (cycled): unbounded, 8 objects, 16 objects. */
const DISK_CACHES = [0, 8 * CRASH_OBJECT_SIZE, 16 * CRASH_OBJECT_SIZE];
/** Epoch boundaries of the model kept for the store check (the store may lag the cache by a few epochs). */
/** Ops per epoch of the workload. */
const OPS = opsFor(SEED, 0, CRASH_VOLUME_SIZE).length;

const dir = tempDir("objstore-crash");
const storeDir = path.join(dir, "cache");
fs.mkdirSync(storeDir);
const paths = cachePaths(storeDir, NAME);
let server: S3Server;
let machines = 0;
beforeAll(async () => {
  server = await startS3Server({ directory: path.join(dir, "s3") });
});
afterAll(async () => {
  await server?.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

/**
 * The writes a child made, as the parent can know them: it started from the state `base` (verified, see below) and
 * ran the epochs from `start` on, in order, until it died. Every state the crash can leave, in the cache or in the
 * store, is `base` plus some prefix of those ops.
 */
class ChildRun {
  constructor(
    readonly base: Uint8Array,
    readonly start: number,
  ) {}

  /** The prefixes (counted in ops since `base`) that `actual` equals, over the epochs start..last: lowest and highest. */
  find(actual: Uint8Array, last: number): { min: number; max: number } | undefined {
    const want = Buffer.from(actual.buffer, actual.byteOffset, actual.length);
    const state = new Uint8Array(this.base);
    let found: { min: number; max: number } | undefined;
    const hit = (n: number) => {
      found = found === undefined ? { min: n, max: n } : { min: Math.min(found.min, n), max: Math.max(found.max, n) };
    };
    let n = 0;
    if (want.equals(state)) hit(0);
    for (let epoch = this.start; epoch <= last; epoch++) {
      for (const op of opsFor(SEED, epoch, CRASH_VOLUME_SIZE)) {
        applyToModel(state, op);
        n++;
        if (want.equals(state)) hit(n);
      }
    }
    return found;
  }
}

interface Row {
  seq: number;
  state: number;
  slot: number | null;
  data_length: number;
}

/** The catalog's object rows, read from outside (read-only, as a crash left them). */
function catalogRows(): Row[] {
  if (!fs.existsSync(paths.db)) return [];
  const db = new Database(paths.db, { readonly: true });
  try {
    return db.query<Row, []>("SELECT seq, state, slot, data_length FROM objects ORDER BY seq").all();
  } finally {
    db.close();
  }
}

function checkOutside(where: string): void {
  const rows = catalogRows();
  const slotted = rows.filter((r) => r.slot !== null);
  const problems: string[] = [];
  if (new Set(slotted.map((r) => r.slot)).size !== slotted.length) problems.push("two rows share a slot");
  const homeless = rows.filter((r) => r.state !== 2 && r.data_length > 0 && r.slot === null);
  if (homeless.length > 0) problems.push(`objects not yet stored without a slot: ${homeless.map((r) => r.seq).join(",")}`);
  if (rows.filter((r) => r.state === 0).length > 1) problems.push("more than one open object");
  expect({ where, problems }).toEqual({ where, problems: [] });
}

async function readAll(options: Parameters<typeof openObjstoreDevice>[0]): Promise<Uint8Array> {
  const dev = await openObjstoreDevice(options);
  try {
    return (await dev.read(0, CRASH_VOLUME_SIZE)).slice();
  } finally {
    await dev.close();
  }
}

/** What the store alone holds: a read-only cold open on an empty cache directory (no lease taken). */
async function storeAlone(): Promise<Uint8Array> {
  const fresh = path.join(dir, `machine-${machines++}`);
  fs.mkdirSync(fresh);
  try {
    const options = crashVolumeOptions(fresh, NAME, server.endpoint, { diskCache: 0, flushMode: "local", persistCache: false });
    return await readAll({ ...options, readOnly: true, size: undefined, objectSize: undefined });
  } finally {
    fs.rmSync(fresh, { recursive: true, force: true });
  }
}

type KillMode = "early" | "random" | "after-report";

async function killAt(child: Watched, mode: KillMode): Promise<void> {
  if (mode === "early") await Bun.sleep(Math.random() * 150);
  else if (mode === "random") await Bun.sleep(50 + Math.random() * 700);
  else {
    const wanted = 1 + Math.floor(Math.random() * 3);
    const deadline = Date.now() + 5_000;
    while ([...child.stdout().matchAll(/flushed \d+/g)].length < wanted && Date.now() < deadline && child.exitCode() === null) await Bun.sleep(1);
  }
  await child.stop("SIGKILL", 5_000);
}

describe("objstore: crash consistency under SIGKILL", () => {
  test(`${ITERATIONS} kills: the cache reopens to the last flush plus a prefix of what followed, the store alone to a prefix of the history`, async () => {
    let base: Uint8Array = new Uint8Array(CRASH_VOLUME_SIZE);
    let lastFlushed = -1;
    const counts = { epochs: 0, reopenedPastFlush: 0, storeBehindCache: 0, remoteChecks: 0, uploadAll: 0 };
    const modes: KillMode[] = ["early", "random", "after-report", "after-report"];
    const started = Date.now();
    for (let i = 0; i < ITERATIONS; i++) {
      const last = i === ITERATIONS - 1;
      const settings: CrashCacheSettings = {
        diskCache: DISK_CACHES[i % DISK_CACHES.length]!,
        persistCache: i % 2 === 0,
        flushMode: i % 4 === 2 ? "remote" : "local",
      };
      const uploadAll = last || i % 5 === 4;
      const mode = modes[Math.floor(Math.random() * modes.length)]!;
      const where = `iteration ${i} (${mode} kill, disk cache ${settings.diskCache / 1024} KiB${settings.persistCache ? " persistent" : ""}, ${settings.flushMode} flush)`;
      const start = lastFlushed + 1;
      const child = watch([BUN, CHILD, storeDir, NAME, String(SEED), String(start), server.endpoint, String(settings.diskCache), settings.flushMode, settings.persistCache ? "persist" : "drop"]);
      try {
        await waitFor("the child to open the volume", child, () => (child.stdout().includes("ready") ? true : undefined), 30_000);
        await killAt(child, mode);
      } finally {
        child.kill();
      }
      const reports = [...child.stdout().matchAll(/flushed (\d+)/g)].map((m) => Number(m[1]));
      if (reports.length > 0) lastFlushed = reports.at(-1)!;
      counts.epochs += lastFlushed - start + 1;
      const run = new ChildRun(base, start);
      /** Ops of the child up to the end of its last reported flush. */
      const flushedOps = (lastFlushed - start + 1) * OPS;
      checkOutside(`${where}, after the kill`);

      // The store alone: some prefix of everything ever written, at least the last remote flush.
      const alone = run.find(await storeAlone(), lastFlushed + 1);
      expect({ where: `${where}: the store alone`, prefix: alone !== undefined }).toEqual({ where: `${where}: the store alone`, prefix: true });
      if (settings.flushMode === "remote" && reports.length > 0) {
        counts.remoteChecks++;
        expect({ where, storeHasRemoteFlush: alone!.max >= flushedOps }).toEqual({ where, storeHasRemoteFlush: true });
      }

      // The crashed cache: exactly the last reported flush plus k ops of the epoch that followed.
      const reopened = await readAll(crashVolumeOptions(storeDir, NAME, server.endpoint, { ...settings, flushMode: uploadAll ? "remote" : "local" }));
      const found = run.find(reopened, lastFlushed + 1);
      // Nothing acknowledged before the last reported flush is lost: the reopened state is at or past it.
      expect({ where: `${where}: the reopened cache`, found: found !== undefined && found.max >= flushedOps }).toEqual({ where: `${where}: the reopened cache`, found: true });
      if (found!.max > flushedOps) counts.reopenedPastFlush++;
      // Objects are uploaded only once durable in the cache: the store is never ahead of it.
      expect({ where, storeNotAhead: alone!.min <= found!.max }).toEqual({ where, storeNotAhead: true });
      if (alone!.max < found!.min) counts.storeBehindCache++;
      checkOutside(`${where}, after the reopen`);

      if (uploadAll) {
        // The reopen above closed in remote flush mode, which uploads everything: the store now has exactly it.
        const after = await storeAlone();
        expect({ where, sameInStore: Buffer.from(after).equals(Buffer.from(reopened)) }).toEqual({ where, sameInStore: true });
        counts.uploadAll++;
      }
      base = reopened;
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `objstore crash: ${ITERATIONS} kills in ${seconds} s, ${counts.epochs} flushed epochs, ${counts.reopenedPastFlush} reopens past the last flush, ` +
        `${counts.storeBehindCache} kills with the store behind the cache, ${counts.remoteChecks} remote-flush store checks, ${counts.uploadAll} full-upload checks`,
    );
    expect(counts.epochs).toBeGreaterThanOrEqual(ITERATIONS / 4);
    expect(counts.uploadAll).toBeGreaterThan(0);
  }, Math.max(300_000, ITERATIONS * 6_000));
});
