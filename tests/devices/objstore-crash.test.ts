// The objstore device survives SIGKILL during writes and during uploads. A child runs the dedup crash workload
// (deterministic epochs of writes, write-zeroes and trims, each ending with FLUSH) on a volume in an s3rver that
// this process runs, so the store outlives the kill, and is killed at random moments: early (during the first
// epoch's writes and fetches), at random, or right after it reported a flush while uploads were in flight. Small
// objects (64 KiB), upload rounds every 0.1 s two at a time, and in some iterations a disk cache of 8 or 16 objects
// (so eviction uploads dirty segments and reuses slots) make crashes land in every window of the upload and
// eviction paths; every other iteration keeps clean segments across restarts (--objstore-persistcache), so the
// crashed cache's clean segments are revalidated against the store instead of dropped.
//
// What is asserted after each kill, and why it is sound. The device has no single commit point: FLUSH promises
// that every write acknowledged before it survives, and nothing about writes after it, which may survive or not,
// byte range by byte range, in any order (like a disk's volatile write cache). So the state after a crash is not
// one of a few exact states as in the dedup test. With M the model at the last flush the child reported (epochs
// replayed on an array) and W the ops of the epoch the child was in when it died (the only ops issued after that
// flush; the child prints "flushed N" before it starts epoch N+1), every byte must read either as in M, or as the
// value some op of W gives it (its write data, or zero for write-zeroes and trim). So every byte no op of W
// touched reads back exactly as flushed, and no byte holds anything that was never written to it: no stale
// segment, no bytes of another segment through a reused slot, no garbage. A kill after the flush but before the
// line was printed leaves the whole of W, which passes too.
//
// Continuing after a crash: every op writes fixed bytes to a fixed range, so running all of W again on any state
// that passes the check gives exactly the state after W. The next child therefore simply starts again at the epoch
// after the last reported flush. Some iterations skip the check, so the next child (not this process) opens the
// crashed cache and has to upload its leftover dirty segments while it writes.
//
// "Nothing is lost once uploads finish": every few iterations and at the end the verifying open uses remote flush
// mode and FLUSHes (every dirty segment uploaded), closes, and a "new machine" (an empty store dir, the same store
// and key) must read the very same bytes. And when the child itself ran in remote flush mode and reported a flush,
// the store alone (a new machine, before this process touches the crashed cache) must already pass the check
// above: what a remote FLUSH acknowledged is in the store even though the cache that sent it is gone.
//
// From outside, after each kill and each reopen: reads never throw; every dirty catalog row has a slot, no two rows
// share one; with --objstore-diskcache the catalog never names more slots than the quota (or than the cache held
// when the child started) and the cache file never allocates more than those slots; once reopened (crash leftovers
// cleaned up), the cache file allocates no more than the slots the catalog names; after the verifying close,
// nothing is dirty.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { Database } from "bun:sqlite";
import fs from "node:fs";
import path from "node:path";
import { cachePaths } from "../../src/devices/objstore/layout.ts";
import type { FlushMode } from "../../src/devices/objstore/layout.ts";
import { startS3Server, type S3Server } from "../helpers/s3-server.ts";
import { watch, waitFor, type Watched } from "../helpers/process.ts";
import { applyToModel, opsFor, writeData, type CrashOp } from "./dedup-crash-ops.ts";
import { CRASH_OBJECT_SIZE, CRASH_VOLUME_SIZE, crashVolumeOptions, type CrashCacheSettings } from "./objstore-crash-child.ts";
import { gauge, openObjstoreDevice, tempDir } from "./objstore-helpers.ts";

const ITERATIONS = Number(process.env.OBJSTORE_CRASH_ITERATIONS ?? 20);
const BUN = process.execPath;
const CHILD = path.join(import.meta.dir, "objstore-crash-child.ts");
const NAME = "crash";
const SEED = 777;
/** Disk cache per iteration (cycled): unbounded, 8 objects, 16 objects. */
const DISK_CACHES = [0, 8 * CRASH_OBJECT_SIZE, 16 * CRASH_OBJECT_SIZE];
/** Room for the filesystem's own blocks (extent tree) in the cache file's allocation. */
const ALLOCATION_SLACK = 64 * 1024;

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

interface Verdict {
  /** Bytes that differ from the flushed model (unflushed writes that survived). */
  readonly changed: number;
  /** Bytes that hold neither the flushed value nor any value an unflushed op wrote there. */
  readonly unexplained: number;
  readonly firstUnexplained?: { offset: number; actual: number; flushed: number };
}

/** The check in the header: every byte reads as flushed (`model`) or as some op of `pending` writes it. */
function judge(actual: Uint8Array, model: Uint8Array, pending: readonly CrashOp[]): Verdict {
  const explained = new Uint8Array(CRASH_VOLUME_SIZE);
  for (const op of pending) {
    const data = op.kind === "write" ? writeData(op) : undefined;
    for (let j = 0; j < op.length; j++) if (actual[op.offset + j] === (data === undefined ? 0 : data[j])) explained[op.offset + j] = 1;
  }
  let changed = 0;
  let unexplained = 0;
  let firstUnexplained: Verdict["firstUnexplained"];
  const BLOCK = 4096;
  for (let block = 0; block < CRASH_VOLUME_SIZE; block += BLOCK) {
    if (Buffer.compare(actual.subarray(block, block + BLOCK), model.subarray(block, block + BLOCK)) === 0) continue;
    for (let b = block; b < block + BLOCK; b++) {
      if (actual[b] === model[b]) continue;
      changed++;
      if (explained[b] === 1) continue;
      unexplained++;
      firstUnexplained ??= { offset: b, actual: actual[b]!, flushed: model[b]! };
    }
  }
  return { changed, unexplained, ...(firstUnexplained === undefined ? {} : { firstUnexplained }) };
}

interface CatalogRow {
  id: number;
  slot: number | null;
  dirty: number;
}

/** The catalog's rows, read from outside (read-only, as a crash left them). */
function catalogRows(): CatalogRow[] {
  if (!fs.existsSync(paths.db)) return [];
  const db = new Database(paths.db, { readonly: true });
  try {
    return db.query<CatalogRow, []>("SELECT id, slot, dirty FROM segments ORDER BY id").all();
  } finally {
    db.close();
  }
}

function allocatedBytes(): number {
  return fs.existsSync(paths.cache) ? fs.statSync(paths.cache).blocks * 512 : 0;
}

/**
 * Catalog and cache file as seen from outside: slots unique, dirty rows cached, at most `slotBound` slots in use;
 * with `settled` (no crash leftovers, nothing being fetched) the file allocates only the slots rows name.
 */
function checkOutside(where: string, slotBound: number, settled = false): { slots: number; dirty: number } {
  const rows = catalogRows();
  const slotted = rows.filter((r) => r.slot !== null);
  const problems: string[] = [];
  if (new Set(slotted.map((r) => r.slot)).size !== slotted.length) problems.push("two rows share a slot");
  const uncachedDirty = rows.filter((r) => r.dirty !== 0 && r.slot === null);
  if (uncachedDirty.length > 0) problems.push(`dirty rows without a slot: ${uncachedDirty.map((r) => r.id).join(",")}`);
  if (slotted.length > slotBound) problems.push(`${slotted.length} slots in use, more than the bound ${slotBound}`);
  const allocated = allocatedBytes();
  if (Number.isFinite(slotBound) && allocated > slotBound * CRASH_OBJECT_SIZE + ALLOCATION_SLACK) {
    problems.push(`the cache file allocates ${allocated} bytes, more than ${slotBound} slots of ${CRASH_OBJECT_SIZE}`);
  }
  if (settled && allocated > slotted.length * CRASH_OBJECT_SIZE + ALLOCATION_SLACK) {
    problems.push(`the cache file allocates ${allocated} bytes but the catalog names only ${slotted.length} slots of ${CRASH_OBJECT_SIZE}`);
  }
  expect({ where, problems }).toEqual({ where, problems: [] });
  return { slots: slotted.length, dirty: rows.filter((r) => r.dirty !== 0).length };
}

/** Opens the volume (the crashed cache, or an empty store dir as a new machine) and reads all of it. */
async function readVolume(at: string, settings: CrashCacheSettings): Promise<{ dev: Awaited<ReturnType<typeof openObjstoreDevice>>; bytes: Uint8Array }> {
  const dev = await openObjstoreDevice(crashVolumeOptions(at, NAME, server.endpoint, settings));
  try {
    return { dev, bytes: (await dev.read(0, CRASH_VOLUME_SIZE)).slice() };
  } catch (e) {
    await dev.close();
    throw e;
  }
}

/** What a new machine (empty store dir, same store and key) reads: the store's state alone. */
async function newMachineRead(): Promise<Uint8Array> {
  const fresh = path.join(dir, `machine-${machines++}`);
  fs.mkdirSync(fresh);
  const { dev, bytes } = await readVolume(fresh, { diskCache: 0, flushMode: "local", persistCache: false });
  await dev.close();
  fs.rmSync(fresh, { recursive: true, force: true });
  return bytes;
}

type KillMode = "early" | "random" | "after-report";

/**
 * Kills the child at a moment chosen by `mode`. After a report: with uploads in flight in local flush mode; in remote
 * mode the flush has just waited for every upload, and the kill lands in the next epoch's writes and timer uploads.
 */
async function killAt(child: Watched, mode: KillMode, flushMode: FlushMode): Promise<void> {
  if (mode === "early") await Bun.sleep(Math.random() * 120);
  else if (mode === "random") await Bun.sleep(50 + Math.random() * 600);
  else {
    const wanted = 1 + Math.floor(Math.random() * 3);
    const deadline = Date.now() + 5_000;
    for (;;) {
      const lines = [...child.stdout().matchAll(/flushed \d+ inflight (\d+)/g)];
      if (lines.length >= wanted && (flushMode === "remote" || Number(lines.at(-1)![1]) > 0)) break;
      if (Date.now() > deadline || child.exitCode() !== null) break;
      await Bun.sleep(1);
    }
  }
  await child.stop("SIGKILL", 5_000);
}

describe("objstore: crash consistency under SIGKILL", () => {
  test(`${ITERATIONS} kills during writes and uploads: flushed writes read back, and the store has them once uploaded`, async () => {
    const model = new Uint8Array(CRASH_VOLUME_SIZE);
    let lastFlushed = -1;
    const counts = { epochs: 0, checked: 0, unflushedVisible: 0, uploadsInFlight: 0, dirtyAtKill: 0, newMachine: 0, remoteFlushChecks: 0 };
    const modes: KillMode[] = ["early", "random", "after-report", "after-report"];
    const started = Date.now();
    for (let i = 0; i < ITERATIONS; i++) {
      const last = i === ITERATIONS - 1;
      const diskCache = DISK_CACHES[i % DISK_CACHES.length]!;
      const persistCache = i % 2 === 0;
      const childFlushMode: FlushMode = i % 4 === 2 ? "remote" : "local";
      const verify = last || i % 5 !== 3;
      const uploadAll = last || (verify && i % 5 === 4);
      const mode = modes[Math.floor(Math.random() * modes.length)]!;
      const where = `iteration ${i} (${mode} kill, disk cache ${diskCache / 1024} KiB${persistCache ? " persistent" : ""}, ${childFlushMode} flush)`;
      const slotsAtStart = catalogRows().filter((r) => r.slot !== null).length;
      const slotBound = diskCache === 0 ? Infinity : Math.max(diskCache / CRASH_OBJECT_SIZE, slotsAtStart);

      const start = lastFlushed + 1;
      const child = watch([BUN, CHILD, storeDir, NAME, String(SEED), String(start), server.endpoint, String(diskCache), childFlushMode, persistCache ? "persist" : "drop"]);
      try {
        await waitFor("the child to open the volume", child, () => (child.stdout().includes("ready") ? true : undefined), 30_000);
        await killAt(child, mode, childFlushMode);
      } finally {
        child.kill();
      }
      const reports = [...child.stdout().matchAll(/flushed (\d+) inflight (\d+)/g)].map((m) => ({ epoch: Number(m[1]), inflight: Number(m[2]) }));
      if (reports.length > 0) {
        lastFlushed = reports.at(-1)!.epoch;
        if (reports.at(-1)!.inflight > 0 && mode === "after-report") counts.uploadsInFlight++;
      }
      for (let e = start; e <= lastFlushed; e++) for (const op of opsFor(SEED, e, CRASH_VOLUME_SIZE)) applyToModel(model, op);
      counts.epochs += lastFlushed - start + 1;
      const pending = opsFor(SEED, lastFlushed + 1, CRASH_VOLUME_SIZE);

      const atKill = checkOutside(`${where}, after the kill`, slotBound);
      if (atKill.dirty > 0) counts.dirtyAtKill++;

      if (childFlushMode === "remote" && reports.length > 0) {
        // The child's last remote FLUSH returned: the store alone has everything up to it.
        const verdict = judge(await newMachineRead(), model, pending);
        expect({ where: `${where}, the store after a remote flush`, unexplained: verdict.unexplained, first: verdict.firstUnexplained }).toEqual({
          where: `${where}, the store after a remote flush`,
          unexplained: 0,
          first: undefined,
        });
        counts.remoteFlushChecks++;
      }
      if (!verify) continue;

      // The reopen starts with at most the slots the crash left and then keeps to the quota.
      const readBound = diskCache === 0 ? Infinity : Math.max(slotBound, atKill.slots);
      const { dev, bytes } = await readVolume(storeDir, { diskCache, persistCache, flushMode: uploadAll ? "remote" : "local" });
      let closed = false;
      try {
        const verdict = judge(bytes, model, pending);
        expect({ where, unexplained: verdict.unexplained, first: verdict.firstUnexplained }).toEqual({ where, unexplained: 0, first: undefined });
        counts.checked++;
        if (verdict.changed > 0) counts.unflushedVisible++;
        expect({ where, cache: gauge(dev, "cache") <= readBound * CRASH_OBJECT_SIZE }).toEqual({ where, cache: true });
        checkOutside(`${where}, after reading the volume back`, readBound, true);
        if (uploadAll) await dev.flush();
        await dev.close();
        closed = true;
      } finally {
        if (!closed) await dev.close().catch(() => {});
      }
      expect({ where, dirtyAfterClose: checkOutside(`${where}, after the verifying close`, readBound, true).dirty }).toEqual({ where, dirtyAfterClose: 0 });

      if (uploadAll) {
        // Everything is uploaded: a machine without this cache reads the very same bytes.
        const elsewhere = await newMachineRead();
        expect({ where, sameOnNewMachine: Buffer.compare(Buffer.from(elsewhere), Buffer.from(bytes)) === 0 }).toEqual({ where, sameOnNewMachine: true });
        counts.newMachine++;
      }
    }
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(
      `objstore crash: ${ITERATIONS} kills in ${seconds} s, ${counts.epochs} flushed epochs, ${counts.checked} checked reopens ` +
        `(${counts.unflushedVisible} with unflushed writes visible), ${counts.uploadsInFlight} kills right after a report with uploads in flight, ` +
        `${counts.dirtyAtKill} kills leaving dirty segments, ${counts.remoteFlushChecks} store checks after a remote flush, ${counts.newMachine} new-machine checks`,
    );
    // Early kills often land before the first flush (a cold cache fetches every segment it writes); the kills after
    // a report make sure the workload moves on.
    expect(counts.epochs).toBeGreaterThanOrEqual(ITERATIONS / 4);
    expect(counts.newMachine).toBeGreaterThan(0);
  }, 300_000);
});
